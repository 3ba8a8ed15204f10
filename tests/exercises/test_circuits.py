"""Notebook 08's exercises: each reference passes its own check and equals what the graph
computes (an edge of the adjacency, completeness_score), each mistake a hint names fails
with that hint, and a stub falls back."""

import re

import pytest
import torch

import tinycourse.exercises.circuits as ex
from tinycourse.exercises.checker import EXERCISES, ExerciseFailed, check
from tinycourse.interpret.graph_influence import completeness_score, prune

NAMES = ["08.edge_weight", "08.completeness"]


def _fails(name, fn, hint):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        check(name, fn)


@pytest.fixture(scope="module")
def toy():
    return ex.toy_graph()


@pytest.mark.parametrize("name", NAMES)
def test_each_reference_passes(name, capsys):
    reference = EXERCISES[name].reference
    assert check(name, reference) is reference
    assert f"{name}: correct on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_falls_back_to_the_reference(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(name, stub) is EXERCISES[name].reference
    assert "not attempted yet: using the reference" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_that_returns_none_fails_on_the_type(name):
    with pytest.raises(ExerciseFailed, match="type differs: expected a number.*got None"):
        check(name, lambda *args: None)


# --- the references are what the graph computes -------------------------------------------


def test_logit_edge_is_the_adjacency_for_every_last_layer_feature_at_the_last_position(toy):
    model, tcs, _, graph, rm = toy
    edges = ex.last_layer_logit_edges(model, tcs, graph, rm)
    assert len(edges) >= 6  # several features, several logit nodes
    for source, target, args in edges:
        assert ex.logit_edge(*args) == pytest.approx(float(graph.adjacency[target, source]), rel=1e-4, abs=1e-5)


def test_logit_edge_is_the_adjacency_for_the_last_error_node(toy):
    model, _, _, graph, rm = toy
    last = graph.n_pos - 1
    error = graph.errors.start + (graph.n_layers - 1) * graph.n_pos + last  # errors: layer, then position
    assert graph.node(error).kind == "error" and graph.node(error).position == last
    for k, token in enumerate(graph.logit_tokens.tolist()):
        got = ex.logit_edge(1.0, rm.errors[-1, last], float(rm.ln_final[last, 0]), model.ln_final.weight.detach(),
                            model.W_U.detach(), token)
        assert got == pytest.approx(float(graph.adjacency[graph.logits.start + k, error]), rel=1e-4, abs=1e-5)


def test_graph_completeness_is_completeness_score_whole_and_pruned(toy):
    *_, graph, _ = toy
    w = torch.zeros(graph.n_nodes)
    w[graph.logits] = graph.logit_probs
    errors = torch.zeros(graph.n_nodes, dtype=torch.bool)
    errors[graph.errors] = True
    assert ex.graph_completeness(graph.adjacency, w, errors) == pytest.approx(completeness_score(graph), abs=1e-6)
    kept = prune(graph, 0.6, 0.9)
    assert ex.graph_completeness(graph.adjacency * kept.edge_mask, w, errors) == pytest.approx(
        completeness_score(graph, kept), abs=1e-6)


def test_completeness_is_one_without_error_edges_and_zero_when_errors_feed_everything():
    A = torch.tensor([[0.0, 0, 0, 0], [2, 0, 0, 0], [0, -1, 0, 0], [0, 0, 3, 0]])  # a chain 0 -> 1 -> 2 -> 3
    w = torch.tensor([0.0, 0, 0, 0.7])
    errors = torch.tensor([False, False, False, False])
    assert ex.graph_completeness(A, w, errors) == pytest.approx(1.0)
    errors[0] = True  # the chain's source is an error: node 1 reads only it
    # every node carries weight 0.7 (nodes 0-2 their influence, node 3 its logit weight) and
    # all but node 1 read no error: 3 of 4 equal weights explained
    assert ex.graph_completeness(A, w, errors) == pytest.approx(0.75, abs=1e-6)


# --- 08.edge_weight's mistakes -----------------------------------------------------------


def _edge(a, write, s, w, W_U, t, *, centre=True, centre_u="vocab", scale=True, weight=True, activation=True):
    x = write - write.mean() if centre else write
    u = {"vocab": W_U[:, t] - W_U.mean(1), "none": W_U[:, t], "d_model": W_U[:, t] - W_U[:, t].mean()}[centre_u]
    return float((a if activation else 1.0) * ((x * (s if scale else 1.0) * (w if weight else 1.0)) @ u))


def test_a_learners_edge_passes():
    assert check("08.edge_weight", _edge) is _edge


def test_edge_mistakes():
    name = "08.edge_weight"
    _fails(name, lambda *a: _edge(*a, centre=False), "centre the write first")
    _fails(name, lambda *a: _edge(*a, centre_u="none"), "W_U[:, token] - W_U.mean(1)")
    _fails(name, lambda *a: _edge(*a, centre_u="d_model"), "centred over the vocabulary, per row")
    _fails(name, lambda *a: _edge(*a, scale=False), "multiply by ln_scale")
    _fails(name, lambda *a: _edge(*a, weight=False), "multiplies by its weight w")
    _fails(name, lambda *a: _edge(*a, activation=False), "multiply by the activation")


def test_the_edge_hints_name_only_their_mistake():
    with pytest.raises(ExerciseFailed) as failed:
        check("08.edge_weight", lambda *a: _edge(*a, scale=False))
    assert str(failed.value).count("hint:") == 1


# --- 08.completeness's mistakes ----------------------------------------------------------


def _completeness(A, w, errors, *, absolute=True, normalise="rows", paths="all", logit_weight=True,
                  weighted=True, share="explained"):
    """A learner's completeness, the influence by the inverse (I - B)^-1 - I; each keyword
    one of the mistakes."""
    A, w = A.double(), w.double()
    a = A.abs() if absolute else A
    total = {"rows": A.abs().sum(1, keepdim=True), "columns": A.abs().sum(0, keepdim=True),
             "none": torch.ones(1, 1, dtype=A.dtype)}[normalise]
    B = a / total.clamp_min(1e-10)
    eye = torch.eye(len(w), dtype=A.dtype)
    influence = w @ (torch.linalg.inv(eye - B) - eye) if paths == "all" else w @ B
    weight = (influence + (w if logit_weight else 0)) if weighted else torch.ones_like(w)
    from_errors = B[:, errors].sum(1)
    value = 1 - from_errors if share == "explained" else from_errors
    return float((value * weight).sum() / weight.sum())


def test_a_learners_completeness_by_the_inverse_passes():
    assert check("08.completeness", _completeness) is _completeness


def test_completeness_mistakes():
    name = "08.completeness"
    _fails(name, lambda *a: _completeness(*a, absolute=False), "take |A| before normalising")
    _fails(name, lambda *a: _completeness(*a, normalise="none"), "normalise each row of |A|")
    _fails(name, lambda *a: _completeness(*a, normalise="columns"), "normalise each *row*")
    _fails(name, lambda *a: _completeness(*a, paths="direct"), "paths of every length")
    _fails(name, lambda *a: _completeness(*a, logit_weight=False), "*plus* its own logit weight")
    _fails(name, lambda *a: _completeness(*a, weighted=False), "not a plain mean over nodes")
    _fails(name, lambda *a: _completeness(*a, share="errors"), "1 minus it")


def test_the_completeness_hints_name_only_their_mistake():
    with pytest.raises(ExerciseFailed) as failed:
        check("08.completeness", lambda *a: _completeness(*a, paths="direct"))
    assert str(failed.value).count("hint:") == 1
