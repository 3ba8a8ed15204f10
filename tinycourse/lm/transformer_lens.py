"""Our GPT to TransformerLens's `HookedTransformer` and back, exactly.

    hooked = to_transformer_lens(model)        # same logits, same activations
    model = from_transformer_lens(hooked)      # same weights again

so a learner takes the model they trained into the library they will use next:
TransformerLens, or SAELens (`to_transformer_lens(model, cls=sae_lens.HookedSAETransformer)`).

Matched against transformer-lens 3.9.0, read from its source: `HookedTransformer.__init__`
and `config/hooked_transformer_config.py` (fields, `attn_scale = sqrt(d_head)`),
`components/abstract_attention.py` and `attention.py` (W_Q/W_K/W_V (n_heads, d_model,
d_head), b_Q/b_K/b_V (n_heads, d_head), W_O (n_heads, d_head, d_model), b_O; masked
scores are -inf, as ours), `components/mlps/mlp.py` (W_in (d_model, d_mlp), b_in, W_out,
b_out; act_fn "gelu" is F.gelu, exact, like our nn.GELU(); "gelu_new" is the tanh
approximation, our "gelu_tanh", written out by hand: equal to float rounding),
`components/layer_norm.py`, `rms_norm.py` (w, b), `embed.py`, `pos_embed.py` (W_E, W_pos)
and `unembed.py` (W_U (d_model, d_vocab), b_U). GPT-Neo's options map to config fields
that TransformerLens's own GPT-Neo loader sets (`loading_from_pretrained.py`):
`use_attn_scale=False`, `use_local_attn` with `attn_types` (one "global"/"local" per
layer) and `window_size` (its `abstract_attention.py` keeps key j for query i when
i - window_size < j <= i, as ours), `act_fn="gelu_new"`, `eps`. Our missing q/k/v biases
become zero b_Q/b_K/b_V, and come back as zero biases. The HookedTransformer is built from its
config with `init_weights=False` and given our weights as they are: no fold_ln, no
centring. `default_prepend_bos=False`: our token rows already begin with the start id.
The way back also reads weights that `process_weights_` folded and centred (LNPre, RMSPre,
ln_final's bias folded into b_U): they are still weights our GPT can hold.

Smeared keys (`model.smeared_keys`, which TransformerLens does not have) go over as a
permanent hook on each smeared layer's `hook_k` (`KeySmear`) and come back from it.

Hook names are the same on both sides, but not every name means the same thing: see
`shared_hook_names`. TransformerLens is optional: `pip install -e ".[interp]"`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

from ..config import ModelConfig
from .model import GPT, mix_previous_key

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NORMS = {"layernorm": "LN", "rmsnorm": "RMS", "none": None}  # ours -> normalization_type
ACTS = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}  # ours -> act_fn
# "gelu_pytorch_tanh" is the same tanh approximation under another name
ACTS_BACK = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
             "gelu_pytorch_tanh": "gelu_tanh"}
# LNPre / RMSPre are LN / RMS whose weights were folded into the next layer (fold_ln):
# the same computation as ours with gain 1 and bias 0, so we read them too
NORMS_BACK = {"LN": "layernorm", "LNPre": "layernorm", "RMS": "rmsnorm", "RMSPre": "rmsnorm",
              None: "none"}
# Not shared: ln1/ln2/ln_final.hook_normalized. TransformerLens hooks x / scale before the
# gain and bias are applied; ours hooks the norm's output, after them (and with norm=none
# TransformerLens has no ln module at all). Everything else matches in shape and meaning.
SHARED_PER_BLOCK = (
    "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores",
    "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "mlp.hook_pre",
    "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
)


def shared_hook_names(n_layers: int) -> list[str]:
    """The hook names whose activations are equal in our GPT and its HookedTransformer."""
    return (["hook_embed", "hook_pos_embed"]
            + [f"blocks.{i}.{name}" for i in range(n_layers) for name in SHARED_PER_BLOCK])


def _require_transformer_lens():
    try:
        import transformer_lens
    except ImportError:
        raise ImportError('TransformerLens is not installed: pip install -e ".[interp]"') from None
    return transformer_lens


def to_transformer_lens(model: GPT, cls: type | None = None) -> HookedTransformer:
    """A HookedTransformer computing what `model` computes, on its device and dtype.

    `cls` is HookedTransformer (None) or a subclass built from the same config, such as
    `sae_lens.HookedSAETransformer`. The weights are copies: training one model does not
    change the other. A tied unembedding becomes W_U = W_E.T, a copy (HookedTransformer
    has no tying); b_U is zero.
    """
    tl = _require_transformer_lens()
    cfg = model.cfg
    param = next(model.parameters())
    local = "local" in cfg.attention_layers
    tl_cfg = tl.HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab,
        act_fn=ACTS[cfg.act], normalization_type=NORMS[cfg.norm], eps=cfg.norm_eps,
        use_attn_scale=cfg.attn_scale,  # True: TransformerLens's attn_scale is sqrt(d_head)
        use_local_attn=local, attn_types=list(cfg.attention_layers) if local else None,
        window_size=cfg.window if local else None,
        positional_embedding_type="standard", default_prepend_bos=False,
        tie_word_embeddings=cfg.tied_embeddings,  # a record for from_transformer_lens
        initializer_range=cfg.init_std,  # TransformerLens's name for the init std (gpt2 mode)
        init_weights=False, device=str(param.device), dtype=param.dtype,
    )
    with warnings.catch_warnings():
        # TransformerLens 3 deprecates HookedTransformer for TransformerBridge, which wraps
        # HuggingFace models only; for a model of our own the constructor is the way
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        hooked = (cls or tl.HookedTransformer)(tl_cfg)
    state = _to_tl_state(model.state_dict(), cfg)
    params = {name for name, _ in hooked.named_parameters()}
    if set(state) != params:  # a parameter we did not fill would keep torch.empty garbage
        raise AssertionError(f"the weight mapping is out of date with this TransformerLens: "
                             f"missing {sorted(params - set(state))}, "
                             f"extra {sorted(set(state) - params)}")
    hooked.load_state_dict(state, strict=False)  # strict=False: its buffers (masks) stay
    for layer in cfg.smeared_keys:
        KeySmear(model.blocks[layer].attn.smear).attach(hooked, layer)
    return hooked.train(model.training)


class KeySmear:
    """What a smeared layer of ours does to its keys (`Attention.smear_keys`), as a permanent
    hook on a HookedTransformer's `blocks.L.attn.hook_k`: TransformerLens has no smeared keys.

    Hooks added later (`run_with_cache`, a learner's own) see the keys after the mix, as ours
    do. The share is a copy, not a parameter: training the HookedTransformer leaves it as it
    is. TransformerLens's `generate` must be called with `use_past_kv_cache=False`: with its
    cache, hook_k sees one new position at a time, which has no previous key in view.
    """

    def __init__(self, smear: torch.Tensor):
        self.smear = smear.detach().clone()  # (n_heads,) the logit of the previous key's share

    def __call__(self, k: torch.Tensor, hook=None) -> torch.Tensor:
        """k (batch, pos, n_heads, d_head) -> (1 - s) k_j + s k_(j-1); position 0 keeps its own."""
        return mix_previous_key(k, k[:, :1], self.smear.to(k.device))

    def attach(self, hooked: HookedTransformer, layer: int) -> None:
        """Add the hook; `from_transformer_lens` finds it again on the hook point."""
        hook_point = hooked.blocks[layer].attn.hook_k
        hook_point.key_smear = self
        hooked.add_perma_hook(f"blocks.{layer}.attn.hook_k", self)


def from_transformer_lens(hooked: HookedTransformer) -> GPT:
    """Our GPT with `hooked`'s weights; refuses (ValueError) what our GPT cannot compute.

    Tied embeddings come back tied only if the config says so and W_U still equals W_E.T.
    """
    _require_transformer_lens()
    c = hooked.cfg
    problems = _unsupported(c)
    state = {name: t.detach() for name, t in hooked.state_dict().items()}
    b_U = state["unembed.b_U"]
    unembed_bias = bool(b_U.any()) and c.normalization_type != "LNPre"  # kept as a bias
    if b_U.any() and not unembed_bias:
        # fold_ln moves ln_final's bias into b_U. LNPre's output n is centred (n . 1 = 0), so
        # W_U's mean over d_model never reaches the logits: with ln_final.b = 1 (all ones)
        # and W_U - mean + b_U / d_model, (n + 1) @ W_U' = n @ W_U + b_U, the same logits
        W_U = state["unembed.W_U"]
        state["ln_final.b"] = torch.ones_like(W_U[:, 0])
        state["unembed.W_U"] = W_U - W_U.mean(0) + b_U / c.d_model
    if problems:
        raise ValueError(f"from_transformer_lens: this HookedTransformer has "
                         f"{'; '.join(problems)}, which tinycourse's GPT cannot represent: keep "
                         f"it in TransformerLens, or build it with a config ours can (see "
                         f"tinycourse.lm.transformer_lens)")
    # keys smeared by `to_transformer_lens` (a KeySmear on the hook point) come back as ours
    smears = {i: getattr(block.attn.hook_k, "key_smear", None) for i, block in enumerate(hooked.blocks)}
    smears = {i: smear.smear for i, smear in smears.items() if smear is not None}
    for i, smear in smears.items():
        state[f"blocks.{i}.attn.smear"] = smear
    tied = bool(c.tie_word_embeddings) and torch.equal(state["unembed.W_U"], state["embed.W_E"].T)
    local = bool(c.use_local_attn) and "local" in c.attn_types
    cfg = ModelConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
        d_mlp=c.d_mlp, n_ctx=c.n_ctx, d_vocab=c.d_vocab, norm=NORMS_BACK[c.normalization_type],
        act=ACTS_BACK[c.act_fn], tied_embeddings=tied,
        # initializer_range is an init std only in gpt2 mode (else a gain)
        init_std=c.initializer_range if c.init_mode == "gpt2" else ModelConfig.init_std,
        # LNPre / RMSPre keep eps too; with no norm at all it is unused
        norm_eps=c.eps if c.normalization_type is not None else ModelConfig.norm_eps,
        attn_scale=bool(c.use_attn_scale),
        attention_layers=tuple(c.attn_types) if local else (),
        window=c.window_size if local else ModelConfig.window,
        unembed_bias=unembed_bias,
        smeared_keys=tuple(smears),
    )
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the global RNG
        model = GPT(cfg)
    model.load_state_dict(_from_tl_state(state, cfg))  # strict: every weight is filled
    param = state["embed.W_E"]
    return model.to(device=param.device, dtype=param.dtype).train(hooked.training)


def _unsupported(c) -> list[str]:
    """What in a HookedTransformerConfig our GPT cannot compute, in words (empty: all fine)."""
    checks = [
        (c.positional_embedding_type != "standard", f"{c.positional_embedding_type} positions"),
        (c.normalization_type not in NORMS_BACK, f"normalization_type={c.normalization_type!r}"),
        (c.normalization_type in ("LN", "LNPre") and c.final_rms, "final_rms (LN, then RMS last)"),
        (c.attn_only, "attn_only (no MLPs)"),
        (not c.attn_only and c.act_fn not in ACTS_BACK, f"act_fn={c.act_fn!r}"),
        (c.gated_mlp, "a gated MLP"),
        (c.num_experts is not None, "mixture-of-experts MLPs"),
        (c.parallel_attn_mlp, "parallel attention and MLP"),
        (c.n_key_value_heads is not None, "grouped-query attention"),
        (c.use_local_attn and not (c.attn_types is not None and len(c.attn_types) == c.n_layers
                                   and set(c.attn_types) <= {"global", "local"}),
         f"attn_types={c.attn_types!r} (ours: global or local, one per layer)"),
        (c.attention_dir != "causal", f"{c.attention_dir} attention"),
        # ours divides by sqrt(d_head) or by nothing (GPT-Neo)
        (c.use_attn_scale and not math.isclose(c.attn_scale, math.sqrt(c.d_head)),
         f"an attention scale other than sqrt(d_head) or 1 ({c.attn_scale})"),
        (c.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx"),
        (c.use_qk_norm, "QK norms"),
        (c.clip_qkv is not None, "clip_qkv"),
        (c.use_attention_sinks, "attention sinks"),
        (c.post_embedding_ln, "a norm after the embedding"),
        (c.use_normalization_before_and_after, "norms after attention and MLP"),
        ((c.attn_scores_soft_cap or 0) > 0 or (c.output_logits_soft_cap or 0) > 0, "soft-capping"),
        (c.d_vocab_out != c.d_vocab, f"d_vocab_out={c.d_vocab_out} != d_vocab={c.d_vocab}"),
        (c.load_in_4bit, "4-bit weights"),
        (c.original_architecture in ("OlmoForCausalLM", "OlmoeForCausalLM", "Olmo2ForCausalLM",
                                     "Olmo3ForCausalLM"), f"the {c.original_architecture} layout"),
    ]
    return [what for bad, what in checks if bad]


def _to_tl_state(ours: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> TransformerLens's names and shapes (copies)."""
    H, Dh = cfg.n_heads, cfg.d_head
    out = {"embed.W_E": ours["embed.weight"], "pos_embed.W_pos": ours["pos_embed.weight"],
           "unembed.W_U": ours["unembed.weight"].T,
           "unembed.b_U": ours.get("unembed.bias", ours["unembed.weight"].new_zeros(cfg.d_vocab))}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        # qkv.weight (3 * H * Dh, d_model): rows run (q/k/v, head, d_head), as forward splits them
        w = ours[p + "attn.qkv.weight"].view(3, H, Dh, cfg.d_model).transpose(-1, -2)
        # no q/k/v biases (GPT-Neo) are zero biases to TransformerLens
        b = ours.get(p + "attn.qkv.bias", w.new_zeros(3 * H * Dh)).view(3, H, Dh)
        for j, name in enumerate("QKV"):
            out[p + f"attn.W_{name}"], out[p + f"attn.b_{name}"] = w[j], b[j]
        # out.weight (d_model, H * Dh) -> W_O (H, Dh, d_model)
        out[p + "attn.W_O"] = ours[p + "attn.out.weight"].view(cfg.d_model, H, Dh).permute(1, 2, 0)
        out[p + "attn.b_O"] = ours[p + "attn.out.bias"]
        out[p + "mlp.W_in"] = ours[p + "mlp.fc_in.weight"].T  # (d_model, d_mlp)
        out[p + "mlp.b_in"] = ours[p + "mlp.fc_in.bias"]
        out[p + "mlp.W_out"] = ours[p + "mlp.fc_out.weight"].T  # (d_mlp, d_model)
        out[p + "mlp.b_out"] = ours[p + "mlp.fc_out.bias"]
    for norm in [f"blocks.{i}.ln{k}" for i in range(cfg.n_layers) for k in (1, 2)] + ["ln_final"]:
        if cfg.norm != "none":
            out[norm + ".w"] = ours[norm + ".weight"]
        if cfg.norm == "layernorm":
            out[norm + ".b"] = ours[norm + ".bias"]
    return {name: t.detach().clone().contiguous() for name, t in out.items()}


def _from_tl_state(tl: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """TransformerLens's state dict -> ours (copies); the inverse of `_to_tl_state`."""
    out = {"embed.weight": tl["embed.W_E"], "pos_embed.weight": tl["pos_embed.W_pos"],
           "unembed.weight": tl["unembed.W_U"].T}
    if cfg.unembed_bias:
        out["unembed.bias"] = tl["unembed.b_U"]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        w = torch.stack([tl[p + f"attn.W_{n}"] for n in "QKV"])  # (3, H, d_model, Dh)
        out[p + "attn.qkv.weight"] = w.transpose(-1, -2).reshape(-1, cfg.d_model)
        out[p + "attn.qkv.bias"] = torch.stack([tl[p + f"attn.b_{n}"] for n in "QKV"]).reshape(-1)
        out[p + "attn.out.weight"] = tl[p + "attn.W_O"].permute(2, 0, 1).reshape(cfg.d_model, -1)
        out[p + "attn.out.bias"] = tl[p + "attn.b_O"]
        out[p + "mlp.fc_in.weight"] = tl[p + "mlp.W_in"].T
        out[p + "mlp.fc_in.bias"] = tl[p + "mlp.b_in"]
        out[p + "mlp.fc_out.weight"] = tl[p + "mlp.W_out"].T
        out[p + "mlp.fc_out.bias"] = tl[p + "mlp.b_out"]
        if i in cfg.smeared_keys:
            out[p + "attn.smear"] = tl[p + "attn.smear"]
    ref = tl["embed.W_E"]
    for norm in [f"blocks.{i}.ln{k}" for i in range(cfg.n_layers) for k in (1, 2)] + ["ln_final"]:
        # LNPre / RMSPre have no w or b: their gain is 1 and their bias 0
        if cfg.norm != "none":
            out[norm + ".weight"] = tl.get(norm + ".w", ref.new_ones(cfg.d_model))
        if cfg.norm == "layernorm":
            out[norm + ".bias"] = tl.get(norm + ".b", ref.new_zeros(cfg.d_model))
    return {name: t.detach().clone().contiguous() for name, t in out.items()}


__all__ = ["KeySmear", "SHARED_PER_BLOCK", "from_transformer_lens", "shared_hook_names", "to_transformer_lens"]
