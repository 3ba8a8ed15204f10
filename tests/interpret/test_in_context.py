"""In-context probes: token groups from storyworld's labels by hand, name losses against a
direct computation, and the induction probe on a hand-planted induction circuit (score 1,
second copy predicted) against a random model (neither)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinycourse.config import ModelConfig
from tinycourse.corpus.storyworld import Span, Story, generate_stories
from tinycourse.corpus.tokenizer import train_bpe
from tinycourse.interpret.in_context import (first_mention_spans, induction_probe, name_losses,
                                             repeated_sequences, token_groups, token_losses,
                                             training_token_ids)
from tinycourse.lm.model import GPT

from .test_heads import CTX, PREV, START, TOK, V, planted_model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def hand_story() -> Story:
    text = "Zubo saw Mia. Zubo said hi to her."
    #       0123456789012345678901234567890123
    spans = (Span(14, 18, "name_repeat", "Zubo"), Span(30, 33, "pronoun_referent", "Mia"))
    return Story(text, spans, "hand", ("Zubo", "Mia"))


def test_first_mentions_and_groups_by_hand():
    story = hand_story()
    assert first_mention_spans(story) == [(0, 4), (9, 12)]
    # tokens: [start] "Zu" "bo" " saw" " Mia" "." " Zubo" " said" " hi" " to" " her" "."
    offsets = [(0, 0), (0, 2), (2, 4), (4, 8), (8, 12), (12, 13), (13, 18), (18, 23), (23, 26),
               (26, 29), (29, 33), (33, 34)]
    assert token_groups(story, offsets) == [
        None, "name_first", "name_first", "other", "name_first", "other", "name_repeat",
        "other", "other", "other", "pronoun", "other"]


def test_name_losses_average_the_token_losses_of_each_group():
    stories = list(generate_stories(6, seed=0))
    tokenizer = train_bpe((s.text for s in generate_stories(200, seed=0)), vocab_size=400)
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=64,
                      d_vocab=tokenizer.vocab_size)
    model = GPT(cfg).eval()
    got = name_losses(model, tokenizer, stories)
    sums = {g: [] for g in got}
    for story in stories:
        ids = [tokenizer.start_id] + tokenizer.encode(story.text)
        offsets = [(0, 0)] + [tuple(o) for o in tokenizer.offsets(story.text)]
        with torch.no_grad():
            logits = model(torch.tensor([ids[:64]]))[0]
        losses = F.cross_entropy(logits, torch.tensor(ids[1:65]), reduction="none")
        for group, loss in zip(token_groups(story, offsets)[1:65], losses.tolist()):
            if group:
                sums[group].append(loss)
    for group, values in sums.items():
        assert got[group]["tokens"] == len(values) > 0, group
        assert got[group]["loss"] == pytest.approx(np.mean(values), rel=1e-5)
    assert np.allclose(token_losses(model, [0, 1, 2]), token_losses(model, [0, 1, 2, 3])[:2])


def induction_copier() -> GPT:
    """The planted previous-token + induction pair, whose induction head also copies the token
    it attends to into the logits (the unembedding is tied, so the TOK slot is the logit)."""
    model = planted_model()
    with torch.no_grad():
        a1 = model.blocks[1].attn
        a1.W_V[0][TOK, :V] = torch.eye(V) * 30.0
        a1.W_O[0][:V, TOK] = torch.eye(V)
    return model


def test_planted_induction_head_is_found_and_predicts_the_second_copy():
    model = induction_copier()
    result = induction_probe(model, range(1, V), start_id=START, n_seqs=16, length=9)
    assert result["length"] == 9 and (2 * 9 + 1) <= CTX
    assert result["best_head"] == [1, 0] and result["best_induction"] > 0.99
    assert result["second_copy_loss"] < 0.01 < math.log(V - 2) < result["first_copy_loss"]
    scores = torch.tensor(result["induction"])
    scores[1, 0] = 0
    assert scores.max() < 0.3  # the previous-token head and the idle ones do not


def test_a_random_model_has_no_induction_head():
    torch.manual_seed(1)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=81, d_vocab=50)
    result = induction_probe(GPT(cfg).eval(), range(1, 50), start_id=0, n_seqs=8, length=40)
    assert result["best_induction"] < 0.1
    assert result["second_copy_loss"] == pytest.approx(result["first_copy_loss"], rel=0.05)


def test_a_too_long_sequence_is_cut_to_fit_the_context():
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=21, d_vocab=20)
    assert induction_probe(GPT(cfg).eval(), range(1, 20), start_id=0, length=40)["length"] == 10


def test_repeated_sequences_and_training_ids():
    t = repeated_sequences([5, 7, 9], 4, 6, seed=0, start_id=0)
    assert t.shape == (4, 13) and (t[:, 0] == 0).all() and t[:, 1:7].equal(t[:, 7:])
    assert set(t[:, 1:].unique().tolist()) <= {5, 7, 9}
    tokens = np.array([0, 1, 1, 1, 2, 0, 3, 3, 3, 3], dtype=np.uint16)
    assert training_token_ids(tokens, min_count=3, exclude=[0]) == [1, 3]
    with pytest.raises(ValueError, match="at least 2"):
        repeated_sequences([5], 1, 3, seed=0, start_id=0)
