"""Token shards: the encoded corpus as one flat memory-mapped file per split.

Layout of a shards folder::

    train.bin   uint16 (or uint32 when the vocabulary needs it), stories back to back,
                each one starting with the tokenizer's start token
    val.bin     the same for the validation split
    meta.json   {"splits": {"train": {"tokens": n, "stories": m}, ...}, "dtype": "uint16",
                 "start_id": 0, "vocab_size": V, "tokenizer_hash": "..."}

Encoding streams: stories arrive from an iterator, are encoded `batch_stories` at a time
with the tokenizer's `encode_batch` (Rust, multi-threaded) and appended to the file, so
memory stays flat however large the corpus. Files are written under a temporary name and
renamed when complete, so a killed run never leaves a `.bin` that looks finished.

`WindowSampler` draws random `(batch, n_ctx + 1)` windows (inputs plus next-token
targets) reproducibly: batch `step` depends only on `(seed, step)`, so training resumes
exactly after a kill by remembering one integer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm


class Encoder(Protocol):
    """What the shard writer needs of a tokenizer (both of ours qualify)."""

    start_id: int
    vocab_size: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65,536 at 2 bytes a token; larger vocabularies need uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int64: how often each id occurs in `tokens` (a split's memmap), counted
    in chunks so memory stays flat on a split of any size."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for begin in range(0, len(tokens), 1 << 24):
        counts += np.bincount(tokens[begin : begin + (1 << 24)], minlength=vocab_size)
    return counts


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_split(
    encoder: Encoder,
    stories: Iterable[str],
    path: Path,
    batch_stories: int = 1024,
    desc: str = "encode",
) -> dict:
    """Encode `stories` into the flat token file `path`; return {"tokens", "stories"}.

    Each story becomes `[start_id] + encode(story)`. Written to `path.tmp` and renamed.
    """
    path = Path(path)
    dtype = token_dtype(encoder.vocab_size)
    tmp = path.with_name(path.name + ".tmp")
    n_tokens = n_stories = 0
    with open(tmp, "wb") as out, tqdm(desc=desc, unit=" stories", leave=False) as bar:
        for batch in _batched(stories, batch_stories):
            encoded = encoder.encode_batch(batch)
            lengths = [len(ids) + 1 for ids in encoded]
            flat = np.empty(sum(lengths), dtype=dtype)
            starts = np.cumsum([0] + lengths[:-1])
            flat[starts] = encoder.start_id
            for begin, ids in zip(starts, encoded):
                flat[begin + 1 : begin + 1 + len(ids)] = ids
            out.write(flat.tobytes())
            n_tokens += len(flat)
            n_stories += len(batch)
            bar.update(len(batch))
            bar.set_postfix(tokens=f"{n_tokens:,}")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return {"tokens": n_tokens, "stories": n_stories}


@dataclass(frozen=True)
class Shards:
    """A written shards folder, opened read-only."""

    root: Path
    meta: dict

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Shards":
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{meta_path} not found: build the shards first "
                f"(`tinycourse run --stages shards`)"
            )
        return cls(root, json.loads(meta_path.read_text()))

    @property
    def start_id(self) -> int:
        return self.meta["start_id"]

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    def tokens(self, split: str) -> np.memmap:
        """The split's tokens as a read-only memory map, shape (n_tokens,)."""
        if split not in self.meta["splits"]:
            raise KeyError(f"no split {split!r}; have {', '.join(self.meta['splits'])}")
        return np.memmap(self.root / f"{split}.bin", dtype=self.meta["dtype"], mode="r")


class WindowSampler:
    """Random contiguous windows of `n_ctx + 1` tokens from a flat token array.

    Batch number `step` is drawn from `numpy.random.default_rng((seed, step))`, so any
    batch can be recomputed from two integers: no sampler state needs saving beyond the
    step, and a resumed run sees exactly the batches an uninterrupted one would.
    `rank`/`world_size` give each data-parallel process a disjoint stream.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, n_ctx: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(tokens) < n_ctx + 2:
            raise ValueError(
                f"only {len(tokens)} tokens, fewer than one window of n_ctx+1={n_ctx + 1}: "
                f"use more stories or a smaller model.n_ctx"
            )
        self.tokens, self.batch_size, self.n_ctx = tokens, batch_size, n_ctx
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int) -> torch.Tensor:
        """Windows for `step`, int64 tensor of shape (batch_size, n_ctx + 1)."""
        rng = np.random.default_rng((self.seed, step, self.rank, self.world_size))
        starts = rng.integers(0, len(self.tokens) - self.n_ctx - 1, size=self.batch_size)
        windows = np.stack([self.tokens[s : s + self.n_ctx + 1] for s in starts])
        return torch.from_numpy(windows.astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        step = 0
        while True:
            yield self.batch(step)
            step += 1
