"""Frozen stage configs, composed into one course config, with named presets.

Each pipeline stage reads one small frozen dataclass. `CourseConfig` composes them; the
three presets below are the only "magic numbers" of the course, and each says what it is
sized for. Variants are made with `dataclasses.replace` or, from the command line, with
`--set stage.field=value` (see `apply_overrides`), which rejects unknown fields and
wrongly typed values with a message that says what to type instead.

This module imports nothing of ours: every other module may import it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what to do."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where stories come from and how they are split.

    `source` is `storyworld` (the embedded generator), `tinystories` (the Hugging Face
    dataset `roneneldan/TinyStories`), `tinystories-v2` (its GPT-4-only V2 text files), or
    a path to a local `.txt` (stories separated by `<|endoftext|>` lines), `.jsonl` or
    `.parquet` (a `text` column) file.
    """

    source: str = "storyworld"
    max_stories: int = 0  # 0 = all stories of the source (storyworld: required > 0)
    val_fraction: float = 0.05  # share of stories held out, chosen by a hash of the index
    seed: int = 0  # storyworld's seed and the split's salt

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("data.source is empty; use storyworld, tinystories or a path")
        if self.max_stories < 0:
            raise ConfigError(f"data.max_stories must be >= 0, got {self.max_stories}")
        if self.source == "storyworld" and self.max_stories == 0:
            raise ConfigError("data.max_stories must be > 0 for storyworld (it is endless)")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE trained on the corpus, or the TinyModel-style top-K remap.

    `kind="bpe"`: train a byte-level BPE of `vocab_size` tokens (special token
    `<|endoftext|>` is id 0 and starts every story).
    `kind="remap"`: take a base tokenizer (`base_tokenizer`, a path to a `tokenizer.json`,
    e.g. GPT-NeoX's; empty = train our own BPE of `vocab_size` as the base), keep the
    `top_k` most frequent base tokens on the corpus as ids 1..K, map the rest to `[UNK]`
    (id 0) and start every story with `[BEGIN]` (id K+1), as TinyModel does.
    """

    kind: str = "bpe"
    vocab_size: int = 2048
    min_frequency: int = 2  # a merge must be seen this often to enter the vocabulary
    train_stories: int = 0  # stories the BPE is trained on; 0 = all training stories
    base_tokenizer: str = ""  # remap only: path to the base tokenizer.json
    top_k: int = 10_000  # remap only: base tokens kept

    def __post_init__(self) -> None:
        _check_choice("tokenizer.kind", self.kind, ("bpe", "remap"))
        if self.vocab_size < 257:
            raise ConfigError(
                f"tokenizer.vocab_size must be at least 257 (256 bytes + <|endoftext|>), "
                f"got {self.vocab_size}"
            )
        _check_positive("tokenizer.top_k", self.top_k)
        if self.train_stories < 0:
            raise ConfigError(f"tokenizer.train_stories must be >= 0, got {self.train_stories}")

    @property
    def d_vocab(self) -> int:
        """Rows of the model's embedding this tokenizer needs."""
        return self.top_k + 2 if self.kind == "remap" else self.vocab_size


@dataclass(frozen=True)
class ShardsConfig:
    """How the corpus is encoded into flat token files."""

    encode_batch_stories: int = 1024  # stories per `encode_batch` call: bounds memory

    def __post_init__(self) -> None:
        _check_positive("shards.encode_batch_stories", self.encode_batch_stories)


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only GPT. `d_vocab=0` means "as many as the tokenizer needs".

    The fields after `init_std` are what GPT-Neo (the public TinyStories models) does
    differently from GPT-2; their defaults are GPT-2's, which our own models use.
    """

    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 128
    d_vocab: int = 0
    norm: str = "layernorm"  # layernorm | rmsnorm | none (TinyModel trains without norms)
    act: str = "gelu"  # gelu (exact) | gelu_tanh (its tanh approximation, "gelu_new") | relu
    tied_embeddings: bool = False
    init_std: float = 0.02
    norm_eps: float = 1e-5  # added to the variance (or mean square) inside each norm
    qkv_bias: bool = True  # biases on the query, key and value projections (GPT-Neo: none)
    attn_scale: bool = True  # divide attention scores by sqrt(d_head) (GPT-Neo does not)
    # per layer "global" (all earlier positions) or "local" (the last `window` positions,
    # itself included); () means every layer is global
    attention_layers: tuple[str, ...] = ()
    window: int = 256  # keys a local layer's query sees; unused without local layers
    unembed_bias: bool = False  # a bias on the logits (TinyModel has one; it has no norm to fold it into)
    # How the learned position embedding starts: "normal" (std init_std, as GPT-2) or
    # "sinusoidal" (Vaswani et al.'s sines and cosines, scaled to the token embedding's norm,
    # then learned like any weight). With sines, "the previous position" is one linear map
    # of the position vector for every position, so a previous-token head is a direction
    # to find rather than n_ctx separate associations to memorise (what it changes on
    # tiny: benchmarks/bench_induction.py).
    pos_init: str = "normal"
    # Layers whose keys are "smeared" (Olsson et al. 2022, "In-context Learning and Induction
    # Heads", argument 2): each head's key at position j becomes (1 - s) k_j + s k_(j-1), s
    # the sigmoid of one learned number per head (0.88 at init, `lm.model.SMEAR_INIT`). A
    # head there can match its query against the token *before* each key: the half of an
    # induction head that would otherwise wait for a previous-token head to form in an
    # earlier layer, which on tiny does not happen within the CPU budget
    # (benchmarks/bench_induction.py).
    smeared_keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("model.norm", self.norm, ("layernorm", "rmsnorm", "none"))
        _check_choice("model.act", self.act, ("gelu", "gelu_tanh", "relu"))
        _check_choice("model.pos_init", self.pos_init, ("normal", "sinusoidal"))
        if not 1 <= self.n_layers <= 48:
            raise ConfigError(f"model.n_layers must be in 1..48, got {self.n_layers}")
        for name in ("d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "init_std", "norm_eps",
                     "window"):
            _check_positive(f"model.{name}", getattr(self, name))
        if self.d_vocab < 0:
            raise ConfigError(f"model.d_vocab must be >= 0, got {self.d_vocab}")
        if self.attention_layers and len(self.attention_layers) != self.n_layers:
            raise ConfigError(
                f"model.attention_layers names {len(self.attention_layers)} layers but "
                f"model.n_layers is {self.n_layers}: give one of global, local per layer, "
                f"or () for all global")
        for kind in self.attention_layers:
            _check_choice("model.attention_layers entry", kind, ("global", "local"))
        for layer in self.smeared_keys:
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"model.smeared_keys names layer {layer} but the model has "
                                  f"layers 0..{self.n_layers - 1}: name layers that exist "
                                  f"(e.g. --set model.smeared_keys={self.n_layers - 1}), or none "
                                  f"(--set model.smeared_keys=)")

    def is_local(self, layer: int) -> bool:
        """Whether `layer`'s attention is local (sees only the last `window` positions)."""
        return bool(self.attention_layers) and self.attention_layers[layer] == "local"


@dataclass(frozen=True)
class TrainConfig:
    """Language-model training: AdamW, warmup then cosine decay, checkpoints."""

    batch_size: int = 32  # sequences per optimizer step (across accumulation and ranks)
    grad_accum: int = 1
    max_steps: int = 600
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    dtype: str = "auto"  # auto (bf16 where it pays) | float32 | bfloat16
    compile: bool = False
    seed: int = 0
    # the share of each batch's windows replaced by noise, R, R, noise (R random training
    # tokens, `corpus.repeats`): data in which only copying predicts the next token
    repeat_share: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("train.dtype", self.dtype, ("auto", "float32", "bfloat16"))
        if not 0 <= self.repeat_share < 1:
            raise ConfigError(f"train.repeat_share must be in [0, 1), got {self.repeat_share}: "
                              f"it is the share of each batch that is not text")
        for name in ("batch_size", "grad_accum", "max_steps", "lr", "eval_every",
                     "eval_batches", "checkpoint_every"):
            _check_positive(f"train.{name}", getattr(self, name))
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be divisible by "
                f"train.grad_accum ({self.grad_accum})"
            )


@dataclass(frozen=True)
class ActivationsConfig:
    """Which activations to collect from the trained LM, how many, and how to store them."""

    hooks: tuple[str, ...] = ("blocks.1.hook_resid_pre",)  # hook names, TransformerLens style
    n_tokens: int = 200_000  # activations per hook
    split: str = "train"  # shards split the tokens are drawn from
    dtype: str = "float16"  # float16 | bfloat16 (float32 doubles the disk for no gain)
    exclude_start: bool = True  # drop positions holding the start token (outlier norms)
    batch_size: int = 64  # sequences per forward pass
    storage: str = "disk"  # disk (memory-mapped shards) | stream (run the LM on the fly)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hooks:
            raise ConfigError("activations.hooks is empty; name at least one hook")
        _check_choice("activations.dtype", self.dtype, ("float16", "bfloat16", "float32"))
        _check_choice("activations.split", self.split, ("train", "val"))
        _check_choice("activations.storage", self.storage, ("disk", "stream"))
        _check_positive("activations.n_tokens", self.n_tokens)
        _check_positive("activations.batch_size", self.batch_size)


@dataclass(frozen=True)
class SAEConfig:
    """A sparse autoencoder (hook_out empty) or a transcoder (hook_in -> hook_out).

    `kind` picks the activation rule: `relu` (ReLU + L1 weighted by decoder norms,
    Anthropic's April 2024 recipe), `topk` (Gao et al. 2024), `batchtopk` (Bussmann et al.
    2024) or `jumprelu` (Rajamanoharan et al. 2024).
    """

    kind: str = "topk"
    hook_in: str = "blocks.1.hook_resid_pre"
    hook_out: str = ""  # empty: reconstruct hook_in (an SAE); else a transcoder's target
    d_sae: int = 1024  # latents (the tiny preset's 8x expansion of d_model 128)
    k: int = 16  # topk / batchtopk: active latents per token
    l1_coeff: float = 5.0  # relu: sparsity penalty (on normalised inputs)
    l1_warmup_frac: float = 0.05  # relu/jumprelu: the penalty ramps up over this share of training
    # jumprelu values are in our units (inputs scaled to E||x||^2 = d_in, pre-activations
    # O(1)); Gemma Scope's 1e-3s assume unit mean squared norm and leave the SAE dense here
    l0_coeff: float = 0.3  # jumprelu: L0 penalty
    jumprelu_bandwidth: float = 0.05  # jumprelu: straight-through estimator kernel width
    jumprelu_init_threshold: float = 0.5
    aux_k: int = 0  # topk/batchtopk: latents in the AuxK loss; 0 = d_in // 2 (Gao et al.)
    aux_coeff: float = 1 / 32  # topk/batchtopk: weight of the AuxK loss
    dead_after_tokens: int = 100_000  # a latent silent this many tokens counts as dead
    skip_connection: bool = False  # transcoders: add a linear skip path W_skip x
    # auto: zeros for relu, as SAELens's standard SAE starts (on the tiny store: FVE 0.597 at
    # L0 26.0, against 0.583 at 28.4 from the geometric median), the geometric median
    # otherwise (Gao et al. 2024) | geometric_median | mean | zeros
    b_dec_init: str = "auto"
    n_tokens: int = 2_000_000  # training tokens (passes over the store as needed)
    batch_size: int = 1024
    lr: float = 4e-4
    lr_warmup_steps: int = 50
    lr_decay_frac: float = 0.2  # linear decay to 0 over the last 20% (Anthropic, April 2024)
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("sae.kind", self.kind, ("relu", "topk", "batchtopk", "jumprelu"))
        _check_choice("sae.b_dec_init", self.b_dec_init,
                      ("auto", "geometric_median", "mean", "zeros"))
        _check_choice("sae.dtype", self.dtype, ("float32", "bfloat16"))
        for name in ("d_sae", "k", "n_tokens", "batch_size", "lr", "checkpoint_every"):
            _check_positive(f"sae.{name}", getattr(self, name))
        if not self.hook_in:
            raise ConfigError("sae.hook_in is empty; name the hook the SAE reads")

    @property
    def is_transcoder(self) -> bool:
        return bool(self.hook_out) and self.hook_out != self.hook_in


@dataclass(frozen=True)
class EvalConfig:
    """How SAEs are measured: on held-out (validation) tokens, spliced into the model."""

    n_tokens: int = 50_000  # validation tokens the metrics are measured on
    batch_size: int = 32  # sequences per forward pass
    dense_threshold: float = 0.1  # a latent firing on more than this share of tokens is dense
    ground_truth_stories: int = 300  # storyworld stories scored against their labels

    def __post_init__(self) -> None:
        for name in ("n_tokens", "batch_size", "ground_truth_stories"):
            _check_positive(f"eval.{name}", getattr(self, name))
        if not 0 < self.dense_threshold < 1:
            raise ConfigError(f"eval.dense_threshold must be in (0, 1), got {self.dense_threshold}")


@dataclass(frozen=True)
class SweepConfig:
    """A small sweep of the SAE's sparsity setting, for the Pareto plot of FVE against L0.

    `values` are k for topk/batchtopk, l1_coeff for relu and l0_coeff for jumprelu; every
    other setting is the `sae` stage's. All members share one pass over the activations.
    """

    values: tuple[float, ...] = (4, 8, 16, 32)
    n_tokens: int = 1_000_000  # training tokens per member

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("sweep.values is empty; give e.g. --set sweep.values=4,8,16")
        _check_positive("sweep.n_tokens", self.n_tokens)


@dataclass(frozen=True)
class TranscodersConfig:
    """A transcoder for every MLP of the LM: layer i's reads the MLP's input
    `blocks.{i}.ln2.hook_normalized` and predicts its output `blocks.{i}.hook_mlp_out`.

    All layers train together on one stream (`sae.transcoders`): each batch of windows
    runs through the LM once, nothing goes to disk, and every layer's transcoder steps on
    the same token rows. The per-layer settings are a `SAEConfig`'s (`sae_config`); those
    not named here keep SAEConfig's defaults. Then each is measured on `eval_tokens`
    validation tokens, alone and with every MLP replaced at once (`evaluate.replacement`).
    """

    layers: tuple[int, ...] = ()  # () = every layer of the model
    kind: str = "topk"  # relu | topk | batchtopk | jumprelu, as sae.kind
    d_sae: int = 1024
    k: int = 16  # topk / batchtopk: active latents per token
    l1_coeff: float = 5.0  # relu
    l0_coeff: float = 0.3  # jumprelu
    skip_connection: bool = False  # a linear skip path W_skip x beside the latents
    n_tokens: int = 1_000_000  # training tokens, each seen by every layer's transcoder
    batch_size: int = 1024  # token rows per step
    lr: float = 1e-3
    lr_warmup_steps: int = 50
    dead_after_tokens: int = 100_000  # a latent silent this many tokens counts as dead
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False
    checkpoint_every: int = 500
    lm_batch_size: int = 64  # sequences per LM forward (training stream and evaluation)
    eval_tokens: int = 50_000  # validation tokens the figures are measured on
    seed: int = 0
    # also train a cross-layer transcoder (`sae.crosslayer`, always TopK) of the same d_sae
    # and k per layer, its features writing their own and every later MLP's output, after
    # the per-layer ones on the same stream, into transcoders/crosslayer/
    cross_layer: bool = False
    # also an SAE on each layer's attention output `blocks.{i}.hook_attn_out` (TinyModel's
    # "A" dictionaries) of the same d_sae, k and kind, more members of the transcoders' sweep
    # on the same stream, into transcoders/attention/layer_{i}/
    attention_saes: bool = False

    def __post_init__(self) -> None:
        _check_choice("transcoders.kind", self.kind, ("relu", "topk", "batchtopk", "jumprelu"))
        _check_choice("transcoders.dtype", self.dtype, ("float32", "bfloat16"))
        for name in ("d_sae", "k", "n_tokens", "batch_size", "lr", "checkpoint_every",
                     "lm_batch_size", "eval_tokens", "dead_after_tokens"):
            _check_positive(f"transcoders.{name}", getattr(self, name))
        if self.kind in ("topk", "batchtopk") and self.k > self.d_sae:
            raise ConfigError(f"transcoders.k={self.k} is larger than transcoders.d_sae={self.d_sae}")
        if self.n_tokens < self.batch_size:
            raise ConfigError(f"transcoders.n_tokens={self.n_tokens} is less than one batch "
                              f"(transcoders.batch_size={self.batch_size})")
        if any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"transcoders.layers={self.layers} must be distinct layer indices "
                              f">= 0, e.g. --set transcoders.layers=0,1 (empty = every layer)")

    def sae_config(self, layer: int) -> SAEConfig:
        """Layer `layer`'s transcoder as the SAE trainer reads it."""
        return SAEConfig(
            kind=self.kind, hook_in=f"blocks.{layer}.ln2.hook_normalized",
            hook_out=f"blocks.{layer}.hook_mlp_out", d_sae=self.d_sae, k=self.k,
            l1_coeff=self.l1_coeff, l0_coeff=self.l0_coeff, skip_connection=self.skip_connection,
            n_tokens=self.n_tokens, batch_size=self.batch_size, lr=self.lr,
            lr_warmup_steps=self.lr_warmup_steps, dead_after_tokens=self.dead_after_tokens,
            dtype=self.dtype, compile=self.compile, checkpoint_every=self.checkpoint_every,
            seed=self.seed)


@dataclass(frozen=True)
class CircuitsConfig:
    """Attribution graphs through the transcoders stage's dictionaries, for prompts the
    course ships (`interpret.circuits`): the first `prompts` items of each capability in
    `capabilities`, from the run's task suites (storyworld's, or TinyStories' hand-written
    ones on real text), each graph explaining the answer's and the wrong answer's logits."""

    capabilities: tuple[str, ...] = ("repeated_names", "indirect_object")
    prompts: int = 1  # items per capability
    node_threshold: float = 0.8  # keep the nodes carrying this share of the logits' influence
    edge_threshold: float = 0.98  # ... and the edges carrying this share
    intervention_top: int = 20  # the most influential features ablated in the real model

    def __post_init__(self) -> None:
        if not self.capabilities:
            raise ConfigError("circuits.capabilities is empty; name a task suite, e.g. indirect_object")
        for name in ("node_threshold", "edge_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"circuits.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("prompts", "intervention_top"):
            _check_positive(f"circuits.{name}", getattr(self, name))


@dataclass(frozen=True)
class FeaturesConfig:
    """One pass over the validation split through the LM and the dictionary, keeping per
    latent its top contexts, contexts at activation quantiles, an activation histogram,
    its density and mean activation when active (`interpret.features`).

    Memory is O(d_sae x (top_k + reservoir)) whatever `n_tokens` is.
    """

    n_tokens: int = 1_000_000  # validation tokens scanned; 0 = the whole split
    top_k: int = 16  # top-activating contexts kept per latent
    context: int = 8  # tokens shown either side of an activating token
    quantile_samples: int = 4  # contexts per latent at evenly spaced activation quantiles
    reservoir: int = 64  # uniform sample of active contexts the quantile ones are chosen from
    hist_bins: int = 60  # bins of the non-zero activations (0.1 decade each over 1e-3..1e3; and of logit effects)
    top_logits: int = 10  # boosted and suppressed tokens kept per latent
    batch_size: int = 32  # n_ctx-token sequences per forward pass
    checkpoint_every: int = 50  # batches between checkpoints of the running state
    seed: int = 0  # the reservoir's random keys
    causal_contexts: int = 8  # top contexts per latent (at most top_k) re-run with the latent ablated
    neighbors: int = 5  # nearest latents by decoder cosine, per latent
    label_tokens: int = 200_000  # val tokens the auto-labels are built (half) and scored (half) on; 0 = all
    page_contexts: int = 8  # top contexts per latent (at most top_k) drawn in features/index.html

    def __post_init__(self) -> None:
        if self.n_tokens < 0:
            raise ConfigError(f"features.n_tokens must be >= 0 (0 = the whole split), got {self.n_tokens}")
        if self.context < 0:
            raise ConfigError(f"features.context must be >= 0, got {self.context}")
        for name in ("top_k", "quantile_samples", "reservoir", "hist_bins", "top_logits",
                     "batch_size", "checkpoint_every", "causal_contexts", "neighbors", "page_contexts"):
            _check_positive(f"features.{name}", getattr(self, name))
        if self.label_tokens < 0:
            raise ConfigError(f"features.label_tokens must be >= 0 (0 = the whole split), got {self.label_tokens}")
        if self.quantile_samples > self.reservoir:
            raise ConfigError(f"features.quantile_samples ({self.quantile_samples}) must be at most "
                              f"features.reservoir ({self.reservoir}), the contexts they are picked from")


@dataclass(frozen=True)
class CapabilitiesConfig:
    """The models the `capabilities` stage scores beside the run's own LM, side by side.

    `models`: each a run directory whose `tokenizer` and `lm` stages are built
    (`runs/small`), a local Hugging Face folder of a TinyStories (GPT-Neo) model, or a hub
    name or alias (`TinyStories-33M`: read from the local cache, else downloaded; offline
    it fails at once, saying how to fetch it). `local_models`: also every other run in the
    same runs folder whose LM is built, and every TinyStories model already in the local
    Hugging Face cache (found without the network; nothing is downloaded).
    """

    models: tuple[str, ...] = ()
    local_models: bool = True


@dataclass(frozen=True)
class CourseConfig:
    """The whole course: one frozen config per stage."""

    preset: str = "tiny"
    data: DataConfig = field(default_factory=lambda: DataConfig(max_stories=4000))
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    transcoders: TranscodersConfig = field(default_factory=TranscodersConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    circuits: CircuitsConfig = field(default_factory=CircuitsConfig)
    capabilities: CapabilitiesConfig = field(default_factory=CapabilitiesConfig)

    @property
    def resolved_model(self) -> ModelConfig:
        """The model config with `d_vocab` filled in from the tokenizer."""
        if self.model.d_vocab:
            return self.model
        return dataclasses.replace(self.model, d_vocab=self.tokenizer.d_vocab)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- presets -------------------------------------------------------------------------

PRESETS: dict[str, CourseConfig] = {
    # CPU, seconds to a few minutes, no network: 8,000 storyworld stories (~1.9M
    # tokens), a 1K-token BPE (storyworld's vocabulary is small), and a 2-layer model
    # small enough to train 1,000 steps of 16 x 128 tokens on a 2-core laptop CPU
    # (measured stage times: benchmarks/README.md). Tied embeddings, as in GPT-2 and the
    # TinyStories models: the unembedding then reads the same directions the embedding
    # writes, so a head that moves a token's embedding forward already raises that
    # token's logit, and copying names from earlier in the story is learned within this
    # budget (untied, the same budget copies far less; figures in issue 12's note). Many
    # small steps rather than fewer large ones: in-context copying is learned per step.
    "tiny": CourseConfig(
        preset="tiny",
        data=DataConfig(source="storyworld", max_stories=8000),
        tokenizer=TokenizerConfig(vocab_size=1024),
        # Layer 1's keys smeared and 4 of each batch's 16 windows a random sequence said
        # twice: together (and neither alone) they grow an induction head within the budget
        # (issue 12's table: benchmarks/README.md).
        model=ModelConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=128,
                          tied_embeddings=True, smeared_keys=(1,)),
        train=TrainConfig(batch_size=16, max_steps=1000, lr=3e-3, warmup_steps=30,
                          eval_every=250, checkpoint_every=250, repeat_share=0.25),
        # the middle of the residual stream for the SAE, and MLP 0's input and output for
        # a transcoder: 200K tokens x 3 hooks x 128 x fp16 = 154 MB on disk
        activations=ActivationsConfig(
            hooks=("blocks.1.hook_resid_pre", "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"),
            n_tokens=200_000),
        # 8x expansion, k=16, ten passes over the store
        sae=SAEConfig(kind="topk", hook_in="blocks.1.hook_resid_pre", d_sae=1024, k=16,
                      n_tokens=2_000_000, batch_size=1024, lr=1e-3),
        # four k values sharing one pass of 400K tokens
        sweep=SweepConfig(values=(4, 8, 16, 32), n_tokens=400_000),
        # both MLPs, 4x their input width, k=16, one pass of 800K streamed tokens
        transcoders=TranscodersConfig(d_sae=512, k=16, n_tokens=800_000, batch_size=1024,
                                      lr=1e-3),
        # the whole validation split (~35K tokens)
        features=FeaturesConfig(n_tokens=0, label_tokens=0),
    ),
    # Real TinyStories on a laptop (tens of minutes): the first 100K stories of the hub
    # dataset or of a local file (`--data PATH`), a 4K BPE, a 4-layer 256-wide model
    # (~5M parameters incl. embeddings) trained on ~16M tokens.
    "small": CourseConfig(
        preset="small",
        data=DataConfig(source="tinystories", max_stories=100_000),
        tokenizer=TokenizerConfig(vocab_size=4096, train_stories=50_000),
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, n_ctx=256),
        train=TrainConfig(batch_size=32, max_steps=2000, lr=1e-3, warmup_steps=100,
                          eval_every=250, checkpoint_every=250),
        # 1M tokens x 3 hooks x 256 x fp16 = 1.5 GB on disk
        activations=ActivationsConfig(
            hooks=("blocks.2.hook_resid_pre", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"),
            n_tokens=1_000_000),
        sae=SAEConfig(kind="topk", hook_in="blocks.2.hook_resid_pre", d_sae=2048, k=32,
                      n_tokens=20_000_000, batch_size=2048, lr=5e-4),
        sweep=SweepConfig(values=(8, 16, 32, 64), n_tokens=5_000_000),
        transcoders=TranscodersConfig(d_sae=2048, k=32, n_tokens=10_000_000, batch_size=2048,
                                      lr=5e-4),
        features=FeaturesConfig(n_tokens=1_000_000),
    ),
    # One 24 GB GPU: the full TinyStories train set (~2.1M stories, ~470M tokens) and a
    # TinyModel-sized network (4 layers, d_model 768, 16 heads, n_ctx 256, ~10K vocab).
    # 128 x 256 tokens a step for 15K steps is ~490M tokens, about one epoch.
    "replication": CourseConfig(
        preset="replication",
        data=DataConfig(source="tinystories", max_stories=0, val_fraction=0.01),
        tokenizer=TokenizerConfig(vocab_size=10_000, train_stories=200_000),
        shards=ShardsConfig(encode_batch_stories=4096),
        model=ModelConfig(n_layers=4, d_model=768, n_heads=16, d_head=48, d_mlp=3072,
                          n_ctx=256, act="gelu"),
        train=TrainConfig(batch_size=128, max_steps=15_000, lr=6e-4, warmup_steps=500,
                          eval_every=500, checkpoint_every=1000, dtype="auto", compile=True),
        # 200M tokens of 768-wide fp16 residuals would be 300 GB: stream them through the LM
        # instead (the budget replication stored 50 GB of fp32 and trained for hours)
        activations=ActivationsConfig(
            hooks=("blocks.2.hook_resid_pre",), n_tokens=10_000_000, batch_size=256,
            storage="stream"),
        # the budget replication's 16K-latent ReLU SAE, on Anthropic's April 2024 recipe
        sae=SAEConfig(kind="relu", hook_in="blocks.2.hook_resid_pre", d_sae=16_384,
                      l1_coeff=5.0, n_tokens=200_000_000, batch_size=4096, lr=5e-5,
                      dtype="bfloat16", compile=True, checkpoint_every=5000),
        sweep=SweepConfig(values=(1.0, 2.0, 5.0, 10.0), n_tokens=50_000_000),
        # TinyModel's transcoders: 16K latents on each of the 4 MLPs, all from one stream
        transcoders=TranscodersConfig(d_sae=16_384, k=32, n_tokens=100_000_000, batch_size=4096,
                                      lr=2e-4, dtype="bfloat16", compile=True,
                                      checkpoint_every=2000, lm_batch_size=256),
        # the running state is ~20 MB (16K latents x 80 kept contexts); a batch's latents,
        # 16 x 256 tokens x 16K latents, are ~270 MB of float32 per temporary
        features=FeaturesConfig(n_tokens=10_000_000, batch_size=16, checkpoint_every=200),
    ),
}


def preset(name: str) -> CourseConfig:
    """The named preset; an unknown name is an error naming the closest one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.{hint}")
    return PRESETS[name]


# --- overrides: `--set stage.field=value` ---------------------------------------------

def _parse_value(text: str, annotation: object, where: str) -> object:
    """Parse `text` as a value of the (string) dataclass annotation `annotation`."""
    if str(annotation) in ("tuple[str, ...]", "tuple[float, ...]", "tuple[int, ...]"):
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if str(annotation) == "tuple[str, ...]":
            return tuple(parts)
        kind = int if str(annotation) == "tuple[int, ...]" else float
        try:
            return tuple(kind(part) for part in parts)
        except ValueError:
            raise ConfigError(f"{where} expects comma-separated {kind.__name__}s, got {text!r}") from None
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(str(annotation))
    if kind is None:
        raise ConfigError(f"{where} has type {annotation} which --set cannot parse")
    if kind is str:
        return text
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} expects a bool (true/false), got {text!r}")
    try:
        if kind is int:
            return int(text.replace("_", ""))
        return float(text)
    except ValueError:
        raise ConfigError(f"{where} expects {kind.__name__}, got {text!r}") from None


def _closest(name: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Valid: {', '.join(choices)}."


def apply_overrides(cfg: CourseConfig, assignments: typing.Iterable[str]) -> CourseConfig:
    """Apply `stage.field=value` strings to `cfg`, returning a new config.

    >>> apply_overrides(preset("tiny"), ["model.n_layers=1"]).model.n_layers
    1
    """
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected stage.field=value")
        path, text = assignment.split("=", 1)
        if path.count(".") != 1:
            raise ConfigError(f"--set {assignment!r}: expected stage.field=value, e.g. model.n_layers=2")
        stage, name = path.split(".")
        stages = {f.name: f for f in dataclasses.fields(cfg) if f.name != "preset"}
        if stage not in stages:
            raise ConfigError(f"--set {path}: unknown stage {stage!r}.{_closest(stage, stages)}")
        sub = getattr(cfg, stage)
        sub_fields = {f.name: f for f in dataclasses.fields(sub)}
        full = [f"{stage}.{n}" for n in sub_fields]
        if name not in sub_fields:
            raise ConfigError(f"--set {path}: unknown field.{_closest(path, full)}")
        value = _parse_value(text, sub_fields[name].type, path)
        cfg = dataclasses.replace(cfg, **{stage: dataclasses.replace(sub, **{name: value})})
    return cfg


def config_hash(obj: object) -> str:
    """A short stable hash of a config (dataclass or plain JSON data)."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def from_dict(data: dict) -> CourseConfig:
    """Rebuild a `CourseConfig` from `to_dict()` output (e.g. a manifest)."""
    kinds = {f.name: f.type for f in dataclasses.fields(CourseConfig)}
    classes = {"data": DataConfig, "tokenizer": TokenizerConfig, "shards": ShardsConfig,
               "model": ModelConfig, "train": TrainConfig, "activations": ActivationsConfig,
               "sae": SAEConfig, "sweep": SweepConfig, "eval": EvalConfig,
               "transcoders": TranscodersConfig, "features": FeaturesConfig, "circuits": CircuitsConfig,
               "capabilities": CapabilitiesConfig}
    parts = {}
    for key, value in data.items():
        if key in classes:
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            value = classes[key](**value)
        if key in kinds:
            parts[key] = value
    return CourseConfig(**parts)


__all__ = [
    "ConfigError", "DataConfig", "TokenizerConfig", "ShardsConfig", "ModelConfig",
    "TrainConfig", "ActivationsConfig", "SAEConfig", "SweepConfig", "EvalConfig", "TranscodersConfig", "FeaturesConfig", "CircuitsConfig", "CapabilitiesConfig", "CourseConfig", "PRESETS", "preset", "apply_overrides", "config_hash",
    "from_dict",
]
