"""The examples where each attention head is most active, and its patterns on a prompt.

For every head and every query position q of a batch of prompts, one number says how
active the head is there (`MEASURES`):

    attention  the weight of the query's strongest key, the start token excluded (key 0 and
               any key holding `start_id`): how sharply the head reads one earlier token.
               Without the exclusion an attention sink would win everywhere at weight ~1.
    output     |z_h[q] W_O^h|_2, the norm of what the head writes into the residual stream
               at q, whatever it reads (the start token included).

Queries before `min_query` are skipped: with few keys to choose from, any head puts a large
weight on one of them (at q = 1, once the start is excluded, only key 1 is left).

Each example is the query's tokens in context (`before` tokens back, `after` ahead), the
query, the key it attends to most (start excluded, whatever the measure) and that weight.
Memory is bounded: each batch's best `n` per head are merged with the running best `n`
(a stable sort of 2n candidates), so what is kept is one batch's patterns and
(n_layers, n_heads, n) records. Ties go to the earlier prompt and position, the order a
stable argsort of every query at once gives (the tests check the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..lm.model import model_device
from .catalogue import head_name

MEASURES = {
    "attention": "the attention weight of the query's strongest key, the start token excluded",
    "output": "the norm of the head's output at the query, z W_O",
}
# the prompt the TinyStories-1L-21M study read its 16 heads on (notebook 07 draws it too)
STUDY_PROMPT = 'One day, Lucy asks Tom: "I am looking for a banana but I can\'t find it". Tom says: "Don\'t'
PATTERN_TOKENS = 64  # positions of a prompt whose patterns are kept


@dataclass(frozen=True)
class HeadExamples:
    """The best `n` queries of every head, best first. Where a head had fewer than `n`
    queries, values are NaN and rows -1."""

    measure: str
    values: torch.Tensor  # (n_layers, n_heads, n) float32: the measure
    weights: torch.Tensor  # (n_layers, n_heads, n) float32: the strongest key's weight
    rows: torch.Tensor  # (n_layers, n_heads, n) int64: the prompt, counted across batches
    queries: torch.Tensor  # (n_layers, n_heads, n) int64: the query's position
    keys: torch.Tensor  # (n_layers, n_heads, n) int64: its strongest key's position
    key_tokens: torch.Tensor  # (n_layers, n_heads, n) int64: the token at that key
    windows: torch.Tensor  # (n_layers, n_heads, n, before + 1 + after) int64: tokens around q, -1 off the prompt
    before: int
    after: int


def query_activity(pattern: torch.Tensor, tokens: torch.Tensor, *, start_id: int | None = None,
                   min_query: int = 4, output_norm: torch.Tensor | None = None):
    """One layer: pattern (batch, n_heads, q, k), tokens (batch, pos) -> (values, weights,
    keys), each (batch, n_heads, q): the measure (-inf at a skipped query), the weight of
    the strongest key with the start excluded, and that key. `output_norm` (batch, n_heads,
    q), when given, is the measure instead of the weight."""
    pattern = pattern.float()
    batch, n_heads, pos, _ = pattern.shape
    k = torch.arange(pos, device=pattern.device)
    eligible = (k >= 1).expand(batch, pos)
    if start_id is not None:
        eligible = eligible & (tokens.to(pattern.device) != start_id)
    allowed = eligible[:, None, :] & (k[None, :] <= k[:, None])[None]  # (batch, q, k)
    weights, keys = pattern.masked_fill(~allowed[:, None], -1.0).max(-1)  # (batch, n_heads, q)
    valid = (allowed.any(-1) & (k >= min_query)[None])[:, None]  # (batch, 1, q)
    values = weights if output_norm is None else output_norm.float()
    return values.masked_fill(~valid, -torch.inf), weights.clamp(min=0), keys


@torch.no_grad()
def head_examples(model, batches: Iterable[torch.Tensor], *, n: int = 8, measure: str = "attention",
                  start_id: int | None = None, min_query: int = 4, before: int = 12,
                  after: int = 3) -> HeadExamples:
    """The `n` queries where each head is most active (see the module docstring), over
    batches of prompts (each (batch, pos) int64, at most n_ctx long; lengths may differ
    between batches), one forward pass per batch."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}: one of {', '.join(MEASURES)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    device = model_device(model)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(n_layers)]
    if measure == "output":
        names += [f"blocks.{i}.attn.hook_z" for i in range(n_layers)]
    width = before + 1 + after
    shape = (n_layers, n_heads, 0)
    best = {"values": torch.empty(shape), "weights": torch.empty(shape),
            "rows": torch.empty(shape, dtype=torch.long), "queries": torch.empty(shape, dtype=torch.long),
            "keys": torch.empty(shape, dtype=torch.long), "key_tokens": torch.empty(shape, dtype=torch.long),
            "windows": torch.empty(*shape, width, dtype=torch.long)}
    seen = 0
    for tokens in batches:
        if tokens.shape[1] > model.cfg.n_ctx:
            raise ValueError(f"prompts of {tokens.shape[1]} tokens are longer than the model's "
                             f"n_ctx={model.cfg.n_ctx}: cut them to at most {model.cfg.n_ctx}")
        tokens = tokens.cpu()
        batch, pos = tokens.shape
        _, cache = model.run_with_cache(tokens.to(device), names=names, stop_at_layer="auto")
        found = {key: [] for key in best}
        for layer in range(n_layers):
            norm = None
            if measure == "output":
                z = cache[f"blocks.{layer}.attn.hook_z"].float()  # (batch, pos, n_heads, d_head)
                W_O = model.blocks[layer].attn.W_O.detach().float()  # (n_heads, d_head, d_model)
                norm = torch.stack([(z[:, :, h] @ W_O[h]).norm(dim=-1) for h in range(n_heads)], 1)
            values, weights, keys = (t.cpu() for t in query_activity(
                cache[names[layer]], tokens, start_id=start_id, min_query=min_query, output_norm=norm))
            # (n_heads, batch * pos), flattened prompt by prompt: the order ties keep
            values, weights, keys = (t.transpose(0, 1).reshape(n_heads, -1) for t in (values, weights, keys))
            order = values.sort(dim=1, descending=True, stable=True).indices[:, :n]
            rows, queries = order // pos, order % pos
            key = keys.gather(1, order)
            window = queries[..., None] + torch.arange(-before, after + 1)
            inside = (window >= 0) & (window < pos)
            found["values"].append(values.gather(1, order))
            found["weights"].append(weights.gather(1, order))
            found["rows"].append(rows + seen)
            found["queries"].append(queries)
            found["keys"].append(key)
            found["key_tokens"].append(tokens[rows, key])
            found["windows"].append(tokens[rows[..., None], window.clamp(0, pos - 1)].where(inside, -1))
        for name, parts in found.items():  # the running best first: earlier prompts win ties
            best[name] = torch.cat([best[name], torch.stack(parts)], dim=2)
        keep = best["values"].sort(dim=2, descending=True, stable=True).indices[..., :n]
        for name in best:
            index = keep if name != "windows" else keep[..., None].expand(-1, -1, -1, width)
            best[name] = best[name].gather(2, index)
        seen += batch
    if best["values"].shape[2] < n:  # fewer queries than n in all: pad
        missing = n - best["values"].shape[2]
        for name, tensor in best.items():
            pad_shape = (*tensor.shape[:2], missing, *tensor.shape[3:])
            fill = -torch.inf if name in ("values", "weights") else -1
            best[name] = torch.cat([tensor, torch.full(pad_shape, fill, dtype=tensor.dtype)], dim=2)
    none = ~torch.isfinite(best["values"])  # skipped queries and padding
    best["values"] = best["values"].masked_fill(none, torch.nan)
    best["weights"] = best["weights"].masked_fill(none, torch.nan)
    for name in ("rows", "queries", "keys", "key_tokens"):
        best[name] = best[name].masked_fill(none, -1)
    best["windows"] = best["windows"].masked_fill(none[..., None], -1)
    return HeadExamples(measure=measure, before=before, after=after, **best)


def example_records(examples: HeadExamples, token_text) -> list[dict]:
    """For JSON: one entry per head, layer by layer, {"head", "layer", "index", "examples"},
    each example {"row", "query", "key", "value", "weight", "tokens" (texts around the
    query), "at" (the query's index in tokens), "key_at" (the key's, or None when it lies
    further back), "back" (q - key), "key_token" (its text)}. `token_text(id)` is a token's
    visible text."""
    n_layers, n_heads, n = examples.values.shape
    out = []
    for layer in range(n_layers):
        for head in range(n_heads):
            rows = []
            for j in range(n):
                if examples.rows[layer, head, j] < 0:
                    continue
                window = examples.windows[layer, head, j].tolist()
                first = next(i for i, t in enumerate(window) if t >= 0)
                ids = [t for t in window if t >= 0]
                query, key = int(examples.queries[layer, head, j]), int(examples.keys[layer, head, j])
                at = examples.before - first
                key_at = at - (query - key)
                rows.append({"row": int(examples.rows[layer, head, j]), "query": query, "key": key,
                             "value": round(float(examples.values[layer, head, j]), 4),
                             "weight": round(float(examples.weights[layer, head, j]), 4),
                             "tokens": [token_text(t) for t in ids], "at": at,
                             "key_at": key_at if key_at >= 0 else None, "back": query - key,
                             "key_token": token_text(int(examples.key_tokens[layer, head, j]))})
            out.append({"head": head_name(layer, head), "layer": layer, "index": head, "examples": rows})
    return out


def token_label(tokenizer, token_id: int) -> str:
    """A token as it can be seen: the start token as <start>, newlines spelled out, the
    empty string as ∅."""
    if token_id == tokenizer.start_id:
        return "<start>"
    return tokenizer.decode([int(token_id)]).replace("\n", "\\n") or "\u2205"


@torch.no_grad()
def prompt_patterns(model, tokenizer, text: str, *, max_tokens: int = PATTERN_TOKENS,
                    decimals: int = 3) -> dict:
    """Every head's pattern on [start] + text (cut to `max_tokens` and n_ctx): {"text",
    "tokens" (visible texts), "patterns" (n_layers, n_heads, pos, pos) nested lists
    rounded to `decimals`}."""
    ids = [tokenizer.start_id] + list(tokenizer.encode(text))
    ids = ids[:min(max_tokens, model.cfg.n_ctx)]
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(torch.tensor([ids], device=model_device(model)), names=names,
                                    stop_at_layer="auto")
    patterns = np.stack([cache[name][0].float().cpu().numpy() for name in names])
    rounded = np.round(patterns.astype(np.float64), decimals)
    return {"text": text, "tokens": [token_label(tokenizer, i) for i in ids],
            "patterns": [[[[float(v) if v else 0 for v in row] for row in head] for head in layer]
                         for layer in rounded]}


__all__ = ["MEASURES", "STUDY_PROMPT", "PATTERN_TOKENS", "HeadExamples", "query_activity", "head_examples",
           "example_records", "token_label", "prompt_patterns"]
