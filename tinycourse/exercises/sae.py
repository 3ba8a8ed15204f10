"""Notebook 04's exercises: the TopK activation, batch top-k, and the ReLU SAE's
decoder-norm-weighted L1 penalty.

    04.topk_relu        each token keeps its k largest pre-activations      difficulty 1
    04.batch_topk_relu  the batch keeps its k * batch largest               difficulty 2
    04.weighted_l1      sum_i f_i ||W_dec,i||, mean over tokens             difficulty 2

References: `sae.model.topk_relu`, `sae.model.batch_topk_relu`, `sae.model.weighted_l1`
(the sparsity term of `sae_loss` for a ReLU SAE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..sae.model import batch_topk_relu, topk_relu, weighted_l1
from ._mistakes import as_array, like, safely
from .checker import Case, Exercise, Hint, register

# --- 04.topk_relu ----------------------------------------------------------------------------


def _topk_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    return [
        Case("a batch of 8 tokens, k=4", (torch.randn(8, 32, generator=g), 4)),
        Case("mostly negative pre-activations, k=6", (torch.randn(6, 12, generator=g) - 1.5, 6)),
        Case("a batch of one token, k=3", (torch.randn(1, 16, generator=g), 3)),
        Case("k = d_sae", (torch.randn(4, 5, generator=g), 5)),
        Case("extra leading axes (batch, pos, d_sae), k=2",
             (torch.randn(2, 3, 10, generator=g), 2)),
    ]


def _topk_no_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, indices, values)


def _topk_over_batch(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=0)
    return torch.zeros_like(pre).scatter_(0, indices, F.relu(values))


def _topk_smallest(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1, largest=False)
    return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))


def _dense_shape_differs(case: Case, expected, got) -> bool:
    return not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(expected.shape)


TOPK_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _topk_no_relu(*case.args))),
         "ReLU forgotten: a kept pre-activation that is negative must become 0 "
         "(apply F.relu to the k values you keep)"),
    Hint(safely(lambda case, expected, got: case.args[1] <= case.args[0].shape[0]
                and like(got, _topk_over_batch(*case.args))),
         "top-k over the batch axis: each token (row) keeps its own k largest latents, so "
         "take topk along the last axis (dim=-1), not dim=0"),
    Hint(safely(lambda case, expected, got: like(got, _topk_smallest(*case.args))),
         "you kept the k smallest entries: topk's largest=True is the default"),
    Hint(safely(lambda case, expected, got: isinstance(got, torch.Tensor)
                and int((got != 0).sum(-1).max()) > case.args[1]),
         "some rows keep more than k latents: a threshold test (pre >= k-th value) keeps "
         "ties too; scatter the topk indices instead"),
    Hint(safely(_dense_shape_differs),
         "return a dense tensor shaped like pre: zeros everywhere except each row's k kept "
         "entries (torch.zeros_like(pre).scatter_(-1, indices, values))"),
)

register(Exercise(name="04.topk_relu", reference=topk_relu, cases=_topk_cases, hints=TOPK_HINTS))

# --- 04.batch_topk_relu ---------------------------------------------------------------------


def _batch_topk_cases() -> list[Case]:
    g = torch.Generator().manual_seed(44)
    busy = torch.randn(6, 20, generator=g)
    busy[2] += 3.0  # one token with much more going on than the others
    return [
        Case("one busy token among quiet ones, k=3", (busy, 3)),
        Case("a batch of 16 tokens, k=4", (torch.randn(16, 32, generator=g), 4)),
        Case("mostly negative pre-activations, k=5", (torch.randn(4, 10, generator=g) - 1.5, 5)),
        Case("a batch of one token, k=2", (torch.randn(1, 12, generator=g), 2)),
    ]


def _flat_topk(pre: torch.Tensor, n: int, relu: bool = True) -> torch.Tensor:
    values, indices = pre.flatten().topk(n)
    values = F.relu(values) if relu else values
    return torch.zeros(pre.numel()).scatter_(0, indices, values).view_as(pre)


BATCH_TOPK_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, topk_relu(*case.args))),
         "that is per-token top-k: batch top-k ranks the whole batch together (flatten it) "
         "and keeps its k * batch largest entries, so a busy token may use more than k"),
    Hint(safely(lambda case, expected, got: like(got, _flat_topk(case.args[0], case.args[1]))),
         "you kept k entries for the whole batch; keep k * batch (k is the average per token)"),
    Hint(safely(lambda case, expected, got: like(
        got, _flat_topk(case.args[0], case.args[1] * case.args[0].shape[0], relu=False))),
         "ReLU forgotten: a kept pre-activation that is negative must become 0"),
    Hint(safely(lambda case, expected, got: tuple(got.shape) != tuple(expected.shape)),
         "return a tensor shaped like pre (batch, d_sae): scatter into the flattened batch, "
         "then .view_as(pre)"),
)

register(Exercise(name="04.batch_topk_relu", reference=batch_topk_relu, cases=_batch_topk_cases,
                  hints=BATCH_TOPK_HINTS))

# --- 04.weighted_l1 ----------------------------------------------------------------------------


def _l1_cases() -> list[Case]:
    g = torch.Generator().manual_seed(40)

    def latents(batch: int, d_sae: int) -> torch.Tensor:
        return F.relu(torch.randn(batch, d_sae, generator=g))

    uneven = torch.randn(24, 8, generator=g) * torch.rand(24, 1, generator=g).mul(3).add(0.1)
    unit = F.normalize(torch.randn(24, 8, generator=g), dim=-1)
    return [
        Case("decoder rows of unequal norms", (latents(16, 24), uneven)),
        Case("unit-norm decoder rows", (latents(16, 24), unit)),
        Case("a batch of one token", (latents(1, 24), uneven)),
        Case("all latents off", (torch.zeros(5, 24), uneven)),
    ]


def _weighted(case: Case, power: float = 1.0) -> torch.Tensor:
    latents, W_dec = case.args
    return latents * W_dec.norm(dim=-1) ** power


L1_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, case.args[0].sum(-1).mean())),
         "your L1 is not weighted by the decoder row norms: multiply each latent by "
         "||W_dec[i]|| (W_dec.norm(dim=-1)), or the SAE can shrink latents and grow "
         "decoder rows to dodge the penalty"),
    Hint(safely(lambda case, expected, got: like(got, _weighted(case, 2.0).sum(-1).mean())),
         "weight each latent by its decoder row's norm, not its squared norm"),
    Hint(safely(lambda case, expected, got: like(got, _weighted(case).mean())),
         "per-token sum, then mean over tokens: you averaged over the latents too (the "
         "penalty of a token is the sum over its d_sae latents)"),
    Hint(safely(lambda case, expected, got: len(case.args[0]) > 1
                and like(got, _weighted(case).sum())),
         "mean over the batch, not the sum: the penalty is per token, like the MSE, so "
         "l1_coeff does not depend on the batch size"),
    Hint(safely(lambda case, expected, got: as_array(got).shape != ()),
         "return one number (a 0-d tensor): the batch's mean penalty per token"),
)

register(Exercise(name="04.weighted_l1", reference=weighted_l1, cases=_l1_cases, hints=L1_HINTS))
