"""What the language model does in context: copying names, and induction on random tokens.

Two probes, each on text the model never trained on, each a number a learner can check by
hand on a printed story:

`name_losses` groups the next-token loss of fresh storyworld stories (indices past the
corpus's `max_stories`, so never in the training split) by what the predicted token is,
from storyworld's exact labels:

    name_repeat   a token of a character's name that already appeared in the story
    name_first    a token of a name's first appearance
    pronoun       a pronoun pointing at a character
    other         everything else

A model that copies predicts `name_repeat` far better than `name_first`: before the first
mention any of hundreds of names may come; after it, the story says which.

`induction_probe` feeds [start] + R + R, R a sequence of random tokens drawn from those that
occur in training. Nothing but copying predicts the second R, so the loss on it against the
first is the model's in-context gain, and the head whose query at position i of the second
copy attends to the token right after the earlier occurrence of token i (key i + 1 of the
first copy, i.e. q - L + 1 for L = len(R)) is an induction head. Its score is that
attention, averaged over the second copy's positions and the sequences (Olsson et al. 2022,
"In-context Learning and Induction Heads", use the same repeated-random-tokens test).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..corpus.repeats import repeat_alphabet
from ..corpus.storyworld import Span, Story, token_labels
from ..lm.model import eval_mode, model_device

GROUPS = ("name_repeat", "name_first", "pronoun", "other")


def first_mention_spans(story: Story) -> list[tuple[int, int]]:
    """Character spans (start, end) of each character's first written name. Storyworld labels
    every later occurrence (`name_repeat`); the first is the earliest whole-word match."""
    spans = []
    for name in story.characters:
        match = re.search(rf"\b{re.escape(name)}\b", story.text)
        if match:
            spans.append(match.span())
    return spans


def token_groups(story: Story, offsets: Sequence[tuple[int, int]]) -> list[str | None]:
    """The `GROUPS` name of each token (None for special tokens, whose offsets are empty)."""
    labels = token_labels(story, offsets)
    firsts = first_mention_spans(story)
    groups: list[str | None] = []
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            groups.append(None)
        elif labels["name_repeat"][i] is not None:
            groups.append("name_repeat")
        elif any(a <= e - 1 < b for a, b in firsts):
            groups.append("name_first")
        elif labels["pronoun_referent"][i] is not None:
            groups.append("pronoun")
        else:
            groups.append("other")
    return groups


@torch.no_grad()
def token_losses(model, ids: Sequence[int]) -> np.ndarray:
    """Next-token loss (nats) of each token of `ids` after the first, on at most n_ctx + 1
    tokens: (min(len(ids), n_ctx + 1) - 1,) float64; entry i is the loss of ids[i + 1]."""
    ids = list(ids)[: model.cfg.n_ctx + 1]
    tokens = torch.tensor([ids], device=model_device(model))
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits[0].float(), tokens[0, 1:], reduction="none").double().cpu().numpy()


def name_losses(model, tokenizer, stories: Sequence[Story]) -> dict[str, dict[str, float]]:
    """{group: {"loss": mean nats, "tokens": count}} over the stories, each read from its
    start token for at most the model's n_ctx tokens (see the module docstring)."""
    sums = {g: [0.0, 0] for g in GROUPS}
    with eval_mode(model):
        for story in stories:
            ids = [tokenizer.start_id] + list(tokenizer.encode(story.text))
            offsets = [(0, 0)] + [tuple(o) for o in tokenizer.offsets(story.text)]
            losses = token_losses(model, ids)
            groups = token_groups(story, offsets)[1 : len(losses) + 1]  # the predicted tokens
            for group, loss in zip(groups, losses):
                if group is not None:
                    sums[group][0] += float(loss)
                    sums[group][1] += 1
    return {g: {"loss": total / n if n else float("nan"), "tokens": n}
            for g, (total, n) in sums.items()}


def repeated_sequences(candidate_ids: Sequence[int], n_seqs: int, length: int, *, seed: int,
                       start_id: int) -> torch.Tensor:
    """(n_seqs, 1 + 2 length) int64: [start_id] + R + R, R drawn uniformly from
    `candidate_ids`, seeded; without replacement when there are enough candidates, so each
    token of the second copy has exactly one earlier occurrence to look back to."""
    candidates = torch.as_tensor(list(candidate_ids), dtype=torch.long)
    if len(candidates) < 2:
        raise ValueError("induction_probe needs at least 2 candidate token ids")
    gen = torch.Generator().manual_seed(seed)
    if len(candidates) >= length:
        picks = torch.rand(n_seqs, len(candidates), generator=gen).argsort(dim=1)[:, :length]
    else:
        picks = torch.randint(0, len(candidates), (n_seqs, length), generator=gen)
    r = candidates[picks]
    start = torch.full((n_seqs, 1), start_id, dtype=torch.long)
    return torch.cat([start, r, r], dim=1)


@torch.no_grad()
def induction_probe(model, candidate_ids: Sequence[int], *, start_id: int, n_seqs: int = 32,
                    length: int = 40, seed: int = 0) -> dict:
    """Loss on the first and second copy of R and every head's induction score.

    Returns {"first_copy_loss", "second_copy_loss": nats, "induction": (n_layers, n_heads)
    list of lists, "best_head": [layer, head], "best_induction": float, "length", "n_seqs"}.
    Both losses skip their copy's first token: R[0] is predicted from the start token, and
    the second R[0] from the end of the first copy, neither by copying. A `length` whose
    sequence would not fit the context is cut to (n_ctx - 1) // 2; "length" says which."""
    if 2 * length + 1 > model.cfg.n_ctx:
        length = (model.cfg.n_ctx - 1) // 2
    tokens = repeated_sequences(candidate_ids, n_seqs, length, seed=seed, start_id=start_id)
    tokens = tokens.to(model_device(model))
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    with eval_mode(model):
        logits, cache = model.run_with_cache(tokens, names=names)
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(),
                             reduction="none").view(n_seqs, -1)  # entry j predicts token j + 1
    # each copy without its first token, which nothing before it predicts:
    first = losses[:, 1:length].mean()  # tokens 2..L = R[1:]
    second = losses[:, length + 1:].mean()  # tokens L+2..2L = the second R[1:]
    queries = torch.arange(length + 1, 2 * length + 1, device=tokens.device)
    keys = queries - length + 1
    scores = torch.stack([cache[n][:, :, queries, keys].mean((0, 2)) for n in names]).float().cpu()
    best = int(scores.argmax())
    n_heads = scores.shape[1]
    return {"first_copy_loss": float(first), "second_copy_loss": float(second),
            "induction": scores.tolist(), "best_head": [best // n_heads, best % n_heads],
            "best_induction": float(scores.max()), "length": length, "n_seqs": n_seqs}


_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_SENTENCE_START = re.compile(r"(^|[.!?\n]\s*|\"\s*)$")


def text_story(text: str) -> Story:
    """Plain text (a TinyStories story, say) as a `Story` whose only labels are name repeats,
    found by a rule instead of known: a name is a capitalised word that appears at least once
    inside a sentence (not "I"); its first whole-word occurrence is the first mention, every
    later one a repeat. Good enough to compare models on real text; storyworld's labels are
    exact."""
    names = []
    for match in _CAPITALISED.finditer(text):
        word = match.group()
        if word not in names and not _SENTENCE_START.search(text[: match.start()]):
            names.append(word)
    spans, characters = [], []
    for name in names:
        matches = list(re.finditer(rf"\b{name}\b", text))
        characters.append((matches[0].start(), name))
        spans += [Span(m.start(), m.end(), "name_repeat", name) for m in matches[1:]]
    spans.sort(key=lambda span: span.start)
    return Story(text, tuple(spans), "text", tuple(name for _, name in sorted(characters)))


def in_context_summary(model, tokenizer, stories: Sequence[Story], train_tokens: np.ndarray,
                       *, n_seqs: int = 32, length: int = 40, seed: int = 0) -> dict:
    """Both probes in one record (what the `lm` stage stores as in_context.json): the name
    losses by group, the [start] + R + R probe on tokens seen at least 20 times in training,
    and the two ratios the course's tiny model is held to (repeat / first mention, second /
    first copy; at most 0.5 each)."""
    groups = name_losses(model, tokenizer, stories)
    ids = training_token_ids(train_tokens, exclude=[tokenizer.start_id])
    probe = induction_probe(model, ids, start_id=tokenizer.start_id, n_seqs=n_seqs,
                            length=length, seed=seed)
    return {
        "stories": len(stories), "groups": groups, "repeated_tokens": probe,
        "name_repeat_ratio": groups["name_repeat"]["loss"] / groups["name_first"]["loss"],
        "second_copy_ratio": probe["second_copy_loss"] / probe["first_copy_loss"],
    }


def training_token_ids(train_tokens: np.ndarray, *, min_count: int = 20,
                       exclude: Sequence[int] = ()) -> list[int]:
    """Token ids that occur at least `min_count` times in the training split (ids the model
    has embeddings worth the name for), without `exclude` (the start token)."""
    return repeat_alphabet(train_tokens, min_count=min_count, exclude=exclude).tolist()


__all__ = ["GROUPS", "first_mention_spans", "token_groups", "token_losses", "name_losses",
           "repeated_sequences", "induction_probe", "text_story", "in_context_summary",
           "training_token_ids"]
