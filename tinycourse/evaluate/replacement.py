"""The replacement model: every MLP's output replaced by its transcoder's, all at once.

Given several dictionaries writing different hooks (a transcoder per MLP, from
`sae.transcoders`), or a cross-layer transcoder (`sae.crosslayer`: layer j's output is
its own and every earlier layer's features decoded, so it counts here as one dictionary
per layer, `layer_{i}`, whose output reads the inputs of layers 0..j), measured on the
held-out tokens `metrics.evaluate` uses
(`eval_windows`; positions holding the start token count nowhere and keep the model's own
activation in every intervention, as in `metrics`):

    per dictionary, on the clean forward's activations (as `metrics.evaluate` measures one):
      fve, mse, nmse     1 - SSE / SST around the per-channel mean; SSE / tokens; SSE / SST
      l0, dead, dense    mean active latents per token; latents that never fire on these
                         tokens, and that fire on more than `dense_threshold` of them
      alone              that hook alone replaced: ce_spliced, ce_zero_ablation (that
                         hook's activation 0), ce_loss_recovered against it, kl
    replacement          every hook replaced in one forward. Each dictionary reads its
                         input from *that* forward, so the errors of earlier layers reach
                         the later ones as they would in use (a CLT's per-dictionary and
                         `alone` figures take every layer's input from the clean forward):
      ce_clean, ce_replacement, ce_zero_ablation (every replaced hook 0), ce_mean_ablation
      (each its per-channel mean over the clean forward's evaluation tokens),
      ce_loss_recovered = (CE_zero - CE_replacement) / (CE_zero - CE_clean), the same
      against the mean ablation, kl = KL(clean || replacement) per token

CE in nats per token. Passes: per batch the clean forward, each hook alone spliced and
zeroed, the replacement and the all-zero forward; then, once the means are known, the
mean-ablated forward over the kept batches' tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import EvalConfig
from ..corpus.shards import Shards
from ..lm.model import eval_mode, model_device
from ..sae.crosslayer import CrossLayerTranscoder
from ..sae.model import SparseAutoencoder
from .metrics import (
    _batches,
    _check_widths,
    _float,
    _hooks_of,
    _ratio,
    _Sparsity,
    _Tally,
    ce_loss_recovered,
    eval_windows,
)


class _Losses:
    """Float64 sums over the counted tokens of each intervention's CE and KL(clean || it)."""

    def __init__(self) -> None:
        self.n = 0
        self.ce: dict[str, float] = {}
        self.kl: dict[str, float] = {}

    def add(self, name: str, lp: Tensor, target: Tensor, lp_clean: Tensor | None = None) -> None:
        """lp (n, d_vocab) log-probs at the counted positions, target (n,)."""
        ce = float(-lp.gather(1, target[:, None]).sum(dtype=torch.float64))
        self.ce[name] = self.ce.get(name, 0.0) + ce
        if lp_clean is not None:
            kl = float((lp_clean.exp() * (lp_clean - lp)).sum(dtype=torch.float64))
            self.kl[name] = self.kl.get(name, 0.0) + kl

    def mean_ce(self, name: str) -> float:
        return self.ce[name] / self.n

    def mean_kl(self, name: str) -> float | None:
        return _float(self.kl[name] / self.n)


def _forward(model, tokens: Tensor, keep: Tensor, read: Sequence[str],
             replace: Mapping[str, Callable[[dict[str, Tensor]], Tensor]]
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits (B, T, d_vocab) of `tokens` with each hook of `replace` given, at the
    counted positions (`keep` (B, T)), the values (n, width) its function returns from
    the activations captured so far in this forward ({hook: (B, T, ...)} of `read`);
    uncounted positions keep the model's own. Returns the logits and that cache."""
    cache: dict[str, Tensor] = {}

    def grab(act: Tensor, hook) -> None:
        cache[hook.name] = act

    def replacer(values: Callable[[dict[str, Tensor]], Tensor]):
        def hook(act: Tensor, point) -> Tensor:
            full = act.flatten(2).clone()
            full[keep] = values(cache).to(full.dtype)
            return full.view_as(act)
        return hook

    # the captures first: a hook read and replaced (an SAE's) is read before it changes
    hooks = [(name, grab) for name in dict.fromkeys(read)]
    hooks += [(name, replacer(fn)) for name, fn in replace.items()]
    with model.hooks(hooks):
        logits = model(tokens)
    return logits, cache


Replace = Callable[[dict[str, Tensor]], Tensor]  # this forward's captures -> a hook's new values (n, width)


class _Separate:
    """Dictionaries each reading its own hook_in and writing its own hook_out."""

    def __init__(self, model, saes: Mapping[str, SparseAutoencoder]):
        self.saes = dict(saes)
        self.modules = list(self.saes.values())
        self.hooks = {name: _hooks_of(model, sae) for name, sae in self.saes.items()}
        outs = [out for _, out in self.hooks.values()]
        if len(set(outs)) != len(outs):
            raise ValueError(f"two dictionaries write the same hook ({', '.join(outs)}): the "
                             f"replacement model replaces each hook once; pass one per hook")
        self.kind = {name: sae.cfg.kind for name, sae in self.saes.items()}
        self.d_sae = {name: sae.d_sae for name, sae in self.saes.items()}

    def clean(self, xs: dict[str, Tensor], ys: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """Clean inputs xs {name: (n, d_in)} -> {name: (reconstruction (n, d_out), latents (n, d_sae))}"""
        out = {}
        for name, sae in self.saes.items():
            _check_widths(sae, xs[name], ys[name], *self.hooks[name])
            o = sae(xs[name])
            out[name] = (o.reconstruction, o.latents)
        return out

    def replacing(self, keep: Tensor) -> dict[str, Replace]:
        """{hook_out: its dictionary's output from its input in the forward running now}"""
        def spliced(name: str) -> Replace:
            hook_in = self.hooks[name][0]
            return lambda cache: self.saes[name](cache[hook_in].flatten(2)[keep].float()).reconstruction
        return {self.hooks[name][1]: spliced(name) for name in self.saes}


class _CrossLayer:
    """A CLT as one dictionary per layer, `layer_{i}`; its scales applied (1 once folded)."""

    def __init__(self, model, clt: CrossLayerTranscoder):
        if max(clt.layers) >= model.cfg.n_layers:
            raise ValueError(f"the cross-layer transcoder covers layers {list(clt.layers)} but the model has "
                             f"{model.cfg.n_layers} (0..{model.cfg.n_layers - 1}): pass the CLT of this model")
        self.clt, self.modules = clt, [clt]
        names = [f"layer_{layer}" for layer in clt.layers]
        model.hook_names([hook for pair in clt.hooks for hook in pair])  # a KeyError naming the closest
        self.hooks = dict(zip(names, clt.hooks))
        self.kind = dict.fromkeys(names, "crosslayer")
        self.d_sae = dict.fromkeys(names, clt.d_sae)

    def clean(self, xs: dict[str, Tensor], ys: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        clt = self.clt
        for name in self.hooks:
            if xs[name].shape[-1] != clt.d_in or ys[name].shape[-1] != clt.d_out:
                raise ValueError(f"the CLT maps {clt.d_in} -> {clt.d_out} values but {name}'s hooks have "
                                 f"{xs[name].shape[-1]} and {ys[name].shape[-1]}: was it trained on another model?")
        out = clt([xs[name] * clt.input_scale[i] for i, name in enumerate(self.hooks)])
        return {name: (out.reconstructions[i] / clt.output_scale[i], out.latents[i])
                for i, name in enumerate(self.hooks)}

    def replacing(self, keep: Tensor) -> dict[str, Replace]:
        """Layer j's output, when its hook fires, from the features of layers 0..j of this
        forward: each layer's are made from its input as its own output is replaced."""
        clt, features = self.clt, {}

        def layer(j: int, hook_in: str) -> Replace:
            def values(cache: dict[str, Tensor]) -> Tensor:
                x = cache[hook_in].flatten(2)[keep].float() * clt.input_scale[j]
                features[j] = clt.activate(clt.layer_pre_activations(j, x))
                return clt.decode_layer(j, features) / clt.output_scale[j]
            return values
        return {hook_out: layer(j, hook_in) for j, (hook_in, hook_out) in enumerate(self.hooks.values())}


@torch.no_grad()
def evaluate_replacement(model, saes: Mapping[str, SparseAutoencoder] | CrossLayerTranscoder,
                         shards: Shards, cfg: EvalConfig, *, device: str | torch.device | None = None,
                         progress: bool = True, exclude_start: bool = True) -> dict:
    """Measure dictionaries writing distinct hooks (e.g. {"layer_0": transcoder, ...}), or a
    cross-layer transcoder, alone and all spliced into `model` at once, on `cfg.n_tokens`
    validation tokens.

    Returns JSON-ready {"n_tokens", "dictionaries": [{"name", "hook_in", "hook_out",
    "kind", "d_sae", "fve", "mse", "nmse", "l0", "dead_fraction", "n_dead",
    "dense_fraction", "n_dense", "alone": {"ce_spliced", "ce_zero_ablation",
    "ce_loss_recovered", "kl"}}, ...] (in the mapping's order; a CLT's by layer, kind
    "crosslayer"), "replacement": {"ce_clean", "ce_replacement", "ce_zero_ablation",
    "ce_mean_ablation", "ce_loss_recovered", "ce_loss_recovered_vs_mean", "kl"}} (see the
    module docstring). A ratio whose denominator is 0 is None."""
    if not isinstance(saes, CrossLayerTranscoder) and not saes:
        raise ValueError("evaluate_replacement needs at least one dictionary")
    device = model_device(model, device)
    for module in ([saes] if isinstance(saes, CrossLayerTranscoder) else saes.values()):
        model_device(module, device)  # each must sit with the model; none is moved here
    dicts = _CrossLayer(model, saes) if isinstance(saes, CrossLayerTranscoder) else _Separate(model, saes)
    hooks, names = dicts.hooks, list(dicts.hooks)
    start_id = shards.start_id if exclude_start else None
    windows = eval_windows(shards, "val", cfg.n_tokens, model.cfg.n_ctx, start_id=start_id)
    read = [h for pair in hooks.values() for h in pair]
    tallies = {name: _Tally() for name in names}
    sparsity = {name: _Sparsity(dicts.d_sae[name]) for name in names}
    losses, kept = _Losses(), []

    def constant(values: Tensor) -> Replace:
        return lambda cache: values

    with eval_mode(model, *dicts.modules):
        for tokens, targets, keep in _batches(windows, cfg.batch_size, device, start_id, progress,
                                              "replacement"):
            target = targets[keep]
            logits, cache = _forward(model, tokens, keep, read, {})
            lp_clean = logits[keep].float().log_softmax(-1)
            losses.n += len(target)
            losses.add("clean", lp_clean, target)
            xs = {name: cache[hooks[name][0]].flatten(2)[keep].float() for name in names}
            ys = {name: cache[hooks[name][1]].flatten(2)[keep].float() for name in names}
            outs = dicts.clean(xs, ys)
            zeros = {}
            for name in names:
                hook_out, y = hooks[name][1], ys[name]
                reconstruction, latents = outs[name]
                sparsity[name].add(latents)
                tallies[name].target(y)
                tallies[name].reconstruction(name, reconstruction, y)
                zeros[name] = torch.zeros_like(y)
                # this hook alone: its input is clean (it comes first), so this is its output
                alone, _ = _forward(model, tokens, keep, (), {hook_out: constant(reconstruction)})
                losses.add(f"alone:{name}", alone[keep].float().log_softmax(-1), target, lp_clean)
                zeroed, _ = _forward(model, tokens, keep, (), {hook_out: constant(zeros[name])})
                losses.add(f"zero:{name}", zeroed[keep].float().log_softmax(-1), target)
            logits, _ = _forward(model, tokens, keep, [hooks[n][0] for n in names], dicts.replacing(keep))
            losses.add("replacement", logits[keep].float().log_softmax(-1), target, lp_clean)
            logits, _ = _forward(model, tokens, keep, (), {hooks[n][1]: constant(zeros[n]) for n in names})
            losses.add("zero", logits[keep].float().log_softmax(-1), target)
            kept.append((tokens, target, keep))
        means = {name: tally.mean.to(device) for name, tally in tallies.items()}
        for tokens, target, keep in tqdm(kept, desc="replacement: mean ablation",
                                         disable=not progress, leave=False):
            logits, _ = _forward(model, tokens, keep, (), {
                hooks[n][1]: constant(means[n].expand(int(keep.sum()), -1)) for n in names})
            losses.add("mean", logits[keep].float().log_softmax(-1), target)

    rows = []
    for name in names:
        tally, active = tallies[name], sparsity[name]
        density = active.density
        dead, dense = density == 0, density > cfg.dense_threshold
        sse = float(tally.sse[name].sum())
        rows.append({
            "name": str(name), "hook_in": hooks[name][0], "hook_out": hooks[name][1],
            "kind": dicts.kind[name], "d_sae": dicts.d_sae[name],
            "fve": tally.fve(name), "mse": _float(sse / tally.n),
            "nmse": _ratio(sse, float(tally.sst.sum())),
            "l0": active.l0_mean, "dead_fraction": float(dead.double().mean()),
            "n_dead": int(dead.sum()), "dense_fraction": float(dense.double().mean()),
            "n_dense": int(dense.sum()),
            "alone": {"ce_spliced": losses.mean_ce(f"alone:{name}"),
                      "ce_zero_ablation": losses.mean_ce(f"zero:{name}"),
                      "ce_loss_recovered": ce_loss_recovered(losses.mean_ce(f"alone:{name}"),
                                                             losses.mean_ce(f"zero:{name}"),
                                                             losses.mean_ce("clean")),
                      "kl": losses.mean_kl(f"alone:{name}")},
        })
    clean, replaced = losses.mean_ce("clean"), losses.mean_ce("replacement")
    return {
        "n_tokens": losses.n,
        "dictionaries": rows,
        "replacement": {
            "ce_clean": clean, "ce_replacement": replaced,
            "ce_zero_ablation": losses.mean_ce("zero"), "ce_mean_ablation": losses.mean_ce("mean"),
            "ce_loss_recovered": ce_loss_recovered(replaced, losses.mean_ce("zero"), clean),
            "ce_loss_recovered_vs_mean": ce_loss_recovered(replaced, losses.mean_ce("mean"), clean),
            "kl": losses.mean_kl("replacement"),
        },
    }


__all__ = ["evaluate_replacement"]
