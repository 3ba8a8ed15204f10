"""Notebook 09's exercises: the three measures a capability is scored by.

    09.token_rank        tokens with a strictly higher logit                  difficulty 1
    09.logit_difference  logit[answer] - logit[wrong] at one position         difficulty 1
    09.answer_logprob    a multi-token answer's log-probability, teacher-forced   difficulty 2

References: `interpret.capabilities.token_rank`, `.logit_difference`, `.answer_logprob`
(what `score_tasks` computes per item).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..interpret.capabilities import answer_logprob, logit_difference, token_rank
from ._mistakes import like, safely
from .checker import Case, Exercise, Hint, register


def _logits(seed: int, *shape: int) -> torch.Tensor:
    return 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- 09.token_rank ---------------------------------------------------------------------------


def _rank_cases() -> list[Case]:
    logits = _logits(90, 50)
    order = logits.argsort(descending=True)
    tied = torch.tensor([2.0, 5.0, 5.0, 1.0, 5.0])
    return [
        Case("the model's top choice", (logits, int(order[0]))),
        Case("its fifth choice", (logits, int(order[4]))),
        Case("its last choice", (logits, int(order[-1]))),
        Case("a token tied with two others for first place", (tied, 2)),
    ]


RANK_HINTS = (
    Hint(safely(lambda case, expected, got: got != expected and (
        got == expected + 1 or got == int((case.args[0] >= case.args[0][case.args[1]]).sum()))),
         "the top choice has rank 0: count the tokens with a strictly greater logit (a token "
         "does not outrank itself, nor do tokens tied with it)"),
    Hint(safely(lambda case, expected, got: got == int((case.args[0] < case.args[0][case.args[1]]).sum())),
         "you counted the tokens *below* it: rank 0 is the highest logit, so count those above"),
)

register(Exercise(name="09.token_rank", reference=token_rank, cases=_rank_cases, hints=RANK_HINTS))

# --- 09.logit_difference -------------------------------------------------------------------


def _diff_cases() -> list[Case]:
    logits = _logits(91, 40)
    return [
        Case("the answer ahead", (logits, int(logits.argmax()), int(logits.argmin()))),
        Case("the wrong answer ahead", (logits, 3, int(logits.argmax()))),
        Case("a shifted copy of the logits (the difference must not change)", (logits + 7.0, 5, 9)),
    ]


DIFF_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, -expected)),
         "the sign is flipped: answer minus wrong, so preferring the answer gives a positive number"),
    Hint(safely(lambda case, expected, got: like(
        got, float(F.softmax(case.args[0], -1)[case.args[1]] - F.softmax(case.args[0], -1)[case.args[2]]))),
         "that is a difference of probabilities; take the logits themselves (or log-probabilities: "
         "the softmax's normaliser cancels in the difference)"),
)

register(Exercise(name="09.logit_difference", reference=logit_difference, cases=_diff_cases,
                  hints=DIFF_HINTS))

# --- 09.answer_logprob -----------------------------------------------------------------------


def _logprob_cases() -> list[Case]:
    return [
        Case("a one-token answer", (_logits(92, 1, 30), [4])),
        Case("a three-token answer", (_logits(93, 3, 30), [1, 17, 2])),
        Case("a repeated token", (_logits(94, 4, 30), [8, 8, 8, 8])),
    ]


def _rows(case: Case) -> torch.Tensor:
    logits, answer = case.args
    return torch.arange(len(answer)), torch.as_tensor(answer)


LOGPROB_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, float(case.args[0][_rows(case)].sum()))),
         "you summed raw logits: turn each row into log-probabilities first (log_softmax)"),
    Hint(safely(lambda case, expected, got: len(case.args[1]) > 1 and like(got, expected / len(case.args[1]))),
         "you averaged over the answer's tokens; the log-probability of the whole answer is their sum"),
    Hint(safely(lambda case, expected, got: like(got, float(F.softmax(case.args[0], -1)[_rows(case)].sum()))),
         "you summed probabilities; sum log-probabilities (the answer needs every token)"),
)

register(Exercise(name="09.answer_logprob", reference=answer_logprob, cases=_logprob_cases,
                  hints=LOGPROB_HINTS, atol=1e-4))
