"""What a stage is, and the registry the stage modules fill (`stage`).

Each stage module decorates its build functions with `stage(...)`; `pipeline` imports
them all and puts `STAGES` in the course's order. A stage module never imports
`pipeline` at run time (only for the `Run` annotation), so this module is the one they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipeline import Run
    from ..rundir import RunDir


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream stages whose outputs this one reads
    reads: tuple[str, ...]  # parts of CourseConfig this stage depends on
    build: Callable[["Run", Path], dict]
    resumable: bool = False  # keeps its folder across a rebuild (checkpoints)
    reads_all: bool = False  # reads every other finished stage (the report): they are its upstream
    optional: tuple[str, ...] = ()  # read when finished, never built for this stage

    def upstream_of(self, run_dir: RunDir) -> tuple[str, ...]:
        """The stages whose manifests this one records: `needs` and the `optional` ones
        finished now, or for a `reads_all` stage every other stage finished now, so it is
        stale once any of them changes."""
        if not self.reads_all:
            return self.needs + tuple(s for s in self.optional if run_dir.manifest(s) is not None)
        return tuple(s for s in STAGES if s != self.name and run_dir.manifest(s) is not None)


STAGES: dict[str, Stage] = {}  # name -> Stage; `pipeline` orders it


def stage(name: str, needs: tuple[str, ...], reads: tuple[str, ...], resumable: bool = False,
          reads_all: bool = False, optional: tuple[str, ...] = ()):
    """Register the decorated `build(run, folder) -> summary` as stage `name`."""
    def register(build: Callable[["Run", Path], dict]) -> Callable[["Run", Path], dict]:
        STAGES[name] = Stage(name, needs, reads, build, resumable, reads_all, optional)
        return build
    return register


def default_device() -> str:
    """Where a stage computes: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
