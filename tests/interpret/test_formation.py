"""Head formation across snapshots: the planted induction circuit scores as one at its
snapshot and a random model does not, rows come in step order, NaN becomes None."""

import math

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.corpus.storyworld import generate_stories
from tinycourse.corpus.tokenizer import train_bpe
from tinycourse.interpret.formation import head_formation, nan_to_none, snapshot_record, story_batch
from tinycourse.lm.model import GPT
from tinycourse.lm.snapshots import list_snapshots, save_snapshot

from .test_in_context import induction_copier
from .test_heads import START, V


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


class LetterTokenizer:
    """Tokens 1..V-1 for letters a..o, START for the start: enough for the planted model."""
    start_id = START

    def encode(self, text):
        return [1 + (ord(c) - ord("a")) % (V - 1) for c in text if c.isalpha()]

    def offsets(self, text):
        return [(i, i + 1) for i, c in enumerate(text) if c.isalpha()]


def test_story_batch_cuts_every_story_to_the_shortest():
    tok = LetterTokenizer()
    stories = list(generate_stories(3, seed=0))
    batch = story_batch(tok, stories, n_ctx=20)
    assert batch.shape == (3, 20) and (batch[:, 0] == START).all()
    assert batch[0, 1:].tolist() == tok.encode(stories[0].text)[:19]


def test_planted_circuit_forms_between_two_snapshots(tmp_path):
    tok, stories = LetterTokenizer(), list(generate_stories(4, seed=0))
    torch.manual_seed(0)
    blank = GPT(induction_copier().cfg)
    save_snapshot(blank, tmp_path, 0, 0)
    save_snapshot(induction_copier(), tmp_path, 16, 1000)
    rows = head_formation(list_snapshots(tmp_path)[::-1], tok, stories, range(1, V), length=9)
    assert [(r["step"], r["tokens"]) for r in rows] == [(0, 0), (16, 1000)]
    before, after = rows
    assert before["best_induction"] < 0.3 < 0.99 < after["best_induction"]
    assert after["induction"][1][0] == after["best_induction"]
    assert after["previous_token"][0][0] > 0.99 and before["best_previous_token"] < 0.5
    assert after["second_copy_loss"] < 0.01 < before["second_copy_loss"]
    record = snapshot_record(induction_copier(), tok, stories, story_batch(tok, stories, 20),
                             range(1, V), length=9)
    assert record["best_induction"] == pytest.approx(after["best_induction"])


def test_nan_to_none():
    assert nan_to_none([[1.0, math.nan], [math.nan]]) == [[1.0, None], [None]]
