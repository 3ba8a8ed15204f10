"""Notebook 09's exercises: each reference passes its own check, and each mistake a hint
names fails with that hint."""

import re

import pytest
import torch
import torch.nn.functional as F

import tinycourse.exercises.capabilities  # noqa: F401  registers 09's exercises
from tinycourse.exercises.checker import check
from tinycourse.interpret.capabilities import answer_logprob, logit_difference, token_rank


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)


def test_the_references_on_known_values():
    logits = torch.tensor([1.0, 3.0, 3.0, -2.0])
    assert [token_rank(logits, t) for t in range(4)] == [2, 0, 0, 3]
    assert logit_difference(logits, 1, 3) == 5.0
    two = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    assert answer_logprob(two, [0, 1]) == pytest.approx(float(torch.log(torch.tensor(0.5 * 0.75))))


@pytest.mark.parametrize("name, reference", [("09.token_rank", token_rank),
                                             ("09.logit_difference", logit_difference),
                                             ("09.answer_logprob", answer_logprob)])
def test_each_reference_passes(name, reference):
    assert check(name, reference) is reference


@pytest.mark.parametrize("wrong", [
    lambda logits, token: int((logits >= logits[token]).sum()),  # counts itself and ties
    lambda logits, token: int((logits > logits[token]).sum()) + 1,  # 1-based
])
def test_rank_mistakes(wrong):
    _fails("09.token_rank", wrong, "the top choice has rank 0")


def test_rank_counted_from_below():
    _fails("09.token_rank", lambda logits, token: int((logits < logits[token]).sum()), "tokens *below* it")


def test_logit_difference_mistakes():
    _fails("09.logit_difference", lambda logits, a, w: float(logits[w] - logits[a]), "the sign is flipped")
    _fails("09.logit_difference", lambda logits, a, w: float(F.softmax(logits, -1)[a] - F.softmax(logits, -1)[w]),
           "a difference of probabilities")


def _rows(answer):
    return torch.arange(len(answer)), torch.as_tensor(answer)


def test_answer_logprob_mistakes():
    _fails("09.answer_logprob", lambda logits, answer: float(logits[_rows(answer)].sum()), "summed raw logits")
    _fails("09.answer_logprob", lambda logits, answer: float(F.log_softmax(logits, -1)[_rows(answer)].mean()),
           "averaged over the answer's tokens")
    _fails("09.answer_logprob", lambda logits, answer: float(F.softmax(logits, -1)[_rows(answer)].sum()),
           "summed probabilities")
