"""An attribution graph against the model it was built from: each feature's predicted effect
on a logit beside the measured one.

The check against the real model. The graph predicts, for a feature set to `factor` times
its activation (0: ablated), a change of (factor - 1) * T in the target's input, where T
is the feature's total effect: all paths, each downstream feature answering linearly
(active ones pass their input on, inactive ones stay off). `intervention_check` measures
the change three ways: `linear` (the frozen model with linear features: equals the
prediction, tested), `frozen` (attention and norms frozen, the transcoders' activation
rules free: differs only where a feature crosses its threshold or a top-k race changes)
and `actual` (the real model with the transcoders spliced in and their errors kept from
the clean run; attention and norms free). Features left out by `max_feature_nodes` stay
frozen in their error nodes in all three, as in the graph. Where `frozen` matches and `actual` does not,
attention or norm scales moved; `attention_shift` reports how far (the largest total
variation distance of an attention row from its clean value).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..lm.model import eval_mode
from .circuits import Graph, LocalReplacement, target_inputs, frozen_forward, local_replacement
from .graph_influence import node_influence


def total_effects(graph: Graph, target: int = 0) -> Tensor:
    """d (input of logit node `target`) / d (each source's scale) along all paths, each
    feature on the way passing its input change on as its activation change. -> (n,)

    An edge is per unit of its source's *scale*; a feature whose input moves by d moves its
    activation by d, i.e. its scale by d / activation: hence the division."""
    A = graph.adjacency.double()
    per_unit = torch.zeros(graph.n_nodes, dtype=torch.float64)
    per_unit[:graph.n_features] = 1 / graph.activations.double()
    current = A[graph.logits.start + target].clone()
    total = current.clone()
    for _ in range(graph.n_nodes + 1):
        current = (current * per_unit) @ A
        if not current.any():
            return total
        total += current
    raise RuntimeError("total effects did not converge: the adjacency has a cycle")


class InterventionCheck(NamedTuple):
    nodes: list[int]  # the feature nodes checked, most influential first
    predicted: Tensor  # (top,) the graph's change of the target's input: (factor - 1) * total effect
    linear: Tensor  # (top,) the frozen model with linear features (= predicted)
    frozen: Tensor  # (top,) attention and norms frozen, the transcoders' activation rules free
    actual: Tensor  # (top,) the real model, transcoders spliced in, their errors kept
    attention_shift: Tensor  # (top,) largest total variation of an attention row from clean
    correlation: float  # Pearson r of predicted against actual
    frozen_correlation: float  # Pearson r of predicted against frozen


def _pearson(a: Tensor, b: Tensor) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


@torch.no_grad()
def _spliced(rm: LocalReplacement, chosen: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """The real model with every MLP replaced by its dictionary's writes plus the clean run's
    error, row b with feature chosen[b] set to factor times its activation.
    -> mean-centred last-position logits (B, d_vocab), attention shift (B,)"""
    model, view, B = rm.model, rm.dictionaries, len(chosen)
    stash, fs, shift = {}, [None] * rm.n_layers, rm.embed.new_zeros(B)

    def read_in(x, hook):
        stash["x"] = x

    def replace(layer):
        mine = (rm.features[chosen, 0] == layer).nonzero()[:, 0]

        def hook(out, _):
            x = stash.pop("x")
            f = view.activate(layer, view.pre_activations(layer, x))  # (B, pos, d_sae)
            f = f.masked_fill(rm.dropped[layer], 0)  # a left-out feature stays in its error node
            f[mine, rm.features[chosen[mine], 1], rm.features[chosen[mine], 2]] *= factor
            fs[layer] = f  # a CLT's later layers read it too
            return view.written(layer, fs) + view.constant(layer, x) + rm.errors[layer]
        return hook

    def pattern(layer):
        def hook(p, _):
            tv = 0.5 * (p - rm.patterns[layer]).abs().sum(-1)  # (B, n_heads, pos)
            shift.copy_(torch.maximum(shift, tv.flatten(1).amax(1)))
        return hook

    hooks = []
    for i in range(rm.n_layers):
        hooks += [(f"blocks.{i}.ln2.hook_normalized", read_in), (f"blocks.{i}.hook_mlp_out", replace(i)),
                  (f"blocks.{i}.attn.hook_pattern", pattern(i))]
    with eval_mode(*view.modules), model.hooks(hooks):
        logits = model(rm.ids.expand(B, -1))[:, -1]
    return logits - logits.mean(-1, keepdim=True), shift


@torch.no_grad()
def intervention_check(model, transcoders, ids, graph: Graph, *, top: int = 20, target: int = 0,
                       factor: float = 0.0, batch_size: int = 64) -> InterventionCheck:
    """Set each of the `top` most influential feature nodes of `graph` to `factor` times its
    activation (0: ablate) and compare the change of logit node `target`'s input with the
    graph's prediction (module docstring)."""
    rm = local_replacement(model, transcoders, ids, targets=graph.logit_tokens.tolist(),
                           max_feature_nodes=graph.max_feature_nodes)
    if not torch.equal(rm.ids.cpu(), graph.ids) or not torch.equal(rm.features.cpu(), graph.features):
        raise ValueError("the graph was not built from this model, these transcoders and this prompt: "
                         "pass the ones attribution_graph was given")
    if not 0 <= target < len(graph.logit_tokens):
        raise ValueError(f"target={target}: the graph has logit nodes 0..{len(graph.logit_tokens) - 1}")
    influence = node_influence(graph)[:graph.n_features]
    chosen = influence.argsort(descending=True)[:top]
    predicted = (factor - 1) * total_effects(graph, target)[chosen]
    token = int(graph.logit_tokens[target])
    n_f = graph.n_features
    clean = float(rm.target_inputs[n_f + target])
    linear, frozen, actual, shift = [], [], [], []
    device = rm.ids.device
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start:start + batch_size].to(device)
        scale = rm.embed.new_ones(len(rows), rm.n_sources)
        scale[torch.arange(len(rows), device=device), rows] = factor
        targets = torch.full_like(rows, n_f + target)
        for mode, out in (("linear", linear), ("free", frozen)):
            out.append(target_inputs(rm, frozen_forward(rm, scale, features=mode, logits=False), targets) - clean)
        logits, moved = _spliced(rm, rows, factor)
        actual.append(logits[:, token] - clean)
        shift.append(moved)
    linear, frozen, actual, shift = (torch.cat(parts).double().cpu() for parts in (linear, frozen, actual, shift))
    return InterventionCheck(chosen.tolist(), predicted, linear, frozen, actual, shift,
                             _pearson(predicted, actual), _pearson(predicted, frozen))


__all__ = ["InterventionCheck", "intervention_check", "total_effects"]
