"""Head formation: how the heads and the in-context abilities change across training.

The `lm` stage keeps the weights at steps 0, 16, 32, 64, ... (`lm.snapshots`). Each
snapshot is scored the same way: every head's previous-token score on stories, every
head's induction score on [start] + R + R (`in_context.induction_probe`), and the loss on
repeated names against first mentions (`in_context.name_losses`). Drawn against training
tokens, an induction head's phase change shows as the induction score jumping while the
loss on the second R (and on repeated names) drops (Olsson et al. 2022, section 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..corpus.storyworld import Story
from .heads import head_scores
from .in_context import induction_probe, name_losses


def story_batch(tokenizer, stories: Sequence[Story], n_ctx: int) -> torch.Tensor:
    """(n_stories, L) int64: each story's start token and first tokens, all cut to the
    shortest story's length (at most n_ctx), so one batched forward scores them all."""
    rows = [[tokenizer.start_id] + list(tokenizer.encode(s.text)) for s in stories]
    length = min(n_ctx, *map(len, rows))
    return torch.tensor([row[:length] for row in rows], dtype=torch.long)


def snapshot_record(model, tokenizer, stories: Sequence[Story], story_tokens: torch.Tensor,
                    candidate_ids: Sequence[int], *, n_seqs: int = 16, length: int = 40) -> dict:
    """One model's row of the formation table: per-head previous-token (stories) and
    induction ([start] + R + R) scores as (n_layers, n_heads) lists, their maxima, the two
    copy losses and the name losses."""
    start_id = tokenizer.start_id
    previous = head_scores(model, story_tokens, start_id=start_id)["previous_token"]
    probe = induction_probe(model, candidate_ids, start_id=start_id, n_seqs=n_seqs,
                            length=length)
    names = name_losses(model, tokenizer, stories)
    return {
        "previous_token": previous.tolist(), "best_previous_token": float(previous.max()),
        "induction": probe["induction"], "best_induction": probe["best_induction"],
        "first_copy_loss": probe["first_copy_loss"], "second_copy_loss": probe["second_copy_loss"],
        "name_repeat_loss": names["name_repeat"]["loss"], "name_first_loss": names["name_first"]["loss"],
    }


def head_formation(snapshots, tokenizer, stories: Sequence[Story], candidate_ids: Sequence[int],
                   *, n_seqs: int = 16, length: int = 40, progress=None) -> list[dict]:
    """`snapshot_record` of each `lm.snapshots.Snapshot`, with its step and tokens, in
    training order. `progress` wraps the iteration (e.g. tqdm)."""
    snapshots = sorted(snapshots, key=lambda s: s.step)
    rows, batch = [], None
    for snapshot in (progress(snapshots) if progress else snapshots):
        model = snapshot.load()
        if batch is None:
            batch = story_batch(tokenizer, stories, model.cfg.n_ctx)
        record = snapshot_record(model, tokenizer, stories, batch, candidate_ids,
                                 n_seqs=n_seqs, length=length)
        rows.append({"step": snapshot.step, "tokens": snapshot.tokens, **record})
    return rows


def nan_to_none(value):
    """Nested lists of floats with NaN (a score no query had a target for) -> None, for JSON."""
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


__all__ = ["story_batch", "snapshot_record", "head_formation", "nan_to_none"]
