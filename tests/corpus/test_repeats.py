"""Repeat windows: noise, R, R, noise, reproducible from (seed, step), from trained tokens."""

import numpy as np
import pytest

from tinycourse.corpus.repeats import MIN_REPEAT, RepeatWindows, repeat_alphabet

ALPHABET = np.arange(5, 205)


def find_repeat(window: list[int]) -> tuple[int, int]:
    """(begin, length) of the longest stretch that comes again right after itself."""
    return max(((i, n) for n in range(MIN_REPEAT, len(window) // 2 + 1)
                for i in range(len(window) - 2 * n + 1) if window[i:i + n] == window[i + n:i + 2 * n]),
               key=lambda found: found[1])


def test_each_window_holds_one_sequence_twice_and_noise_apart_from_it():
    windows = RepeatWindows(ALPHABET, 129, seed=3)
    lengths, begins = [], []
    for step in range(20):
        for row in windows.batch(step, 4).tolist():
            assert len(row) == 129 and set(row) <= set(ALPHABET.tolist())
            begin, length = find_repeat(row)
            repeat = row[begin:begin + length]
            assert len(set(repeat)) == length  # distinct: one earlier occurrence each
            noise = row[:begin] + row[begin + 2 * length:]
            assert not set(noise) & set(repeat)
            lengths.append(length)
            begins.append(begin)
    # lengths and places vary over the whole allowed range, not one fixed form
    assert min(lengths) < 25 and max(lengths) > 50 and min(begins) < 10 and max(begins) > 40


def test_a_step_s_windows_are_a_pure_function_of_seed_step_and_rank():
    a, b = RepeatWindows(ALPHABET, 64, seed=0), RepeatWindows(ALPHABET, 64, seed=0)
    assert np.array_equal(a.batch(7, 3), b.batch(7, 3))
    assert not np.array_equal(a.batch(7, 3), a.batch(8, 3))
    assert not np.array_equal(a.batch(7, 3), RepeatWindows(ALPHABET, 64, seed=1).batch(7, 3))
    assert not np.array_equal(a.batch(7, 3), RepeatWindows(ALPHABET, 64, seed=0, rank=1).batch(7, 3))


def test_the_alphabet_is_the_tokens_seen_often_enough_without_the_excluded():
    tokens = np.array([0] * 30 + [1] * 19 + [2] * 20 + [7] * 25, dtype=np.uint16)
    assert repeat_alphabet(tokens).tolist() == [0, 2, 7]
    assert repeat_alphabet(tokens, exclude=[0]).tolist() == [2, 7]
    assert repeat_alphabet(tokens, min_count=1, exclude=[0, 7]).tolist() == [1, 2]


def test_windows_too_short_or_alphabets_too_small_are_refused():
    with pytest.raises(ValueError, match="model.n_ctx >= 19"):
        RepeatWindows(ALPHABET, 17)
    with pytest.raises(ValueError, match="train.repeat_share=0"):
        RepeatWindows(np.arange(40), 129)
