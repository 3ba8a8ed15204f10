"""The text stages: tokenizer, shards and the language model (with its in-context
probes, `lm/in_context.json`)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_json
from ..corpus.shards import Shards, token_dtype, write_split
from ..corpus.sources import iter_stories
from ..corpus.tokenizer import (BPETokenizer, RemapTokenizer, build_remap, load_base_tokenizer,
                                load_tokenizer, train_bpe, unk_rates)
from .registry import stage

if TYPE_CHECKING:
    from ..pipeline import Run


def _sample_texts(run: Run, split: str, n: int) -> list[str]:
    return list(itertools.islice(iter_stories(run.cfg.data, split), n))


def bytes_per_token(tokenizer: BPETokenizer | RemapTokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)


@stage("tokenizer", needs=(), reads=("data", "tokenizer"))
def build_tokenizer(run: Run, folder: Path) -> dict:
    cfg = run.cfg.tokenizer
    limit = cfg.train_stories or None
    train_texts = itertools.islice(iter_stories(run.cfg.data, "train"), limit)
    summary: dict = {"kind": cfg.kind}
    if cfg.kind == "bpe":
        tokenizer = train_bpe(train_texts, cfg.vocab_size, cfg.min_frequency)
        summary["learned_vocab"] = tokenizer.tokenizer.get_vocab_size()
    else:
        if cfg.base_tokenizer:
            base = load_base_tokenizer(cfg.base_tokenizer)
        else:
            base = train_bpe(train_texts, cfg.vocab_size, cfg.min_frequency).tokenizer
            train_texts = itertools.islice(iter_stories(run.cfg.data, "train"), limit)
        tokenizer = build_remap(base, train_texts, cfg.top_k)
        summary["kept_tokens"] = len(tokenizer.kept_base_ids)
        summary.update(unk_rates(tokenizer, _sample_texts(run, "val", 5000)))
    tokenizer.save(folder)
    summary["vocab_size"] = tokenizer.vocab_size
    summary["val_bytes_per_token"] = bytes_per_token(tokenizer, _sample_texts(run, "val", 1000))
    return summary


@stage("shards", needs=("tokenizer",), reads=("data", "shards"))
def build_shards(run: Run, folder: Path) -> dict:
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    splits = {}
    for split in ("train", "val"):
        splits[split] = write_split(tokenizer, iter_stories(run.cfg.data, split),
                                    folder / f"{split}.bin",
                                    run.cfg.shards.encode_batch_stories, desc=f"encode {split}")
    meta = {"splits": splits, "dtype": token_dtype(tokenizer.vocab_size).name,
            "start_id": tokenizer.start_id, "vocab_size": tokenizer.vocab_size,
            "tokenizer_hash": tokenizer.hash}
    atomic_write_json(folder / "meta.json", meta)
    return {"train_tokens": splits["train"]["tokens"], "val_tokens": splits["val"]["tokens"],
            "train_stories": splits["train"]["stories"], "val_stories": splits["val"]["stories"],
            "dtype": meta["dtype"]}


@stage("lm", needs=("tokenizer", "shards"), reads=("model", "train"), resumable=True)
def build_lm(run: Run, folder: Path) -> dict:
    from ..lm.train import train_lm  # torch-heavy; the data stages do not need it

    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    shards = Shards.open(run.stage_dir("shards"))
    summary = train_lm(run.cfg.resolved_model, run.cfg.train, shards, folder,
                       decode=tokenizer.decode, start_id=tokenizer.start_id)
    keep = ("steps", "tokens", "train_loss", "val_loss", "unigram_entropy", "tokens_per_s",
            "parameters", "wall_time_s")
    out = {k: summary[k] for k in keep if k in summary}
    if summary.get("finished") and int(os.environ.get("RANK", "0")) == 0:
        probes = measure_in_context(run, folder)
        out.update(name_repeat_ratio=probes["name_repeat_ratio"],
                   induction_score=probes["repeated_tokens"]["best_induction"],
                   second_copy_ratio=probes["second_copy_ratio"])
    return out


IN_CONTEXT_STORIES = 200  # stories the name probe reads


def measure_in_context(run: Run, folder: Path) -> dict:
    """The LM's in-context abilities (`interpret.in_context`), written to in_context.json:
    on storyworld, fresh stories past the corpus's last (never trained on) with exact labels;
    on other text, the validation split with names found by rule (`probe_stories`)."""
    from ..interpret.in_context import in_context_summary
    from ..lm.model import load_model

    model = load_model(folder)
    result = in_context_summary(model, load_tokenizer(run.stage_dir("tokenizer")),
                                probe_stories(run), Shards.open(run.stage_dir("shards")).tokens("train"))
    result["source"] = probe_source(run)
    atomic_write_json(folder / "in_context.json", result)
    return result


def probe_stories(run: Run) -> list:
    """The stories the in-context probes read: on storyworld, fresh ones past the corpus's
    last (never trained on, exact labels); on other text, the validation split with names
    found by rule (`interpret.in_context.text_story`)."""
    from ..corpus.storyworld import generate_stories
    from ..interpret.in_context import text_story

    data = run.cfg.data
    if data.source == "storyworld":
        return list(generate_stories(IN_CONTEXT_STORIES, seed=data.seed, start=data.max_stories))
    return [text_story(t) for t in _sample_texts(run, "val", IN_CONTEXT_STORIES)]


def probe_source(run: Run) -> str:
    """Where `probe_stories` come from, in words for the records and pages."""
    return "storyworld (fresh stories)" if run.cfg.data.source == "storyworld" else "val split, names by rule"
