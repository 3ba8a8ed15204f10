"""Notebook 06's exercises: each reference passes its own check and equals the package's
computation, each mistake a hint names fails with that hint, and a stub falls back."""

import math
import re

import numpy as np
import pytest
import torch

import tinycourse.exercises.features as ex
from tinycourse.config import FeaturesConfig, ModelConfig, SAEConfig
from tinycourse.evaluate.groundtruth import auroc
from tinycourse.exercises.checker import EXERCISES, ExerciseFailed, check
from tinycourse.interpret.features import ScanState, naive_top_contexts
from tinycourse.interpret.logits import direct_logit_attribution
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

NAMES = ["06.merge_top_k", "06.direct_logit_attribution", "06.detection_auroc"]


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)


@pytest.mark.parametrize("name", NAMES)
def test_each_reference_passes(name, capsys):
    reference = EXERCISES[name].reference
    assert check(name, reference) is reference
    assert f"{name}: correct on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_falls_back_to_the_reference(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(name, stub) is EXERCISES[name].reference
    assert "not attempted yet: using the reference" in capsys.readouterr().out


@pytest.mark.parametrize("name, expected", [("06.merge_top_k", "expected a tuple"),
                                            ("06.direct_logit_attribution", "expected a torch.Tensor"),
                                            ("06.detection_auroc", "expected a number")])
def test_a_stub_that_returns_none_fails_on_the_type(name, expected):
    with pytest.raises(ExerciseFailed, match=f"type differs: {expected}.*got None"):
        check(name, lambda *args: None)


def test_the_cases_have_their_edge_cases():
    merge = EXERCISES["06.merge_top_k"].cases()
    values, positions = ex.merge_top_k(*merge[2].args)
    assert (values[2] == 0).all() and (positions[2] == -1).all()  # the latent never active
    dla = EXERCISES["06.direct_logit_attribution"].cases()
    assert ex.layernorm_logit_effects(*dla[2].args)[1].abs().max() < 1e-5  # erased by LayerNorm
    equal = EXERCISES["06.detection_auroc"].cases()[2]
    assert ex.detection_auroc(*equal.args) == 0.5


# --- the references are the package's computations ---------------------------------------


def _scan(acts, positions, k, batches):
    """merge_top_k folded over the batches, its answer fed back as the running state."""
    values = torch.full((acts.shape[1], k), -math.inf)
    where = torch.full((acts.shape[1], k), -1, dtype=torch.int64)
    for rows in np.array_split(np.arange(len(acts)), batches):
        values, where = ex.merge_top_k(values, where, acts[rows], positions[rows])
    return values, where


@pytest.mark.parametrize("quantised", [False, True])
def test_merge_top_k_is_the_naive_top_k_of_everything_seen(quantised):
    g = torch.Generator().manual_seed(3)
    acts = torch.relu(torch.randn(60, 7, generator=g) - 0.5)
    acts[:, 3] = 0  # a latent never active
    if quantised:
        acts = acts.mul(2).round()  # many ties
    positions = torch.arange(60) * 3 + 5
    values, where = _scan(acts, positions, 5, batches=6)
    naive_values, rows = naive_top_contexts(acts, 5)
    assert torch.equal(values, torch.from_numpy(naive_values))
    assert torch.equal(where, torch.from_numpy(np.where(rows < 0, -1, positions.numpy()[rows])))


def test_merge_top_k_is_scan_state_update_then_top():
    g = torch.Generator().manual_seed(4)
    a, b = torch.relu(torch.randn(9, 5, generator=g)), torch.relu(torch.randn(11, 5, generator=g))
    state = ScanState(5, FeaturesConfig(top_k=4))
    state.update(a, torch.arange(9))
    shown = state.top()  # empty slots 0 / -1
    state.update(b, torch.arange(9, 20))
    expected = state.top()
    kept = shown[0].masked_fill(shown[1] < 0, -math.inf), shown[1]  # empty slots -inf / -1
    for running in (shown, kept):
        for got, want in zip(ex.merge_top_k(*running, b, torch.arange(9, 20)), expected):
            assert torch.equal(got, want)


def test_logit_attribution_of_is_the_packages_on_a_model_and_sae():
    model = GPT(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=8,
                            d_vocab=30, init_std=0.3))
    with torch.no_grad():
        model.ln_final.weight.add_(0.3 * torch.randn(16))
    sae = SparseAutoencoder(SAEConfig(kind="topk", hook_in="blocks.0.hook_resid_post", d_sae=12, k=2),
                            d_in=16)
    expected = direct_logit_attribution(model, sae, 0.8)
    got = ex.layernorm_logit_effects(sae.W_dec.detach(), model.ln_final.weight.detach(), 0.8,
                                  model.W_U.detach())
    torch.testing.assert_close(got, expected)
    rows = sae.W_dec.detach() - sae.W_dec.detach().mean(-1, keepdim=True)  # the docstring's formula
    torch.testing.assert_close(got, (rows * 0.8 * model.ln_final.weight.detach()) @ model.W_U.detach(),
                               rtol=1e-4, atol=1e-5)


def test_detection_auroc_is_one_column_of_the_packages():
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(-2, 3, (50, 3), generator=g).float()  # ties, zeros and negatives
    labels = torch.rand(50, generator=g) < 0.5
    full = auroc(scores, labels)
    for j in range(3):
        assert ex.detection_auroc(scores[:, j], labels) == pytest.approx(float(full[j]), abs=1e-12)
        pos, neg = scores[labels, j], scores[~labels, j]
        diff = pos[:, None] - neg[None, :]
        by_pairs = float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
        assert ex.detection_auroc(scores[:, j], labels) == pytest.approx(by_pairs, abs=1e-12)


# --- 06.merge_top_k's mistakes -------------------------------------------------------------


def _learner_merge(old_v, old_p, acts, pos, *, ties="earliest", mask=True, largest=True, merge=True):
    """A learner's merge: concatenate, sort by position, stable-sort by value, keep k; each
    keyword one of the mistakes."""
    d, k = old_v.shape
    new_v, new_p = acts.T.float(), pos.expand(d, -1)
    if mask:
        new_v = torch.where(new_v > 0, new_v, -math.inf)
    v, p = (torch.cat([old_v, new_v], 1), torch.cat([old_p, new_p], 1)) if merge else (new_v, new_p)
    if v.shape[1] < k:
        v = torch.cat([v, torch.full((d, k - v.shape[1]), -math.inf)], 1)
        p = torch.cat([p, torch.full((d, k - p.shape[1]), -1, dtype=torch.int64)], 1)
    by_pos = p.argsort(dim=1, stable=True, descending=(ties == "latest"))
    v, p = v.gather(1, by_pos), p.gather(1, by_pos)
    key = v if largest else torch.where(torch.isinf(v), -math.inf, -v)  # smallest first
    order = key.argsort(dim=1, stable=True, descending=True)[:, :k]
    v, p = v.gather(1, order), p.gather(1, order)
    empty = torch.isinf(v)
    return v.masked_fill(empty, 0.0), p.masked_fill(empty, -1)


def test_a_learners_merge_passes():
    assert check("06.merge_top_k", _learner_merge) is _learner_merge


def test_merge_mistakes():
    _fails("06.merge_top_k", lambda *a: _learner_merge(*a, ties="latest"), "the earliest position wins")
    _fails("06.merge_top_k", lambda *a: _learner_merge(*a, mask=False), "you kept inactive tokens")
    _fails("06.merge_top_k", lambda *a: _learner_merge(*a, largest=False), "the k *largest* activations")
    _fails("06.merge_top_k", lambda *a: tuple(t.flip(1) for t in _learner_merge(*a)),
           "the k *largest* activations")
    _fails("06.merge_top_k", lambda *a: _learner_merge(*a, merge=False), "the new batch's top k alone")


def test_the_merge_hints_name_only_their_mistake():
    with pytest.raises(ExerciseFailed) as failed:
        check("06.merge_top_k", lambda *a: _learner_merge(*a, ties="latest"))
    assert "ties: equal activations" in str(failed.value)
    assert "inactive" not in str(failed.value) and "alone" not in str(failed.value)


# --- 06.direct_logit_attribution's mistakes ----------------------------------------------


def _centred(w_dec):
    return w_dec - w_dec.mean(-1, keepdim=True)


def test_dla_mistakes():
    name = "06.direct_logit_attribution"
    right = lambda W, w, s, U: (_centred(W) * s * w) @ U
    assert check(name, right) is right
    _fails(name, lambda W, w, s, U: (W * s * w) @ U, "centre each decoder row first")
    _fails(name, lambda W, w, s, U: (_centred(W) * s) @ U, "multiplies by its weight w")
    _fails(name, lambda W, w, s, U: (_centred(W) * w) @ U, "multiply by ln_scale")
    _fails(name, lambda W, w, s, U: (_centred(W) * s * w) @ U.T, "no transpose")  # raises on case 1
    square_only = lambda W, w, s, U: (_centred(W) * s * w) @ (U.T if U.shape[0] == U.shape[1] else U)
    _fails(name, square_only, "no transpose")  # computes, wrongly, on the square case


# --- 06.detection_auroc's mistakes -------------------------------------------------------


def _by_pairs(scores, labels, tie):
    diff = scores[labels][:, None] - scores[~labels][None, :]
    return float((diff > 0).double().mean() + tie * (diff == 0).double().mean())


def test_auroc_mistakes():
    name = "06.detection_auroc"
    right = lambda s, y: _by_pairs(s, y, 0.5)
    assert check(name, right) is right
    _fails(name, lambda s, y: _by_pairs(s, y, 0.0), "ties count half")
    _fails(name, lambda s, y: _by_pairs(s, y, 1.0), "ties count half")
    _fails(name, lambda s, y: 1 - _by_pairs(s, y, 0.5), "labels inverted")
    _fails(name, lambda s, y: float(((s > 0.5) == y).double().mean()), "an accuracy at one threshold")
    _fails(name, lambda s, y: float(((s >= s.median()) == y).double().mean()), "an accuracy at one threshold")
