"""Notebook 05's exercises: fraction of variance explained, CE loss recovered, and AUROC
with ties.

    05.fve                1 - SSE / SST, SST around each channel's mean       difficulty 1
    05.ce_loss_recovered  (CE_zero - CE_spliced) / (CE_zero - CE_clean)       difficulty 1
    05.auroc              per latent, ties counting half                      difficulty 3

References: `evaluate.metrics.fve` (the tally `evaluate` uses), `evaluate.metrics.
ce_loss_recovered`, `evaluate.groundtruth.auroc` (dense scores).
"""

from __future__ import annotations

import numpy as np
import torch

from ..evaluate.groundtruth import auroc
from ..evaluate.metrics import ce_loss_recovered, fve
from ._mistakes import as_array, like, safely
from .checker import Case, Exercise, Hint, register

# --- 05.fve ----------------------------------------------------------------------------------


def _fve_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    offsets = torch.tensor([5.0, -3.0, 0.5, 10.0, -8.0, 2.0])
    scales = torch.tensor([1.0, 3.0, 0.2, 2.0, 0.5, 1.5])
    y = torch.randn(300, 6, generator=g) * scales + offsets
    y_hat = y + 0.5 * torch.randn(300, 6, generator=g) * scales
    y2 = torch.randn(40, 4, generator=g) * 2 + 1
    return [
        Case("channels with different means and scales", (y_hat, y)),
        Case("a perfect reconstruction", (y2.clone(), y2)),
        Case("predicting each channel's mean", (y.mean(0).expand_as(y).clone(), y)),
        Case("a worse-than-the-mean reconstruction", (-y2, y2)),
        Case("a target that does not vary", (torch.randn(10, 3, generator=g), torch.ones(10, 3))),
    ]


def _sse(case: Case) -> np.ndarray:
    y_hat, y = (as_array(a) for a in case.args)
    return ((y - y_hat) ** 2).sum(0)


def _y(case: Case) -> np.ndarray:
    return as_array(case.args[1])


FVE_HINTS = (
    Hint(safely(lambda case, expected, got: like(
        got, 1 - _sse(case).sum() / (_y(case) ** 2).sum())),
         "FVE is measured around each channel's mean: did you subtract it? SST is "
         "sum (y - y.mean(0))^2, not sum y^2"),
    Hint(safely(lambda case, expected, got: like(
        got, 1 - _sse(case).sum() / ((_y(case) - _y(case).mean()) ** 2).sum())),
         "subtract each channel's own mean (y.mean(0)), not one mean over every value"),
    Hint(safely(lambda case, expected, got: like(
        got, np.mean(1 - _sse(case) / ((_y(case) - _y(case).mean(0)) ** 2).sum(0)))),
         "you averaged each channel's FVE; pool SSE and SST over all channels first, then "
         "divide once (a channel with little variance would otherwise count as much as the rest)"),
    Hint(safely(lambda case, expected, got: expected is not None and like(got, 1 - expected)),
         "that is the fraction *unexplained* (the normalised MSE, SSE / SST); FVE is 1 minus it"),
    Hint(safely(lambda case, expected, got: expected is None and got is not None),
         "a target that does not vary has no variance to explain: return None (SST = 0)"),
)


register(Exercise(name="05.fve", reference=fve, cases=_fve_cases, hints=FVE_HINTS, atol=1e-5))

# --- 05.ce_loss_recovered ------------------------------------------------------------------


def _ce_cases() -> list[Case]:
    return [
        Case("a good SAE (CE clean 1.9, spliced 2.1, zero ablation 4.0)", (2.1, 4.0, 1.9)),
        Case("as good as the clean model", (1.5, 3.0, 1.5)),
        Case("no better than ablating", (3.2, 3.2, 2.0)),
        Case("worse than ablating", (5.0, 4.0, 2.0)),
        Case("an ablation that costs nothing", (2.4, 2.0, 2.0)),
    ]


CE_HINTS = (
    Hint(safely(lambda case, expected, got: expected not in (None, 0.0)
                and like(got, 1 / expected)),
         "ratio inverted: the numerator is what splicing wins back, CE_ablated - CE_spliced; "
         "the denominator what ablating costs, CE_ablated - CE_clean"),
    Hint(safely(lambda case, expected, got: expected is not None and like(got, 1 - expected)),
         "zero ablation and clean swapped: (CE_clean - CE_spliced) / (CE_clean - CE_ablated) "
         "is the share of the loss *lost*, 1 - recovered"),
    Hint(safely(lambda case, expected, got: expected is not None and like(got, -expected)),
         "the sign is flipped: a spliced CE close to the clean one must give close to +1"),
    Hint(safely(lambda case, expected, got: expected is None and got is not None),
         "when the ablation costs nothing (CE_ablated == CE_clean) the ratio is undefined: "
         "return None rather than dividing by zero"),
)

register(Exercise(name="05.ce_loss_recovered", reference=ce_loss_recovered, cases=_ce_cases,
                  hints=CE_HINTS))

# --- 05.auroc ----------------------------------------------------------------------------------


def _auroc_cases() -> list[Case]:
    g = torch.Generator().manual_seed(50)
    labels = torch.rand(200, generator=g) < 0.3
    signal = labels.float()[:, None] * torch.tensor([0.0, 0.5, 1.0, 2.0])
    continuous = torch.randn(200, 4, generator=g) + signal
    sparse = torch.relu(torch.randn(200, 4, generator=g) - 1.0 + signal)  # mostly 0: ties
    ints = torch.randint(0, 3, (200, 4), generator=g).float() + signal.round()
    small_labels = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    never = torch.stack([torch.zeros(6), torch.tensor([3.0, 1.0, 2.0, 0.0, 0.5, 4.0])], 1)
    return [
        Case("continuous scores, no ties", (continuous, labels)),
        Case("sparse latents: most scores tie at 0", (sparse, labels)),
        Case("integer scores, many ties", (ints, labels)),
        Case("a latent that never fires, and a perfect one", (never, small_labels)),
    ]


def _pairwise(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(P(positive > negative), P(positive == negative)) per column."""
    s, y = as_array(scores), as_array(labels).astype(bool)
    pos, neg = s[y], s[~y]  # (P, L), (N, L)
    diff = pos[:, None, :] - neg[None, :, :]
    return (diff > 0).mean((0, 1)), (diff == 0).mean((0, 1))


AUROC_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _pairwise(*case.args)[0])),
         "ties not counted as half: a positive and a negative with equal scores count 1/2 "
         "(give tied scores the average of their ranks)"),
    Hint(safely(lambda case, expected, got: like(got, sum(_pairwise(*case.args)))),
         "ties counted as a win: a positive and a negative with equal scores count 1/2, "
         "not 1 (give tied scores the average of their ranks)"),
    Hint(safely(lambda case, expected, got: like(got, 1 - expected)),
         "your AUROC is 1 - AUROC: it is the chance that a random positive scores *above* "
         "a random negative (sum the positives' ranks, not the negatives')"),
    Hint(safely(lambda case, expected, got: as_array(got).shape != tuple(expected.shape)),
         "return one AUROC per latent (column): shape (n_latents,)"),
)

register(Exercise(name="05.auroc", reference=auroc, cases=_auroc_cases, hints=AUROC_HINTS))
