"""Notebook 07's exercises: scoring heads from their attention patterns, and composition.

    07.previous_token_score   attention on key q - 1, averaged over queries q >= 1     difficulty 1
    07.induction_score        attention on keys after an earlier copy of the query's token,
                              averaged over the queries that have one                  difficulty 2
    07.k_composition          |W_OV^1 W_QK^2 ^T|_F / (|W_OV^1|_F |W_QK^2|_F)            difficulty 2

References: `interpret.heads.pattern_scores` (its "previous_token" and "induction"
entries) and the `interpret.heads.composition_score` as `composition_scores` applies it for K.
"""

from __future__ import annotations

import torch

from ..interpret.heads import (composition_score, induction_score, k_composition, key_masks,
                               previous_token_score)
from ._mistakes import like, safely
from .checker import Case, Exercise, Hint, register


def _patterns(seed: int, batch: int, heads: int, pos: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(batch, heads, pos, pos, generator=g)
    causal = torch.ones(pos, pos, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, -torch.inf).softmax(-1)


def _shifted(pos: int) -> torch.Tensor:
    """A perfect previous-token head: all attention on q - 1 (and on 0 at q = 0)."""
    p = torch.zeros(1, 1, pos, pos)
    p[0, 0, 0, 0] = 1
    p[0, 0, torch.arange(1, pos), torch.arange(pos - 1)] = 1
    return p


# --- 07.previous_token_score -----------------------------------------------------------------


def _prev_cases() -> list[Case]:
    return [Case("random patterns, 2 prompts x 3 heads", (_patterns(70, 2, 3, 9),)),
            Case("a perfect previous-token head", (_shifted(8),))]


def _prev_mass(pattern: torch.Tensor) -> torch.Tensor:
    q = torch.arange(1, pattern.shape[-1])
    return pattern[..., q, q - 1]  # (batch, heads, pos - 1)


PREV_HINTS = (
    Hint(safely(lambda case, expected, got: like(
        got, _prev_mass(case.args[0]).sum((0, 2)) / (case.args[0].shape[0] * case.args[0].shape[-1]))),
         "you divided by every query: query 0 has no previous token, so average over q >= 1 only"),
    Hint(safely(lambda case, expected, got: like(got, case.args[0].diagonal(dim1=-2, dim2=-1).mean((0, 2)))),
         "that is the current-token score (the diagonal, key q); the previous token is key q - 1"),
    Hint(safely(lambda case, expected, got: like(got, _prev_mass(case.args[0]).sum((0, 2)))),
         "summed, not averaged: divide by the number of queries (and prompts) counted"),
)

register(Exercise(name="07.previous_token_score", reference=previous_token_score, cases=_prev_cases,
                  hints=PREV_HINTS, atol=1e-5))

# --- 07.induction_score ----------------------------------------------------------------------


def _induction_cases() -> list[Case]:
    g = torch.Generator().manual_seed(71)
    r = torch.randint(1, 20, (2, 6), generator=g)
    repeated = torch.cat([torch.zeros(2, 1, dtype=torch.long), r, r], dim=1)  # [start] + R + R
    few = torch.randint(0, 3, (2, 10), generator=g)  # many repeats, some queries without one
    return [Case("[start] + R + R, random patterns", (_patterns(72, 2, 2, 13), repeated)),
            Case("three token ids: many earlier copies", (_patterns(73, 2, 3, 10), few))]


def _masked_mean(case: Case, mask: torch.Tensor, all_queries: bool = False) -> torch.Tensor:
    pattern, _ = case.args
    mass = (pattern * mask[:, None]).sum(-1)  # (batch, heads, q)
    has = torch.ones_like(mask.any(-1)) if all_queries else mask.any(-1)
    return (mass * has[:, None]).sum((0, 2)) / has.sum()


INDUCTION_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _masked_mean(case, key_masks(case.args[1])["duplicate_token"]))),
         "that is the duplicate-token score (keys holding the query's token); an induction head "
         "attends to the token *after* the earlier copy: key k with t[k - 1] == t[q]"),
    Hint(safely(lambda case, expected, got: like(got, _masked_mean(case, key_masks(case.args[1])["induction"], True))),
         "you averaged over every query (TransformerLens's normalisation); average only over the "
         "queries that have an earlier copy, so a perfect head scores 1 on any prompt"),
)

register(Exercise(name="07.induction_score", reference=induction_score, cases=_induction_cases,
                  hints=INDUCTION_HINTS, atol=1e-5))

# --- 07.k_composition --------------------------------------------------------------------------


def _comp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(74)
    low = lambda: torch.randn(16, 4, generator=g) @ torch.randn(4, 16, generator=g)  # noqa: E731
    a, b = low(), low()
    return [Case("two random rank-4 circuits", (a, b)),
            Case("a circuit composed with a scaled copy of its own transpose", (a, 5.0 * a.T)),
            Case("non-symmetric circuits", (a @ b, b))]


COMP_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, float(composition_score(case.args[0], case.args[1]))) and not like(got, expected)),
         "that is Q-composition (W_OV^1 W_QK^2): the key side reads W_QK's other index, so "
         "transpose W_QK (K-comp = |W_OV^1 W_QK^2 ^T|)"),
    Hint(safely(lambda case, expected, got: like(got, float(torch.linalg.matrix_norm(
        case.args[0] @ case.args[1].transpose(-2, -1))))),
         "not normalised: divide by |W_OV|_F |W_QK|_F so the score does not depend on scale"),
)

register(Exercise(name="07.k_composition", reference=k_composition, cases=_comp_cases, hints=COMP_HINTS,
                  atol=1e-5, rtol=1e-4))
