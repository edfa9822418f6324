"""README.md and .ci/run stay in step: CI runs exactly the test command the README shows."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_AND_RUN = 'pip install torch==2.13.0 && pip install -e . && pyro-srnn train'
INSTALL_AND_TEST = 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q'


def test_readme_shows_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert INSTALL_AND_RUN in readme
    assert INSTALL_AND_TEST in readme


def test_ci_runs_the_readme_test_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    steps = [part.strip() for part in INSTALL_AND_TEST.split("&&")]
    # the same three steps, in the same order, the test command last
    positions = [ci.index(step) for step in steps]
    assert positions == sorted(positions)
    assert ci[-1] == steps[-1]


def test_readme_links_exist():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(((?!https?://)[^)#]+)\)", readme):
        assert (ROOT / target).exists(), f"README links to missing {target}"
