"""TinyModel's tag API on our GPT: a dictionary's latents by a short name.

    tagged = TaggedModel(model, {"M": "runs/tiny/transcoders"})
    tagged["M1"](tokens)       # layer 1's transcoder latents: (batch, pos, d_sae)
    tagged["M1N123"](tokens)   # its latent 123 alone: (batch, pos)
    tagged(tokens)             # the model itself: logits
    tagged = TaggedModel.from_run_dir("runs/tiny")   # the LM and both kinds of the run
    tagged["A0"](tokens)       # layer 0's attention-output SAE (transcoders.attention_saes)

Noa Nabeshima's TinyModel names its dictionaries by tag: "M{L}" the transcoder of layer
L's MLP, "A{L}" the SAE on layer L's attention output, and "N{i}" picks one latent. Here
a tag resolves to a folder `layer_{L}` under the folder given for its kind (the
transcoders stage writes exactly that), loaded on first use (`sae.model.load_sae`) and
kept; `from_run_dir` finds both kinds in a run's transcoders folder ("A" in its
attention/, written with `transcoders.attention_saes`). The latents are read as the dictionary reads them: the LM runs up to the
dictionary's hook_in (and no further), then `encode`. A kind with no folder, or a layer
with no dictionary, is a one-line error naming what to train.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..lm.model import load_model, model_device, unwrap
from .model import SparseAutoencoder, load_sae
from .transcoders import ATTENTION

TAG = re.compile(r"^(M|A)(\d+)(?:N(\d+))?$")
KINDS = {"M": "transcoder of the MLP", "A": "SAE on the attention output"}
HOOKS = {"M": "blocks.{L}.ln2.hook_normalized", "A": "blocks.{L}.hook_attn_out"}  # what each kind reads
# how each kind is trained, for the errors
TRAIN = {"M": "tinycourse run --stages transcoders",
         "A": "tinycourse run --stages transcoders --set transcoders.attention_saes=true"}


class TaggedModel:
    """`model` with TinyModel's tags (module docstring). dictionaries: kind ("M", "A") ->
    a folder holding layer_{L}/ dictionary folders, or a mapping layer -> a loaded SAE."""

    def __init__(self, model, dictionaries: Mapping[str, str | os.PathLike | Mapping[int, SparseAutoencoder]]):
        unknown = set(dictionaries) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown dictionary kinds {sorted(unknown)}: use "
                             + ", ".join(f"{k} ({v})" for k, v in KINDS.items()))
        self.model = model
        self._sources = dict(dictionaries)
        self._loaded: dict[tuple[str, int], SparseAutoencoder] = {}

    @classmethod
    def from_run_dir(cls, path: str | os.PathLike, model=None, *, device: str | torch.device = "cpu"
                     ) -> "TaggedModel":
        """A run's LM with its dictionaries: `path` a run directory (runs/<name>) or its
        transcoders folder; "M" the transcoders there, "A" their attention/ folder when
        it exists. `model` None: the run's lm/ on `device`. Nothing else loads until asked."""
        folder = Path(path)
        if (folder / "transcoders").is_dir():
            folder = folder / "transcoders"
        if not any(folder.glob("layer_*/cfg.json")):
            raise FileNotFoundError(f"no transcoders in {folder}: pass a run directory or its transcoders "
                                    f"folder, built with {TRAIN['M']}")
        if model is None:
            model = load_model(folder.parent / "lm", device=device)
        kinds = {"M": folder} | ({"A": folder / ATTENTION} if (folder / ATTENTION).is_dir() else {})
        return cls(model, kinds)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def dictionary(self, kind: str, layer: int) -> SparseAutoencoder:
        """The `kind` dictionary of `layer`, loaded on first use."""
        key = (kind, layer)
        if key not in self._loaded:
            source = self._sources.get(kind)
            if source is None:
                raise KeyError(f"no {kind} dictionaries ({KINDS[kind]}) were given: pass "
                               f"TaggedModel(model, {{{kind!r}: folder}})"
                               + (" (the transcoders stage writes runs/<name>/transcoders)" if kind == "M" else
                                  f" (train them: {TRAIN[kind]})"))
            if isinstance(source, Mapping):
                if layer not in source:
                    raise KeyError(f"no {kind}{layer}: the {KINDS[kind]} dictionaries given are for "
                                   f"layers {sorted(source)}")
                sae = source[layer]
            else:
                folder = Path(source) / f"layer_{layer}"
                if not folder.is_dir():
                    raise KeyError(f"no {kind}{layer}: {folder} does not exist; train a {KINDS[kind]} "
                                   f"for layer {layer} ({TRAIN[kind]})")
                sae = load_sae(folder, device=model_device(self.model))
            expected = HOOKS[kind].format(L=layer)
            if sae.cfg.hook_in != expected:
                raise ValueError(f"{kind}{layer} should read {expected}, but its dictionary reads "
                                 f"{sae.cfg.hook_in}: check the folder given for {kind}")
            self._loaded[key] = sae
        return self._loaded[key]

    def __getitem__(self, tag: str) -> Callable[[Tensor], Tensor]:
        match = TAG.match(str(tag))
        if match is None:
            raise KeyError(f"{tag!r} is not a tag: use M<layer> or A<layer>, optionally N<latent> "
                           f"(e.g. 'M1', 'M1N123')")
        kind, layer, latent = match.group(1), int(match.group(2)), match.group(3)
        n_layers = unwrap(self.model).cfg.n_layers
        if layer >= n_layers:
            raise KeyError(f"{tag!r} names layer {layer}, but the model has layers 0..{n_layers - 1}")
        sae = self.dictionary(kind, layer)
        if latent is not None and int(latent) >= sae.d_sae:
            raise KeyError(f"{tag!r}: {kind}{layer} has latents 0..{sae.d_sae - 1}")

        @torch.no_grad()
        def latents(tokens) -> Tensor:
            """tokens (batch, pos) or (pos,) ids -> (batch, pos, d_sae), or (batch, pos) for one latent."""
            ids = torch.as_tensor(tokens, dtype=torch.long, device=model_device(self.model))
            if ids.dim() == 1:
                ids = ids[None]
            _, cache = unwrap(self.model).run_with_cache(ids, names=[sae.cfg.hook_in], stop_at_layer="auto")
            x = cache[sae.cfg.hook_in]
            f = sae.encode(x.to(sae.W_enc.dtype) * sae.input_scale)
            return f if latent is None else f[..., int(latent)]

        return latents


__all__ = ["TaggedModel", "TAG", "KINDS"]
