"""A cross-layer transcoder in the attribution graphs of `circuits`.

A CLT feature of layer i reads MLP i's input and writes MLP i's output and every later one's
(`sae.crosslayer`). `circuits` builds its graphs through a small interface to whatever
replaces the MLPs (`circuits._Transcoders` documents it); this is the CLT's side of it, so
that every function of `circuits` (graph, pruning, scores, JSON, intervention check)
takes a CLT where it takes a list of transcoders. Nothing else changes: the frozen model
stays affine in the sources' scales, so the graph's identities hold as they do for
transcoders (tests/interpret/test_circuits_crosslayer.py).
"""

from __future__ import annotations

from torch import Tensor

from ..sae.crosslayer import CrossLayerTranscoder


class CrossLayerView:
    """A cross-layer transcoder through `circuits._Transcoders`' interface: layer i's
    features write MLP outputs i..n-1 through the decoders W_dec[i -> j], each divided by
    its target's output scale; the constant is b_dec (a CLT has no skip path)."""

    kind = "crosslayer"

    def __init__(self, clt: CrossLayerTranscoder):
        self.clt, self.modules, self.n_layers = clt, (clt,), clt.n_layers

    def sources(self, j: int) -> range:
        return range(j + 1)

    def targets(self, i: int) -> range:
        return range(i, self.n_layers)

    def pre_activations(self, i: int, x: Tensor) -> Tensor:
        return self.clt.layer_pre_activations(i, x * self.clt.input_scale[i])

    def activate(self, i: int, pre: Tensor) -> Tensor:
        return self.clt.activate(pre)

    def reads(self, i: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        return self.clt.W_enc[i][:, latents].T * self.clt.input_scale[i], self.clt.b_enc[i][latents]

    def writes(self, i: int, j: int, latents: Tensor) -> Tensor:
        return self.clt.decoder(i, j)[latents] / self.clt.output_scale[j]

    def written(self, j: int, fs) -> Tensor:
        return sum(fs[i] @ self.clt.decoder(i, j) for i in self.sources(j)) / self.clt.output_scale[j]

    def constant(self, j: int, x: Tensor) -> Tensor:
        return self.clt.b_dec[j] / self.clt.output_scale[j]


def checked_crosslayer(clt: CrossLayerTranscoder, cfg, device, dtype) -> CrossLayerView:
    """The CLT's view for a graph of a model with config `cfg` on `device` in `dtype`; one-line
    errors that say what to pass instead."""
    if clt.layers != tuple(range(cfg.n_layers)):
        raise ValueError(f"the cross-layer transcoder covers layers {list(clt.layers)} of {cfg.n_layers}: an "
                         f"attribution graph replaces every MLP, so pass one trained on every layer")
    if clt.d_in != cfg.d_model or clt.d_out != cfg.d_model:
        raise ValueError(f"the cross-layer transcoder maps {clt.d_in} -> {clt.d_out} but d_model is "
                         f"{cfg.d_model}: pass the CLT of this model")
    if clt.W_enc.device != device or clt.W_enc.dtype != dtype:
        raise ValueError(f"the cross-layer transcoder is {clt.W_enc.dtype} on {clt.W_enc.device}, the "
                         f"model {dtype} on {device}: move it with .to(...)")
    return CrossLayerView(clt)


__all__ = ["CrossLayerView", "checked_crosslayer"]
