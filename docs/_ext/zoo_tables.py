"""Sphinx directives that read the live registries of pyro_srnn, so the docs cannot go stale.

* ``pyro-srnn-models``   — a table of every registered model (CLI name, class, latent?, default
  guide, sizes, one-line maths).
* ``pyro-srnn-guides``   — a table of every registered guide and the models it serves.
* ``pyro-srnn-datasets`` — a table of every registered data set (name, source, how to get it).
* ``pyro-srnn-api``      — one section with ``automodule`` per module of the package (RST pages only).
* ``pyro-srnn-cli``      — the ``--help`` text of a ``pyro-srnn`` sub-command.

Tables are built as docutils nodes (not generated markup), so they work the same from
MyST and from reStructuredText pages.
"""
from __future__ import annotations

import importlib
import pkgutil

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


logger = logging.getLogger(__name__)


def _cell(content) -> nodes.entry:
    entry = nodes.entry()
    para = nodes.paragraph()
    if isinstance(content, nodes.Node):
        para += content
    else:
        para += nodes.Text(str(content))
    entry += para
    return entry


def make_table(header: list[str], rows: list[list], widths: list[int] | None = None) -> nodes.table:
    table = nodes.table(classes=["pyro-srnn-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths or [1] * len(header):
        group += nodes.colspec(colwidth=w)
    thead = nodes.thead()
    group += thead
    hrow = nodes.row()
    for h in header:
        hrow += _cell(h)
    thead += hrow
    tbody = nodes.tbody()
    group += tbody
    for r in rows:
        row = nodes.row()
        for c in r:
            row += _cell(c)
        tbody += row
    return table


def literal(text: str) -> nodes.literal:
    return nodes.literal(text, text)


class ModelsTable(SphinxDirective):
    has_content = False

    def run(self):
        from pyro_srnn.models.base import MODELS, model_names

        rows = []
        for name in model_names():
            entry = MODELS[name]
            cls = entry.cls
            rows.append([
                literal(name),
                literal(f"{cls.__module__}.{cls.__qualname__}"),
                "yes" if getattr(cls, "has_latent", False) else "no",
                literal(getattr(cls, "default_guide", "none")),
                ", ".join(sorted(getattr(cls, "PRESETS", {}))),
                entry.description,
            ])
        return [make_table(["CLI name", "class", "latent", "default guide", "sizes", "what it is"], rows,
                           [10, 22, 5, 10, 16, 37])]


class ModelFacts(SphinxDirective):
    """One line of live facts about a registered model; a warning (an error under -W) if it is missing."""

    required_arguments = 1

    def run(self):
        from pyro_srnn.models.base import MODELS, model_names

        name = self.arguments[0]
        if name not in model_names():
            logger.warning("model %r is documented but not registered (pyro_srnn.models.MODELS)", name,
                           location=self.get_location())
            return []
        cls = MODELS[name].cls
        para = nodes.paragraph()
        para += nodes.strong("CLI name: ", "CLI name: ")
        para += literal(f"--model {name}")
        para += nodes.Text(" · class ")
        para += literal(f"{cls.__module__}.{cls.__qualname__}")
        para += nodes.Text(" · default guide ")
        para += literal(getattr(cls, "default_guide", "none"))
        para += nodes.Text(" · sizes " + ", ".join(sorted(getattr(cls, "PRESETS", {}))))
        return [para]


class GuidesTable(SphinxDirective):
    has_content = False

    def run(self):
        from pyro_srnn.data.core import DataSpec
        from pyro_srnn.models.base import GUIDES, MODELS, guide_names, model_names

        spec = DataSpec(name="docs", step_dim=4, family="bernoulli", domain="midi", chunk_len=8)
        served: dict[str, list[str]] = {g: [] for g in guide_names()}
        for m in model_names():
            cls = MODELS[m].cls
            try:
                model = cls(spec, **cls.preset("tiny", spec))
            except Exception:  # a model without a tiny preset: the table says "see the model page"
                continue
            for g in guide_names():
                try:
                    problem = GUIDES[g].cls.fits(model)
                except Exception as err:  # noqa: BLE001
                    problem = str(err)
                if not problem:
                    served[g].append(m)
        rows = [[literal(g), literal(f"{GUIDES[g].cls.__module__}.{GUIDES[g].cls.__qualname__}"),
                 ", ".join(served[g]) or "—", GUIDES[g].description] for g in guide_names()]
        return [make_table(["CLI name", "class", "serves (checked with fits())", "what it is"], rows,
                           [10, 25, 25, 40])]


class DatasetsTable(SphinxDirective):
    has_content = False

    def run(self):
        from pyro_srnn.data import DATASETS, ensure_registered

        ensure_registered()
        rows = []
        for name in sorted(DATASETS):
            e = DATASETS[name]
            rows.append([literal(name), e.description, e.source,
                         literal(e.env_var) if e.env_var else "—", e.how_to_get])
        return [make_table(["name", "what it is", "reads from", "directory variable", "how to get it"], rows,
                           [12, 30, 20, 12, 26])]


class ApiModules(SphinxDirective):
    """``automodule`` for every module of a package, one titled section each (RST pages only)."""

    required_arguments = 1
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        package_name = self.arguments[0]
        exclude = set((self.options.get("exclude") or "").split())
        package = importlib.import_module(package_name)
        found = {package_name: True}
        for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            found[info.name] = info.ispkg
        lines: list[str] = []
        for name in sorted(found):
            if name in exclude or name.split(".")[-1].startswith("_"):
                continue  # private modules and __main__
            title = f"``{name}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {name}", "   :members:",
                      "   :show-inheritance:"]
            if found[name]:
                # a package re-exports its modules' names in __all__: document them once, where defined
                lines.append("   :ignore-module-all:")
            lines.append("")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="pyro-srnn-api"), container)
        return container.children


class CliHelp(SphinxDirective):
    required_arguments = 0
    optional_arguments = 1

    def run(self):
        from pyro_srnn.cli import build_parser

        parser = build_parser()
        if self.arguments:
            sub = parser._subparsers._group_actions[0].choices[self.arguments[0]]  # noqa: SLF001
            text = sub.format_help()
        else:
            text = parser.format_help()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("pyro-srnn-models", ModelsTable)
    app.add_directive("pyro-srnn-model", ModelFacts)
    app.add_directive("pyro-srnn-guides", GuidesTable)
    app.add_directive("pyro-srnn-datasets", DatasetsTable)
    app.add_directive("pyro-srnn-api", ApiModules)
    app.add_directive("pyro-srnn-cli", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
