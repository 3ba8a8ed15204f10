"""Tokens -> a language model: the hooked GPT and its training.

In: token shards (`corpus`). Out: an LM folder (model.safetensors + config.json,
checkpoint.pt, metrics.jsonl, samples.jsonl) that `load_model` reads without this code.
Exports `GPT`, `HookedModule`, `HookPoint`, `load_model`, `save_model`, `generate`,
`generate_text`, `train_lm`, `load_pretrained` (the public TinyStories models, from a
folder or the hub) and `to_transformer_lens` / `from_transformer_lens` (needs the
`interp` extra).
"""

from .hooks import HookedModule, HookPoint
from .model import GPT, count_parameters, generate, generate_text, load_model, save_model
from .pretrained import load_pretrained
from .tinymodel import load_tinymodel, tinymodel_tokenizer
from .train import train_lm
from .transformer_lens import from_transformer_lens, to_transformer_lens

__all__ = ["GPT", "HookedModule", "HookPoint", "count_parameters", "generate",
           "generate_text", "load_model", "save_model", "train_lm", "load_pretrained",
           "to_transformer_lens", "from_transformer_lens", "load_tinymodel", "tinymodel_tokenizer"]
