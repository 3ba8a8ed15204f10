"""Attribution graphs through a cross-layer transcoder: the identities of
tests/interpret/test_circuits.py, for a CLT, and a CLT with only its diagonal decoders
giving the per-layer transcoders' graph."""

import json

import pytest
import torch

from tinycourse.config import TranscodersConfig
from tinycourse.interpret.circuits import attribution_graph, frozen_forward, local_replacement, logit_edge, node_inputs
from tinycourse.interpret.graph_check import intervention_check
from tinycourse.interpret.graph_influence import completeness_score, prune, replacement_score
from tinycourse.interpret.graph_json import to_circuit_tracer_json
from tinycourse.sae.crosslayer import CrossLayerTranscoder
from tinycourse.sae.model import SparseAutoencoder

from .test_circuits import D, NODE_KEYS, VOCAB, make_model, prompt

pytestmark = pytest.mark.usefixtures("one_thread")

D_SAE, K = 48, 6
SCALES = ((1.7, 0.6), (0.9, 1.4))  # (input, output) per layer: unfolded, so the maths sees them


def make_clt(dtype=torch.float32, diagonal_only=False):
    clt = CrossLayerTranscoder(TranscodersConfig(d_sae=D_SAE, k=K), [0, 1], D)
    with torch.no_grad():
        clt.b_enc.normal_(0, 0.05)
        clt.b_dec.normal_(0, 0.1)
        for i, (s_in, s_out) in enumerate(SCALES):
            clt.input_scale[i], clt.output_scale[i] = s_in, s_out
        if diagonal_only:
            clt.W_dec[0][1].zero_()
    return clt.eval().to(dtype)


def per_layer_twins(clt):
    """TopK transcoders holding the CLT's encoders and diagonal decoders."""
    tcs = []
    for i in range(clt.n_layers):
        tc = SparseAutoencoder(TranscodersConfig(d_sae=D_SAE, k=K).sae_config(i), d_in=D)
        with torch.no_grad():
            tc.W_enc.copy_(clt.W_enc[i])
            tc.b_enc.copy_(clt.b_enc[i])
            tc.W_dec.copy_(clt.W_dec[i][0])
            tc.b_dec.copy_(clt.b_dec[i])
            tc.input_scale.fill_(float(clt.input_scale[i]))
            tc.output_scale.fill_(float(clt.output_scale[i]))
        tcs.append(tc.eval().to(clt.W_enc.dtype))
    return tcs


def targets_of(graph):
    return torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.n_nodes)])


def test_the_frozen_model_reproduces_the_clean_logits():
    model, clt, ids = make_model(), make_clt(), prompt()
    rm = local_replacement(model, clt, ids)
    with torch.no_grad():
        clean = model(ids[None])[0]
        for mode in ("fixed", "linear", "free"):
            torch.testing.assert_close(frozen_forward(rm, features=mode).logits[0], clean, atol=1e-4, rtol=1e-4)
        # the error of MLP 1 is what the writes of both layers' features miss
        x = [rm.model.run_with_cache(ids[None], names=[f"blocks.{i}.ln2.hook_normalized" for i in (0, 1)])[1]
             [f"blocks.{i}.ln2.hook_normalized"][0] for i in (0, 1)]
        out = clt([xi * s for xi, (s, _) in zip(x, SCALES)])
        mlp_1 = model.run_with_cache(ids[None], names=["blocks.1.hook_mlp_out"])[1]["blocks.1.hook_mlp_out"][0]
        torch.testing.assert_close(rm.errors[1], mlp_1 - out.reconstructions[1] / SCALES[1][1], atol=1e-5, rtol=1e-5)
    assert 0 < len(rm.features) <= 2 * len(ids) * K
    torch.testing.assert_close(rm.target_inputs[:len(rm.features)], rm.activations)


def test_each_input_is_its_incoming_edges_plus_its_constant():
    model, clt, ids = make_model(), make_clt(), prompt()
    graph = attribution_graph(model, clt, ids, batch_size=100)
    assert graph.dictionary == "crosslayer"
    targets = targets_of(graph)
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
    assert (graph.constants[targets].abs() > 1e-2).any()
    assert graph.adjacency[graph.errors.start:graph.logits.start].abs().sum() == 0
    assert graph.adjacency[:, graph.logits].abs().sum() == 0
    # the whole graph reproduces the clean logits: kept edges of an unpruned graph plus constants
    with torch.no_grad():
        last = model(ids[None])[0, -1].double()
    clean = last[graph.logit_tokens] - last.mean()
    kept = prune(graph, 1.0, 1.0)
    through_kept = (graph.adjacency * kept.edge_mask).double().sum(1) + graph.constants
    torch.testing.assert_close(through_kept[graph.logits], clean, atol=1e-4, rtol=1e-4)


def test_scaling_a_source_moves_each_target_by_eps_times_its_edge():
    dtype = torch.float64
    model, clt, ids = make_model(dtype=dtype), make_clt(dtype), prompt()
    graph = attribution_graph(model, clt, ids)
    rm = local_replacement(model, clt, ids)
    targets = targets_of(graph)
    layer_0 = (graph.features[:, 0] == 0).nonzero()[:, 0]
    sources = [0, int(layer_0[len(layer_0) // 2]), int(layer_0[-1]), graph.n_features - 1,
               graph.errors.start + 3, graph.errors.stop - 1, graph.embeddings.start, graph.embeddings.stop - 1]
    eps = 1e-3
    scale = torch.ones(len(sources) + 1, rm.n_sources, dtype=dtype)
    for row, s in enumerate(sources):
        scale[row + 1, s] = 1 + eps
    with torch.no_grad():
        inputs = node_inputs(rm, scale)
    reached = 0
    for row, s in enumerate(sources):
        moved = (inputs[row + 1] - inputs[0]) / eps
        edge = graph.adjacency[targets, s].double()
        reached += int((edge != 0).sum())
        torch.testing.assert_close(moved, edge, rtol=1e-3, atol=1e-3 * float(edge.abs().max()) + 1e-12)
    assert reached > len(sources)


def test_a_layer_0_feature_reaches_the_logits_through_its_write_into_mlp_1():
    model, clt, ids = make_model(), make_clt(), prompt()
    graph = attribution_graph(model, clt, ids)
    without = make_clt()
    without.load_state_dict(clt.state_dict())
    with torch.no_grad():
        without.W_dec[0][1].zero_()
    base = attribution_graph(model, without, ids, targets=graph.logit_tokens.tolist())
    assert torch.equal(base.features, graph.features)  # encoders alike: the same features
    rm = local_replacement(model, clt, ids)
    last = len(ids) - 1
    nodes = ((graph.features[:, 0] == 0) & (graph.features[:, 1] == last)).nonzero()[:, 0].tolist()
    assert nodes
    for node in nodes:
        latent = int(graph.features[node, 2])
        write = (clt.W_dec[0][1][latent] / SCALES[1][1]).detach()  # straight into the last MLP's output
        for k, token in enumerate(graph.logit_tokens.tolist()):
            extra = logit_edge(float(graph.activations[node]), write, float(rm.ln_final[last, 0]),
                               model.ln_final.weight.detach(), model.W_U.detach(), token)
            t = graph.logits.start + k
            assert float(graph.adjacency[t, node]) == pytest.approx(float(base.adjacency[t, node]) + extra,
                                                                    rel=1e-4, abs=1e-5)
    # and into the layer-1 features through that write: the edges differ where it lands
    layer_1 = (graph.features[:, 0] == 1).nonzero()[:, 0]
    assert not torch.allclose(graph.adjacency[graph.logits], base.adjacency[graph.logits])
    assert torch.allclose(graph.adjacency[layer_1], base.adjacency[layer_1])  # layer 1 reads before MLP 1


def test_edges_respect_layers_and_causality():
    model, clt, ids = make_model(), make_clt(), prompt()
    graph = attribution_graph(model, clt, ids)
    nodes = graph.nodes
    for t in range(graph.n_features):
        for s in graph.adjacency[t].nonzero()[:, 0].tolist():
            assert nodes[s].position <= nodes[t].position
            assert nodes[s].kind == "embedding" or nodes[s].layer < nodes[t].layer
    assert graph.adjacency[:graph.n_features].abs().sum() > 0


def test_a_diagonal_clt_gives_the_per_layer_transcoders_graph():
    model, ids = make_model(), prompt()
    full = make_clt()
    clt = make_clt(diagonal_only=True)
    clt.load_state_dict(full.state_dict())
    with torch.no_grad():
        clt.W_dec[0][1].zero_()
    tcs = per_layer_twins(clt)
    ours, theirs = attribution_graph(model, clt, ids), attribution_graph(model, tcs, ids)
    assert torch.equal(ours.features, theirs.features) and torch.equal(ours.logit_tokens, theirs.logit_tokens)
    torch.testing.assert_close(ours.activations, theirs.activations)
    torch.testing.assert_close(ours.adjacency, theirs.adjacency, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.constants, theirs.constants, atol=1e-5, rtol=1e-4)
    assert (ours.dictionary, theirs.dictionary) == ("crosslayer", "transcoders")
    assert replacement_score(ours) == pytest.approx(replacement_score(theirs), rel=1e-4)
    assert completeness_score(ours) == pytest.approx(completeness_score(theirs), rel=1e-4)
    a, b = intervention_check(model, clt, ids, ours, top=8), intervention_check(model, tcs, ids, theirs, top=8)
    assert a.nodes == b.nodes
    torch.testing.assert_close(a.actual, b.actual, atol=1e-5, rtol=1e-4)
    # with its decoder 0 -> 1 back, the writes into MLP 1 change the logits' edges
    full = attribution_graph(model, full, ids)
    assert torch.equal(full.features, ours.features)
    assert not torch.allclose(full.adjacency[full.logits], ours.adjacency[ours.logits], atol=1e-3)


def test_max_feature_nodes_keeps_the_identities():
    model, clt, ids = make_model(), make_clt(), prompt()
    full = attribution_graph(model, clt, ids)
    graph = attribution_graph(model, clt, ids, max_feature_nodes=25)
    assert graph.n_features == 25 < full.n_features
    targets = targets_of(graph)
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
    rm = local_replacement(model, clt, ids, max_feature_nodes=25)
    with torch.no_grad():
        for mode in ("fixed", "linear", "free"):
            torch.testing.assert_close(frozen_forward(rm, features=mode).logits[0], model(ids[None])[0],
                                       atol=1e-4, rtol=1e-4)
    check = intervention_check(model, clt, ids, graph, top=10)
    torch.testing.assert_close(check.linear, check.predicted, rtol=1e-3, atol=1e-5)
    assert intervention_check(model, clt, ids, graph, top=5, factor=1.0).actual.abs().max() < 1e-5


def test_scores_json_and_intervention_check():
    dtype = torch.float64
    model, clt, ids = make_model(dtype=dtype), make_clt(dtype), prompt()
    graph = attribution_graph(model, clt, ids)
    r, c = replacement_score(graph), completeness_score(graph)
    assert 0 < r < 1 and 0 < c < 1
    page = json.loads(json.dumps(to_circuit_tracer_json(graph, [f"t{i}" for i in range(VOCAB)], slug="clt")))
    assert page["metadata"]["dictionary"] == "crosslayer" and page["metadata"]["replacement_score"] == pytest.approx(r)
    assert all(set(node) == NODE_KEYS for node in page["nodes"])
    index = {}
    for i in range(graph.n_nodes):
        n = graph.node(i)
        index[{"feature": f"{n.layer}_{n.latent}_{n.position}", "error": f"{n.layer}_-1_{n.position}",
               "embedding": f"E_{n.token}_{n.position}", "logit": f"3_{n.token}_{n.position}"}[n.kind]] = i
    assert page["links"]
    for link in page["links"]:
        assert link["weight"] == pytest.approx(float(graph.adjacency[index[link["target"]], index[link["source"]]]))
    check = intervention_check(model, clt, ids, graph, top=20)
    torch.testing.assert_close(check.linear, check.predicted, rtol=1e-3, atol=1e-6)
    assert check.predicted.abs().max() > 1e-3
    same = intervention_check(model, clt, ids, graph, top=5, factor=1.0)
    assert same.actual.abs().max() < 1e-8 and same.frozen.abs().max() < 1e-8
    nudge = intervention_check(model, clt, ids, graph, top=10, factor=1 - 1e-4)
    torch.testing.assert_close(nudge.frozen, nudge.predicted, rtol=1e-2, atol=1e-9)
    # one position, no norms: nothing can move but the features, so the real model agrees
    flat, one = make_model(norm="none", dtype=dtype), prompt(n=1)
    graph = attribution_graph(flat, clt, one)
    check = intervention_check(flat, clt, one, graph, top=8)
    torch.testing.assert_close(check.actual, check.frozen, rtol=1e-6, atol=1e-9)


def test_bad_input_says_what_to_do():
    model, ids = make_model(), prompt()
    one_layer = CrossLayerTranscoder(TranscodersConfig(d_sae=D_SAE, k=K), [0], D)
    with pytest.raises(ValueError, match=r"covers layers \[0\] of 2: .* pass one trained on every layer") as e:
        attribution_graph(model, one_layer, ids)
    assert "\n" not in str(e.value)
    wide = CrossLayerTranscoder(TranscodersConfig(d_sae=D_SAE, k=K), [0, 1], D + 1)
    with pytest.raises(ValueError, match="maps 33 -> 33 but d_model is 32"):
        attribution_graph(model, wide, ids)
    with pytest.raises(ValueError, match="move it with"):
        attribution_graph(model, make_clt(torch.float64), ids)
    with pytest.raises(ValueError, match="longer than n_ctx=16"):
        attribution_graph(model, make_clt(), prompt(n=17))
    clt = make_clt()
    graph = attribution_graph(model, clt, ids)
    with pytest.raises(ValueError, match="not built from this model"):
        intervention_check(model, clt, prompt(seed=5), graph)
