"""The model's weights across training, at log-spaced steps, for drawing what changes when.

Heads form and abilities appear at particular moments of training (an induction head's
phase change, Olsson et al. 2022), so the LM stage keeps the weights at steps 0, 16, 32,
64, ..., doubling, and at the last step: dense early, where most changes happen, and a few
dozen files even for a long run.

    out_dir/snapshots/step_000016/model.safetensors + config.json + snapshot.json

Each folder is a `save_model` folder (so `load_model` reads it) plus `snapshot.json` with
the step and the training tokens seen. These are only weights; the resumable training
state is `checkpoint.pt` (see `tinycourse.training`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import atomic_write_json
from .model import GPT, load_model, save_model

FOLDER = "snapshots"
FIRST = 16  # the first snapshot after step 0


def snapshot_steps(max_steps: int, first: int = FIRST) -> list[int]:
    """[0, first, 2 first, 4 first, ... < max_steps, max_steps]: the steps whose weights
    are kept (step s = after s optimizer steps; 0 = the initial weights)."""
    steps, step = [0], first
    while step < max_steps:
        steps.append(step)
        step *= 2
    return steps + [max_steps] if max_steps > 0 else steps


@dataclass(frozen=True)
class Snapshot:
    step: int
    tokens: int  # training tokens seen by then
    path: Path  # the folder; load_model(path) reads it

    def load(self, device: str | torch.device = "cpu") -> GPT:
        return load_model(self.path, device=device)


def save_snapshot(model: GPT, out_dir: str | os.PathLike, step: int, tokens: int) -> Path:
    """Write the weights of `model` after `step` steps into out_dir/snapshots/step_NNNNNN."""
    folder = Path(out_dir) / FOLDER / f"step_{step:06d}"
    save_model(model, folder)
    atomic_write_json(folder / "snapshot.json", {"step": step, "tokens": tokens})
    return folder


def list_snapshots(lm_dir: str | os.PathLike) -> list[Snapshot]:
    """The snapshots under an LM folder (runs/<name>/lm), by step; [] if it kept none."""
    found = []
    for meta in sorted((Path(lm_dir) / FOLDER).glob("step_*/snapshot.json")):
        info = json.loads(meta.read_text())
        found.append(Snapshot(info["step"], info["tokens"], meta.parent))
    return sorted(found, key=lambda s: s.step)


def load_snapshot(lm_dir: str | os.PathLike, step: int, device: str | torch.device = "cpu") -> GPT:
    """The model after `step` steps; the error lists the steps there are."""
    snapshots = {s.step: s for s in list_snapshots(lm_dir)}
    if step not in snapshots:
        have = ", ".join(map(str, snapshots)) or "none"
        raise FileNotFoundError(f"no snapshot of step {step} in {Path(lm_dir) / FOLDER} "
                                f"(steps kept: {have})")
    return snapshots[step].load(device)


__all__ = ["FOLDER", "snapshot_steps", "Snapshot", "save_snapshot", "list_snapshots",
           "load_snapshot"]
