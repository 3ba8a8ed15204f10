"""Notebook 08's exercises: one edge of an attribution graph by hand, and the graph's
completeness score from its adjacency.

    08.edge_weight     a source writing activation * write at the last position, after
                       the last attention layer, into the logit node of `token`: through
                       the frozen final LayerNorm, against the mean-centred unembedding:
                       activation * ((write - mean write) * s * w) . (W_U[:, t] - mean_v W_U[:, v])
                                                                                 difficulty 2
    08.completeness    B = |A| with rows normalised to 1; weight = w (B + B^2 + ...) + w;
                       sum(weight * (1 - B[:, errors].sum(1))) / sum(weight)    difficulty 2

References: `interpret.circuits.logit_edge` (the graph's edge for every last-layer feature
or error node at the last position into a logit node) and
`interpret.graph_influence.graph_completeness` (what `completeness_score` computes, on plain
tensors).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..config import ModelConfig, SAEConfig
from ..interpret.circuits import attribution_graph, local_replacement, logit_edge
from ..interpret.graph_influence import graph_completeness
from ..lm.model import GPT
from ..sae.model import SparseAutoencoder
from ._mistakes import like, safely
from .checker import Case, Exercise, Hint, register

# --- a small real attribution graph, for the cases ---------------------------------------------

D_MODEL, N_CTX, D_VOCAB = 16, 12, 40


@lru_cache(maxsize=2)
def toy_graph(seed: int = 80):
    """A random 2-layer LayerNorm GPT, a topk transcoder per MLP, a prompt and its graph:
    (model, transcoders, ids, graph, local replacement). Deterministic in `seed`; built once
    (the checker hands each function deep copies of the cases, so nothing mutates it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(ModelConfig(n_layers=2, d_model=D_MODEL, n_heads=2, d_head=8, d_mlp=32, n_ctx=N_CTX,
                                d_vocab=D_VOCAB, init_std=0.3)).eval()
        with torch.no_grad():  # norm weights and biases away from 1 and 0: every term counts
            for name, p in model.named_parameters():
                if name.endswith("bias") or "ln" in name:
                    p.add_(0.2 * torch.randn_like(p))
        tcs = {}
        for i in range(2):
            tc = SparseAutoencoder(SAEConfig(kind="topk", d_sae=24, k=4, hook_in=f"blocks.{i}.ln2.hook_normalized",
                                             hook_out=f"blocks.{i}.hook_mlp_out"), d_in=D_MODEL)
            with torch.no_grad():
                tc.b_enc.normal_(0, 0.05)
                tc.b_dec.normal_(0, 0.1)
                tc.output_scale.fill_(0.8)
            tcs[i] = tc.eval()
        ids = torch.randint(0, D_VOCAB, (9,))
    graph = attribution_graph(model, tcs, ids, max_logits=3, logit_probability=0.5)
    rm = local_replacement(model, tcs, ids, targets=graph.logit_tokens.tolist())
    return model, tcs, ids, graph, rm


def last_layer_logit_edges(model, transcoders, graph, rm) -> list[tuple[int, int, tuple]]:
    """(feature node, logit node, logit_edge's arguments) for every feature of the last
    layer at the last position and every logit node: the edges logit_edge computes."""
    L, last = graph.n_layers, graph.n_pos - 1
    tc = transcoders[L - 1]
    out = []
    for node in ((graph.features[:, 0] == L - 1) & (graph.features[:, 1] == last)).nonzero()[:, 0].tolist():
        latent = int(graph.features[node, 2])
        write = (tc.W_dec[latent] / tc.output_scale).detach()
        for k, token in enumerate(graph.logit_tokens.tolist()):
            args = (float(graph.activations[node]), write, float(rm.ln_final[last, 0]),
                    model.ln_final.weight.detach(), model.W_U.detach(), token)
            out.append((node, graph.logits.start + k, args))
    return out


# --- 08.edge_weight ----------------------------------------------------------------------------


def _edge_cases() -> list[Case]:
    g = torch.Generator().manual_seed(81)
    write = torch.randn(16, generator=g) + 0.8  # a write with a mean: LayerNorm removes it
    w = 1 + 0.3 * torch.randn(16, generator=g)
    W_U = torch.randn(16, 30, generator=g) + torch.randn(16, 1, generator=g)  # rows with a mean
    error = 2 * torch.randn(16, generator=g) - 0.5
    model, tcs, _, graph, rm = toy_graph()
    _, _, real = max(last_layer_logit_edges(model, tcs, graph, rm), key=lambda e: abs(graph.adjacency[e[1], e[0]]))
    return [Case("a feature: activation 2.3, random weights", (2.3, write, 0.7, w, W_U, 4)),
            Case("an error node (activation 1) into another token", (1.0, error, 1.9, w, W_U, 17)),
            Case("the largest such edge of a real graph (random 2-layer model)", real)]


def _edge(case: Case, *, centre=True, centre_u="vocab", scale=True, weight=True, activation=True) -> float:
    a, write, s, w, W_U, t = case.args
    x = write - write.mean() if centre else write
    u = {"vocab": W_U[:, t] - W_U.mean(1), "none": W_U[:, t], "d_model": W_U[:, t] - W_U[:, t].mean()}[centre_u]
    return float((a if activation else 1.0) * ((x * (s if scale else 1.0) * (w if weight else 1.0)) @ u))


EDGE_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _edge(case, centre=False))),
         "centre the write first: LayerNorm subtracts the mean over d_model (write - write.mean()), "
         "so the write's mean never reaches the logits"),
    Hint(safely(lambda case, expected, got: like(got, _edge(case, centre_u="none"))),
         "a logit node's input is the logit against the mean logit: read through "
         "W_U[:, token] - W_U.mean(1) (the mean over the vocabulary), not W_U[:, token]"),
    Hint(safely(lambda case, expected, got: like(got, _edge(case, centre_u="d_model"))),
         "the unembedding is centred over the vocabulary, per row of W_U: W_U.mean(1), "
         "not the mean of the token's column"),
    Hint(safely(lambda case, expected, got: like(got, _edge(case, scale=False))),
         "multiply by ln_scale: the final LayerNorm's 1/std, frozen at its clean value"),
    Hint(safely(lambda case, expected, got: like(got, _edge(case, weight=False))),
         "the final LayerNorm also multiplies by its weight w (d_model,), elementwise"),
    Hint(safely(lambda case, expected, got: like(got, _edge(case, activation=False))),
         "an edge is per unit of its source's *scale*, and a feature enters as activation * write: "
         "multiply by the activation"),
)

register(Exercise(name="08.edge_weight", reference=logit_edge, cases=_edge_cases, hints=EDGE_HINTS,
                  rtol=1e-4, atol=1e-5))

# --- 08.completeness ---------------------------------------------------------------------------


def _layered(g: torch.Generator, sizes: list[int], n_errors: int, density: float = 0.6):
    """A random layered graph in the graph's node order: inner layers, then the sources
    (embeddings) and the logits. -> (adjacency, logit_weights, errors)"""
    layer = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    n = len(layer)
    A = torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) < density)
    A = A * (layer[None, :] < layer[:, None])  # edges only from earlier layers
    errors = torch.zeros(n, dtype=torch.bool)
    errors[torch.randperm(n - sizes[-1] - sizes[0], generator=g)[:n_errors] + sizes[0]] = True
    A[errors] = 0  # an error node is a source: it reads nothing
    w = torch.zeros(n)
    w[-sizes[-1]:] = torch.rand(sizes[-1], generator=g) + 0.1
    w[-sizes[-1]:] *= 0.9 / w.sum()
    return A, w, errors


def _completeness_cases() -> list[Case]:
    g = torch.Generator().manual_seed(82)
    _, _, _, graph, _ = toy_graph()
    w = torch.zeros(graph.n_nodes)
    w[graph.logits] = graph.logit_probs
    errors = torch.zeros(graph.n_nodes, dtype=torch.bool)
    errors[graph.errors] = True
    return [Case("a random layered graph, 3 error nodes", _layered(g, [4, 5, 5, 3, 2], 3)),
            Case("a deeper graph, many error nodes", _layered(g, [3, 6, 6, 6, 4, 3], 7, 0.4)),
            Case("a real attribution graph (random 2-layer model)", (graph.adjacency, w, errors))]


def _completeness(case: Case, *, absolute=True, normalise="rows", paths="all", logit_weight=True,
                  weighted=True, share="explained") -> float:
    A, w, errors = case.args
    a = A.abs() if absolute else A
    if normalise == "rows":
        B = a / A.abs().sum(1, keepdim=True).clamp_min(1e-10)
    elif normalise == "columns":
        B = a / A.abs().sum(0, keepdim=True).clamp_min(1e-10)
    else:
        B = a
    if paths == "all":
        influence, current = torch.zeros_like(w), w @ B
        for _ in range(len(w)):
            influence, current = influence + current, current @ B
    else:
        influence = w @ B
    weight = influence + (w if logit_weight else 0) if weighted else torch.ones_like(w)
    from_errors = B[:, errors].sum(1)
    value = 1 - from_errors if share == "explained" else from_errors
    return float((value * weight).sum() / weight.sum())


COMPLETENESS_HINTS = (
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, absolute=False))),
         "take |A| before normalising: influence counts magnitudes, so an inhibitory edge "
         "carries as much as an excitatory one"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, normalise="none"))),
         "normalise each row of |A| to sum 1 (a target's inputs as shares); without it the "
         "error share is not a share"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, normalise="columns"))),
         "rows are targets, columns sources: normalise each *row* (a target's incoming edges)"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, paths="direct"))),
         "a node's influence runs along paths of every length: w (B + B^2 + ...), not w B alone "
         "(the graph is layered, so the series ends)"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, logit_weight=False))),
         "weight each node by its influence *plus* its own logit weight w: the logit nodes' "
         "inputs count too, with their probabilities"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, weighted=False))),
         "an influence-weighted mean, not a plain mean over nodes: weight = influence + w"),
    Hint(safely(lambda case, expected, got: like(got, _completeness(case, share="errors"))),
         "that is the share *from* errors: completeness is 1 minus it"),
)

register(Exercise(name="08.completeness", reference=graph_completeness, cases=_completeness_cases,
                  hints=COMPLETENESS_HINTS, rtol=1e-5, atol=1e-6))
