"""Automatic labels for dictionary latents, built from data and scored on other data.

    auto_label(model, sae, shards, cfg)          -> labels.json's content: a label per
                                                    latent, its detection and simulation
                                                    scores, and the same for two baselines
    latent_variables(model, sae, tokenizer, ...) -> storyworld: the variable each latent
                                                    best matches, and each variable's latent

No language model is at hand offline to read contexts and write explanations, so an
explanation is built from counts, and, like an LLM's, it is only believed as far as it
predicts activations on contexts it was not built from.

The tokens. One pass over the first `cfg.label_tokens` tokens of the validation split (0 =
all), read as consecutive n_ctx windows as `features.scan_features` reads them, through
the LM up to the dictionary's hook_in and through `sae.encode`; the start token is skipped
when `exclude_start`. The `features` scan already keeps top and quantile contexts, but
those are all positives: detection needs the tokens where a latent does *not* fire, and
simulation needs its activation at every token, so this pass keeps every activation
(sparse, as (token, latent, value) entries) and the activations at hook_in (float16) for
the baselines. Memory: 20 bytes per non-zero activation (int64 row and column, float32
value) plus 2 d_in bytes per token (200K tokens at L0 64 and d_in 768: ~0.6 GB). Windows alternate: even windows are the BUILD half
(labels are made from them), odd windows the SCORE half (labels are scored on them).
Whole windows, not alternating tokens: neighbouring tokens share most of their context
and often a latent's firing, so a token-level split would score a label on near copies
of the tokens it was built from.

The explanation (simpler than Neuron2Graph: the current token alone, no context
pattern). For each (latent, token id) on the build half, the number of occurrences of
the token, how many of them the latent fires on (activation > 0) and its summed
activation, accumulated sparsely: only pairs where the latent fires are ever stored
(dense (d_sae, d_vocab) tables would be 655 MB each for 16K latents over 10K tokens; these
hold at most one entry per non-zero activation of the build half), and
latents are processed `latent_chunk` at a time so that the sort behind the accumulation
works on a bounded slice.
    token set   tokens seen at least `min_count` times on the build half (rarer ones
                would enter on luck), sorted by firing rate P(fires | token), ties by more
                occurrences, then smaller id; the set is the prefix of that order that
                maximises the F1 of "token in set" against "latent fires" on the build
                half (the shortest such prefix on ties). So a latent that fires on one
                token gets that token; one that fires on a family of tokens gets the
                family, up to where adding a token costs more precision than it buys recall.
    simulator   predicted activation at a token = the latent's mean activation (zeros
                included) over the build half's occurrences of the current token; 0 for a
                token it never fired on. Set and simulator come from the same counts, so
                the explanation stays one readable thing; the previous token (a bigram
                back-off) is left out for now. Detection scores the set, because the set
                is what a reader of the label sees; simulation scores the simulator.
    label       the first LABEL_TOKENS tokens of the set, each quoted, '(+n more)'.

Scores, on the SCORE half only (the `n` tokens there, P where the latent fires):
    detection   AUROC of "the current token is in the set" against "the latent fires":
                with a yes/no prediction it is (1 + TPR - FPR) / 2, ties half, which is
                what `evaluate.groundtruth.auroc` gives on a 0/1 score (the tests check
                it). That function ranks a score against one label vector shared by every
                column; here every latent has its own labels, so the counts are taken
                directly. None when the latent never fires there (or always does).
    simulation  Pearson r over the score half between the simulator's prediction and
                the activation, from per-latent sums (sum p, p^2, a, a^2, pa; the
                prediction depends on the token only, so sum p comes from token counts).
                None when the latent never fires there; 0 when the prediction is constant
                there (its tokens never occur): an explanation that says nothing.
A latent that never fires on the build half has no label and no scores (None). The
summary's means and medians are over the latents scored (fired on both halves), "n" of them.

Baselines, scored end to end the same way: d_in random unit directions (seeded) and all
d_in principal components of the build half's activations at hook_in. Each direction u
becomes a "latent" max(0, (x - mean) . u - threshold), the mean and the threshold taken on
the build half, the threshold set so that the direction fires on the same share of build
tokens as the SAE's mean latent density (mean L0 / d_sae): as sparse as an SAE latent,
so the counts behind a label are comparable. Neither has a meaningful sign, so both signs
are built and, per direction, the one whose token set has the better F1 on the build half
is kept (chosen on build, scored on score: it favours the baselines, never the SAE).
Memory: one block of DIRECTION_CHUNK directions' projections (block x n floats) at a time.
How to read them: a thresholded direction in a residual stream dominated by the current
token's embedding picks out a few tokens too, so a baseline's token sets can detect about
as well as the SAE's (on the tiny preset's run the random directions' did); what a
baseline lacks shows more in simulation, where the size of the activation on each token
must be right as well.

Ground truth (storyworld): stories the corpus never held, split by story into a selection
and a report half (`evaluate.groundtruth.split_stories`), read and labelled as
`ground_truth_recovery` reads them. AUROC of every latent for every binary variable on
each half (rank-based, `groundtruth.auroc`); per latent, the variable with the best AUROC
on the selection half, and its AUROC on the report half; per variable, the latent with
the best selection AUROC and its report AUROC. The SAE's latents are taken as they are
(activation = evidence), as `ground_truth_recovery` scores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..config import FeaturesConfig
from ..corpus.shards import Shards
from ..corpus.storyworld import generate_stories
from ..evaluate.groundtruth import (
    CHUNK,
    MIN_POSITIVES,
    SPLIT_SEED,
    SparseScores,
    auroc,
    binary_targets,
    split_stories,
    story_activations,
)
from ..lm.model import eval_mode, model_device
from ..sae.model import SparseAutoencoder
from .features import _hooks, _windows

MIN_COUNT = 5  # a token enters a set only if the build half holds it this often
LATENT_CHUNK = 4096  # latents whose (latent, token) pairs are accumulated at a time
DIRECTION_CHUNK = 256  # directions whose build-half projections are held at once
LABEL_TOKENS = 3  # tokens spelled out in a label
HALVES = ("build", "score")


# --- the pass: every activation, in two halves of whole windows ----------------------------

@dataclass
class Half:
    """One half's counted tokens: positions (n,) int64 in the val split, ids (n,) int64,
    x (n, d_in) float16 at hook_in, codes (n, d_sae) sparse."""

    positions: Tensor
    ids: Tensor
    x: Tensor
    codes: SparseScores


@torch.no_grad()
def scan_halves(model, sae: SparseAutoencoder, shards: Shards, n_tokens: int, *, batch_size: int = 32,
                exclude_start: bool = True, device=None, progress: bool = True) -> dict[str, Half]:
    """Read the val split's first `n_tokens` tokens (0 = all, whole windows) through the LM
    and the SAE: {"build": Half of the even windows, "score": Half of the odd ones}."""
    device = model_device(model, device)
    sae_device = next(sae.parameters()).device
    if sae_device != device:
        raise ValueError(f"the model is on {device} but the SAE on {sae_device}: move one, "
                         f"e.g. sae.to({str(device)!r})")
    hook_in, _ = _hooks(model, sae)
    n_ctx = model.cfg.n_ctx
    tokens, n_windows = _windows(shards, n_ctx, n_tokens)
    start_id = shards.start_id if exclude_start else None
    parts: dict[str, list] = {h: [] for h in HALVES}
    with eval_mode(model, sae):
        for a in tqdm(range(0, n_windows, batch_size), desc="autolabel", disable=not progress, leave=False):
            starts = np.arange(a, min(n_windows, a + batch_size)) * n_ctx
            where = starts[:, None] + np.arange(n_ctx)  # (B, n_ctx) positions in the split
            ids = torch.from_numpy(np.asarray(tokens[where], dtype=np.int64)).to(device)
            _, cache = model.run_with_cache(ids, names=[hook_in], stop_at_layer="auto")
            x = cache[hook_in].flatten(2)
            if x.shape[-1] != sae.d_in:
                raise ValueError(f"{hook_in} has {x.shape[-1]} values but the SAE reads {sae.d_in}: "
                                 f"was it trained on another model?")
            counted = ids != start_id if start_id is not None else torch.ones_like(ids, dtype=torch.bool)
            odd = torch.from_numpy((starts // n_ctx) % 2 == 1).to(device)[:, None].expand_as(ids)
            for half, mask in (("build", counted & ~odd), ("score", counted & odd)):
                xs = x[mask].float()
                codes = sae.encode(xs)
                r, c = codes.nonzero(as_tuple=True)  # sparse at once: dense codes would not fit
                parts[half].append((torch.from_numpy(where).to(device)[mask], ids[mask], xs.half(),
                                    r, c, codes[r, c]))
    out = {}
    for half, pieces in parts.items():
        offsets = np.cumsum([0] + [len(p[1]) for p in pieces])
        positions, ids, x, _, cols, values = (torch.cat(column) for column in zip(*pieces))
        rows = torch.cat([p[3] + int(o) for p, o in zip(pieces, offsets)])  # batch rows -> half rows
        out[half] = Half(positions, ids, x, SparseScores(rows, cols, values, int(offsets[-1]), sae.d_sae))
    return out


# --- explanations, built on one half ---------------------------------------------------------

@dataclass
class Explanations:
    """Per latent of L, built on one half's tokens (module docstring).

    set_latent, set_token (m,) int64: every latent's token set, grouped by latent
        (ascending), each set in precision order
    table_keys (p,) int64, sorted: latent * d_vocab + token for each (latent, token) the
        latent fired on; table_values (p,) float64 its mean activation given that token
    fires (L,) int64: tokens the latent fired on; f1 (L,) float64: its set's F1 there"""

    set_latent: Tensor
    set_token: Tensor
    table_keys: Tensor
    table_values: Tensor
    fires: Tensor
    f1: Tensor
    d_vocab: int

    def sets(self) -> list[list[int]]:
        """Each latent's token set, as lists of ids."""
        counts = torch.bincount(self.set_latent, minlength=len(self.fires)).tolist()
        return [s.tolist() for s in self.set_token.cpu().split(counts)]


def _by_latent(codes: SparseScores, chunk: int):
    """(first latent, rows, cols, values) of each block of `chunk` latents' entries."""
    order = codes.cols.argsort(stable=True)
    rows, cols, values = codes.rows[order], codes.cols[order], codes.values[order]
    for a in range(0, codes.n_cols, chunk):
        lo, hi = torch.searchsorted(cols, torch.tensor([a, a + chunk], device=cols.device)).tolist()
        yield a, rows[lo:hi], cols[lo:hi], values[lo:hi]


def _within_run(values: Tensor, start: Tensor, run: Tensor) -> Tensor:
    """Cumulative sums restarting at each run: values (m,), start (m,) bool (a run's first
    entry), run (m,) each entry's run index -> (m,)."""
    total = values.cumsum(0)
    return total - (total - values)[start][run]


def explain(codes: SparseScores, ids: Tensor, d_vocab: int, *, min_count: int = MIN_COUNT,
            latent_chunk: int = LATENT_CHUNK) -> Explanations:
    """Token sets and simulator tables of codes' L latents, from the tokens `ids` (n,) the
    rows of codes (n, L) are at."""
    count = torch.bincount(ids, minlength=d_vocab)  # occurrences of each token
    fires = torch.bincount(codes.cols, minlength=codes.n_cols)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("set_latent", "set_token", "keys", "values", "f1")}
    for a, rows, cols, values in _by_latent(codes, latent_chunk):
        # (latent, token) pairs the latent fires on: how often, and the summed activation
        pairs, inverse, n_fire = torch.unique((cols - a) * d_vocab + ids[rows], return_inverse=True,
                                              return_counts=True)
        total = torch.zeros(len(pairs), dtype=torch.float64, device=pairs.device)
        total.index_add_(0, inverse, values.double())
        latent, token = pairs // d_vocab + a, pairs % d_vocab
        parts["keys"].append(latent * d_vocab + token)
        parts["values"].append(total / count[token])
        # the set: eligible tokens by firing rate (ties: more occurrences, then smaller id)
        ok = count[token] >= min_count
        latent, token, n_fire = latent[ok], token[ok], n_fire[ok]
        rate = n_fire.double() / count[token]  # float64: distinct fractions stay distinct
        order = torch.arange(len(token), device=token.device)  # already by token within latent
        for key, descending in ((count[token], True), (rate, True), (latent, False)):
            order = order[key[order].sort(descending=descending, stable=True).indices]
        latent, token, n_fire = latent[order], token[order], n_fire[order]
        # F1 of every prefix within each latent's run: cumulative sums minus the run's start
        start = torch.ones_like(latent, dtype=torch.bool)
        start[1:] = latent[1:] != latent[:-1]
        run = start.cumsum(0) - 1
        hits, said = _within_run(n_fire, start, run), _within_run(count[token], start, run)
        f1 = 2 * hits.double() / (said + fires[latent]).double()
        best = torch.zeros(codes.n_cols, dtype=torch.float64, device=f1.device)
        best.scatter_reduce_(0, latent, f1, "amax")
        place = torch.arange(len(f1), device=f1.device)
        first = torch.full((codes.n_cols,), len(f1), device=f1.device)
        first.scatter_reduce_(0, latent[f1 == best[latent]], place[f1 == best[latent]], "amin")
        keep = place <= first[latent]
        parts["set_latent"].append(latent[keep])
        parts["set_token"].append(token[keep])
        parts["f1"].append(best[a : a + latent_chunk])
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return Explanations(cat["set_latent"], cat["set_token"], cat["keys"], cat["values"], fires, cat["f1"],
                        d_vocab)


# --- scores, on the other half -----------------------------------------------------------------

def score(expl: Explanations, codes: SparseScores, ids: Tensor, *,
          latent_chunk: int = LATENT_CHUNK) -> tuple[Tensor, Tensor]:
    """(detection AUROC (L,), simulation r (L,)) float64 of `expl` on other tokens: codes
    (n, L) at tokens `ids` (n,); NaN where undefined (module docstring)."""
    V, n, L = expl.d_vocab, codes.n_rows, codes.n_cols
    count = torch.bincount(ids, minlength=V).double()  # occurrences on this half
    dev = count.device
    set_keys = (expl.set_latent * V + expl.set_token).sort().values
    table_latent, table_token = expl.table_keys // V, expl.table_keys % V
    # the prediction summed over every token of the half, from token counts alone
    said = torch.bincount(expl.set_latent, weights=count[expl.set_token], minlength=L)
    sum_p = torch.bincount(table_latent, weights=count[table_token] * expl.table_values, minlength=L)
    sum_pp = torch.bincount(table_latent, weights=count[table_token] * expl.table_values ** 2, minlength=L)
    fires, hits, sum_a, sum_aa, sum_pa = (torch.zeros(L, dtype=torch.float64, device=dev) for _ in range(5))
    for _, rows, cols, values in _by_latent(codes, latent_chunk):
        keys, a = cols * V + ids[rows], values.double()
        fires += torch.bincount(cols, minlength=L)
        hits += torch.bincount(cols, weights=_member(set_keys, keys).double(), minlength=L)
        p = _lookup(expl.table_keys, expl.table_values, keys)  # the prediction where it fires
        sum_a += torch.bincount(cols, weights=a, minlength=L)
        sum_aa += torch.bincount(cols, weights=a * a, minlength=L)
        sum_pa += torch.bincount(cols, weights=p * a, minlength=L)
    detection = 0.5 * (1 + hits / fires - (said - hits) / (n - fires))
    detection[(fires == 0) | (fires == n)] = torch.nan
    cov = sum_pa - sum_p * sum_a / n
    var_p, var_a = sum_pp - sum_p ** 2 / n, sum_aa - sum_a ** 2 / n
    flat = var_p <= 1e-12 * sum_pp.clamp_min(1e-300)  # the prediction is constant here
    r = torch.where(flat, 0.0, cov / (var_p.clamp_min(1e-300) * var_a.clamp_min(1e-300)).sqrt())
    r[fires == 0] = torch.nan
    return detection, r.clamp(-1, 1)


def _lookup(sorted_keys: Tensor, values: Tensor, keys: Tensor) -> Tensor:
    """values (p,) float64 at each of keys (m,) in sorted_keys (p,), 0 where absent: (m,)."""
    if len(sorted_keys) == 0:
        return torch.zeros(keys.shape, dtype=torch.float64, device=keys.device)
    at = torch.searchsorted(sorted_keys, keys).clamp_(max=len(sorted_keys) - 1)
    return torch.where(sorted_keys[at] == keys, values[at], 0.0)


def _member(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """Whether each of keys (m,) is in sorted_keys (p,): (m,) bool."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    at = torch.searchsorted(sorted_keys, keys).clamp_(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys


# --- baselines: directions turned into latents ------------------------------------------------

def direction_codes(x: dict[str, Tensor], directions: Tensor, density: float, *,
                    chunk: int = CHUNK) -> dict[str, SparseScores]:
    """Directions (m, d_in) as 2m latents (+u then -u): max(0, (x - mean) . u - t), the
    mean and each t on x["build"], t so that a share `density` of build tokens fire.
    x: {half: (n, d_in)} -> {half: SparseScores (n, 2m)}."""
    directions = directions.float()
    mean = x["build"].float().mean(0)
    m, n_build = len(directions), len(x["build"])
    firing = round(density * n_build)
    parts: dict[str, list] = {half: [] for half in x}
    for b in range(0, m, DIRECTION_CHUNK):  # a block of directions at a time: block x n floats
        block = directions[b : b + DIRECTION_CHUNK]
        thresholds = {}
        for half in sorted(x, key=lambda h: h != "build"):  # build first: it sets the thresholds
            proj = torch.cat([block @ (x[half][a : a + chunk].float() - mean).T
                              for a in range(0, len(x[half]), chunk)] or [block[:, :0]], 1)
            for sign, first in ((1.0, b), (-1.0, m + b)):
                signed = sign * proj  # (block, n)
                if firing == 0:
                    continue  # the SAE never fires: neither do its baselines
                if half == "build":  # the (firing + 1)-th largest: `firing` tokens lie above it
                    thresholds[sign] = signed.topk(min(firing + 1, n_build), dim=1).values[:, -1:]
                col, row = (signed > thresholds[sign]).nonzero(as_tuple=True)
                parts[half].append((row, col + first, (signed - thresholds[sign])[col, row]))
    out = {}
    for half, pieces in parts.items():
        rows, cols, values = (torch.cat([p[i] for p in pieces]) if pieces else
                              torch.zeros(0, dtype=torch.float if i == 2 else torch.long, device=mean.device)
                              for i in range(3))
        out[half] = SparseScores(rows, cols, values, len(x[half]), 2 * m)
    return out


def principal_components(x: Tensor, *, chunk: int = CHUNK) -> Tensor:
    """All d_in principal components of x (n, d_in), as rows (d_in, d_in) float64, by
    variance: the covariance's eigenvectors (its SVD, as `metrics.LinearBaseline` takes
    them), accumulated a chunk of rows at a time."""
    mean = x.float().mean(0)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for a in range(0, len(x), chunk):
        c = (x[a : a + chunk].float() - mean).double()
        cov += c.T @ c
    return torch.linalg.svd(cov)[0].T


def _pick_sign(codes: dict[str, SparseScores], ids: Tensor, d_vocab: int, **kw) -> dict[str, SparseScores]:
    """Of each direction's two signs (columns j and j + m), keep the one whose token set
    has the better F1 on the build half: {half: SparseScores (n, m)}."""
    m = codes["build"].n_cols // 2
    f1 = explain(codes["build"], ids, d_vocab, **kw).f1
    column = torch.where(f1[:m] >= f1[m:], torch.arange(m, device=f1.device),
                         torch.arange(m, 2 * m, device=f1.device))
    new = torch.full((2 * m,), -1, dtype=torch.long, device=f1.device)
    new[column] = torch.arange(m, device=f1.device)
    out = {}
    for half, c in codes.items():
        keep = new[c.cols] >= 0
        out[half] = SparseScores(c.rows[keep], new[c.cols[keep]], c.values[keep], c.n_rows, m)
    return out


def _summary(detection: Tensor, r: Tensor) -> dict:
    """Mean and median of both scores over the latents scored on both."""
    scored = ~(detection.isnan() | r.isnan())
    d, s = detection[scored].cpu().numpy(), r[scored].cpu().numpy()
    stat = lambda f, v: round(float(f(v)), 6) if len(v) else None
    return {"n": int(scored.sum()), "detection_auroc_mean": stat(np.mean, d),
            "detection_auroc_median": stat(np.median, d), "simulation_r_mean": stat(np.mean, s),
            "simulation_r_median": stat(np.median, s)}


def _label(tokens: list[int], token_text: Callable[[int], str]) -> str:
    """The set as text: its first LABEL_TOKENS tokens quoted, then how many more."""
    if not tokens:  # it fired, but on no token seen min_count times
        return "(no token predicts it)"
    shown = " ".join(repr(token_text(t)) for t in tokens[:LABEL_TOKENS])
    more = len(tokens) - LABEL_TOKENS
    return f"{shown} (+{more} more)" if more > 0 else shown


def _number(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 6)


# --- the entry points --------------------------------------------------------------------------

@torch.no_grad()
def auto_label(model, sae: SparseAutoencoder, shards: Shards, cfg: FeaturesConfig, *,
               token_text: Callable[[int], str] = str, exclude_start: bool = True, device=None,
               progress: bool = True, seed: int = 0, min_count: int = MIN_COUNT,
               latent_chunk: int = LATENT_CHUNK) -> dict:
    """Label every latent of `sae` from the build half of `cfg.label_tokens` val tokens and
    score it on the score half, with random directions (seed `seed`) and PCA components
    as baselines (module docstring). Returns labels.json's content:
        method, n_build_tokens, n_score_tokens,
        latents   one per latent, in order: {"latent", "label" (None: never fired on the
                  build half), "tokens" (the set, in precision order), "detection_auroc",
                  "simulation_r"}
        summary   {"sae", "random", "pca"}: {"n", "detection_auroc_mean", ..._median,
                  "simulation_r_mean", ..._median} over the latents scored"""
    halves = scan_halves(model, sae, shards, cfg.label_tokens, batch_size=cfg.batch_size,
                         exclude_start=exclude_start, device=device, progress=progress)
    build, held = halves["build"], halves["score"]
    if len(build.ids) == 0 or len(held.ids) == 0:
        raise ValueError(f"{len(build.ids)} build and {len(held.ids)} score tokens: labels need both halves, "
                         f"so raise features.label_tokens to at least two windows of n_ctx={model.cfg.n_ctx}")
    V = model.cfg.d_vocab
    kw = {"min_count": min_count, "latent_chunk": latent_chunk}
    expl = explain(build.codes, build.ids, V, **kw)
    detection, r = score(expl, held.codes, held.ids, latent_chunk=latent_chunk)
    summary = {"sae": _summary(detection, r)}
    density = len(build.codes.values) / (len(build.ids) * sae.d_sae)
    x = {"build": build.x, "score": held.x}
    d_in = build.x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    components = principal_components(build.x)
    baselines = {"random": F.normalize(torch.randn(d_in, d_in, generator=generator), dim=-1),
                 "pca": components}
    for name, directions in tqdm(baselines.items(), desc="baselines", disable=not progress, leave=False):
        codes = _pick_sign(direction_codes(x, directions.to(build.x.device), density), build.ids, V, **kw)
        base = explain(codes["build"], build.ids, V, **kw)
        summary[name] = _summary(*score(base, codes["score"], held.ids, latent_chunk=latent_chunk))
    latents = []
    for i, (tokens, fired, d, s) in enumerate(zip(expl.sets(), expl.fires.tolist(), detection.tolist(),
                                                  r.tolist())):
        alive = fired > 0
        latents.append({"latent": i, "label": _label(tokens, token_text) if alive else None,
                        "tokens": tokens, "detection_auroc": _number(d) if alive else None,
                        "simulation_r": _number(s) if alive else None})
    method = (f"token set: current tokens seen >= {min_count} times, by firing rate, the prefix "
              f"with the best F1 on even windows; simulator: mean activation given the current "
              f"token; scored on odd windows (detection AUROC of 'token in set', simulation r)")
    return {"method": method, "n_build_tokens": len(build.ids), "n_score_tokens": len(held.ids),
            "latents": latents, "summary": summary}


@torch.no_grad()
def latent_variables(model, sae: SparseAutoencoder, tokenizer, n_stories: int, data_seed: int,
                     first_index: int, *, batch_size: int = 32, device=None, progress: bool = True,
                     min_positives: int = MIN_POSITIVES, seed: int = SPLIT_SEED) -> dict:
    """The storyworld variable each latent best matches, and each variable's best latent,
    chosen on one half of `n_stories` stories (seed `data_seed`, indices from `first_index`:
    the pipeline passes data.max_stories, so the corpus never held them) and reported on
    the other (module docstring). Returns
        latents    one per latent: {"latent", "variable", "auroc" (report half)}; variable
                   and auroc None for a latent that never fires on the selection half
        variables  {name: {"latent", "auroc" (report half), "selection_auroc"}}
        skipped    variables with fewer than `min_positives` positives or negatives in a half"""
    device = model_device(model, device)
    model_device(sae, device)  # the SAE must sit with the model; neither is moved here
    hook_in, _ = _hooks(model, sae)
    stories = list(generate_stories(n_stories, seed=data_seed, start=first_index))
    halves = dict(zip(("selection", "report"), split_stories(len(stories), seed)))
    codes, targets = {}, {}
    with eval_mode(model, sae):
        for half, chosen in tqdm(halves.items(), desc="ground truth", disable=not progress, leave=False):
            acts, labels = story_activations(model, hook_in, tokenizer, [stories[i] for i in chosen],
                                             batch_size=batch_size, device=device)
            targets[half] = binary_targets(labels)
            codes[half] = SparseScores.concat([sae.encode(c) for c in acts.split(CHUNK)])
    names, skipped, table = [], [], {half: [] for half in halves}
    for name in targets["selection"]:
        y = {h: torch.from_numpy(targets[h][name]).to(device) for h in halves}
        if min(min(int(v.sum()), len(v) - int(v.sum())) for v in y.values()) < min_positives:
            skipped.append(name)
            continue
        names.append(name)
        for h in halves:
            table[h].append(auroc(codes[h], y[h]))  # (d_sae,) for this variable
    fired = torch.bincount(codes["selection"].cols, minlength=sae.d_sae) > 0
    latents = [{"latent": i, "variable": None, "auroc": None} for i in range(sae.d_sae)]
    variables = {}
    if names:
        chosen, reported = torch.stack(table["selection"]), torch.stack(table["report"])  # (vars, d_sae)
        best = chosen.argmax(0)
        for i in fired.nonzero()[:, 0].tolist():
            v = int(best[i])
            latents[i].update(variable=names[v], auroc=round(float(reported[v, i]), 6))
        for v, name in enumerate(names):
            j = int(chosen[v].argmax())
            variables[name] = {"latent": j, "auroc": round(float(reported[v, j]), 6),
                               "selection_auroc": round(float(chosen[v, j]), 6)}
    return {"latents": latents, "variables": variables, "skipped": skipped, "n_stories": len(stories),
            "split_seed": seed}


__all__ = ["Explanations", "Half", "auto_label", "direction_codes", "explain", "latent_variables",
           "scan_halves", "score"]
