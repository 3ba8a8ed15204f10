"""What each latent responds to: one bounded-memory pass over held-out tokens.

    scan_features(model, sae, shards, cfg, out_dir)   -> features.safetensors + features.json
    load_features(out_dir)                            -> the same, without the scanning code

The pass reads the validation split as consecutive n_ctx-token windows, in order (all of
it, or the first `cfg.n_tokens` tokens rounded up to whole windows; the tail shorter than
a window is left out). Each window goes through the LM up to the dictionary's hook_in and
the final residual, then through the SAE or transcoder (`sae.encode`). A token's
*position* is its index in the split's token file, so its context can be read back from
the shards at the end. Positions holding the start token are skipped when
`exclude_start` (the SAE never trained on them: their norms are outliers).

Per latent, in memory that does not grow with the tokens scanned (`ScanState`,
O(d_sae x (top_k + reservoir))):

  top contexts   the `top_k` largest activations and their positions. Only a batch's
                 active (token, latent, value) entries are touched (a TopK SAE has k of
                 d_sae per token), never a dense (d_sae, tokens) array: they are merged
                 with the running top k (`_merge`) by a segmented selection on the
                 concatenation (`_select`): one stable sort groups the entries by latent,
                 largest first, and each latent keeps the first `top_k` of its group;
                 vectorised over latents, no loop. Tie rule: of equal activations the
                 earliest position wins (old slots are listed before the batch's entries,
                 these in position order, and the sort is stable), which makes the result
                 deterministic and equal to `naive_top_contexts`.
  quantile       contexts at the activation quantiles (j + 1/2) / m, j < m. A latent's
  samples        active tokens each get a random key (`scan_features` draws one per
                 active entry of a batch, by token then by latent, from a generator seeded
                 by the batch); the `reservoir` smallest keys seen so far are a uniform
                 sample of its active tokens (bottom-k sampling: a reservoir sample that
                 merges like the top k, by the same `_merge`). After the pass, each
                 quantile's activation is read off the latent's histogram (below; linear
                 in log activation within a bin) and the reservoir context nearest to it
                 is taken. A latent with few activations may repeat one.
  histogram      counts of its non-zero activations over `hist_bins` fixed log-spaced
                 edges from 1e-3 to 1e3, the same for every latent (so histograms compare
                 and merge by addition before the scale is known); values outside fall in
                 the end bins. Folded SAEs give activations in the raw activation's units.
  density        the share of scanned tokens it is active on (> 0); mean activation when
                 active; max activation.

Also measured on the scanned tokens: the mean of the final norm's scale (1/std for
LayerNorm, 1/rms for RMSNorm, of `blocks.{L-1}.hook_resid_post`), which freezes the norm
for each latent's direct logit attribution (`interpret.logits`): its top boosted and
suppressed tokens and the histogram of its effects over the vocabulary.

Resumable: every `cfg.checkpoint_every` batches the running state goes to
`features.ckpt.safetensors` (atomic write); a rerun with the same inputs continues from
it and gives the same files as an uninterrupted pass (random keys depend only on the
seed and the batch index). `stop_after=b` stops after b batches, checkpointed, as a kill
would: the resume test uses it.

`naive_top_contexts` is the plain reference (keep everything, sort): the tests check the
bounded scan against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import FeaturesConfig
from ..corpus.shards import Shards
from ..lm.model import eval_mode, model_device
from ..sae.model import SparseAutoencoder
from .logits import (
    direct_logit_attribution,
    logit_histogram,
    top_logit_tokens,
    writes_residual,
)

FORMAT_VERSION = 1
DATA, INDEX, CHECKPOINT = "features.safetensors", "features.json", "features.ckpt.safetensors"
HIST_LOG10 = (-3.0, 3.0)  # the activation histogram's edges: 1e-3 .. 1e3, log-spaced
KEY_SEED_STRIDE = 1_000_003  # batch b's reservoir keys come from seed * stride + b


def hist_edges(bins: int) -> Tensor:
    """The activation histogram's (bins + 1,) log-spaced edges, shared by every latent."""
    return torch.logspace(*HIST_LOG10, bins + 1, dtype=torch.float64).float()


# --- the reference: keep every activation, sort ------------------------------------------

def naive_top_contexts(acts: Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain way: for each latent, every token it is active on (> 0), sorted by
    activation, largest first, ties by earliest position; the first k. Memory grows with
    the tokens. acts (n_tokens, d_sae), position = row ->
    (values (d_sae, k) float32, 0 where a latent has fewer than k; positions (d_sae, k), -1 there)."""
    if isinstance(acts, Tensor):
        acts = acts.detach().float().cpu().numpy()
    acts = np.asarray(acts, dtype=np.float32)
    d_sae = acts.shape[1]
    values = np.zeros((d_sae, k), dtype=np.float32)
    positions = np.full((d_sae, k), -1, dtype=np.int64)
    for latent in range(d_sae):
        column = acts[:, latent]
        active = [(float(column[p]), p) for p in np.flatnonzero(column > 0)]
        active.sort(key=lambda pair: (-pair[0], pair[1]))
        for slot, (value, position) in enumerate(active[:k]):
            values[latent, slot], positions[latent, slot] = value, position
    return values, positions


@torch.no_grad()
def merge_top_k(top_values: Tensor, top_positions: Tensor, latents: Tensor,
                positions: Tensor) -> tuple[Tensor, Tensor]:
    """The running top k (d_sae, k) values and positions (a slot is empty where its
    position is -1 or its value is not > 0: -inf / -1 as the scan keeps them, 0 / -1 as
    `top()` shows them) merged with a batch: latents (n, d_sae), positions (n,), all
    later than the running ones -> (values (d_sae, k) float32, positions (d_sae, k) int64),
    largest first, ties to the earliest position, empty slots 0 at position -1.

    `ScanState`: its public `update` takes the running entries back (as
    one batch, a row per distinct position, each latent's value where it was kept), then
    the new batch; `top()` is the answer."""
    d_sae, k = top_values.shape
    state = ScanState(d_sae, FeaturesConfig(top_k=k))
    filled = (top_positions >= 0) & (top_values > 0)
    if bool(filled.any()):
        kept = top_positions[filled].long()
        rows = kept.unique()  # sorted
        old = torch.zeros(len(rows), d_sae)
        old[torch.searchsorted(rows, kept), filled.nonzero()[:, 0]] = top_values[filled].float()
        state.update(old, rows)
    state.update(latents.float(), positions.long())
    return state.top()


# --- the bounded scan ----------------------------------------------------------------------

def _sort_key(latent: Tensor, score: Tensor, largest: bool) -> Tensor:
    """One int64 per entry that sorts like (latent ascending, then score largest or
    smallest first). latent (N,) int64, 0 <= latent < 2^32; score (N,) float32 >= 0 ->
    (N,) int64.

    A non-negative float32's bit pattern, read as an int32, orders exactly as the float
    does, so the pair packs into one integer with the latent in the high bits. Why pack:
    one sort of integers instead of a float sort and then a stable sort by latent, which
    costs several times more (benchmarks/README.md)."""
    bits = score.contiguous().view(torch.int32).long()  # in [0, 2^31)
    if largest:
        bits = (2**31 - 1) - bits
    return latent * 2**31 + bits


def _select(latent: Tensor, score: Tensor, k: int, d_sae: int, largest: bool) -> tuple[Tensor, Tensor]:
    """Each latent's k best entries by score, ties to the entry listed first.
    latent (N,) int64 < d_sae; score (N,) float32 >= 0; largest: best = largest score
    (else smallest) -> (pick (M,) indices into the N entries, slot (M,) each one's rank
    within its latent, 0 = best), M <= d_sae x k.

    A segmented selection, no loop over latents: one stable sort groups the entries by
    latent, best first within a group and equal scores in the order listed; an entry's
    rank is its place in that order minus where its latent's group starts."""
    order = _sort_key(latent, score, largest).argsort(stable=True)
    sorted_latent = latent[order]
    count = torch.bincount(sorted_latent, minlength=d_sae)
    start = count.cumsum(0) - count  # (d_sae,) where each latent's group starts in `order`
    rank = torch.arange(len(order), device=latent.device) - start[sorted_latent]
    keep = rank < k
    return order[keep], rank[keep]


def _merge(slots: dict[str, Tensor], latent: Tensor, new: dict[str, Tensor], *, by: str,
           largest: bool) -> dict[str, Tensor]:
    """Fold new entries into per-latent slots kept best first: each latent keeps the k
    best of its old slots and its new entries by `by`, ties to the old ones, then to the
    earlier new ones.

    slots {name: (d_sae, k)}, slots[by] >= 0 and +-inf where empty (the other tensors are
    not read there); latent (N,) int64, the new entries' latents, in position order;
    new {name: (N,)}, the same names, new[by] finite >= 0
    -> {name: (d_sae, k)}, best first; empty slots +-inf in `by`, -1 (int64) or 0 elsewhere.

    Never the dense (d_sae, tokens) scores: only the new entries that can get in and the
    old slots of the latents they reach are sorted. The old slots go first, row by row in
    slot order, and they are all earlier positions than the new ones, so "listed first"
    is the tie rule: the earliest position wins."""
    d_sae, k = slots[by].shape
    # a new entry that does not beat its latent's k-th slot cannot get in (a tie goes to
    # the old one); a row with room has +-inf there, which every entry beats
    kth = slots[by][latent, -1]
    beats = new[by] > kth if largest else new[by] < kth
    latent, new = latent[beats], {name: v[beats] for name, v in new.items()}
    # only the latents some new entry reaches are redone; the others keep their slots
    touched = torch.zeros(d_sae, dtype=torch.bool, device=latent.device)
    touched[latent] = True
    # the touched rows' filled slots as flat indices, row by row (a row's filled slots come first)
    old = (torch.isfinite(slots[by]) & touched[:, None]).reshape(-1).nonzero()[:, 0]
    all_latent = torch.cat([old // k, latent])
    entries = {name: torch.cat([t.reshape(-1)[old], new[name]]) for name, t in slots.items()}
    pick, slot = _select(all_latent, entries[by], k, d_sae, largest)
    row = all_latent[pick]
    out = {}
    for name, t in slots.items():
        empty = (-math.inf if largest else math.inf) if name == by else (-1 if t.dtype == torch.int64 else 0)
        out[name] = t.clone()
        out[name][touched] = empty
        out[name][row, slot] = entries[name][pick]
    return out


def _active(latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The batch's active entries, by token then by latent (row-major), so each latent's
    come in position order. latents (n, d_sae) -> (token (nnz,), latent (nnz,) int64,
    value (nnz,) float32 > 0)."""
    flat = latents.float().reshape(-1)
    index = flat.nonzero()[:, 0]  # a 1-D nonzero: cheaper than a 2-D one or `flat > 0` first
    value = flat[index]
    positive = value > 0  # latents are >= 0; this drops anything else (negative, NaN)
    index, value = index[positive], value[positive]
    d_sae = latents.shape[1]
    return index // d_sae, index % d_sae, value


def _sum_by_latent(latent: Tensor, value: Tensor, count: Tensor) -> Tensor:
    """Per-latent sums of the entries' values in float64. latent (N,) int64, value (N,),
    count (d_sae,) = bincount(latent) -> (d_sae,) float64.

    Why not index_add_: on a GPU it adds floats in no fixed order, and a resumed scan must
    write the same bytes. Here the values are sorted by latent (stable) and each latent's
    sum is the difference of one running sum at its group's ends: the same order on every
    device and every run."""
    running = value[latent.argsort(stable=True)].double().cumsum(0)
    end = count.cumsum(0)
    at_end = torch.cat([running.new_zeros(1), running])[end]
    at_start = torch.cat([running.new_zeros(1), at_end[:-1]])
    return at_end - at_start


class ScanState:
    """The running per-latent state of a scan; its size depends on d_sae and the config,
    never on the tokens seen. Empty top / reservoir slots hold score -inf at position -1.

    Every row keeps its filled slots first and best first (largest activation, or
    smallest reservoir key; ties by earliest position), so a merge that lists the old
    slots before the batch's entries breaks ties by the order it lists them in."""

    def __init__(self, d_sae: int, cfg: FeaturesConfig, device: torch.device | str = "cpu"):
        self.cfg, self.d_sae = cfg, d_sae
        k, r, bins = cfg.top_k, cfg.reservoir, cfg.hist_bins
        kw = {"device": device}
        self.t = {
            "top_values": torch.full((d_sae, k), -math.inf, **kw),
            "top_positions": torch.full((d_sae, k), -1, dtype=torch.int64, **kw),
            "res_scores": torch.full((d_sae, r), -math.inf, **kw),  # minus the random key
            "res_values": torch.zeros((d_sae, r), **kw),
            "res_positions": torch.full((d_sae, r), -1, dtype=torch.int64, **kw),
            "hist": torch.zeros((d_sae, bins), dtype=torch.int64, **kw),
            "n_active": torch.zeros(d_sae, dtype=torch.int64, **kw),
            "sum_active": torch.zeros(d_sae, dtype=torch.float64, **kw),
            "max_active": torch.zeros(d_sae, **kw),
            # scalars: tokens counted, and the final norm's scale summed over them
            "n_tokens": torch.zeros((), dtype=torch.int64, **kw),
            "ln_sum": torch.zeros((), dtype=torch.float64, **kw),
        }
        self._log_lo = HIST_LOG10[0]
        self._bin_width = (HIST_LOG10[1] - HIST_LOG10[0]) / bins

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.t.values())

    @torch.no_grad()
    def update(self, latents: Tensor, positions: Tensor, keys: Tensor | torch.Generator | None = None,
               ln_scale: Tensor | None = None) -> None:
        """Fold one batch in. latents (n, d_sae) >= 0 of the counted tokens; positions (n,)
        int64, increasing and after every earlier batch's; keys: the reservoir's uniform
        random keys, a torch.Generator (one key drawn per active entry, in the order of
        `_active`: by token, then by latent, as `scan_features` does), or an (n, d_sae)
        tensor of them (only the active entries' are read), or None (zeros: the earliest
        active tokens are kept; only for tests of the top k); ln_scale (n,) the final
        norm's scale at those tokens (None: not measured).

        Works on the active entries only (a TopK SAE has k of d_sae per token), never on
        a dense (d_sae, n) tensor of scores or keys."""
        t, cfg = self.t, self.cfg
        if len(positions) == 0:
            return
        token, latent, value = _active(latents)
        position = positions.to(latents.device)[token]
        # top k: the largest activations, ties to the earliest position
        top = _merge({"value": t["top_values"], "position": t["top_positions"]}, latent,
                     {"value": value, "position": position}, by="value", largest=True)
        t["top_values"], t["top_positions"] = top["value"], top["position"]
        # reservoir: the smallest random keys among active tokens (res_scores holds minus the key)
        if isinstance(keys, torch.Generator):
            key = torch.rand(len(value), generator=keys, device=latents.device)
        elif keys is not None:
            key = keys.to(latents.device).float()[token, latent]
        else:
            key = torch.zeros_like(value)
        res = _merge({"key": -t["res_scores"], "value": t["res_values"], "position": t["res_positions"]},
                     latent, {"key": key, "value": value, "position": position}, by="key", largest=False)
        t["res_scores"], t["res_values"], t["res_positions"] = -res["key"], res["value"], res["position"]
        # histogram of the non-zero activations, and the running sums
        bins = ((value.log10() - self._log_lo) / self._bin_width).floor().long().clamp_(0, cfg.hist_bins - 1)
        t["hist"].view(-1).index_add_(0, latent * cfg.hist_bins + bins, torch.ones_like(bins))
        count = torch.bincount(latent, minlength=self.d_sae)
        t["n_active"] += count
        t["sum_active"] += _sum_by_latent(latent, value, count)
        t["max_active"].scatter_reduce_(0, latent, value, "amax")  # starts at 0, so inactive stays 0
        t["n_tokens"] += len(positions)
        if ln_scale is not None:
            t["ln_sum"] += ln_scale.double().sum()

    def top(self) -> tuple[Tensor, Tensor]:
        """(values (d_sae, top_k), positions): largest first, ties by earliest position;
        empty slots 0 at position -1. The slots are kept in this order already; the stable
        sort only makes sure of it (cheap: d_sae x top_k)."""
        values, order = self.t["top_values"].sort(dim=1, descending=True, stable=True)
        positions = self.t["top_positions"].gather(1, order)
        empty = torch.isinf(values)
        return values.masked_fill(empty, 0.0), positions.masked_fill(empty, -1)

    def quantile_samples(self) -> tuple[Tensor, Tensor, Tensor]:
        """(levels (m,), values (d_sae, m), positions (d_sae, m)): for each level q the
        reservoir context whose activation is nearest the q-quantile of the latent's
        histogram (interpolated linearly in log activation within its bin)."""
        m = self.cfg.quantile_samples
        levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        hist = self.t["hist"].double().cpu()
        total = hist.sum(1, keepdim=True)
        cdf = hist.cumsum(1) / total.clamp_min(1)  # (d_sae, bins)
        q = levels.expand(self.d_sae, m).contiguous()
        b = torch.searchsorted(cdf, q).clamp_(max=self.cfg.hist_bins - 1)  # the bin it falls in
        before = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0)), 0.0)
        share = hist.gather(1, b) / total.clamp_min(1)
        within = ((q - before) / share.clamp_min(1e-30)).clamp(0, 1)
        target = 10 ** (self._log_lo + (b + within) * self._bin_width)  # (d_sae, m)
        res_values = self.t["res_values"].double().cpu()
        filled = torch.isfinite(self.t["res_scores"]).cpu()
        distance = (res_values[:, None, :] - target[:, :, None]).abs()  # (d_sae, m, reservoir)
        distance = distance.masked_fill(~filled[:, None, :], math.inf)
        pick = distance.argmin(-1)
        values = res_values.gather(1, pick).float()
        positions = self.t["res_positions"].cpu().gather(1, pick)
        none = ~filled.any(1, keepdim=True).expand(-1, m)
        return levels.float(), values.masked_fill(none, 0.0), positions.masked_fill(none, -1)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: t.detach().cpu().contiguous() for name, t in self.t.items()}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        for name, t in self.t.items():
            if tensors[name].shape != t.shape:
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensors[name].shape)}, "
                                 f"expected {tuple(t.shape)}")
            self.t[name] = tensors[name].to(t.device)


def context_windows(tokens: np.ndarray, positions: Tensor, width: int) -> Tensor:
    """Token ids around each position: positions (...,) -> (..., 2 width + 1) int32, the
    position's own token in the middle, -1 past either end of `tokens` or for position -1."""
    positions = positions.cpu().numpy()
    index = positions[..., None] + np.arange(-width, width + 1)
    valid = (positions[..., None] >= 0) & (index >= 0) & (index < len(tokens))
    ids = np.where(valid, np.asarray(tokens[np.clip(index, 0, len(tokens) - 1)], dtype=np.int64), -1)
    return torch.from_numpy(ids.astype(np.int32))


def _final_norm_scale(model, resid: Tensor) -> Tensor:
    """The final norm's scale at each token: 1/std (LayerNorm), 1/rms (RMSNorm), 1 (none).
    resid (n, d_model) -> (n,)"""
    from ..lm.model import NORM_EPS

    kind = model.ln_final.kind
    resid = resid.float()
    if kind == "layernorm":
        return (resid.var(-1, unbiased=False) + NORM_EPS).rsqrt()
    if kind == "rmsnorm":
        return (resid.pow(2).mean(-1) + NORM_EPS).rsqrt()
    return torch.ones(len(resid), device=resid.device)


def _hooks(model, sae: SparseAutoencoder) -> tuple[str, str]:
    """(the dictionary's hook_in, the final residual hook), checked against the model."""
    hook_in = sae.cfg.hook_in
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    if hook_in not in model.hook_points:
        close = [n for n in model.hook_points if n.split(".")[-1] == hook_in.split(".")[-1]][:3]
        hint = f" (this model has e.g. {', '.join(close)})" if close else ""
        raise ValueError(f"the dictionary reads {hook_in!r}, which this model has no hook for{hint}: "
                         f"scan it with the LM it was trained on")
    return hook_in, final


def _windows(shards: Shards, n_ctx: int, n_tokens: int) -> tuple[np.ndarray, int]:
    """(the val split's tokens, the number of consecutive n_ctx windows to scan)."""
    tokens = shards.tokens("val")
    available = len(tokens) // n_ctx
    if available < 1:
        raise ValueError(f"the val split has {len(tokens)} tokens, fewer than one window of "
                         f"n_ctx={n_ctx}: build the shards from more stories")
    wanted = available if n_tokens == 0 else min(available, math.ceil(n_tokens / n_ctx))
    return tokens, wanted


def scan_features(model, sae: SparseAutoencoder, shards: Shards, cfg: FeaturesConfig,
                  out_dir: str | os.PathLike, *, device: str | torch.device | None = None,
                  progress: bool = True, stop_after: int | None = None, exclude_start: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Scan the val split (see the module docstring), write `features.safetensors` and
    `features.json` into `out_dir`, and return the index (features.json's content).

    `device`: where the model and SAE already are (None: wherever that is; never moved).
    `stop_after=b` stops after b batches with the state checkpointed, as a kill would,
    and returns {"stopped_after": b, "n_batches": n}; a later call resumes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = model_device(model, device)
    sae_device = next(sae.parameters()).device
    if sae_device != device:
        raise ValueError(f"the model is on {device} but the SAE on {sae_device}: move one, "
                         f"e.g. sae.to({str(device)!r})")
    hook_in, final = _hooks(model, sae)
    n_ctx = model.cfg.n_ctx
    tokens, n_windows = _windows(shards, n_ctx, cfg.n_tokens)
    n_batches = math.ceil(n_windows / cfg.batch_size)
    start_id = shards.start_id if exclude_start else None
    fingerprint = json.dumps({"format": FORMAT_VERSION, "cfg": dataclasses.asdict(cfg),
                              "hook_in": hook_in, "hook_out": sae.cfg.hook_out, "d_sae": sae.d_sae,
                              "n_windows": n_windows, "start_id": start_id,
                              "w_dec_sum": round(float(sae.W_dec.detach().double().sum()), 6)},
                             sort_keys=True)
    state = ScanState(sae.d_sae, cfg, device)
    first = 0
    ckpt = out / CHECKPOINT
    if ckpt.exists():
        with safetensors.safe_open(str(ckpt), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("fingerprint") == fingerprint:
            state.load_state_dict(safetensors.torch.load_file(ckpt))
            first = int(meta["batch"])
            log(f"[features] resuming from batch {first} of {n_batches} ({ckpt})")
        else:
            log(f"[features] ignoring {ckpt}: it was written for other inputs or settings")

    def checkpoint(batch: int) -> None:
        blob = safetensors.torch.save(state.state_dict(),
                                      metadata={"fingerprint": fingerprint, "batch": str(batch)})
        atomic_write_bytes(ckpt, blob)

    with eval_mode(model, sae):
        bar = tqdm(range(first, n_batches), total=n_batches, initial=first, desc="features",
                   disable=not progress, leave=False)
        for batch in bar:
            if stop_after is not None and batch >= stop_after:
                checkpoint(batch)
                return {"stopped_after": batch, "n_batches": n_batches}
            a, b = batch * cfg.batch_size, min(n_windows, (batch + 1) * cfg.batch_size)
            starts = np.arange(a, b) * n_ctx
            ids = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(n_ctx)], dtype=np.int64))
            positions = torch.from_numpy(starts[:, None] + np.arange(n_ctx)).reshape(-1).to(device)
            ids = ids.to(device)
            with torch.no_grad():
                _, cache = model.run_with_cache(ids, names=[hook_in, final], stop_at_layer="auto")
                x = cache[hook_in].flatten(2).reshape(-1, sae.d_in)
                if x.shape[-1] != sae.d_in:
                    raise ValueError(f"{hook_in} has {x.shape[-1]} values but the SAE reads {sae.d_in}")
                counted = (ids.reshape(-1) != start_id) if start_id is not None else torch.ones_like(positions, dtype=torch.bool)
                latents = sae.encode(x[counted].float())
                # the reservoir's keys: drawn by `update`, one per active entry, from this batch's seed
                keys = torch.Generator(device=device).manual_seed(cfg.seed * KEY_SEED_STRIDE + batch)
                scale = _final_norm_scale(model, cache[final].reshape(-1, model.cfg.d_model)[counted])
                state.update(latents, positions[counted], keys, scale)
            done = batch + 1
            if done % cfg.checkpoint_every == 0 and done < n_batches:
                checkpoint(done)
    index = _write(model, sae, state, tokens, cfg, out, hook_in=hook_in, n_windows=n_windows,
                   exclude_start=exclude_start)
    if ckpt.exists():
        ckpt.unlink()
    return index


def _write(model, sae, state: ScanState, tokens: np.ndarray, cfg: FeaturesConfig, out: Path, *,
           hook_in: str, n_windows: int, exclude_start: bool) -> dict:
    t = state.t
    n_tokens = int(t["n_tokens"])
    top_values, top_positions = state.top()
    levels, q_values, q_positions = state.quantile_samples()
    n_active = t["n_active"].cpu()
    density = n_active.double() / max(n_tokens, 1)
    mean_active = (t["sum_active"].cpu() / n_active.clamp_min(1)).float()
    ln_scale = float(t["ln_sum"]) / max(n_tokens, 1) if model.ln_final.kind != "none" else 1.0
    tensors = {
        "top_values": top_values.cpu(), "top_positions": top_positions.cpu(),
        "top_windows": context_windows(tokens, top_positions, cfg.context),
        "quantile_levels": levels, "quantile_values": q_values, "quantile_positions": q_positions,
        "quantile_windows": context_windows(tokens, q_positions, cfg.context),
        # counts as int32: no bin holds more than the 2^31 tokens a scan could count
        "hist_counts": t["hist"].cpu().int(), "hist_edges": hist_edges(cfg.hist_bins),
        "density": density.float(), "n_active": n_active.int(), "mean_active": mean_active,
        "max_active": t["max_active"].cpu(),
    }
    dla: dict = {"skipped": None}
    if writes_residual(sae):
        effects = direct_logit_attribution(model, sae, ln_scale)
        tops = top_logit_tokens(effects, cfg.top_logits)
        counts, edges = logit_histogram(effects, cfg.hist_bins)
        tensors.update({f"dla_{name}": v.cpu() for name, v in tops.items()})
        tensors.update({"dla_hist_counts": counts.int(), "dla_hist_edges": edges})
    else:
        dla["skipped"] = (f"{sae.cfg.hook_out or sae.cfg.hook_in} is not in the residual stream, "
                          f"so its decoder rows have no direct path to the logits")
    tensors = {name: v.contiguous() for name, v in tensors.items()}
    atomic_write_bytes(out / DATA, safetensors.torch.save(tensors, metadata={"format": str(FORMAT_VERSION)}))
    alive = int((n_active > 0).sum())
    index = {
        "format_version": FORMAT_VERSION,
        "hook_in": hook_in, "hook_out": sae.cfg.hook_out or hook_in,
        "is_transcoder": sae.is_transcoder, "d_sae": sae.d_sae,
        "split": "val", "n_ctx": model.cfg.n_ctx, "n_windows": n_windows, "n_tokens": n_tokens,
        "exclude_start": exclude_start, "config": dataclasses.asdict(cfg),
        "alive": alive, "dead": sae.d_sae - alive, "mean_density": float(density.mean()),
        "ln_scale": ln_scale, "norm": model.ln_final.kind, "dla": dla,
        "tensors": {name: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                    for name, v in tensors.items()},
    }
    atomic_write_json(out / INDEX, index)  # last: its presence means the scan finished
    return index


# --- reading a scan back -----------------------------------------------------------------

def load_features(folder: str | os.PathLike, *, hook: str | None = None) -> dict:
    """What `scan_features` wrote: features.json's index under "index", and every tensor
    of features.safetensors by name (torch tensors, on the CPU). `hook`, if given, must be
    the hook the scanned dictionary reads (a one-line error says which it is)."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"no {INDEX} in {folder}: scan first (tinycourse run --stages features, "
                                f"or interpret.features.scan_features)")
    index = json.loads((folder / INDEX).read_text())
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder / INDEX} has format_version {index.get('format_version')}; "
                         f"this tinycourse reads {FORMAT_VERSION}: rescan")
    if hook is not None and hook not in (index["hook_in"], index["hook_out"]):
        raise ValueError(f"no dictionary at {hook!r} in {folder}: this scan is of the one reading "
                         f"{index['hook_in']!r}; scan an SAE trained on {hook!r} (--set sae.hook_in={hook})")
    return {"index": index, **safetensors.torch.load_file(folder / DATA)}


def latent_record(features: dict, latent: int) -> dict:
    """One latent's figures from `load_features`' result, as plain Python values."""
    d_sae = features["index"]["d_sae"]
    if not isinstance(latent, (int, np.integer)) or not 0 <= latent < d_sae:
        raise IndexError(f"latent {latent!r} is not in this dictionary of {d_sae} latents: pick 0..{d_sae - 1}")
    keys = ["density", "n_active", "mean_active", "max_active", "top_values", "top_positions",
            "top_windows", "quantile_values", "quantile_windows", "hist_counts",
            "dla_boost_ids", "dla_boost_values", "dla_suppress_ids", "dla_suppress_values"]
    return {key: features[key][latent].tolist() for key in keys if key in features}


__all__ = ["scan_features", "load_features", "latent_record", "naive_top_contexts", "merge_top_k", "ScanState",
           "context_windows", "hist_edges"]
