"""Notebook 06's exercises: the feature scan's merge step, direct logit attribution, and
how well one latent detects a label.

    06.merge_top_k                 running top k per latent + a new batch -> new running
                                   top k (largest first, ties to the earliest position,
                                   only active entries)                              difficulty 2
    06.direct_logit_attribution    (center(W_dec) * ln_scale * w) @ W_U               difficulty 2
    06.detection_auroc             one score against boolean labels, ties half        difficulty 1

References: the package's own computations: `interpret.features.merge_top_k` (the
scan's `ScanState` on a running state given as plain tensors),
`interpret.logits.layernorm_logit_effects` (what
`direct_logit_attribution` computes for a LayerNorm model) and
`evaluate.groundtruth.detection_auroc`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..evaluate.groundtruth import detection_auroc
from ..interpret.features import merge_top_k, naive_top_contexts
from ..interpret.logits import layernorm_logit_effects
from ._mistakes import as_array, like, safely
from .checker import Case, Exercise, Hint, register

# --- 06.merge_top_k ---------------------------------------------------------------------------


def _running(acts: np.ndarray, positions: np.ndarray, k: int) -> tuple[Tensor, Tensor]:
    """The scan's running state after `acts` (n, d) at `positions` (n,): empty slots
    -inf at position -1, as `ScanState` keeps them."""
    values, rows = naive_top_contexts(acts, k)
    empty = rows < 0
    where = np.where(empty, -1, positions[np.clip(rows, 0, None)])
    return (torch.from_numpy(np.where(empty, -np.inf, values).astype(np.float32)),
            torch.from_numpy(where.astype(np.int64)))


def _merge_case(g: torch.Generator, label: str, old: Tensor, new: Tensor, k: int) -> Case:
    n_old, n_new = len(old), len(new)
    gaps = torch.randint(1, 4, (n_old + n_new,), generator=g)
    positions = (100 + gaps.cumsum(0)).numpy()  # increasing, with gaps: positions are not rows
    values, where = _running(old.numpy(), positions[:n_old], k)
    return Case(label, (values, where, new, torch.from_numpy(positions[n_old:].copy())))


def _merge_cases() -> list[Case]:
    g = torch.Generator().manual_seed(60)
    offset = torch.tensor([2.0, 0.3, 0.3, 0.0, 0.5, 1.0])  # latent 0 is rare: fewer than k
    acts = torch.relu(torch.randn(22, 6, generator=g) - offset)
    acts[:10, 5] += 1.0 + torch.rand(10, generator=g)  # latent 5's largest are in the state
    ints = torch.randint(0, 4, (18, 5), generator=g).float()  # values 0..3: many ties
    fresh = torch.rand(3, 4, generator=g) + 0.1
    fresh[:, 2] = 0.0  # latent 2 never fires
    empty = (torch.full((4, 5), -math.inf), torch.full((4, 5), -1, dtype=torch.int64))
    return [
        _merge_case(g, "a half-full running state and a new batch", acts[:10], acts[10:], 4),
        _merge_case(g, "ties: equal activations in the state and in the batch", ints[:8], ints[8:], 3),
        Case("an empty state, fewer tokens than k, a latent never active",
             (*empty, fresh, torch.tensor([7, 9, 12]))),
    ]


def _entries(case: Case) -> list[list[tuple[float, int]]]:
    """Per latent, every active (value, position) of the state and the batch."""
    old_v, old_p, acts, pos = (as_array(a) for a in case.args)
    out = []
    for latent in range(old_v.shape[0]):
        entries = [(v, int(p)) for v, p in zip(old_v[latent], old_p[latent]) if p >= 0 and v > 0]
        entries += [(v, int(p)) for v, p in zip(acts[:, latent], pos) if v > 0]
        out.append(entries)
    return out


def _smallest(case: Case) -> np.ndarray:
    """The values a scan keeping the k *smallest* active entries would show."""
    k = case.args[0].shape[1]
    out = np.zeros((case.args[0].shape[0], k))
    for latent, entries in enumerate(_entries(case)):
        chosen = sorted(v for v, _ in entries)[:k]
        out[latent, :len(chosen)] = sorted(chosen, reverse=True)
    return out


def _not_descending(got) -> bool:
    values = as_array(got[0])
    return bool(((values[:, 1:] > values[:, :-1]) & (values[:, 1:] > 0)).any())


def _filled(expected) -> np.ndarray:
    return as_array(expected[1]) >= 0


MERGE_HINTS = (
    Hint(safely(lambda case, expected, got: like(got[0], expected[0]) and not like(
        as_array(got[1])[_filled(expected)], as_array(expected[1])[_filled(expected)])),
         "the right values at the wrong positions: of equal activations the earliest position "
         "wins (topk breaks ties arbitrarily: sort by position first, then a stable sort by value)"),
    Hint(safely(lambda case, expected, got: bool((as_array(got[1])[~_filled(expected)] >= 0).any())),
         "you kept inactive tokens: only activations > 0 count; a latent with fewer than k "
         "active entries has empty slots, value 0 at position -1"),
    Hint(safely(lambda case, expected, got: _not_descending(got) or like(got[0], _smallest(case))),
         "the k *largest* activations, largest first (topk(largest=True) / sort(descending=True))"),
    Hint(safely(lambda case, expected, got: like(got[0], naive_top_contexts(case.args[2], expected[0].shape[1])[0])),
         "that is the new batch's top k alone: merge it with the running state (concatenate "
         "the old slots and the batch's entries, then select the k largest)"),
)

register(Exercise(name="06.merge_top_k", reference=merge_top_k, cases=_merge_cases,
                  hints=MERGE_HINTS, atol=1e-6))

# --- 06.direct_logit_attribution --------------------------------------------------------------


def _dla_cases() -> list[Case]:
    g = torch.Generator().manual_seed(61)
    w_dec = torch.randn(10, 16, generator=g) + torch.randn(10, 1, generator=g)  # rows with a mean
    w = 1 + 0.3 * torch.randn(16, generator=g)
    w_u = torch.randn(16, 40, generator=g)
    square = torch.randn(12, 12, generator=g), torch.randn(12, 12, generator=g)
    flat = torch.randn(3, 8, generator=g)
    flat[1] = 0.7  # along the all-ones direction: LayerNorm removes it
    return [
        Case("random decoder rows with nonzero means", (w_dec, w, 0.37, w_u)),
        Case("a square unembedding (d_vocab = d_model)",
             (square[0] + 0.5, 0.5 + torch.rand(12, generator=g), 2.5, square[1])),
        Case("a latent along the all-ones direction, which LayerNorm erases",
             (flat, 1 + 0.2 * torch.randn(8, generator=g), 1.6, torch.randn(8, 20, generator=g))),
    ]


def _dla(case: Case, *, centre=True, weight=True, scale=True, transpose=False) -> Tensor:
    w_dec, w, s, w_u = case.args
    rows = w_dec - w_dec.mean(-1, keepdim=True) if centre else w_dec
    rows = rows * (s if scale else 1.0) * (w if weight else 1.0)
    return rows @ (w_u.T if transpose else w_u)


def _shape_error(got) -> bool:
    return isinstance(got, RuntimeError) and "cannot be multiplied" in str(got)


DLA_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _dla(case, centre=False))),
         "centre each decoder row first: LayerNorm subtracts the mean over d_model "
         "(row - row.mean(-1, keepdim=True)), so a row's mean never reaches the logits"),
    Hint(safely(lambda case, expected, got: like(got, _dla(case, weight=False))),
         "the final LayerNorm also multiplies by its weight w (d_model,): scale the centred "
         "rows by w before the unembedding"),
    Hint(safely(lambda case, expected, got: like(got, _dla(case, scale=False))),
         "multiply by ln_scale: the frozen 1/std of the final residual, which LayerNorm "
         "divides by"),
    Hint(safely(lambda case, expected, got: _shape_error(got) or like(got, _dla(case, transpose=True))),
         "W_U is (d_model, d_vocab), used as rows @ W_U: no transpose (that is the "
         "nn.Linear weight's layout, model.unembed.weight)"),
)

register(Exercise(name="06.direct_logit_attribution", reference=layernorm_logit_effects,
                  cases=_dla_cases, hints=DLA_HINTS, rtol=1e-4, atol=1e-4))

# --- 06.detection_auroc -----------------------------------------------------------------------


def _auroc_cases() -> list[Case]:
    g = torch.Generator().manual_seed(62)
    labels = torch.rand(100, generator=g) < 0.4
    continuous = torch.randn(100, generator=g) + 0.8 * labels.float()
    ints = (torch.randint(0, 3, (60,), generator=g) + (torch.rand(60, generator=g) < 0.5)).float()
    int_labels = (ints + torch.randn(60, generator=g)) > 2
    return [
        Case("continuous scores, 40% positive", (continuous, labels)),
        Case("integer scores: many ties between positives and negatives", (ints, int_labels)),
        Case("all scores equal", (torch.full((8,), 0.3), torch.tensor([1, 0, 0, 1, 0, 0, 0, 1]).bool())),
    ]


def _pairs(case: Case) -> tuple[float, float]:
    """(P(positive > negative), P(positive == negative))."""
    s, y = as_array(case.args[0]), as_array(case.args[1]).astype(bool)
    diff = s[y][:, None] - s[~y][None, :]
    return float((diff > 0).mean()), float((diff == 0).mean())


def _accuracies(case: Case) -> list[float]:
    """Accuracy of `score > t` and `score >= t` at the thresholds a learner might pick."""
    s, y = as_array(case.args[0]), as_array(case.args[1]).astype(bool)
    lower_median = float(np.sort(s)[(len(s) - 1) // 2])  # torch's median
    cuts = [0.0, 0.5, float(s.mean()), float(np.median(s)), lower_median]
    return [float(((s > t) == y).mean()) for t in cuts] + [float(((s >= t) == y).mean()) for t in cuts]


AUROC_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _pairs(case)[0]) or like(got, sum(_pairs(case)))),
         "ties count half: a positive and a negative with equal scores add 1/2 (give tied "
         "scores the average of their ranks), neither 0 nor 1"),
    Hint(safely(lambda case, expected, got: like(got, 1 - expected)),
         "your AUROC is 1 - AUROC (labels inverted): it is the chance that a random positive "
         "scores *above* a random negative"),
    Hint(safely(lambda case, expected, got: any(like(got, a) for a in _accuracies(case))),
         "that is an accuracy at one threshold: AUROC needs no threshold, it compares every "
         "positive with every negative (sum the positives' ranks: (R - P(P+1)/2) / (P N))"),
)

register(Exercise(name="06.detection_auroc", reference=detection_auroc, cases=_auroc_cases,
                  hints=AUROC_HINTS, atol=1e-9))
