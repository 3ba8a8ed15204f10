"""TinyModel's tokenizer (Noa Nabeshima, 2024): GPT-Neo's BPE restricted to its 10K tokens,
with TinyModel's ids. A tokenizer, so it lives with the others in `corpus/` and
`corpus.tokenizer.load_tokenizer` reads a saved one back; `lm.tinymodel` builds it from
TinyModel's published token table (`tinymodel_tokenizer`) and explains the layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .sources import PretrainedError
from .tokenizer import UNK_TOKEN, RemapTokenizer

SPECIAL_TOKENS = ("[BEGIN]", "[END]", "[PAD]", "[UNK]")  # tokenization.py adds them in this order


# What unidecode (which TinyModel's clean_text uses) makes of the non-ASCII punctuation that
# stories hold, checked against Unidecode 1.4.0. unidecode is GPL and not a dependency here;
# accented letters fold through NFKD below, and any other non-ASCII character is left as it
# is (where unidecode would transliterate it).
_ASCII = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": ",,", "\u201f": '"', "\u2033": "''",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u200b": "", "\u00ab": "<<", "\u00bb": ">>",
    "\u00a1": "!", "\u00bf": "?", "\u2022": "*", "\u00b7": "*", "\u00df": "ss", "\u00e6": "ae",
    "\u00c6": "AE", "\u00f8": "o", "\u00d8": "O", "\u0153": "oe", "\u0152": "OE", "\u0142": "l",
    "\u0141": "L", "\u0111": "d", "\u20ac": "EUR", "\u00a3": "PS",
})


def ascii_fold(text: str) -> str:
    """Non-ASCII punctuation and accented letters to ASCII, as unidecode does for them."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text.translate(_ASCII))
    return "".join(c for c in text if not unicodedata.combining(c))


def clean_text(text: str, transliterate: Callable[[str], str] = ascii_fold) -> str:
    """TinyModel's `clean_text` (tokenization.py): to ASCII, tabs to two spaces, no spaces
    before a newline, no blank lines, single spaces. It ran on all its training text.

    `transliterate` is unidecode there; pass `unidecode.unidecode` for its exact output
    (the text then comes through `TinyModelTokenizer.encode`'s own cleaning unchanged)."""
    text = transliterate(text)
    text = re.sub(r"\t", "  ", text)
    text = re.sub(r"[\s]+\n", "\n", text)
    text = re.sub(r"\n\n+", "\n", text)
    return re.sub(r" +", " ", text)


class TinyModelTokenizer(RemapTokenizer):
    """GPT-Neo's BPE restricted to TinyModel's 10K tokens, with TinyModel's ids.

    id i is base id `ts_to_neo[i]`; base ids not in the table encode as `unk_id`. The four
    special tokens are found in the table by the ids the base gives them: for TinyModel
    start_id 9996 ([BEGIN]), end_id 9997 ([END]), pad_id 9998 ([PAD]), unk_id 9999 ([UNK]);
    `vocab_size` is the table's length, `kept_base_ids` its ordinary tokens, `top_k` their
    number. As RemapTokenizer's, `decode` drops [BEGIN] and writes [UNK] as such (and
    [END], [PAD]). With `clean` (TinyModel's own encoder always cleans), text is first
    `clean_text`-ed, so `pieces` and `offsets` refer to `clean_text(text)`.
    """

    def __init__(self, base: Tokenizer, ts_to_neo: Sequence[int] | np.ndarray | torch.Tensor,
                 clean: bool = True):
        base = Tokenizer.from_str(base.to_str())  # a copy: the specials go into it, not yours
        base.add_special_tokens(list(SPECIAL_TOKENS))  # ids already there are kept
        if isinstance(ts_to_neo, torch.Tensor):
            ts_to_neo = ts_to_neo.cpu().numpy()
        table = np.asarray(ts_to_neo, dtype=np.int64)
        n_base = base.get_vocab_size()
        if table.ndim != 1 or len(np.unique(table)) != len(table):
            raise PretrainedError(f"the TinyModel token table must list distinct base ids, one "
                                  f"per TinyModel id; got shape {table.shape}")
        if table.min() < 0 or table.max() >= n_base:
            raise PretrainedError(f"the TinyModel token table names base ids up to "
                                  f"{table.max()} but the base tokenizer has {n_base} (with "
                                  f"{' '.join(SPECIAL_TOKENS)}): pass GPT-Neo's tokenizer.json")
        special = {}
        for token in SPECIAL_TOKENS:
            where = np.flatnonzero(table == base.token_to_id(token))
            if len(where) == 0:
                raise PretrainedError(
                    f"{token} is base id {base.token_to_id(token)} here but not in the TinyModel "
                    f"token table: the base must be GPT-Neo's tokenizer.json (50257 tokens, "
                    f"so {', '.join(SPECIAL_TOKENS)} become 50257-50260)")
            special[token] = int(where[0])
        self.base, self.ts_to_neo, self.clean = base, table, clean
        self.start_id, self.end_id = special["[BEGIN]"], special["[END]"]
        self.pad_id, self.unk_id = special["[PAD]"], special["[UNK]"]
        self.vocab_size = len(table)
        ordinary = np.ones(len(table), dtype=bool)
        ordinary[list(special.values())] = False
        self.kept_base_ids = table[ordinary]
        self.top_k = len(self.kept_base_ids)
        # base id -> TinyModel id, one array lookup per token (tokenization.py's
        # neo_tok_ids_to_ts, rebuilt from the table)
        self.lookup = np.full(n_base, self.unk_id, dtype=np.int64)
        self.lookup[table] = np.arange(len(table))

    def _clean(self, text: str) -> str:
        return clean_text(text) if self.clean else text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encodings = self.base.encode_batch_fast([self._clean(t) for t in texts])
        return [self.lookup[e.ids].tolist() for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside TinyModel's 0..{self.vocab_size - 1}")
        neo = [int(self.ts_to_neo[i]) for i in ids if i != self.start_id]
        return self.base.decode(neo, skip_special_tokens=False)

    def pieces(self, text: str) -> list[str]:
        text = self._clean(text)
        encoding = self.base.encode(text)
        return [text[a:b] if self.lookup[i] != self.unk_id else UNK_TOKEN
                for i, (a, b) in zip(encoding.ids, encoding.offsets)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.base.encode(self._clean(text)).offsets

    def save(self, folder: str | os.PathLike) -> None:
        """`base_tokenizer.json` and `tinymodel_tokenizer.json`; `load_tinymodel_tokenizer`
        reads them back (not `remap.json`: that would read back with RemapTokenizer's ids)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.base.save(str(folder / "base_tokenizer.json"))
        (folder / "tinymodel_tokenizer.json").write_text(json.dumps(
            {"ts_to_neo": self.ts_to_neo.tolist(), "clean": self.clean}))

    @property
    def hash(self) -> str:
        blob = self.base.to_str() + json.dumps([self.ts_to_neo.tolist(), self.clean])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_tinymodel_tokenizer(folder: str | os.PathLike) -> TinyModelTokenizer:
    """Read back what `TinyModelTokenizer.save` wrote."""
    folder = Path(folder)
    meta = json.loads((folder / "tinymodel_tokenizer.json").read_text())
    base = Tokenizer.from_file(str(folder / "base_tokenizer.json"))
    return TinyModelTokenizer(base, meta["ts_to_neo"], clean=meta["clean"])


__all__ = ["SPECIAL_TOKENS", "TinyModelTokenizer", "ascii_fold", "clean_text", "load_tinymodel_tokenizer"]
