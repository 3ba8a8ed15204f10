"""Reading what a run's stages wrote, and nothing more.

The report opens only small files (manifests, metrics.jsonl, samples.jsonl, store.json,
cfg.json, eval/*.json) and small samples of the token and activation files, so it costs
seconds whatever the run's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..pipeline import STAGES
from ..rundir import MANIFEST


def read_json(path: Path) -> dict | list | None:
    """The file's JSON, or None when the stage did not write it."""
    return json.loads(path.read_text()) if path.is_file() else None


def read_jsonl(path: Path) -> list[dict]:
    """One dict per line (metrics.jsonl, samples.jsonl); [] when there is no file."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_manifests(run_root: Path) -> dict[str, dict]:
    """Every finished stage's manifest, pipeline stages first in their order, then any
    other stage folder (by creation time); the report's own folder is left out."""
    found = {p.parent.name: json.loads(p.read_text())
             for p in Path(run_root).glob(f"*/{MANIFEST}") if p.parent.name != "report"}
    order = [s for s in STAGES if s in found]  # the pipeline's order, the one source of it
    order += sorted((s for s in found if s not in STAGES), key=lambda s: found[s].get("created", ""))
    return {s: found[s] for s in order}


def eval_dir(run_root: Path) -> Path | None:
    """The eval stage's folder once it has written its metrics (its figures win over the
    trainer's wherever both exist)."""
    folder = Path(run_root) / "eval"
    return folder if (folder / "metrics.json").is_file() else None


def val_tokens(run_root: Path, limit: int) -> tuple[np.ndarray, dict] | None:
    """The first `limit` validation tokens and the shards' meta.json, or None."""
    meta = read_json(Path(run_root) / "shards" / "meta.json")
    path = Path(run_root) / "shards" / "val.bin"
    if not meta or not path.is_file() or path.stat().st_size == 0:
        return None
    tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    return np.asarray(tokens[:limit]), meta
