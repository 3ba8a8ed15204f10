"""Story sources: where text comes from, as a stream of clean story strings.

`iter_stories(cfg, split)` is the one entry point. It yields stories one at a time from

- `storyworld`: the embedded generator (offline, deterministic, labelled);
- `tinystories`: `roneneldan/TinyStories` through `datasets` (streamed from the hub);
- `tinystories-v2`: the GPT-4-only V2 text file of the same hub repo;
- a local path: `.txt` with stories separated by `<|endoftext|>` lines (the original
  format), or `.jsonl` / `.parquet` with a `text` column.

Nothing reads a whole file into memory: the full TinyStories train file (~1.9 GB) streams
line by line. Stories are cleaned the same way whatever the source: CRLF becomes LF, each
line is stripped, blank lines are dropped (TinyStories separates paragraphs with a single
newline). The train/validation split is a hash of the story's index, so it is the same on
every machine and needs no shuffling of the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..config import DataConfig

SEPARATOR = "<|endoftext|>"
HUB_DATASET = "roneneldan/TinyStories"
HUB_V2_FILES = {"train": "TinyStoriesV2-GPT4-train.txt", "validation": "TinyStoriesV2-GPT4-valid.txt"}
NAMED_SOURCES = ("storyworld", "tinystories", "tinystories-v2")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
_TERMINAL = (".", "!", "?", '"', "'", ")")


class DataError(ValueError):
    """A story source cannot be read; the message says what was wrong and what to do."""


class PretrainedError(ValueError):
    """A pretrained model or tokenizer cannot be found or read; the one-line message says
    what to do (`lm.pretrained`, `lm.tinymodel`, `corpus.tinymodel_tokenizer`)."""


def clean_story(text: str) -> str:
    """Normalise line ends and whitespace: one story, paragraphs joined by single `\\n`."""
    lines = (line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def is_validation(index: int, seed: int, val_fraction: float) -> bool:
    """Whether story number `index` belongs to the validation split (stable everywhere)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


# --- local files ---------------------------------------------------------------------

def _read_txt(path: Path) -> Iterator[str]:
    """Stories from a TinyStories `.txt`: UTF-8, stories separated by `<|endoftext|>` lines.

    A last story without a closing separator is kept only if it ends like a sentence: the
    original files were cut at arbitrary bytes, and half a story teaches the model nothing.
    """
    offset = 0
    lines: list[str] = []
    separators = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}: not valid UTF-8 at byte offset {offset + err.start} "
                    f"(byte 0x{raw[err.start]:02x}); re-encode the file as UTF-8, e.g. "
                    f"`iconv -f latin1 -t utf-8`"
                ) from None
            offset += len(raw)
            if line.strip() == SEPARATOR:
                separators += 1
                story = clean_story("".join(lines))
                lines = []
                if story:
                    yield story
                continue
            lines.append(line)
            if not separators and offset > 1 << 20:
                break  # a megabyte without a separator: not this format, stop reading
    if offset == 0:
        raise DataError(f"{path} is empty: it holds no stories")
    if not separators:
        raise DataError(
            f"{path}: no line holding {SEPARATOR} found, so stories cannot be told apart. "
            f"Put a line with {SEPARATOR} after each story, or give a .jsonl/.parquet file "
            f"with a 'text' column"
        )
    tail = clean_story("".join(lines))
    if tail and tail.endswith(_TERMINAL):
        yield tail
    elif tail:
        warnings.warn(f"{path}: dropped the cut-off last story ({len(tail)} characters)",
                      stacklevel=2)


def _read_jsonl(path: Path) -> Iterator[str]:
    found = False
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DataError(f"{path}:{number}: not a JSON line ({err})") from None
            if not isinstance(record, dict) or "text" not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{path}:{number}: expected an object with a 'text' field, found {keys}")
            story = clean_story(str(record["text"]))
            if story:
                found = True
                yield story
    if not found:
        raise DataError(f"{path} holds no stories (empty file or only empty 'text' fields)")


def _read_parquet(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    if "text" not in table.schema_arrow.names:
        raise DataError(f"{path}: no 'text' column; columns are {', '.join(table.schema_arrow.names)}")
    found = False
    for batch in table.iter_batches(columns=["text"], batch_size=4096):
        for text in batch.column(0).to_pylist():
            story = clean_story(text or "")
            if story:
                found = True
                yield story
    if not found:
        raise DataError(f"{path} holds no stories")


def read_local(path: str | os.PathLike) -> Iterator[str]:
    """Stories from a local `.txt`, `.jsonl` or `.parquet` file, streamed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"no such file: {path}. --data takes {', '.join(NAMED_SOURCES)} or a path to a "
            f"{'/'.join(LOCAL_SUFFIXES)} file"
        )
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}
    if path.suffix not in readers:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(readers)}")
    return readers[path.suffix](path)


# --- the Hugging Face hub ------------------------------------------------------------

def _hub_error(what: str, reason: str) -> DataError:
    return DataError(
        f"cannot reach the Hugging Face hub for {what} ({reason}). Download it on a "
        f"machine with internet and pass the file (--data path/to/TinyStories-train.txt, "
        f".jsonl or .parquet), or use --data storyworld"
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def check_hub(what: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when the hub cannot be reached (no retry storms)."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE"):
        raise _hub_error(what, "HF_HUB_OFFLINE is set")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError as err:
        raise _hub_error(what, f"{type(err).__name__}: {err}") from None


def _read_hub(source: str) -> Iterator[str]:
    check_hub(f"{HUB_DATASET} ({source})")
    if source == "tinystories-v2":
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(HUB_DATASET, HUB_V2_FILES["train"], repo_type="dataset")
        yield from _read_txt(Path(local))
        return
    import datasets

    stream = datasets.load_dataset(HUB_DATASET, split="train", streaming=True)
    for record in stream:
        story = clean_story(record["text"])
        if story:
            yield story


# --- the one entry point -------------------------------------------------------------

def all_stories(cfg: DataConfig) -> Iterator[str]:
    """Every story of the configured source, in source order, capped at `max_stories`."""
    if cfg.source == "storyworld":
        from . import storyworld

        stream = storyworld.story_texts(cfg.max_stories, seed=cfg.seed)
    elif cfg.source in ("tinystories", "tinystories-v2"):
        stream = _read_hub(cfg.source)
    else:
        stream = read_local(cfg.source)
    for index, story in enumerate(stream):
        if cfg.max_stories and index >= cfg.max_stories:
            return
        yield story


def iter_stories(cfg: DataConfig, split: str | None = None) -> Iterator[str]:
    """Stories of `split` ("train", "val" or None for both), streamed in source order."""
    if split not in ("train", "val", None):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    for index, story in enumerate(all_stories(cfg)):
        if split is None or (split == "val") == is_validation(index, cfg.seed, cfg.val_fraction):
            yield story


def source_fingerprint(cfg: DataConfig) -> dict:
    """What identifies the source's content, for the stage hash: a local file's size and
    a digest of its first and last 64 KiB (cheap, and changes when the file does)."""
    if cfg.source in NAMED_SOURCES:
        return {"source": cfg.source}
    path = Path(cfg.source)
    if not path.is_file():
        return {"source": cfg.source, "missing": True}
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 16))
        f.seek(max(0, size - (1 << 16)))
        digest.update(f.read(1 << 16))
    return {"source": str(path.resolve()), "bytes": size, "sha256_ends": digest.hexdigest()[:16]}
