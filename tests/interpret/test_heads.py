"""The head catalogue: each pattern score against a hand count, a hand-planted previous-token
+ induction circuit (norm-free GPT, one-hot residual subspaces) catalogued correctly and a
random model not, composition against its random baseline, and the OV copying score."""

import math

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.heads import (DETECTOR_HEADS, SCORES, composition_baseline, composition_scores,
                                        copying_scores, head_detector_scores, head_scores, key_masks,
                                        pattern_scores, pivot_ids, repeated_random_tokens)
from tinycourse.lm.model import GPT

V, CTX, START = 16, 20, 0  # planted model: vocab, positions, start token
TOK, POS, PREV = slice(0, V), slice(V, V + CTX), slice(V + CTX, 2 * V + CTX)  # residual slots
BIG = 1e3  # attention logit of a planted target: softmax puts all mass there


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def planted_model() -> GPT:
    """Layer 0 head 0 attends exactly to the previous token (positions one-hot, W_QK a shift)
    and copies its token into the PREV slot; layer 1 head 0 attends to keys whose PREV slot
    holds the query's token: induction by K-composition. Every other head has zero weights
    (uniform attention); MLPs and norms do nothing."""
    cfg = ModelConfig(n_layers=2, d_model=2 * V + CTX + 4, n_heads=2, d_head=CTX, d_mlp=8,
                      n_ctx=CTX, d_vocab=V, norm="none", tied_embeddings=True)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, TOK] = torch.eye(V)
        model.W_pos[:, POS] = torch.eye(CTX)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        scale = math.sqrt(cfg.d_head) * BIG  # undo the 1/sqrt(d_head)
        a0.W_Q[0][POS] = torch.eye(CTX) * scale  # q of position p: e_p
        a0.W_K[0][POS] = torch.eye(CTX).roll(1, dims=1)  # k of p': e_{p'+1}: q.k = [p' = p-1]
        a0.W_V[0][TOK, :V] = torch.eye(V)
        a0.W_O[0][:V, PREV] = torch.eye(V)
        a1.W_Q[0][TOK, :V] = torch.eye(V) * scale
        a1.W_K[0][PREV, :V] = torch.eye(V)
    return model


def test_planted_model_weights_land_where_meant():
    model = planted_model()
    a0 = model.blocks[0].attn
    assert a0.qkv.weight.abs().sum() > 0 and model.blocks[1].attn.W_K[0][PREV, :V].equal(torch.eye(V))
    assert a0.W_O[1].abs().sum() == 0


def test_repeated_random_tokens():
    t = repeated_random_tokens(5, 7, 10, seed=3, start_id=4)
    assert t.shape == (5, 15) and t.dtype == torch.long
    assert (t[:, 0] == 4).all() and (t[:, 1:] != 4).all() and t.max() < 10
    assert t[:, 1:8].equal(t[:, 8:])
    assert t.equal(repeated_random_tokens(5, 7, 10, seed=3, start_id=4))
    assert repeated_random_tokens(2, 3, 10, seed=0).shape == (2, 6)


def test_key_masks_by_hand():
    t = torch.tensor([[5, 7, 5, 5]])
    m = {name: mask[0].int().tolist() for name, mask in key_masks(t).items()}
    assert m["previous_token"] == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert m["current_token"] == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert m["start_token"] == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert m["duplicate_token"] == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0]]
    # t[k-1] == t[q], 1 <= k <= q: after the 5s at 0, 2 (and 3 itself, after the 5 at 2)
    assert m["induction"] == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1]]
    sink = key_masks(torch.tensor([[9, 1, 9, 2]]), start_id=9)["start_token"][0].int().tolist()
    assert sink == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0]]


def test_pattern_scores_by_hand():
    t = torch.tensor([[5, 7, 5, 5]])
    p = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.6, 0.2, 0], [0.1, 0.3, 0.4, 0.2]])
    s = {name: v.item() for name, v in pattern_scores(p[None, None], t).items()}
    assert set(s) == set(SCORES)
    assert s["previous_token"] == pytest.approx((0.5 + 0.6 + 0.4) / 3)
    assert s["current_token"] == pytest.approx((0.5 + 0.2 + 0.2) / 3)
    assert s["start_token"] == pytest.approx((0.5 + 0.2 + 0.1) / 3)
    assert s["duplicate_token"] == pytest.approx((0.2 + 0.5) / 2)  # queries 2 and 3 only
    assert s["induction"] == pytest.approx((0.6 + 0.5) / 2)
    assert s["distance"] == pytest.approx((0 + 0.5 + (0.4 + 0.6) + (0.3 + 0.6 + 0.4)) / 4)
    ent = [-sum(x * math.log(x) for x in row if x > 0) for row in p.tolist()]
    assert s["entropy"] == pytest.approx(sum(ent) / 4)
    no_dup = pattern_scores(p[None, None], torch.tensor([[1, 2, 3, 4]]))
    assert no_dup["duplicate_token"].isnan().all() and no_dup["induction"].isnan().all()


def test_pattern_scores_batch_and_heads():
    """Each head scored on its own; batches pool their queries."""
    torch.manual_seed(0)
    t = torch.randint(0, 3, (3, 6))
    p = torch.randn(3, 2, 6, 6).masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), -torch.inf)
    p = p.softmax(-1)
    both = pattern_scores(p, t)
    head1 = pattern_scores(p[:, 1:], t)
    for name in SCORES:
        assert both[name].shape == (2,)
        torch.testing.assert_close(both[name][1:], head1[name], equal_nan=True)  # pivot: NaN, no marks named
    masks, m = key_masks(t)["duplicate_token"], p[:, 0]
    has = masks.any(-1)
    assert both["duplicate_token"][0] == pytest.approx(((m * masks).sum(-1)[has]).mean().item())


def test_planted_heads_are_catalogued():
    model = planted_model()
    tokens = repeated_random_tokens(16, (CTX - 1) // 2, V, seed=0, start_id=START)
    s = head_scores(model, tokens, start_id=START)
    assert all(v.shape == (2, 2) for v in s.values())
    assert s["previous_token"][0, 0] >= 0.95 and s["induction"][1, 0] >= 0.95
    assert s["distance"][0, 0] == pytest.approx(18 / 19, abs=1e-3)  # 1 back except at q = 0
    assert s["entropy"][0, 0] < 0.01 and s["entropy"][0, 1] > 1.5
    others = s["previous_token"].flatten()[1:].tolist() + s["induction"].flatten()[[0, 1, 3]].tolist()
    assert max(others) < 0.5
    assert torch.isfinite(torch.stack([v for k, v in s.items() if k != "pivot"])).all()


def test_random_model_gets_no_confident_label():
    torch.manual_seed(1)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=33, d_vocab=50)
    model = GPT(cfg).eval()
    tokens = repeated_random_tokens(8, 16, 50, seed=1, start_id=0)
    s = head_scores(model, tokens, start_id=0)
    for name in ("previous_token", "current_token", "start_token", "duplicate_token", "induction"):
        assert s[name].max() < 0.5, name


def test_composition_planted_pair_beats_the_baseline():
    model = planted_model()
    c, base = composition_scores(model), composition_baseline(model, n_draws=16, seed=0)
    assert all(v.shape == (2, 2, 2, 2) for v in c.values())
    assert c["k"][:, :, 0].isnan().all() and c["k"][1].isnan().all()  # only layer 0 -> 1
    assert c["k"][0, 0, 1, 0] > 1.5 * base["k"]  # prev-token OV writes what induction's key reads
    assert c["k"][0, 0, 1, 0] == pytest.approx(1 / math.sqrt(V))  # rank-V isometries: 1/sqrt(V)
    assert c["q"][0, 0, 1, 0] < 1e-6  # it does not feed the query
    assert c["v"][0, 0, 1, 0].isnan()  # layer 1's head 0 has no OV circuit: 0 / 0


def test_random_weights_score_near_the_baseline():
    torch.manual_seed(2)
    cfg = ModelConfig(n_layers=3, d_model=64, n_heads=4, d_head=8, d_mlp=16, n_ctx=8, d_vocab=20)
    model = GPT(cfg)
    c, base = composition_scores(model), composition_baseline(model, n_draws=32, seed=1)
    for name in ("q", "k", "v"):
        mean = c[name][~c[name].isnan()].mean().item()
        assert mean == pytest.approx(base[name], rel=0.25), name
    assert composition_baseline(model, 4, seed=3) == composition_baseline(model, 4, seed=3)


@pytest.mark.parametrize("sign, expected", [(1.0, 1.0), (-1.0, 0.0)])
def test_copying_score_of_identity_and_its_negative(sign, expected):
    torch.manual_seed(3)
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=8, n_ctx=8,
                      d_vocab=30, tied_embeddings=True)  # W_U = W_E^T
    model = GPT(cfg)
    with torch.no_grad():
        attn = model.blocks[0].attn
        attn.W_V[0] = torch.eye(16)[:, :8]  # W_OV = sign * projection: W_E W_OV W_E^T is +-PSD
        attn.W_O[0] = sign * torch.eye(16)[:8]
    s = copying_scores(model)
    assert s.shape == (1, 2)
    assert s[0, 0] == pytest.approx(expected, abs=1e-5)
    assert 0.0 <= s[0, 1] <= 1.0  # a random head: somewhere between


def test_pivot_keys_are_the_latest_mark_by_hand():
    t = torch.tensor([[5, 1, 7, 2, 2, 7]])  # marks: ids 1 and 2 (say "," and ".")
    m = key_masks(t, pivot_ids=[1, 2])["pivot"][0].int().tolist()
    assert m == [[0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0],
                 [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0]]
    p = torch.eye(6)[None, None]  # every query on itself: a pivot score only where q is a mark
    assert pattern_scores(p, t, pivot_ids=[1, 2])["pivot"].item() == pytest.approx(3 / 5)
    assert pattern_scores(p, t)["pivot"].isnan().all()  # no marks named


class _Pieces:
    def decode(self, ids):
        return {3: ",", 4: '."', 5: "a"}.get(ids[0], "b")


def test_pivot_ids_are_the_tokens_holding_marks():
    assert pivot_ids(_Pieces(), 8) == [3, 4]


def test_too_long_prompts_name_the_context():
    with pytest.raises(ValueError, match="n_ctx=20"):
        head_scores(planted_model(), torch.zeros(1, 21, dtype=torch.long))


def test_our_detector_scores_are_transformer_lens_head_detector_scores():
    tl = pytest.importorskip("transformer_lens")
    from transformer_lens.head_detector import detect_head

    from tinycourse.lm.transformer_lens import to_transformer_lens

    torch.manual_seed(4)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=24, d_vocab=12,
                      init_std=0.3)
    model = GPT(cfg).eval()
    tokens = torch.randint(0, 12, (5, 17))  # few ids: many duplicates and induction targets
    ours = head_detector_scores(model, tokens)
    hooked = to_transformer_lens(model)
    by_text = {f"prompt {i}": tokens[i:i + 1] for i in range(len(tokens))}
    # ours carries no HF tokenizer: hand TransformerLens the tokens of each prompt
    hooked.to_tokens = lambda seq, **kwargs: by_text[seq] if isinstance(seq, str) else tokens
    for name in DETECTOR_HEADS:
        theirs = detect_head(hooked, list(by_text), name)  # one prompt at a time, then the mean
        torch.testing.assert_close(ours[name], theirs.float(), atol=1e-5, rtol=1e-4)
    assert isinstance(tl.HookedTransformer, type)
