"""The head catalogue of a public model, beside a study's hand-written table of its heads.

    model, tokenizer = load_pretrained("path/to/TinyStories-1Layer-21M")
    heads = pretrained_heads(model, tokenizer)          # heads.json's shape: scores, catalogue
    heads["study"] = beside_study(heads["catalogue"], load_study())
    atomic_write_json(folder / "heads.json", heads)
    write_heads_page(folder)                            # report.heads_page: the side-by-side

`pretrained_heads` runs the heads stage's measurements that need no training run (pattern
scores on storyworld stories and on [start] + R + R, OV copying, zero and mean ablation on
the stories' labelled tokens and the second copy of R) and the catalogue on any of our GPTs,
a `load_pretrained` one included. `beside_study` joins that catalogue with a study's table
by head name (L0H3), so each head reads as ours | theirs. The study's table is data, not
code: data/heads/tinystories_1layer_21m_study.json (`STUDY_PATH`), {"title", "url",
"model", "heads": {"L0H0": "its description", ...}}, copied from the study; `load_study`
says what to do when it is not there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..corpus.storyworld import Story, generate_stories
from .ablation import ablation_table, induction_groups, story_groups
from .catalogue import catalogue, parse_head
from .formation import nan_to_none, story_batch
from .heads import SCORES, copying_scores, head_scores, pivot_ids
from .in_context import repeated_sequences

STUDY_MODEL = "roneneldan/TinyStories-1Layer-21M"
STUDY_PATH = Path(__file__).resolve().parents[2] / "data" / "heads" / "tinystories_1layer_21m_study.json"
STORY_TOKENS = 128  # the ablations' stories are cut here: 16 heads x a 50k-token unembedding on a CPU


def pretrained_heads(model, tokenizer, stories: Sequence[Story] | None = None, *, n_seqs: int = 32,
                     length: int = 40, ablation_stories: int = 16, seed: int = 0) -> dict:
    """Every head of `model` measured as the heads stage measures it, without a run: a dict
    in heads.json's shape ({"scores": {"stories", "repeated_tokens"}, "score_names",
    "prompts", "copying", "ablation": {"zero", "mean"}, "catalogue"}), each grid
    (n_layers, n_heads) nested lists (None where no query had a target).

    `stories` default to 64 storyworld stories (seed 0), TinyStories-like text with exact
    labels; R + R draws from the token ids those stories hold, so every R token is one the
    model reads in context. The first `ablation_stories` stories, cut to `STORY_TOKENS`,
    are the ablations' labelled tokens."""
    stories = list(generate_stories(64, seed=seed)) if stories is None else list(stories)
    if not stories:
        raise ValueError("no stories to score the heads on: pass some, or None for 64 storyworld stories")
    n_ctx, start = model.cfg.n_ctx, tokenizer.start_id
    tokens = story_batch(tokenizer, stories, n_ctx)
    seen = sorted({int(i) for s in stories for i in tokenizer.encode(s.text)} - {start})
    length = min(length, (n_ctx - 1) // 2)
    repeated = repeated_sequences(seen, n_seqs, length, seed=seed, start_id=start)
    marks = pivot_ids(tokenizer, model.cfg.d_vocab)
    scores = {on: {name: nan_to_none(v.tolist()) for name, v in
                   head_scores(model, batch, start_id=start, pivot_ids=marks).items()}
              for on, batch in (("stories", tokens), ("repeated_tokens", repeated))}
    batches = [story_groups(tokenizer, stories[:ablation_stories], min(n_ctx, STORY_TOKENS)),
               induction_groups(repeated)]
    ablation = {mode: ablation_table(model, batches, mode) for mode in ("zero", "mean")}
    for table in ablation.values():  # a group with no tokens is NaN: null in JSON
        table["clean"] = {g: nan_to_none(v) for g, v in table["clean"].items()}
        table["delta"] = {g: nan_to_none(v) for g, v in table["delta"].items()}
    copying = nan_to_none(copying_scores(model).tolist())
    # as the stage does: the story scores, and induction on R + R, where only copying explains it
    described = {**scores["stories"], "induction": scores["repeated_tokens"]["induction"]}
    return {"scores": scores, "score_names": list(SCORES),
            "prompts": {"stories": f"{len(stories)} storyworld stories, first {tokens.shape[1]} tokens",
                        "repeated_tokens": f"{n_seqs} x [start] + R + R, R = {length} tokens of the stories"},
            "copying": copying, "ablation": ablation,
            "catalogue": catalogue(described, copying, ablation["mean"]["delta"])}


def load_study(path: str | os.PathLike | None = None) -> dict:
    """The study's table ({"title", "url", "heads": {head name: description}}), from `path`
    or `STUDY_PATH`; a missing file or field is a one-line error saying what to write."""
    path = Path(path) if path is not None else STUDY_PATH
    if not path.is_file():
        raise FileNotFoundError(f"no study table at {path}: transcribe the study's table of heads there as "
                                f'{{"title", "url", "heads": {{"L0H0": "its description", ...}}}}')
    study = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in ("title", "url", "heads") if key not in study]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: a study table holds title, url and heads "
                         f'({{"L0H0": "its description", ...}})')
    return study


def beside_study(entries: Sequence[dict], study: dict) -> dict:
    """Our catalogue (`catalogue`'s entries) joined with the study's table by head name:
    {"title", "url", "rows": [{"head", "ours", "labels", "study"}]}, one row per head of
    ours in order, "study" None where the study says nothing of it. A head the study names
    that this model does not have is a one-line ValueError (is it the study's model?)."""
    if not entries:
        raise ValueError("an empty catalogue: run `catalogue` (or `pretrained_heads`) on the model first")
    n_layers = 1 + max(e["layer"] for e in entries)
    n_heads = 1 + max(e["index"] for e in entries)
    said = {}
    for name, text in study["heads"].items():
        layer, head = parse_head(name, n_layers, n_heads)  # "L0H16 does not exist: this model has ..."
        said[f"L{layer}H{head}"] = text
    rows = [{"head": e["head"], "ours": e["description"].split(": ", 1)[-1],
             "labels": [label for label, _ in e["labels"]], "study": said.get(e["head"])} for e in entries]
    return {"title": study["title"], "url": study.get("url"), "rows": rows}


__all__ = ["STUDY_MODEL", "STUDY_PATH", "STORY_TOKENS", "pretrained_heads", "load_study", "beside_study"]
