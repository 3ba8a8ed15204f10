"""Activations: collect them once to disk (or stream them) and feed SAEs shuffled batches.

The budget replication stored 50 GB of fp32 residuals. Here an activation costs 2 bytes a
value (fp16 or bf16), and `StreamingSource` needs no disk at all: it runs the LM on the fly.

Layout of a store folder (every array is row-aligned: row r of each file is one token)::

    <hook>.bin        raw values, shape (n_tokens, width), C order, no header. float16 as
                      is; bfloat16 as its uint16 bit pattern (numpy has no bf16: decode
                      with `(bits.astype(uint32) << 16).view(float32)`, see `decode`);
                      float32 as is. Hooks with head dims (hook_z: pos, heads, d_head) are
                      flattened to heads * d_head.
    rows.npy          (n_tokens, 2) int32: the window (row of windows.npy) and the
                      position within it that each row was read at
    windows.npy       (n_windows, n_ctx) token ids of the windows used, in collection order
    window_start.npy  (n_windows,) int64: each window's offset into the split's tokens
    store.json        written last: hooks, widths, dtype, counts, model hash, split,
                      exclude_start, and per hook the normalisation scale
    progress.json     only while a collection is unfinished: rows and batches done

The windows are the split's consecutive non-overlapping n_ctx windows, in an order
shuffled by `cfg.seed`, so the store holds a random sample of contexts and its rows are
already mixed at the window level. Copying the windows' tokens (2 bytes a token, against
2 * width for the activations) makes the store self-contained: `store.context(row)`
needs no shards.

The sources (`store.source(...)`, `StreamingSource`) share one interface, the one the SAE
trainer reads: `d_in`, `d_out`, `batches(batch_size, seed, start_batch)`, `sample(n)`,
`scale(hook)`. Batches are shuffled as SAELens and Anthropic do: contiguous pieces are read
into a mixing buffer of at most `buffer_tokens` rows, shuffled there, and handed out. Each
pass over the data is split into buffers by a plan drawn from `(seed, pass)` alone, so
batch `k` is found without producing batches 0..k-1: a resumed trainer pays one buffer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..artifacts import atomic_write_json, format_bytes
from ..config import ActivationsConfig, ModelConfig
from ..corpus.shards import Shards
from ..lm.model import eval_mode, model_device

BYTES_PER_VALUE = {"float16": 2, "bfloat16": 2, "float32": 4}
RAW_DTYPE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
FP16_MAX = 65504.0
HEADROOM = 1.10  # leave 10% of the disk free beyond what the store needs
FLUSH_SECONDS = 10.0  # at most this much collection work is lost to a kill
BUFFER_TOKENS = 2**17  # mixing buffer rows (d_model 768, fp16: 200 MB)
CHUNKS_PER_BUFFER = 16  # a store buffer is this many contiguous chunks from anywhere
STORE_FILE, PROGRESS_FILE = "store.json", "progress.json"
INDEX_FILES = ("rows.npy", "windows.npy", "window_start.npy")


class DiskSpaceError(OSError):
    """The store would not fit on the disk; the message says what to do instead."""


# --- sizes ------------------------------------------------------------------------------

def estimate_bytes(n_tokens: int, widths: int | Iterable[int], dtype: str) -> int:
    """Bytes of the activation files alone: n_tokens x sum(widths) x bytes per value."""
    total_width = widths if isinstance(widths, int) else sum(widths)
    return n_tokens * total_width * BYTES_PER_VALUE[dtype]


def hook_width(name: str, cfg: ModelConfig) -> int:
    """Values per token at hook `name`, from the config alone (no forward pass)."""
    _check_per_token(name)
    leaf = name.rsplit(".", 1)[-1]
    if ".attn." in name and leaf in ("hook_q", "hook_k", "hook_v", "hook_z"):
        return cfg.n_heads * cfg.d_head
    if ".mlp." in name:
        return cfg.d_mlp
    return cfg.d_model


def disk_cost_table(model_cfg: ModelConfig, cfg: ActivationsConfig,
                    sizes: Sequence[int] | None = None) -> list[dict]:
    """Disk cost of `cfg.hooks` at several token counts (default: cfg.n_tokens, 1M, 10M,
    100M, 1B), at `cfg.dtype` and at float32 for comparison. One dict per row."""
    width = sum(hook_width(h, model_cfg) for h in cfg.hooks)
    rows = []
    for n in sizes or (cfg.n_tokens, 10**6, 10**7, 10**8, 10**9):
        stored, fp32 = estimate_bytes(n, width, cfg.dtype), estimate_bytes(n, width, "float32")
        rows.append({"n_tokens": n, "values_per_token": width, "dtype": cfg.dtype,
                     "bytes": stored, "size": format_bytes(stored),
                     "float32_bytes": fp32, "float32_size": format_bytes(fp32)})
    return rows


# --- encoding ---------------------------------------------------------------------------

def encode(x: torch.Tensor, dtype: str) -> np.ndarray:
    """float activations (rows, width) -> the raw array stored for `dtype`."""
    if dtype == "bfloat16":
        return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    return x.to(getattr(torch, dtype)).cpu().numpy()


def decode(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw stored values -> float32, exactly (fp16 and bf16 are subsets of fp32)."""
    if dtype == "bfloat16":
        # a bf16 is the top half of a float32: shift its bits back into place
        return (np.asarray(raw).astype(np.uint32) << 16).view(np.float32)
    return np.array(raw, dtype=np.float32)  # a copy: memmaps are read-only, tensors want writable


def norm_scale(width: int, mean_sq_norm: float) -> float:
    """The c with mean ||c x||^2 = width (Anthropic, April 2024: inputs get E||x||^2 = d_in)."""
    return math.sqrt(width / mean_sq_norm) if mean_sq_norm > 0 else 1.0


def norm_scale_of(x: np.ndarray | torch.Tensor) -> float:
    """`norm_scale` estimated from rows x (n, width): the c with mean ||c x||^2 = width
    over these rows (1.0 if they are all zero)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    return norm_scale(x.shape[-1], float((x**2).sum(axis=-1).mean()))


# --- running the model -------------------------------------------------------------------

def _check_per_token(name: str) -> None:
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        raise ValueError(f"{name} has one value per (query, key) pair, not per token; "
                         f"collect attn.hook_z or hook_attn_out instead")


def _rng(purpose: str, *key: int) -> np.random.Generator:
    # The tag keeps streams of different purposes apart; each purpose uses a fixed number
    # of ints, since numpy's SeedSequence treats [a, b] and [a, b, 0] as the same seed.
    return np.random.default_rng([zlib.crc32(purpose.encode()), *key])


def window_counts(tokens: np.ndarray, n_ctx: int, start_id: int | None) -> np.ndarray:
    """Positions kept in each of the split's n_ctx windows, (n_windows,) int64: all of
    them, or those not holding `start_id`. Read in blocks, so memory stays flat."""
    n_windows = len(tokens) // n_ctx
    if start_id is None:
        return np.full(n_windows, n_ctx, dtype=np.int64)
    counts = np.empty(n_windows, dtype=np.int64)
    step = max(1, 2**22 // n_ctx)
    for a in range(0, n_windows, step):
        b = min(a + step, n_windows)
        block = np.asarray(tokens[a * n_ctx : b * n_ctx]).reshape(b - a, n_ctx)
        counts[a:b] = n_ctx - (block == start_id).sum(axis=1)
    return counts


def _gather(tokens: np.ndarray, windows: np.ndarray, n_ctx: int) -> np.ndarray:
    """Window ids (B,) -> their tokens (B, n_ctx)."""
    return tokens[windows[:, None] * n_ctx + np.arange(n_ctx)]


def run_hooks(model, windows: np.ndarray, hooks: Sequence[str], start_id: int | None,
              device: torch.device) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Window tokens (B, n_ctx) -> ({hook: float32 (rows, width)}, keep (B, n_ctx) bool).

    Rows are the kept positions in row-major order (window by window, position by position).
    """
    tokens = torch.from_numpy(windows.astype(np.int64)).to(device)
    with eval_mode(model), torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=list(hooks), stop_at_layer="auto")
    keep = windows != start_id if start_id is not None else np.ones(windows.shape, dtype=bool)
    keep_t = torch.from_numpy(keep.reshape(-1)).to(device)
    acts = {}
    for hook in hooks:
        act = cache[hook]
        if act.shape[:2] != tokens.shape:
            raise ValueError(f"{hook} has shape {tuple(act.shape)}, not (batch, pos, ...)")
        acts[hook] = act.reshape(keep.size, -1)[keep_t].float()
    return acts, keep


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short sha256 of the parameter bytes (names, dtypes, shapes, values).

    Pipelines that have the model's safetensors file may pass its hash instead."""
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        digest.update(t.view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


# --- collection --------------------------------------------------------------------------

def plan_windows(counts: np.ndarray, n_tokens: int, seed: int) -> np.ndarray:
    """The windows to read, in collection order: a seeded permutation of all windows, cut
    where the kept positions first reach `n_tokens`."""
    order = _rng("collect", seed).permutation(len(counts))
    total = np.cumsum(counts[order])
    if len(total) == 0 or total[-1] < n_tokens:
        have = int(total[-1]) if len(total) else 0
        raise ValueError(f"asked for {n_tokens:,} activations but the split has only "
                         f"{have:,} usable tokens in {len(counts):,} windows: lower "
                         f"activations.n_tokens or build the shards from more stories")
    return order[: int(np.searchsorted(total, n_tokens)) + 1]


def _check_disk(folder: Path, need: int, reclaim: int, n_tokens: int, width: int,
                dtype: str) -> None:
    """Refuse, before writing anything, a store that would leave under 10% headroom.
    `reclaim`: bytes the store's own files already hold (kept on resume, else rewritten)."""
    free = shutil.disk_usage(folder).free + reclaim
    if need * HEADROOM > free:
        raise DiskSpaceError(
            f"the activation store needs {format_bytes(need)} ({n_tokens:,} tokens x "
            f"{width} values x {BYTES_PER_VALUE[dtype]} bytes, plus the index) and 10% "
            f"headroom, but only {format_bytes(free)} is free in {folder}. Collect fewer "
            f"tokens (--set activations.n_tokens=...), stream activations with no disk "
            f"(--set activations.storage=stream), or put the run on a bigger disk "
            f"(--runs-dir or $TINYCOURSE_RUNS)."
        )


class _Writer:
    """The store's files, open for writing: `fresh` allocates them, else they are reopened."""

    def __init__(self, folder: Path, fresh: bool, n: int, widths: dict[str, int], dtype: str,
                 order: np.ndarray, n_ctx: int, token_dtype: np.dtype):
        mode, npy = ("w+" if fresh else "r+"), np.lib.format.open_memmap
        self.dtype = dtype
        self.acts = {hook: np.memmap(folder / f"{hook}.bin", dtype=RAW_DTYPE[dtype], mode=mode,
                                     shape=(n, width)) for hook, width in widths.items()}
        self.rows = npy(folder / "rows.npy", mode, np.int32, (n, 2))
        self.windows = npy(folder / "windows.npy", mode, token_dtype, (len(order), n_ctx))
        self.window_start = npy(folder / "window_start.npy", mode, np.int64, (len(order),))
        if fresh:
            self.window_start[:] = order * n_ctx

    def write(self, row: int, first_window: int, window_tokens: np.ndarray,
              acts: dict[str, torch.Tensor], keep: np.ndarray) -> dict[str, float]:
        """Store a batch's kept rows (all acts have the same count) from `row` on; return
        each hook's sum of squared norms."""
        sum_sq = {}
        for hook, x in acts.items():
            if self.dtype == "float16" and len(x) and max(-x.min(), x.max()) > FP16_MAX:
                raise ValueError(f"{hook} has values beyond float16's range (65504): "
                                 f"collect with --set activations.dtype=bfloat16")
            self.acts[hook][row : row + len(x)] = encode(x, self.dtype)
            sum_sq[hook] = float(torch.sum(x * x, dtype=torch.float64))
        count = len(x)
        window, pos = np.nonzero(keep)  # row-major, the order run_hooks keeps rows in
        self.rows[row : row + count, 0] = first_window + window[:count]
        self.rows[row : row + count, 1] = pos[:count]
        self.windows[first_window : first_window + len(window_tokens)] = window_tokens
        return sum_sq

    def flush(self) -> None:
        for array in (*self.acts.values(), self.rows, self.windows, self.window_start):
            array.flush()


def _disk_used(path: Path) -> int:
    return path.stat().st_blocks * 512 if path.exists() else 0  # sparse files: real usage


def collect_activations(
    model,
    shards: Shards,
    cfg: ActivationsConfig,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    model_hash: str | None = None,
    stop_after: int | None = None,
) -> dict:
    """Collect `cfg.n_tokens` activations at each of `cfg.hooks` into the store `out_dir`.

    Windows of `model.cfg.n_ctx` tokens are read in `plan_windows` order, `cfg.batch_size`
    at a time; with `cfg.exclude_start`, positions holding the start token are dropped
    (their residual norms are outliers). A rerun after a kill resumes from `progress.json`
    and writes the same bytes a single run would; a finished store with the same inputs
    is kept as it is. `model_hash` names the model (e.g. its safetensors file's hash;
    default: `model_fingerprint`). `stop_after=k` ends the call after batch k, as a kill
    would (for testing resumption).
    Returns a summary: n_tokens, n_windows, dtype, bytes, tokens_per_s, complete, widths,
    scales.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hooks = list(dict.fromkeys(cfg.hooks))
    for hook in hooks:
        _check_per_token(hook)
    device = model_device(model, device)
    tokens, n_ctx = shards.tokens(cfg.split), model.cfg.n_ctx
    start_id = shards.start_id if cfg.exclude_start else None
    order = plan_windows(window_counts(tokens, n_ctx, start_id), cfg.n_tokens, cfg.seed)
    probe, _ = run_hooks(model, _gather(tokens, order[:1], n_ctx), hooks, None, device)
    widths = {hook: probe[hook].shape[1] for hook in hooks}
    model_hash = model_hash or model_fingerprint(model)
    key = hashlib.sha256(json.dumps({
        "cfg": dataclasses.asdict(cfg), "n_ctx": n_ctx, "split_tokens": len(tokens),
        "tokenizer": shards.meta.get("tokenizer_hash"), "widths": widths, "model": model_hash,
    }, sort_keys=True).encode()).hexdigest()[:16]

    store_path, progress_path = out_dir / STORE_FILE, out_dir / PROGRESS_FILE
    if store_path.exists():
        meta = json.loads(store_path.read_text())
        if meta.get("key") == key:
            return _summary(meta, complete=True)
        store_path.unlink()  # from here on the folder must not look finished
    files = [f"{hook}.bin" for hook in hooks] + list(INDEX_FILES)
    state = json.loads(progress_path.read_text()) if progress_path.exists() else None
    if state is not None and state["key"] != key:
        for name in set(state["files"]) - set(files):  # another config's leftovers
            (out_dir / name).unlink(missing_ok=True)
        state = None
    fresh = state is None or not all((out_dir / f).exists() for f in files)
    if fresh:
        state = {"key": key, "files": files, "batch": 0, "rows": 0,
                 "sum_sq": {hook: 0.0 for hook in hooks}}

    n, width = cfg.n_tokens, sum(widths.values())
    total = estimate_bytes(n, width, cfg.dtype) + 8 * n + len(order) * (n_ctx * tokens.dtype.itemsize + 8)
    already = sum(_disk_used(out_dir / f) for f in files)  # reused in place, or freed by w+
    _check_disk(out_dir, total, already, n, width, cfg.dtype)
    writer = _Writer(out_dir, fresh, n, widths, cfg.dtype, order, n_ctx, tokens.dtype)

    def checkpoint() -> None:
        writer.flush()  # the data first, then the claim that it is there
        atomic_write_json(progress_path, state)

    n_batches, first_batch = math.ceil(len(order) / cfg.batch_size), state["batch"]
    if first_batch:
        print(f"[activations] resuming from batch {first_batch:,} of {n_batches:,} "
              f"({state['rows']:,} of {n:,} tokens, {progress_path})")
    started, rows_at_start, last_flush = time.time(), state["rows"], time.time()
    bar = tqdm(total=n, initial=state["rows"], unit="tok", unit_scale=True,
               desc="activations", disable=not progress)
    try:
        for b in range(first_batch, n_batches):
            first = b * cfg.batch_size
            window_tokens = _gather(tokens, order[first : first + cfg.batch_size], n_ctx)
            acts, keep = run_hooks(model, window_tokens, hooks, start_id, device)
            row = state["rows"]
            count = min(int(keep.sum()), n - row)
            sum_sq = writer.write(row, first, window_tokens,
                                  {hook: x[:count] for hook, x in acts.items()}, keep)
            # one assignment, so a KeyboardInterrupt never leaves a half-updated state
            state = {**state, "batch": b + 1, "rows": row + count,
                     "sum_sq": {h: state["sum_sq"][h] + sum_sq[h] for h in hooks}}
            bar.update(count)
            if time.time() - last_flush > FLUSH_SECONDS:
                checkpoint()
                last_flush = time.time()
            if stop_after is not None and b + 1 >= stop_after:
                break
    finally:
        bar.close()
        if state["rows"] < n:
            checkpoint()
    tokens_per_s = (state["rows"] - rows_at_start) / max(time.time() - started, 1e-9)
    if state["rows"] < n:
        return {"n_tokens": state["rows"], "n_windows": len(order), "dtype": cfg.dtype,
                "tokens_per_s": tokens_per_s, "complete": False}

    writer.flush()
    mean_sq = {hook: state["sum_sq"][hook] / n for hook in hooks}
    meta = {
        "format": 1, "key": key, "hooks": hooks, "widths": widths, "n_tokens": n,
        "n_windows": len(order), "n_ctx": n_ctx, "dtype": cfg.dtype, "split": cfg.split,
        "exclude_start": cfg.exclude_start, "start_id": shards.start_id, "seed": cfg.seed,
        "model_hash": model_hash, "mean_sq_norm": mean_sq,
        "scales": {hook: norm_scale(widths[hook], mean_sq[hook]) for hook in hooks},
        "bytes": estimate_bytes(n, width, cfg.dtype), "tokens_per_s": tokens_per_s,
    }
    atomic_write_json(store_path, meta)
    progress_path.unlink(missing_ok=True)
    return _summary(meta, complete=True)


def _summary(meta: dict, complete: bool) -> dict:
    return {"n_tokens": meta["n_tokens"], "n_windows": meta["n_windows"], "dtype": meta["dtype"],
            "bytes": meta["bytes"], "tokens_per_s": meta["tokens_per_s"], "complete": complete,
            "widths": meta["widths"], "scales": meta["scales"]}


# --- reading a store ---------------------------------------------------------------------

class ActivationStore:
    """A finished store folder, memory-mapped read-only (see the module docstring)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = Path(folder), meta
        self._arrays: dict[str, np.memmap] = {}
        self.rows = np.load(self.folder / "rows.npy", mmap_mode="r")  # (n_tokens, 2) window, pos
        self.windows = np.load(self.folder / "windows.npy", mmap_mode="r")  # (n_windows, n_ctx)
        self.window_start = np.load(self.folder / "window_start.npy", mmap_mode="r")

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "ActivationStore":
        folder = Path(folder)
        if not (folder / STORE_FILE).exists():
            unfinished = " (unfinished: rerun collect_activations to resume)" if (
                folder / PROGRESS_FILE).exists() else ""
            raise FileNotFoundError(f"no {STORE_FILE} in {folder}{unfinished}: collect "
                                    f"activations first (`tinycourse run --stages activations`)")
        return cls(folder, json.loads((folder / STORE_FILE).read_text()))

    @property
    def hooks(self) -> list[str]:
        return list(self.meta["hooks"])

    @property
    def n_tokens(self) -> int:
        return self.meta["n_tokens"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    def _check(self, hook: str) -> None:
        if hook not in self.meta["widths"]:
            raise KeyError(f"the store has no hook {hook!r}; it has {', '.join(self.hooks)}")

    def width(self, hook: str) -> int:
        self._check(hook)
        return self.meta["widths"][hook]

    def scale(self, hook: str) -> float:
        """c such that mean ||c x||^2 = width over the store's rows of `hook`."""
        self._check(hook)
        return self.meta["scales"][hook]

    def array(self, hook: str) -> np.memmap:
        """The raw stored values of `hook`, (n_tokens, width) (bf16: uint16 bits; `read` decodes)."""
        self._check(hook)
        if hook not in self._arrays:
            self._arrays[hook] = np.memmap(self.folder / f"{hook}.bin", dtype=RAW_DTYPE[self.dtype],
                                           mode="r", shape=(self.n_tokens, self.width(hook)))
        return self._arrays[hook]

    def read(self, hook: str, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Rows of `hook` as float32, (len(rows), width)."""
        return decode(self.array(hook)[rows], self.dtype)

    def locate(self, row: int) -> tuple[int, int]:
        """(offset of the row's window in the split, position in the window): the row's token
        is `shards.tokens(split)[offset + position]`."""
        window, pos = self.rows[row]
        return int(self.window_start[window]), int(pos)

    def context(self, row: int, before: int = 20) -> np.ndarray:
        """Token ids (int64) the model saw up to and including row `row`'s position: at most
        `before` earlier tokens, never reaching past the window's start."""
        window, pos = (int(v) for v in self.rows[row])
        return self.windows[window, max(0, pos - before) : pos + 1].astype(np.int64)

    def token_ids(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """The token at each row, int64 (len(rows),)."""
        index = np.asarray(self.rows[rows])
        return self.windows[index[:, 0], index[:, 1]].astype(np.int64)

    def source(self, hook_in: str, hook_out: str | None = None, seed: int = 0,
               buffer_tokens: int = BUFFER_TOKENS) -> "StoreSource":
        """Shuffled training batches of `hook_in` (an SAE) or (hook_in, hook_out) pairs
        (a transcoder). `seed` fixes `sample`; `batches` takes its own seed."""
        return StoreSource(self, hook_in, hook_out, seed, buffer_tokens)

    def stats(self, hook: str, max_rows: int = 50_000, seed: int = 0, **kwargs) -> dict:
        """`activation_stats` of up to `max_rows` rows of `hook`, chosen at random by `seed`."""
        rows = np.arange(self.n_tokens)
        if self.n_tokens > max_rows:
            rows = np.sort(_rng("stats", seed).choice(self.n_tokens, max_rows, replace=False))
        return activation_stats(self.read(hook, rows), **kwargs)


# --- training sources --------------------------------------------------------------------

class _MixingSource:
    """The batch logic both sources share.

    The endless stream of rows is pass 0, pass 1, ... Pass p is cut into buffers by
    `_plan(seed, p)`; buffer j is loaded by `_fill`, shuffled by its own generator
    (seed, p, j), and handed out in order. Batch k is rows k*B .. (k+1)*B - 1 of that
    stream (a batch may straddle buffers and passes), so every row appears exactly once a
    pass, and `start_batch` jumps straight to the buffer holding row k*B.
    """

    hook_in: str
    hook_out: str | None
    d_in: int
    d_out: int
    buffer_tokens: int
    rows_per_pass: int
    peak_buffer_rows: int = 0  # the most rows one mixing buffer has held (memory bound)

    def _plan(self, seed: int, epoch: int) -> tuple[list, np.ndarray]:
        """-> (buffer specs, rows in each buffer)."""
        raise NotImplementedError

    def _fill(self, spec) -> tuple[np.ndarray, np.ndarray | None]:
        """A buffer spec -> (x_in rows, x_out rows or None for an SAE), stored form."""
        raise NotImplementedError

    def _to_float(self, x: np.ndarray) -> np.ndarray:
        return x

    def batches(self, batch_size: int, seed: int, start_batch: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless float32 (x_in (B, d_in), x_out (B, d_out)) raw batches; x_out is x_in
        (the same tensor) for an SAE. Batches from `start_batch` on equal the tail of the
        sequence from 0."""
        if batch_size < 1 or start_batch < 0:
            raise ValueError(f"need batch_size >= 1 and start_batch >= 0, got {batch_size}, {start_batch}")
        epoch, offset = divmod(start_batch * batch_size, self.rows_per_pass)
        parts_in: list[np.ndarray] = []
        parts_out: list[np.ndarray] = []
        have = 0
        while True:
            specs, sizes = self._plan(seed, epoch)
            ends = np.cumsum(sizes)
            first = int(np.searchsorted(ends, offset, side="right"))
            skip = offset - (int(ends[first - 1]) if first else 0)
            for j in range(first, len(specs)):
                buf_in, buf_out = self._fill(specs[j])
                self.peak_buffer_rows = max(self.peak_buffer_rows, len(buf_in))
                order = _rng("mix", seed, epoch, j).permutation(len(buf_in))[skip:]
                skip, i = 0, 0
                while i < len(order):
                    idx = order[i : i + batch_size - have]
                    i, have = i + len(idx), have + len(idx)
                    parts_in.append(buf_in[idx])
                    if buf_out is not None:
                        parts_out.append(buf_out[idx])
                    if have == batch_size:
                        yield self._batch(parts_in, parts_out)
                        parts_in, parts_out, have = [], [], 0
                del buf_in, buf_out  # free the buffer before the next one is loaded
            epoch, offset = epoch + 1, 0

    def _batch(self, parts_in: list, parts_out: list) -> tuple[torch.Tensor, torch.Tensor]:
        x_in = torch.from_numpy(self._to_float(np.concatenate(parts_in)))
        if not parts_out:
            return x_in, x_in
        return x_in, torch.from_numpy(self._to_float(np.concatenate(parts_out)))


class StoreSource(_MixingSource):
    """Batches from an `ActivationStore`: each buffer is `CHUNKS_PER_BUFFER` contiguous
    chunks (cheap sequential reads) taken from anywhere in the store."""

    def __init__(self, store: ActivationStore, hook_in: str, hook_out: str | None = None,
                 seed: int = 0, buffer_tokens: int = BUFFER_TOKENS):
        if buffer_tokens < 1:
            raise ValueError(f"buffer_tokens must be >= 1, got {buffer_tokens}")
        self.store, self.seed, self.buffer_tokens = store, seed, buffer_tokens
        self.hook_in = hook_in
        self.hook_out = hook_out if hook_out and hook_out != hook_in else None
        self.d_in = store.width(hook_in)
        self.d_out = store.width(self.hook_out) if self.hook_out else self.d_in
        self.rows_per_pass = store.n_tokens
        self.chunk_rows = max(1, buffer_tokens // CHUNKS_PER_BUFFER)
        self.chunks_per_buffer = buffer_tokens // self.chunk_rows  # so a buffer <= buffer_tokens
        self.peak_buffer_rows = 0

    def scale(self, hook: str) -> float:
        return self.store.scale(hook)

    def _plan(self, seed: int, epoch: int) -> tuple[list, np.ndarray]:
        n, size = self.rows_per_pass, self.chunk_rows
        chunks = _rng("chunks", seed, epoch).permutation(math.ceil(n / size))
        lengths = np.minimum(size, n - chunks * size)
        starts = np.arange(0, len(chunks), self.chunks_per_buffer)
        specs = [np.sort(chunks[s : s + self.chunks_per_buffer]) for s in starts]
        return specs, np.add.reduceat(lengths, starts)

    def _fill(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        def load(hook: str) -> np.ndarray:
            array, size = self.store.array(hook), self.chunk_rows
            return np.concatenate([array[c * size : (c + 1) * size] for c in chunks])
        return load(self.hook_in), load(self.hook_out) if self.hook_out else None

    def _to_float(self, x: np.ndarray) -> np.ndarray:
        return decode(x, self.store.dtype)

    def sample(self, n: int) -> torch.Tensor:
        """(n, d_in) float32 raw inputs: the first n rows of a permutation fixed by `seed`
        (read in row order), e.g. to initialise an SAE's decoder bias."""
        if n > self.store.n_tokens:
            raise ValueError(f"asked for {n:,} samples but the store holds {self.store.n_tokens:,}")
        rows = np.sort(_rng("sample", self.seed).permutation(self.store.n_tokens)[:n])
        return torch.from_numpy(self.store.read(self.hook_in, rows))


class StreamingSource(_MixingSource):
    """The `StoreSource` interface with no disk: the LM runs as batches are asked for.

    Pass p visits every window of the split once, in an order drawn from (seed, p); each
    buffer is `buffer_tokens // n_ctx` windows, run `cfg.batch_size` at a time, start
    positions dropped as in collection, shuffled, handed out. Values stay float32 (nothing
    is stored, so nothing is rounded). `cfg.n_tokens` does not limit a stream: every pass
    covers the whole split. Uses cfg.split, exclude_start, batch_size.
    """

    def __init__(self, model, shards: Shards, cfg: ActivationsConfig, hook_in: str,
                 hook_out: str | None = None, device: str | torch.device | None = None, *,
                 seed: int | None = None, buffer_tokens: int = BUFFER_TOKENS,
                 scale_tokens: int = 2**15):
        self.model, self.cfg = model, cfg
        self.device = model_device(model, device)
        self.seed = cfg.seed if seed is None else seed
        self.tokens, self.n_ctx = shards.tokens(cfg.split), model.cfg.n_ctx
        if buffer_tokens < self.n_ctx:
            raise ValueError(f"buffer_tokens ({buffer_tokens}) must hold at least one window "
                             f"of n_ctx={self.n_ctx} tokens")
        self.buffer_tokens, self.scale_tokens = buffer_tokens, scale_tokens
        self.windows_per_buffer = buffer_tokens // self.n_ctx
        self.start_id = shards.start_id if cfg.exclude_start else None
        self.counts = window_counts(self.tokens, self.n_ctx, self.start_id)  # rows per window
        self.rows_per_pass = int(self.counts.sum())
        if self.rows_per_pass == 0:
            raise ValueError(f"the {cfg.split} split has no full window of n_ctx={self.n_ctx} tokens")
        self.hook_in = hook_in
        self.hook_out = hook_out if hook_out and hook_out != hook_in else None
        for hook in (hook_in, self.hook_out):
            if hook:
                _check_per_token(hook)
        probe, _ = run_hooks(model, _gather(self.tokens, np.zeros(1, np.int64), self.n_ctx),
                             self._hooks, None, self.device)
        self.d_in = probe[hook_in].shape[1]
        self.d_out = probe[self.hook_out].shape[1] if self.hook_out else self.d_in
        self.peak_buffer_rows = 0
        self._scales: dict[str, float] = {}

    @property
    def _hooks(self) -> list[str]:
        return [self.hook_in] + ([self.hook_out] if self.hook_out else [])

    def _activations(self, windows: np.ndarray, hooks: Sequence[str]) -> dict[str, np.ndarray]:
        """Window ids -> {hook: float32 (kept rows, width)}, `cfg.batch_size` windows a pass."""
        pieces: dict[str, list[np.ndarray]] = {hook: [] for hook in hooks}
        for a in range(0, len(windows), self.cfg.batch_size):
            ids = windows[a : a + self.cfg.batch_size]
            acts, _ = run_hooks(self.model, _gather(self.tokens, ids, self.n_ctx), hooks,
                                self.start_id, self.device)
            for hook in hooks:
                pieces[hook].append(acts[hook].cpu().numpy())
        return {hook: np.concatenate(p) for hook, p in pieces.items()}

    def _plan(self, seed: int, epoch: int) -> tuple[list, np.ndarray]:
        order = _rng("stream", seed, epoch).permutation(len(self.counts))
        starts = np.arange(0, len(order), self.windows_per_buffer)
        specs = [order[s : s + self.windows_per_buffer] for s in starts]
        return specs, np.add.reduceat(self.counts[order], starts)

    def _fill(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        acts = self._activations(windows, self._hooks)
        return acts[self.hook_in], acts[self.hook_out] if self.hook_out else None

    def _first_rows(self, n: int, hook: str) -> np.ndarray:
        """The first n rows of `hook` over windows in an order fixed by `seed`."""
        if n > self.rows_per_pass:
            raise ValueError(f"asked for {n:,} rows but the split has {self.rows_per_pass:,}")
        order = _rng("sample", self.seed).permutation(len(self.counts))
        needed = int(np.searchsorted(np.cumsum(self.counts[order]), n)) + 1
        return self._activations(order[:needed], [hook])[hook][:n]

    def sample(self, n: int) -> torch.Tensor:
        """(n, d_in) float32 raw inputs from windows in an order fixed by `seed`."""
        return torch.from_numpy(self._first_rows(n, self.hook_in))

    def scale(self, hook: str) -> float:
        """c with mean ||c x||^2 = width, estimated on `scale_tokens` rows of `hook`."""
        if hook not in self._scales:
            _check_per_token(hook)
            self._scales[hook] = norm_scale_of(
                self._first_rows(min(self.scale_tokens, self.rows_per_pass), hook))
        return self._scales[hook]


# --- statistics --------------------------------------------------------------------------

def principal_components(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The top principal directions of rows x (n, width), centred on their mean:
    (components (k, width), explained_variance_ratio (k,) float64, each the share of the
    *total* variance along that direction, largest first), k = min(n_components, n, width).
    All zero ratios if the rows do not vary."""
    x = np.asarray(x)
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    ratio = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    k = min(n_components, len(ratio))
    return vt[:k], ratio[:k]


def explained_variance_ratio(x: np.ndarray, n_components: int) -> np.ndarray:
    """(k,) float64: the share of the total variance of rows x (n, width) along each of
    its top k principal directions (see `principal_components`)."""
    return principal_components(x, n_components)[1]


def activation_stats(x: np.ndarray | torch.Tensor, n_components: int = 16, bins: int = 100,
                     pca_rows: int = 8192, seed: int = 0) -> dict:
    """Summary statistics of activations x (rows, width) (or (..., width)), as plain data.

    Returns, over all values: mean, std, min, q25, median, q75, max, frac_zero; per
    channel: channel_mean, channel_std (width,); histograms {"counts", "edges"} of the
    values (`values_hist`) and of the row norms (`norm_hist`, with norm_mean); and `pca`:
    the top `n_components` principal directions (components (k, width)) of up to
    `pca_rows` centred rows, with explained_variance_ratio (k,) (of the total variance)
    and its running sum `cumulative` (k,).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"activations must be floats, got {x.dtype} (bf16 stores hold uint16 "
                        f"bits: read them with store.read or activations.decode)")
    x = x.reshape(-1, x.shape[-1]).astype(np.float32)
    flat = x.reshape(-1)
    q25, median, q75 = np.percentile(flat, [25, 50, 75])
    norms = np.linalg.norm(x, axis=1)
    counts, edges = np.histogram(flat, bins=bins)
    norm_counts, norm_edges = np.histogram(norms, bins=bins)

    sample = x
    if len(x) > pca_rows:
        sample = x[np.sort(_rng("pca", seed).choice(len(x), pca_rows, replace=False))]
    vt, ratio = principal_components(sample, n_components)
    return {
        "n_rows": int(x.shape[0]), "width": int(x.shape[1]),
        "mean": float(flat.mean(dtype=np.float64)), "std": float(flat.std(dtype=np.float64)),
        "min": float(flat.min()), "q25": float(q25), "median": float(median),
        "q75": float(q75), "max": float(flat.max()), "frac_zero": float((flat == 0).mean()),
        "channel_mean": x.mean(axis=0, dtype=np.float64),
        "channel_std": x.std(axis=0, dtype=np.float64),
        "values_hist": {"counts": counts, "edges": edges},
        "norm_hist": {"counts": norm_counts, "edges": norm_edges},
        "norm_mean": float(norms.mean(dtype=np.float64)),
        "pca": {"components": vt, "explained_variance_ratio": ratio,
                "cumulative": np.cumsum(ratio)},
    }


__all__ = [
    "collect_activations", "ActivationStore", "StoreSource", "StreamingSource",
    "activation_stats", "estimate_bytes", "disk_cost_table", "hook_width", "run_hooks",
    "plan_windows", "window_counts", "model_fingerprint", "norm_scale", "norm_scale_of",
    "principal_components", "explained_variance_ratio", "encode", "decode",
    "DiskSpaceError", "BYTES_PER_VALUE", "BUFFER_TOKENS",
]
