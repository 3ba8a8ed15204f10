"""Sparse autoencoders and transcoders: one module, four activation rules.

    pre     = (x - b_dec) @ W_enc + b_enc        an SAE centres its input on the decoder bias
            =  x @ W_enc + b_enc                 a transcoder (see below)
    latents = act(pre)                           relu | topk | batchtopk | jumprelu
    x_hat   = latents @ W_dec + b_dec (+ x @ W_skip, a transcoder's optional skip path)

An SAE reconstructs the activation it reads (d_out = d_in). A transcoder reads `hook_in`
and predicts `hook_out` (e.g. an MLP's input and output): its input and output live in
different spaces, so subtracting the output bias b_dec from the input would mean nothing.
It has no input-side bias at all: (x - c) @ W_enc + b_enc = x @ W_enc + (b_enc - c @ W_enc),
so one would be redundant with b_enc anyway.

The activation rules, each with its sparsity mechanism (see `sae_loss`):

    relu       ReLU(pre); loss adds l1_coeff * sum_i f_i ||W_dec,i||   (Anthropic, April 2024)
    topk       keep each token's k largest pre-activations              (Gao et al. 2024)
    batchtopk  keep the batch's k * batch largest; at inference a
               learned global threshold, so each token is on its own   (Bussmann et al. 2024)
    jumprelu   pre * H(pre - theta), learned theta > 0; loss adds
               l0_coeff * L0 through straight-through estimators       (Rajamanoharan et al. 2024)

Scale. The trainer feeds inputs multiplied by a constant `input_scale` that makes their
mean squared norm d_in (and targets by `output_scale`), so one set of hyperparameters
fits every layer and model (Anthropic's April 2024 update does the same). The buffers
record those constants; `fold_scale` rewrites the weights so that the module takes and
returns raw activations, and `save_sae` always saves folded. Folding keeps W_dec as it is
(unit-norm directions stay unit norm) and rescales everything upstream of it, so saved
latents are in the raw output's units: latent * W_dec[i] is its contribution to the raw
activation.

`load_sae` needs only this file: analysis code never imports the trainer. The trainer
runs faster equivalents of the training forward and of AuxK (`fast`), tested equal to
the plain code here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import ConfigError, SAEConfig

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "sae.safetensors", "cfg.json"
UNIT_NORM_KINDS = ("topk", "batchtopk", "jumprelu")  # decoder rows kept at unit norm
# Anthropic's April 2024 update initialises decoder columns to random directions with a
# fixed norm between 0.05 and 1, depending on the widths; we pick 0.1 (checked only on the
# synthetic data of the tests: a place to experiment).
RELU_DECODER_INIT_NORM = 0.1
# batchtopk: the inference threshold is an exponential moving average of each batch's
# smallest kept activation, moving this far toward the new value every step (SAELens's
# default `topk_threshold_lr`). The first batch sets it outright, so there is no bias to 0.
THRESHOLD_EMA_RATE = 0.01
WEISZFELD_ITERATIONS = 50


class SAEOutput(NamedTuple):
    reconstruction: Tensor  # (batch, d_out)
    latents: Tensor  # (batch, d_sae), non-negative, mostly zero
    pre: Tensor  # (batch, d_sae) pre-activations: AuxK and the L0 estimator need them


class SAELoss(NamedTuple):
    total: Tensor  # mse + coeff * sparsity + aux_coeff * auxk
    mse: Tensor  # ||y - y_hat||^2 summed over dimensions, mean over the batch
    sparsity: Tensor  # relu: sum_i f_i ||W_dec,i||; jumprelu: L0; else 0 (mean over batch)
    auxk: Tensor  # AuxK loss where `auxk_applies` (topk/batchtopk, dead latents); else 0


# --- JumpReLU's straight-through estimators (Rajamanoharan et al. 2024, "Jumping Ahead") --

def _rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K of the pseudo-derivatives: 1 on (-1/2, 1/2), 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """f = pre * H(pre - theta). The true derivative in theta is 0 almost everywhere (a
    jump moves, no value changes continuously), so the backward pass uses the paper's
    pseudo-derivative d f / d theta := -(theta / eps) K((pre - theta) / eps), a
    kernel density estimate of how the expected loss changes as the jump moves. The
    derivative in pre is the ordinary one, H(pre - theta)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_out * (pre > threshold).to(grad_out.dtype)
        grad_theta = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad_out
        return grad_pre, grad_theta.sum_to_size(threshold.shape).to(threshold.dtype), None


class StepFunction(torch.autograd.Function):
    """H(pre - theta), the L0 indicator. The paper's pseudo-derivative in theta:
    -(1 / eps) K((pre - theta) / eps); in pre: 0, so the L0 penalty moves only thresholds."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad_out
        return None, grad_theta.sum_to_size(threshold.shape).to(threshold.dtype), None


# --- top-k selections -------------------------------------------------------------------

def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Each row keeps its k largest entries (ReLU'd, so a kept negative becomes 0), the
    rest are 0 (Gao et al. 2024). (..., d_sae) -> (..., d_sae)"""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return pre.new_zeros(pre.shape).scatter_(-1, indices, F.relu(values))


def batch_topk_relu(pre: Tensor, k: int) -> Tensor:
    """The whole batch keeps its k * batch largest entries (Bussmann et al. 2024): L0 is k
    on average, and a token with more going on may use more latents than a quiet one.
    (batch, d_sae) -> (batch, d_sae)"""
    flat = pre.flatten()
    values, indices = flat.topk(k * (flat.numel() // pre.shape[-1]), sorted=False)
    return flat.new_zeros(flat.shape).scatter_(0, indices, F.relu(values)).view_as(pre)


@torch.no_grad()
def geometric_median(points: Tensor, iterations: int = WEISZFELD_ITERATIONS) -> Tensor:
    """The point minimising the sum of Euclidean distances to `points`, by Weiszfeld's
    iterations (a weighted mean, each point weighted by 1 / its distance). Bricken et al.
    (2023) start b_dec here: unlike the mean, outliers barely move it. (n, d) -> (d,)"""
    points = points.double()
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=-1).clamp_min(1e-8)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median.float()


def _affine(bias: Tensor, x: Tensor, W: Tensor) -> Tensor:
    """x @ W + bias for x (..., n), as one addmm: the bias rides in the matmul (no extra
    pass over the output, and under bf16 autocast the output stays bf16)."""
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[-1])


# --- the module ---------------------------------------------------------------------------

class SparseAutoencoder(nn.Module):
    """A sparse autoencoder (d_out None or d_in) or transcoder (cfg.hook_out set).

    Parameters: W_enc (d_in, d_sae), b_enc (d_sae), W_dec (d_sae, d_out), b_dec (d_out);
    W_skip (d_in, d_out) when cfg.skip_connection; log_threshold (d_sae) for jumprelu.
    Buffers: input_scale, output_scale (scalars, see the module docstring) and, for
    batchtopk, inference_threshold (scalar; 0 until training has estimated it).
    """

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__()
        d_out = d_in if d_out is None else d_out
        if not cfg.is_transcoder and d_out != d_in:
            raise ConfigError(
                f"an SAE reconstructs its input, so d_out must equal d_in ({d_in}), got {d_out}; "
                f"set sae.hook_out to train a transcoder"
            )
        if cfg.skip_connection and not cfg.is_transcoder:
            raise ConfigError("sae.skip_connection is for transcoders: an SAE's skip path "
                              "would just learn the identity. Set sae.hook_out or turn it off.")
        if cfg.kind in ("topk", "batchtopk") and cfg.k > cfg.d_sae:
            raise ConfigError(f"sae.k={cfg.k} is larger than sae.d_sae={cfg.d_sae}")
        self.cfg, self.d_in, self.d_out, self.d_sae = cfg, d_in, d_out, cfg.d_sae
        self.kind = cfg.kind
        self.is_transcoder = cfg.is_transcoder
        self.aux_k = min(cfg.aux_k or d_in // 2, cfg.d_sae)

        self.W_enc = nn.Parameter(torch.empty(d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        if cfg.skip_connection:
            # zero: the transcoder starts as a plain one and learns the linear part it needs
            # (Paulo et al. 2025, "Transcoders beat sparse autoencoders for interpretability")
            self.W_skip = nn.Parameter(torch.zeros(d_in, d_out))
        if cfg.kind == "jumprelu":
            # log-parametrised so theta stays > 0 whatever the optimizer does
            self.log_threshold = nn.Parameter(
                torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold)))
        if cfg.kind == "batchtopk":
            self.register_buffer("inference_threshold", torch.zeros(()))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("output_scale", torch.ones(()))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Decoder rows: random directions, of norm 0.1 for relu (its decoder norms are
        free and enter the penalty) and 1 for the unit-norm kinds. Encoder: the decoder's
        transpose (Anthropic April 2024; Gao et al. 2024), so each latent starts by
        reading the direction it writes. A transcoder's encoder reads another space: it
        gets its own random directions of the same norm. Biases start at 0."""
        norm = 1.0 if self.kind in UNIT_NORM_KINDS else RELU_DECODER_INIT_NORM
        self.W_dec.copy_(F.normalize(torch.randn_like(self.W_dec), dim=-1) * norm)
        if self.is_transcoder:
            self.W_enc.copy_(F.normalize(torch.randn_like(self.W_enc), dim=0) * norm)
        else:
            self.W_enc.copy_(self.W_dec.T)

    @property
    def threshold(self) -> Tensor:
        """jumprelu's thresholds theta (d_sae)."""
        return self.log_threshold.exp()

    # --- forward ----------------------------------------------------------------------

    def pre_activations(self, x: Tensor) -> Tensor:
        """(batch, d_in) -> (batch, d_sae)"""
        if self.is_transcoder:
            return _affine(self.b_enc, x, self.W_enc)
        return _affine(self.b_enc, x - self.b_dec, self.W_enc)

    def activate(self, pre: Tensor) -> Tensor:
        """(batch, d_sae) -> latents (batch, d_sae)"""
        if self.kind == "relu":
            return F.relu(pre)
        if self.kind == "topk":
            return topk_relu(pre, self.cfg.k)
        if self.kind == "batchtopk":
            if self.training:
                return batch_topk_relu(pre, self.cfg.k)
            # inference: one global threshold, so a token's latents don't depend on its batch
            return F.relu(pre) * (pre > self.inference_threshold)
        return JumpReLUFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def encode(self, x: Tensor) -> Tensor:
        """(batch, d_in) -> latents (batch, d_sae)"""
        return self.activate(self.pre_activations(x))

    def decode(self, latents: Tensor) -> Tensor:
        """latents (batch, d_sae) -> (batch, d_out). The skip path of a transcoder
        depends on the input, not the latents: `forward` adds it."""
        return _affine(self.b_dec, latents, self.W_dec)

    def forward(self, x: Tensor) -> SAEOutput:
        """x (batch, d_in) -> SAEOutput(reconstruction (batch, d_out), latents, pre)"""
        pre = self.pre_activations(x)
        latents = self.activate(pre)
        reconstruction = self.decode(latents)
        if self.cfg.skip_connection:
            reconstruction = reconstruction + x @ self.W_skip
        return SAEOutput(reconstruction, latents, pre)

    # --- training-time maintenance (called by the trainer) ---------------------------------

    @torch.no_grad()
    def init_b_dec(self, targets: Tensor) -> None:
        """Start b_dec at the targets' geometric median, mean, or 0 (cfg.b_dec_init; auto
        is 0 for relu, the geometric median otherwise), in the (scaled) space the module
        is trained in. targets (n, d_out)"""
        how = self.cfg.b_dec_init
        if how == "auto":
            how = "zeros" if self.kind == "relu" else "geometric_median"
        if how == "geometric_median":
            self.b_dec.copy_(geometric_median(targets.float()))
        elif how == "mean":
            self.b_dec.copy_(targets.float().mean(0))
        else:
            self.b_dec.zero_()

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each decoder row's gradient along the row: it would only
        change the norm, which `normalize_decoder` undoes (Gao et al. 2024; OpenAI's
        `unit_norm_decoder_grad_adjustment_`)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec
        along = (self.W_dec.grad * w).sum(-1, keepdim=True) / (w * w).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(along * w)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm. Without it topk/jumprelu could shrink latents
        and grow rows freely, and latent sizes would mean nothing."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True))

    @torch.no_grad()
    def update_inference_threshold(self, latents: Tensor) -> None:
        """batchtopk: move the threshold toward this batch's smallest kept activation, the
        value a per-token rule should cut at to keep the same latents (Bussmann et al.
        2024). latents (batch, d_sae) from a training-mode forward."""
        smallest = torch.where(latents > 0, latents, torch.inf).min().float()
        seen = torch.isfinite(smallest)  # no latent fired: nothing to learn (and no sync to ask)
        rate = torch.where(self.inference_threshold == 0, 1.0, THRESHOLD_EMA_RATE) * seen
        self.inference_threshold.lerp_(torch.where(seen, smallest, 0.0), rate)

    @torch.no_grad()
    def fold_scale(self) -> None:
        """Rewrite the weights so that the module maps raw x to raw y exactly as it mapped
        x * input_scale to y * output_scale; then both scales are 1. Latents come out
        divided by output_scale (W_dec is untouched), so thresholds divide too:

            pre' = pre / s_out:  W_enc *= s_in / s_out, b_enc /= s_out, b_dec /= s_out
                                 (an SAE has s_in = s_out, so (x - b_dec') W_enc checks)
            y'   = y / s_out:    b_dec /= s_out, W_skip *= s_in / s_out
            thresholds:          theta /= s_out, inference_threshold /= s_out
        """
        s_in, s_out = self.input_scale.clone(), self.output_scale.clone()
        self.W_enc.mul_(s_in / s_out)
        self.b_enc.div_(s_out)
        self.b_dec.div_(s_out)
        if self.cfg.skip_connection:
            self.W_skip.mul_(s_in / s_out)
        if self.kind == "jumprelu":
            self.log_threshold.sub_(torch.log(s_out))
        if self.kind == "batchtopk":
            self.inference_threshold.div_(s_out)
        self.input_scale.fill_(1.0)
        self.output_scale.fill_(1.0)


# --- the loss -------------------------------------------------------------------------------

def weighted_l1(latents: Tensor, W_dec: Tensor) -> Tensor:
    """The ReLU SAE's sparsity penalty (Anthropic, April 2024): each latent's value times
    its decoder row's norm, summed over latents, averaged over tokens, so the penalty can't
    be dodged by shrinking latents and growing decoder rows.
    latents (batch, d_sae), W_dec (d_sae, d_out) -> scalar float32"""
    # = mean over tokens of sum_i f_i ||W_dec,i||, without a (batch, d_sae) product
    return latents.mean(0, dtype=torch.float32) @ W_dec.norm(dim=-1).float()


def sae_loss(sae: SparseAutoencoder, target: Tensor, out: SAEOutput, *,
             penalty_coeff: float | Tensor = 0.0, dead: Tensor | None = None) -> SAELoss:
    """The training loss of `out = sae(x)` against `target` (batch, d_out).

    MSE is ||y - y_hat||^2 summed over dimensions and averaged over the batch, the
    convention of Anthropic's April 2024 update, and every penalty is likewise a per-token
    sum averaged over the batch, so l1_coeff means what it means there.

    `penalty_coeff` is the current sparsity coefficient (the trainer warms it up);
    `dead` (d_sae, bool) marks latents silent for too long, for AuxK.
    """
    reconstruction, target = out.reconstruction.float(), target.float()
    mse = (reconstruction - target).pow(2).sum(-1).mean()
    zero = mse.new_zeros(())
    sparsity, auxk = zero, zero
    if sae.kind == "relu":
        sparsity = weighted_l1(out.latents, sae.W_dec)
    elif sae.kind == "jumprelu":
        # Rajamanoharan et al. 2024: L0 = sum_i H(pre_i - theta_i), through StepFunction
        sparsity = StepFunction.apply(out.pre.float(), sae.threshold,
                                      sae.cfg.jumprelu_bandwidth).sum(-1).mean()
    if auxk_applies(sae, dead):
        auxk = auxk_loss(sae, out.pre, dead, target - reconstruction.detach(), target)
    total = mse + penalty_coeff * sparsity + sae.cfg.aux_coeff * auxk
    return SAELoss(total, mse, sparsity, auxk)


def auxk_applies(sae: SparseAutoencoder, dead: Tensor | None) -> bool:
    """Whether the loss has an AuxK term: for topk and batchtopk (a latent that loses
    every top-k race gets no other gradient), with aux_coeff set and some latent dead.
    dead (d_sae,) bool, or None"""
    return (sae.kind in ("topk", "batchtopk") and bool(sae.cfg.aux_coeff)
            and dead is not None and bool(dead.any()))


def auxk_loss(sae: SparseAutoencoder, pre: Tensor, dead: Tensor, error: Tensor,
              target: Tensor) -> Tensor:
    """AuxK (Gao et al. 2024, on preventing dead latents): reconstruct the main error
    with the `aux_k` largest pre-activations among dead latents only, so dead latents get
    a gradient toward what the live ones miss. (Fewer dead latents than aux_k: the
    masked ones picked are -inf, ReLU'd to 0.)

    Normalisation: OpenAI's released code divides the squared error of this fit by the
    error's own variance (so AuxK keeps its pull as the error shrinks) and the main MSE
    by the data's variance; our main MSE is not normalised, so we multiply by the batch's
    total target variance to keep the same ratio between the two.
    pre (batch, d_sae), dead (d_sae,) bool, error and target (batch, d_out) -> scalar
    """
    candidates = pre.float().masked_fill(~dead, -torch.inf)  # live latents never win
    error_hat = topk_relu(candidates, sae.aux_k) @ sae.W_dec.float()
    error_var = (error - error.mean(0)).pow(2).sum().clamp_min(1e-12)  # 0 if y_hat = y
    target_var = (target - target.mean(0)).pow(2).sum(-1).mean().detach()
    return (error_hat - error).pow(2).sum() / error_var * target_var


# --- save and load ----------------------------------------------------------------------------

def save_sae(sae: SparseAutoencoder, folder: str | os.PathLike, *,
             training_tokens: int | None = None) -> Path:
    """Write `folder/sae.safetensors` and `folder/cfg.json` (written last), with the scale
    folded in, so `load_sae(folder)` works on raw activations. `sae` is not modified."""
    folder = Path(folder)
    folded = copy.deepcopy(sae).cpu().float()
    scales = {"input_scale": float(sae.input_scale), "output_scale": float(sae.output_scale)}
    folded.fold_scale()
    tensors = {name: t.detach().contiguous() for name, t in folded.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save(tensors))
    cfg = sae.cfg
    sparsity = ({"k": cfg.k} if cfg.kind in ("topk", "batchtopk") else
                {"l1_coeff": cfg.l1_coeff} if cfg.kind == "relu" else {"l0_coeff": cfg.l0_coeff})
    atomic_write_json(folder / CONFIG, {
        "format_version": FORMAT_VERSION,
        "kind": cfg.kind,
        "d_in": sae.d_in,
        "d_out": sae.d_out,
        "d_sae": sae.d_sae,
        "hook_in": cfg.hook_in,
        "hook_out": cfg.hook_out or cfg.hook_in,
        "is_transcoder": sae.is_transcoder,
        "sparsity": sparsity,
        "folded_scales": scales,
        "training_tokens": training_tokens,
        "sae_config": dataclasses.asdict(cfg),
    })
    return folder


def load_sae(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load what `save_sae` wrote (`path` is the folder or a file in it), in eval mode.
    It maps raw activations of cfg.hook_in to raw activations of hook_out."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG} has format_version {meta.get('format_version')}; "
                         f"this tinycourse reads version {FORMAT_VERSION}")
    known = {f.name for f in dataclasses.fields(SAEConfig)}
    cfg = SAEConfig(**{k: v for k, v in meta["sae_config"].items() if k in known})
    sae = SparseAutoencoder(cfg, meta["d_in"], meta["d_out"])
    sae.load_state_dict(load_file(folder / WEIGHTS))
    return sae.to(device).eval()


__all__ = [
    "SparseAutoencoder", "SAEOutput", "SAELoss", "sae_loss", "auxk_applies", "auxk_loss",
    "save_sae", "load_sae", "geometric_median", "topk_relu", "batch_topk_relu", "weighted_l1",
    "JumpReLUFunction", "StepFunction",
]
