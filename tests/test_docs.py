"""The documentation builds, stays in step with the package, and its examples run.

* The Sphinx site builds offline with warnings as errors (the same command as the docs:
  ``python -m sphinx -W --keep-going -b html docs <out>``), into a temporary directory.
* Every registered model has its section on the model-zoo page, every notebook is listed.
* The worked example of a new guide (``docs/examples/custom_guide.py``, included in the
  page "Writing a new guide") and the Python snippets of the quick start and data pages run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx", reason="the docs test needs the dev extra: pip install -e '.[dev]'")
pytest.importorskip("myst_nb", reason="the docs test needs the dev extra: pip install -e '.[dev]'")


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYRO_SRNN_QUICK="1", **extra)
    return env


def test_sphinx_site_builds_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(out)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"the docs build failed or warned:\n{proc.stdout}\n{proc.stderr}"
    for page in ("index", "installation", "quickstart", "models", "data", "training", "custom_guide", "api",
                 "notebooks"):
        assert (out / f"{page}.html").is_file(), f"page {page}.html was not built"
    for notebook in sorted((DOCS / "notebooks").glob("*.ipynb")):
        assert (out / "notebooks" / f"{notebook.stem}.html").is_file(), f"notebook {notebook.name} not rendered"

    from pyro_srnn.models import MODELS, model_names

    models_html = (out / "models.html").read_text()
    for name in model_names():
        # the live facts line of the model's section: CLI name, class, default guide
        facts = f'<span class="pre">--model</span> <span class="pre">{name}</span>'
        assert facts in models_html, f"model {name!r} has no section on the model zoo page"
        assert MODELS[name].cls.__qualname__ in models_html
    api_html = (out / "api.html").read_text()
    for module in ("pyro_srnn.train", "pyro_srnn.models.base", "pyro_srnn.infer.estimators",
                   "pyro_srnn.distributions", "pyro_srnn.data.batch"):
        assert f'id="module-{module}"' in api_html, f"{module} has no API section"
    assert "iwae_log_likelihood" in api_html  # docstrings made it in


def test_every_registered_model_has_a_section():
    from pyro_srnn.models import model_names

    text = (DOCS / "models.md").read_text()
    documented = set(re.findall(r"```\{pyro-srnn-model\} ([\w-]+)", text))
    missing = set(model_names()) - documented
    assert not missing, f"models registered but not documented in docs/models.md: {sorted(missing)}"


def test_every_notebook_is_listed():
    text = (DOCS / "notebooks.md").read_text()
    for path in sorted((DOCS / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{path.stem}" in text, f"{path.name} is not described in docs/notebooks.md"


def test_quick_start_shows_the_readme_commands():
    text = (DOCS / "quickstart.md").read_text()
    assert "pip install torch==2.13.0 && pip install -e . && pyro-srnn train" in text
    assert 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q' in text


def _python_blocks(page: str) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    return [b for b in blocks if "pyro.plate" not in b]  # fragments of a model are not scripts


@pytest.mark.slow
def test_code_of_the_docs_runs(tmp_path):
    """The Python snippets of the quick start and data pages, then the worked example of a new guide
    (which defines, registers, checks and trains it; see its asserts), in one fresh interpreter."""
    parts = []
    for page in ("quickstart.md", "data.md"):
        blocks = _python_blocks(page)
        assert blocks, f"{page} has no Python snippet"
        parts += [f"print('--- docs/{page}')"] + blocks
    example = DOCS / "examples" / "custom_guide.py"
    parts += ["print('--- docs/examples/custom_guide.py')", "import runpy",
              f"runpy.run_path({str(example)!r}, run_name='__main__')"]
    script = tmp_path / "docs_code.py"
    script.write_text("\n\n".join(parts))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"code of the docs fails:\n{proc.stdout}\n{proc.stderr}"
    assert "refused: guide 'bigru' does not fit model 'f-rnn'" in proc.stdout
    assert re.search(r"validation -ELBO per time step: [\d.]+ -> [\d.]+ nats", proc.stdout), proc.stdout
