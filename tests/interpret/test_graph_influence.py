"""Influence, pruning and the two scores of an attribution graph."""

import pytest
import torch

from tinycourse.interpret.circuits import attribution_graph
from tinycourse.interpret.graph_influence import completeness_score, node_influence, prune, replacement_score

from .test_circuits import make_model, make_transcoders, prompt


def test_influence_is_the_inverse_series_and_scores_are_shares():
    model, tcs, ids = make_model(), make_transcoders("topk"), prompt()
    graph = attribution_graph(model, tcs, ids)
    a = graph.adjacency.double().abs()
    B = a / a.sum(1, keepdim=True).clamp_min(1e-10)
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.logits] = graph.logit_probs.double()
    reference = w @ (torch.linalg.inv(torch.eye(graph.n_nodes, dtype=torch.float64) - B)
                     - torch.eye(graph.n_nodes, dtype=torch.float64))
    torch.testing.assert_close(node_influence(graph).double(), reference, atol=1e-5, rtol=1e-4)
    r, c = replacement_score(graph), completeness_score(graph)
    assert 0 < r < 1 and 0 < c < 1
    tokens, errors = reference[graph.embeddings].sum(), reference[graph.errors].sum()
    assert r == pytest.approx(float(tokens / (tokens + errors)), rel=1e-4)
    # with the error nodes cut out, everything is explained
    graph.adjacency[:, graph.errors] = 0
    assert replacement_score(graph) == pytest.approx(1.0)
    assert completeness_score(graph) == pytest.approx(1.0)


def test_pruning_keeps_logits_and_shrinks_with_the_thresholds():
    model, tcs, ids = make_model(), make_transcoders("relu"), prompt()
    graph = attribution_graph(model, tcs, ids)
    last = None
    for node_threshold in (1.0, 0.95, 0.8, 0.5, 0.2, 0.0):
        kept = prune(graph, node_threshold, 1.0)
        assert kept.node_mask[graph.embeddings.start:].all()  # embeddings and logits stay
        n = int(kept.node_mask.sum())
        assert last is None or n <= last
        last = n
        # every kept edge joins kept nodes, every kept feature has an edge in and out
        t, s = kept.edge_mask.nonzero().unbind(1)
        assert kept.node_mask[t].all() and kept.node_mask[s].all()
        feats = kept.node_mask[:graph.n_features].nonzero()[:, 0]
        assert kept.edge_mask[:, feats].any(0).all() and kept.edge_mask[feats].any(1).all()
    assert int(prune(graph, 1.0, 1.0).node_mask[:graph.n_features].sum()) > int(
        prune(graph, 0.2, 1.0).node_mask[:graph.n_features].sum())
    last = None
    for edge_threshold in (1.0, 0.98, 0.9, 0.5, 0.1):
        kept = prune(graph, 0.8, edge_threshold)
        assert kept.node_mask[graph.logits].all()
        counts = (int(kept.node_mask.sum()), int(kept.edge_mask.sum()))
        assert last is None or (counts[0] <= last[0] and counts[1] <= last[1])
        last = counts
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune(graph, 1.5)
