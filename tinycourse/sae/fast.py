"""The SAE trainer's fast paths, each equal in value and gradient to the plain code of
`model` it stands in for (tests/sae/test_fast.py checks every one). A learner reads
`model`; the trainer runs these:

    pre_activations   `sae.pre_activations(x)`, with b_dec's encoder gradient taken as a
                      matrix-vector product; or only some latents' columns (AuxK's dead ones)
    forward           `sae(x)` in training mode: topk/batchtopk decode k rows of W_dec a
                      token (embedding_bag) where that beats the dense product
    auxk_term         the AuxK term of `sae_loss`, or None where it does not apply (the
                      one place the trainer asks), computed on the dead latents alone
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import SAEOutput, SparseAutoencoder, _affine, auxk_applies, topk_relu


def pre_activations(sae: SparseAutoencoder, x: Tensor, latents: Tensor | None = None) -> Tensor:
    """`sae.pre_activations(x)`, for training. x (batch, d_in) -> (batch, d_sae); given
    `latents` (n,) indices, only theirs: (batch, n), at n / d_sae of the cost.

    An SAE's b_dec gets its gradient through the encoder as -W_enc @ sum_batch(grad), a
    matrix-vector product. Through (x - b_dec) @ W_enc autograd would compute the gradient
    of the whole centred input, a (batch x d_sae x d_in) matmul as big as the forward one,
    only to sum it.
    """
    W_enc, b_enc = sae.W_enc, sae.b_enc
    if latents is not None:
        W_enc, b_enc = W_enc.index_select(1, latents), b_enc.index_select(0, latents)
    if sae.is_transcoder:
        return _affine(b_enc, x, W_enc)
    zero = sae.b_dec - sae.b_dec.detach()  # exactly 0, carrying b_dec's gradient
    return _affine(b_enc - zero @ W_enc, x - sae.b_dec.detach(), W_enc)


def forward(sae: SparseAutoencoder, x: Tensor) -> SAEOutput:
    """`sae(x)`, as the trainer runs it. x (batch, d_in) -> SAEOutput

    In training mode topk/batchtopk decode sparsely where that pays (`sparse_decode_pays`):
    only k latents of a token are on, so the decoder reads k rows of W_dec instead of
    multiplying a mostly-zero (batch, d_sae) matrix, forward and backward. `latents` is
    then a detached dense copy, for the trainer's statistics (these kinds have no penalty
    on them)."""
    pre = pre_activations(sae, x)
    if sae.training and sae.kind in ("topk", "batchtopk") and sparse_decode_pays(pre.device):
        entries = topk_entries if sae.kind == "topk" else batch_topk_entries
        values, rows, cols = entries(pre, sae.cfg.k)
        reconstruction = sparse_decode(values, rows, cols, sae.W_dec, len(pre)) + sae.b_dec
        with torch.no_grad():
            latents = pre.new_zeros(pre.shape).index_put_((rows, cols), values.to(pre.dtype))
    else:
        latents = sae.activate(pre)
        reconstruction = sae.decode(latents)
    if sae.cfg.skip_connection:
        reconstruction = reconstruction + x @ sae.W_skip
    return SAEOutput(reconstruction, latents, pre)


def auxk_term(sae: SparseAutoencoder, x: Tensor, dead: Tensor, reconstruction: Tensor,
              target: Tensor) -> Tensor | None:
    """The AuxK loss `sae_loss(sae, target, sae(x), dead=dead).auxk`, or None where
    `auxk_applies` says there is none. x (batch, d_in); dead (d_sae,) bool; reconstruction
    (batch, d_out), the main forward's (its error is what AuxK fits); target (batch, d_out)
    -> scalar, to be weighted by aux_coeff.

    It reads only the dead latents: their pre-activations, recomputed from x
    (batch x d_in x n_dead, where the main forward's would bring all d_sae and their
    gradient back), and their rows of W_dec, so its cost follows the number of dead
    latents, not d_sae. The normalisation is `model.auxk_loss`'s.
    """
    if not auxk_applies(sae, dead):
        return None
    dead_ids = dead.nonzero().squeeze(-1)
    candidates = pre_activations(sae, x, dead_ids).float()  # (batch, n_dead)
    W_dead = sae.W_dec.float().index_select(0, dead_ids)  # (n_dead, d_out)
    k = min(sae.aux_k, len(dead_ids))
    if sparse_decode_pays(candidates.device):
        error_hat = sparse_decode(*topk_entries(candidates, k), W_dead, len(candidates))
    else:
        error_hat = topk_relu(candidates, k) @ W_dead
    error = target - reconstruction.detach().float()
    error_var = (error - error.mean(0)).pow(2).sum().clamp_min(1e-12)
    target_var = (target - target.mean(0)).pow(2).sum(-1).mean().detach()
    return (error_hat - error).pow(2).sum() / error_var * target_var


# --- sparse top-k decoding ------------------------------------------------------------------

def sparse_decode_pays(device: torch.device) -> bool:
    """Whether `sparse_decode` beats the dense product on this device. On CPUs it wins or
    ties: the dense decode is a large share of a step there. On GPUs it does not:
    embedding_bag's CUDA backward sorts and scatters, while tensor cores make the dense
    decode cheap (the timings are in benchmarks/README.md)."""
    return torch.device(device).type == "cpu"


def sparse_decode(values: Tensor, rows: Tensor, cols: Tensor, W_dec: Tensor,
                  n_rows: int) -> Tensor:
    """sum_j values_j * W_dec[cols_j] into row rows_j of an (n_rows, d_out) output, rows
    sorted: nnz x d_out work where `latents @ W_dec` costs n_rows x d_sae x d_out, and
    the same economy backward (embedding_bag differentiates W_dec and the values)."""
    offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
    return F.embedding_bag(cols, W_dec, offsets, mode="sum",
                           per_sample_weights=values.to(W_dec.dtype))


def topk_entries(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """`topk_relu` as its nonzero candidates: (values, rows, cols), each (batch * k,),
    row-major. (batch, d_sae) ->"""
    values, cols = pre.topk(k, dim=-1, sorted=False)
    rows = torch.arange(len(pre), device=pre.device).repeat_interleave(k)
    return F.relu(values).flatten(), rows, cols.flatten()


def batch_topk_entries(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """`batch_topk_relu` as (values, rows, cols), each (batch * k,), sorted by row.
    (batch, d_sae) ->"""
    flat = pre.flatten()
    values, indices = flat.topk(k * len(pre), sorted=False)
    order = indices.argsort()  # row-major, as sparse_decode's bags need
    indices = indices[order]
    return F.relu(values[order]), indices // pre.shape[-1], indices % pre.shape[-1]


__all__ = ["pre_activations", "forward", "auxk_term", "sparse_decode_pays", "sparse_decode",
           "topk_entries", "batch_topk_entries"]
