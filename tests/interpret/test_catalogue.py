"""The head catalogue: the planted previous-token + induction pair is described as such, with
its copying and ablation cost; a random model gets no confident label; bad head names say
what exists."""

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.ablation import ablation_table, induction_groups
from tinycourse.interpret.catalogue import catalogue, describe_head, parse_head
from tinycourse.interpret.heads import copying_scores, head_scores, repeated_random_tokens
from tinycourse.interpret.in_context import repeated_sequences
from tinycourse.lm.model import GPT

from .test_heads import START, V
from .test_in_context import induction_copier


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _measure(model, vocab):
    tokens = repeated_random_tokens(16, (model.cfg.n_ctx - 1) // 2, vocab, seed=0, start_id=START)
    scores = {k: v.tolist() for k, v in head_scores(model, tokens, start_id=START).items()}
    batch = induction_groups(repeated_sequences(range(1, vocab), 8, (model.cfg.n_ctx - 1) // 2,
                                                seed=0, start_id=START))
    ablation = ablation_table(model, [batch])["delta"]
    return scores, copying_scores(model).tolist(), ablation


def test_the_planted_pair_is_catalogued_with_the_right_description():
    entries = {e["head"]: e for e in catalogue(*_measure(induction_copier(), V))}
    prev, induction = entries["L0H0"], entries["L1H0"]
    assert prev["labels"][0][0] == "previous-token" and prev["labels"][0][1] >= 0.95
    assert induction["labels"][0][0] == "induction" and induction["labels"][0][1] >= 0.95
    assert "ablating it costs" in induction["description"] and "second copy" in induction["description"]
    assert induction["description"].startswith("L1H0: induction (")
    assert entries["L0H1"]["description"].startswith("L0H1: no clear pattern")


def test_a_random_model_gets_no_confident_label():
    torch.manual_seed(1)
    model = GPT(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=33, d_vocab=50)).eval()
    entries = catalogue(*_measure(model, 50))
    assert len(entries) == 8
    assert all(not e["labels"] and "no clear pattern" in e["description"] for e in entries)


def test_descriptions_read_their_inputs():
    scores = {"previous_token": [[0.1]], "induction": [[float("nan")]], "distance": [[3.0]], "entropy": [[1.0]]}
    assert describe_head(0, 0, scores)["description"] == (
        "L0H0: no clear pattern (looks 3.0 tokens back on average, entropy 1.00 nats)")
    scores["previous_token"] = [[0.9]]
    got = describe_head(0, 0, scores, copying=[[0.95]], ablation={"pronoun": [[0.3]], "all": [[0.01]]})
    assert got["description"] == "L0H0: previous-token (0.90); copies (OV 0.95); ablating it costs +0.30 nats on pronouns"


@pytest.mark.parametrize("name, message", [("L9H0", "L9H0 does not exist: this model has layers 0-1, heads 0-3"),
                                           ("head 3", "is not a head name like L1H2")])
def test_a_bad_head_name_says_what_exists(name, message):
    with pytest.raises(ValueError, match=message):
        parse_head(name, 2, 4)
    assert parse_head("L1H3", 2, 4) == (1, 3)
