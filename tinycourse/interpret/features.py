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

  top contexts   the `top_k` largest activations and their positions. Each batch's
                 per-latent top k is found with `torch.topk` over the batch's tokens and
                 merged with the running top k by the same selection on their
                 concatenation (`_select`): vectorised over latents, no loop. Tie rule:
                 of equal activations the earliest position wins (the state keeps each
                 row's entries in position order, so "earliest" is "leftmost", and rows
                 tied at the k-th value are redone exactly), which makes the result
                 deterministic and equal to `naive_top_contexts`.
  quantile       contexts at the activation quantiles (j + 1/2) / m, j < m. A latent's
  samples        active tokens each get a random key (seeded by batch); the `reservoir`
                 smallest keys seen so far are a uniform sample of its active tokens
                 (bottom-k sampling: a reservoir sample that merges like the top k). After
                 the pass, each quantile's activation is read off the latent's histogram
                 (below; linear in log activation within a bin) and the reservoir context
                 nearest to it is taken. A latent with few activations may repeat one.
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
from ..lm.model import model_device
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


# --- the bounded scan ----------------------------------------------------------------------

def _select(score: Tensor, k: int) -> Tensor:
    """Column indices (d, k) of each row's k largest scores, ties to the leftmost, in
    column order. score (d, n), n >= k.

    `torch.topk` finds them, but breaks ties at the k-th value arbitrarily, so rows where
    more columns equal the k-th value than fit are redone exactly: everything above it,
    then the leftmost of those equal to it. Rows whose k-th value is -inf (fewer than k
    real entries) keep topk's pick: the -inf slots it adds are empty and never shown."""
    top = score.topk(k, dim=1)
    kth = top.values[:, -1:]  # (d, 1)
    cols = top.indices
    tied = torch.isfinite(kth[:, 0]) & ((score >= kth).sum(1) > k)
    if bool(tied.any()):
        rows = tied.nonzero()[:, 0]
        sub, sub_kth = score[rows], kth[rows]
        above = sub > sub_kth
        need = k - above.sum(1, keepdim=True)
        equal = sub == sub_kth
        chosen = above | (equal & (equal.cumsum(1) <= need))
        cols[rows] = chosen.nonzero()[:, 1].view(len(rows), k)
    return cols.sort(dim=1).values


class ScanState:
    """The running per-latent state of a scan; its size depends on d_sae and the config,
    never on the tokens seen. Empty top / reservoir slots hold score -inf at position -1.

    Every row keeps its filled slots in position order, so a merge (old slots, then the
    new batch's, all later) can break ties by column."""

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
    def update(self, latents: Tensor, positions: Tensor, keys: Tensor | None = None,
               ln_scale: Tensor | None = None) -> None:
        """Fold one batch in. latents (n, d_sae) >= 0 of the counted tokens; positions (n,)
        int64, increasing and after every earlier batch's; keys (n, d_sae) uniform random
        (the reservoir's; None: zeros, only for tests of the top k); ln_scale (n,) the
        final norm's scale at those tokens (None: not measured)."""
        t, cfg = self.t, self.cfg
        if len(positions) == 0:
            return
        latents = latents.float()
        active = latents > 0
        scores = torch.where(active, latents, -math.inf).T  # (d_sae, n)
        pos = positions.to(latents.device).expand(self.d_sae, -1)
        # top k: this batch's, then merged with the running ones (old columns first)
        k = min(cfg.top_k, len(positions))
        cols = _select(scores, k)
        values = torch.cat([t["top_values"], scores.gather(1, cols)], 1)
        where = torch.cat([t["top_positions"], pos.gather(1, cols)], 1)
        keep = _select(values, cfg.top_k)
        t["top_values"], t["top_positions"] = values.gather(1, keep), where.gather(1, keep)
        # reservoir: the smallest random keys among active tokens, kept the same way
        if keys is None:
            keys = torch.zeros_like(latents)
        res = torch.where(active, -keys.float(), -math.inf).T
        r = min(cfg.reservoir, len(positions))
        cols = _select(res, r)
        res_scores = torch.cat([t["res_scores"], res.gather(1, cols)], 1)
        res_values = torch.cat([t["res_values"], latents.T.gather(1, cols)], 1)
        res_where = torch.cat([t["res_positions"], pos.gather(1, cols)], 1)
        keep = _select(res_scores, cfg.reservoir)
        t["res_scores"] = res_scores.gather(1, keep)
        t["res_values"], t["res_positions"] = res_values.gather(1, keep), res_where.gather(1, keep)
        # histogram of the non-zero activations, and the running sums
        token, latent = active.nonzero(as_tuple=True)
        value = latents[token, latent]
        bins = ((value.log10() - self._log_lo) / self._bin_width).floor().long().clamp_(0, cfg.hist_bins - 1)
        t["hist"].view(-1).index_add_(0, latent * cfg.hist_bins + bins, torch.ones_like(bins))
        t["n_active"] += active.sum(0)
        t["sum_active"] += latents.sum(0, dtype=torch.float64)
        t["max_active"] = torch.maximum(t["max_active"], latents.max(0).values)
        t["n_tokens"] += len(positions)
        if ln_scale is not None:
            t["ln_sum"] += ln_scale.double().sum()

    def top(self) -> tuple[Tensor, Tensor]:
        """(values (d_sae, top_k), positions): largest first, ties by earliest position
        (a stable sort of slots kept in position order); empty slots 0 at position -1."""
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

    was = (model.training, sae.training)
    model.eval(), sae.eval()
    try:
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
                generator = torch.Generator(device=device).manual_seed(cfg.seed * KEY_SEED_STRIDE + batch)
                keys = torch.rand(latents.shape, generator=generator, device=device)
                scale = _final_norm_scale(model, cache[final].reshape(-1, model.cfg.d_model)[counted])
                state.update(latents, positions[counted], keys, scale)
            done = batch + 1
            if done % cfg.checkpoint_every == 0 and done < n_batches:
                checkpoint(done)
    finally:
        model.train(was[0]), sae.train(was[1])
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


__all__ = ["scan_features", "load_features", "latent_record", "naive_top_contexts", "ScanState",
           "context_windows", "hist_edges"]
