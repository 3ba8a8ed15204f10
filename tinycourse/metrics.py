"""Dictionary metrics: how well an SAE or transcoder reconstructs, how sparse it is, and
what splicing it into the model costs the language model.

Everything is measured on held-out tokens: consecutive `n_ctx`-token windows of the
shards' validation split (`eval_windows`), each carrying one more token so that every
position has a next-token target. Positions holding the start token are left out of
every figure and keep their clean activation in every intervention (`exclude_start`,
as the activation store leaves them out of SAE training: their norms are outliers the
SAE never saw). So all figures of one `evaluate` call are on the same `n_tokens` tokens.

    reconstruction   y = the activation at hook_out, y_hat = the SAE's reconstruction
      mse            ||y - y_hat||^2 summed over channels, mean over tokens (the trainer's
                     convention; here in raw units, not the trainer's normalised ones)
      fve            1 - SSE / SST over all tokens and channels, SST around the
                     per-channel mean of the evaluation tokens
      nmse           MSE / variance of the target = SSE / SST, so 1 - fve exactly
      fve_per_channel  1 - SSE_c / SST_c for each channel c (as the budget replication)
      cosine         mean over tokens of cos(y_hat, y), uncentred
    sparsity         L0 (active latents per token), per-latent firing density; dead
                     latents never fire on the evaluation tokens, dense ones fire on more
                     than `dense_threshold` of them
    spliced          next-token cross-entropy (nats) with the activation at hook_out
                     left alone (clean), replaced by the reconstruction (spliced; a
                     transcoder reads hook_in of the same forward pass), by zeros, or by
                     its per-channel mean over the evaluation tokens;
                     ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)
                     (and the same with CE_mean); kl_spliced = KL(clean || spliced) of the
                     next-token distributions, mean over tokens
    baselines        the same tokens through two dictionaries with the SAE's budget of
                     c = round(mean L0) coefficients per token (`LinearBaseline`,
                     `RandomDictionary`), fitted on training-split activations

Passes over the data: a prefix pass (up to hook_out only) for the mean and the SAE's
sparsity, one prefix pass over training windows to fit the baselines, then the main
pass: per batch one clean forward (capturing hook_in and hook_out), every reconstruction
computed once from what it captured, and one forward per intervention. The layers before
the hook run again in each, which is cheap next to the bookkeeping it saves.

`evaluate` returns JSON-ready data for the report; `latent_densities` gives the
per-latent densities (too long for the JSON) for notebooks; `sweep_rows` measures several
SAEs in one pass for an L0 / FVE / CE-recovered Pareto plot.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .config import EvalConfig
from .sae import SparseAutoencoder
from .shards import Shards

EVAL_SEED = 0  # the order validation windows are taken in (the same for every SAE)
FIT_SEED = 1  # ... and the training windows the baselines are fitted on
RANDOM_DICT_SEED = 0
LOG10_BIN = 0.1  # width of the log10-density histogram's bins (decades / 10)
MAX_L0_BINS = 128  # L0 histograms keep one bin per value up to this many values

# x_in (n, d_in) -> reconstruction of the target (n, d_out); it never sees the target
Reconstructor = Callable[[Tensor], Tensor]


# --- the tokens ------------------------------------------------------------------------

def eval_windows(shards: Shards, split: str, n_tokens: int, n_ctx: int, *,
                 start_id: int | None = None, seed: int = EVAL_SEED) -> np.ndarray:
    """Windows (n_windows, n_ctx + 1) int64 of `split`: the split's consecutive n_ctx-token
    windows, each with the next token appended (the last position's target), in a
    seeded order, as many as it takes to count `n_tokens` positions (positions holding
    `start_id` do not count). If the split has fewer, all of them, with a warning."""
    tokens = shards.tokens(split)
    n_windows = (len(tokens) - 1) // n_ctx
    if n_windows < 1:
        raise ValueError(f"the {split} split has {len(tokens)} tokens, fewer than one window "
                         f"of n_ctx+1={n_ctx + 1}: build the shards from more stories")
    order = np.random.default_rng(seed).permutation(n_windows)
    # start tokens are a small share of positions, so twice the bare need nearly always suffices
    for take in (min(n_windows, 2 * math.ceil(n_tokens / n_ctx) + 1), n_windows):
        windows = np.asarray(tokens[order[:take, None] * n_ctx + np.arange(n_ctx + 1)],
                             dtype=np.int64)
        counted = windows[:, :-1] != start_id if start_id is not None else windows[:, :-1] >= 0
        total = np.cumsum(counted.sum(1))
        if total[-1] >= n_tokens:
            return windows[: int(np.searchsorted(total, n_tokens)) + 1]
    warnings.warn(f"asked for {n_tokens:,} {split} tokens but the split has only "
                  f"{int(total[-1]):,}: measuring on all of them", stacklevel=2)
    return windows


def _batches(windows: np.ndarray, batch_size: int, device: torch.device, start_id: int | None,
             progress: bool = False, desc: str = "") -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(tokens (B, n_ctx), targets (B, n_ctx), keep (B, n_ctx) bool) per batch."""
    for a in tqdm(range(0, len(windows), batch_size), desc=desc, disable=not progress,
                  leave=False):
        w = torch.from_numpy(windows[a : a + batch_size]).to(device)
        tokens, targets = w[:, :-1], w[:, 1:]
        keep = tokens != start_id if start_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        yield tokens, targets, keep


@contextlib.contextmanager
def _eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, was):
            m.train(flag)


def _hooks_of(model, sae: SparseAutoencoder) -> tuple[str, str]:
    """(hook_in, hook_out), checked against the model: names exist, a transcoder reads
    before it writes (its input must be computed in the same pass before its output)."""
    hook_in, hook_out = sae.cfg.hook_in, sae.cfg.hook_out or sae.cfg.hook_in
    model.hook_names([hook_in, hook_out])  # a KeyError naming the closest hooks if unknown
    order = list(model.hook_points)
    if order.index(hook_in) > order.index(hook_out):
        raise ValueError(f"transcoder reads {hook_in}, which comes after the {hook_out} it "
                         f"writes: the replacement could not be computed in the same pass")
    return hook_in, hook_out


def _capture(model, tokens: Tensor, hook_in: str, hook_out: str, *, full: bool
             ) -> tuple[Tensor | None, Tensor, Tensor]:
    """Run `tokens` (B, T); return (logits or None, x_in (B, T, d_in), y (B, T, d_out)).
    `full=False` stops once hook_out is reached (no logits)."""
    if not full:
        _, cache = model.run_with_cache(tokens, names=list(dict.fromkeys([hook_in, hook_out])),
                                        stop_at_layer="auto")
        return None, cache[hook_in].flatten(2), cache[hook_out].flatten(2)
    cache: dict[str, Tensor] = {}

    def grab(act: Tensor, hook) -> None:
        cache[hook.name] = act

    with model.hooks([(name, grab) for name in dict.fromkeys([hook_in, hook_out])]):
        logits = model(tokens)
    return logits, cache[hook_in].flatten(2), cache[hook_out].flatten(2)


def _check_widths(sae: SparseAutoencoder, x: Tensor, y: Tensor, hook_in: str, hook_out: str) -> None:
    """x (..., d_in), y (..., d_out) must fit the SAE."""
    if x.shape[-1] != sae.d_in or y.shape[-1] != sae.d_out:
        raise ValueError(f"the SAE maps {sae.d_in} -> {sae.d_out} values but {hook_in} has "
                         f"{x.shape[-1]} and {hook_out} has {y.shape[-1]}: was it trained on "
                         f"another model?")


# --- baselines ---------------------------------------------------------------------------

class LinearBaseline:
    """The best rank-c linear map from x_in to y: fit y ~ x_in by least squares, keep the
    top c principal components of the fitted values (reduced-rank regression). For an
    SAE (x_in is y) the least-squares map is the identity and this is plain PCA:
    y_hat = mean + P_c (y - mean), P_c the projection on the top c components.
    Fitted in float64 on x_in (n, d_in), y (n, d_out)."""

    def __init__(self, x_in: Tensor, y: Tensor, n_components: int, *, same_space: bool):
        x_in, y = x_in.double(), y.double()
        self.same_space = same_space
        self.x_mean, self.y_mean = x_in.mean(0), y.mean(0)
        yc = y - self.y_mean
        self.B = None
        if not same_space:
            xc = x_in - self.x_mean
            gram = xc.T @ xc
            ridge = 1e-8 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            self.B = torch.linalg.solve(gram + ridge, xc.T @ yc)  # (d_in, d_out)
            yc = xc @ self.B
        _, vectors = torch.linalg.eigh(yc.T @ yc)  # ascending eigenvalues
        self.components = vectors.flip(1)[:, :n_components].contiguous()  # (d_out, c)

    def scores(self, x_in: Tensor) -> Tensor:
        """The c coefficients: (n, d_in) -> (n, c)."""
        xc = x_in.double() - self.x_mean
        return (xc if self.B is None else xc @ self.B) @ self.components

    def __call__(self, x_in: Tensor) -> Tensor:
        """(n, d_in) -> (n, d_out)"""
        return (self.y_mean + self.scores(x_in) @ self.components.T).to(x_in.dtype)


class RandomDictionary:
    """A dictionary of `d_sae` random unit directions, k of them per token.

    SAE (same_space): the directions are the decoder rows and the encoder is their
    transpose; each token keeps the k directions with the largest |pre-activation|
    pre = (x - mean) . d_i, and its coefficients on those k are fitted by least squares
    (the best this random dictionary can do with that support; the raw projections
    would overshoot, since random directions are far from orthogonal in a small space).
    Transcoder: the directions read the centred input the same way (top k by |pre|,
    coefficients = pre) and a decoder (d_sae, d_out) is fitted by ridge regression from
    these codes to the centred target on the fitting tokens.
    k is capped at d_in for an SAE (d_in directions already reconstruct anything)."""

    def __init__(self, x_in: Tensor, y: Tensor, d_sae: int, k: int, *, same_space: bool,
                 seed: int = RANDOM_DICT_SEED, chunk: int = 4096):
        generator = torch.Generator().manual_seed(seed)
        d_in = x_in.shape[1]
        self.same_space = same_space
        self.k = max(1, min(k, d_in if same_space else d_sae))
        self.directions = F.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1).to(x_in)
        self.x_mean, self.y_mean = x_in.mean(0), y.mean(0)
        self.decoder = self.directions
        if not same_space:
            gram = torch.zeros(d_sae, d_sae, dtype=torch.float64, device=x_in.device)
            cross = torch.zeros(d_sae, y.shape[1], dtype=torch.float64, device=x_in.device)
            for a in range(0, len(x_in), chunk):
                codes = self.encode(x_in[a : a + chunk]).double()
                gram += codes.T @ codes
                cross += codes.T @ (y[a : a + chunk].double() - self.y_mean.double())
            ridge = 1e-3 * gram.diagonal().mean().clamp_min(1e-12)
            gram += ridge * torch.eye(d_sae, dtype=gram.dtype, device=gram.device)
            self.decoder = torch.linalg.solve(gram, cross).to(x_in.dtype)

    def _support(self, x_in: Tensor) -> tuple[Tensor, Tensor]:
        """(indices (n, k), coefficients (n, k)) of each token's chosen directions."""
        xc = x_in - self.x_mean
        pre = xc @ self.directions.T  # (n, d_sae)
        indices = pre.abs().topk(self.k, dim=-1).indices
        if not self.same_space:
            return indices, pre.gather(1, indices)
        atoms = self.directions[indices].double()  # (n, k, d)
        gram = atoms @ atoms.transpose(1, 2)  # (n, k, k)
        gram += 1e-10 * torch.eye(self.k, dtype=gram.dtype, device=gram.device)
        coef = torch.linalg.solve(gram, atoms @ xc.double().unsqueeze(-1)).squeeze(-1)
        return indices, coef.to(x_in.dtype)

    def encode(self, x_in: Tensor) -> Tensor:
        """(n, d_in) -> signed codes (n, d_sae), k nonzero per row."""
        indices, coef = self._support(x_in)
        return torch.zeros(len(x_in), len(self.directions), dtype=x_in.dtype,
                           device=x_in.device).scatter(1, indices, coef)

    def __call__(self, x_in: Tensor) -> Tensor:
        """(n, d_in) -> (n, d_out)"""
        indices, coef = self._support(x_in)
        return self.y_mean + torch.einsum("nk,nkd->nd", coef, self.decoder[indices])


def fit_baselines(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, n_components: int,
                  *, device: torch.device, start_id: int | None
                  ) -> dict[str, LinearBaseline | RandomDictionary]:
    """{"pca": LinearBaseline, "random": RandomDictionary}, fitted on `cfg.n_tokens`
    activations of the *training* split (so the evaluation tokens stay unseen)."""
    hook_in, hook_out = _hooks_of(model, sae)
    windows = eval_windows(shards, "train", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id,
                           seed=FIT_SEED)
    xs, ys = [], []
    for tokens, _, keep in _batches(windows, cfg.batch_size, device, start_id):
        _, x, y = _capture(model, tokens, hook_in, hook_out, full=False)
        xs.append(x[keep].float())
        ys.append(y[keep].float())
    x_in, y = torch.cat(xs), torch.cat(ys)
    same = not sae.is_transcoder
    return {"pca": LinearBaseline(x_in, y, min(n_components, *x_in.shape[1:], *y.shape[1:]),
                                  same_space=same),
            "random": RandomDictionary(x_in, y, sae.d_sae, n_components, same_space=same)}


# --- the passes ------------------------------------------------------------------------------

@torch.no_grad()
def _prefix_pass(model, saes: Mapping[str, SparseAutoencoder], hook_in: str, hook_out: str,
                 windows: np.ndarray, batch_size: int, device: torch.device,
                 start_id: int | None) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]], int]:
    """Up to hook_out only: the target's per-channel mean (d_out,) and, per SAE, how often
    each latent fires (d_sae,) and how many tokens have each L0 (max L0 + 1,)."""
    total, n = None, 0
    fires = {name: torch.zeros(s.d_sae, dtype=torch.float64, device=device) for name, s in saes.items()}
    l0_counts = {name: torch.zeros(s.d_sae + 1, dtype=torch.float64, device=device) for name, s in saes.items()}
    for tokens, _, keep in _batches(windows, batch_size, device, start_id):
        _, x, y = _capture(model, tokens, hook_in, hook_out, full=False)
        x, y = x[keep].float(), y[keep].float()
        for sae in saes.values():
            _check_widths(sae, x, y, hook_in, hook_out)
        total = y.double().sum(0) + (0 if total is None else total)
        n += len(y)
        for name, sae in saes.items():
            active = sae.encode(x) > 0  # (n, d_sae)
            fires[name] += active.sum(0)
            l0_counts[name] += torch.bincount(active.sum(1), minlength=sae.d_sae + 1)
    stats = {name: (fires[name].cpu(), _trim(l0_counts[name].cpu())) for name in saes}
    return (total / n).float(), stats, n


def _trim(counts: Tensor) -> Tensor:
    nonzero = torch.nonzero(counts)
    return counts[: int(nonzero.max()) + 1] if len(nonzero) else counts[:1]


@torch.no_grad()
def _splice_pass(model, recons: Mapping[str, Reconstructor], hook_in: str, hook_out: str,
                 windows: np.ndarray, mean: Tensor, batch_size: int, device: torch.device,
                 start_id: int | None, progress: bool) -> dict:
    """The main pass. Per batch: one clean forward capturing x_in and y; each
    reconstructor applied once; then one forward per intervention (every reconstructor,
    zeros, the mean) with hook_out replaced at the counted positions. Returns float64
    sums: sse (per reconstructor, (d_out,)), cos, sst (d_out,), ce (per intervention and
    "clean"), kl (per reconstructor), n."""
    sums: dict = {"sse": {}, "cos": {}, "ce": {}, "kl": {}, "sst": 0.0, "n": 0}
    mean = mean.to(device)
    for tokens, targets, keep in _batches(windows, batch_size, device, start_id, progress, "eval"):
        logits, x, y = _capture(model, tokens, hook_in, hook_out, full=True)
        target = targets[keep]
        lp_clean = logits[keep].float().log_softmax(-1)  # (n, d_vocab)
        _add(sums["ce"], "clean", -lp_clean.gather(1, target[:, None]).sum())
        x_k, y_k = x[keep].float(), y[keep].float()
        sums["sst"] = sums["sst"] + (y_k - mean).double().pow(2).sum(0)
        sums["n"] += len(y_k)
        replacements = {"zero": torch.zeros_like(y_k), "mean": mean.expand_as(y_k)}
        for name, fn in recons.items():
            y_hat = fn(x_k).float()
            replacements[name] = y_hat
            _add(sums["sse"], name, (y_k - y_hat).double().pow(2).sum(0))
            _add(sums["cos"], name, F.cosine_similarity(y_hat, y_k, dim=-1).double().sum())
        for name, values in replacements.items():
            full = y.clone()
            full[keep] = values.to(full.dtype)

            def replace(act: Tensor, hook, full=full) -> Tensor:
                return full.view_as(act)

            with model.hooks([(hook_out, replace)]):
                lp = model(tokens)[keep].float().log_softmax(-1)
            _add(sums["ce"], name, -lp.gather(1, target[:, None]).sum())
            if name in recons:
                kl = (lp_clean.exp() * (lp_clean - lp)).sum()
                _add(sums["kl"], name, kl)
    return sums


def _add(table: dict, key: str, value: Tensor) -> None:
    value = value.double().cpu()
    table[key] = table[key] + value if key in table else value


# --- the public entry points -----------------------------------------------------------------

def _device(model, device) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    model.to(device)  # nn.Module.to moves in place
    return torch.device(device)


def _float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a: float, b: float) -> float | None:
    return _float(a / b) if b != 0 else None


def _integer_hist(counts: Tensor) -> dict:
    """Counts by value (index = value) -> {"counts", "edges"}: one bin per integer value
    ([v, v+1)), or MAX_L0_BINS equal integer-aligned bins when there are more values."""
    counts = counts.double()
    width = max(1, math.ceil(len(counts) / MAX_L0_BINS))
    n_bins = math.ceil(len(counts) / width)
    padded = torch.zeros(n_bins * width, dtype=torch.float64)
    padded[: len(counts)] = counts
    return {"counts": [int(c) for c in padded.view(n_bins, width).sum(1)],
            "edges": [i * width for i in range(n_bins + 1)]}


def _density_hist(density: Tensor, n_tokens: int) -> dict:
    """Histogram of log10(density) of the latents that fired at least once: bins of
    LOG10_BIN decades from floor(log10(1 / n_tokens)) (one firing) up to 0 (always)."""
    low = math.floor(math.log10(1.0 / n_tokens) / LOG10_BIN) * LOG10_BIN
    edges = np.round(np.arange(low, LOG10_BIN / 2, LOG10_BIN), 6)
    live = density[density > 0].double().log10().numpy()
    counts, _ = np.histogram(live, bins=edges)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _fve(sse: Tensor, sst: Tensor) -> float | None:
    return _float(1 - sse.sum() / sst.sum()) if sst.sum() > 0 else None


def _recovered(ce: dict, name: str, ablation: str) -> float | None:
    return _ratio(float(ce[ablation] - ce[name]), float(ce[ablation] - ce["clean"]))


@torch.no_grad()
def evaluate(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, *,
             device: str | torch.device | None = None, progress: bool = True,
             exclude_start: bool = True) -> dict:
    """Measure `sae` (an SAE or a transcoder) on `cfg.n_tokens` validation tokens.

    Returns JSON-ready data (layout in the module docstring and the report's reader):
    {"n_tokens", "hook_in", "hook_out", "kind", "d_sae", "reconstruction": {...},
     "sparsity": {...}, "spliced": {...}, "baselines": [{"name", "coefficients", "fve",
     "ce_loss_recovered"}, ...]}. Every figure is on the same `n_tokens` tokens
    (validation positions not holding the start token when `exclude_start`); the
    baselines are fitted on as many training-split tokens. A ratio whose denominator
    is 0 is None."""
    device = _device(model, device)
    sae = sae.to(device)
    hook_in, hook_out = _hooks_of(model, sae)
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    with _eval_mode(model, sae):
        mean, stats, n = _prefix_pass(model, {"sae": sae}, hook_in, hook_out, windows,
                                      cfg.batch_size, device, start_id)
        fires, l0_counts = stats["sae"]
        l0_mean = float((l0_counts * torch.arange(len(l0_counts))).sum() / n)
        coefficients = max(1, round(l0_mean))
        baselines = fit_baselines(model, sae, shards, cfg, coefficients, device=device,
                                  start_id=start_id)
        recons = {"sae": lambda x: sae(x).reconstruction, **baselines}
        sums = _splice_pass(model, recons, hook_in, hook_out, windows, mean, cfg.batch_size,
                            device, start_id, progress)
    assert sums["n"] == n, "the two passes saw different tokens"
    ce = {name: float(v / n) for name, v in sums["ce"].items()}
    sse, sst = sums["sse"]["sae"], sums["sst"]
    density = fires / n
    dead, dense = density == 0, density > cfg.dense_threshold
    baseline_rows = [{"name": "sae", "coefficients": coefficients, "fve": _fve(sse, sst),
                      "ce_loss_recovered": _recovered(ce, "sae", "zero")}]
    for name, base in baselines.items():
        used = base.components.shape[1] if name == "pca" else base.k
        baseline_rows.append({"name": name, "coefficients": int(used),
                              "fve": _fve(sums["sse"][name], sst),
                              "ce_loss_recovered": _recovered(ce, name, "zero")})
    return {
        "n_tokens": n, "hook_in": hook_in, "hook_out": hook_out, "kind": sae.cfg.kind,
        "d_sae": sae.d_sae,
        "reconstruction": {
            "mse": _float(sse.sum() / n),
            "nmse": _ratio(float(sse.sum()), float(sst.sum())),
            "fve": _fve(sse, sst),
            "cosine": _float(sums["cos"]["sae"] / n),
            "fve_per_channel": [_ratio(float(a), float(b)) if b > 0 else None
                                for a, b in zip(sst - sse, sst)],
        },
        "sparsity": {
            "l0_mean": l0_mean,
            "l0_hist": _integer_hist(l0_counts),
            "dead_fraction": float(dead.double().mean()),
            "dense_fraction": float(dense.double().mean()),
            "density_log10_hist": _density_hist(density, n),
            "n_dead": int(dead.sum()),
            "n_dense": int(dense.sum()),
        },
        "spliced": {
            "ce_clean": ce["clean"],
            "ce_spliced": ce["sae"],
            "ce_zero_ablation": ce["zero"],
            "ce_mean_ablation": ce["mean"],
            "ce_loss_recovered": _recovered(ce, "sae", "zero"),
            "ce_loss_recovered_vs_mean": _recovered(ce, "sae", "mean"),
            "kl_spliced": _float(sums["kl"]["sae"] / n),
        },
        "baselines": baseline_rows,
    }


@torch.no_grad()
def latent_densities(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, *,
                     device: str | torch.device | None = None,
                     exclude_start: bool = True) -> np.ndarray:
    """Each latent's firing density on the same tokens `evaluate` uses: (d_sae,) float64,
    the share of tokens it is active on (0 = dead). A prefix pass only: cheap."""
    device = _device(model, device)
    sae = sae.to(device)
    hook_in, hook_out = _hooks_of(model, sae)
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    with _eval_mode(model, sae):
        _, stats, n = _prefix_pass(model, {"sae": sae}, hook_in, hook_out, windows,
                                   cfg.batch_size, device, start_id)
    return (stats["sae"][0] / n).numpy()


@torch.no_grad()
def sweep_rows(model, saes: Mapping[str, SparseAutoencoder], shards: Shards, cfg: EvalConfig, *,
               device: str | torch.device | None = None, progress: bool = True,
               exclude_start: bool = True) -> list[dict]:
    """Rows {"name", "l0", "fve", "ce_loss_recovered", "kl", "n_tokens"} for a Pareto
    plot of several SAEs (e.g. the folders `sae_train.train_sweep` wrote, loaded with
    `load_sae`), in the order given. SAEs reading the same hooks share one pass: the clean
    and ablated forwards run once for all of them."""
    device = _device(model, device)
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    groups: dict[tuple[str, str], dict[str, SparseAutoencoder]] = {}
    for name, sae in saes.items():
        groups.setdefault(_hooks_of(model, sae), {})[name] = sae.to(device)
    rows = {}
    for (hook_in, hook_out), members in groups.items():
        with _eval_mode(model, *members.values()):
            mean, stats, n = _prefix_pass(model, members, hook_in, hook_out, windows,
                                          cfg.batch_size, device, start_id)
            recons = {name: (lambda x, s=s: s(x).reconstruction) for name, s in members.items()}
            sums = _splice_pass(model, recons, hook_in, hook_out, windows, mean, cfg.batch_size,
                                device, start_id, progress)
        ce = {name: float(v / n) for name, v in sums["ce"].items()}
        for name in members:
            l0_counts = stats[name][1]
            rows[name] = {"name": name,
                          "l0": float((l0_counts * torch.arange(len(l0_counts))).sum() / n),
                          "fve": _fve(sums["sse"][name], sums["sst"]),
                          "ce_loss_recovered": _recovered(ce, name, "zero"),
                          "kl": _float(sums["kl"][name] / n), "n_tokens": n}
    return [rows[name] for name in saes]


def pareto_front(rows: list[dict], x: str = "l0", y: str = "fve") -> list[str]:
    """Names of the rows no other row beats on both axes (lower `x`, higher `y`), by `x`."""
    ok = [r for r in rows if r[x] is not None and r[y] is not None]
    front = [r for r in ok if not any(o[x] <= r[x] and o[y] >= r[y] and (o[x], o[y]) != (r[x], r[y])
                                      for o in ok)]
    return [r["name"] for r in sorted(front, key=lambda r: r[x])]


__all__ = ["evaluate", "latent_densities", "sweep_rows", "pareto_front", "eval_windows",
           "fit_baselines", "LinearBaseline", "RandomDictionary"]
