"""Mining capabilities: which of a model's confident, correct predictions simple rules explain.

The AI Safety Camp proposal's method, run on validation text: for every token, the
model's probability of the true next token. The predictions it gets right (the true token
is its top choice) with confidence (probability at least `threshold`) are labelled by
detectors, each a rule a reader can check:

    induction       the current token and the next one appeared as a pair earlier in the
                    window (... A B ... A -> B): copying a repeated bigram
    repeated_token  the next token appeared earlier in the window, not after this token
    closing_quote   the next token closes a quotation (an odd number of quote marks so far)
    pronoun         the next token is a pronoun (he, she, it, they, him, her, ...)
    name            the next token is (part of) a capitalised word inside a sentence
    ngram           a trigram model counted on the training split gives it probability
                    >= 0.5 from the two tokens before (seen at least `min_count` times):
                    predictable from local statistics alone

A token takes the first label that fits, in that order (`LABELS`), so the in-context
rules come before the n-gram one; tokens no rule explains go to an `unexplained` bucket,
shown with examples: where to look for capabilities nobody has named yet. `compare`
gives the model-vs-model view: tokens one model gets right and another does not, grouped
the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..lm.model import eval_mode, model_device

LABELS = ("induction", "repeated_token", "closing_quote", "pronoun", "name", "ngram")
UNEXPLAINED = "unexplained"
PRONOUNS = frozenset("he she it they him her his its their them we us you i me my our your".split())
_SENTENCE_END = re.compile(r'[.!?]["\s]*$|^\s*$')


@dataclass(frozen=True)
class TrigramModel:
    """Counts of (a, b) -> c over a token array, for P(c | a, b) by lookup."""

    keys: np.ndarray  # sorted int64 codes a * V^2 + b * V + c
    counts: np.ndarray  # how often each code occurs
    context_keys: np.ndarray  # sorted codes a * V + b
    context_counts: np.ndarray
    vocab: int

    @classmethod
    def count(cls, tokens: np.ndarray, vocab: int, max_tokens: int = 20_000_000) -> "TrigramModel":
        """Trigram counts over the first `max_tokens` of `tokens` (bounded time and memory)."""
        t = np.asarray(tokens[:max_tokens], dtype=np.int64)
        codes = (t[:-2] * vocab + t[1:-1]) * vocab + t[2:]
        keys, counts = np.unique(codes, return_counts=True)
        context_keys, context_counts = np.unique(codes // vocab, return_counts=True)
        return cls(keys, counts, context_keys, context_counts, vocab)

    def probability(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(c | a, b), count of (a, b)) for arrays of equal shape; 0 where unseen."""
        def lookup(keys, counts, query):
            at = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
            return np.where(keys[at] == query, counts[at], 0)
        context = a.astype(np.int64) * self.vocab + b
        n_context = lookup(self.context_keys, self.context_counts, context)
        n = lookup(self.keys, self.counts, context * self.vocab + c)
        return np.where(n_context > 0, n / np.maximum(n_context, 1), 0.0), n_context


@torch.no_grad()
def next_token_probs(model, windows: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """For windows (n, L) int64: (probability of the true next token, whether it is the
    top choice), each (n, L - 1); entry [i, j] is about predicting windows[i, j + 1]."""
    probs, top = [], []
    with eval_mode(model):
        device = model_device(model)
        for chunk in windows.split(batch_size):
            logits = model(chunk[:, :-1].to(device)).float()
            target = chunk[:, 1:].to(device)
            probs.append(F.softmax(logits, -1).gather(-1, target[..., None])[..., 0].cpu())
            top.append((logits.argmax(-1) == target).cpu())
    return torch.cat(probs).numpy(), torch.cat(top).numpy()


def label_tokens(windows: np.ndarray, pieces: list[str], trigrams: TrigramModel, *,
                 min_count: int = 5) -> np.ndarray:
    """The first label of `LABELS` that explains each next token, as (n, L - 1) strings
    (`UNEXPLAINED` where none does). `pieces[id]` is each token id's text."""
    n, length = windows.shape
    labels = np.full((n, length - 1), UNEXPLAINED, dtype=object)
    p_trigram = np.zeros((n, length - 1))
    seen = np.zeros((n, length - 1), dtype=np.int64)
    if length > 2:  # positions j >= 1 have two tokens before the target
        p, count = trigrams.probability(windows[:, :-2], windows[:, 1:-1], windows[:, 2:])
        p_trigram[:, 1:], seen[:, 1:] = p, count
    for i in range(n):
        row = windows[i].tolist()
        text, quotes = "", 0
        tokens: set[int] = set()
        pairs: set[tuple[int, int]] = set()
        for j in range(length - 1):
            current, target = row[j], row[j + 1]
            text = (text + pieces[current])[-40:]  # enough to see a sentence end or a word
            quotes += pieces[current].count('"')
            tokens.add(current)
            piece = pieces[target]
            if (current, target) in pairs:
                labels[i, j] = "induction"
            elif target in tokens:
                labels[i, j] = "repeated_token"
            elif '"' in piece and quotes % 2 == 1:
                labels[i, j] = "closing_quote"
            elif piece.strip().lower() in PRONOUNS:
                labels[i, j] = "pronoun"
            elif _is_name_piece(piece, text):
                labels[i, j] = "name"
            elif p_trigram[i, j] >= 0.5 and seen[i, j] >= min_count:
                labels[i, j] = "ngram"
            pairs.add((current, target))
    return labels


def _is_name_piece(piece: str, text_before: str) -> bool:
    """A capitalised word starting mid-sentence, or a piece glued onto one (`text_before`:
    the last few dozen characters before it)."""
    if piece[:1] == " " and piece[1:2].isupper():
        return not _SENTENCE_END.search(text_before) and piece.strip() != "I"
    last = re.search(r"(\w+)$", text_before)
    return bool(piece[:1].isalpha() and last and last.group(1)[:1].isupper()
                and not _SENTENCE_END.search(text_before[: last.start()]))


@dataclass(frozen=True)
class Mining:
    """One model's confident, correct predictions on `windows`, labelled."""

    windows: np.ndarray  # (n, L) token ids
    probs: np.ndarray  # (n, L - 1) probability of the true next token
    confident: np.ndarray  # (n, L - 1) bool: top choice and prob >= threshold
    labels: np.ndarray  # (n, L - 1) first explaining label, or "unexplained"

    def shares(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """Share of the confident tokens (within `mask`) under each label, in LABELS order."""
        chosen = self.confident if mask is None else self.confident & mask
        counts = Counter(self.labels[chosen].tolist())
        total = max(int(chosen.sum()), 1)
        return {label: counts.get(label, 0) / total for label in (*LABELS, UNEXPLAINED)}


def mine(model, windows: torch.Tensor, pieces: list[str], trigrams: TrigramModel, *,
         threshold: float = 0.5, min_count: int = 5) -> Mining:
    """Run `model` on `windows` (n, L) and label its confident, correct predictions."""
    probs, top = next_token_probs(model, windows)
    array = windows.numpy()
    labels = label_tokens(array, pieces, trigrams, min_count=min_count)
    return Mining(array, probs, top & (probs >= threshold), labels)


def examples(mining: Mining, pieces: list[str], label: str = UNEXPLAINED, *, n: int = 10,
             before: int = 12, mask: np.ndarray | None = None, seed: int = 0) -> list[dict]:
    """Up to `n` confident tokens under `label` (seeded sample): the text before, the token,
    the model's probability."""
    chosen = mining.confident & (mining.labels == label)
    if mask is not None:
        chosen &= mask
    where = np.argwhere(chosen)
    picks = np.random.default_rng(seed).permutation(len(where))[:n]
    out = []
    for i, j in where[picks]:
        context = "".join(pieces[t] for t in mining.windows[i, max(0, j + 1 - before): j + 1])
        out.append({"context": context, "token": pieces[mining.windows[i, j + 1]],
                    "prob": float(mining.probs[i, j])})
    return out


def compare(better: Mining, worse: Mining) -> dict[str, float]:
    """Tokens `better` predicts confidently and `worse` does not (same windows), grouped by
    label: {"tokens": count, <label>: share}."""
    if better.windows.shape != worse.windows.shape or (better.windows != worse.windows).any():
        raise ValueError("compare needs both minings on the same windows (same tokenizer and text)")
    gained = better.confident & ~worse.confident
    return {"tokens": int(gained.sum()), **better.shares(gained)}


def token_pieces(tokenizer, vocab_size: int) -> list[str]:
    """Each id's text, for the detectors (special tokens decode to "")."""
    return [tokenizer.decode([i]) for i in range(vocab_size)]


__all__ = ["LABELS", "UNEXPLAINED", "PRONOUNS", "TrigramModel", "next_token_probs", "label_tokens",
           "Mining", "mine", "examples", "compare", "token_pieces"]
