"""Notebook 01's exercises: each reference passes its own check, and each hinted mistake
fails with its hint (and not with the hints of other mistakes)."""

from itertools import pairwise

import numpy as np
import pytest

from tinycourse.corpus.tokenizer import merge_pair, most_frequent_pair, top_k_ids
from tinycourse.exercises import EXERCISES, ExerciseFailed, check

NAMES = [n for n in EXERCISES if n.startswith("01.")]


def test_notebook_01_has_its_exercises():
    assert set(NAMES) == {"01.most_frequent_pair", "01.merge_pair", "01.top_k_ids"}



def _fails_with(name, fn, hint, *, case=None):
    with pytest.raises(ExerciseFailed) as failure:
        check(name, fn)
    message = str(failure.value)
    assert hint in message, message
    if case is not None:
        assert f"case {case!r}" in message, message
    return message


def _counts(seqs):
    counts = {}
    for seq in seqs:
        for pair in pairwise(seq):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


# --- 01.most_frequent_pair --------------------------------------------------------------

def first_seen_on_ties(seqs):
    counts = _counts(seqs)
    return max(counts, key=counts.get) if counts else None  # max keeps the first maximum


def across_sequences(seqs):
    return most_frequent_pair([[i for seq in seqs for i in seq]])


def no_empty_check(seqs):
    counts = _counts(seqs)
    return min(counts, key=lambda p: (-counts[p], p))


def test_most_frequent_pair_ties():
    message = _fails_with("01.most_frequent_pair", first_seen_on_ties, "break ties",
                          case="ties: the smallest pair wins")
    assert "expected: (1, 2)" in message and "got:      (3, 4)" in message
    assert "within each sequence" not in message


def test_most_frequent_pair_crossing_sequences():
    message = _fails_with("01.most_frequent_pair", across_sequences, "within each sequence",
                          case="pairs never cross from one sequence to the next")
    assert "break ties" not in message


def test_most_frequent_pair_empty():
    message = _fails_with("01.most_frequent_pair", no_empty_check, "empty collection raises",
                          case="no pairs at all")
    assert "raised ValueError" in message


# --- 01.merge_pair -----------------------------------------------------------------------

def first_only(seqs, pair, new_id):
    out = []
    for seq in seqs:
        seq = list(seq)
        for i in range(len(seq) - 1):
            if (seq[i], seq[i + 1]) == tuple(pair):
                seq[i : i + 2] = [new_id]
                break
        out.append(seq)
    return out


def no_skip(seqs, pair, new_id):
    out = []
    for seq in seqs:
        merged, i = [], 0
        while i < len(seq):
            if i + 1 < len(seq) and (seq[i], seq[i + 1]) == tuple(pair):
                merged.append(new_id)
            else:
                merged.append(seq[i])
            i += 1
        out.append(merged)
    return out


def right_to_left(seqs, pair, new_id):
    flipped = merge_pair([s[::-1] for s in seqs], pair[::-1], new_id)
    return [s[::-1] for s in flipped]


def flat(seqs, pair, new_id):
    return [i for seq in merge_pair(seqs, pair, new_id) for i in seq]


def unchecked_neighbour(seqs, pair, new_id):
    out = []
    for seq in seqs:
        merged, i = [], 0
        while i < len(seq):
            if (seq[i], seq[i + 1]) == tuple(pair):
                merged.append(new_id)
                i += 2
            else:
                merged.append(seq[i])
                i += 1
        out.append(merged)
    return out


def in_place(seqs, pair, new_id):
    merged = merge_pair(seqs, pair, new_id)
    seqs[:] = merged  # mutates its input: harmless here, the checker gives it a copy
    return seqs


@pytest.mark.parametrize("fn, hint, case", [
    (first_only, "merge every occurrence", "every occurrence"),
    (no_skip, "step past *both* ids", "one occurrence"),
    (right_to_left, "you merged from the right", "overlapping: 5 5 5"),
    (flat, "one list per input sequence", "one occurrence"),
    (unchecked_neighbour, "an IndexError", "one occurrence"),
])
def test_merge_pair_mistakes(fn, hint, case):
    message = _fails_with("01.merge_pair", fn, hint, case=case)
    assert message.count("hint:") == 1, message


def test_merge_pair_mutating_its_input_still_passes():
    assert check("01.merge_pair", in_place) is in_place


# --- 01.top_k_ids ------------------------------------------------------------------------

def larger_id_on_ties(counts, top_k):
    order = np.argsort(counts, kind="stable")[::-1]
    return [int(i) for i in order[:top_k] if counts[i] > 0]


def keeps_zeros(counts, top_k):
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [int(i) for i in order[:top_k]]


def ascending(counts, top_k):
    return top_k_ids(counts, top_k)[::-1]


def as_array(counts, top_k):
    return np.array(top_k_ids(counts, top_k))


@pytest.mark.parametrize("fn, hint, case", [
    (larger_id_on_ties, "break ties by the smaller id", "ties: the smaller id first"),
    (keeps_zeros, "never occurs (count 0)", "ids counted 0 are never kept"),
    (ascending, "increasing order of count", "distinct counts"),
    (as_array, "not a NumPy array", "distinct counts"),
])
def test_top_k_ids_mistakes(fn, hint, case):
    message = _fails_with("01.top_k_ids", fn, hint, case=case)
    assert message.count("hint:") == 1, message


def test_the_references_behave_as_documented():
    assert most_frequent_pair([[5, 5, 5]]) == (5, 5)
    assert most_frequent_pair([[3, 4], [1, 2]]) == (1, 2)
    assert most_frequent_pair([[1], []]) is None
    seqs = [[5, 5, 5]]
    assert merge_pair(seqs, (5, 5), 9) == [[9, 5]] and seqs == [[5, 5, 5]]
    assert top_k_ids(np.array([2, 4, 4, 0]), 3) == [1, 2, 0]
    assert top_k_ids(np.array([0, 1]), 5) == [1]
