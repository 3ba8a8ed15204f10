from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinycourse.interpret.mining import (LABELS, UNEXPLAINED, TrigramModel, compare, examples,
                                         label_tokens, mine)

# a word-level vocabulary: each id is one piece of text
PIECES = ["", " Tom", " said", ' "', "Hi", '."', " he", " ran", " and", " the", " dog", " Zee", "lo",
          " sat", "."]
ID = {p: i for i, p in enumerate(PIECES)}


def ids(*pieces):
    return [ID[p] for p in pieces]


def test_trigram_probabilities_match_counting_by_hand():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=500)
    model = TrigramModel.count(tokens, 8)  # ids 5..7 never occur
    triples = Counter(zip(tokens[:-2], tokens[1:-1], tokens[2:]))
    pairs = Counter(zip(tokens[:-2], tokens[1:-1]))
    a, b, c = np.array([0, 1, 4]), np.array([2, 3, 4]), np.array([1, 1, 0])
    p, n = model.probability(a, b, c)
    for k in range(3):
        assert n[k] == pairs[(a[k], b[k])]
        assert p[k] == pytest.approx(triples[(a[k], b[k], c[k])] / pairs[(a[k], b[k])])
    p, n = model.probability(np.array([0, 7]), np.array([0, 7]), np.array([7, 0]))  # unseen -> 0
    assert p.tolist() == [0.0, 0.0] and n[1] == 0


def test_each_label_is_found_by_its_rule():
    row = ids(" Tom", " said", ' "', "Hi", '."', " the", " dog", " ran", ".", " the", " dog",
              " sat", " and", " Zee", "lo", " he", " Tom")
    trigrams = TrigramModel.count(np.array(ids(" dog", " sat", " and") * 10), len(PIECES))
    labels = label_tokens(np.array([row]), PIECES, trigrams)[0]
    by_target = {PIECES[t] + f"@{j + 1}": labels[j] for j, t in enumerate(row[1:])}
    assert by_target['."@4'] == "closing_quote"  # inside the quote opened at ' "'
    assert by_target[" dog@10"] == "induction"  # " the" -> " dog" seen before
    assert by_target[" the@9"] == "repeated_token"  # " the" seen, not after "."
    assert by_target[" he@15"] == "pronoun"
    assert by_target[" Zee@13"] == "name" and by_target["lo@14"] == "name"  # mid-sentence capital + glued piece
    assert by_target[" and@12"] == "ngram"  # " dog sat" -> " and" every time in the counts
    assert by_target[" said@1"] == UNEXPLAINED
    assert set(labels) <= {*LABELS, UNEXPLAINED}


class Copier(torch.nn.Module):
    """Puts probability ~1 on the token it reads (so it is right exactly on repeats)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.dummy = vocab, torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        return 20.0 * F.one_hot(tokens, self.vocab).float() + 0 * self.dummy


class Uniform(Copier):
    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab) + 0 * self.dummy


def test_mine_keeps_confident_correct_tokens_and_compare_finds_what_one_model_adds():
    row = ids(" the", " the", " dog", " dog", " ran")
    windows = torch.tensor([row, row])
    trigrams = TrigramModel.count(np.array(row), len(PIECES))
    copier = mine(Copier(len(PIECES)), windows, PIECES, trigrams)
    assert copier.confident.tolist() == [[True, False, True, False]] * 2
    assert copier.shares()["repeated_token"] == 1.0  # " the" after " the", " dog" after " dog"
    uniform = mine(Uniform(len(PIECES)), windows, PIECES, trigrams)
    assert not uniform.confident.any()
    gained = compare(copier, uniform)
    assert gained["tokens"] == 4 and gained["repeated_token"] == 1.0
    (example,) = examples(copier, PIECES, "repeated_token", n=1)
    assert example["token"] in (" the", " dog") and example["prob"] > 0.99
    with pytest.raises(ValueError, match="same windows"):
        compare(copier, mine(Copier(len(PIECES)), windows[:1], PIECES, trigrams))
