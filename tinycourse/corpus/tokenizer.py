"""Tokenizers: a byte-level BPE trained on the corpus, and TinyModel's top-K remap.

Both classes offer the same small interface, which is all the rest of the course uses:
`encode`, `encode_batch`, `decode`, `pieces` (how a text splits, for display),
`vocab_size` (rows the embedding needs), `start_id` (the token that starts every story,
and that generation stops at), `save(folder)` and `hash`. `load_tokenizer(folder)` reads
either back.

Byte-level BPE (GPT-2's scheme, trained with Hugging Face `tokenizers`): start from the
256 bytes, repeatedly merge the most frequent adjacent pair. Every string encodes, and
decoding gives back exactly the bytes that went in. `most_frequent_pair` and `merge_pair`
spell out one merge step in plain Python, for reading (the trainer is Rust).

The remap (TinyModel, Noa Nabeshima 2024): take a big base tokenizer (GPT-NeoX's 50K),
count how often each of its tokens occurs on the corpus, keep the K most frequent as ids
1..K in order of frequency, send the rest to `[UNK]` (id 0) and start each story with
`[BEGIN]` (id K+1). A 10K vocabulary covers nearly all of TinyStories' simple English, and
the embedding shrinks five-fold.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm

START_TOKEN = "<|endoftext|>"
UNK_TOKEN, BEGIN_TOKEN = "[UNK]", "[BEGIN]"


class BPETokenizer:
    """A trained byte-level BPE; `<|endoftext|>` (id 0) starts every story."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        start = tokenizer.token_to_id(START_TOKEN)
        if start is None:
            raise ValueError(f"tokenizer has no {START_TOKEN} token; train it with train_bpe")
        self.start_id = start
        # The configured size may exceed what a small corpus could fill: the model's
        # embedding is sized by the config, so report that.
        self.vocab_size = max(vocab_size or 0, tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(map(int, ids)))

    def pieces(self, text: str) -> list[str]:
        """The text cut where its tokens are cut (readable, unlike byte-level symbols)."""
        encoding = self.tokenizer.encode(text)
        return [text[a:b] for a, b in encoding.offsets]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (to line tokens up with labels)."""
        return self.tokenizer.encode(text).offsets

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_meta.json").write_text(json.dumps({"vocab_size": self.vocab_size}))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:16]


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              progress: bool = False) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens on `texts` (streamed)."""
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: stories are encoded whole, and decode(encode(x)) == x exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[START_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer, vocab_size)


# --- BPE by hand: one merge step, as the trainer does it (for reading, not for speed) ---

def most_frequent_pair(seqs: Iterable[Sequence[int]]) -> tuple[int, int] | None:
    """The adjacent pair of ids that occurs most often in `seqs`, counted within each
    sequence (never across the end of one and the start of the next; in 5 5 5 the pair
    (5, 5) occurs twice). Ties go to the smallest pair (by first id, then second). None
    when no sequence holds two ids."""
    counts: dict[tuple[int, int], int] = {}
    for seq in seqs:
        seq = [int(i) for i in seq]
        for pair in pairwise(seq):
            counts[pair] = counts.get(pair, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda pair: (-counts[pair], pair))


def merge_pair(seqs: Iterable[Sequence[int]], pair: tuple[int, int], new_id: int) -> list[list[int]]:
    """Each sequence with every occurrence of `pair` replaced by `new_id`, scanning left to
    right (merging (5, 5) in 5 5 5 gives new_id 5). New lists; the input is unchanged."""
    first, second = pair
    merged_seqs = []
    for seq in seqs:
        seq, merged, i = [int(t) for t in seq], [], 0
        while i < len(seq):
            if i + 1 < len(seq) and seq[i] == first and seq[i + 1] == second:
                merged.append(new_id)
                i += 2
            else:
                merged.append(seq[i])
                i += 1
        merged_seqs.append(merged)
    return merged_seqs


# --- the TinyModel remap ---------------------------------------------------------------

class RemapTokenizer:
    """A base tokenizer restricted to its `top_k` most frequent tokens on a corpus.

    ids: 0 = `[UNK]`, 1..len(kept) = kept base tokens by falling frequency,
    top_k + 1 = `[BEGIN]` (starts every story). `vocab_size = top_k + 2`.
    """

    unk_id = 0

    def __init__(self, base: Tokenizer, kept_base_ids: Sequence[int], top_k: int):
        if len(kept_base_ids) > top_k:
            raise ValueError(f"{len(kept_base_ids)} kept tokens exceed top_k={top_k}")
        self.base, self.top_k = base, top_k
        self.kept_base_ids = np.asarray(kept_base_ids, dtype=np.int64)
        self.start_id = top_k + 1
        self.vocab_size = top_k + 2
        # base id -> our id, one array lookup per token
        self.lookup = np.zeros(base.get_vocab_size(), dtype=np.int64)
        self.lookup[self.kept_base_ids] = np.arange(1, len(self.kept_base_ids) + 1)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.lookup[e.ids].tolist() for e in self.base.encode_batch_fast(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        """Kept tokens decode as the base would; `[UNK]` shows as such, `[BEGIN]` is dropped."""
        parts, run = [], []
        for i in map(int, ids):
            if 1 <= i <= len(self.kept_base_ids):
                run.append(int(self.kept_base_ids[i - 1]))
                continue
            if run:
                parts.append(self.base.decode(run))
                run = []
            if i == self.unk_id:
                parts.append(UNK_TOKEN)
        if run:
            parts.append(self.base.decode(run))
        return "".join(parts)

    def pieces(self, text: str) -> list[str]:
        encoding = self.base.encode(text)
        return [text[a:b] if self.lookup[i] else UNK_TOKEN
                for i, (a, b) in zip(encoding.ids, encoding.offsets)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.base.encode(text).offsets

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.base.save(str(folder / "base_tokenizer.json"))
        remap = {"top_k": self.top_k, "kept_base_ids": self.kept_base_ids.tolist(),
                 "unk_id": self.unk_id, "begin_id": self.start_id,
                 "special_tokens": {UNK_TOKEN: self.unk_id, BEGIN_TOKEN: self.start_id}}
        (folder / "remap.json").write_text(json.dumps(remap))

    @property
    def hash(self) -> str:
        blob = self.base.to_str() + json.dumps(self.kept_base_ids.tolist())
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def count_tokens(base: Tokenizer, texts: Iterable[str], batch: int = 1024) -> np.ndarray:
    """How often each base token occurs in `texts`, shape (base_vocab,). Streams."""
    counts = np.zeros(base.get_vocab_size(), dtype=np.int64)
    chunk: list[str] = []
    for text in tqdm(texts, desc="count tokens", unit=" stories", leave=False):
        chunk.append(text)
        if len(chunk) == batch:
            for e in base.encode_batch_fast(chunk):
                counts += np.bincount(e.ids, minlength=len(counts))
            chunk = []
    for e in base.encode_batch_fast(chunk):
        counts += np.bincount(e.ids, minlength=len(counts))
    return counts


def top_k_ids(counts: Sequence[int] | np.ndarray, top_k: int) -> list[int]:
    """The ids (indices of `counts`) of the `top_k` largest counts, most frequent first,
    ties broken by the smaller id. Ids counted 0 are never kept, so fewer than `top_k` may
    come back."""
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(len(counts)), -counts))  # by count desc, then id asc
    return [int(i) for i in order[:top_k] if counts[i] > 0]


def build_remap(base: Tokenizer, texts: Iterable[str], top_k: int) -> RemapTokenizer:
    """Keep the `top_k` most frequent base tokens on `texts` (ties broken by base id)."""
    return RemapTokenizer(base, top_k_ids(count_tokens(base, texts), top_k), top_k)


def unk_rates(tokenizer: RemapTokenizer, texts: Iterable[str], batch: int = 1024) -> dict:
    """Share of stories containing `[UNK]`, and share of tokens that are `[UNK]`."""
    stories = with_unk = tokens = unks = 0
    chunk: list[str] = []

    def flush() -> None:
        nonlocal stories, with_unk, tokens, unks
        for ids in tokenizer.encode_batch(chunk):
            n_unk = sum(1 for i in ids if i == tokenizer.unk_id)
            stories, with_unk = stories + 1, with_unk + (n_unk > 0)
            tokens, unks = tokens + len(ids), unks + n_unk
        chunk.clear()

    for text in texts:
        chunk.append(text)
        if len(chunk) == batch:
            flush()
    flush()
    return {"stories": stories, "unk_story_share": with_unk / max(stories, 1),
            "unk_token_share": unks / max(tokens, 1)}


def load_base_tokenizer(name_or_path: str) -> Tokenizer:
    """A base `tokenizer.json` from a path, or from the hub by repo id (needs internet)."""
    if Path(name_or_path).is_file():
        return Tokenizer.from_file(str(name_or_path))
    if Path(name_or_path, "tokenizer.json").is_file():
        return Tokenizer.from_file(str(Path(name_or_path, "tokenizer.json")))
    from .sources import check_hub

    check_hub(f"the tokenizer {name_or_path!r} (not a file here either)")
    return Tokenizer.from_pretrained(name_or_path)


def load_tokenizer(folder: str | os.PathLike) -> BPETokenizer | RemapTokenizer:
    """Load what `save` wrote: a BPE (`tokenizer.json`), a remap (`remap.json`), or
    TinyModel's tokenizer (`tinymodel_tokenizer.json`, `TinyModelTokenizer.save`)."""
    folder = Path(folder)
    if (folder / "tinymodel_tokenizer.json").exists():
        from .tinymodel_tokenizer import load_tinymodel_tokenizer

        return load_tinymodel_tokenizer(folder)
    if (folder / "remap.json").exists():
        remap = json.loads((folder / "remap.json").read_text())
        base = Tokenizer.from_file(str(folder / "base_tokenizer.json"))
        return RemapTokenizer(base, remap["kept_base_ids"], remap["top_k"])
    if (folder / "tokenizer.json").exists():
        meta = folder / "tokenizer_meta.json"
        size = json.loads(meta.read_text()).get("vocab_size") if meta.exists() else None
        return BPETokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")), size)
    raise FileNotFoundError(f"no tokenizer.json, remap.json or tinymodel_tokenizer.json in {folder}")
