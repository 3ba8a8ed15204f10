"""An attribution graph as circuit-tracer's viewer file."""

import json

import pytest

from tinycourse.interpret.circuits import attribution_graph
from tinycourse.interpret.graph_json import to_circuit_tracer_json

from .test_circuits import NODE_KEYS, VOCAB, make_model, make_transcoders, prompt


def test_json_is_circuit_tracers_schema_and_round_trips():
    model, tcs, ids = make_model(), make_transcoders("topk"), prompt()
    graph = attribution_graph(model, tcs, ids)
    vocabulary = [f"t{i}" for i in range(VOCAB)]
    labels = {0: {"latents": [{"latent": i, "label": f"zero-{i}"} for i in range(48)]},
              1: {3: "three"}}
    page = to_circuit_tracer_json(graph, vocabulary, labels, slug="demo")
    back = json.loads(json.dumps(page))
    assert back == page
    assert set(page) == {"metadata", "qParams", "nodes", "links"}
    meta = page["metadata"]
    assert meta["prompt_tokens"] == [vocabulary[i] for i in ids.tolist()]
    assert meta["slug"] == "demo" and meta["scan"] == "tinycourse" and meta["schema_version"] == 1
    assert 0 < meta["replacement_score"] < 1
    ids_seen = [n["node_id"] for n in page["nodes"]]
    assert len(ids_seen) == len(set(ids_seen))
    for node in page["nodes"]:
        assert set(node) == NODE_KEYS
    kinds = [n["feature_type"] for n in page["nodes"]]
    assert set(kinds) <= {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    assert kinds.count("embedding") == len(ids) and kinds.count("logit") == len(graph.logit_tokens)
    assert "cross layer transcoder" in kinds
    top = next(n for n in page["nodes"] if n["is_target_logit"])
    assert top["node_id"] == f"3_{int(graph.logit_tokens[0])}_{len(ids) - 1}"
    assert top["token_prob"] == pytest.approx(float(graph.logit_probs[0]))
    # links: node ids that exist, weights that are the adjacency's
    index = {}
    for i in range(graph.n_nodes):
        n = graph.node(i)
        index[{"feature": f"{n.layer}_{n.latent}_{n.position}", "error": f"{n.layer}_-1_{n.position}",
               "embedding": f"E_{n.token}_{n.position}", "logit": f"3_{n.token}_{n.position}"}[n.kind]] = i
    assert set(ids_seen) <= set(index)
    assert page["links"]
    for link in page["links"]:
        assert link["source"] in ids_seen and link["target"] in ids_seen
        assert link["weight"] == pytest.approx(float(graph.adjacency[index[link["target"]], index[link["source"]]]))
    for node in page["nodes"]:
        if node["feature_type"] == "cross layer transcoder":
            layer, latent, _ = map(int, node["node_id"].split("_"))
            assert node["activation"] == pytest.approx(float(graph.node(index[node["node_id"]]).activation))
            want = f"zero-{latent}" if layer == 0 else ("three" if latent == 3 else "")
            assert node["clerp"] == want
    # a function works as token_text too
    assert to_circuit_tracer_json(graph, lambda t: f"t{t}")["metadata"]["prompt_tokens"] == meta["prompt_tokens"]
