"""The corpus section: where the stories came from, the tokenizer, the shards, and two
figures of the validation tokens (story lengths, token frequency by rank).

Rendered by templates/corpus.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, png
from .files import val_tokens

ANCHOR, NAV, STAGE = "corpus", "Corpus", "tokenizer"
ZIPF_TOKENS = 5_000_000  # validation tokens counted for the frequency plot


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None before the tokenizer or shards stage has run."""
    tokenizer, shards = manifests.get("tokenizer"), manifests.get("shards")
    if tokenizer is None and shards is None:
        return None
    context: dict = {"tokenizer": None, "shards": None, "tokens": None}
    if tokenizer:
        context["tokenizer"] = {"data": tokenizer["config"].get("data", {}),
                                "config": tokenizer["config"].get("tokenizer", {}),
                                "summary": tokenizer["summary"]}
    if shards:
        s = shards["summary"]
        context["shards"] = {**s, "tokens_per_story": s["train_tokens"] / max(s["train_stories"], 1)}
        context["tokens"] = _token_figure(root)
    return context


def _token_figure(root: Path) -> dict | None:
    """Story lengths and the rank/frequency (Zipf) plot of the first validation tokens."""
    found = val_tokens(root, ZIPF_TOKENS)
    if found is None:
        return None
    tokens, meta = found
    fig, (ax1, ax2) = new_figure(2)
    starts = np.flatnonzero(tokens == meta["start_id"])
    lengths = np.diff(np.append(starts, len(tokens)))
    ax1.hist(lengths, bins=40, color="#4c72b0")
    ax1.set(xlabel="tokens per story", ylabel="stories", title="story length (val)")
    counts = np.sort(np.bincount(tokens.astype(np.int64), minlength=meta["vocab_size"]))[::-1]
    counts = counts[counts > 0]
    ax2.loglog(np.arange(1, len(counts) + 1), counts / counts.sum(), color="#dd8452")
    ax2.set(xlabel="token rank", ylabel="frequency", title="token frequency by rank (val)")
    return {"png": png(fig), "used": len(counts), "vocab_size": meta["vocab_size"], "counted": len(tokens)}
