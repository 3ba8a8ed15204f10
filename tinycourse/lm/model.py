"""The language model: a decoder-only GPT whose activations all have names.

The architecture is GPT-2's, small: token and learned position embeddings, `n_layers`
pre-norm blocks (attention then MLP, each added to the residual stream), a final norm
and an unembedding. The norm is LayerNorm, RMSNorm or none at all (TinyModel trains
without norms, which makes its residual stream easier to read). A few options make it
GPT-Neo, so the public TinyStories models load into it (`lm.pretrained`): no q/k/v
biases, unscaled attention scores, local layers that see only the last `window`
positions, and GELU's tanh approximation.

Every activation an interpretability notebook may want passes through a `HookPoint`,
named as in TransformerLens (`blocks.0.attn.hook_pattern`), so

    logits, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_post"])

works here as it does there. Attention uses PyTorch's fused `scaled_dot_product_attention`
and only computes the attention scores and pattern explicitly when a hook asks for them.

Also here: `causal_mask` and `local_causal_mask`, `generate` (sampling with a key/value
cache), `count_parameters`, `model_device` (where a model is, checked against the device a
caller asked for) and `save_model` / `load_model` (safetensors + config.json; loading needs
no training code).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import ConfigError, ModelConfig
from .hooks import HookedModule, HookPoint

FORMAT_VERSION = 1  # of model.safetensors + config.json; bump when the layout changes
NORM_EPS = ModelConfig.norm_eps  # the default; a model's own is model.cfg.norm_eps


class Norm(nn.Module):
    """LayerNorm, RMSNorm, or nothing (`norm="none"`: identity, as in TinyModel).

    `hook_normalized` exists in every case so hook names do not depend on the config.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        if self.kind != "none":
            self.weight = nn.Parameter(torch.ones(cfg.d_model))
        if self.kind == "layernorm":
            self.bias = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_normalized = HookPoint()  # (batch, pos, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, pos, d_model) -> (batch, pos, d_model)."""
        if self.kind == "layernorm":
            x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        elif self.kind == "rmsnorm":
            x = F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        return self.hook_normalized(x)


class KVCache:
    """Keys and values of the positions already processed, so a new token costs one position.

    Each layer's keys and values live in a preallocated (batch, n_heads, n_ctx, d_head)
    buffer, made on first use with the dtype the layer produces (bf16 under autocast).
    """

    def __init__(self, cfg: ModelConfig, batch: int):
        self.cfg, self.batch = cfg, batch
        self.k: list[torch.Tensor | None] = [None] * cfg.n_layers
        self.v: list[torch.Tensor | None] = [None] * cfg.n_layers
        self.length = 0  # positions filled; the model advances it after a forward pass
        # a smeared layer's last key before smearing, (batch, 1, n_heads, d_head): the next
        # position's key is mixed with it
        self.last_key: list[torch.Tensor | None] = [None] * cfg.n_layers

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, n_heads, pos, d_head) after the cached positions; return all
        keys and values so far, (batch, n_heads, length + pos, d_head)."""
        if self.k[layer] is None:
            shape = (self.batch, self.cfg.n_heads, self.cfg.n_ctx, self.cfg.d_head)
            self.k[layer] = k.new_zeros(shape)
            self.v[layer] = v.new_zeros(shape)
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block, each back to its own mode after (even on
    an error): measurements must not leave a model in training mode, or out of it."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, was):
            m.train(flag)


def causal_mask(n: int, device: str | torch.device | None = None) -> torch.Tensor:
    """(n, n) bool, True where query position i may attend to key position j: j <= i
    (lower-triangular, the diagonal included, since a position sees itself)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def local_causal_mask(n: int, window: int,
                      device: str | torch.device | None = None) -> torch.Tensor:
    """(n, n) bool, True where query i may attend to key j in a local layer: the last
    `window` positions, itself included, i - window < j <= i (GPT-Neo's local attention:
    transformers' GPTNeoSelfAttention builds it as tril(ones) ^ tril(ones, -window_size))."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return (j <= i) & (j > i - window)


# A smeared key starts as mostly the previous position's: sigmoid(2) = 0.88. At half and
# half, a query matching its own token finds both the key after an earlier copy (induction:
# copying it is right) and the earlier copy itself (copying it repeats the current token),
# and the two pulls on the head's weights largely cancel; mostly-previous keys make the
# induction match the one a head finds first, and a head that wants its own key back
# learns the share down (benchmarks/bench_induction.py measures both starts).
SMEAR_INIT = 2.0


def mix_previous_key(k: torch.Tensor, earlier: torch.Tensor, smear: torch.Tensor) -> torch.Tensor:
    """k (batch, pos, n_heads, d_head), `earlier` (batch, 1, n_heads, d_head) the key before
    position 0, smear (n_heads,) logits -> (1 - s) k_j + s k_(j-1), s = sigmoid(smear)."""
    previous = torch.cat([earlier, k[:, :-1]], dim=1)
    share = torch.sigmoid(smear).view(1, 1, -1, 1).to(k.dtype)
    return k + share * (previous - k)


class Attention(nn.Module):
    """Causal multi-head self-attention; the heads' Q, K, V come from one fused matmul.

    A local layer (`cfg.attention_layers[layer] == "local"`) sees only the last
    `cfg.window` positions. Scores are divided by sqrt(d_head) unless `cfg.attn_scale`
    is False (GPT-Neo never scales them). In a smeared layer (`layer in cfg.smeared_keys`)
    each head's key is mixed with the previous position's, by a learned share per head
    (`smear_keys`); `hook_k` holds the keys after the mix, the ones attention uses."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.n_heads, self.d_head = layer, cfg.n_heads, cfg.d_head
        self.scale = 1 / math.sqrt(cfg.d_head) if cfg.attn_scale else 1.0
        self.local = cfg.is_local(layer)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.out = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)
        # (n_heads,) the logit of each head's share of the previous key
        self.smear = (nn.Parameter(torch.full((cfg.n_heads,), SMEAR_INIT))
                      if layer in cfg.smeared_keys else None)
        self.hook_q = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_k = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_v = HookPoint()  # (batch, pos, n_heads, d_head)
        self.hook_attn_scores = HookPoint()  # (batch, n_heads, query_pos, key_pos), -inf where masked
        self.hook_pattern = HookPoint()  # (batch, n_heads, query_pos, key_pos), rows sum to 1
        self.hook_z = HookPoint()  # (batch, pos, n_heads, d_head), the heads' outputs
        # True where query i may see key j, by absolute position: sliced with an offset
        # when keys are cached, so a local window stays right during generation too
        mask = local_causal_mask(cfg.n_ctx, cfg.window) if self.local else causal_mask(cfg.n_ctx)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """x (batch, pos, d_model) -> (batch, pos, d_model)."""
        batch, pos, _ = x.shape
        q, k, v = self.qkv(x).view(batch, pos, 3, self.n_heads, self.d_head).unbind(2)
        if self.smear is not None:
            k = self.smear_keys(k, kv_cache)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, n_heads, pos, d_head)
        start = 0
        if kv_cache is not None:
            start = kv_cache.length
            k, v = kv_cache.update(self.layer, k, v)  # (batch, n_heads, start + pos, d_head)
        mask = self.causal[start : start + pos, : start + pos]  # (query_pos, key_pos)
        if self.hook_attn_scores.has_hooks or self.hook_pattern.has_hooks:
            # the fused kernel never materialises scores or pattern: compute them by hand
            scores = (q @ k.transpose(-2, -1)) * self.scale
            scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
            pattern = self.hook_pattern(scores.softmax(dim=-1))
            z = pattern.to(v.dtype) @ v
        elif start == 0 and not self.local:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            # `is_causal` aligns its mask top-left, wrong once earlier keys are cached, and
            # knows no window: pass the mask itself
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))  # (batch, pos, n_heads, d_head)
        return self.out(z.reshape(batch, pos, self.n_heads * self.d_head))

    def smear_keys(self, k: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """k (batch, pos, n_heads, d_head) -> (1 - s) k_j + s k_(j-1) at each position j,
        s = sigmoid(smear) per head. Position 0 has no previous key and keeps its own; with
        a cache, the first new position mixes with the last cached one."""
        earlier = k[:, :1]
        if kv_cache is not None:
            if kv_cache.length:
                earlier = kv_cache.last_key[self.layer]
            kv_cache.last_key[self.layer] = k[:, -1:]
        return mix_previous_key(k, earlier, self.smear)

    # TransformerLens-shaped views of the weights, for reading circuits (they share storage)
    @property
    def W_Q(self) -> torch.Tensor:
        """(n_heads, d_model, d_head)"""
        return self._in_weight(0)

    @property
    def W_K(self) -> torch.Tensor:
        """(n_heads, d_model, d_head); in a smeared layer each key is then mixed with the
        previous position's (`smear_keys`), which a circuit read from W_K alone misses"""
        return self._in_weight(1)

    @property
    def W_V(self) -> torch.Tensor:
        """(n_heads, d_model, d_head)"""
        return self._in_weight(2)

    @property
    def W_O(self) -> torch.Tensor:
        """(n_heads, d_head, d_model)"""
        return self.out.weight.view(-1, self.n_heads, self.d_head).permute(1, 2, 0)

    def _in_weight(self, which: int) -> torch.Tensor:
        w = self.qkv.weight.view(3, self.n_heads, self.d_head, -1)[which]
        return w.transpose(1, 2)


class MLP(nn.Module):
    """Two linear maps with a GELU or ReLU between them, applied at each position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.hook_pre = HookPoint()  # (batch, pos, d_mlp), before the nonlinearity
        if cfg.act == "relu":
            self.act = nn.ReLU()
        else:  # gelu_tanh is GPT-2's and GPT-Neo's "gelu_new",
            # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), a close cheap approximation
            self.act = nn.GELU(approximate="tanh" if cfg.act == "gelu_tanh" else "none")
        self.hook_post = HookPoint()  # (batch, pos, d_mlp), the neurons
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, pos, d_model) -> (batch, pos, d_model)."""
        return self.fc_out(self.hook_post(self.act(self.hook_pre(self.fc_in(x)))))

    @property
    def W_in(self) -> torch.Tensor:
        """(d_model, d_mlp)"""
        return self.fc_in.weight.T

    @property
    def W_out(self) -> torch.Tensor:
        """(d_mlp, d_model)"""
        return self.fc_out.weight.T


class Block(nn.Module):
    """One pre-norm transformer block: resid + attn(ln1(resid)), then + mlp(ln2(.))."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.hook_resid_pre = HookPoint()  # (batch, pos, d_model)
        self.ln1 = Norm(cfg)
        self.attn = Attention(cfg, layer)
        self.hook_attn_out = HookPoint()  # (batch, pos, d_model)
        self.hook_resid_mid = HookPoint()  # (batch, pos, d_model)
        self.ln2 = Norm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # (batch, pos, d_model)
        self.hook_resid_post = HookPoint()  # (batch, pos, d_model)

    def forward(self, resid: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """resid (batch, pos, d_model) -> (batch, pos, d_model)."""
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid), kv_cache))
        resid = self.hook_resid_mid(resid + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + mlp_out)


def sinusoidal_positions(n_ctx: int, d_model: int, std: float) -> torch.Tensor:
    """(n_ctx, d_model): position p's vector holds sin(p w_i) and cos(p w_i) for d_model / 2
    frequencies w_i = 10000^(-2i / d_model) (Vaswani et al. 2017), scaled so that its norm
    is a token embedding's, std sqrt(d_model). Moving from p to p - 1 rotates each (sin, cos)
    pair by its frequency: one linear map for every position."""
    positions = torch.arange(n_ctx, dtype=torch.float32)[:, None]  # (n_ctx, 1)
    freqs = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # (d_model / 2,)
    angles = positions * freqs  # (n_ctx, d_model / 2)
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :d_model]
    return table * std * math.sqrt(2.0)  # each entry's mean square is 1/2


class GPT(HookedModule):
    """Decoder-only transformer: tokens (batch, pos) -> next-token logits (batch, pos, d_vocab)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_vocab <= 0:
            raise ConfigError(
                f"ModelConfig.d_vocab is {cfg.d_vocab}: the model needs the vocabulary size. "
                f"Use CourseConfig.resolved_model, which fills it in from the tokenizer."
            )
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()  # (batch, pos, d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_pos_embed = HookPoint()  # (batch, pos, d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=cfg.unembed_bias)
        if cfg.tied_embeddings:
            self.unembed.weight = self.embed.weight
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Each block adds two projections to the residual stream; scaling them by
        # 1/sqrt(2 n_layers) keeps its variance from growing with depth (GPT-2).
        for block in self.blocks:
            for proj in (block.attn.out, block.mlp.fc_out):
                nn.init.normal_(proj.weight, mean=0.0, std=std / math.sqrt(2 * self.cfg.n_layers))
        if self.cfg.pos_init == "sinusoidal":
            with torch.no_grad():
                self.pos_embed.weight.copy_(sinusoidal_positions(self.cfg.n_ctx, self.cfg.d_model, std))

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        kv_cache: KVCache | None = None,
        stop_at_layer: int | None = None,
    ) -> torch.Tensor:
        """tokens (batch, pos) int64 -> logits (batch, pos, d_vocab).

        With `kv_cache`, `tokens` continue the cached positions. With `stop_at_layer=k`,
        only blocks 0..k-1 run and the residual stream (batch, pos, d_model) is returned.
        """
        batch, pos = tokens.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + pos > self.cfg.n_ctx:
            raise ValueError(
                f"{start + pos} positions but the model has n_ctx={self.cfg.n_ctx} "
                f"learned positions: crop the input to its last {self.cfg.n_ctx} tokens"
            )
        positions = torch.arange(start, start + pos, device=tokens.device)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(
            self.pos_embed(positions).expand(batch, pos, -1)
        )  # (batch, pos, d_model)
        for i, block in enumerate(self.blocks):
            if i == stop_at_layer:
                return resid
            resid = block(resid, kv_cache)
        if kv_cache is not None:
            kv_cache.length += pos
        if stop_at_layer is not None:
            return resid
        return self.unembed(self.ln_final(resid))

    @property
    def W_E(self) -> torch.Tensor:
        """(d_vocab, d_model)"""
        return self.embed.weight

    @property
    def W_pos(self) -> torch.Tensor:
        """(n_ctx, d_model)"""
        return self.pos_embed.weight

    @property
    def W_U(self) -> torch.Tensor:
        """(d_model, d_vocab)"""
        return self.unembed.weight.T


# --- parameters and compute ----------------------------------------------------------

@dataclass(frozen=True)
class ParameterCount:
    """Parameters by component. `str()` gives a table; `dataclasses.asdict` the numbers."""

    embed: int
    pos_embed: int
    attn: int
    mlp: int
    norms: int
    unembed: int  # d_model x d_vocab; counted once in `total` when tied to `embed`
    tied: bool

    @property
    def total(self) -> int:
        return self.embed + self.pos_embed + self.attn + self.mlp + self.norms + (
            0 if self.tied else self.unembed)

    @property
    def non_embedding(self) -> int:
        """Parameters a token is multiplied by: all but the two embedding lookups. The
        unembedding counts even when tied, since its matmul is done either way."""
        return self.attn + self.mlp + self.norms + self.unembed

    def __str__(self) -> str:
        rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "tied"]
        rows += [("total", self.total), ("non-embedding", self.non_embedding)]
        lines = [f"{'component':<14}{'parameters':>12}{'share':>8}"]
        for name, count in rows:
            note = "  (tied to embed)" if name == "unembed" and self.tied else ""
            share = f"{100 * count / self.total:7.1f}%" if name != "non-embedding" else ""
            lines.append(f"{name:<14}{count:>12,}{share:>8}{note}")
        return "\n".join(lines)


def count_parameters(model: GPT) -> ParameterCount:
    """Count `model`'s parameters per component (each shared tensor once)."""
    counts = dict.fromkeys(("embed", "pos_embed", "attn", "mlp", "norms"), 0)
    for name, p in model.named_parameters():  # yields a tied weight once, as embed
        if name.startswith(("embed.", "pos_embed.")):
            counts[name.split(".")[0]] += p.numel()
        elif ".attn." in name:
            counts["attn"] += p.numel()
        elif ".mlp." in name:
            counts["mlp"] += p.numel()
        elif ".ln" in name or name.startswith("ln_final."):
            counts["norms"] += p.numel()
        elif not name.startswith("unembed."):
            raise AssertionError(f"parameter {name} belongs to no component")
    unembed = model.unembed.weight.numel() + (model.unembed.bias.numel() if model.unembed.bias is not None else 0)
    return ParameterCount(**counts, unembed=unembed,
                          tied=model.cfg.tied_embeddings)


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward), as estimated by PaLM and nanoGPT:
    6 per non-embedding parameter (2 forward, 4 backward) plus the attention scores and
    weighted sum, 12 * n_layers * n_ctx * (n_heads * d_head)."""
    matmul = (cfg.n_layers * (4 * cfg.d_model * cfg.n_heads * cfg.d_head + 2 * cfg.d_model * cfg.d_mlp)
              + cfg.d_model * cfg.d_vocab)
    return 6 * matmul + 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head


# --- sampling --------------------------------------------------------------------------

class Tokenizer(Protocol):
    """What `generate_text` needs of a tokenizer (duck typed)."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@torch.no_grad()
def generate(
    model: GPT,
    prompts: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    stop_id: int | None = None,
) -> list[int] | list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` sampled tokens.

    `prompts` is one token list (returns one list) or several (returns a list of lists),
    each returned as prompt + continuation. A row ends after it samples `stop_id` (kept,
    so you can tell why it ended). `temperature=0` is greedy decoding; `top_k` samples
    among the k likeliest tokens; `seed` makes sampling reproducible without touching
    the global random state.

    A key/value cache makes each new token cost one position. Rows are grouped by prompt
    length and each group runs as one batch, so no padding or masks are needed. Past
    n_ctx tokens the context window slides (the last n_ctx tokens are kept); positions
    then shift every step, the cache no longer applies, and each step recomputes the
    window.
    """
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    single = len(prompts) > 0 and not isinstance(prompts[0], (list, tuple, torch.Tensor))
    rows = [list(map(int, row)) for row in ([prompts] if single else prompts)]
    for row in rows:
        if not row:
            raise ValueError("empty prompt: start it with the start token (e.g. shards.start_id)")
        if min(row) < 0 or max(row) >= model.cfg.d_vocab:
            raise ValueError(f"prompt ids must be in 0..{model.cfg.d_vocab - 1}")
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    out: list[list[int]] = [[] for _ in rows]
    for length in sorted({len(row) for row in rows}):
        index = [i for i, row in enumerate(rows) if len(row) == length]
        tokens = torch.tensor([rows[i] for i in index], device=device)
        for i, seq in zip(index, _generate_batch(model, tokens, max_new_tokens, temperature,
                                                 top_k, generator, stop_id)):
            out[i] = seq
    return out[0] if single else out


def _generate_batch(model: GPT, tokens: torch.Tensor, max_new_tokens: int, temperature: float,
                    top_k: int | None, generator: torch.Generator | None,
                    stop_id: int | None) -> list[list[int]]:
    """tokens (batch, pos), one prompt length -> the rows continued, as lists."""
    n_ctx, prompt_len = model.cfg.n_ctx, tokens.shape[1]
    cache = KVCache(model.cfg, tokens.shape[0])
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    logits = model(tokens[:, -n_ctx:], kv_cache=cache)[:, -1]  # (batch, d_vocab)
    for step in range(max_new_tokens):
        next_id = _sample(logits, temperature, top_k, generator)  # (batch,)
        tokens = torch.cat([tokens, next_id[:, None]], dim=1)
        if stop_id is not None:
            done |= next_id == stop_id
            if bool(done.all()):
                break
        if step == max_new_tokens - 1:
            break
        if cache.length < n_ctx:
            logits = model(next_id[:, None], kv_cache=cache)[:, -1]
        else:
            logits = model(tokens[:, -n_ctx:])[:, -1]
    rows = []
    for row in tokens.tolist():
        if stop_id is not None and stop_id in row[prompt_len:]:
            row = row[: row.index(stop_id, prompt_len) + 1]
        rows.append(row)
    return rows


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """logits (batch, d_vocab) -> token ids (batch,)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


def generate_text(model: GPT, tokenizer: Tokenizer, prompt: str | list[str], max_new_tokens: int,
                  *, start_id: int | None = None, **sampling) -> str | list[str]:
    """`generate` on text: encode, continue, decode (prompt included).

    `start_id`, if given, is put before each prompt (stories begin with it in the shards)
    and also ends generation unless `stop_id` says otherwise; it is not decoded.
    `sampling` takes `generate`'s keyword arguments.
    """
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    prefix = [start_id] if start_id is not None else []
    if start_id is not None:
        sampling.setdefault("stop_id", start_id)
    rows = generate(model, [prefix + list(tokenizer.encode(t)) for t in texts], max_new_tokens,
                    **sampling)
    decoded = []
    for row in rows:
        row = row[len(prefix):]
        if row and sampling.get("stop_id") is not None and row[-1] == sampling["stop_id"]:
            row = row[:-1]
        decoded.append(tokenizer.decode(row))
    return decoded[0] if isinstance(prompt, str) else decoded


# --- saving and loading ----------------------------------------------------------------

def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        for attr in ("module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """The device `model`'s parameters are on; never moves the model.

    `device` is the one a caller asked for: None (or the model's own device) returns the
    model's device; any other raises, since moving the caller's model in place (as
    `nn.Module.to` does) would be a side effect nobody asked for. "cuda" without an index
    means the current CUDA device, as in torch."""
    param = next(model.parameters(), None)
    actual = param.device if param is not None else torch.device("cpu")
    if device is None:
        return actual
    asked = torch.device(device)
    if asked.index is None and asked.type == "cuda" and torch.cuda.is_available():
        asked = torch.device("cuda", torch.cuda.current_device())
    same = asked.type == actual.type and (asked.index or 0) == (actual.index or 0)
    if not same:
        raise ValueError(f"the model is on {actual} but device={str(device)!r} was asked: move "
                         f"it first with model.to({str(device)!r}), or pass device=None")
    return actual


def save_model(model: GPT, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` and `config.json` into `directory`; return the directory.

    safetensors refuses tensors that share memory, so a tied unembedding is left out
    and re-tied on load (the config says it is tied).
    """
    model = unwrap(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if model.cfg.tied_embeddings:
        del state["unembed.weight"]
    tensors = {name: t.detach().contiguous().cpu() for name, t in state.items()}
    blob = safetensors.torch.save(tensors, metadata={"format": str(FORMAT_VERSION)})
    atomic_write_bytes(directory / "model.safetensors", blob)
    atomic_write_json(directory / "config.json",
                      {"format": FORMAT_VERSION, **dataclasses.asdict(model.cfg)})
    return directory


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    """Load a model written by `save_model` (or `train_lm`) from its folder or its
    `model.safetensors` file. Needs no training code; returns the model in eval mode."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    weights, config = directory / "model.safetensors", directory / "config.json"
    if not weights.exists() or not config.exists():
        raise FileNotFoundError(
            f"no model.safetensors + config.json in {directory}: pass the folder that "
            f"save_model or train_lm wrote (e.g. runs/<name>/lm)"
        )
    meta = json.loads(config.read_text())
    version = meta.pop("format", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{config} has format {version!r}; this code reads format {FORMAT_VERSION}")
    # JSON has no tuples: attention_layers comes back as a list
    meta = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()}
    try:
        cfg = ModelConfig(**meta)
    except TypeError as error:
        raise ValueError(f"{config} does not describe a ModelConfig: {error}") from None
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the global RNG
        model = GPT(cfg)
    state = safetensors.torch.load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = ["unembed.weight"] if cfg.tied_embeddings else []
    if unexpected or sorted(missing) != expected_missing:
        raise ValueError(f"{weights} does not match its config: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.to(device).eval()


__all__ = [
    "GPT", "KVCache", "ParameterCount", "mix_previous_key", "causal_mask", "local_causal_mask",
    "count_parameters",
    "flops_per_token", "generate", "generate_text", "save_model", "load_model", "unwrap",
    "model_device", "eval_mode", "FORMAT_VERSION",
]
