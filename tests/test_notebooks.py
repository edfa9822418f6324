"""Every teaching notebook under docs/notebooks runs top to bottom, in quick mode.

The notebooks are committed without outputs and are not executed by the docs build
(``nb_execution_mode = "off"``); this test is where they run. Each is executed with
nbclient in a fresh ``python3`` kernel of the running interpreter, with
``PYRO_SRNN_QUICK=1`` (tiny models, a few updates) in the kernel's environment and a
time limit per cell, so a stale notebook (one that no longer matches the package's API)
or a failing assertion inside a notebook fails here.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra: pip install -e '.[dev]'")
pytest.importorskip("ipykernel", reason="notebook tests need the dev extra: pip install -e '.[dev]'")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "docs" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 240  # a quick-mode cell takes seconds; this only stops a hung kernel


def _kernel_name() -> str:
    """A kernel that runs *this* interpreter (the venv that has the package installed).

    jupyter_client starts a kernel whose command is plain ``python`` with ``sys.executable``
    (ipykernel's own ``python3`` spec is written that way); a spec naming another interpreter
    by path is used only if that path is this interpreter.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    here = Path(sys.executable).resolve()
    plain = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}

    def runs_here(argv) -> bool:
        return bool(argv) and (argv[0] in plain or Path(argv[0]).resolve() == here)

    specs = KernelSpecManager().get_all_specs()
    usable = [name for name, entry in specs.items() if runs_here(entry["spec"]["argv"])]
    if not usable:
        pytest.fail(f"no Jupyter kernel runs {sys.executable}; install one: "
                    f"{sys.executable} -m ipykernel install --sys-prefix")
    return "python3" if "python3" in usable else sorted(usable)[0]


def test_notebooks_exist_and_have_no_outputs():
    """The five teaching notebooks are committed, and committed without outputs."""
    names = {p.stem for p in NOTEBOOKS}
    for expected in ("01_elbo", "02_proposition1", "03_swapping_guides", "04_kl_annealing", "05_study_finding"):
        assert expected in names, f"docs/notebooks/{expected}.ipynb is missing"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} cell {i} is committed with outputs: clear them"
                assert cell.execution_count is None, f"{path.name} cell {i} has an execution count: clear it"
        sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "PYRO_SRNN_QUICK" in sources, f"{path.name} does not read the quick setting PYRO_SRNN_QUICK"
        assert "plt." in sources or "matplotlib" in sources, f"{path.name} draws no figure"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env.update(PYRO_SRNN_QUICK="1", MPLBACKEND="module://matplotlib_inline.backend_inline",
               PYTHONWARNINGS="default")
    # one intra-op thread: on a small shared machine, more threads only contend (10x slower steps)
    env["OMP_NUM_THREADS"] = "1"
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=_kernel_name(),
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute(env=env)  # the kernel's environment (jupyter_client start_kernel(env=...))
    elapsed = time.perf_counter() - start
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {}))
    assert figures >= 1, f"{path.name} ran but drew no figure"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"
              and "Warning" in _without_known_third_party_warnings(o.get("text", ""))]
    assert not errors, f"{path.name} emitted warnings:\n" + "\n".join(o["text"] for o in errors)
    print(f"{path.name}: {elapsed:.1f} s in quick mode, {figures} figure(s)")
    _record_timing(path.name, elapsed)


def _without_known_third_party_warnings(text: str) -> str:
    """Drop the one warning that is not ours: Pyro's MCMC logger imports ``tqdm.auto``, which warns in
    a kernel without ipywidgets ("IProgress not found")."""
    lines = text.splitlines()
    keep, skip_next = [], False
    for line in lines:
        if "TqdmWarning: IProgress not found" in line:
            skip_next = True
            continue
        if skip_next and line.startswith("  "):  # the source line warnings print under the message
            skip_next = False
            continue
        skip_next = False
        keep.append(line)
    return "\n".join(keep)


def _record_timing(name: str, seconds: float) -> None:
    """Keep the last quick-mode time of each notebook (reported in docs/readme_parts/docs.md)."""
    out = os.environ.get("PYRO_SRNN_NOTEBOOK_TIMINGS")
    if not out:
        return
    path = Path(out)
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=1, sort_keys=True))
