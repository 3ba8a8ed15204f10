"""Notebook 03's exercises: the normalisation constant, and the variance held by the top
principal components.

    03.norm_scale          c with E||c x||^2 = d_in, from rows x          difficulty 1
    03.explained_variance  each top principal direction's share of the
                           total variance                                  difficulty 2

References: `sae.activations.norm_scale_of` (what the streaming source uses) and
`sae.activations.explained_variance_ratio` (what `activation_stats` reports as
`pca["explained_variance_ratio"]`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..sae.activations import explained_variance_ratio, norm_scale_of
from ._mistakes import as_array, like, safely
from .checker import Case, Exercise, Hint, register

# --- 03.norm_scale ------------------------------------------------------------------------


def _scale_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    spread = torch.randn(200, 16, generator=g) * torch.randn(200, 1, generator=g).exp()
    return [
        Case("random rows, width 16", (torch.randn(256, 16, generator=g) * 3 + 1,)),
        Case("rows whose norms differ a lot", (spread,)),
        Case("a batch of one row", (torch.randn(1, 8, generator=g) * 0.2,)),
        Case("wide rows (width 128)", (torch.randn(64, 128, generator=g) * 5,)),
        Case("all-zero rows", (torch.zeros(10, 4),)),
    ]


def _rows(case: Case) -> np.ndarray:
    return as_array(case.args[0])


def _mean_sq_norm(case: Case) -> float:
    return float((_rows(case) ** 2).sum(-1).mean())


SCALE_HINTS = (
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) > 0
                and like(got, _rows(case).shape[-1] / _mean_sq_norm(case))),
         "the square root is missing: c scales x, so c^2 E||x||^2 = d_in gives "
         "c = sqrt(d_in / E||x||^2)"),
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) > 0 and like(
        got, np.sqrt(_rows(case).shape[-1]) / np.linalg.norm(_rows(case), axis=-1).mean())),
         "you used the mean of the norms, E||x||, squared; the constant fixes the mean of the "
         "squared norms, E||x||^2 (they differ by the spread of the norms)"),
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) > 0 and like(got, 1 / expected)),
         "your c is inverted: c multiplies x, so it is sqrt(d_in / E||x||^2), not "
         "sqrt(E||x||^2 / d_in)"),
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) > 0
                and like(got, np.sqrt(_rows(case).shape[-1] / (_rows(case) ** 2).mean()))),
         "you averaged x^2 over every value, which is E||x||^2 / d_in; ||x||^2 sums a "
         "row's squares over its d_in channels, and E averages that over rows"),
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) > 0
                and like(got, np.sqrt(1 / _mean_sq_norm(case)))),
         "d_in is missing: the target is E||c x||^2 = d_in (norms about sqrt(d_in)), not 1"),
    Hint(safely(lambda case, expected, got: _mean_sq_norm(case) == 0 and not like(got, 1.0)),
         "all-zero rows have no scale to fix: return 1.0 rather than dividing by zero"),
)

register(Exercise(
    name="03.norm_scale",
    reference=norm_scale_of,
    cases=_scale_cases,
    hints=SCALE_HINTS,
    rtol=1e-4,
))

# --- 03.explained_variance ------------------------------------------------------------------


def _variance_cases() -> list[Case]:
    rng = np.random.default_rng(3)
    mixed = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12)) + 5.0
    decaying = rng.standard_normal((300, 8)) * np.geomspace(4, 0.1, 8) - 2.0
    return [
        Case("correlated rows with an offset, top 4", (mixed, 4)),
        Case("channels of decaying scale, all 8", (decaying, 8)),
        Case("more components asked for than the width", (rng.standard_normal((50, 5)), 9)),
        Case("fewer rows than channels", (rng.standard_normal((6, 10)) + 1.0, 3)),
        Case("rows that do not vary", (np.ones((20, 4)), 2)),
    ]


def _variances(x: np.ndarray, centre: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.linalg.svd(x - x.mean(0) if centre else x, compute_uv=False)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    return values[: min(k, len(values))]


def _share(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return values / values.sum()


VARIANCE_HINTS = (
    Hint(safely(lambda case, expected, got: like(
        got, _top(_share(_variances(case.args[0], centre=False) ** 2), case.args[1]))),
         "the rows were not centred: principal components are directions of variance "
         "around the mean, so subtract x.mean(0) first (an offset otherwise takes the "
         "first component)"),
    Hint(safely(lambda case, expected, got: like(
        got, _top(_share(_variances(case.args[0], centre=True)), case.args[1]))),
         "you used the singular values themselves; the variance along a direction is the "
         "singular value squared"),
    Hint(safely(lambda case, expected, got: like(
        got, _share(_top(_variances(case.args[0], centre=True) ** 2, case.args[1])))),
         "you divided by the variance of the top k alone (so the shares sum to 1); divide "
         "by the total variance, over every direction"),
    Hint(safely(lambda case, expected, got: len(expected) > 1 and like(got, np.cumsum(expected))),
         "that is the running total (np.cumsum); return each component's own share"),
    Hint(safely(lambda case, expected, got: len(expected) > 1 and like(got, expected[::-1])),
         "largest first: np.linalg.eigh returns eigenvalues in ascending order"),
    Hint(safely(lambda case, expected, got: not np.any(expected) and not like(got, expected)),
         "rows that do not vary have no variance to share out: return zeros, not NaN"),
    Hint(safely(lambda case, expected, got: as_array(got).shape != expected.shape),
         "return k = min(n_components, n_rows, width) shares: there are no more directions "
         "than that"),
)

register(Exercise(
    name="03.explained_variance",
    reference=explained_variance_ratio,
    cases=_variance_cases,
    hints=VARIANCE_HINTS,
    rtol=1e-5,
    atol=1e-8,
))
