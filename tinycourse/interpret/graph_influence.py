"""Which nodes of an attribution graph matter: influence, pruning, the replacement and
completeness scores (facts marked [ct] are taken from circuit-tracer's code).

Influence and pruning [ct]. |adjacency| with each row normalised to sum 1 is B; a node's
influence is w (B + B^2 + ...) = w ((I - B)^-1 - I), w the logit nodes' probabilities: the
share of the prediction that flows through it along all paths. The graph is layered, so
the series ends after at most n_layers + 2 terms. `prune` keeps the nodes that carry
`node_threshold` of the total influence (embeddings and logits always), then, in the
graph of those, the edges carrying `edge_threshold` of the edge influence (edge score
B[t, s] times the influence of t plus its logit weight), then drops features left without
an outgoing or an incoming edge and errors without an outgoing one, until nothing changes.
(One change: an edge whose score is 0 is never kept, so a node joined only by zero edges
goes too; circuit-tracer keeps them when its cut lands on 0.)
Scores [ct]: replacement = embedding influence / (embedding + error influence), the share
of the path weight from the prompt to the logits that avoids error nodes; completeness =
the influence-weighted mean over nodes of the share of each node's normalised input that
is not from error nodes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .circuits import Graph


def _normalised(adjacency: Tensor) -> Tensor:
    """|A| with each row summing to 1 (rows without inputs stay 0). (n, n) -> (n, n)"""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def _influence(B: Tensor, weights: Tensor) -> Tensor:
    """weights (n,) @ (B + B^2 + ...): the series of (I - B)^-1 - I, which ends because the
    graph is layered. -> (n,)"""
    total = torch.zeros_like(weights)
    current = weights @ B
    for _ in range(B.shape[0] + 1):
        if not current.any():
            return total
        total += current
        current = current @ B
    raise RuntimeError("influence did not converge: the adjacency has a cycle, which no graph "
                       "from attribution_graph has")


def _logit_weights(graph: Graph) -> Tensor:
    w = torch.zeros(graph.n_nodes)
    w[graph.logits] = graph.logit_probs
    return w


def node_influence(graph: Graph) -> Tensor:
    """Each node's influence on the logits (module docstring). -> (n,)"""
    return _influence(_normalised(graph.adjacency), _logit_weights(graph))


def _cut(scores: Tensor, share: float) -> Tensor:
    """The smallest score among the largest ones that together carry `share` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    at = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype)))
    return ordered[min(at, len(ordered) - 1)]


class Pruned(NamedTuple):
    node_mask: Tensor  # (n,) bool
    edge_mask: Tensor  # (n, n) bool, [target, source]
    influence: Tensor  # (n,) the cumulative share of influence up to each node, largest first


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Keep the nodes and edges that carry most of the influence (module docstring)."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value}: it is a share of the influence, between 0 and 1")
    w = _logit_weights(graph)
    influence = node_influence(graph)
    nodes = influence >= _cut(influence, node_threshold)
    nodes[graph.embeddings.start:] = True  # embeddings and logits always stay
    A = graph.adjacency * nodes[:, None] * nodes[None, :]
    B = _normalised(A)
    edge_scores = B * (_influence(B, w) + w)[:, None]
    edges = (edge_scores >= _cut(edge_scores, edge_threshold)) & (edge_scores > 0)
    inner = graph.embeddings.start  # features and errors
    while True:
        edges &= nodes[:, None] & nodes[None, :]
        before = nodes.clone()
        nodes[:inner] &= edges[:, :inner].any(0)  # features and errors need an outgoing edge
        nodes[:graph.n_features] &= edges[:graph.n_features].any(1)  # features an incoming one
        if torch.equal(nodes, before):
            break
    ordered, order = influence.sort(descending=True)
    cumulative = torch.zeros_like(influence)
    cumulative[order] = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return Pruned(nodes, edges, cumulative)


def _matrix(graph: Graph, pruned: Pruned | None) -> Tensor:
    if pruned is None:
        return graph.adjacency
    return graph.adjacency * pruned.edge_mask


def replacement_score(graph: Graph, pruned: Pruned | None = None) -> float:
    """Embedding influence / (embedding + error influence), on the whole graph or on the
    kept edges of `pruned`: 1 when the prompt reaches the logits through features only."""
    B = _normalised(_matrix(graph, pruned))
    influence = _influence(B, _logit_weights(graph))
    tokens, errors = influence[graph.embeddings].sum(), influence[graph.errors].sum()
    return float(tokens / (tokens + errors).clamp_min(1e-30))


def completeness_score(graph: Graph, pruned: Pruned | None = None) -> float:
    """The influence-weighted share of each node's normalised input that is not from error
    nodes: 1 when no node reads an error."""
    errors = torch.zeros(graph.adjacency.shape[0], dtype=torch.bool)
    errors[graph.errors] = True
    return graph_completeness(_matrix(graph, pruned), _logit_weights(graph), errors)


def graph_completeness(adjacency: Tensor, logit_weights: Tensor, errors: Tensor) -> float:
    """`completeness_score` on plain tensors: adjacency (n, n) [target, source],
    logit_weights (n,) (the logit nodes' probabilities, 0 elsewhere), errors (n,) bool."""
    B = _normalised(adjacency)
    weight = _influence(B, logit_weights) + logit_weights
    explained = 1 - B[:, errors].sum(1)
    return float((explained * weight).sum() / weight.sum())


__all__ = ["Pruned", "completeness_score", "graph_completeness", "node_influence", "prune",
           "replacement_score"]
