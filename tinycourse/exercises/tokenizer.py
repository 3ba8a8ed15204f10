"""Notebook 01's exercises: one BPE merge step by hand, and the top-K remap's vocabulary.

- `01.most_frequent_pair` (1): the pair to merge next, ties broken as the package does;
- `01.merge_pair` (2): replace every occurrence of that pair with a new id;
- `01.top_k_ids` (2): which base tokens TinyModel's remap keeps, in which order.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ..corpus.tokenizer import merge_pair, most_frequent_pair, top_k_ids
from .checker import Case, Exercise, Hint, register


def _pair_counts(seqs) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for seq in seqs:
        for pair in pairwise(seq):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def _as_pair(value) -> tuple[int, int] | None:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


# --- 01.most_frequent_pair ---------------------------------------------------------------

def _pair_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    random_seqs = [rng.integers(0, 6, size=int(n)).tolist() for n in rng.integers(2, 12, size=8)]
    return [
        Case("one sequence", ([[1, 2, 3, 1, 2]],)),
        Case("ties: the smallest pair wins", ([[3, 4], [1, 2], [5, 6], [3, 4], [1, 2], [5, 6]],)),
        Case("pairs never cross from one sequence to the next",
             ([[7, 1], [2, 8], [9, 1], [2, 6], [5, 1], [2, 4]],)),
        Case("a repeated id", ([[5, 5, 5, 5], [1, 2, 1, 2]],)),
        Case("no pairs at all", ([[], [7], [3]],)),
        Case("empty input", ([],)),
        Case("several sequences (seeded)", (random_seqs,)),
    ]


def _tie_broken_otherwise(case: Case, expected, got) -> bool:
    counts, pair = _pair_counts(case.args[0]), _as_pair(got)
    return (expected is not None and pair is not None and pair != expected
            and counts.get(pair) == counts[expected])


def _crossed_boundaries(case: Case, expected, got) -> bool:
    pair = _as_pair(got)  # a pair no sequence holds, or the winner of all sequences joined
    joined = [i for seq in case.args[0] for i in seq]
    return pair is not None and pair != expected and (
        pair not in _pair_counts(case.args[0]) or pair == most_frequent_pair([joined]))


register(Exercise(
    name="01.most_frequent_pair",
    reference=most_frequent_pair,
    cases=_pair_cases,
    hints=(
        Hint(_tie_broken_otherwise,
             "your pair is as frequent as the expected one: break ties as the package does, "
             "by the smallest pair (compare (count, pair) with min over (-count, pair)), not by "
             "the first or last pair seen."),
        Hint(_crossed_boundaries,
             "count pairs within each sequence only: the last id of one sequence and the "
             "first of the next are not neighbours (sequences are separate words)."),
        Hint(lambda case, expected, got: expected is None and got is not None,
             "when no sequence holds two ids (empty input, or sequences of one id) there is "
             "nothing to merge: return None."),
        Hint(lambda case, expected, got: expected is None and isinstance(got, Exception),
             "with no pairs at all, max()/min() of an empty collection raises: check for "
             "that first and return None."),
        Hint(lambda case, expected, got: expected is not None and isinstance(got, int),
             "return the pair itself as a tuple (a, b), not its count."),
    ),
))


# --- 01.merge_pair -----------------------------------------------------------------------

def _merge_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    random_seqs = [rng.integers(0, 4, size=int(n)).tolist() for n in rng.integers(0, 14, size=8)]
    return [
        Case("one occurrence", ([[4, 1, 2, 3]], (1, 2), 9)),
        Case("every occurrence", ([[1, 2, 3, 1, 2, 1, 2]], (1, 2), 9)),
        Case("several sequences (seeded)", (random_seqs, (1, 2), 7)),
        Case("overlapping: 5 5 5", ([[5, 5, 5], [5, 5, 5, 5]], (5, 5), 9)),
        Case("the pair at the very end", ([[3, 1, 2], [1, 2]], (1, 2), 9)),
        Case("the pair split across two sequences", ([[3, 1], [2, 4]], (1, 2), 9)),
        Case("the pair reversed is not the pair", ([[2, 1, 2, 1]], (1, 2), 9)),
        Case("empty sequences", ([[], [1]], (1, 2), 9)),
    ]


def _right_to_left(seqs, pair, new_id) -> list[list[int]]:
    flipped = merge_pair([list(reversed(s)) for s in seqs], (pair[1], pair[0]), new_id)
    return [list(reversed(s)) for s in flipped]


def _left_the_pair(case: Case, expected, got) -> bool:
    a, b = case.args[1]
    return any(isinstance(seq, list) and any(p == (a, b) for p in pairwise(seq))
               for seq in got)


def _did_not_skip(case: Case, expected, got) -> bool:
    return (not _left_the_pair(case, expected, got) and isinstance(got, list)
            and len(got) == len(expected)
            and any(isinstance(g, list) and len(g) > len(e) and case.args[2] in g
                    for g, e in zip(got, expected)))


register(Exercise(
    name="01.merge_pair",
    reference=merge_pair,
    cases=_merge_cases,
    hints=(
        Hint(_left_the_pair,
             "the pair still occurs in your result: merge every occurrence, not only the "
             "first one (scan the whole sequence)."),
        Hint(_did_not_skip,
             "your result is too long: after writing new_id, step past *both* ids of the "
             "pair (i += 2), so in 5 5 5 the middle 5 is not used twice."),
        Hint(lambda case, expected, got: got != expected and got == _right_to_left(*case.args),
             "you merged from the right: scan left to right, so merging (5, 5) in 5 5 5 "
             "gives new_id 5, not 5 new_id."),
        Hint(lambda case, expected, got: isinstance(got, list) and bool(got)
             and all(isinstance(i, int) for i in got),
             "return one list per input sequence (a list of lists), not one flat list."),
        Hint(lambda case, expected, got: isinstance(got, IndexError),
             "an IndexError: look at seq[i + 1] only when i + 1 < len(seq) (the last id has "
             "no right neighbour)."),
    ),
))


# --- 01.top_k_ids ------------------------------------------------------------------------

def _top_k_cases() -> list[Case]:
    rng = np.random.default_rng(3)
    zipf = np.minimum(rng.zipf(1.4, size=1000), 5000) * (rng.random(1000) < 0.7)
    return [
        Case("distinct counts", (np.array([5, 1, 9, 0, 3, 7]), 3)),
        Case("ties: the smaller id first", (np.array([2, 4, 4, 1, 4, 2]), 4)),
        Case("ids counted 0 are never kept", (np.array([0, 3, 0, 0, 1, 0]), 4)),
        Case("top_k larger than the vocabulary", (np.array([1, 2, 3]), 10)),
        Case("top_k = 1", (np.array([3, 8, 8, 2]), 1)),
        Case("a zipfian vocabulary of 1000 (seeded)", (zipf.astype(np.int64), 100)),
    ]


def _counts_of(case: Case, ids) -> list[int]:
    counts = case.args[0]
    return [int(counts[int(i)]) for i in ids]


def _ties_other_way(case: Case, expected, got) -> bool:
    got = [int(i) for i in got]
    return got != expected and _counts_of(case, got) == _counts_of(case, expected)


register(Exercise(
    name="01.top_k_ids",
    reference=top_k_ids,
    cases=_top_k_cases,
    hints=(
        Hint(lambda case, expected, got: any(case.args[0][int(i)] == 0 for i in got),
             "you kept an id that never occurs (count 0): a remap keeps only tokens the "
             "corpus uses, so fewer than top_k ids may come back."),
        Hint(_ties_other_way,
             "right counts, wrong ids among equal counts: break ties by the smaller id "
             "(a stable sort of -counts, or np.lexsort((ids, -counts))); "
             "np.argsort(counts)[::-1] puts the larger id first."),
        Hint(lambda case, expected, got: len(got) > 1 and _counts_of(case, got) == sorted(
                 _counts_of(case, got)) and _counts_of(case, got) != _counts_of(case, expected),
             "most frequent first: your ids come in increasing order of count."),
        Hint(lambda case, expected, got: list(got) == sorted(expected) != expected,
             "the right ids, sorted by id: order them by falling count (id 1 of the remap is "
             "the most frequent token)."),
        Hint(lambda case, expected, got: isinstance(got, np.ndarray),
             "return a list of Python ints (`.tolist()`), not a NumPy array."),
    ),
))
