"""Sphinx configuration of the pyro_srnn documentation.

Build (offline, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Notebooks under ``notebooks/`` are rendered by myst-nb *without* being executed
(``nb_execution_mode = "off"``): the test suite executes them
(``tests/test_notebooks.py``), and they are committed without outputs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the package itself, also when it is not installed

os.environ.setdefault("MPLBACKEND", "Agg")

import pyro_srnn  # noqa: E402

project = "pyro_srnn"
author = "pyro_srnn contributors"
copyright = "2026, pyro_srnn contributors"
release = version = pyro_srnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "zoo_tables",
]

# ---- sources
exclude_patterns = ["_build", "readme_parts", "**.ipynb_checkpoints", "examples"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# ---- MyST / myst-nb
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the tests execute the notebooks; the build never does
nb_merge_streams = True

# ---- autodoc
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# torch and Pyro are installed with the package; nothing is mocked, so the API pages
# show what the installed package really exposes.

# ---- HTML
html_theme = "alabaster"
html_title = f"pyro_srnn {release}"
html_theme_options = {"description": "A Pyro model zoo of stochastic recurrent networks", "fixed_sidebar": True}
html_static_path: list[str] = []
