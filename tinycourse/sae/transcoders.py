"""A transcoder for every MLP of the LM, all trained from one stream of the LM's activations.

Layer i's transcoder reads the MLP's input `blocks.{i}.ln2.hook_normalized` and predicts
its output `blocks.{i}.hook_mlp_out` (the `sae` stage's transcoder option, once per
layer). Training them one layer at a time would run the LM once per layer over the same
tokens; here `MultiHookStream` runs it once per batch of windows, capturing every
layer's input and output, and every layer's transcoder steps on the same token rows (the
SAE trainer's multi-hook sources, `sae.train`). Nothing is written to disk but the
dictionaries:

    out_dir/checkpoint.pt          every layer's weights, optimizer and dead counters, the
                                   step and RNG states (the trainer's; a rerun resumes)
    out_dir/layer_{i}/             an SAE folder per layer: sae.safetensors + cfg.json
                                   (`load_sae`), metrics.jsonl, summary.json
    out_dir/training.json          written last: layers, hooks, scales, each layer's summary
    out_dir/attention/layer_{i}/   with `attention_saes`: an SAE on layer i's attention
                                   output `blocks.{i}.hook_attn_out` (TinyModel's "A"
                                   dictionaries), more members of the same sweep, so the
                                   same forward feeds them and they step on the same rows

Each layer's transcoder (and attention SAE) ends exactly as training it alone on the same
stream would (`train_sae` on a `StreamingSource` of its hooks, with the same scales): the
other members share its batches, nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_write_json
from ..config import ActivationsConfig, ConfigError, SAEConfig, TranscodersConfig
from ..corpus.shards import Shards
from ..lm.model import model_device
from ..training import CHECKPOINT
from .activations import (
    BUFFER_TOKENS,
    StreamingSource,
    _gather,
    _rng,
    norm_scale_of,
    run_hooks,
)
from .model import SparseAutoencoder, load_sae
from .train import train_sweep

TRAINING_FILE = "training.json"
ATTENTION = "attention"  # the attention-output SAEs' folder inside the transcoders'


def mlp_hooks(layer: int) -> tuple[str, str]:
    """(hook_in, hook_out) of layer `layer`'s MLP transcoder."""
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def attention_hook(layer: int) -> str:
    """The attention output of layer `layer`, what its "A" SAE reads and reconstructs."""
    return f"blocks.{layer}.hook_attn_out"


def attention_config(cfg: TranscodersConfig, layer: int) -> SAEConfig:
    """Layer `layer`'s attention-output SAE as the trainer reads it: the transcoder's
    settings (kind, d_sae, k, schedule, seed), reading and reconstructing hook_attn_out,
    without a skip path (an SAE's would learn the identity)."""
    return dataclasses.replace(cfg.sae_config(layer), hook_in=attention_hook(layer), hook_out="",
                               skip_connection=False)


def layer_folder(out_dir: str | os.PathLike, layer: int) -> Path:
    return Path(out_dir) / f"layer_{layer}"


def resolve_layers(cfg: TranscodersConfig, n_layers: int) -> list[int]:
    """The layers to train, in order: `cfg.layers`, or all of the model's when empty.
    A layer the model does not have is a one-line ConfigError."""
    layers = list(cfg.layers) or list(range(n_layers))
    missing = [layer for layer in layers if layer >= n_layers]
    if missing:
        raise ConfigError(f"transcoders.layers names layer {missing[0]} but the model has "
                          f"{n_layers} layers (0..{n_layers - 1}): pick from those, or "
                          f"--set transcoders.layers= for all of them")
    return sorted(layers)


def stream_config(cfg: TranscodersConfig) -> ActivationsConfig:
    """The activations the stream reads: training-split windows, start positions dropped
    (their norms are outliers, as the activation store leaves them out by default), in LM
    forwards of `cfg.lm_batch_size` sequences."""
    # `hooks` is unused (the stream is given its own) but may not be empty
    return ActivationsConfig(hooks=mlp_hooks(0), split="train", exclude_start=True,
                             batch_size=cfg.lm_batch_size, storage="stream", seed=cfg.seed)


class MultiHookStream(StreamingSource):
    """`StreamingSource` for several hooks at once: each buffer of windows runs through the
    LM once (`cfg.batch_size` windows a forward, up to the last hook asked for), and
    batches are {hook: float32 (B, width)}, row r of every hook being the same token.

    The mixing is `StreamingSource`'s with the hooks side by side in one buffer, so the
    rows of hook h are exactly those a `StreamingSource` of h alone hands out (with the
    same seed and buffer_tokens). `widths` {hook: width}; `scale(hook)` as
    `StreamingSource.scale`, measured for every hook in one pass on first use.
    """

    def __init__(self, model, shards: Shards, cfg: ActivationsConfig, hooks: Sequence[str],
                 device: str | torch.device | None = None, *, seed: int | None = None,
                 buffer_tokens: int = BUFFER_TOKENS, scale_tokens: int = 2**15):
        hooks = list(dict.fromkeys(hooks))
        if not hooks:
            raise ValueError("MultiHookStream needs at least one hook")
        model.hook_names(hooks)  # a KeyError naming the closest hooks if one is unknown
        self.hooks = tuple(hooks)  # before the base class probes the model with `_hooks`
        super().__init__(model, shards, cfg, hooks[0], None, device, seed=seed,
                         buffer_tokens=buffer_tokens, scale_tokens=scale_tokens)
        probe, _ = run_hooks(model, _gather(self.tokens, np.zeros(1, np.int64), self.n_ctx),
                             self.hooks, None, self.device)
        self.widths = {hook: int(probe[hook].shape[1]) for hook in self.hooks}
        self._columns = dict(zip(self.hooks, np.cumsum([0, *self.widths.values()])[:-1].tolist()))

    @property
    def _hooks(self) -> list[str]:
        return list(self.hooks)

    def _fill(self, windows: np.ndarray) -> tuple[np.ndarray, None]:
        # every hook side by side: the base class's shuffling then moves whole token rows
        acts = self._activations(windows, self.hooks)
        return np.concatenate([acts[hook] for hook in self.hooks], axis=1), None

    def batches(self, batch_size: int, seed: int, start_batch: int = 0):
        """Endless {hook: float32 (batch_size, width)} batches; from `start_batch` on they
        equal the tail of the sequence from 0 (see `StreamingSource.batches`)."""
        for packed, _ in super().batches(batch_size, seed, start_batch):
            yield {hook: packed[:, a : a + self.widths[hook]].contiguous()
                   for hook, a in self._columns.items()}

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """{hook: (n, width)} float32 rows from windows in an order fixed by `seed`."""
        return {hook: torch.from_numpy(x) for hook, x in self._first_rows_all(n).items()}

    def _first_rows_all(self, n: int) -> dict[str, np.ndarray]:
        """`StreamingSource._first_rows` for every hook, from one pass."""
        if n > self.rows_per_pass:
            raise ValueError(f"asked for {n:,} rows but the split has {self.rows_per_pass:,}")
        order = _rng("sample", self.seed).permutation(len(self.counts))
        needed = int(np.searchsorted(np.cumsum(self.counts[order]), n)) + 1
        return {hook: x[:n] for hook, x in self._activations(order[:needed], self.hooks).items()}

    def scale(self, hook: str) -> float:
        """c with mean ||c x||^2 = width, on `scale_tokens` rows (the rows
        `StreamingSource.scale` reads); every hook's from one pass."""
        if hook not in self.widths:
            raise KeyError(f"{hook!r} is not streamed; the hooks are {', '.join(self.hooks)}")
        if not self._scales:
            rows = self._first_rows_all(min(self.scale_tokens, self.rows_per_pass))
            self._scales.update({h: norm_scale_of(x) for h, x in rows.items()})
        return self._scales[hook]


def train_transcoders(cfg: TranscodersConfig, model, shards: Shards, out_dir: str | os.PathLike,
                      *, device: str | torch.device | None = None, progress: bool = True,
                      buffer_tokens: int | None = None, stop_after: int | None = None) -> dict:
    """Train a transcoder for each of `cfg.layers` (default every layer) of `model` on
    one stream of training-split windows, into out_dir/layer_{i}; return what
    training.json holds: {"layers", "hooks" {layer: [hook_in, hook_out]}, "scales"
    {layer: [input_scale, output_scale]}, "buffer_tokens", "members" {layer: the
    trainer's summary}, "finished"}, and with `cfg.attention_saes` "attention": {"hooks"
    {layer: hook}, "scales" {layer: scale}, "members" {layer: summary}} for the SAEs on
    each layer's attention output in out_dir/attention/layer_{i}, members of the same
    sweep (first, so the checkpoint's record of each transcoder stays whole).

    Each input and target is scaled to mean squared norm = width (its own constant per
    hook, as the `sae` stage does), so one learning rate suits every layer. Resumes from
    out_dir/checkpoint.pt; `stop_after=n` ends after step n as a kill would (tests).
    `buffer_tokens`: mixing-buffer rows (default: a two-hook stream's memory,
    BUFFER_TOKENS * 2 / number of MLP hooks, at least one window: the transcoders' batches
    are the same with or without the attention SAEs, whose hooks add half as much again).
    """
    out_dir = Path(out_dir)
    device = model_device(model, device)
    layers = resolve_layers(cfg, model.cfg.n_layers)
    hooks = [hook for layer in layers for hook in mlp_hooks(layer)]
    if buffer_tokens is None:
        buffer_tokens = max(model.cfg.n_ctx, BUFFER_TOKENS * 2 // len(hooks))
    attention = [attention_config(cfg, layer) for layer in layers] if cfg.attention_saes else []
    _check_checkpoint(out_dir, bool(attention))
    source = MultiHookStream(model, shards, stream_config(cfg), hooks + [c.hook_in for c in attention],
                             device, buffer_tokens=buffer_tokens)
    cfgs = [cfg.sae_config(layer) for layer in layers]
    in_scales = [source.scale(c.hook_in) for c in cfgs]
    out_scales = [source.scale(c.hook_out) for c in cfgs]
    attn_scales = [source.scale(c.hook_in) for c in attention]
    # the attention SAEs first: the trainer records each member's config under its folder's
    # name, layer_{i} for both, and the later one is kept (the transcoder, whose config the
    # attention SAE's follows from)
    names = [f"{ATTENTION}/{layer_folder(out_dir, l).name}" for l in layers] if attention else []
    summaries = train_sweep(attention + cfgs, source, out_dir,
                            names=names + [layer_folder(out_dir, l).name for l in layers],
                            device=device, progress=progress, input_scale=attn_scales + in_scales,
                            output_scale=[None] * len(attention) + out_scales, stop_after=stop_after,
                            desc=f"transcoders x{len(layers)}" + (f" + attention x{len(layers)}" if attention else ""))
    attn_summaries, summaries = summaries[:len(attention)], summaries[len(attention):]
    result = {"layers": layers,
              "hooks": {str(l): list(mlp_hooks(l)) for l in layers},
              "scales": {str(l): [a, b] for l, a, b in zip(layers, in_scales, out_scales)},
              "buffer_tokens": buffer_tokens,
              "members": {str(l): s for l, s in zip(layers, summaries)},
              "finished": all(s["finished"] for s in summaries + attn_summaries)}
    if attention:
        result["attention"] = {"hooks": {str(l): attention_hook(l) for l in layers},
                               "scales": {str(l): s for l, s in zip(layers, attn_scales)},
                               "members": {str(l): s for l, s in zip(layers, attn_summaries)}}
    if result["finished"]:
        atomic_write_json(out_dir / TRAINING_FILE, result)
    return result


def _check_checkpoint(out_dir: Path, attention: bool) -> None:
    """A checkpoint in out_dir written with the attention SAEs, resumed without them (or
    the reverse): a one-line ConfigError before anything is computed (the trainer would
    refuse it too, listing every member). Their members are named attention/layer_{i}."""
    path = out_dir / CHECKPOINT
    if not path.exists():
        return
    names = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config", {}).get("names", [])
    had = any(name.startswith(f"{ATTENTION}/") for name in names)
    if had != attention:
        raise ConfigError(f"{path} was written {'with' if had else 'without'} the attention-output SAEs: "
                          f"resume with --set transcoders.attention_saes={str(had).lower()}, or start over "
                          f"in a new out_dir (or delete the checkpoint)")


def load_transcoders(out_dir: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> dict[int, SparseAutoencoder]:
    """{layer: its transcoder} from the layer_{i} folders `train_transcoders` wrote."""
    found = sorted(Path(out_dir).glob("layer_*/cfg.json"), key=lambda p: int(p.parent.name[6:]))
    if not found:
        raise FileNotFoundError(f"no layer_*/ transcoder folders in {out_dir}: train them "
                                f"first (tinycourse run --stages transcoders)")
    return {int(p.parent.name[6:]): load_sae(p.parent, device=device) for p in found}


def load_attention_saes(out_dir: str | os.PathLike, device: str | torch.device = "cpu"
                        ) -> dict[int, SparseAutoencoder]:
    """{layer: its attention-output SAE} from out_dir/attention/layer_{i} (`train_transcoders`
    with `attention_saes`); out_dir the transcoders' folder."""
    folder = Path(out_dir) / ATTENTION
    if not any(folder.glob("layer_*/cfg.json")):
        raise FileNotFoundError(f"no attention-output SAEs in {folder}: train them with the "
                                f"transcoders (tinycourse run --stages transcoders --set "
                                f"transcoders.attention_saes=true)")
    return load_transcoders(folder, device)


__all__ = [
    "ATTENTION",
    "MultiHookStream",
    "attention_config",
    "attention_hook",
    "layer_folder",
    "load_attention_saes",
    "load_transcoders",
    "mlp_hooks",
    "resolve_layers",
    "train_transcoders",
]
