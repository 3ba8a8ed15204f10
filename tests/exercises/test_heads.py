"""Notebook 07's exercises: each reference passes its own check, and each mistake a hint
names fails with that hint."""

import re

import pytest
import torch

import tinycourse.exercises.heads as ex
from tinycourse.interpret import heads as H
from tinycourse.exercises.checker import check
from tinycourse.interpret.heads import key_masks


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)


@pytest.mark.parametrize("name, reference", [("07.previous_token_score", H.previous_token_score),
                                             ("07.induction_score", H.induction_score),
                                             ("07.k_composition", H.k_composition)])
def test_each_reference_passes(name, reference):
    assert check(name, reference) is reference


def test_the_references_on_known_values():
    assert H.previous_token_score(ex._shifted(6)).item() == pytest.approx(1.0)
    w = torch.eye(4)
    assert H.k_composition(w, w) == pytest.approx(0.5)  # |I|_F = 2: 2 / (2 x 2)


def _prev_mass(pattern):
    q = torch.arange(1, pattern.shape[-1])
    return pattern[..., q, q - 1]


def test_previous_token_mistakes():
    _fails("07.previous_token_score", lambda p: _prev_mass(p).sum((0, 2)) / (p.shape[0] * p.shape[-1]),
           "query 0 has no previous token")
    _fails("07.previous_token_score", lambda p: p.diagonal(dim1=-2, dim2=-1).mean((0, 2)), "current-token score")
    _fails("07.previous_token_score", lambda p: _prev_mass(p).sum((0, 2)), "summed, not averaged")


def _score(pattern, mask, every_query=False):
    mass = (pattern * mask[:, None]).sum(-1)
    has = torch.ones_like(mask.any(-1)) if every_query else mask.any(-1)
    return (mass * has[:, None]).sum((0, 2)) / has.sum()


def test_induction_mistakes():
    _fails("07.induction_score", lambda p, t: _score(p, key_masks(t)["duplicate_token"]), "duplicate-token score")
    _fails("07.induction_score", lambda p, t: _score(p, key_masks(t)["induction"], True),
           "averaged over every query")


def test_composition_mistakes():
    _fails("07.k_composition", lambda a, b: float(torch.linalg.matrix_norm(a @ b)
                                                  / (torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b))),
           "that is Q-composition")
    _fails("07.k_composition", lambda a, b: float(torch.linalg.matrix_norm(a @ b.T)), "not normalised")
