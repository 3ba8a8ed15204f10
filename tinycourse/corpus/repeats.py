"""Windows in which a random token sequence comes twice, mixed into training batches.

Stories reward copying names, but nothing in them rewards copying an *arbitrary* sequence,
and a model that never has to copy one never grows an induction head: on tiny's budget,
trained on storyworld alone, the best head's induction score stays near 0.05 and a
repeated random sequence is as hard the second time as the first
(benchmarks/bench_induction.py). A share of each batch made of windows

    noise, R, R, noise        R: 10 to (n_ctx + 1) // 2 random training tokens

puts that pressure in: from the second R on, each next token is predictable only by
finding the current token earlier in the window and reading what came after it, the
"prefix matching and copying" that defines an induction head (Olsson et al. 2022,
https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/). It is
the training-data twin of the [start] + R + R probe heads are scored on, with two changes:
no start token, so that a story sampled from [start] stays a story, and R anywhere in the
window, so that copying does not depend on where it starts.

Window number i of step `step` is a pure function of (seed, step, rank, i), like
`WindowSampler`'s batches: a resumed run sees the windows an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .shards import token_counts

MIN_REPEAT = 10  # shortest R: shorter ones are mostly bigram statistics, not copying


def repeat_alphabet(train_tokens: np.ndarray, *, min_count: int = 20,
                    exclude: Sequence[int] = ()) -> np.ndarray:
    """(n,) int64: the token ids seen at least `min_count` times in training, without
    `exclude` (the start token): ids whose embeddings have been trained enough to copy."""
    counts = token_counts(train_tokens, int(train_tokens.max()) + 1)
    keep = np.flatnonzero(counts >= min_count)
    return keep[~np.isin(keep, np.asarray(exclude, dtype=np.int64))].astype(np.int64)


class RepeatWindows:
    """Windows of `width` tokens drawn from `alphabet`, each holding one R twice in a row."""

    def __init__(self, alphabet: np.ndarray, width: int, seed: int = 0, rank: int = 0):
        if width < 2 * MIN_REPEAT:
            raise ValueError(f"a window of {width} tokens cannot hold a {MIN_REPEAT}-token "
                             f"sequence twice: use model.n_ctx >= {2 * MIN_REPEAT - 1}")
        if len(alphabet) <= width // 2:
            raise ValueError(f"{len(alphabet)} tokens to draw from, too few for a repeat of "
                             f"{width // 2} distinct ones and noise apart from them: use more "
                             f"training text or set train.repeat_share=0")
        self.alphabet, self.width, self.seed, self.rank = alphabet, width, seed, rank

    def window(self, rng: np.random.Generator) -> np.ndarray:
        """(width,) noise, R, R, noise: R distinct tokens and the noise none of them, so each
        token of the second R has exactly one earlier occurrence to look back to."""
        length = int(rng.integers(MIN_REPEAT, self.width // 2 + 1))
        repeat = rng.choice(self.alphabet, size=length, replace=False)
        out = rng.choice(np.setdiff1d(self.alphabet, repeat), size=self.width)
        begin = int(rng.integers(0, self.width - 2 * length + 1))
        out[begin: begin + length] = repeat
        out[begin + length: begin + 2 * length] = repeat
        return out

    def batch(self, step: int, n: int) -> torch.Tensor:
        """(n, width) int64: the repeat windows of optimizer step `step`."""
        rng = np.random.default_rng((self.seed, step, self.rank, 1))  # 1: not the sampler's stream
        return torch.from_numpy(np.stack([self.window(rng) for _ in range(n)]).astype(np.int64))


__all__ = ["MIN_REPEAT", "RepeatWindows", "repeat_alphabet"]
