"""The training skeleton every trainer of the course shares (the LM's, the SAE's, the next).

A trainer brings a model, a loss, a schedule and its state; `TrainingLoop` does the rest,
the same way for each, so that any of them can be killed at any moment:

    out_dir/checkpoint.pt   the trainer's state, the step and every RNG's state, written
                            atomically every checkpoint_every steps and at the last one;
                            on resume it is refused if another configuration wrote it
                            (the message names what changed)
    <metrics>.jsonl         one line per step and model, cut back to the checkpoint's step
                            on resume so no step appears twice
    out_dir/summary.json    written by the trainer when it finishes

The loop also owns the progress bar, the divergence stop (a loss that is not finite stops
the run before the weights are updated, and says which checkpoint is intact), the resume
message, and `stop_after`, which ends the call after a step as a kill would (for tests).

    loop = TrainingLoop(out_dir, fingerprint, total_steps=1000, checkpoint_every=100,
                        metrics=[out_dir / METRICS], desc="train")
    state = loop.resume()             # None on a fresh start
    if state is not None:
        model.load_state_dict(state["model"])
    for step in loop.steps():
        loss = ...                    # forward, backward
        loop.stop_if_diverged(loss.item(), step, lr)
        optimizer.step()
        dt = loop.end_step()
        loop.record([{"step": step + 1, "loss": loss.item()}])
        loop.checkpoint_if_due(step + 1, lambda: {"model": model.state_dict()})
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifacts import atomic_write_bytes, atomic_write_text
from .config import ConfigError, config_hash

CHECKPOINT, METRICS, SUMMARY = "checkpoint.pt", "metrics.jsonl", "summary.json"


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the last checkpoint on disk is still good."""


# --- exact resumption: RNG states, atomic checkpoints, logs cut back --------------------

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


def config_changes(old: object, new: object, prefix: str = "") -> list[str]:
    """'key.path: old -> new' for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*new, *(k for k in old if k not in new)]:
            changes += config_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return changes
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# --- the loop ------------------------------------------------------------------------------

class TrainingLoop:
    """Checkpoints, logs, progress and stops of one training run (see the module docstring).

    `fingerprint` is plain JSON data naming everything the weights depend on (configs,
    widths, scales, processes); a checkpoint resumes only under the same one. `metrics`
    holds one log per model trained together (a sweep logs each SAE apart); `other_logs`
    are cut back on resume but written by the trainer (e.g. samples). `writes=False`
    (a data-parallel rank other than 0) computes everything and writes nothing.
    """

    def __init__(self, out_dir: Path, fingerprint: dict, *, total_steps: int,
                 checkpoint_every: int, metrics: Sequence[Path] = (),
                 other_logs: Sequence[Path] = (), desc: str = "train", progress: bool = True,
                 stop_after: int | None = None, writes: bool = True,
                 diverged: type[TrainingDiverged] = TrainingDiverged,
                 log: Callable[[str], None] = print):
        self.path = Path(out_dir) / CHECKPOINT
        self.fingerprint, self.config_hash = fingerprint, config_hash(fingerprint)
        self.total, self.checkpoint_every = total_steps, checkpoint_every
        self.metrics, self.other_logs = list(metrics), list(other_logs)
        self.desc, self.progress, self.stop_after = desc, progress, stop_after
        self.writes, self.diverged, self.log = writes, diverged, log
        self.start = 0  # the step training starts from: 0, or the checkpoint's
        self.last_checkpoint: int | None = None
        self.train_time, self.steps_run = 0.0, 0  # seconds in steps, steps run by this call
        self.bar: tqdm | None = None
        self._files: list = []
        self._step_began = 0.0

    @property
    def finished(self) -> bool:
        return self.start + self.steps_run >= self.total

    def resume(self) -> dict | None:
        """The checkpoint's state (the RNGs already restored), or None when there is none;
        either way the logs are cut back to the step training starts from."""
        state = None
        if self.path.exists():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if state.get("config_hash") != self.config_hash:
                changes = config_changes(state.get("config", {}), self.fingerprint)
                raise ConfigError(
                    f"{self.path} was written by a run with a different configuration "
                    f"({'; '.join(changes) or 'unknown differences'}). Resume with the same "
                    f"configs, or start over in a new out_dir (or delete the checkpoint).")
            set_rng_state(state["rng"])
            self.start = self.last_checkpoint = state["step"]
            if self.start < self.total and self.writes:
                self.log(f"[{self.desc}] resuming from step {self.start:,} of {self.total:,} "
                         f"({self.path})")
        if self.writes:  # lines past the checkpoint are from steps about to be redone
            for path in self.metrics + self.other_logs:
                truncate_jsonl(path, self.start)
        return state

    def steps(self) -> Iterator[int]:
        """Step indices from `start` to the end (or `stop_after`), behind a progress bar."""
        if self.writes:
            for path in self.metrics:
                path.parent.mkdir(parents=True, exist_ok=True)
        self._files = [open(path, "a") for path in self.metrics] if self.writes else []
        self.bar = tqdm(total=self.total, initial=self.start, desc=self.desc, unit="step",
                        disable=not (self.progress and self.writes))
        try:
            for step in range(self.start, self.total):
                self._step_began = time.perf_counter()
                yield step
                self.bar.update(1)
                if self.stop_after is not None and step + 1 >= self.stop_after:
                    break
        finally:
            self.bar.close()
            for file in self._files:
                file.close()

    def end_step(self) -> float:
        """Seconds since this step began; call it once the weights are updated."""
        seconds = time.perf_counter() - self._step_began
        self.train_time += seconds
        self.steps_run += 1
        return seconds

    def stop_if_diverged(self, loss: float, step: int, lr: float, who: str = "",
                         hint: str = "") -> None:
        """Raise `diverged` if `loss` is not finite: call it before the optimizer step."""
        if math.isfinite(loss):
            return
        kept = (f"{self.path} (step {self.last_checkpoint}) is intact" if self.last_checkpoint
                else "no checkpoint was written yet")
        raise self.diverged(f"{who}loss is {loss} at step {step + 1} (lr {lr:.3g}); the weights "
                            f"were not updated; {kept}. {hint}".rstrip())

    def record(self, records: Sequence[dict]) -> None:
        """One metrics line per model (in the order of `metrics`), flushed at once."""
        for file, record in zip(self._files, records):
            file.write(json.dumps(record) + "\n")
            file.flush()

    def checkpoint_if_due(self, done: int, state: Callable[[], dict]) -> None:
        """After step `done`: save `state()` every checkpoint_every steps and at the last."""
        if done % self.checkpoint_every and done != self.total:
            return
        if self.writes:
            save_checkpoint(self.path, {**state(), "step": done, "config": self.fingerprint,
                                        "config_hash": self.config_hash})
        self.last_checkpoint = done


__all__ = ["TrainingLoop", "TrainingDiverged", "CHECKPOINT", "METRICS", "SUMMARY",
           "config_changes", "save_checkpoint", "set_rng_state", "rng_state", "truncate_jsonl"]
