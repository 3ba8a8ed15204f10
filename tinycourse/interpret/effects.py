"""What a latent does to the model's predictions where it fires, and what fires on a prompt.

    causal_effects(model, sae, tokens, positions)   -> (d_sae, c) change in next-token loss
    prompt_latents(model, sae, ids)                 -> the latents firing on each token

Causal effect. Direct logit attribution (`interpret.logits`) follows a latent's decoder
row straight to the unembedding and ignores every layer after it. The causal effect runs
the model instead. For latent i and one of its top contexts (a position p of the split,
found by the features scan), the context is the scan's own window: the n_ctx tokens from
(p // n_ctx) * n_ctx, so the latent sees exactly what it saw when it fired. The window
goes through the model twice:

    clean     as it is
    ablated   at every position of the window, latent i's contribution taken out of the
              activation its dictionary writes:  x - f_i(x) * W_dec[i]

The ablated line is the spliced model (x = sae(x) + error) with f_i set to 0 and the
SAE's error term kept, so nothing but latent i's contribution changes (`steer` in clamp
mode at 0 is the same intervention). For a transcoder f_i is read at hook_in and taken
out of hook_out. Start tokens are never ablated: the dictionary never trained on them.
The effect is the next-token loss at p (predicting the token at p + 1) ablated minus
clean, in nats: positive when the latent helped the model predict what came next.
Averaged over a latent's contexts it is the number SAEDashboard no longer computes.

Batching: the (latent, context) pairs are sorted by where p falls in its window and
cut into batches, each run only up to its largest p (a causal model's logits at p do
not depend on later tokens), so the work is about half of running full windows.

Prompt view. `prompt_latents` runs one prompt (at most n_ctx tokens) through the LM and
the dictionary and keeps, per token, the latents with the largest activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..lm.model import eval_mode, model_device, unwrap
from ..sae.model import SparseAutoencoder


def _encode(sae: SparseAutoencoder, x: Tensor) -> Tensor:
    """All latents of raw activations x (..., d_in) -> (..., d_sae), in the SAE's units."""
    return sae.encode(x.to(sae.W_enc.dtype) * sae.input_scale)


def _check(model, sae: SparseAutoencoder) -> None:
    points = unwrap(model).hook_points
    for name in (sae.cfg.hook_in, sae.cfg.hook_out or sae.cfg.hook_in):
        if name not in points:
            raise ValueError(f"the model has no hook point {name!r}, which the dictionary was "
                             f"trained on: pass the model it was trained on")
    if next(sae.parameters()).device != model_device(model):
        raise ValueError(f"the SAE is on {next(sae.parameters()).device} but the model on "
                         f"{model_device(model)}: move it with sae.to(...)")


def _ablation_hooks(sae: SparseAutoencoder, latents: Tensor, keep: Tensor) -> list:
    """Hooks taking latent latents[r] out of row r at the positions keep[r] (rows, pos)."""
    direction = (sae.W_dec[latents] / sae.output_scale).detach()  # (rows, d_out)
    read = {}

    def f_i(x: Tensor) -> Tensor:  # (rows, pos)
        return _encode(sae, x).gather(-1, latents.view(-1, 1, 1).expand(*x.shape[:2], 1))[..., 0]

    def take_out(x: Tensor, hook) -> Tensor:
        f = read.pop("f") if sae.is_transcoder else f_i(x)
        return x - ((f * keep)[..., None] * direction[:, None, :]).to(x.dtype)

    if not sae.is_transcoder:
        return [(sae.cfg.hook_in, take_out)]

    def read_in(x: Tensor, hook) -> None:
        read["f"] = f_i(x)

    return [(sae.cfg.hook_in, read_in), (sae.cfg.hook_out, take_out)]


def _next_token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """logits (rows, d_vocab), targets (rows,) -> (rows,) float32 nats."""
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


@torch.no_grad()
def causal_effects(model, sae: SparseAutoencoder, tokens: np.ndarray, positions: Tensor, *,
                   start_id: int | None = None, batch_size: int = 64,
                   progress: bool = True) -> Tensor:
    """Next-token loss change when each latent is ablated in each of its contexts (see the
    module docstring). tokens: the split's token ids (n,); positions (d_sae, c) int64,
    the contexts' positions in `tokens` (-1: no context) -> (d_sae, c) float32, NaN where
    there is no context or no next token."""
    _check(model, sae)
    device = model_device(model)
    n_ctx = unwrap(model).cfg.n_ctx
    positions = positions.cpu().long()
    d_sae, c = positions.shape
    if d_sae != sae.d_sae:
        raise ValueError(f"positions has {d_sae} rows but the SAE has {sae.d_sae} latents: "
                         f"pass the scan of this SAE")
    effects = torch.full((d_sae, c), math.nan)
    latent, slot = (positions >= 0).nonzero(as_tuple=True)
    pos = positions[latent, slot]
    has_next = pos + 1 < len(tokens)
    latent, slot, pos = latent[has_next], slot[has_next], pos[has_next]
    if not len(pos):
        return effects
    start = (pos // n_ctx) * n_ctx
    start = torch.minimum(start, torch.tensor(max(len(tokens) - n_ctx, 0)))  # the last window may be short
    local = pos - start
    targets = torch.from_numpy(np.asarray(tokens[(pos + 1).numpy()], dtype=np.int64))
    # clean losses: each window the pairs use, once
    windows, which = torch.unique(start, return_inverse=True)
    clean = torch.empty(len(pos))
    with eval_mode(model, sae):
        for a in range(0, len(windows), batch_size):
            ids = _rows(tokens, windows[a:a + batch_size], n_ctx).to(device)
            logits = model(ids)  # (rows, pos, d_vocab)
            for j in range(len(ids)):
                mine = (which == a + j).nonzero()[:, 0]
                clean[mine] = _next_token_nll(logits[j, local[mine]], targets[mine].to(device)).cpu()
        order = local.argsort(stable=True)
        bar = tqdm(range(0, len(order), batch_size), desc="causal effects", disable=not progress,
                   leave=False)
        for a in bar:
            rows = order[a:a + batch_size]
            length = int(local[rows].max()) + 1
            ids = _rows(tokens, start[rows], n_ctx)[:, :length].to(device)
            keep = torch.ones(ids.shape, device=device) if start_id is None else (ids != start_id).float()
            with unwrap(model).hooks(_ablation_hooks(sae, latent[rows].to(device), keep)):
                logits = model(ids)
            at = logits[torch.arange(len(rows), device=device), local[rows].to(device)]
            ablated = _next_token_nll(at, targets[rows].to(device)).cpu()
            effects[latent[rows], slot[rows]] = ablated - clean[rows]
    return effects


def _rows(tokens: np.ndarray, starts: Tensor, n_ctx: int) -> Tensor:
    """(len(starts), <= n_ctx) int64 windows of `tokens` from each start."""
    end = min(n_ctx, len(tokens))
    index = starts.numpy()[:, None] + np.arange(end)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))


def mean_effect(effects: Tensor) -> Tensor:
    """(d_sae, c) -> (d_sae,): each latent's mean over its contexts, NaN with none."""
    counted = ~effects.isnan()
    total = effects.nan_to_num(0.0).sum(1)
    n = counted.sum(1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.tensor(math.nan))


@torch.no_grad()
def prompt_latents(model, sae: SparseAutoencoder, ids: Sequence[int], *, top: int = 5) -> dict:
    """The latents firing on each token of one prompt. ids: the prompt's token ids (at
    most n_ctx, the start token first if the model's stories begin with one) ->
    {"ids": [...], "top": [[[latent, activation], ...] per token, largest first, active only]}."""
    _check(model, sae)
    n_ctx = unwrap(model).cfg.n_ctx
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("the prompt has no tokens: give it some text")
    if len(ids) > n_ctx:
        raise ValueError(f"the prompt is {len(ids)} tokens, longer than the model's n_ctx={n_ctx}: "
                         f"shorten it to at most {n_ctx} tokens")
    device = model_device(model)
    _, cache = unwrap(model).run_with_cache(torch.tensor([ids], device=device), names=[sae.cfg.hook_in],
                                            stop_at_layer="auto")
    x = cache[sae.cfg.hook_in][0].flatten(1)  # (pos, d_in)
    f = _encode(sae, x)  # (pos, d_sae)
    values, latents = f.topk(min(top, sae.d_sae), dim=-1)
    rows = []
    for v, i in zip(values.tolist(), latents.tolist()):
        rows.append([[int(lat), round(float(a), 4)] for a, lat in zip(v, i) if a > 0])
    return {"ids": ids, "top": rows}


def val_prompts(tokens: np.ndarray, start_id: int | None, n: int, n_ctx: int) -> list[list[int]]:
    """The first n stories of a split as prompts: each from its start token, cut to n_ctx."""
    tokens = np.asarray(tokens)
    if start_id is None:
        return [tokens[i * n_ctx:(i + 1) * n_ctx].astype(int).tolist() for i in range(n)
                if (i + 1) * n_ctx <= len(tokens)]
    starts = np.flatnonzero(tokens == start_id)
    bounds = list(starts) + [len(tokens)]
    return [tokens[a:min(b, a + n_ctx)].astype(int).tolist() for a, b in zip(bounds[:n], bounds[1:n + 1])]


__all__ = ["causal_effects", "mean_effect", "prompt_latents", "val_prompts"]
