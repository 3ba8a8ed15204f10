"""A cross-layer transcoder (CLT): features read at one MLP's input and write to that MLP's
output and every later one's, all layers trained jointly.

With n layers (positions 0..n-1 of `layers`, usually every layer of the LM):

    pre_i   = x_i @ W_enc[i] + b_enc[i]                x_i layer i's MLP input (tokens, d_in)
    f_i     = TopK(pre_i)                              each token keeps its k largest, ReLU'd
    y_hat_j = sum_{i <= j} f_i @ W_dec[i -> j] + b_dec[j]    layer j's MLP output (tokens, d_out)

A per-layer transcoder (`sae.transcoders`) is the special case with only the diagonal
decoders i -> i. The CLT's extra decoders let one feature stand for the same computation
spread over several MLPs (Ameisen et al. 2025, "Circuit tracing"; circuit-tracer's CLTs),
so its attribution graphs need fewer nodes for it.

Layout: W_enc (n, d_in, d_sae), b_enc (n, d_sae), W_dec a list of n tensors, W_dec[i]
(n - i, d_sae, d_out) with W_dec[i][j - i] the decoder i -> j, b_dec (n, d_out); buffers
input_scale and output_scale (n,), one constant per layer, as the per-layer transcoders
have them. Training, the module sees x_i * input_scale[i] and predicts y_j *
output_scale[j] (each scaled to mean squared norm = width by `norm_scale_of`, the same
constants the per-layer transcoders use); `save_crosslayer` folds them into the weights
(`fold_scale`), so a loaded CLT maps raw activations to raw activations.

Files (`train_crosslayer`, nothing on disk but these; the folder loads with
`load_crosslayer`, which needs only this module's top half, not the trainer):

    out_dir/checkpoint.pt            weights, optimizer, dead counters, step, RNG states
    out_dir/metrics.jsonl            one line per step: loss, and per layer mse, fve, l0,
                                     dead_fraction (lists in layer order), lr
    out_dir/crosslayer.safetensors   the folded weights
    out_dir/cfg.json                 written after the weights: config, layers, hooks,
                                     widths, the folded scales, training tokens, config hash
    out_dir/summary.json             written last: per layer mse, fve, l0 on fresh batches,
                                     dead latents
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import ConfigError, TranscodersConfig, config_hash

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "crosslayer.safetensors", "cfg.json"
FOLDER = "crosslayer"  # the CLT's folder inside the transcoders stage's
# what a CLT's weights depend on of its TranscodersConfig; a checkpoint resumes only under the same
TRAINING_FIELDS = ("d_sae", "k", "n_tokens", "batch_size", "lr", "lr_warmup_steps", "dead_after_tokens",
                   "checkpoint_every", "lm_batch_size", "seed")


class CLTOutput(NamedTuple):
    reconstructions: list[Tensor]  # per layer (tokens, d_out)
    latents: list[Tensor]  # per layer (tokens, d_sae), non-negative, k non-zero per token
    pre: list[Tensor]  # per layer (tokens, d_sae)


def _hooks(layer: int) -> tuple[str, str]:
    # `transcoders.mlp_hooks`, spelled out: that module imports the trainer
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


class CrossLayerTranscoder(nn.Module):
    """A TopK cross-layer transcoder over `layers` of an LM (module docstring).

    `cfg` gives d_sae and k (whatever cfg.kind says: a CLT is always TopK); d_in and
    d_out are the MLP's input and output widths (d_model)."""

    def __init__(self, cfg: TranscodersConfig, layers: Sequence[int], d_in: int,
                 d_out: int | None = None):
        super().__init__()
        layers = tuple(int(layer) for layer in layers)
        if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
            raise ConfigError(f"a cross-layer transcoder needs distinct increasing layers >= 0, got {layers}")
        if cfg.k > cfg.d_sae:
            raise ConfigError(f"transcoders.k={cfg.k} is larger than transcoders.d_sae={cfg.d_sae}")
        d_out = d_in if d_out is None else d_out
        n = len(layers)
        self.cfg, self.layers, self.n_layers = cfg, layers, n
        self.d_in, self.d_out, self.d_sae, self.k = d_in, d_out, cfg.d_sae, cfg.k
        self.hooks = [_hooks(layer) for layer in layers]
        self.W_enc = nn.Parameter(torch.empty(n, d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(n, cfg.d_sae))
        self.W_dec = nn.ParameterList([nn.Parameter(torch.empty(n - i, cfg.d_sae, d_out)) for i in range(n)])
        self.b_dec = nn.Parameter(torch.zeros(n, d_out))
        self.register_buffer("input_scale", torch.ones(n))
        self.register_buffer("output_scale", torch.ones(n))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Encoder columns random unit directions (as a per-layer transcoder's); each
        feature's decoders, all its target layers together, a random unit vector (the
        norm the trainer keeps, `normalize_decoder`). Biases 0."""
        self.W_enc.copy_(F.normalize(torch.randn_like(self.W_enc), dim=1))
        for W in self.W_dec:
            W.copy_(torch.randn_like(W))
        self.normalize_decoder()

    def decoder(self, source: int, target: int) -> Tensor:
        """W_dec[source -> target] (d_sae, d_out); positions in `layers`, source <= target."""
        if not 0 <= source <= target < self.n_layers:
            raise ValueError(f"no decoder {source} -> {target}: a CLT over {self.n_layers} layers writes "
                             f"from layer i to layers i..{self.n_layers - 1}")
        return self.W_dec[source][target - source]

    def _check(self, values: Sequence[Tensor], width: int, what: str) -> None:
        if len(values) != self.n_layers:
            raise ValueError(f"{len(values)} {what} for a CLT over {self.n_layers} layers {self.layers}: "
                             f"pass one per layer")
        bad = [tuple(v.shape) for v in values if v.shape[-1] != width]
        if bad:
            raise ValueError(f"{what} of shape {bad[0]}, the CLT needs (..., {width}): was it trained on another model?")

    # --- the readable forward -----------------------------------------------------------

    def layer_pre_activations(self, layer: int, x: Tensor) -> Tensor:
        """Layer `layer`'s pre-activations: x (..., d_in) -> (..., d_sae)"""
        return x @ self.W_enc[layer] + self.b_enc[layer]

    def activate(self, pre: Tensor) -> Tensor:
        """TopK per token, ReLU'd (`sae.model.topk_relu`): (..., d_sae) -> (..., d_sae)"""
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return pre.new_zeros(pre.shape).scatter_(-1, indices, F.relu(values))

    def encode(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """Per layer its MLP input (tokens, d_in) -> per layer features (tokens, d_sae)"""
        self._check(xs, self.d_in, "inputs")
        return [self.activate(self.layer_pre_activations(i, x)) for i, x in enumerate(xs)]

    def decode_layer(self, target: int, features: Sequence[Tensor]) -> Tensor:
        """Layer `target`'s output from the features of layers 0..target (features[i]
        (..., d_sae); later entries are not read) -> (..., d_out)"""
        out = self.b_dec[target]
        for source in range(target + 1):
            out = out + features[source] @ self.decoder(source, target)
        return out

    def decode(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Per layer features (tokens, d_sae) -> per layer MLP outputs (tokens, d_out)"""
        self._check(features, self.d_sae, "feature sets")
        return [self.decode_layer(j, features) for j in range(self.n_layers)]

    def forward(self, xs: Sequence[Tensor]) -> CLTOutput:
        """Per layer x (tokens, d_in) -> CLTOutput(reconstructions, latents, pre), lists by layer."""
        self._check(xs, self.d_in, "inputs")
        pre = [self.layer_pre_activations(i, x) for i, x in enumerate(xs)]
        latents = [self.activate(p) for p in pre]
        return CLTOutput(self.decode(latents), latents, pre)

    # --- training-time maintenance ------------------------------------------------------

    def decoder_norms(self) -> Tensor:
        """Each feature's decoders to all its target layers as one vector: its norm (n, d_sae)."""
        return torch.stack([W.pow(2).sum((0, 2)).sqrt() for W in self.W_dec])

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each feature's decoder gradient along its decoders (all target
        layers together): it would only change the norm `normalize_decoder` undoes."""
        for W in self.W_dec:
            if W.grad is not None:
                along = (W.grad * W).sum((0, 2), keepdim=True) / (W * W).sum((0, 2), keepdim=True)
                W.grad.sub_(along * W)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Each feature's decoders, concatenated over its target layers, to unit norm: TopK
        has no penalty to dodge, but feature sizes would otherwise mean nothing."""
        for W in self.W_dec:
            W.div_(W.pow(2).sum((0, 2), keepdim=True).sqrt())

    @torch.no_grad()
    def fold_scale(self) -> None:
        """Rewrite the weights to map raw x to raw y, as they mapped x * input_scale to
        y * output_scale; then both scales are 1. Layer i's features come out divided by
        output_scale[i] (TopK picks the same ones), so its own decoder i -> i stays as it
        is, like a folded per-layer transcoder's:

            W_enc[i] *= s_in[i] / s_out[i]    b_enc[i] /= s_out[i]
            W_dec[i -> j] *= s_out[i] / s_out[j]    b_dec[j] /= s_out[j]
        """
        s_in, s_out = self.input_scale.clone(), self.output_scale.clone()
        self.W_enc.mul_((s_in / s_out)[:, None, None])
        self.b_enc.div_(s_out[:, None])
        for i, W in enumerate(self.W_dec):
            W.mul_((s_out[i] / s_out[i:])[:, None, None])
        self.b_dec.div_(s_out[:, None])
        self.input_scale.fill_(1.0)
        self.output_scale.fill_(1.0)


# --- save and load -------------------------------------------------------------------------

def save_crosslayer(clt: CrossLayerTranscoder, folder: str | os.PathLike, *,
                    training_tokens: int | None = None) -> Path:
    """Write folder/crosslayer.safetensors and folder/cfg.json (after the weights), scales
    folded, so `load_crosslayer(folder)` maps raw activations. `clt` is not modified."""
    folder = Path(folder)
    folded = copy.deepcopy(clt).cpu().float()
    scales = {"input_scale": clt.input_scale.tolist(), "output_scale": clt.output_scale.tolist()}
    folded.fold_scale()
    tensors = {name: t.detach().contiguous() for name, t in folded.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save(tensors))
    atomic_write_json(folder / CONFIG, {
        "format_version": FORMAT_VERSION,
        "kind": "crosslayer",
        "activation": "topk",
        "k": clt.k,
        "d_in": clt.d_in,
        "d_out": clt.d_out,
        "d_sae": clt.d_sae,
        "layers": list(clt.layers),
        "hooks": [list(pair) for pair in clt.hooks],
        "folded_scales": scales,
        "training_tokens": training_tokens,
        "config_hash": config_hash(clt.cfg),
        "transcoders_config": dataclasses.asdict(clt.cfg),
    })
    return folder


def load_crosslayer(path: str | os.PathLike, device: str | torch.device = "cpu") -> CrossLayerTranscoder:
    """What `save_crosslayer` wrote (`path` the folder or a file in it), in eval mode."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"no {CONFIG} in {folder}: train a cross-layer transcoder first "
                                f"(tinycourse run --stages transcoders --set transcoders.cross_layer=true)")
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("kind") != "crosslayer" or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG} is a {meta.get('kind')!r} of format_version "
                         f"{meta.get('format_version')}; this reads crosslayer version {FORMAT_VERSION}")
    known = {f.name for f in dataclasses.fields(TranscodersConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["transcoders_config"].items() if k in known}
    clt = CrossLayerTranscoder(TranscodersConfig(**fields), meta["layers"], meta["d_in"], meta["d_out"])
    clt.load_state_dict(load_file(folder / WEIGHTS))
    return clt.to(device).eval()


# --- training --------------------------------------------------------------------------------

def train_crosslayer(cfg: TranscodersConfig, model, shards, out_dir: str | os.PathLike, *,
                     device: str | torch.device | None = None, progress: bool = True,
                     buffer_tokens: int | None = None, stop_after: int | None = None) -> dict:
    """Train a CLT over `cfg.layers` (default every layer) of `model` on one stream of
    training-split windows (`MultiHookStream`: one LM forward per batch for all layers),
    into out_dir; return what summary.json holds.

    The per-layer transcoders' recipe where it applies: inputs and targets scaled to mean
    squared norm = width, b_dec from each target's geometric median, Adam (betas 0.9,
    0.999), the same learning-rate schedule (`sae.train.lr_at`), gradient norm clipped
    at 1, unit-norm decoders (per feature, over all its targets). The loss is the sum over
    layers of each layer's MSE in those scaled units (squared error summed over
    dimensions, averaged over tokens), so every layer counts alike. No AuxK; float32 and
    eager (transcoders.dtype and compile are the per-layer trainer's). Resumes from
    out_dir/checkpoint.pt; `stop_after=n` ends after step n as a kill would (tests).
    `buffer_tokens` as `train_transcoders`'s (the same default, so the same batches)."""
    # the trainer's imports here: loading a CLT never needs them
    from ..lm.model import model_device
    from ..training import METRICS, SUMMARY, TrainingDiverged, TrainingLoop
    from .activations import BUFFER_TOKENS
    from .model import geometric_median
    from .train import ADAM_BETAS, EVAL_BATCHES, GRAD_CLIP, INIT_SAMPLES, lr_at
    from .transcoders import MultiHookStream, resolve_layers, stream_config

    out_dir = Path(out_dir)
    device = model_device(model, device)
    layers = resolve_layers(cfg, model.cfg.n_layers)  # a one-line ConfigError, nothing written
    hooks = [hook for layer in layers for hook in _hooks(layer)]
    if buffer_tokens is None:
        buffer_tokens = max(model.cfg.n_ctx, BUFFER_TOKENS * 2 // len(hooks))
    source = MultiHookStream(model, shards, stream_config(cfg), hooks, device, buffer_tokens=buffer_tokens)
    pairs = [_hooks(layer) for layer in layers]
    in_scales = [source.scale(h_in) for h_in, _ in pairs]
    out_scales = [source.scale(h_out) for _, h_out in pairs]
    schedule = cfg.sae_config(layers[0])  # lr, warm-up, decay, n_tokens, batch_size: as each transcoder's
    total, batch_size = cfg.n_tokens // cfg.batch_size, cfg.batch_size
    d_in, d_out = source.widths[pairs[0][0]], source.widths[pairs[0][1]]

    torch.manual_seed(cfg.seed)  # the same initial weights on every run
    clt = CrossLayerTranscoder(cfg, layers, d_in, d_out).to(device)
    clt.input_scale.copy_(torch.tensor(in_scales))
    clt.output_scale.copy_(torch.tensor(out_scales))
    optimizer = torch.optim.Adam(clt.parameters(), lr=cfg.lr, betas=ADAM_BETAS)
    since_fired = torch.zeros(len(layers), cfg.d_sae, dtype=torch.long, device=device)
    fingerprint = {"crosslayer": {name: getattr(cfg, name) for name in TRAINING_FIELDS},
                   "layers": layers, "d_in": d_in, "d_out": d_out,
                   "input_scale": in_scales, "output_scale": out_scales, "buffer_tokens": buffer_tokens}
    out_dir.mkdir(parents=True, exist_ok=True)
    loop = TrainingLoop(out_dir, fingerprint, total_steps=total, checkpoint_every=cfg.checkpoint_every,
                        metrics=[out_dir / METRICS], desc=f"crosslayer x{len(layers)}", progress=progress,
                        stop_after=stop_after, diverged=TrainingDiverged)

    def scaled(batch: dict) -> tuple[list[Tensor], list[Tensor]]:
        xs = [batch[h].to(device, torch.float32) * s for (h, _), s in zip(pairs, in_scales)]
        ys = [batch[h].to(device, torch.float32) * s for (_, h), s in zip(pairs, out_scales)]
        return xs, ys

    state = loop.resume()
    if state is not None:
        clt.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        since_fired.copy_(state["since_fired"])
        if loop.start >= total and (out_dir / SUMMARY).exists():
            return json.loads((out_dir / SUMMARY).read_text())
    else:  # b_dec from a sample of its own, as the transcoders' trainer starts (the checkpoint keeps it)
        _, ys = scaled(next(iter(source.batches(INIT_SAMPLES, seed=cfg.seed + 1))))
        with torch.no_grad():
            clt.b_dec.copy_(torch.stack([geometric_median(y) for y in ys]))

    batches = source.batches(batch_size, seed=cfg.seed, start_batch=loop.start)
    for step in loop.steps():
        xs, ys = scaled(next(batches))
        out = clt(xs)
        mse = torch.stack([(y - y_hat).pow(2).sum(-1).mean() for y, y_hat in zip(ys, out.reconstructions)])
        loss = mse.sum()
        loss.backward()
        with torch.no_grad():
            fires = torch.stack([(f > 0).sum(0) for f in out.latents])  # (n, d_sae)
            since_fired.copy_(torch.where(fires > 0, 0, since_fired + batch_size))
            sst = torch.stack([(y - y.mean(0)).pow(2).sum() for y in ys])
            stats = torch.stack([mse, 1 - mse * batch_size / sst, fires.sum(1) / batch_size,
                                 (since_fired >= cfg.dead_after_tokens).float().mean(1)])
        lr, loss_value = lr_at(step, schedule), float(loss.detach())
        loop.stop_if_diverged(loss_value, step, lr, who="the cross-layer transcoder: ",
                              hint="Lower transcoders.lr, or check the inputs for NaNs.")
        for group in optimizer.param_groups:
            group["lr"] = lr
        clt.remove_parallel_decoder_grad()
        torch.nn.utils.clip_grad_norm_(clt.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clt.normalize_decoder()
        dt = loop.end_step()
        done = step + 1
        mse_, fve, l0, dead = stats.tolist()
        loop.record([{"step": done, "tokens": done * batch_size, "loss": loss_value, "mse": mse_,
                      "fve": fve, "l0": l0, "dead_fraction": dead, "lr": lr, "tokens_per_s": batch_size / dt}])
        loop.checkpoint_if_due(done, lambda: {"model": clt.state_dict(), "optimizer": optimizer.state_dict(),
                                              "since_fired": since_fired})
        loop.bar.set_postfix(loss=f"{loss_value:.3g}", fve=f"{min(fve):.3f}", dead=f"{max(dead):.2f}")

    steps = loop.start + loop.steps_run
    summary = {"layers": layers, "hooks": {str(l): list(p) for l, p in zip(layers, pairs)},
               "scales": {str(l): [a, b] for l, a, b in zip(layers, in_scales, out_scales)},
               "buffer_tokens": buffer_tokens, "finished": loop.finished, "steps": steps,
               "tokens": steps * batch_size, "d_sae": cfg.d_sae, "k": cfg.k,
               "tokens_per_s": loop.steps_run * batch_size / loop.train_time if loop.train_time else None,
               "device": str(device), "config_hash": config_hash(cfg)}
    if not loop.finished:
        return summary
    # the final figures on fresh batches (another seed), pooled, as the transcoders' trainer measures
    sums = torch.zeros(len(layers), 4, dtype=torch.float64)  # sse, sst, active, tokens
    fresh = source.batches(batch_size, seed=cfg.seed + 2)
    with torch.no_grad():
        for _ in range(EVAL_BATCHES):
            xs, ys = scaled(next(fresh))
            out = clt(xs)
            for i, (y, y_hat, f) in enumerate(zip(ys, out.reconstructions, out.latents)):
                sums[i] += torch.stack([(y - y_hat).pow(2).sum(), (y - y.mean(0)).pow(2).sum(),
                                        (f > 0).sum(), y.new_tensor(len(y))]).double().cpu()
    dead = since_fired >= cfg.dead_after_tokens
    summary["per_layer"] = [{"layer": layer, "mse": float(s[0] / s[3]), "fve": float(1 - s[0] / s[1]),
                             "l0": float(s[2] / s[3]), "dead_fraction": float(d.float().mean()),
                             "n_dead": int(d.sum())} for layer, s, d in zip(layers, sums, dead)]
    save_crosslayer(clt, out_dir, training_tokens=total * batch_size)
    atomic_write_json(out_dir / SUMMARY, summary)
    return summary


__all__ = [
    "CLTOutput",
    "CrossLayerTranscoder",
    "FOLDER",
    "load_crosslayer",
    "save_crosslayer",
    "train_crosslayer",
]
