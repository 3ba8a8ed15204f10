"""The trainer's fast paths (tinycourse.sae.fast) against the plain model they stand in
for: the same values and the same gradients."""

import pytest
import torch

from tinycourse.config import SAEConfig
from tinycourse.sae import fast
from tinycourse.sae.model import SparseAutoencoder, auxk_loss, sae_loss

KINDS = ("relu", "topk", "batchtopk", "jumprelu")
TRANSCODER = dict(hook_in="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out")

# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(kind="topk", **kw):
    return SAEConfig(kind=kind, d_sae=kw.pop("d_sae", 48), k=kw.pop("k", 4), **kw)


def _sae(kind="topk", transcoder=False, **kw) -> SparseAutoencoder:
    """Non-zero biases (and skip path), so that every gradient route is exercised."""
    extra = dict(skip_connection=True, **TRANSCODER) if transcoder else {}
    sae = SparseAutoencoder(cfg(kind, **extra, **kw), d_in=16, d_out=12 if transcoder else None)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
        if transcoder:
            sae.W_skip.normal_()
    return sae


def _grads(sae: SparseAutoencoder) -> dict:
    return {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("sparse_pays", [True, False])
def test_training_step_equals_the_plain_one(kind, transcoder, sparse_pays, monkeypatch):
    """The trainer's step (fast.forward, its sae_loss without AuxK, fast.auxk_term added)
    decodes k rows of W_dec a token (embedding_bag) where that pays, routes b_dec's
    encoder gradient through a matrix-vector product and fits AuxK on the dead latents
    alone; loss, latents and every gradient must match the plain sae(x) and sae_loss."""
    monkeypatch.setattr(fast, "sparse_decode_pays", lambda device: sparse_pays)
    sae = _sae(kind, transcoder, k=5)
    x, target = torch.randn(32, 16), torch.randn(32, 12 if transcoder else 16)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True

    def loss_and_grads(trainer):
        sae.zero_grad()
        if trainer:
            out = fast.forward(sae, x)
            loss = sae_loss(sae, target, out, penalty_coeff=0.5).total
            auxk = fast.auxk_term(sae, x, dead, out.reconstruction.detach(), target)
            assert (auxk is not None) == (kind in ("topk", "batchtopk"))
            if auxk is not None:
                loss = loss + sae.cfg.aux_coeff * auxk
        else:
            out = sae(x)
            loss = sae_loss(sae, target, out, penalty_coeff=0.5, dead=dead).total
        loss.backward()
        return loss.detach(), out.latents.detach(), _grads(sae)

    fast_loss, fast_latents, fast_grads = loss_and_grads(True)
    plain_loss, plain_latents, plain_grads = loss_and_grads(False)
    torch.testing.assert_close(fast_loss, plain_loss)
    torch.testing.assert_close(fast_latents, plain_latents)
    assert fast_grads.keys() == plain_grads.keys() >= {"W_enc", "b_enc", "W_dec", "b_dec"}
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], msg=name)


def test_forward_in_eval_mode_is_the_plain_one():
    """batchtopk's eval mode thresholds each token: no batch-level sparse decode there."""
    sae = _sae("batchtopk")
    sae.inference_threshold.fill_(1.3)
    sae.eval()
    x = torch.randn(10, 16)
    with torch.no_grad():
        for ours, plain in zip(fast.forward(sae, x), sae(x)):
            torch.testing.assert_close(ours, plain)


@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("ids", [None, [3, 0, 47, 20]])
def test_pre_activations_of_some_latents_are_those_columns(transcoder, ids):
    """AuxK's way in: the pre-activations of chosen latents alone (or all, with b_dec's
    gradient through the matrix-vector route), equal in value and in every gradient to
    those columns of the plain pre-activations."""
    torch.manual_seed(0)
    sae = _sae("topk", transcoder)
    ids = None if ids is None else torch.tensor(ids)
    x = torch.randn(32, 16)
    weights = torch.randn(32, 48 if ids is None else len(ids))
    grads = []
    for part in (True, False):
        sae.zero_grad()
        if part:
            pre = fast.pre_activations(sae, x, ids)
        else:
            pre = sae.pre_activations(x)
            pre = pre if ids is None else pre[:, ids]
        (pre * weights).sum().backward()
        grads.append((pre.detach(), _grads(sae)))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert grads[0][1].keys() == grads[1][1].keys()
    for name in grads[0][1]:
        torch.testing.assert_close(grads[0][1][name], grads[1][1][name], msg=name)


@pytest.mark.parametrize("n_dead", [3, 20, 48])
@pytest.mark.parametrize("transcoder", [False, True])
def test_auxk_term_matches_the_masked_definition(n_dead, transcoder):
    """auxk_term reads only the dead latents' pre-activations and decoder rows; the plain
    `auxk_loss` writes AuxK out over all latents (the others masked to -inf, fewer dead
    than aux_k leaving zeros): the same loss with the same gradients."""
    torch.manual_seed(0)
    sae = _sae("topk", transcoder, aux_k=8)
    d_out = 12 if transcoder else 16
    x, reconstruction, target = torch.randn(32, 16), torch.randn(32, d_out), torch.randn(32, d_out)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[torch.randperm(48)[:n_dead]] = True
    results = []
    for reference in (False, True):
        sae.zero_grad()
        if reference:
            loss = auxk_loss(sae, sae.pre_activations(x), dead, target - reconstruction, target)
        else:
            loss = fast.auxk_term(sae, x, dead, reconstruction, target)
        loss.backward()
        results.append((loss.detach(), _grads(sae)))
    (ours, our_grads), (ref, ref_grads) = results
    torch.testing.assert_close(ours, ref)
    assert our_grads.keys() == ref_grads.keys() >= {"W_enc", "b_enc", "W_dec"}
    assert ("b_dec" in ref_grads) == (not transcoder)  # an SAE's encoder reads x - b_dec
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], msg=name)


def test_auxk_term_is_the_same_decoded_sparsely_or_densely(monkeypatch):
    """CPUs decode AuxK's latents with embedding_bag, GPUs with a matmul (see
    sparse_decode_pays): both branches must give one loss and one gradient."""
    sae = SparseAutoencoder(cfg("topk", d_sae=64, k=4), d_in=16)
    x, reconstruction, target = torch.randn(32, 16), torch.randn(32, 16), torch.randn(32, 16)
    dead = torch.arange(64) % 3 == 0
    results = []
    for pays in (True, False):
        monkeypatch.setattr(fast, "sparse_decode_pays", lambda device, pays=pays: pays)
        sae.zero_grad()
        loss = fast.auxk_term(sae, x, dead, reconstruction, target)
        loss.backward()
        results.append((loss.detach(), sae.W_dec.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][1].abs().sum() > 0


def test_auxk_term_is_none_where_auxk_does_not_apply():
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    dead = torch.ones(48, dtype=torch.bool)
    for c in (cfg("relu"), cfg("jumprelu"), cfg("topk", aux_coeff=0.0)):
        assert fast.auxk_term(SparseAutoencoder(c, d_in=16), x, dead, y, y) is None
    topk = SparseAutoencoder(cfg("topk"), d_in=16)
    assert fast.auxk_term(topk, x, torch.zeros(48, dtype=torch.bool), y, y) is None
    assert fast.auxk_term(topk, x, dead, y, y) is not None
