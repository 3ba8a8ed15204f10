"""Ground truth: do the SAE's latents recover variables we know the value of?

Storyworld labels every character of its stories (see `storyworld`): inside a quotation,
who speaks, which character a pronoun points to, repeated names, the place a sentence is
set in, and the section of the story. No real corpus offers this, so here alone we can
ask of a dictionary "is there a latent that *is* this variable?", and compare the SAE with
two dictionaries that learned nothing about the model: the top principal components of
the same activations and a random dictionary.

Stories. `ground_truth_stories` storyworld stories of the run's seed with indices from
`first_index` on. The pipeline passes the preset's `data.max_stories`, so they are stories
the corpus never contained (neither train nor validation split) but drawn exactly as the
corpus was. Each is tokenised as the shards are (start token first) and labelled per
token with `storyworld.token_labels` on the tokenizer's character offsets; the start
token gets no label and is left out (the SAE is trained without it).

Context. A story can be longer than the model's n_ctx. It is read in windows of n_ctx
tokens starting every s = n_ctx // 2 tokens; the first window gives its activations
for positions 0 .. n_ctx - 1, every later one only for its last s positions. So each
token is read once, with at least n_ctx - s tokens of story before it (or the whole story).

Binary variables (one per row; positives = tokens where it holds):
    in_quote                   the token is inside a quotation (quote marks included)
    speaker=female|male        inside a quotation whose speaker is female / male
                               ("speaker has a label" would be in_quote again)
    pronoun                    the token is a pronoun with a referent
    pronoun=female|male|neuter|plural   ... whose referent is female / male / an "it"
                               animal / a plural ("Lily+Tom")
    name_repeat                the token is part of a name already written in the story
    place                      the sentence is set in a place (any)
    place=<name>               ... in that place (one-vs-rest, each place)
    section=opening|middle|ending   the story's section (one-vs-rest)
A variable with fewer than `min_positives` positives or negatives is skipped: its AUROC
would be noise.

Scores. For each variable, the best single latent by AUROC (rank-based, ties counted
half, vectorised over all latents; no sklearn). SAE latents are scored as they are
(activation = evidence for the variable). PCA components and random-dictionary codes
have no meaningful sign, so both signs are tried (AUROC max(A, 1 - A)): this favours the
baselines, which only makes "the SAE beats them" harder to claim. The F1 reported is that
latent's best F1 over all thresholds. Baselines, sized as in `metrics`:
    pca     the top c = round(SAE's mean L0 on these tokens) principal components of
            the same activations (fitted on them), each component a score
    random  `metrics.RandomDictionary` of the SAE's width on the same activations,
            k = c directions per token; each code is a score
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import EvalConfig
from ..corpus.storyworld import NAMES, PARENTS, PLACES, Story, generate_stories, token_labels
from ..lm.model import model_device
from ..sae.model import SparseAutoencoder
from .metrics import LinearBaseline, RandomDictionary, _eval_mode

MIN_POSITIVES = 10
CHUNK = 4096  # tokens encoded at a time
GENDER = {c.name: c.gender for c in NAMES + PARENTS}


# --- AUROC and F1 ------------------------------------------------------------------------

class SparseScores:
    """Scores of n tokens on L latents, stored as their nonzero entries (SAE latents are
    mostly 0, so ranking only the nonzeros is what makes a 16K-wide dictionary cheap).

    rows, cols (nnz,) int64 and values (nnz,) float: entry (rows[i], cols[i]) = values[i];
    every other entry is 0."""

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int):
        keep = values != 0
        self.rows, self.cols, self.values = rows[keep], cols[keep], values[keep]
        self.n_rows, self.n_cols = n_rows, n_cols

    @classmethod
    def from_dense(cls, scores: Tensor) -> SparseScores:
        """(n, L) -> SparseScores"""
        rows, cols = scores.nonzero(as_tuple=True)
        return cls(rows, cols, scores[rows, cols], *scores.shape)

    @classmethod
    def concat(cls, parts: Sequence[Tensor]) -> SparseScores:
        """Dense row blocks (n_i, L), stacked in order, without ever holding them all."""
        rows, cols, values, n = [], [], [], 0
        for part in parts:
            r, c = part.nonzero(as_tuple=True)
            rows.append(r + n)
            cols.append(c)
            values.append(part[r, c])
            n += len(part)
        return cls(torch.cat(rows), torch.cat(cols), torch.cat(values), n, parts[0].shape[1])

    def column(self, j: int) -> Tensor:
        """Latent j's scores, dense (n,)."""
        out = torch.zeros(self.n_rows, dtype=self.values.dtype, device=self.values.device)
        mask = self.cols == j
        return out.index_put_((self.rows[mask],), self.values[mask])

    @functools.cached_property
    def ranks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each column's ranks, computed once for any number of label sets:
        (rows (nnz,), cols (nnz,), rank (nnz,) float64, zero_rank (L,) float64), the
        entries sorted by (column, value), `rank` the 1-based average rank of each
        entry within its column (ties share the average of their ranks), `zero_rank`
        the average rank of each column's zeros. A column's zeros all tie, between its
        negative and its positive entries: their average rank is n_negative +
        (n_zero + 1) / 2, and every positive entry's rank is shifted by n_zero."""
        n, n_cols = self.n_rows, self.n_cols
        by_value = self.values.argsort(stable=True)  # by value, then stably by column
        order = by_value[self.cols[by_value].argsort(stable=True)]
        col, value = self.cols[order], self.values[order]
        nnz = len(col)
        per_col = torch.bincount(col, minlength=n_cols).double()
        below_zero = torch.bincount(col[value < 0], minlength=n_cols).double()
        zeros = n - per_col
        # first and last sorted position of each run of equal (column, value)
        new_run = torch.ones(nnz, dtype=torch.bool, device=col.device)
        new_run[1:] = (col[1:] != col[:-1]) | (value[1:] != value[:-1])
        ends_run = torch.ones_like(new_run)
        ends_run[:-1] = new_run[1:]
        index = torch.arange(nnz, device=col.device)
        first = torch.where(new_run, index, 0).cummax(0).values
        last = torch.where(ends_run, index, nnz).flip(0).cummin(0).values.flip(0)
        col_start = per_col.cumsum(0) - per_col
        rank = (first + last).double() / 2 - col_start[col] + 1
        rank += torch.where(value > 0, zeros[col], 0.0)
        return self.rows[order], col, rank, below_zero + (zeros + 1) / 2


def auroc(scores: Tensor | SparseScores, labels: Tensor) -> Tensor:
    """AUROC of each latent (column) for binary `labels` (n,): the probability that a
    random positive scores above a random negative, ties counting half (Mann-Whitney U
    from average ranks: (sum of the positives' ranks - P (P + 1) / 2) / (P N)).
    `scores` (n, L) dense or SparseScores (whose ranks are reused across calls).
    Returns (L,) float64."""
    if not isinstance(scores, SparseScores):
        scores = SparseScores.from_dense(scores)
    labels = labels.bool()
    n, n_pos = scores.n_rows, int(labels.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"AUROC needs positives and negatives, got {n_pos} of {n}")
    rows, col, rank, zero_rank = scores.ranks
    positive = labels[rows].double()
    nonzero_positives = torch.bincount(col, weights=positive, minlength=scores.n_cols)
    rank_sum = torch.bincount(col, weights=rank * positive, minlength=scores.n_cols)
    rank_sum += (n_pos - nonzero_positives) * zero_rank
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))


def best_f1(score: Tensor, labels: Tensor) -> tuple[float, float]:
    """(F1, threshold) of the rule `score >= threshold` at the best threshold, for one
    score (n,) and binary labels (n,). Thresholds are the score's distinct values."""
    labels = labels.bool()
    values, order = score.sort(descending=True)
    true_pos = labels[order].double().cumsum(0)
    predicted = torch.arange(1, len(score) + 1, device=score.device, dtype=torch.float64)
    f1 = 2 * true_pos / (predicted + labels.sum())
    cut = torch.ones_like(labels)  # a threshold must take all of a run of equal scores
    cut[:-1] = values[1:] != values[:-1]
    f1 = torch.where(cut, f1, -1.0)
    best = int(f1.argmax())
    return float(f1[best]), float(values[best])


def best_latent(scores: Tensor | SparseScores, labels: Tensor, *, both_signs: bool) -> dict:
    """The latent with the highest AUROC for `labels` (n,): {"auroc", "f1", "latent",
    "sign"} (sign -1: the negated score won; only with both_signs). F1 is that latent's
    best over thresholds."""
    if not isinstance(scores, SparseScores):
        scores = SparseScores.from_dense(scores)
    a = auroc(scores, labels)
    signed = torch.maximum(a, 1 - a) if both_signs else a
    latent = int(signed.argmax())
    sign = -1 if both_signs and a[latent] < 0.5 else 1
    f1, _ = best_f1(sign * scores.column(latent), labels)
    return {"auroc": float(signed[latent]), "f1": f1, "latent": latent, "sign": sign}


# --- variables ------------------------------------------------------------------------------

def binary_targets(labels: dict[str, Sequence[str | None]]) -> dict[str, np.ndarray]:
    """Per-token label values (variable -> one value or None per token, as
    `storyworld.token_labels` gives, concatenated over stories) -> the binary variables
    of the module docstring, {name: (n,) bool}, in a fixed order."""
    def where(variable: str, test) -> np.ndarray:
        return np.array([v is not None and test(v) for v in labels[variable]], dtype=bool)

    out = {"in_quote": where("in_quote", lambda v: True)}
    for gender in ("female", "male"):
        out[f"speaker={gender}"] = where("speaker", lambda v, g=gender: GENDER.get(v) == g)
    out["pronoun"] = where("pronoun_referent", lambda v: True)
    for gender in ("female", "male", "neuter", "plural"):
        out[f"pronoun={gender}"] = where("pronoun_referent",
                                         lambda v, g=gender: _referent_gender(v) == g)
    out["name_repeat"] = where("name_repeat", lambda v: True)
    out["place"] = where("place", lambda v: True)
    for place in PLACES:
        out[f"place={place}"] = where("place", lambda v, p=place: v == p)
    for section in ("opening", "middle", "ending"):
        out[f"section={section}"] = where("section", lambda v, s=section: v == s)
    return out


def _referent_gender(value: str) -> str | None:
    return "plural" if "+" in value else GENDER.get(value)


# --- activations of labelled stories ---------------------------------------------------------

def context_windows(n: int, n_ctx: int) -> list[tuple[int, int]]:
    """How a sequence of n tokens is read (module docstring): [(start, first_kept)], each
    window tokens[start : start + n_ctx] giving positions first_kept .. its end."""
    step = max(1, n_ctx // 2)
    windows = [(0, 0)]
    while windows[-1][0] + n_ctx < n:
        start = windows[-1][0] + step
        windows.append((start, start + n_ctx - step))
    return windows


@torch.no_grad()
def story_activations(model, hook: str, tokenizer, stories: Sequence[Story], *,
                      batch_size: int = 32, device: str | torch.device | None = None
                      ) -> tuple[Tensor, dict[str, list[str | None]]]:
    """The activations at `hook` of every token of `stories` but the start tokens, and
    their labels: ((n, width) float32, {variable: [value or None] * n})."""
    device = model_device(model, device)
    n_ctx = model.cfg.n_ctx
    pieces: list[tuple[list[int], int]] = []  # (window tokens, first kept position in it)
    labels: dict[str, list] = {}
    for story in stories:
        ids = [tokenizer.start_id] + list(tokenizer.encode(story.text))
        offsets = [(0, 0)] + [tuple(o) for o in tokenizer.offsets(story.text)]
        if len(offsets) != len(ids):
            raise ValueError("the tokenizer's offsets do not line up with its tokens")
        for variable, values in token_labels(story, offsets).items():
            labels.setdefault(variable, []).extend(values[1:])  # drop the start token
        for start, kept in context_windows(len(ids), n_ctx):
            # positions of this window that are read from it (never the start token)
            pieces.append((ids[start : start + n_ctx], 1 if start == 0 else kept - start))
    rows = []
    for a in range(0, len(pieces), batch_size):
        batch = pieces[a : a + batch_size]
        # pad on the right: causal attention never lets padding reach earlier positions
        tokens = torch.full((len(batch), n_ctx), tokenizer.start_id, dtype=torch.long)
        for i, (ids, _) in enumerate(batch):
            tokens[i, : len(ids)] = torch.tensor(ids)
        length = max(len(ids) for ids, _ in batch)
        _, cache = model.run_with_cache(tokens[:, :length].to(device), names=hook,
                                        stop_at_layer="auto")
        act = cache[hook].flatten(2).float()
        rows += [act[i, kept : len(ids)] for i, (ids, kept) in enumerate(batch)]
    acts = torch.cat(rows)
    assert all(len(v) == len(acts) for v in labels.values()), "labels and tokens out of step"
    return acts, labels


# --- the entry point ---------------------------------------------------------------------------

@torch.no_grad()
def ground_truth_recovery(model, sae: SparseAutoencoder, tokenizer, cfg: EvalConfig,
                          data_seed: int, first_index: int, *,
                          device: str | torch.device | None = None,
                          min_positives: int = MIN_POSITIVES) -> dict:
    """Score the SAE's latents (and the PCA and random baselines) against storyworld's
    labels on `cfg.ground_truth_stories` stories of seed `data_seed` from `first_index`.

    Returns {"rows": [{"variable", "positives", "sae": {"auroc", "f1", "latent"},
    "pca": {..., "sign"}, "random": {..., "sign"}}, ...], "mean": {"sae", "pca",
    "random"} (AUROC averaged over the rows), "mean_f1": {...}, "n_tokens", "n_stories",
    "first_index", "data_seed", "hook", "coefficients" (the baselines' c), "skipped"
    (variables with too few positives or negatives)}."""
    device = model_device(model, device)
    model_device(sae, device)  # the SAE must sit with the model; neither is moved here
    stories = list(generate_stories(cfg.ground_truth_stories, seed=data_seed, start=first_index))
    with _eval_mode(model, sae):
        acts, labels = story_activations(model, sae.cfg.hook_in, tokenizer, stories,
                                         batch_size=cfg.batch_size, device=device)
        latents = SparseScores.concat([sae.encode(chunk) for chunk in acts.split(CHUNK)])
    c = max(1, min(round(len(latents.values) / len(acts)), acts.shape[1]))  # mean L0
    random = RandomDictionary(acts, acts, sae.d_sae, c, same_space=True)
    scores = {
        "sae": latents,
        "pca": SparseScores.from_dense(LinearBaseline(acts, acts, c, same_space=True).scores(acts)),
        "random": SparseScores.concat([random.encode(chunk) for chunk in acts.split(CHUNK)]),
    }
    rows, skipped = [], []
    for name, target in binary_targets(labels).items():
        positives = int(target.sum())
        if min(positives, len(target) - positives) < min_positives:
            skipped.append(name)
            continue
        y = torch.from_numpy(target).to(acts.device)
        row = {"variable": name, "positives": positives}
        for kind, s in scores.items():
            best = best_latent(s, y, both_signs=kind != "sae")
            if kind == "sae":
                del best["sign"]
            row[kind] = best
        rows.append(row)
    kinds = list(scores)
    return {
        "rows": rows,
        "mean": {k: float(np.mean([r[k]["auroc"] for r in rows])) if rows else None for k in kinds},
        "mean_f1": {k: float(np.mean([r[k]["f1"] for r in rows])) if rows else None for k in kinds},
        "n_tokens": len(acts), "n_stories": len(stories), "first_index": first_index,
        "data_seed": data_seed, "hook": sae.cfg.hook_in, "coefficients": c, "skipped": skipped,
    }


__all__ = [
    "MIN_POSITIVES",
    "SparseScores",
    "auroc",
    "best_f1",
    "best_latent",
    "binary_targets",
    "context_windows",
    "ground_truth_recovery",
    "story_activations",
]
