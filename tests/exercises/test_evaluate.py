"""Notebook 05's exercises: each reference passes its own check, and each mistake a hint
names fails with that hint."""

import re

import pytest
import torch

import tinycourse.exercises.evaluate  # noqa: F401  registers 05's exercises
from tinycourse.evaluate.metrics import ce_loss_recovered, fve
from tinycourse.exercises.checker import check

NAMES = ["05.fve", "05.ce_loss_recovered", "05.auroc"]


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)




def test_fve_and_ce_loss_recovered_on_known_values():
    y = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    assert fve(y.mean(0).expand_as(y), y) == pytest.approx(0.0)
    assert fve(y, y) == pytest.approx(1.0)
    assert fve(y, torch.ones(2, 2)) is None
    assert ce_loss_recovered(2.0, 4.0, 1.0) == pytest.approx(2 / 3)
    assert ce_loss_recovered(2.0, 1.0, 1.0) is None


def _fve_parts(y_hat, y):
    y_hat, y = y_hat.double(), y.double()
    return (y - y_hat).pow(2).sum(0), y


def _fve_per_channel_mean(y_hat, y):
    sse, y = _fve_parts(y_hat, y)
    return float((1 - sse / (y - y.mean(0)).pow(2).sum(0)).mean())


@pytest.mark.parametrize("wrong, hint", [
    (lambda y_hat, y: float(1 - (s := _fve_parts(y_hat, y))[0].sum() / s[1].pow(2).sum()),
     "FVE is measured around each channel's mean: did you subtract it?"),
    (lambda y_hat, y: float(1 - (s := _fve_parts(y_hat, y))[0].sum()
                            / (s[1] - s[1].mean()).pow(2).sum()),
     "not one mean over every value"),
    (_fve_per_channel_mean, "you averaged each channel's FVE"),
    (lambda y_hat, y: 1 - fve(y_hat, y) if fve(y_hat, y) is not None else None,
     "that is the fraction *unexplained*"),
    (lambda y_hat, y: fve(y_hat, y) if fve(y_hat, y) is not None else 0.0,
     "a target that does not vary has no variance to explain: return None"),
])
def test_fve_mistakes_get_their_hint(wrong, hint):
    _fails("05.fve", wrong, hint)


def _guarded(fn):
    def wrong(spliced, ablated, clean):
        return fn(spliced, ablated, clean) if ablated != clean else None
    return wrong


@pytest.mark.parametrize("wrong, hint", [
    (_guarded(lambda s, a, c: (a - c) / (a - s)), "ratio inverted"),
    (_guarded(lambda s, a, c: (c - s) / (c - a)), "zero ablation and clean swapped"),
    (_guarded(lambda s, a, c: (s - a) / (a - c)), "the sign is flipped"),
    (lambda s, a, c: (a - s) / (a - c) if a != c else 0.0,
     "when the ablation costs nothing (CE_ablated == CE_clean) the ratio is undefined"),
])
def test_ce_loss_recovered_mistakes_get_their_hint(wrong, hint):
    _fails("05.ce_loss_recovered", wrong, hint)


def _pairwise(scores, labels, tie):
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None, :] - neg[None, :, :]
    return ((diff > 0).double() + tie * (diff == 0).double()).mean((0, 1))


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, y: _pairwise(s, y, 0.0), "ties not counted as half"),
    (lambda s, y: _pairwise(s, y, 1.0), "ties counted as a win"),
    (lambda s, y: 1 - _pairwise(s, y, 0.5), "your AUROC is 1 - AUROC"),
    (lambda s, y: _pairwise(s, y, 0.5)[None], "return one AUROC per latent"),
])
def test_auroc_mistakes_get_their_hint(wrong, hint):
    _fails("05.auroc", wrong, hint)


def test_a_pairwise_auroc_with_half_ties_passes():
    assert check("05.auroc", lambda s, y: _pairwise(s, y, 0.5)) is not None
