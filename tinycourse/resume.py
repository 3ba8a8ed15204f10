"""What exact resumption after a kill needs, shared by the LM and SAE trainers.

A checkpoint holds the model and optimizer states plus every random generator's state,
written atomically; on resume, the log files are cut back to the checkpoint's step so no
step appears twice.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch

from .rundir import atomic_write_bytes, atomic_write_text


def rng_state() -> dict:
    """torch, numpy, python (and CUDA) generator states, as tensors and tuples so the
    checkpoint loads with `weights_only=True`."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, state: dict) -> None:
    """`torch.save(state + RNG states)` to `path`, atomically: a kill mid-write leaves the
    previous checkpoint in place."""
    buffer = io.BytesIO()
    torch.save({**state, "rng": rng_state()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep only the lines of `path` with "step" <= `step` (and drop a half-written one)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(kept))
