
import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.interpret.circuits import attribution_graph, frozen_forward, local_replacement, node_inputs
from tinycourse.interpret.graph_check import intervention_check
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
