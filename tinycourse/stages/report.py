"""The report stage: one self-contained page of whatever the run has built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import stage

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("report", needs=(), reads=(), reads_all=True)
def build_report(run: Run, folder: Path) -> dict:
    """One self-contained HTML page of whatever the run has built (see `report/page.py`)."""
    from ..report import headline, write_report

    write_report(run.root, folder / "index.html", preset=run.cfg.preset)
    return {k: v for k, v in headline(run.root).items() if k != "run"}
