"""Steering: push one SAE latent, or pin it, at every position while the model generates.

SAELens's steering tutorial adds the steering vector at the prompt's positions only, so
the tokens the model goes on to write are never steered. Here the hook stays attached for
the whole of `generate`: the prompt's forward pass steers every prompt position (so the
keys and values the KV cache keeps are steered ones), and each cached step steers the one
new position it computes. A full forward over the finished sequence under the same hook
gives the same logits as the cached steps, and past n_ctx, where `generate` recomputes the
sliding window, every position of the window is steered again. (The tests check all three.)

    with steer(model, sae, latent=7, mode="add", value=8.0):
        ids = generate(model, prompt, 40, seed=0)

The hook sits where the dictionary writes: `hook_in` for an SAE, `hook_out` for a
transcoder (whose latents are read from `hook_in` at the same positions). With W_dec[i]
the latent's decoder row, the activation x (batch, pos, d_out) becomes

    add     x + value * W_dec[i]
    clamp   decode(f with f_i := value) + skip + (x - sae(x))
          = x + (value - f_i(x)) * W_dec[i]

Clamp is the SAE's output with latent i set to `value`, plus the SAE's error term, so
whatever the SAE fails to reconstruct is kept. The two lines are equal because decode is
affine in the latents and a transcoder's skip path depends on the input only; the second
is what runs (one encode, no decode), and clamping at f_i(x) returns x up to rounding.

Units: `value` is a latent activation in the SAE's own units, and latent i contributes
value * W_dec[i] / output_scale to the raw activation. `load_sae` folds the scales
(output_scale = 1), so there W_dec rows are in raw units and `value` is exactly the
latent's activation as the loaded SAE reports it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..lm.model import GPT, generate, model_device, unwrap
from ..sae.model import SparseAutoencoder

MODES = ("add", "clamp")


def steering_hook(sae: SparseAutoencoder) -> str:
    """The hook point a dictionary writes to, where steering acts: hook_out for a
    transcoder, hook_in for an SAE."""
    return sae.cfg.hook_out if sae.is_transcoder else sae.cfg.hook_in


def latent_activation(sae: SparseAutoencoder, x: torch.Tensor, latent: int) -> torch.Tensor:
    """Latent `latent` of raw activations x (..., d_in) -> (...), in the SAE's units."""
    # the whole encode, not one column: topk/batchtopk decide by comparing all latents
    return sae.encode(x.to(sae.W_enc.dtype) * sae.input_scale)[..., latent]


@contextmanager
def steer(model: GPT, sae: SparseAutoencoder, latent: int, *, mode: str = "add",
          value: float) -> Iterator[None]:
    """For the `with` block, steer `latent` at every position of every forward pass of
    `model` (see the module docstring for `mode`). Inputs are checked before any hook is
    attached, and the hooks are removed on exit, exceptions included."""
    model = unwrap(model)
    latent = _check(model, sae, latent, mode)
    # (d_out,): the latent's contribution per unit of activation, in raw units
    direction = (sae.W_dec[latent] / sae.output_scale).detach()
    read_in = {}  # a transcoder's f_i, read at hook_in and used at hook_out of one pass

    def read(x: torch.Tensor, hook) -> None:
        read_in["f"] = latent_activation(sae, x, latent)

    def write(x: torch.Tensor, hook) -> torch.Tensor:
        if x.shape[-1] != direction.shape[0]:
            raise ValueError(f"{hook.name} has width {x.shape[-1]} but the SAE writes "
                             f"d_out={direction.shape[0]}: use the SAE trained on this model")
        if mode == "add":
            return x + (value * direction).to(x.dtype)
        f = read_in.pop("f") if sae.is_transcoder else latent_activation(sae, x, latent)
        return x + ((value - f)[..., None] * direction).to(x.dtype)  # (batch, pos, d_out)

    hooks = [(steering_hook(sae), write)]
    if sae.is_transcoder and mode == "clamp":
        hooks.insert(0, (sae.cfg.hook_in, read))
    with model.hooks(hooks):
        yield


def _check(model: GPT, sae: SparseAutoencoder, latent: int, mode: str) -> int:
    """Raise a one-line ValueError for a bad mode, latent or hook; return the latent."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        latent = operator.index(latent)  # ints, numpy ints, 0-d integer tensors
    except TypeError:
        latent = None
    if latent is None or not 0 <= latent < sae.d_sae:
        raise ValueError(f"latent must be an int in 0..{sae.d_sae - 1} (the SAE's d_sae "
                         f"latents), got {latent!r}")
    points = list(model.hook_points)
    needed = [sae.cfg.hook_in, steering_hook(sae)]
    for name in needed:
        if name not in points:
            raise ValueError(f"the model has no hook point {name!r}, which the SAE was "
                             f"trained on: pass the model it was trained on "
                             f"(model.hook_points lists them)")
    if sae.is_transcoder and points.index(needed[0]) > points.index(needed[1]):
        raise ValueError(f"the transcoder reads {needed[0]!r} after it writes {needed[1]!r} "
                         f"in the forward pass: check its cfg.hook_in and hook_out")
    if next(sae.parameters()).device != model_device(model):
        raise ValueError(f"the SAE is on {next(sae.parameters()).device} but the model on "
                         f"{model_device(model)}: move it with sae.to(...)")
    return latent


def steered_generations(model: GPT, sae: SparseAutoencoder, latent: int,
                        strengths: Sequence[float], prompt_ids: Sequence[int], *,
                        max_new_tokens: int, seed: int, mode: str = "add",
                        **sampling) -> list[list[int]]:
    """One generation per strength, all from the same prompt and `seed`, so they differ
    only by the steering: a side-by-side row per strength, prompt + continuation.

    prompt_ids: one prompt (list of ints). `sampling`: `generate`'s temperature, top_k,
    stop_id. In add mode strength 0 is the unsteered generation exactly (x + 0 is x);
    in clamp mode 0 ablates the latent.
    """
    prompt = [int(t) for t in prompt_ids]
    rows = []
    for strength in strengths:
        with steer(model, sae, latent, mode=mode, value=float(strength)):
            rows.append(generate(model, prompt, max_new_tokens, seed=seed, **sampling))
    return rows


__all__ = ["MODES", "latent_activation", "steer", "steered_generations", "steering_hook"]
