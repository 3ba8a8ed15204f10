import json

import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.interpret.circuits import (
    attribution_graph,
    completeness_score,
    frozen_forward,
    intervention_check,
    local_replacement,
    node_influence,
    node_inputs,
    prune,
    replacement_score,
    to_circuit_tracer_json,
    total_effects,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

D, N_CTX, VOCAB = 32, 16, 64
NODE_KEYS = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
             "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(norm="layernorm", dtype=torch.float32, **options):
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                      d_vocab=VOCAB, init_std=0.3, norm=norm, **options)
    model = GPT(cfg).eval().to(dtype)
    with torch.no_grad():  # non-zero biases and norm weights, so the constants are not trivial
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_transcoders(kind="relu", skip=False, dtype=torch.float32, d_sae=48):
    tcs = {}
    for i in range(2):
        cfg = SAEConfig(kind=kind, d_sae=d_sae, k=6, skip_connection=skip,
                        hook_in=f"blocks.{i}.ln2.hook_normalized", hook_out=f"blocks.{i}.hook_mlp_out")
        tc = SparseAutoencoder(cfg, d_in=D)
        with torch.no_grad():  # biases, unfolded scales and a skip path: every term of the maths
            tc.b_enc.normal_(0, 0.05)
            tc.b_dec.normal_(0, 0.1)
            tc.input_scale.fill_(1.7)
            tc.output_scale.fill_(0.6)
            if skip:
                tc.W_skip.normal_(0, 0.05)
            if kind == "jumprelu":
                tc.log_threshold.fill_(-1.0)
        tcs[i] = tc.eval().to(dtype)
    return tcs


def prompt(n=12, seed=1):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


KINDS = [("relu", False), ("topk", True), ("jumprelu", False)]


@pytest.mark.parametrize("kind,skip", KINDS)
def test_the_frozen_model_reproduces_the_clean_logits(kind, skip):
    model, tcs, ids = make_model(), make_transcoders(kind, skip), prompt()
    rm = local_replacement(model, tcs, ids)
    with torch.no_grad():
        clean = model(ids[None])[0]  # the real model, fused attention, no hooks
        for mode in ("fixed", "linear", "free"):
            torch.testing.assert_close(frozen_forward(rm, features=mode).logits[0], clean,
                                       atol=1e-4, rtol=1e-4)
    assert len(rm.features) > 0
    # every activation rule passes an active latent's pre-activation through unchanged
    torch.testing.assert_close(rm.target_inputs[:len(rm.features)], rm.activations)


NEO = {"attention_layers": ("local", "global"), "window": 4, "qkv_bias": False, "attn_scale": False,
       "tied_embeddings": True, "unembed_bias": True, "act": "gelu_tanh"}


@pytest.mark.parametrize("norm,options", [("rmsnorm", {}), ("none", {}), ("layernorm", NEO)])
def test_other_architectures_freeze_exactly_too(norm, options):
    model, tcs, ids = make_model(norm, **options), make_transcoders("topk"), prompt()
    rm = local_replacement(model, tcs, ids)
    with torch.no_grad():
        torch.testing.assert_close(frozen_forward(rm).logits[0], model(ids[None])[0], atol=1e-4, rtol=1e-4)
    graph = attribution_graph(model, tcs, ids)
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.n_nodes)])
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
    if "window" in options:  # layer 0 is local: its features read no embedding beyond the window
        for t in range(graph.n_features):
            node = graph.node(t)
            if node.layer == 0:
                row = graph.adjacency[t, graph.embeddings]
                assert (row[:max(node.position - 3, 0)] == 0).all()
                assert (row[max(node.position - 3, 0):node.position + 1] != 0).any()


@pytest.mark.parametrize("kind,skip", KINDS)
def test_each_input_is_its_incoming_edges_plus_its_constant(kind, skip):
    model, tcs, ids = make_model(), make_transcoders(kind, skip), prompt()
    graph = attribution_graph(model, tcs, ids, batch_size=100)
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.n_nodes)])
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
    # the biases are really there: without the constants the identity fails
    assert (graph.constants[targets].abs() > 1e-2).any()
    # sources have no inputs
    assert graph.adjacency[graph.errors.start:graph.logits.start].abs().sum() == 0
    assert graph.adjacency[:, graph.logits].abs().sum() == 0


def test_edges_respect_layers_and_causality():
    model, tcs, ids = make_model(), make_transcoders("topk"), prompt()
    graph = attribution_graph(model, tcs, ids)
    nodes = graph.nodes
    for t in range(graph.n_features):
        tl, tp = nodes[t].layer, nodes[t].position
        for s in graph.adjacency[t].nonzero()[:, 0].tolist():
            src = nodes[s]
            assert src.position <= tp  # no effect from later positions
            assert src.kind == "embedding" or src.layer < tl  # only earlier layers' writes
    assert graph.adjacency[:graph.n_features].abs().sum() > 0


@pytest.mark.parametrize("kind,skip", KINDS)
def test_scaling_a_source_moves_each_target_by_eps_times_its_edge(kind, skip):
    dtype = torch.float64  # a finite difference of an affine map: exact up to rounding
    model, tcs, ids = make_model(dtype=dtype), make_transcoders(kind, skip, dtype=dtype), prompt()
    graph = attribution_graph(model, tcs, ids)
    rm = local_replacement(model, tcs, ids)
    n_src = rm.n_sources
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.n_nodes)])
    sources = [0, graph.n_features // 2, graph.n_features - 1, graph.errors.start + 3,
               graph.errors.stop - 1, graph.embeddings.start, graph.embeddings.stop - 1]
    eps = 1e-3
    scale = torch.ones(len(sources) + 1, n_src, dtype=dtype)
    for row, s in enumerate(sources):
        scale[row + 1, s] = 1 + eps
    with torch.no_grad():
        inputs = node_inputs(rm, scale)  # (rows, n_targets)
    reached = 0
    for row, s in enumerate(sources):
        moved = (inputs[row + 1] - inputs[0]) / eps
        edge = graph.adjacency[targets, s].double()
        reached += int((edge != 0).sum())
        # (a last-layer feature before the last position reaches nothing: both sides are 0)
        torch.testing.assert_close(moved, edge, rtol=1e-3, atol=1e-3 * float(edge.abs().max()) + 1e-12)
    assert reached > len(sources)


def test_logit_nodes_are_the_top_tokens_up_to_the_probability():
    model, tcs, ids = make_model(), make_transcoders("topk"), prompt()
    with torch.no_grad():
        probs = model(ids[None])[0, -1].softmax(-1)
    order = probs.argsort(descending=True)
    for p, cap in ((0.95, 10), (0.5, 10), (0.999, 3)):
        graph = attribution_graph(model, tcs, ids, logit_probability=p, max_logits=cap)
        n = len(graph.logit_tokens)
        assert graph.logit_tokens.tolist() == order[:n].tolist()
        assert n <= cap and (n == cap or float(probs[order[:n]].sum()) >= p - 1e-6)
        assert n == 1 or float(probs[order[:n - 1]].sum()) < p
    graph = attribution_graph(model, tcs, ids, targets=[5, 7])
    assert graph.logit_tokens.tolist() == [5, 7]
    torch.testing.assert_close(graph.logit_probs, probs[[5, 7]])
    assert [n.kind for n in graph.nodes[-2:]] == ["logit", "logit"]
    assert graph.node(graph.embeddings.start).token == int(ids[0])


def test_max_feature_nodes_keeps_the_identities():
    model, tcs, ids = make_model(), make_transcoders("relu"), prompt()
    full = attribution_graph(model, tcs, ids)
    graph = attribution_graph(model, tcs, ids, max_feature_nodes=25)
    assert graph.n_features == 25 < full.n_features
    targets = torch.cat([torch.arange(25), torch.arange(graph.logits.start, graph.n_nodes)])
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
    rm = local_replacement(model, tcs, ids, max_feature_nodes=25)
    with torch.no_grad():
        for mode in ("fixed", "linear", "free"):
            torch.testing.assert_close(frozen_forward(rm, features=mode).logits[0], model(ids[None])[0],
                                       atol=1e-4, rtol=1e-4)
    check = intervention_check(model, tcs, ids, graph, top=10)
    torch.testing.assert_close(check.linear, check.predicted, rtol=1e-3, atol=1e-5)
    assert intervention_check(model, tcs, ids, graph, top=5, factor=1.0).actual.abs().max() < 1e-5


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


def one_line(message):
    return "\n" not in message


def test_bad_input_says_what_to_do():
    model, tcs, ids = make_model(), make_transcoders("topk"), prompt()
    with pytest.raises(ValueError, match="ids in 0..63") as e:
        attribution_graph(model, tcs, ids, targets=[VOCAB + 3])
    assert one_line(str(e.value))
    with pytest.raises(ValueError, match="longer than n_ctx=16") as e:
        attribution_graph(model, tcs, prompt(n=N_CTX + 1))
    assert one_line(str(e.value))
    with pytest.raises(ValueError, match="no transcoder for layer 1") as e:
        attribution_graph(model, {0: tcs[0]}, ids)
    assert one_line(str(e.value))
    sae = SparseAutoencoder(SAEConfig(kind="topk", d_sae=48, k=6, hook_in="blocks.1.hook_resid_pre"), d_in=D)
    with pytest.raises(ValueError, match="pass a transcoder from blocks.1.ln2.hook_normalized"):
        attribution_graph(model, {0: tcs[0], 1: sae}, ids)
    with pytest.raises(ValueError, match="pass one per layer"):
        attribution_graph(model, [tcs[0]], ids)
    with pytest.raises(ValueError, match="prompt token ids must be in 0..63"):
        attribution_graph(model, tcs, torch.tensor([1, 2, VOCAB]))
    with pytest.raises(ValueError, match="no tokens"):
        attribution_graph(model, tcs, [])
    graph = attribution_graph(model, tcs, ids)
    with pytest.raises(ValueError, match="not built from this model"):
        intervention_check(model, tcs, prompt(seed=5), graph)


def test_a_64_token_prompt_takes_seconds():
    import time
    cfg = ModelConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=64, d_vocab=512)
    model = GPT(cfg).eval()
    tcs = [SparseAutoencoder(SAEConfig(kind="topk", k=16, d_sae=1024, hook_in=f"blocks.{i}.ln2.hook_normalized",
                                       hook_out=f"blocks.{i}.hook_mlp_out"), d_in=128).eval() for i in range(2)]
    ids = torch.randint(0, 512, (64,))
    start = time.perf_counter()
    graph = attribution_graph(model, tcs, ids)
    seconds = time.perf_counter() - start
    print(f"\n64 tokens, {graph.n_features} features, {graph.n_nodes} nodes: {seconds:.2f}s")
    assert graph.n_features == 2 * 64 * 16
    assert seconds < 60
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.n_nodes)])
    total = graph.adjacency.double().sum(1) + graph.constants
    torch.testing.assert_close(total[targets], graph.inputs[targets], atol=1e-4, rtol=1e-4)
