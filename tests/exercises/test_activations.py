"""Notebook 03's exercises: each reference passes its own check, and each mistake a hint
names fails with that hint."""

import re

import numpy as np
import pytest

import tinycourse.exercises.activations as ex
from tinycourse.exercises.checker import EXERCISES, check
from tinycourse.sae.activations import (
    explained_variance_ratio,
    norm_scale,
    norm_scale_of,
)

NAMES = ["03.norm_scale", "03.explained_variance"]


def _fails(name, fn, hint):
    with np.errstate(divide="ignore", invalid="ignore"), \
            pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)




def test_norm_scale_of_matches_norm_scale_and_fixes_the_mean_squared_norm():
    x = np.random.default_rng(0).standard_normal((100, 7)) * 4
    c = norm_scale_of(x)
    assert c == pytest.approx(norm_scale(7, float((x**2).sum(1).mean())))
    assert ((c * x) ** 2).sum(1).mean() == pytest.approx(7)


def _rows(x):
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x: float(x.shape[1] / (_rows(x) ** 2).sum(1).mean()), "the square root is missing"),
    (lambda x: float(np.sqrt(x.shape[1]) / np.linalg.norm(_rows(x), axis=1).mean()),
     "you used the mean of the norms"),
    (lambda x: float(np.sqrt((_rows(x) ** 2).sum(1).mean() / x.shape[1])), "your c is inverted"),
    (lambda x: float(np.sqrt(x.shape[1] / (_rows(x) ** 2).mean())),
     "you averaged x^2 over every value"),
    (lambda x: float(np.sqrt(1 / (_rows(x) ** 2).sum(1).mean())), "d_in is missing"),
    (lambda x: float(np.sqrt(x.shape[1] / (_rows(x) ** 2).sum(1).mean())),
     "all-zero rows have no scale to fix"),
])
def test_norm_scale_mistakes_get_their_hint(wrong, hint):
    _fails("03.norm_scale", wrong, hint)


def _svd(x, centre=True):
    x = np.asarray(x, dtype=np.float64)
    return np.linalg.svd(x - x.mean(0) if centre else x, compute_uv=False)


def _eigh_ascending(x, n_components):
    x = np.asarray(x, dtype=np.float64)
    values = np.linalg.eigvalsh(np.cov(x.T, bias=True))
    k = min(n_components, len(x), x.shape[1])
    return values[-k:] / values.sum()


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, k: ((s := _svd(x, centre=False)) ** 2 / (s**2).sum())[:k],
     "the rows were not centred"),
    (lambda x, k: ((s := _svd(x)) / s.sum())[:k], "you used the singular values themselves"),
    (lambda x, k: (v := _svd(x)[:k] ** 2) / v.sum(),
     "you divided by the variance of the top k alone"),
    (lambda x, k: np.cumsum(explained_variance_ratio(x, k)), "that is the running total"),
    (_eigh_ascending, "largest first"),
    (lambda x, k: ((s := _svd(x)) ** 2 / (s**2).sum())[:k], "return zeros, not NaN"),
    (lambda x, k: np.pad(r := explained_variance_ratio(x, k), (0, k - len(r))),
     "return k = min(n_components, n_rows, width) shares"),
])
def test_explained_variance_mistakes_get_their_hint(wrong, hint):
    _fails("03.explained_variance", wrong, hint)


def test_the_module_registers_its_exercises():
    assert set(NAMES) <= set(EXERCISES) and ex.SCALE_HINTS and ex.VARIANCE_HINTS
