"""The graph's predicted effects against the real model's."""

import torch

from tinycourse.interpret.circuits import attribution_graph
from tinycourse.interpret.graph_check import intervention_check, total_effects

from .test_circuits import make_model, make_transcoders, prompt


def test_intervention_check_predictions():
    dtype = torch.float64
    model, tcs, ids = make_model(dtype=dtype), make_transcoders("relu", dtype=dtype), prompt()
    graph = attribution_graph(model, tcs, ids)
    check = intervention_check(model, tcs, ids, graph, top=20)
    assert len(check.nodes) == 20 and all(i < graph.n_features for i in check.nodes)
    # the frozen model with linear features is exactly what the graph's total effect predicts
    torch.testing.assert_close(check.linear, check.predicted, rtol=1e-3, atol=1e-6)
    assert check.predicted.abs().max() > 1e-3
    assert -1 <= check.correlation <= 1
    # a last-layer feature writes after the last attention layer: no pattern can move
    layers = graph.features[check.nodes, 0]
    assert (check.attention_shift[layers == 1] < 1e-12).all()  # 0 up to rounding
    assert (check.attention_shift[layers == 0] > 1e-6).all()
    # nothing changed: nothing moves
    same = intervention_check(model, tcs, ids, graph, top=5, factor=1.0)
    assert same.actual.abs().max() < 1e-8 and same.frozen.abs().max() < 1e-8
    # a small nudge: with attention frozen the activation rules stay on their linear piece
    nudge = intervention_check(model, tcs, ids, graph, top=10, factor=1 - 1e-4)
    torch.testing.assert_close(nudge.frozen, nudge.predicted, rtol=1e-2, atol=1e-9)
    # total effects include the direct edge and the paths through features
    effects = total_effects(graph)
    direct = graph.adjacency[graph.logits.start].double()
    assert not torch.allclose(effects[:graph.n_features], direct[:graph.n_features])


def test_with_nothing_to_move_the_real_model_agrees_with_the_frozen_one():
    # one position (the pattern is [1]) and no norms: attention and norms cannot move, so
    # the spliced real model and the frozen model with free features must agree exactly
    model, tcs = make_model(norm="none", dtype=torch.float64), make_transcoders("relu", dtype=torch.float64)
    ids = prompt(n=1)
    graph = attribution_graph(model, tcs, ids)
    check = intervention_check(model, tcs, ids, graph, top=8)
    torch.testing.assert_close(check.actual, check.frozen, rtol=1e-6, atol=1e-9)
    assert check.attention_shift.abs().max() < 1e-12
