"""The heads stage: every head scored, ablated, patched and described (heads.json and
the catalogue page heads/index.html)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_json
from ..corpus.shards import Shards
from ..corpus.tokenizer import load_tokenizer
from .registry import stage
from .text import probe_source, probe_stories

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("heads", needs=("tokenizer", "shards", "lm"), reads=())
def build_heads(run: Run, folder: Path) -> dict:
    """Every head's pattern scores on stories and on [start] + R + R (ours and
    TransformerLens's head_detector's), Q/K/V composition with its random baseline, OV
    copying, zero and mean ablation of each head on labelled token groups, activation
    patching on indirect-object and on repeated-name pairs, a one-line description of each
    head, and head formation across the lm stage's snapshots (heads.json; see
    `interpret/heads.py`, `ablation.py`, `patching.py`, `catalogue.py`, `formation.py`);
    the queries where each head is most active (examples.json, `head_examples.py`), its
    patterns on a story and the TinyStories-1L-21M study's prompt (patterns.json), and the
    catalogue page of all of it, index.html (`report/heads_page.py`)."""
    from tqdm.auto import tqdm

    from ..artifacts import atomic_write_text
    from ..interpret.ablation import ablation_table, induction_groups, story_groups
    from ..interpret.catalogue import catalogue
    from ..interpret.formation import head_formation, nan_to_none, story_batch
    from ..interpret.head_examples import (MEASURES, STUDY_PROMPT, example_records, head_examples,
                                          prompt_patterns, token_label)
    from ..interpret.heads import (SCORES, composition_baseline, composition_scores,
                                  copying_scores, head_detector_scores, head_scores, pivot_ids)
    from ..interpret.in_context import repeated_sequences, training_token_ids
    from ..lm.model import load_model
    from ..lm.snapshots import list_snapshots
    from ..report.heads_page import write_heads_page

    lm_dir = run.stage_dir("lm")
    model = load_model(lm_dir)
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    stories = probe_stories(run)
    seen = training_token_ids(Shards.open(run.stage_dir("shards")).tokens("train"),
                              exclude=[tokenizer.start_id])
    length = min(40, (model.cfg.n_ctx - 1) // 2)
    marks = pivot_ids(tokenizer, model.cfg.d_vocab)
    prompts = {"stories": story_batch(tokenizer, stories, model.cfg.n_ctx),
               "repeated_tokens": repeated_sequences(seen, 32, length, seed=0,
                                                     start_id=tokenizer.start_id)}
    scores = {on: {name: nan_to_none(v.tolist()) for name, v in
                   head_scores(model, tokens, start_id=tokenizer.start_id, pivot_ids=marks).items()}
              for on, tokens in prompts.items()}
    # every head ablated alone, on the stories' labelled tokens and on the second copy of R
    batches = [story_groups(tokenizer, stories[:64], model.cfg.n_ctx), induction_groups(prompts["repeated_tokens"])]
    ablation = {mode: ablation_table(model, batches, mode) for mode in ("zero", "mean")}
    for table in ablation.values():  # a group with no tokens (no quotes in the text) is NaN: null in JSON
        table["clean"] = {g: nan_to_none(v) for g, v in table["clean"].items()}
        table["delta"] = {g: nan_to_none(v) for g, v in table["delta"].items()}
    copying = nan_to_none(copying_scores(model).tolist())
    # each head's description reads the story scores, and induction on R + R, where only copying explains it
    described = {**scores["stories"], "induction": scores["repeated_tokens"]["induction"]}
    formation = head_formation(list_snapshots(lm_dir), tokenizer, stories[:64], seen,
                               length=length,
                               progress=lambda xs: tqdm(xs, desc="heads: snapshots", unit="snapshot"))
    result = {
        "scores": scores, "score_names": list(SCORES), "prompts": {
            "stories": f"{len(stories)} stories ({probe_source(run)}), first "
                       f"{prompts['stories'].shape[1]} tokens",
            "repeated_tokens": f"32 x [start] + R + R, R = {length} random training tokens"},
        "head_detector": {name: v.tolist() for name, v in head_detector_scores(model, prompts["stories"]).items()},
        "composition": {k: nan_to_none(v.tolist()) for k, v in composition_scores(model).items()},
        "composition_baseline": composition_baseline(model),
        "copying": copying,
        "ablation": ablation,
        "catalogue": catalogue(described, copying, ablation["mean"]["delta"]),
        "patching": ioi_patching(model, tokenizer),
        "patching_repeated_name": repeated_name_patching(model, tokenizer),
        "formation": formation,
    }
    atomic_write_json(folder / "heads.json", result)
    # the page heads/index.html: where each head is most active on the stories, its patterns on two prompts
    examples = head_examples(model, prompts["stories"].split(32), n=8, start_id=tokenizer.start_id)
    atomic_write_json(folder / "examples.json", {
        "measure": examples.measure, "measure_text": MEASURES[examples.measure], "prompts": result["prompts"]["stories"],
        "heads": example_records(examples, lambda i: token_label(tokenizer, i))})
    shown = ((f"the first probe story, {probe_source(run)}", stories[0].text), ("the TinyStories-1L-21M study's prompt", STUDY_PROMPT))
    patterns = {"prompts": [{"title": title, **prompt_patterns(model, tokenizer, text)} for title, text in shown]}
    atomic_write_text(folder / "patterns.json", json.dumps(patterns, separators=(",", ":")))  # compact: a grid per head
    write_heads_page(folder, title=f"Attention heads of run {run.root.name}")

    def best(on: str, name: str) -> float:
        return max(v for row in scores[on][name] for v in row if v is not None)

    return {"best_previous_token": best("stories", "previous_token"),
            "best_induction": best("repeated_tokens", "induction"),
            "labelled_heads": sum(bool(e["labels"]) for e in result["catalogue"]),
            "snapshots": len(formation)}


def ioi_patching(model, tokenizer) -> dict | None:
    """Activation patching on indirect-object pairs with the giver swapped
    (`interpret/patching.py`): each head's output and the residual stream at each layer and
    position, patched from clean into corrupted. None when the tokenizer has fewer than two
    one-token names to build the pairs from."""
    from ..corpus.storyworld import NAMES
    from ..interpret.patching import IOI_TEMPLATE, ioi_pairs, patch_heads, patch_residual

    pairs = ioi_pairs(tokenizer, [c.name for c in NAMES if c.kind in ("girl", "boy")])
    if pairs is None:
        return None
    clean = pairs[0]
    return {"template": IOI_TEMPLATE, "pairs": len(clean),
            "tokens": [tokenizer.decode([i]) for i in clean[0].tolist()],
            "heads": patch_heads(model, *pairs), "residual": patch_residual(model, *pairs)}


def repeated_name_patching(model, tokenizer) -> dict | None:
    """Activation patching on repeated-name pairs (`interpret/patching.py`): a storyworld
    name's first mention replaced by another of its kind and token length, the answer the
    name's first token where it is about to be repeated; each head's output and the
    residual stream at each layer and position, patched from clean into corrupted. None
    when the tokenizer gives no such pair, or the prompts exceed n_ctx."""
    from ..interpret.patching import REPEATED_NAME_TEMPLATE, patch_heads, patch_residual, repeated_name_pairs

    try:
        pairs = repeated_name_pairs(tokenizer)
    except ValueError:  # no two names of one token length: nothing to patch, as for IOI's None
        return None
    clean, corrupted = pairs[0], pairs[1]
    if clean.shape[1] > model.cfg.n_ctx:
        return None
    # the positions some pair's tokens differ at: inside the first mention, which starts at the first
    return {"template": REPEATED_NAME_TEMPLATE, "pairs": len(clean),
            "replaced": (clean != corrupted).any(0).nonzero()[:, 0].tolist(),
            "example": {"clean": tokenizer.decode(clean[0, 1:].tolist()),
                        "corrupted": tokenizer.decode(corrupted[0, 1:].tolist())},
            "tokens": [tokenizer.decode([i]) for i in clean[0].tolist()],
            "heads": patch_heads(model, *pairs), "residual": patch_residual(model, *pairs)}
