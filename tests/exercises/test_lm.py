"""Notebook 02's exercises: each reference passes its own check, and each hinted mistake
fails with its hint (and only that hint)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinycourse.config import ModelConfig
from tinycourse.exercises import EXERCISES, ExerciseFailed, check
from tinycourse.lm.model import GPT, causal_mask

NAMES = [n for n in EXERCISES if n.startswith("02.")]


def test_notebook_02_has_its_exercises():
    assert set(NAMES) == {"02.causal_mask", "02.lm_loss", "02.lr_at"}



def _fails_with(name, fn, hint, case):
    with pytest.raises(ExerciseFailed) as failure:
        check(name, fn)
    message = str(failure.value)
    assert hint in message, message
    assert f"case {case!r}" in message, message
    assert message.count("hint:") == 1, message
    return message


# --- 02.causal_mask ----------------------------------------------------------------------

@pytest.mark.parametrize("fn, hint, case", [
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(), "upper- or lower-triangular",
     "five positions"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1), "keep the diagonal",
     "five positions"),
    (lambda n: ~torch.ones(n, n, dtype=torch.bool).tril(), "the complement", "five positions"),
    (lambda n: torch.ones(n, n).tril(), "return a bool tensor", "five positions"),
])
def test_causal_mask_mistakes(fn, hint, case):
    _fails_with("02.causal_mask", fn, hint, case)


def test_the_model_attends_through_causal_mask():
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, n_ctx=6, d_vocab=11)
    attn = GPT(cfg).blocks[0].attn
    assert torch.equal(attn.causal, causal_mask(6))
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False],
                                       [True, True, True]]


# --- 02.lm_loss ---------------------------------------------------------------------------

def _by_hand(logits, targets, log=torch.log_softmax, dim=-1):
    return -log(logits.float(), dim).gather(-1, targets[..., None]).mean()


def naive_softmax(logits, targets):
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    return -p.log().gather(-1, targets[..., None]).mean()


@pytest.mark.parametrize("fn, hint, case", [
    (lambda lg, t: _by_hand(lg, t) / math.log(2), "in bits", "a batch of one"),
    (lambda lg, t: _by_hand(lg, t) * t.numel(), "the sum over positions", "a batch of one"),
    (lambda lg, t: -_by_hand(lg, t), "the sign is flipped", "a batch of one"),
    (lambda lg, t: _by_hand(lg, t, log=torch.softmax), "you averaged probabilities",
     "a batch of one"),
    (lambda lg, t: _by_hand(lg, t, dim=1), "the wrong axis", "a batch of one"),
    (lambda lg, t: F.cross_entropy(lg[:, :-1].flatten(0, 1), t[:, 1:].flatten()),
     "do not shift them again", "a batch of one"),
    (lambda lg, t: F.cross_entropy(lg.transpose(1, 2), t, reduction="none"),
     "not a loss per position", "a batch of one"),
    (lambda lg, t: _by_hand(lg, t).item(), "drop the .item()", "a batch of one"),
    (naive_softmax, "exp of large logits overflows", "confident logits (scale 100)"),
])
def test_lm_loss_mistakes(fn, hint, case):
    _fails_with("02.lm_loss", fn, hint, case)


def test_lm_loss_by_hand_passes():
    assert check("02.lm_loss", _by_hand) is _by_hand


# --- 02.lr_at -----------------------------------------------------------------------------

def schedule(step, cfg, *, plus_one=1, floor=True, end_offset=1, clamp=True, cosine=True):
    if step < cfg.warmup_steps:
        return cfg.lr * (step + plus_one) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - end_offset - cfg.warmup_steps)
    progress = min(1.0, progress) if clamp else progress
    low = cfg.lr * cfg.min_lr_ratio if floor else 0.0
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cosine else 1 - progress
    return low + shape * (cfg.lr - low)


def divides_by_warmup(step, cfg):
    if step / cfg.warmup_steps < 1:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return schedule(step, cfg)


@pytest.mark.parametrize("fn, hint, case", [
    (lambda s, c: schedule(s, c, plus_one=0), "warm-up off by one", "the first step (step 0)"),
    (divides_by_warmup, "with warmup_steps = 0", "no warm-up (step 0)"),
    (lambda s, c: schedule(s, c, floor=False), "decays to 0", "early in the decay (step 30)"),
    (lambda s, c: schedule(s, c, end_offset=0), "does not reach min_lr",
     "early in the decay (step 30)"),
    (lambda s, c: schedule(s, c, clamp=False), "clamp progress at 1", "past max_steps (step 150)"),
    (lambda s, c: schedule(s, c, cosine=False), "linear decay", "early in the decay (step 30)"),
    (lambda s, c: torch.tensor(schedule(s, c)), "return a Python float", "the first step (step 0)"),
])
def test_lr_at_mistakes(fn, hint, case):
    _fails_with("02.lr_at", fn, hint, case)


def test_lr_at_off_by_one_at_the_warmup_boundary():
    def inclusive(step, cfg):  # `<=`: one warm-up step too many
        if step <= cfg.warmup_steps and cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return schedule(step, cfg)
    _fails_with("02.lr_at", inclusive, "warm-up off by one", "the first step after warm-up (step 10)")


def test_lr_at_by_hand_passes():
    assert check("02.lr_at", schedule) is schedule
