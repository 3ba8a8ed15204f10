"""Activation patching on the planted previous-token + induction circuit: the induction
head's output and the clean token at the copied position carry the answer; nothing else.
Repeated-name pairs: they differ only in the replaced name and line up, patching the whole
last residual recovers everything and what is equal in both runs nothing, and on them the
planted induction head carries the name."""

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.patching import (REPEATED_NAME_TEMPLATE, last_logit_diff, name_kind, patch_heads,
                                           patch_residual, repeated_name_pairs, storyworld_names)
from tinycourse.lm.model import GPT

from .test_in_context import induction_copier


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _pair():
    # [start] a b c d a b c -> d (clean), with d replaced by e at its first occurrence (corrupted)
    clean = torch.tensor([[0, 1, 2, 3, 4, 1, 2, 3], [0, 5, 6, 7, 8, 5, 6, 7]])
    corrupted = clean.clone()
    corrupted[:, 4] = torch.tensor([9, 10])
    return clean, corrupted, clean[:, 4], corrupted[:, 4]


def test_the_induction_heads_output_carries_the_answer():
    model = induction_copier()
    clean, corrupted, answer, wrong = _pair()
    result = patch_heads(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])
    assert result["clean"] > 5 and result["corrupted"] < -5
    assert grid[1, 0] == pytest.approx(1.0, abs=0.02)  # the induction head
    assert grid[0, 0].abs() < 0.02  # the previous-token head: the keys did not change
    assert grid[:, 1].abs().max() < 1e-4  # the silent heads


def test_the_residual_stream_carries_it_at_the_copied_token_then_at_the_end():
    model = induction_copier()
    clean, corrupted, answer, wrong = _pair()
    result = patch_residual(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])  # (n_layers + 1, pos)
    assert grid.shape == (3, 8) and result["hooks"][-1] == "blocks.1.hook_resid_post"
    assert grid[0, 4] == pytest.approx(1.0, abs=0.02)  # the embedding of the copied token
    assert grid[0, :4].abs().max() < 1e-4 and grid[0, 5:].abs().max() < 1e-4
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-4)  # everything, at the last position


def test_logit_difference_and_bad_pairs():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[1, -1, 2] = 4.0, -1.0
    assert last_logit_diff(logits, torch.tensor([1, 2]), torch.tensor([0, 0])).tolist() == [4.0, -1.0]
    clean, corrupted, answer, wrong = _pair()
    with pytest.raises(ValueError, match="same shape"):
        patch_heads(induction_copier(), clean, corrupted[:, :-1], answer, wrong)


# --- repeated-name pairs ---------------------------------------------------------------------

# a hand tokenizer over the planted model's 16 ids: words and name syllables, longest match first
PIECES = ("<s>", "A", " girl", " named", ".", " The", " Lily", " Mia", " Zu", " Ko", "bo", "ra", " boy")
SHORT = "A {kind} named {name}. The {kind} named"  # 10 tokens: the planted model has 20 positions
NAMES = ("Lily", "Mia", "Zubo", "Kora", "Zura", "Kobo")  # one- and two-token girls' names


class Pieces:
    start_id = 0

    def encode(self, text):
        ids = []
        while text:
            i = max((i for i in range(1, len(PIECES)) if text.startswith(PIECES[i])), key=lambda i: len(PIECES[i]))
            ids.append(i)
            text = text[len(PIECES[i]):]
        return ids

    def decode(self, ids):
        return "".join(PIECES[i] for i in ids)


@pytest.fixture(scope="module")
def bpe():
    from tinycourse.corpus.storyworld import generate_stories
    from tinycourse.corpus.tokenizer import train_bpe

    return train_bpe((s.text for s in generate_stories(200, seed=0)), vocab_size=400)


def test_repeated_name_pairs_differ_only_in_the_replaced_name(bpe):
    import re

    before, after = REPEATED_NAME_TEMPLATE.split(" {name}")
    clean, corrupted, answer, wrong = repeated_name_pairs(bpe, n_pairs=16)
    assert clean.shape == corrupted.shape and clean.shape[0] == 16 and answer.shape == wrong.shape == (16,)
    first = int((clean != corrupted).any(0).nonzero()[0])  # every pair's name starts here: one layout
    for c, x, a, w in zip(clean.tolist(), corrupted.tolist(), answer.tolist(), wrong.tolist()):
        text, other = bpe.decode(c[1:]), bpe.decode(x[1:])
        kind, name = re.fullmatch(r".* little (\w+) named (\w+)\..*", text).groups()
        replacement = re.fullmatch(r".* named (\w+)\..*", other)[1]
        assert text == REPEATED_NAME_TEMPLATE.format(kind=kind, name=name)
        assert other == REPEATED_NAME_TEMPLATE.format(kind=kind, name=replacement) and replacement != name
        n = len(bpe.encode(" " + name))
        assert n == len(bpe.encode(" " + replacement))  # the same token length: positions align
        assert c[:first] == x[:first] and c[first + n:] == x[first + n:]  # only the name differs
        assert c[0] == bpe.start_id and (a, w) == (c[first], x[first]) and a != w
    head, tail = bpe.encode(before.format(kind=kind)), bpe.encode(after.format(kind=kind))
    assert clean.shape[1] == 1 + len(head) + n + len(tail) and first == 1 + len(head)


def test_patching_everything_recovers_all_and_nothing_none(bpe):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=64,
                            d_vocab=bpe.vocab_size, init_std=0.4)).eval()
    clean, corrupted, answer, wrong = repeated_name_pairs(bpe, n_pairs=8)
    first = int((clean != corrupted).any(0).nonzero()[0])
    result = patch_residual(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])
    assert abs(result["clean"] - result["corrupted"]) > 1e-2
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-4)  # the whole last residual: everything
    assert grid[:, :first].abs().max() < 1e-4  # before the name the two runs are the same: nothing


def test_the_induction_heads_patch_recovers_the_repeated_name():
    model = induction_copier()
    clean, corrupted, answer, wrong = repeated_name_pairs(Pieces(), NAMES, n_pairs=8, template=SHORT)
    assert clean.shape == (8, 10) and (clean != corrupted).any(0).nonzero()[:, 0].tolist() == [4, 5]  # " Zu" "bo"
    result = patch_heads(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])
    assert result["clean"] > 5 and result["corrupted"] < -5
    assert grid[1, 0] > 0.9  # the induction head: at " named" it reads the name after the earlier " named"
    assert grid[0, 0].abs() < 0.05 and grid[:, 1].abs().max() < 1e-4  # previous-token head, silent heads
    residual = torch.tensor(patch_residual(model, clean, corrupted, answer, wrong)["recovered"])
    assert residual[0, 4] == pytest.approx(1.0, abs=0.02) and residual[0, :4].abs().max() < 1e-4


def test_repeated_name_pairs_say_what_is_missing():
    one_token = repeated_name_pairs(Pieces(), NAMES, n_pairs=2, template=SHORT, name_tokens=1)[0]
    assert one_token.shape == (2, 9)  # Lily and Mia
    with pytest.raises(ValueError, match=r"no two of the 2 names are 3-token names .* pass more names") as error:
        repeated_name_pairs(Pieces(), ("Lily", "Mia"), template=SHORT, name_tokens=3)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no two of the 1 names"):
        repeated_name_pairs(Pieces(), ("Lily",), template=SHORT)
    with pytest.raises(ValueError, match=r"must hold \" \{name\}\" once"):
        repeated_name_pairs(Pieces(), NAMES, template="A girl named")
    names = storyworld_names(n_invented=10)
    assert names[:3] == ["Lily", "Mia", "Sue"] and len(names) == len(set(names)) and len(names) > 44
    assert name_kind("Tom") == "boy" and name_kind("Spot") == "dog" and name_kind("Zubo") == "girl"
