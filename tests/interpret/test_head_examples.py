"""The examples where each head is most active: the batched, bounded-memory top-n against a
brute-force sort of every query at once, on a random model (both measures, batches of
different lengths); a planted previous-token head whose examples all read q - 1; and the
JSON records and prompt patterns the heads page reads."""

import math

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.head_examples import (MEASURES, example_records, head_examples, prompt_patterns,
                                                token_label)
from tinycourse.lm.model import GPT

from .test_heads import CTX, START, V, planted_model

N_CTX, VOCAB, START_ID = 16, 40, 0


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def random_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX, d_vocab=VOCAB,
                      init_std=0.4)
    return GPT(cfg).eval()


def random_prompts(seed=0):
    """Three batches, the middle one shorter; each prompt starts with the start token, and a
    few hold it again in the middle (a key the attention measure must skip)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (9, N_CTX), generator=gen)
    tokens[:, 0] = START_ID
    tokens[2, 7] = tokens[5, 3] = START_ID
    return [tokens[:4], tokens[4:7, :11], tokens[7:]]


def brute_force(model, batches, measure, n, start_id, min_query, before, after):
    """Every query of every prompt scored one by one, sorted at once (stable: ties go to the
    earlier prompt and position): {(layer, head): [(value, weight, row, q, key, window)]}."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    found = {(l, h): [] for l in range(n_layers) for h in range(n_heads)}
    row = 0
    for batch in batches:
        names = [f"blocks.{l}.attn.hook_{w}" for l in range(n_layers) for w in ("pattern", "z")]
        _, cache = model.run_with_cache(batch, names=names)
        for b in range(batch.shape[0]):
            t = batch[b].tolist()
            for l in range(n_layers):
                pattern, z = cache[f"blocks.{l}.attn.hook_pattern"][b], cache[f"blocks.{l}.attn.hook_z"][b]
                for h in range(n_heads):
                    for q in range(min_query, len(t)):
                        keys = [k for k in range(1, q + 1) if t[k] != start_id]
                        if not keys:
                            continue
                        weights = [float(pattern[h, q, k]) for k in keys]
                        best = max(range(len(keys)), key=lambda j: (weights[j], -j))  # first of equals
                        value = weights[best] if measure == "attention" else float(
                            (z[q, h] @ model.blocks[l].attn.W_O[h].detach()).norm())
                        window = [t[p] if 0 <= p < len(t) else -1 for p in range(q - before, q + after + 1)]
                        found[l, h].append((value, weights[best], row + b, q, keys[best], window))
        row += batch.shape[0]
    return {lh: sorted(xs, key=lambda x: -x[0])[:n] for lh, xs in found.items()}


@pytest.mark.parametrize("measure", list(MEASURES))
def test_top_examples_equal_a_brute_force_sort(measure):
    model, batches = random_model(), random_prompts()
    kw = dict(n=5, start_id=START_ID, min_query=2, before=4, after=2)
    ex = head_examples(model, batches, measure=measure, **kw)
    expected = brute_force(model, batches, measure, **kw)
    assert ex.measure == measure and ex.values.shape == (2, 4, 5) and ex.windows.shape == (2, 4, 5, 7)
    for (l, h), rows in expected.items():
        assert torch.allclose(ex.values[l, h], torch.tensor([r[0] for r in rows]), atol=1e-5), (l, h)
        assert torch.allclose(ex.weights[l, h], torch.tensor([r[1] for r in rows]), atol=1e-5), (l, h)
        assert ex.rows[l, h].tolist() == [r[2] for r in rows], (l, h)
        assert ex.queries[l, h].tolist() == [r[3] for r in rows], (l, h)
        assert ex.keys[l, h].tolist() == [r[4] for r in rows], (l, h)
        assert ex.windows[l, h].tolist() == [r[5] for r in rows], (l, h)
    assert (ex.key_tokens != START_ID).all()  # the start token is never the key


def test_one_batch_or_many_give_the_same_examples():
    model, batches = random_model(1), random_prompts(1)
    full = torch.cat([batches[0], batches[2]])
    one = head_examples(model, [full], n=6, start_id=START_ID)
    many = head_examples(model, full.split(1), n=6, start_id=START_ID)
    for name in ("values", "rows", "queries", "keys", "windows"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name


def test_a_planted_previous_token_head_reads_the_token_before():
    model = planted_model()  # L0H0: previous token, exactly; L0H1: zero weights, uniform attention
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, V, (12, CTX), generator=gen)
    tokens[:, 0] = START
    ex = head_examples(model, tokens.split(5), n=8, start_id=START, min_query=4)
    assert (ex.keys[0, 0] == ex.queries[0, 0] - 1).all()
    assert torch.allclose(ex.weights[0, 0], torch.ones(8), atol=1e-4)
    records = example_records(ex, lambda i: f"t{i}")[0]
    assert records["head"] == "L0H0" and len(records["examples"]) == 8
    for r in records["examples"]:
        assert r["back"] == 1 and r["key_at"] == r["at"] - 1 and r["weight"] == pytest.approx(1, abs=1e-3)
        assert r["tokens"][r["key_at"]] == r["key_token"]
        assert r["tokens"][r["at"]] == f"t{int(tokens[r['row'], r['query']])}"
    # a head that attends evenly reads its first key hardest where it has the fewest: the
    # earliest query allowed (min_query), at 1 / (q + 1)
    assert (ex.queries[0, 1] == 4).all() and (ex.keys[0, 1] == 1).all()
    assert torch.allclose(ex.weights[0, 1], torch.full((8,), 1 / 5), atol=1e-5)


def test_fewer_queries_than_n_pad_and_records_skip_them():
    model = random_model()
    tokens = random_prompts()[0][:1, :6]  # queries 2..5 after min_query=2: four per head
    ex = head_examples(model, [tokens], n=6, start_id=START_ID, min_query=2, before=2, after=1)
    assert torch.isnan(ex.values[..., 4:]).all() and (ex.rows[..., 4:] == -1).all()
    assert (ex.rows[..., :4] == 0).all() and not torch.isnan(ex.values[..., :4]).any()
    records = example_records(ex, str)
    assert len(records) == 8 and all(len(r["examples"]) == 4 for r in records)
    for r in (x for rec in records for x in rec["examples"]):
        assert r["tokens"][r["at"]] == str(int(tokens[0, r["query"]]))
        if r["key_at"] is None:  # further back than the window shows
            assert r["back"] > r["at"]
        else:
            assert r["tokens"][r["key_at"]] == r["key_token"] == str(int(tokens[0, r["key"]]))
    assert len(records[0]["examples"][0]["tokens"]) <= 4 and math.isfinite(records[0]["examples"][0]["weight"])


def test_bad_arguments_are_refused():
    model = random_model()
    with pytest.raises(ValueError, match="unknown measure 'loud'"):
        head_examples(model, [], measure="loud")
    with pytest.raises(ValueError, match="longer than the model's n_ctx=16"):
        head_examples(model, [torch.zeros(1, 17, dtype=torch.long)])


class CharTokenizer:
    start_id = 0

    def encode(self, text):
        return [1 + ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids):
        return "\n" if ids == [1 + 10 % (VOCAB - 1)] else f"<{ids[0]}>"


def test_prompt_patterns_are_rounded_rows_of_every_head():
    model, tokenizer = random_model(), CharTokenizer()
    out = prompt_patterns(model, tokenizer, "ab\ncdefghijklmnopqrstuvwxyz", max_tokens=10)
    patterns = torch.tensor(out["patterns"])
    assert patterns.shape == (2, 4, 10, 10) and len(out["tokens"]) == 10
    assert out["tokens"][:4] == ["<start>", "<20>", "<21>", "\\n"]  # ids 1 + ord(c) % 39; a newline spelled out
    assert torch.allclose(patterns.sum(-1), torch.ones(2, 4, 10), atol=5e-3)
    assert (patterns.triu(1) == 0).all()
    assert torch.allclose(patterns, (patterns * 1000).round() / 1000, atol=1e-6, rtol=0)  # three decimals
    assert token_label(tokenizer, 0) == "<start>"
