"""Direct logit attribution (DLA): what each latent, on its own, does to the next-token logits.

A latent i active with value f adds f * W_dec[i] to the activation its dictionary writes.
If that activation is in the residual stream (an SAE on `hook_resid_*`, or a transcoder
writing `hook_mlp_out` / `hook_attn_out`, which are added into the stream), the
*direct* path from there to the logits is the final norm and the unembedding:

    logits = unembed(ln_final(resid)),   ln_final(x) = (x - mean(x)) / std(x) * w + b

The norm is not linear (it divides by the residual's own std), so we freeze its scale at
`ln_scale`, the mean of 1 / std(x) (LayerNorm) or 1 / rms(x) (RMSNorm) of the final
residual over the scanned tokens (`interpret.features` measures it; 1 without a norm).
The bias b adds the same to every latent, so it is left out. Per unit of activation:

    effect[i] = (center(W_dec[i]) * ln_scale * w) @ W_U        (d_vocab,)

with center() subtracting the row's mean for LayerNorm (RMSNorm does not centre). This
ignores every layer after the dictionary's hook: those paths are indirect effects.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ..sae.model import SparseAutoencoder

# activations that are the residual stream, or are added into it as they are
RESIDUAL_HOOK = re.compile(r"(^|\.)hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out|embed|pos_embed)$")


def writes_residual(sae: SparseAutoencoder) -> bool:
    """Whether the dictionary's output (hook_out, hook_in for an SAE) is in the residual stream."""
    return bool(RESIDUAL_HOOK.search(sae.cfg.hook_out or sae.cfg.hook_in))


@torch.no_grad()
def direct_logit_attribution(model, sae: SparseAutoencoder, ln_scale: float) -> Tensor:
    """Each latent's decoder row through the final norm (scale frozen at `ln_scale`) and
    the unembedding: (d_sae, d_vocab) float32, logits per unit of activation.
    Raises ValueError, saying what to do, if the dictionary does not write the residual
    stream (its decoder rows would not be in the space the unembedding reads)."""
    hook = sae.cfg.hook_out or sae.cfg.hook_in
    if not writes_residual(sae):
        raise ValueError(f"direct logit attribution needs a dictionary that writes the residual "
                         f"stream (hook_resid_*, hook_attn_out, hook_mlp_out); this one writes "
                         f"{hook}: train it on one of those")
    if sae.d_out != model.cfg.d_model:
        raise ValueError(f"the dictionary writes {sae.d_out} values but the model's residual "
                         f"stream has d_model={model.cfg.d_model}: was it trained on another model?")
    rows = sae.W_dec.detach().float().to(model.W_U.device)  # (d_sae, d_model)
    norm = model.ln_final
    W_U = model.W_U.detach().float()
    if norm.kind == "layernorm":
        return layernorm_logit_effects(rows, norm.weight.detach().float(), ln_scale, W_U)
    if norm.kind == "rmsnorm":  # RMSNorm does not centre
        rows = rows * ln_scale * norm.weight.detach().float()
    return rows @ W_U


def layernorm_logit_effects(W_dec: Tensor, w: Tensor, ln_scale: float, W_U: Tensor) -> Tensor:
    """The formula for a final LayerNorm: (center(W_dec) * ln_scale * w) @ W_U.
    W_dec (d_sae, d_model), w (d_model,) the norm's weight, W_U (d_model, d_vocab) ->
    (d_sae, d_vocab); center() subtracts each row's mean, as LayerNorm does."""
    rows = W_dec - W_dec.mean(-1, keepdim=True)
    return (rows * ln_scale * w) @ W_U


def top_logit_tokens(effects: Tensor, n: int) -> dict[str, Tensor]:
    """The `n` most boosted and most suppressed tokens of each latent.
    effects (d_sae, d_vocab) -> {boost_ids, boost_values, suppress_ids, suppress_values},
    each (d_sae, n), boosted largest first, suppressed most negative first."""
    n = min(n, effects.shape[1])
    boost = effects.topk(n, dim=1)
    suppress = effects.topk(n, dim=1, largest=False)
    return {"boost_ids": boost.indices.to(torch.int32), "boost_values": boost.values,
            "suppress_ids": suppress.indices.to(torch.int32), "suppress_values": suppress.values}


def logit_histogram(effects: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Per latent, the histogram of its effects over the vocabulary, on shared linear
    edges symmetric about 0 (so latents compare): (counts (d_sae, bins) int64, edges (bins + 1,))."""
    top = float(effects.abs().max()) or 1.0
    edges = torch.linspace(-top, top, bins + 1, dtype=torch.float32)
    index = ((effects.float() + top) / (2 * top) * bins).long().clamp_(0, bins - 1)  # (d_sae, d_vocab)
    counts = torch.zeros(effects.shape[0], bins, dtype=torch.int64, device=effects.device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return counts.cpu(), edges


__all__ = ["direct_logit_attribution", "layernorm_logit_effects", "top_logit_tokens", "logit_histogram", "writes_residual"]
