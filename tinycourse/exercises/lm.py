"""Notebook 02's exercises: the causal mask, the next-token loss, the learning-rate schedule.

- `02.causal_mask` (1): which keys each query may attend to (`lm.model.causal_mask`);
- `02.lm_loss` (2): mean next-token cross-entropy in nats, by hand (`lm.train.lm_loss`);
- `02.lr_at` (2): linear warm-up then cosine decay to min_lr (`lm.train.lr_at`).
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig
from ..lm.model import causal_mask
from ..lm.train import lm_loss, lr_at
from .checker import Case, Exercise, Hint, register


def _bool_square(got, expected) -> bool:
    return (isinstance(got, torch.Tensor) and got.dtype == torch.bool
            and got.shape == expected.shape)


# --- 02.causal_mask ----------------------------------------------------------------------

def _mask_cases() -> list[Case]:
    return [Case("five positions", (5,)), Case("a single position", (1,)),
            Case("two positions", (2,)), Case("sixteen positions", (16,))]


def _inverted(case: Case, expected, got) -> bool:
    return _bool_square(got, expected) and torch.equal(got, ~expected)


register(Exercise(
    name="02.causal_mask",
    reference=causal_mask,
    cases=_mask_cases,
    hints=(
        Hint(lambda case, expected, got: _bool_square(got, expected)
             and bool((got & ~expected).any()) and not _inverted(case, expected, got),
             "a position can see a later one (e.g. position 0 sees position 1): is your mask "
             "upper- or lower-triangular? Query i (row) may see key j (column) only when "
             "j <= i: `tril`, not `triu`."),
        Hint(lambda case, expected, got: _bool_square(got, expected)
             and torch.equal(got, expected.tril(-1)),
             "a position must see itself: keep the diagonal (`tril()`, not `tril(-1)`)."),
        Hint(_inverted,
             "your mask is the complement: here True means 'may attend' (what the pattern "
             "keeps), not 'hidden' (what masked_fill fills); negate it."),
        Hint(lambda case, expected, got: isinstance(got, torch.Tensor)
             and got.dtype != torch.bool,
             "return a bool tensor (dtype=torch.bool), True where attention is allowed; a "
             "float mask of 0 and -inf, added to the scores, is another convention."),
    ),
))


# --- 02.lm_loss ---------------------------------------------------------------------------

def _loss_cases() -> list[Case]:
    def case(label: str, batch: int, pos: int, vocab: int, scale: float, seed: int) -> Case:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, pos, vocab, generator=g) * scale
        targets = torch.randint(0, vocab, (batch, pos), generator=g)
        return Case(label, (logits, targets))

    return [
        case("a batch of one", 1, 5, 11, 1.0, 1),
        case("a batch (seeded)", 4, 8, 13, 2.0, 2),
        case("one position per sequence", 3, 1, 7, 1.0, 3),
        case("uniform logits: the loss is ln(d_vocab)", 2, 4, 10, 0.0, 4),
        case("confident logits (scale 100)", 2, 6, 9, 100.0, 5),
    ]


def _nll(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -log_probs.gather(-1, targets[..., None]).mean()


def _near(got, value) -> bool:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    value = float(value)
    return isinstance(got, float) and math.isfinite(got) and math.isclose(
        got, value, rel_tol=1e-4, abs_tol=1e-6)


def _reshifted(case: Case, expected, got) -> bool:
    logits, targets = case.args
    return targets.shape[1] > 1 and _near(got, lm_loss(logits[:, :-1], targets[:, 1:]))


register(Exercise(
    name="02.lm_loss",
    reference=lm_loss,
    cases=_loss_cases,
    rtol=1e-4, atol=1e-5,  # float32 log-softmax of logits up to ~300
    hints=(
        Hint(lambda case, expected, got: _near(got, expected / math.log(2)),
             "that is the loss in bits: use the natural log (nats), torch.log / log_softmax, "
             "not log2."),
        Hint(lambda case, expected, got: _near(got, expected * case.args[1].numel()),
             "that is the sum over positions: take the mean over every position of every "
             "sequence."),
        Hint(lambda case, expected, got: _near(got, -expected),
             "the sign is flipped: the loss is minus the mean log-probability of the target."),
        Hint(lambda case, expected, got: _near(
                 got, -case.args[0].softmax(-1).gather(-1, case.args[1][..., None]).mean()),
             "you averaged probabilities: take the log of the target's probability "
             "(log_softmax) before averaging."),
        Hint(lambda case, expected, got: _near(
                 got, _nll(case.args[0].log_softmax(1), case.args[1])),
             "the softmax runs over the wrong axis: normalise over the vocabulary (the last "
             "dimension, dim=-1), not over positions."),
        Hint(_reshifted,
             "the targets are already the next tokens (training passes tokens[:, 1:] as "
             "targets for logits of tokens[:, :-1]): do not shift them again."),
        Hint(lambda case, expected, got: isinstance(got, torch.Tensor) and got.ndim > 0,
             "return one number, a 0-dim tensor: the mean over batch and positions, not a "
             "loss per position."),
        Hint(lambda case, expected, got: isinstance(got, (float, int)),
             "return a 0-dim torch tensor (training calls .backward() on it), not a Python "
             "number: drop the .item()."),
        Hint(lambda case, expected, got: isinstance(got, torch.Tensor) and got.numel() == 1
             and not bool(torch.isfinite(got).all()),
             "inf or nan: exp of large logits overflows. Subtract each row's max before "
             "exponentiating (logsumexp), or use log_softmax."),
    ),
))


# --- 02.lr_at -----------------------------------------------------------------------------

SCHEDULE = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
NO_WARMUP = TrainConfig(max_steps=50, warmup_steps=0, lr=3e-3, min_lr_ratio=0.1)
OTHER = TrainConfig(max_steps=20, warmup_steps=5, lr=1e-2, min_lr_ratio=0.5)


def _lr_cases() -> list[Case]:
    return [
        Case("the first step (step 0)", (0, SCHEDULE)),
        Case("in the warm-up (step 4)", (4, SCHEDULE)),
        Case("the last warm-up step (step 9)", (9, SCHEDULE)),
        Case("the first step after warm-up (step 10)", (10, SCHEDULE)),
        Case("early in the decay (step 30)", (30, SCHEDULE)),
        Case("half-way through the decay (step 55)", (55, SCHEDULE)),
        Case("the last step (step 99)", (99, SCHEDULE)),
        Case("past max_steps (step 150)", (150, SCHEDULE)),
        Case("no warm-up (step 0)", (0, NO_WARMUP)),
        Case("no warm-up, the last step (step 49)", (49, NO_WARMUP)),
        Case("another schedule (step 12 of 20)", (12, OTHER)),
    ]


def _cosine(step: int, cfg: TrainConfig, *, floor: bool = True, end: int | None = None,
            clamp: bool = True) -> float:
    end = cfg.max_steps - 1 if end is None else end
    progress = (step - cfg.warmup_steps) / max(1, end - cfg.warmup_steps)
    progress = min(1.0, progress) if clamp else progress
    low = cfg.lr * cfg.min_lr_ratio if floor else 0.0
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - low)


def _lr_hint(variant):
    """Applies when the learner's rate matches `variant(step, cfg)` (None: not applicable)."""
    def applies(case: Case, expected, got) -> bool:
        step, cfg = case.args
        value = variant(step, cfg)
        return value is not None and isinstance(got, (int, float)) and not math.isclose(
            value, expected, rel_tol=1e-9) and math.isclose(got, value, rel_tol=1e-6)
    return applies


def _warmup_off_by_one(step: int, cfg: TrainConfig) -> float | None:
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps  # 0 at step 0
    if step == cfg.warmup_steps and cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps  # `step <= warmup_steps`
    return None


def _after_warmup(variant):
    return lambda step, cfg: variant(step, cfg) if step >= cfg.warmup_steps else None


register(Exercise(
    name="02.lr_at",
    reference=lr_at,
    cases=_lr_cases,
    rtol=1e-6, atol=1e-12,  # learning rates are ~1e-3: an absolute 1e-6 would accept anything
    hints=(
        Hint(_lr_hint(_warmup_off_by_one),
             "warm-up off by one: steps are 0-based, so step 0 already trains at "
             "lr * 1 / warmup_steps and step warmup_steps - 1 reaches lr; use "
             "lr * (step + 1) / warmup_steps while step < warmup_steps."),
        Hint(lambda case, expected, got: isinstance(got, ZeroDivisionError),
             "with warmup_steps = 0 there is no warm-up: test step < warmup_steps before "
             "dividing by warmup_steps."),
        Hint(_lr_hint(_after_warmup(lambda s, c: _cosine(s, c, floor=False))),
             "the cosine decays to 0: it must end at min_lr = lr * min_lr_ratio, "
             "min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)."),
        Hint(_lr_hint(_after_warmup(lambda s, c: _cosine(s, c, end=c.max_steps))),
             "the cosine does not reach min_lr at the last step: the last step is "
             "max_steps - 1 (0-based), so progress = (step - warmup_steps) / "
             "(max_steps - 1 - warmup_steps)."),
        Hint(_lr_hint(lambda s, c: _cosine(s, c, clamp=False) if s >= c.max_steps else None),
             "past max_steps the cosine climbs back up: clamp progress at 1, so the rate "
             "stays at min_lr."),
        Hint(_lr_hint(_after_warmup(lambda s, c: c.lr * c.min_lr_ratio + (1 - min(1.0, (
                 s - c.warmup_steps) / max(1, c.max_steps - 1 - c.warmup_steps))) * (
                 c.lr - c.lr * c.min_lr_ratio))),
             "that is a linear decay: follow half a cosine, "
             "0.5 * (1 + cos(pi * progress))."),
        Hint(lambda case, expected, got: isinstance(got, torch.Tensor),
             "return a Python float (math.cos, not torch.cos), as the optimizer's lr is."),
    ),
))
