"""Stories -> tokens: the first stage of the data flow.

In: text (storyworld, the embedded generator; TinyStories from the hub; a local .txt,
.jsonl or .parquet). Out: a tokenizer folder and uint16 token shards with meta.json.
Exports `iter_stories`, `generate_stories`, `train_bpe`, `build_remap`, `load_tokenizer`,
`Shards`, `WindowSampler`, `write_split`.
"""

from .shards import Shards, WindowSampler, token_dtype, write_split
from .sources import DataError, iter_stories, source_fingerprint
from .storyworld import Story, generate_stories, token_labels
from .tokenizer import (BPETokenizer, RemapTokenizer, build_remap, load_base_tokenizer,
                        load_tokenizer, train_bpe)

__all__ = ["Shards", "WindowSampler", "token_dtype", "write_split", "DataError",
           "iter_stories", "source_fingerprint", "Story", "generate_stories", "token_labels",
           "BPETokenizer", "RemapTokenizer", "build_remap", "load_base_tokenizer",
           "load_tokenizer", "train_bpe"]
