"""Activations -> dictionaries: sparse autoencoders and transcoders.

In: an LM (`lm`) and its token shards. Out: an activation store (or a live stream), and
SAE folders (sae.safetensors + cfg.json, checkpoint.pt, metrics.jsonl) that `load_sae`
reads without this code, exportable to SAELens. `model` is the SAE a learner reads;
`fast` holds the trainer's fused and sparse paths, tested equal to it.
Exports `SparseAutoencoder`, `load_sae`, `collect_activations`, `ActivationStore`,
`train_sae`, `train_sweep`, `export_sae`, and for a transcoder per MLP from one stream
`train_transcoders`, `load_transcoders`, `MultiHookStream` (`transcoders`), a cross-layer
transcoder reading every MLP's input and writing that and every later MLP's output,
`CrossLayerTranscoder`, `train_crosslayer`, `load_crosslayer` (`crosslayer`), and TinyModel's
tag API on our GPT, `TaggedModel` (`tags`: `tagged["M1"](tokens)`).
"""

from .activations import ActivationStore, StreamingSource, collect_activations
from .crosslayer import CrossLayerTranscoder, load_crosslayer, train_crosslayer
from .export import export_sae
from .model import SparseAutoencoder, load_sae, save_sae
from .train import train_sae, train_sweep
from .tags import TaggedModel
from .transcoders import MultiHookStream, load_transcoders, train_transcoders

__all__ = ["ActivationStore", "StreamingSource", "collect_activations", "export_sae",
           "SparseAutoencoder", "load_sae", "save_sae", "train_sae", "train_sweep",
           "MultiHookStream", "load_transcoders", "train_transcoders", "TaggedModel",
           "CrossLayerTranscoder", "load_crosslayer", "train_crosslayer"]
