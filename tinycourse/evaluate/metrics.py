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
                     transcoder reads hook_in of the same input, which comes before
                     hook_out and so is the same in every pass), by zeros, or by its
                     per-channel mean over the evaluation tokens;
                     ce_loss_recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean)
                     (and the same with CE_mean); kl_spliced = KL(clean || spliced) of the
                     next-token distributions, mean over tokens
    baselines        the same tokens through two dictionaries with the SAE's budget of
                     c = round(mean L0) coefficients per token (`LinearBaseline`,
                     `RandomDictionary`), fitted on training-split activations

Passes over the data. First, per batch: the clean forward (capturing hook_in, hook_out
and the residual stream entering hook_out's block), the SAE's latents and reconstruction
from what it captured, then the spliced and the zero-ablated forwards, each run only from
hook_out's block on (the layers before it are the same in every intervention). The
batches are kept. Then the baselines are fitted (a pass up to hook_out over training
windows: their size depends on the SAE's mean L0), and a second pass over the kept
batches runs the interventions that needed the first pass complete: the mean ablation
and the baselines spliced in.

`evaluate` returns JSON-ready data for the report; `evaluate_with_density` adds the
per-latent densities (too long for the JSON) from the same pass, and `latent_densities`
gives them alone; `sweep_rows` measures several
SAEs in one pass for an L0 / FVE / CE-recovered Pareto plot.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..config import EvalConfig
from ..corpus.shards import Shards
from ..lm.model import eval_mode, model_device
from ..sae.model import SparseAutoencoder

EVAL_SEED = 0  # the order validation windows are taken in (the same for every SAE)
FIT_SEED = 1  # ... and the training windows the baselines are fitted on
RANDOM_DICT_SEED = 0
LOG10_BIN = 0.1  # width of the log10-density histogram's bins (decades / 10)
MAX_L0_BINS = 128  # L0 histograms keep one bin per value up to this many values

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


def _prefix(model, tokens: Tensor, hook_in: str, hook_out: str) -> tuple[Tensor, Tensor]:
    """Run `tokens` (B, T) up to hook_out only: (x_in (B, T, d_in), y (B, T, d_out))."""
    _, cache = model.run_with_cache(tokens, names=list(dict.fromkeys([hook_in, hook_out])),
                                    stop_at_layer="auto")
    return cache[hook_in].flatten(2), cache[hook_out].flatten(2)


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
        # the covariance is symmetric PSD, so its SVD is its eigendecomposition, sorted
        # (and LAPACK's SVD is much faster than its eigh here)
        vectors, _, _ = torch.linalg.svd(yc.T @ yc)
        self.components = vectors[:, :n_components].contiguous()  # (d_out, c)

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
        # float64: the chosen atoms all lean toward x, so they are far from orthogonal
        # (condition numbers of 1e4 are common) and float32 normal equations lose it
        atoms = self.directions.double()[indices]  # (n, k, d)
        gram = atoms @ atoms.transpose(1, 2)  # (n, k, k), invertible: k <= d distinct directions
        coef = torch.linalg.solve(gram, atoms @ xc.double().unsqueeze(-1)).squeeze(-1)
        return indices, coef  # float64: large coefficients that cancel, summed in __call__

    def encode(self, x_in: Tensor) -> Tensor:
        """(n, d_in) -> signed codes (n, d_sae), k nonzero per row."""
        indices, coef = self._support(x_in)
        return torch.zeros(len(x_in), len(self.directions), dtype=x_in.dtype,
                           device=x_in.device).scatter(1, indices, coef.to(x_in.dtype))

    def __call__(self, x_in: Tensor) -> Tensor:
        """(n, d_in) -> (n, d_out)"""
        indices, coef = self._support(x_in)
        atoms = self.decoder[indices].to(coef.dtype)  # (n, k, d_out)
        return self.y_mean + torch.einsum("nk,nkd->nd", coef, atoms).to(x_in.dtype)


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
        x, y = _prefix(model, tokens, hook_in, hook_out)
        xs.append(x[keep].float())
        ys.append(y[keep].float())
    x_in, y = torch.cat(xs), torch.cat(ys)
    same = not sae.is_transcoder
    return {"pca": LinearBaseline(x_in, y, min(n_components, *x_in.shape[1:], *y.shape[1:]),
                                  same_space=same),
            "random": RandomDictionary(x_in, y, sae.d_sae, n_components, same_space=same)}


# --- the passes ------------------------------------------------------------------------------

@dataclass
class _Batch:
    """One batch of evaluation windows after its clean forward pass (kept for the later
    interventions, so the clean pass runs once)."""

    tokens: Tensor  # (B, T) int64
    target: Tensor  # (n,) next tokens at the counted positions
    keep: Tensor  # (B, T) bool: the counted positions (n of them)
    x: Tensor  # (n, d_in) hook_in at the counted positions
    y: Tensor  # (B, T, d_out) hook_out everywhere (head dims flattened)
    resid: Tensor | None  # (B, T, d_model) entering the block that holds hook_out


class _Splicer:
    """Runs the model with the activation at hook_out replaced. Everything before the
    block holding hook_out is the same in every intervention, so the clean pass caches
    the residual stream entering that block and interventions run from there (hooks
    outside the blocks, like hook_embed, fall back to the full forward)."""

    def __init__(self, model, hook_in: str, hook_out: str):
        self.model, self.hook_in, self.hook_out = model, hook_in, hook_out
        found = re.match(r"blocks\.(\d+)\.", hook_out)
        self.layer = int(found.group(1)) if found else None
        self.resid_name = f"blocks.{self.layer}.hook_resid_pre" if found else None

    def clean(self, tokens: Tensor, targets: Tensor, keep: Tensor) -> tuple[_Batch, Tensor]:
        """The clean forward: (its _Batch, log-probs at the counted positions (n, d_vocab))."""
        cache: dict[str, Tensor] = {}

        def grab(act: Tensor, hook) -> None:
            cache[hook.name] = act

        names = dict.fromkeys(filter(None, [self.resid_name, self.hook_in, self.hook_out]))
        with self.model.hooks([(name, grab) for name in names]):
            logits = self.model(tokens)
        batch = _Batch(tokens, targets[keep], keep, cache[self.hook_in].flatten(2)[keep].float(),
                       cache[self.hook_out].flatten(2), cache.get(self.resid_name))
        return batch, logits[keep].float().log_softmax(-1)

    def log_probs(self, batch: _Batch, values: Tensor) -> Tensor:
        """Log-probs (n, d_vocab) at the counted positions with hook_out's activation
        there replaced by `values` (n, d_out); other positions keep the clean one."""
        full = batch.y.clone()
        full[batch.keep] = values.to(full.dtype)

        def replace(act: Tensor, hook) -> Tensor:
            return full.view_as(act)

        with self.model.hooks([(self.hook_out, replace)]):
            if self.layer is None:
                logits = self.model(batch.tokens)
            else:
                resid = batch.resid
                for block in self.model.blocks[self.layer:]:
                    resid = block(resid)
                logits = self.model.unembed(self.model.ln_final(resid))
        return logits[batch.keep].float().log_softmax(-1)


class _Tally:
    """Float64 sums over the counted tokens: the target's moments, each reconstruction's
    squared error (per channel) and cosine, each intervention's CE and KL."""

    def __init__(self) -> None:
        self.n, self.y_sum, self.y_sq = 0, 0.0, 0.0
        self.ce: dict[str, Tensor] = {}
        self.kl: dict[str, Tensor] = {}
        self.sse: dict[str, Tensor] = {}
        self.cos: dict[str, Tensor] = {}

    @staticmethod
    def _add(table: dict, key: str, value: Tensor) -> None:
        value = value.double().cpu()
        table[key] = table[key] + value if key in table else value

    def target(self, y: Tensor) -> None:
        """y (n, d_out) at the counted positions."""
        self.n += len(y)
        self.y_sum = self.y_sum + y.sum(0, dtype=torch.float64).cpu()
        self.y_sq = self.y_sq + y.pow(2).sum(0, dtype=torch.float64).cpu()

    def reconstruction(self, name: str, y_hat: Tensor, y: Tensor) -> None:
        """y_hat, y (n, d_out)"""
        self._add(self.sse, name, (y - y_hat).pow(2).sum(0, dtype=torch.float64))
        cos = (y_hat * y).sum(-1) / (y_hat.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)
        self._add(self.cos, name, cos.sum(dtype=torch.float64))

    def loss(self, name: str, lp: Tensor, target: Tensor, lp_clean: Tensor | None = None) -> None:
        """lp (n, d_vocab) log-probs; with lp_clean, also KL(clean || this)."""
        self._add(self.ce, name, -lp.gather(1, target[:, None]).sum(dtype=torch.float64))
        if lp_clean is not None:
            kl = (lp_clean.exp() * (lp_clean - lp)).sum(dtype=torch.float64)
            self._add(self.kl, name, kl)

    @property
    def mean(self) -> Tensor:
        return (self.y_sum / self.n).float()

    @property
    def sst(self) -> Tensor:
        """(d_out,) sum of squares around the per-channel mean."""
        return (self.y_sq - self.y_sum.pow(2) / self.n).clamp_min(0.0)

    def fve(self, name: str) -> float | None:
        return _fve(self.sse[name], self.sst)

    def ce_mean(self, name: str) -> float:
        return float(self.ce[name] / self.n)

    def recovered(self, name: str, ablation: str = "zero") -> float | None:
        return ce_loss_recovered(self.ce_mean(name), self.ce_mean(ablation), self.ce_mean("clean"))


class _Sparsity:
    """How often each latent fires (d_sae,) and how many tokens have each L0."""

    def __init__(self, d_sae: int):
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.l0_counts = torch.zeros(d_sae + 1, dtype=torch.float64)
        self.n = 0

    def add(self, latents: Tensor) -> None:
        """latents (n, d_sae)"""
        active = latents > 0
        self.fires += active.sum(0).double().cpu()
        self.l0_counts += torch.bincount(active.sum(1), minlength=len(self.l0_counts)).double().cpu()
        self.n += len(latents)

    @property
    def l0_mean(self) -> float:
        return float((self.l0_counts * torch.arange(len(self.l0_counts))).sum() / self.n)

    @property
    def density(self) -> Tensor:
        return self.fires / self.n


@torch.no_grad()
def _clean_and_spliced(model, saes: Mapping[str, SparseAutoencoder], hook_in: str, hook_out: str,
                       windows: np.ndarray, batch_size: int, device: torch.device,
                       start_id: int | None, progress: bool
                       ) -> tuple[_Splicer, _Tally, dict[str, _Sparsity], list[_Batch]]:
    """The first pass: per batch the clean forward, then each SAE spliced in and the
    zero ablation. Returns the tallies and the batches, for interventions that need the
    whole pass first (the mean ablation, baselines sized by the SAE's L0)."""
    splicer, tally = _Splicer(model, hook_in, hook_out), _Tally()
    sparsity = {name: _Sparsity(s.d_sae) for name, s in saes.items()}
    batches = []
    for tokens, targets, keep in _batches(windows, batch_size, device, start_id, progress, "eval"):
        batch, lp_clean = splicer.clean(tokens, targets, keep)
        y = batch.y[keep].float()
        for sae in saes.values():
            _check_widths(sae, batch.x, y, hook_in, hook_out)
        tally.target(y)
        tally.loss("clean", lp_clean, batch.target)
        for name, sae in saes.items():
            out = sae(batch.x)
            sparsity[name].add(out.latents)
            tally.reconstruction(name, out.reconstruction, y)
            tally.loss(name, splicer.log_probs(batch, out.reconstruction), batch.target, lp_clean)
        tally.loss("zero", splicer.log_probs(batch, torch.zeros_like(y)), batch.target)
        batches.append(batch)
    return splicer, tally, sparsity, batches


# --- the public entry points -----------------------------------------------------------------

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


def fve(y_hat: Tensor, y: Tensor) -> float | None:
    """Fraction of variance explained of targets y (n, d_out) by y_hat (n, d_out), as
    `evaluate` counts it: 1 - SSE / SST over all tokens and channels, SST around each
    channel's mean over these tokens. None if y does not vary."""
    tally = _Tally()
    tally.target(y)
    tally.reconstruction("y_hat", y_hat, y)
    return tally.fve("y_hat")


def ce_loss_recovered(ce_spliced: float, ce_ablated: float, ce_clean: float) -> float | None:
    """The share of the loss an ablation costs that the spliced-in dictionary wins back:
    (CE_ablated - CE_spliced) / (CE_ablated - CE_clean); 1 = as good as the clean model, 0 =
    no better than ablating. None if the ablation costs nothing (CE_ablated = CE_clean)."""
    return _ratio(ce_ablated - ce_spliced, ce_ablated - ce_clean)


def _hooks_and_windows(model, sae, shards: Shards, cfg: EvalConfig, exclude_start: bool):
    hook_in, hook_out = _hooks_of(model, sae)
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    return hook_in, hook_out, start_id, windows


@torch.no_grad()
def evaluate(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, *,
             device: str | torch.device | None = None, progress: bool = True,
             exclude_start: bool = True) -> dict:
    """Measure `sae` (an SAE or a transcoder) on `cfg.n_tokens` validation tokens: the
    metrics of `evaluate_with_density` alone."""
    return evaluate_with_density(model, sae, shards, cfg, device=device, progress=progress,
                                 exclude_start=exclude_start)[0]


@torch.no_grad()
def evaluate_with_density(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, *,
                          device: str | torch.device | None = None, progress: bool = True,
                          exclude_start: bool = True) -> tuple[dict, np.ndarray]:
    """Measure `sae` (an SAE or a transcoder) on `cfg.n_tokens` validation tokens; also
    return each latent's firing density on them, (d_sae,) float64, as `latent_densities`
    would, from the same pass.

    Returns JSON-ready data: {"n_tokens", "hook_in", "hook_out", "kind", "d_sae",
    "reconstruction": {"mse", "nmse", "fve", "cosine", "fve_per_channel"},
    "sparsity": {"l0_mean", "l0_hist", "dead_fraction", "dense_fraction",
    "density_log10_hist", "n_dead", "n_dense"}, "spliced": {"ce_clean", "ce_spliced",
    "ce_zero_ablation", "ce_mean_ablation", "ce_loss_recovered",
    "ce_loss_recovered_vs_mean", "kl_spliced"}, "baselines": [{"name", "coefficients",
    "fve", "ce_loss_recovered"}, ...]} (histograms are {"counts", "edges"}, numpy's
    convention: len(edges) = len(counts) + 1; l0_hist's bins are [v, v + 1)).
    Every figure is on the same `n_tokens` tokens (validation positions not holding the
    start token when `exclude_start`); the baselines are fitted on as many training-split
    tokens. A ratio whose denominator is 0 is None, as is a channel's FVE when the
    channel is constant."""
    device = model_device(model, device)
    model_device(sae, device)  # the SAE must sit with the model; neither is moved here
    hook_in, hook_out, start_id, windows = _hooks_and_windows(model, sae, shards, cfg, exclude_start)
    with eval_mode(model, sae):
        splicer, tally, sparsity, batches = _clean_and_spliced(
            model, {"sae": sae}, hook_in, hook_out, windows, cfg.batch_size, device, start_id,
            progress)
        l0 = sparsity["sae"]
        coefficients = max(1, round(l0.l0_mean))
        baselines = fit_baselines(model, sae, shards, cfg, coefficients, device=device,
                                  start_id=start_id)
        mean = tally.mean.to(device)
        for batch in tqdm(batches, desc="eval: ablations", disable=not progress, leave=False):
            tally.loss("mean", splicer.log_probs(batch, mean.expand(len(batch.x), -1)), batch.target)
            y = batch.y[batch.keep].float()
            for name, base in baselines.items():
                y_hat = base(batch.x)
                tally.reconstruction(name, y_hat, y)
                tally.loss(name, splicer.log_probs(batch, y_hat), batch.target)
    n, sse, sst = tally.n, tally.sse["sae"], tally.sst
    density = l0.density
    dead, dense = density == 0, density > cfg.dense_threshold
    rows = [{"name": "sae", "coefficients": coefficients, "fve": tally.fve("sae"),
             "ce_loss_recovered": tally.recovered("sae")}]
    for name, base in baselines.items():
        used = base.components.shape[1] if name == "pca" else base.k
        rows.append({"name": name, "coefficients": int(used), "fve": tally.fve(name),
                     "ce_loss_recovered": tally.recovered(name)})
    return {
        "n_tokens": n, "hook_in": hook_in, "hook_out": hook_out, "kind": sae.cfg.kind,
        "d_sae": sae.d_sae,
        "reconstruction": {
            "mse": _float(sse.sum() / n),
            "nmse": _ratio(float(sse.sum()), float(sst.sum())),
            "fve": tally.fve("sae"),
            "cosine": _float(tally.cos["sae"] / n),
            "fve_per_channel": [_ratio(float(b - a), float(b)) for a, b in zip(sse, sst)],
        },
        "sparsity": {
            "l0_mean": l0.l0_mean,
            "l0_hist": _integer_hist(_trim(l0.l0_counts)),
            "dead_fraction": float(dead.double().mean()),
            "dense_fraction": float(dense.double().mean()),
            "density_log10_hist": _density_hist(density, n),
            "n_dead": int(dead.sum()),
            "n_dense": int(dense.sum()),
        },
        "spliced": {
            "ce_clean": tally.ce_mean("clean"),
            "ce_spliced": tally.ce_mean("sae"),
            "ce_zero_ablation": tally.ce_mean("zero"),
            "ce_mean_ablation": tally.ce_mean("mean"),
            "ce_loss_recovered": tally.recovered("sae", "zero"),
            "ce_loss_recovered_vs_mean": tally.recovered("sae", "mean"),
            "kl_spliced": _float(tally.kl["sae"] / n),
        },
        "baselines": rows,
    }, density.numpy()


def _trim(counts: Tensor) -> Tensor:
    """Drop the trailing zero counts (values no token reached)."""
    nonzero = torch.nonzero(counts)
    return counts[: int(nonzero.max()) + 1] if len(nonzero) else counts[:1]


@torch.no_grad()
def latent_densities(model, sae: SparseAutoencoder, shards: Shards, cfg: EvalConfig, *,
                     device: str | torch.device | None = None,
                     exclude_start: bool = True) -> np.ndarray:
    """Each latent's firing density on the tokens `evaluate` uses: (d_sae,) float64, the
    share of them it is active on (0 = dead). Runs the model only up to the hook."""
    device = model_device(model, device)
    model_device(sae, device)  # the SAE must sit with the model; neither is moved here
    hook_in, hook_out, start_id, windows = _hooks_and_windows(model, sae, shards, cfg, exclude_start)
    sparsity = _Sparsity(sae.d_sae)
    with eval_mode(model, sae):
        for tokens, _, keep in _batches(windows, cfg.batch_size, device, start_id):
            x, _ = _prefix(model, tokens, hook_in, hook_out)
            sparsity.add(sae.encode(x[keep].float()))
    return sparsity.density.numpy()


@torch.no_grad()
def sweep_rows(model, saes: Mapping[str, SparseAutoencoder], shards: Shards, cfg: EvalConfig, *,
               device: str | torch.device | None = None, progress: bool = True,
               exclude_start: bool = True) -> list[dict]:
    """Rows {"name", "l0", "fve", "ce_loss_recovered", "kl", "n_tokens"} for a Pareto
    plot of several SAEs (e.g. the folders `sae_train.train_sweep` wrote, loaded with
    `load_sae`), in the order given; CE recovered is relative to zero ablation. SAEs
    reading the same hooks share one pass: the clean and zero-ablated forwards run once."""
    device = model_device(model, device)
    groups: dict[tuple[str, str], dict[str, SparseAutoencoder]] = {}
    for name, sae in saes.items():
        model_device(sae, device)  # each SAE must sit with the model; none is moved here
        groups.setdefault(_hooks_of(model, sae), {})[name] = sae
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    rows = {}
    for (hook_in, hook_out), members in groups.items():
        with eval_mode(model, *members.values()):
            _, tally, sparsity, _ = _clean_and_spliced(model, members, hook_in, hook_out, windows,
                                                      cfg.batch_size, device, start_id, progress)
        for name in members:
            rows[name] = {"name": name, "l0": sparsity[name].l0_mean, "fve": tally.fve(name),
                          "ce_loss_recovered": tally.recovered(name),
                          "kl": _float(tally.kl[name] / tally.n), "n_tokens": tally.n}
    return [rows[name] for name in saes]


def pareto_front(rows: list[dict], x: str = "l0", y: str = "fve") -> list[str]:
    """Names of the rows no other row beats on both axes (lower `x`, higher `y`), by `x`."""
    ok = [r for r in rows if r[x] is not None and r[y] is not None]
    front = [r for r in ok if not any(o[x] <= r[x] and o[y] >= r[y] and (o[x], o[y]) != (r[x], r[y])
                                      for o in ok)]
    return [r["name"] for r in sorted(front, key=lambda r: r[x])]


__all__ = [
    "LinearBaseline",
    "RandomDictionary",
    "ce_loss_recovered",
    "eval_windows",
    "evaluate",
    "evaluate_with_density",
    "fit_baselines",
    "fve",
    "latent_densities",
    "pareto_front",
    "sweep_rows",
]
