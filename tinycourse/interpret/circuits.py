"""Attribution graphs: which transcoder features, through which others, made the next token.

    graph = attribution_graph(model, transcoders, ids)      nodes and their direct effects
    kept  = prune(graph, node_threshold=0.8, edge_threshold=0.98)        (graph_influence)
    replacement_score(graph), completeness_score(graph)    how much the features explain
    page  = to_circuit_tracer_json(graph, token_text)       circuit-tracer's viewer file (graph_json)
    check = intervention_check(model, transcoders, ids, graph)   against the model (graph_check)

`transcoders` maps every layer i to a transcoder from `blocks.{i}.ln2.hook_normalized` to
`blocks.{i}.hook_mlp_out` (a dict or a list, one per layer), or is a cross-layer
transcoder over every layer (`sae.crosslayer`): a CLT feature of layer i reads MLP i's
input and writes MLP i's output and every later one's, so its edges reach the nodes of
every later layer, and the logits, through each of those writes. Everything below holds
for both kinds; the graph code sees either through the same small interface
(`_Transcoders` here, `circuits_crosslayer.CrossLayerView`).

The local replacement model (Ameisen et al. 2025, "Circuit tracing"; safety-research's
circuit-tracer follows the same recipe, and the facts below marked [ct] are taken from its
code). The clean run of the prompt fixes three things: every attention pattern, every
norm's scale (the 1/std, or 1/rms, it divides by: ln1, ln2 and ln_final) and each MLP's
transcoder error (mlp_out - transcoder(mlp_in) at that layer and position; a CLT's: mlp_out
minus the writes into it of the features of that layer and every earlier one). With those
frozen, each MLP is replaced by its transcoder's decoder writes plus the error, and what
is left is linear in the residual stream: a frozen norm is x -> (x - mean x) * s * w + b,
a frozen attention layer is pattern @ (x W_V + b_V) W_O + b_O, the skip path of a skip
transcoder is x W_skip. `frozen_forward` is that model, written out; at the clean point
it reproduces the clean logits exactly (tested).

Nodes, in this order [ct]:
    feature    (layer, position, latent) for every active transcoder latent; activation f
    error      (layer, position) for every layer and position: the transcoder's error (plus
               the writes of the features `max_feature_nodes` leaves out, if it is given)
    embedding  position p: the residual stream's start, W_E[token] + W_pos[p]
    logit      the target tokens at the last position: by default the most probable ones,
               at most `max_logits`, until their probabilities sum to `logit_probability`
               (10 and 0.95 [ct])
Every source (feature, error, embedding) enters the frozen model as a vector times a
scale, 1 on the clean run: f * W_dec[latent] for a feature (a CLT feature of layer i:
f * W_dec[i -> j][latent] into each MLP output j >= i, all under its one scale), the
error vector, the embedding. A target's *input* is what it reads: a feature's
pre-activation, the encoder applied to its frozen-normalised MLP input (for every
activation rule an active latent's activation equals its pre-activation, so input and
activation agree); a logit's is the logit against the mean-centred unembedding,
logit_t - mean_v logit_v (circuit-tracer injects W_U[:, t] - mean_v W_U[:, v] [ct]).

Edges: adjacency[t, s] = d input_t / d scale_s in the frozen model, where the features
are held at their activations (they are nodes, so an effect through another feature is
two edges, not one). The model is affine in the scales, so this is exact: the input of
each target is the sum of its incoming edges plus a constant (the biases: b_enc, b_dec,
the attention and norm biases, the unembedding bias), and scaling one source by 1 + eps
moves each target by eps times the edge (both tested). The rows come from backward
passes, `batch_size` targets at a time: the frozen forward runs on a batch of scale
vectors, target b reads its input from row b, and the gradient of the sum with respect
to the scales is the batch's rows of the adjacency.

Influence, pruning and the two scores are in `graph_influence`, circuit-tracer's JSON in
`graph_json`, the graph against the real model in `graph_check`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..lm.model import GPT, eval_mode, model_device, unwrap
from ..sae.crosslayer import CrossLayerTranscoder
from ..sae.model import SparseAutoencoder
from .circuits_crosslayer import CrossLayerView, checked_crosslayer

KINDS = ("feature", "error", "embedding", "logit")
MAX_NODES = 20_000  # the adjacency is dense: 20K^2 float32 is 1.6 GB
FEATURE_MODES = ("fixed", "linear", "free")


# --- what replaces the MLPs --------------------------------------------------------------

class _Transcoders:
    """A transcoder per layer, as the graph reads what replaces the MLPs. Both kinds (the
    other is `circuits_crosslayer.CrossLayerView`) give, every vector in the model's raw
    units with the dictionaries' scales applied:

        sources(j)             the layers whose features write MLP j's output
        targets(i)             the layers whose MLP outputs layer i's features write
        pre_activations(i, x)  layer i's MLP input (..., d_model) -> (..., d_sae)
        activate(i, pre)       its activation rule
        reads(i, latents)      encoder directions (m, d_model), biases (m,): pre = x . dir + bias
        writes(i, j, latents)  what one unit of each latent adds to MLP j's output (m, d_model)
        written(j, fs)         the writes into MLP j of activations fs[i] (..., d_sae) of its sources
        constant(j, x)         the rest of MLP j's replacement: b_dec, and a skip path (x its input)
    """

    kind = "transcoders"

    def __init__(self, tcs: list[SparseAutoencoder]):
        self.tcs, self.modules, self.n_layers = tcs, tuple(tcs), len(tcs)

    def sources(self, j: int) -> range:
        return range(j, j + 1)

    targets = sources

    def pre_activations(self, i: int, x: Tensor) -> Tensor:
        return self.tcs[i].pre_activations(x * self.tcs[i].input_scale)

    def activate(self, i: int, pre: Tensor) -> Tensor:
        return self.tcs[i].activate(pre)

    def reads(self, i: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        tc = self.tcs[i]
        return tc.W_enc[:, latents].T * tc.input_scale, tc.b_enc[latents]

    def writes(self, i: int, j: int, latents: Tensor) -> Tensor:
        return self.tcs[i].W_dec[latents] / self.tcs[i].output_scale

    def written(self, j: int, fs) -> Tensor:
        return fs[j] @ self.tcs[j].W_dec / self.tcs[j].output_scale

    def constant(self, j: int, x: Tensor) -> Tensor:
        tc = self.tcs[j]
        skip = (x * tc.input_scale) @ tc.W_skip if tc.cfg.skip_connection else 0
        return (tc.b_dec + skip) / tc.output_scale


def _write_norms(view, layer: int, latents: Tensor) -> Tensor:
    """The norm of each latent's writes, all its target MLPs together. (m,) -> (m,)"""
    norms = [view.writes(layer, j, latents).norm(dim=-1) for j in view.targets(layer)]
    return norms[0] if len(norms) == 1 else torch.stack(norms).norm(dim=0)


# --- the clean run, frozen ---------------------------------------------------------------

@dataclass
class LocalReplacement:
    """The operating point of one prompt: everything the frozen model holds fixed.

    pos positions, L layers, n_f graph features, n_t = n_f + n_logits targets."""
    model: GPT
    dictionaries: _Transcoders | CrossLayerView  # what replaces the MLPs
    ids: Tensor  # (pos,) int64
    embed: Tensor  # (pos, d_model) W_E[ids] + W_pos
    patterns: list[Tensor]  # per layer (n_heads, pos, pos)
    ln1: list[Tensor]  # per layer (pos, 1): the factor each norm multiplies by, frozen
    ln2: list[Tensor]
    ln_final: Tensor  # (pos, 1)
    features: Tensor  # (n_f, 3) int64 (layer, position, latent), sorted
    activations: Tensor  # (n_f,)
    latents: list[Tensor]  # per layer (pos, d_sae): the graph features' activations, 0 elsewhere
    errors: Tensor  # (L, pos, d_model): the error nodes, what the graph features miss of mlp_out
    dropped: list[Tensor]  # per layer (pos, d_sae) bool: active latents left out (max_feature_nodes)
    logits: Tensor  # (pos, d_vocab) of the clean run
    logit_tokens: Tensor  # (n_logits,) int64
    logit_probs: Tensor  # (n_logits,)
    target_inputs: Tensor  # (n_t,) each target's input on the clean run, from the real model
    read_slot: Tensor  # (n_t,) which read a target takes: its layer's MLP input, or L (final)
    read_pos: Tensor  # (n_t,)
    read_dir: Tensor  # (n_t, d_model): input = read . read_dir + read_const
    read_const: Tensor  # (n_t,)

    @property
    def n_layers(self) -> int:
        return self.dictionaries.n_layers

    @property
    def n_sources(self) -> int:
        return len(self.features) + self.errors.shape[0] * len(self.ids) + len(self.ids)


def _checked(model, transcoders, ids) -> tuple[GPT, _Transcoders | CrossLayerView, Tensor]:
    """Validate the inputs; one-line errors that say what to pass instead."""
    model = unwrap(model)
    cfg = model.cfg
    device = model_device(model)
    dtype = model.W_E.dtype
    if isinstance(transcoders, CrossLayerTranscoder):
        return model, checked_crosslayer(transcoders, cfg, device, dtype), _checked_ids(ids, cfg, device)
    if isinstance(transcoders, Mapping):
        missing = [i for i in range(cfg.n_layers) if i not in transcoders]
        if missing:
            raise ValueError(f"no transcoder for layer {missing[0]}: an attribution graph replaces every "
                             f"MLP, so pass one per layer 0..{cfg.n_layers - 1}")
        tcs = [transcoders[i] for i in range(cfg.n_layers)]
    else:
        tcs = list(transcoders)
        if len(tcs) != cfg.n_layers:
            raise ValueError(f"{len(tcs)} transcoders for {cfg.n_layers} layers: an attribution graph "
                             f"replaces every MLP, so pass one per layer")
    for i, tc in enumerate(tcs):
        want = (f"blocks.{i}.ln2.hook_normalized", f"blocks.{i}.hook_mlp_out")
        if not tc.is_transcoder or (tc.cfg.hook_in, tc.cfg.hook_out) != want:
            raise ValueError(f"the dictionary for layer {i} reads {tc.cfg.hook_in!r} and writes "
                             f"{tc.cfg.hook_out or tc.cfg.hook_in!r}: pass a transcoder from {want[0]} to {want[1]}")
        if tc.d_in != cfg.d_model or tc.d_out != cfg.d_model:
            raise ValueError(f"the transcoder for layer {i} maps {tc.d_in} -> {tc.d_out} but d_model is "
                             f"{cfg.d_model}: pass the transcoders of this model")
        if tc.W_enc.device != device or tc.W_enc.dtype != dtype:
            raise ValueError(f"the transcoder for layer {i} is {tc.W_enc.dtype} on {tc.W_enc.device}, the "
                             f"model {dtype} on {device}: move it with .to(...)")
    return model, _Transcoders(tcs), _checked_ids(ids, cfg, device)


def _checked_ids(ids, cfg, device) -> Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().to(device)
    if len(ids) == 0:
        raise ValueError("the prompt has no tokens: give it some")
    if len(ids) > cfg.n_ctx:
        raise ValueError(f"the prompt is {len(ids)} tokens, longer than n_ctx={cfg.n_ctx}: "
                         f"keep its last {cfg.n_ctx} tokens")
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.d_vocab:
        raise ValueError(f"prompt token ids must be in 0..{cfg.d_vocab - 1}, got {ids.tolist()}: "
                         f"encode it with the model's tokenizer")
    return ids


def _norm_scale(norm, x: Tensor) -> Tensor:
    """x (pos, d_model) -> (pos, 1): the factor the norm multiplies (centred) x by."""
    if norm.kind == "layernorm":
        return (x.var(-1, keepdim=True, unbiased=False) + norm.eps).rsqrt()
    if norm.kind == "rmsnorm":
        return (x.pow(2).mean(-1, keepdim=True) + norm.eps).rsqrt()
    return x.new_ones(x.shape[0], 1)


def _select_logits(logits: Tensor, d_vocab: int, targets, max_logits: int,
                   logit_probability: float) -> tuple[Tensor, Tensor]:
    """Last position's logits (d_vocab,) -> target token ids (n,), their probabilities (n,)."""
    probs = logits.float().softmax(-1)
    if targets is not None:
        tokens = torch.as_tensor(targets, dtype=torch.long).flatten()
        bad = [int(t) for t in tokens if not 0 <= int(t) < d_vocab]
        if bad or not len(tokens):
            raise ValueError(f"target tokens {tokens.tolist()} must be ids in 0..{d_vocab - 1} (at least one): "
                             f"pass token ids of the model's vocabulary")
        tokens = tokens.to(logits.device)
        return tokens, probs[tokens]
    if max_logits < 1 or not 0 < logit_probability <= 1:
        raise ValueError(f"max_logits={max_logits} and logit_probability={logit_probability}: "
                         f"need max_logits >= 1 and 0 < logit_probability <= 1")
    top_p, top = probs.topk(min(max_logits, d_vocab))
    # the smallest prefix whose probabilities reach logit_probability, as circuit-tracer cuts
    n = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(logit_probability, device=top_p.device))) + 1
    return top[:n], top_p[:n]


def _per_feature(features: Tensor, n_layers: int, value: Callable[[int, Tensor, Tensor], Tensor]) -> Tensor:
    """value(layer, positions, latents) of each layer's features, concatenated in feature
    order (features are sorted by layer). features (n, 3) -> (n, ...)"""
    parts = []
    for layer in range(n_layers):
        _, p, i = features[features[:, 0] == layer].unbind(1)
        parts.append(value(layer, p, i))
    return torch.cat(parts)


@torch.no_grad()
def local_replacement(model, transcoders, ids, *, targets: Sequence[int] | None = None,
                      max_logits: int = 10, logit_probability: float = 0.95,
                      max_feature_nodes: int | None = None) -> LocalReplacement:
    """Run the prompt `ids` (pos,) clean and record what the frozen model holds fixed.

    `targets`: token ids for the logit nodes (default: the top logits, module docstring).
    `max_feature_nodes`: keep only that many features, those writing the largest vectors
    (activation times decoder row norm); the rest stay in their error nodes, so the
    identities still hold."""
    model, view, ids = _checked(model, transcoders, ids)
    L, pos = model.cfg.n_layers, len(ids)
    names = [f"blocks.{i}.{name}" for i in range(L) for name in
             ("hook_resid_pre", "attn.hook_pattern", "hook_resid_mid", "ln2.hook_normalized", "hook_mlp_out")]
    names.append(f"blocks.{L - 1}.hook_resid_post")
    with eval_mode(*view.modules):
        logits, cache = model.run_with_cache(ids[None], names=names)
        logits = logits[0]
        ln1, ln2, patterns, xs, latents, pre_acts = [], [], [], [], [], []
        for i, block in enumerate(model.blocks):
            ln1.append(_norm_scale(block.ln1, cache[f"blocks.{i}.hook_resid_pre"][0]))
            ln2.append(_norm_scale(block.ln2, cache[f"blocks.{i}.hook_resid_mid"][0]))
            patterns.append(cache[f"blocks.{i}.attn.hook_pattern"][0])
            xs.append(cache[f"blocks.{i}.ln2.hook_normalized"][0])  # (pos, d_model)
            pre_acts.append(view.pre_activations(i, xs[i]))
            latents.append(view.activate(i, pre_acts[i]))  # (pos, d_sae)
        # each MLP's error: what the writes into it (its own layer's features, a CLT's also
        # every earlier layer's) and the constants miss of its output
        terrors = [cache[f"blocks.{i}.hook_mlp_out"][0] - view.written(i, latents) - view.constant(i, xs[i])
                   for i in range(L)]
    ln_final = _norm_scale(model.ln_final, cache[f"blocks.{L - 1}.hook_resid_post"][0])

    features = torch.cat([torch.cat([torch.full((len(nz), 1), i, device=ids.device), nz], 1)
                          for i, nz in enumerate(f.nonzero() for f in latents)])  # (n, 3) sorted
    activations = _per_feature(features, L, lambda l, p, i: latents[l][p, i])
    errors = torch.stack(terrors)  # (L, pos, d_model)
    if max_feature_nodes is not None and max_feature_nodes < len(features):
        norms = _per_feature(features, L, lambda l, p, i: _write_norms(view, l, i))
        keep = torch.zeros(len(features), dtype=torch.bool, device=ids.device)
        keep[(activations * norms).topk(max_feature_nodes).indices] = True
        errors = errors.clone()
        for l in range(L):  # a dropped feature's writes join the error nodes they land in
            _, p, i = features[~keep & (features[:, 0] == l)].unbind(1)
            for j in view.targets(l):
                errors[j].index_add_(0, p, latents[l][p, i, None] * view.writes(l, j, i))
        features, activations = features[keep], activations[keep]
    graph_latents = [torch.zeros_like(f) for f in latents]
    for l, f in enumerate(graph_latents):
        _, p, i = features[features[:, 0] == l].unbind(1)
        f[p, i] = latents[l][p, i]

    tokens, probs = _select_logits(logits[-1], model.cfg.d_vocab, targets, max_logits, logit_probability)
    # the reads: a feature reads its layer's MLP input through its encoder column, a logit the
    # final normalised stream at the last position through the mean-centred unembedding
    enc = _per_feature(features, L, lambda l, p, i: view.reads(l, i)[0])
    enc_bias = _per_feature(features, L, lambda l, p, i: view.reads(l, i)[1])
    clean_pre = _per_feature(features, L, lambda l, p, i: pre_acts[l][p, i])
    W_U = model.W_U  # (d_model, d_vocab)
    u = (W_U[:, tokens] - W_U.mean(1, keepdim=True)).T  # (n_logits, d_model)
    b_U = model.unembed.bias
    u_bias = (b_U[tokens] - b_U.mean()) if b_U is not None else logits.new_zeros(len(tokens))
    last = logits[-1]
    return LocalReplacement(
        model=model, dictionaries=view, ids=ids,
        embed=model.W_E[ids] + model.W_pos[:pos], patterns=patterns, ln1=ln1, ln2=ln2,
        ln_final=ln_final, features=features, activations=activations, latents=graph_latents,
        errors=errors, dropped=[(f != 0) & (g == 0) for f, g in zip(latents, graph_latents)], logits=logits,
        logit_tokens=tokens, logit_probs=probs,
        target_inputs=torch.cat([clean_pre, last[tokens] - last.mean()]),
        read_slot=torch.cat([features[:, 0], torch.full_like(tokens, L)]),
        read_pos=torch.cat([features[:, 1], torch.full_like(tokens, pos - 1)]),
        read_dir=torch.cat([enc, u]).detach(), read_const=torch.cat([enc_bias, u_bias]).detach(),
    )


# --- the frozen model ------------------------------------------------------------------------

class Frozen(NamedTuple):
    reads: Tensor  # (B, L + 1, pos, d_model): each layer's normalised MLP input, then ln_final's output
    logits: Tensor | None  # (B, pos, d_vocab); None when not asked for


def _frozen_norm(norm, x: Tensor, scale: Tensor) -> Tensor:
    """x (B, pos, d_model) -> (B, pos, d_model), the norm with its scale (pos, 1) frozen: affine."""
    if norm.kind == "none":
        return x
    if norm.kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)  # centring is linear: it stays
    x = x * scale * norm.weight
    return x + norm.bias if norm.kind == "layernorm" else x


def _frozen_attention(attn, x: Tensor, pattern: Tensor) -> Tensor:
    """x (B, pos, d_model) -> (B, pos, d_model) with the pattern (n_heads, pos, pos) frozen:
    only the values move."""
    H, dh = attn.n_heads, attn.d_head
    # the fused Q, K, V projection: its last third of rows makes the values, head by head
    bias = attn.qkv.bias[2 * H * dh:] if attn.qkv.bias is not None else None
    v = F.linear(x, attn.qkv.weight[2 * H * dh:], bias).unflatten(-1, (H, dh))  # (B, pos, H, dh)
    z = torch.einsum("hqk,bkhd->bqhd", pattern.to(v.dtype), v)
    return attn.out(z.flatten(-2))


def _replacement_mlp(rm: LocalReplacement, layer: int, x: Tensor, feature_scale: Tensor,
                     error_scale: Tensor, features: str, fs: list) -> Tensor:
    """The MLP replaced: the decoder writes of the features writing it (its layer's; a CLT's,
    also every earlier layer's), the constants (b_dec, a skip path) and the error.
    x (B, pos, d_model) the normalised MLP input; feature_scale (B, n_f); error_scale (B, pos, 1);
    fs the activations (B, pos, d_sae) recomputed at the layers before ("linear", "free"):
    this layer's joins them."""
    view = rm.dictionaries
    rest = view.constant(layer, x) + rm.errors[layer] * error_scale
    if features == "fixed":  # the graph's model: features are nodes, held at their activations
        cols = torch.cat([(rm.features[:, 0] == s).nonzero()[:, 0] for s in view.sources(layer)])
        cols = cols[rm.features[cols, 1].argsort(stable=True)]  # by position
        src, p, i = rm.features[cols].unbind(1)
        # each feature writes at one position: lay them out as (pos, slot), padded with
        # zeros to the busiest position, so the writes are one batched matmul over positions
        counts = torch.bincount(p, minlength=x.shape[1])
        slot = torch.arange(len(p), device=p.device) - (counts.cumsum(0) - counts)[p]  # (m,)
        rows = x.new_zeros(x.shape[1], int(counts.max()) if len(p) else 0, x.shape[2])
        for s in view.sources(layer):
            m = src == s
            rows[p[m], slot[m]] = rm.latents[s][p[m], i[m], None] * view.writes(s, layer, i[m])
        coeff = x.new_zeros(x.shape[0], *rows.shape[:2])
        coeff[:, p, slot] = feature_scale[:, cols]  # (B, pos, slots)
        return torch.einsum("bps,psd->bpd", coeff, rows) + rest
    mine = rm.features[:, 0] == layer
    _, p, i = rm.features[mine].unbind(1)
    mult = x.new_ones(x.shape[0], x.shape[1], rm.latents[layer].shape[-1])
    mult[:, p, i] = feature_scale[:, mine]
    pre = view.pre_activations(layer, x)
    if features == "linear":  # active features pass their input on, the rest stay off
        f = pre * (rm.latents[layer] != 0) * mult
    else:  # the dictionary's own activation rule
        f = view.activate(layer, pre) * mult
        f = f.masked_fill(rm.dropped[layer], 0)  # a left-out feature stays in its error node
    fs[layer] = f
    return view.written(layer, fs) + rest


def frozen_forward(rm: LocalReplacement, scale: Tensor | None = None, *,
                   features: str = "fixed", logits: bool = True) -> Frozen:
    """The frozen model on a batch of source scales (B, n_sources), in node order (features,
    errors layer by layer, embeddings); None: all 1, the clean run (B = 1).

    `features`: "fixed" (the graph's model, each feature at scale * its activation),
    "linear" (features recomputed, active ones linear, scaled) or "free" (the
    transcoders' activation rules, scaled). Features left out by `max_feature_nodes` stay
    in their error nodes in every mode. `logits`:
    whether to unembed every position (the reads alone give every node's input)."""
    if features not in FEATURE_MODES:
        raise ValueError(f"features={features!r}: use one of {', '.join(FEATURE_MODES)}")
    model, L, pos, n_f = rm.model, rm.n_layers, len(rm.ids), len(rm.features)
    if scale is None:
        scale = rm.embed.new_ones(1, rm.n_sources)
    if scale.ndim != 2 or scale.shape[1] != rm.n_sources:
        raise ValueError(f"scale has shape {tuple(scale.shape)}; it needs (batch, {rm.n_sources}): one per source")
    f_scale, e_scale, emb_scale = scale.split([n_f, L * pos, pos], dim=1)
    e_scale = e_scale.view(-1, L, pos, 1)
    resid = rm.embed * emb_scale[..., None]  # (B, pos, d_model)
    reads, fs = [], [None] * L
    with eval_mode(*rm.dictionaries.modules):
        for i, block in enumerate(model.blocks):
            resid = resid + _frozen_attention(block.attn, _frozen_norm(block.ln1, resid, rm.ln1[i]),
                                              rm.patterns[i])
            x = _frozen_norm(block.ln2, resid, rm.ln2[i])
            reads.append(x)
            resid = resid + _replacement_mlp(rm, i, x, f_scale, e_scale[:, i], features, fs)
    final = _frozen_norm(model.ln_final, resid, rm.ln_final)
    reads.append(final)
    return Frozen(torch.stack(reads, 1), model.unembed(final) if logits else None)


def target_inputs(rm: LocalReplacement, run: Frozen, targets: Tensor) -> Tensor:
    """Row b's input of target targets[b] (indices into features + logits) -> (B,)."""
    rows = torch.arange(len(targets), device=targets.device)
    read = run.reads[rows, rm.read_slot[targets], rm.read_pos[targets]]  # (B, d_model)
    return (read * rm.read_dir[targets]).sum(-1) + rm.read_const[targets]


def node_inputs(rm: LocalReplacement, scale: Tensor | None = None, *, features: str = "fixed") -> Tensor:
    """Every target's input in the frozen model at source scales (B, n_sources) (None: the
    clean run) -> (B, n_f + n_logits): feature pre-activations, then mean-centred logits."""
    run = frozen_forward(rm, scale, features=features, logits=False)
    read = run.reads[:, rm.read_slot, rm.read_pos]  # (B, n_t, d_model)
    return (read * rm.read_dir).sum(-1) + rm.read_const


# --- the graph --------------------------------------------------------------------------------

class Node(NamedTuple):
    kind: str  # feature | error | embedding | logit
    layer: int  # feature, error: its layer; embedding: -1; logit: n_layers
    position: int
    latent: int  # feature: the latent; -1 otherwise
    token: int  # embedding, logit: the token id; -1 otherwise
    activation: float  # feature: its activation; logit: its probability; error, embedding: 1 (scale)


@dataclass
class Graph:
    """Nodes in the order features, errors (layer by layer, then position), embeddings,
    logits; `adjacency[t, s]` the direct effect of source s on target t (module docstring)."""
    ids: Tensor  # (pos,) the prompt
    n_layers: int
    features: Tensor  # (n_f, 3) int64 (layer, position, latent)
    activations: Tensor  # (n_f,)
    logit_tokens: Tensor  # (n_logits,) int64
    logit_probs: Tensor  # (n_logits,) their probabilities on the clean run
    adjacency: Tensor  # (n, n) float32, rows targets, columns sources
    inputs: Tensor  # (n,) each node's input on the clean run (real model); 0 for sources
    constants: Tensor  # (n,) the part of each input that no node carries; 0 for sources
    max_feature_nodes: int | None = None
    dictionary: str = "transcoders"  # what replaced the MLPs: transcoders | crosslayer

    @property
    def n_pos(self) -> int:
        return len(self.ids)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_nodes(self) -> int:
        return self.adjacency.shape[0]

    @property
    def errors(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def embeddings(self) -> slice:
        return slice(self.errors.stop, self.errors.stop + self.n_pos)

    @property
    def logits(self) -> slice:
        return slice(self.embeddings.stop, self.n_nodes)

    def node(self, index: int) -> Node:
        if index < self.n_features:
            layer, pos, latent = self.features[index].tolist()
            return Node("feature", layer, pos, latent, -1, float(self.activations[index]))
        if index < self.errors.stop:
            layer, pos = divmod(index - self.n_features, self.n_pos)
            return Node("error", layer, pos, -1, -1, 1.0)
        if index < self.embeddings.stop:
            pos = index - self.errors.stop
            return Node("embedding", -1, pos, -1, int(self.ids[pos]), 1.0)
        k = index - self.embeddings.stop
        return Node("logit", self.n_layers, self.n_pos - 1, -1, int(self.logit_tokens[k]),
                    float(self.logit_probs[k]))

    @property
    def nodes(self) -> list[Node]:
        return [self.node(i) for i in range(self.n_nodes)]


def attribution_graph(model, transcoders, ids, *, targets: Sequence[int] | None = None,
                      max_logits: int = 10, logit_probability: float = 0.95,
                      max_feature_nodes: int | None = None, batch_size: int = 256) -> Graph:
    """The attribution graph of the prompt `ids` (pos,) (module docstring); on the CPU."""
    rm = local_replacement(model, transcoders, ids, targets=targets, max_logits=max_logits,
                           logit_probability=logit_probability, max_feature_nodes=max_feature_nodes)
    n_f, n_src, n_t = len(rm.features), rm.n_sources, len(rm.read_slot)
    n = n_src + len(rm.logit_tokens)
    if n > MAX_NODES:
        raise ValueError(f"{n} nodes ({n_f} active features) is too many for a dense adjacency "
                         f"(at most {MAX_NODES}): pass max_feature_nodes, or a shorter prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: it must be at least 1")
    # a target's row of the adjacency goes to node index t (features) or n_src + k (logits)
    row_of = torch.cat([torch.arange(n_f), torch.arange(n_src, n)])
    adjacency = torch.zeros(n, n)
    device = rm.ids.device
    for start in range(0, n_t, batch_size):
        targets_b = torch.arange(start, min(start + batch_size, n_t), device=device)
        scale = rm.embed.new_ones(len(targets_b), n_src).requires_grad_(True)
        with torch.enable_grad():
            y = target_inputs(rm, frozen_forward(rm, scale, logits=False), targets_b)
            (rows,) = torch.autograd.grad(y.sum(), scale)
        adjacency[row_of[targets_b.cpu()], :n_src] = rows.detach().float().cpu()
    with torch.no_grad():
        constants = node_inputs(rm, rm.embed.new_zeros(1, n_src))[0]

    def place(values: Tensor) -> Tensor:  # (n_t,) in target order -> (n,) in node order, 0 for sources
        return torch.zeros(n, dtype=torch.float64).index_put_((row_of,), values.detach().double().cpu())

    return Graph(ids=rm.ids.cpu(), n_layers=rm.n_layers, features=rm.features.cpu(),
                 activations=rm.activations.detach().float().cpu(), logit_tokens=rm.logit_tokens.cpu(),
                 logit_probs=rm.logit_probs.detach().float().cpu(), adjacency=adjacency,
                 inputs=place(rm.target_inputs), constants=place(constants),
                 max_feature_nodes=max_feature_nodes, dictionary=rm.dictionaries.kind)


def logit_edge(activation: float, write: Tensor, ln_scale: float, ln_weight: Tensor,
               W_U: Tensor, token: int) -> float:
    """The edge from a source writing activation * write (d_model,) into the residual stream
    at the last position after the last attention layer (a last-layer feature there: write =
    W_dec[latent] / output_scale; an error node: activation 1) to the logit node of `token`:
    through the final LayerNorm, its scale frozen, against the mean-centred unembedding
    W_U (d_model, d_vocab). No attention lies on this path, so the edge is this product."""
    centred = write - write.mean()
    unembed = W_U[:, token] - W_U.mean(1)
    return float(activation * ((centred * ln_scale * ln_weight) @ unembed))


__all__ = [
    "KINDS",
    "logit_edge",
    "Frozen",
    "Graph",
    "LocalReplacement",
    "Node",
    "attribution_graph",
    "frozen_forward",
    "local_replacement",
    "node_inputs",
    "target_inputs",
]
