"""Notebook 04's exercises: each reference passes its own check, and each mistake a hint
names fails with that hint."""

import re

import pytest
import torch
import torch.nn.functional as F

import tinycourse.exercises.sae  # noqa: F401  registers 04's exercises
from tinycourse.config import SAEConfig
from tinycourse.exercises.checker import check
from tinycourse.sae.model import SparseAutoencoder, sae_loss, topk_relu, weighted_l1

NAMES = ["04.topk_relu", "04.batch_topk_relu", "04.weighted_l1"]


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)




def test_weighted_l1_is_the_relu_sae_losss_sparsity_term():
    sae = SparseAutoencoder(SAEConfig(kind="relu", d_sae=32), d_in=8)
    x = torch.randn(16, 8)
    out = sae(x)
    assert torch.equal(sae_loss(sae, x, out).sparsity, weighted_l1(out.latents, sae.W_dec))


def _scatter(pre, dim, indices, values):
    return torch.zeros_like(pre).scatter_(dim, indices, values)


def _topk_no_relu(pre, k):
    values, indices = pre.topk(k, dim=-1)
    return _scatter(pre, -1, indices, values)


def _topk_dim0(pre, k):
    values, indices = pre.topk(k, dim=0)
    return _scatter(pre, 0, indices, F.relu(values))


def _topk_smallest(pre, k):
    values, indices = pre.topk(k, dim=-1, largest=False)
    return _scatter(pre, -1, indices, F.relu(values))


def _topk_threshold(pre, k):
    kth = pre.topk(k, dim=-1).values[..., -1:]
    return torch.where(pre >= kth.min(), F.relu(pre), 0.0)  # one threshold for all rows


def _topk_values_only(pre, k):
    return F.relu(pre.topk(k, dim=-1).values)


@pytest.mark.parametrize("wrong, hint", [
    (_topk_no_relu, "ReLU forgotten"),
    (_topk_dim0, "top-k over the batch axis"),
    (_topk_smallest, "you kept the k smallest entries"),
    (_topk_threshold, "some rows keep more than k latents"),
    (_topk_values_only, "return a dense tensor shaped like pre"),
])
def test_topk_mistakes_get_their_hint(wrong, hint):
    _fails("04.topk_relu", wrong, hint)


def _flat(pre, n, relu=True):
    values, indices = pre.flatten().topk(n)
    return torch.zeros(pre.numel()).scatter_(0, indices, F.relu(values) if relu else values
                                             ).view_as(pre)


@pytest.mark.parametrize("wrong, hint", [
    (topk_relu, "that is per-token top-k"),
    (lambda pre, k: _flat(pre, k), "you kept k entries for the whole batch"),
    (lambda pre, k: _flat(pre, k * len(pre), relu=False), "ReLU forgotten"),
    (lambda pre, k: _flat(pre, k * len(pre)).flatten(), "return a tensor shaped like pre"),
])
def test_batch_topk_mistakes_get_their_hint(wrong, hint):
    _fails("04.batch_topk_relu", wrong, hint)


@pytest.mark.parametrize("wrong, hint", [
    (lambda f, W: f.sum(-1).mean(), "your L1 is not weighted by the decoder row norms"),
    (lambda f, W: (f * W.norm(dim=-1) ** 2).sum(-1).mean(), "not its squared norm"),
    (lambda f, W: (f * W.norm(dim=-1)).mean(), "per-token sum, then mean over tokens"),
    (lambda f, W: (f * W.norm(dim=-1)).sum(), "mean over the batch, not the sum"),
    (lambda f, W: (f * W.norm(dim=-1)).sum(-1), "return one number"),
])
def test_weighted_l1_mistakes_get_their_hint(wrong, hint):
    _fails("04.weighted_l1", wrong, hint)
