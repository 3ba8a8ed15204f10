"""Every notebook, converted with jupytext and run with nbmake on the `tiny` preset.

New notebooks join automatically. All notebooks share one runs folder for the session, so
a later notebook reuses the stages an earlier one built, as a learner's would.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_tiny(notebook, tmp_path, runs_dir):
    ipynb = tmp_path / f"{notebook.stem}.ipynb"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(ipynb),
                    str(notebook)], check=True, capture_output=True)
    env = {**os.environ, "TINYCOURSE_PRESET": "tiny", "TINYCOURSE_RUNS": str(runs_dir),
           "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=600", "-q",
         "-p", "no:cacheprovider", str(ipynb)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
