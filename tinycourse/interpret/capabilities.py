"""Scoring capabilities: how well a model continues each (prompt, answer) task item.

Per item, with the model reading [start] + prompt and then, teacher-forced, the answer:

    logprob      log P(answer | prompt): the sum over the answer's tokens (nats)
    prob         exp(logprob)
    rank         rank of the answer's first token among all tokens at the prompt's last
                 position (0 = the model's top choice)
    top1         every answer token is the model's top choice given what comes before it
                 (greedy decoding would write the answer)
    logit_diff   logit(answer) - logit(wrong) at the first token where the two differ,
                 both teacher-forced up to there; the measure of the indirect-object
                 literature (Wang et al. 2022). None where an item has no wrong answer.
    logprob_diff log P(answer) - log P(wrong): the same comparison over whole answers

The answer's tokens are what the model's own tokenizer makes of prompt + answer past the
prompt's tokens, so a tokenizer that merges across the boundary is still scored on the
text the item means (falling back to tokenizing the answer alone when the prompt's tokens
are not a prefix). Prompts longer than the context keep their last tokens.

Per capability (`summarize`): mean and median probability, mean log-probability, top-1
accuracy, median rank, mean logit difference and the share of items where it is positive,
each mean with a seeded bootstrap 95% interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..corpus.tasks import CAPABILITIES, DATA_DIR, TaskItem, read_items
from ..lm.model import eval_mode, model_device


@dataclass(frozen=True)
class ItemScore:
    capability: str
    prompt: str
    answer: str
    logprob: float
    prob: float
    rank: int
    top1: bool
    logit_diff: float | None
    logprob_diff: float | None
    answer_tokens: int  # tokens scored (one more when the answer merges with the prompt's end)
    truncated: bool  # the prompt lost its first tokens to fit the context


class AnswerTooLong(ValueError):
    """An item's answer (with the start token) needs more positions than the model has."""


def load_suite(path: str | Path | None = None, kind: str = "storyworld") -> list[TaskItem]:
    """Every item of a suite folder (one .jsonl per capability) or of one .jsonl file.
    Default: the course's `data/tasks/<kind>/` (kind: storyworld or tinystories)."""
    path = Path(path) if path is not None else DATA_DIR / kind
    if not path.exists():
        raise FileNotFoundError(
            f"no task suite at {path}: pass a folder of <capability>.jsonl files or one file "
            f"(the course ships data/tasks/storyworld and data/tasks/tinystories)")
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path} holds no .jsonl task files")
    return [item for file in files for item in read_items(file)]


def answer_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of prompt + answer under `tokenizer`, split at the
    last token the text shares with the prompt alone. Usually that is the prompt's end;
    where a tokenizer merges across it (`,` + `"` is one token `,"`), the continuation
    starts a token early and also holds the prompt's last piece: the model is then scored
    on the text it would really write, not on a token sequence it never sees."""
    whole = tokenizer.encode(prompt + answer)
    prompt_ids = tokenizer.encode(prompt) if prompt else []
    shared = 0
    while shared < min(len(prompt_ids), len(whole) - 1) and prompt_ids[shared] == whole[shared]:
        shared += 1
    return whole[:shared], whole[shared:]


@torch.no_grad()
def _logits(model, sequences: list[list[int]]) -> list[torch.Tensor]:
    """For each token list, the logits (len - 1, d_vocab) predicting tokens 1.. of it."""
    width = max(len(s) for s in sequences)
    batch = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        batch[row, :len(seq)] = torch.tensor(seq)
    logits = model(batch.to(model_device(model))).float().cpu()  # right padding: causal, harmless
    return [logits[row, :len(seq) - 1] for row, seq in enumerate(sequences)]


@dataclass
class _Job:
    item: TaskItem
    answer: list[int]  # the whole sequence: [start] + context + continuation
    answer_from: int  # where the continuation starts
    wrong: list[int] | None
    wrong_from: int
    truncated: bool


def _job(item: TaskItem, tokenizer, start: int, n_ctx: int) -> _Job:
    context, continuation = answer_ids(tokenizer, item.prompt, item.answer)
    answer, answer_from = [start] + context + continuation, 1 + len(context)
    wrong, wrong_from = None, 0
    if item.wrong:
        context_w, continuation_w = answer_ids(tokenizer, item.prompt, item.wrong)
        wrong, wrong_from = [start] + context_w + continuation_w, 1 + len(context_w)
    # too long for the context: drop the same prompt tokens from both, keep the start token
    drop = max(len(answer), len(wrong or [])) - n_ctx
    if drop > 0:
        if drop >= min(answer_from, wrong_from or answer_from) - 1:
            raise AnswerTooLong(f"the answer {item.answer[:30]!r} after {item.prompt[-30:]!r} needs more "
                                f"than the model's n_ctx={n_ctx} positions: shorten it or use fits() to skip it")
        answer, answer_from = [start] + answer[1 + drop:], answer_from - drop
        if wrong is not None:
            wrong, wrong_from = [start] + wrong[1 + drop:], wrong_from - drop
    return _Job(item, answer, answer_from, wrong, wrong_from, drop > 0)


def answer_logprob(logits: torch.Tensor, answer: Sequence[int]) -> float:
    """log P(answer) from `logits` (len(answer), d_vocab), row i predicting answer[i]
    (teacher-forced): the sum of each token's log-softmax."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return float(logprobs[torch.arange(len(answer)), torch.as_tensor(answer)].sum())


def token_rank(logits: torch.Tensor, token: int) -> int:
    """How many tokens have a strictly higher logit than `token` (0 = the top choice; a
    tie does not push it down). logits (d_vocab,)."""
    return int((logits > logits[token]).sum())


def logit_difference(logits: torch.Tensor, answer: int, wrong: int) -> float:
    """logit[answer] - logit[wrong] at one position, logits (d_vocab,): the same as the
    difference of their log-probabilities, since the softmax's normaliser cancels."""
    return float(logits[answer] - logits[wrong])


def _sequence_logprob(logits: torch.Tensor, seq: list[int], start: int) -> float:
    """log P(seq[start:] | seq[:start]) from `logits` (len(seq) - 1, d_vocab)."""
    return answer_logprob(logits[start - 1:], seq[start:])


def fits(item: TaskItem, tokenizer, n_ctx: int) -> bool:
    """Whether `score_tasks` can score `item` in a context of `n_ctx` (its prompt may be cut)."""
    try:
        _job(item, tokenizer, 0, n_ctx)
    except AnswerTooLong:
        return False
    return True


@torch.no_grad()
def score_tasks(model, tokenizer, suite: Sequence[TaskItem], *, start_id: int | None = None,
                batch_size: int = 32) -> list[ItemScore]:
    """Score every item of `suite` (see the module docstring), in order. `start_id`
    (default: the tokenizer's) begins every prompt, as it begins every story in training.
    An item whose answer alone overflows the context raises `AnswerTooLong`; filter a suite
    with `fits` first to score what fits."""
    start = tokenizer.start_id if start_id is None else start_id
    return _score_jobs(model, [_job(item, tokenizer, start, model.cfg.n_ctx) for item in suite], batch_size)


@torch.no_grad()
def _score_jobs(model, jobs: Sequence[_Job], batch_size: int = 32) -> list[ItemScore]:
    """`score_tasks` on items already tokenized (`_job`), so several models (a run's
    snapshots) can share one tokenization."""
    sequences = [seq for job in jobs for seq in (job.answer, job.wrong) if seq is not None]
    with eval_mode(model):
        logits = []
        for i in range(0, len(sequences), batch_size):
            logits += _logits(model, sequences[i:i + batch_size])
    scores, k = [], 0
    for job in jobs:
        seq, at, answer_logits = job.answer, job.answer_from, logits[k]
        k += 1
        logprob = _sequence_logprob(answer_logits, seq, at)
        rank = token_rank(answer_logits[at - 1], seq[at])
        top1 = bool((answer_logits[at - 1:].argmax(-1) == torch.tensor(seq[at:])).all())
        logit_diff = logprob_diff = None
        if job.wrong is not None:
            wrong_logits = logits[k]
            k += 1
            logprob_diff = logprob - _sequence_logprob(wrong_logits, job.wrong, job.wrong_from)
            # the first token where the two texts differ; before it both read the same
            split = next((j for j, (a, w) in enumerate(zip(seq, job.wrong)) if a != w), None)
            if split is not None:
                logit_diff = logit_difference(answer_logits[split - 1], seq[split], job.wrong[split])
        scores.append(ItemScore(job.item.capability, job.item.prompt, job.item.answer, logprob,
                                math.exp(logprob), rank, top1, logit_diff, logprob_diff,
                                len(seq) - at, job.truncated))
    return scores


def bootstrap_interval(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (seeded, so reproducible)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def summarize(scores: Sequence[ItemScore], *, seed: int = 0) -> dict[str, dict]:
    """Per capability (in CAPABILITIES order, then any others): n, mean/median probability,
    mean log-probability, top-1 accuracy, median rank, mean logit difference and share
    positive, with bootstrap 95% intervals ("*_ci") for the means."""
    groups: dict[str, list[ItemScore]] = defaultdict(list)
    for score in scores:
        groups[score.capability].append(score)
    order = [c for c in CAPABILITIES if c in groups] + sorted(set(groups) - set(CAPABILITIES))
    table = {}
    for capability in order:
        group = groups[capability]
        probs = [s.prob for s in group]
        top1 = [float(s.top1) for s in group]
        diffs = [s.logit_diff for s in group if s.logit_diff is not None]
        row = {
            "n": len(group),
            "mean_prob": float(np.mean(probs)), "mean_prob_ci": bootstrap_interval(probs, seed=seed),
            "median_prob": float(np.median(probs)),
            "mean_logprob": float(np.mean([s.logprob for s in group])),
            "top1": float(np.mean(top1)), "top1_ci": bootstrap_interval(top1, seed=seed),
            "median_rank": float(np.median([s.rank for s in group])),
            "n_logit_diff": len(diffs),
            "mean_logit_diff": float(np.mean(diffs)) if diffs else None,
            "mean_logit_diff_ci": bootstrap_interval(diffs, seed=seed) if diffs else None,
            "logit_diff_positive": float(np.mean([d > 0 for d in diffs])) if diffs else None,
        }
        table[capability] = row
    return table


def shipped_suites() -> dict[str, list[TaskItem]]:
    """The course's suites present in data/tasks/: {"storyworld": items, "tinystories": items}."""
    return {kind: load_suite(kind=kind) for kind in ("storyworld", "tinystories")
            if (DATA_DIR / kind).is_dir() and any((DATA_DIR / kind).glob("*.jsonl"))}


def emergence(snapshots, tokenizer, suites: dict[str, Sequence[TaskItem]], *, progress=None) -> list[dict]:
    """Each capability's mean log-probability, top-1 accuracy and mean logit difference at
    each `lm.snapshots.Snapshot`, in training order: [{"step", "tokens", <suite>: {<capability>:
    {...}}}]: capability against training tokens, to draw beside head formation."""
    rows, jobs = [], None
    snapshots = sorted(snapshots, key=lambda s: s.step)
    for snapshot in (progress(snapshots) if progress else snapshots):
        model = snapshot.load()
        if jobs is None:  # tokenized once: every snapshot has the same tokenizer and context
            jobs = {kind: [_job(i, tokenizer, tokenizer.start_id, model.cfg.n_ctx) for i in items]
                    for kind, items in suites.items()}
        row = {"step": snapshot.step, "tokens": snapshot.tokens}
        for kind in suites:
            table = summarize(_score_jobs(model, jobs[kind]))
            row[kind] = {c: {"mean_logprob": r["mean_logprob"], "top1": r["top1"],
                             "mean_logit_diff": r["mean_logit_diff"]} for c, r in table.items()}
        rows.append(row)
    return rows


def scores_records(scores: Sequence[ItemScore]) -> list[dict]:
    return [asdict(s) for s in scores]


__all__ = ["ItemScore", "load_suite", "answer_ids", "answer_logprob", "token_rank",
           "logit_difference", "score_tasks", "bootstrap_interval",
           "AnswerTooLong", "fits", "summarize", "shipped_suites", "emergence", "scores_records"]
