"""What grows an induction head on `tiny`? The preset beside itself without each change.

    python benchmarks/bench_induction.py                          # five variants, the preset's steps
    python benchmarks/bench_induction.py --variants preset --seed 1
    python benchmarks/bench_induction.py --variants preset --set train.repeat_share=0.125

Each variant trains the tiny preset's LM with the `lm` stage's own trainer (`train_lm`:
its shape, optimizer, schedule, repeat windows and snapshots at steps 0, 16, 32, ..., the
last) on the run's storyworld shards, with the variant's overrides on top of `--set`. Then
every snapshot is probed for what issue 12 holds the model to: the best head's induction
score and second / first copy loss on [start] + R + R (`interpret.in_context.induction_probe`:
32 sequences, R 40 tokens seen at least 20 times in training; >= 0.3 and <= 0.5 asked), and
name repeat / first mention loss on 60 storyworld stories the corpus never held (seed
12345; <= 0.5 asked). The last columns are the final validation loss on stories and the
training time (the `lm` stage's wall time, evaluations and snapshots included).

Variants:
    preset       the tiny preset as it is (smeared keys in layer 1, a quarter of each batch
                 repeat windows)
    no-smear     model.smeared_keys=() : keys as GPT-2's
    no-repeats   train.repeat_share=0  : stories only
    neither      both taken away: the preset before issue 12 (its steps aside)
    half-start   the preset, its smeared keys starting at half and half (SMEAR_INIT 0)

Needs the run's tokenizer and shards (`tinycourse run --preset tiny --stages tokenizer,shards`);
writes each variant's LM under `--out` (default runs/bench_induction/<variant>_seed<seed>; a variant
already trained there with the same config is probed again, not retrained). Prints one row
per snapshot; figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

import tinycourse.lm.model as lm_model
from tinycourse.config import apply_overrides, preset
from tinycourse.corpus.shards import Shards
from tinycourse.corpus.storyworld import generate_stories
from tinycourse.corpus.tokenizer import load_tokenizer
from tinycourse.interpret.in_context import induction_probe, name_losses, training_token_ids
from tinycourse.lm.snapshots import list_snapshots
from tinycourse.lm.train import train_lm

VARIANTS = {
    "preset": (),
    "half-start": (),  # the smear's share starts at 0.5 (lm.model.SMEAR_INIT = 0), not 0.88
    "no-smear": ("model.smeared_keys=",),
    "no-repeats": ("train.repeat_share=0",),
    "neither": ("model.smeared_keys=", "train.repeat_share=0"),
}
FRESH_SEED, FRESH_STORIES = 12345, 60


def bench_variant(variant: str, run: Path, out: Path, seed: int, overrides: tuple[str, ...]) -> list[dict]:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    cfg = apply_overrides(preset("tiny"), [*overrides, *VARIANTS[variant], f"train.seed={seed}"])
    shards, tokenizer = Shards.open(run / "shards"), load_tokenizer(run / "tokenizer")
    lm_dir = out / f"{variant}_seed{seed}"
    start = lm_model.SMEAR_INIT
    lm_model.SMEAR_INIT = 0.0 if variant == "half-start" else start  # read as each Attention is built
    try:
        summary = train_lm(cfg.resolved_model, cfg.train, shards, lm_dir, decode=tokenizer.decode)
    finally:
        lm_model.SMEAR_INIT = start
    ids = np.array(training_token_ids(shards.tokens("train"), exclude=[tokenizer.start_id]))
    stories = list(generate_stories(FRESH_STORIES, seed=FRESH_SEED))
    rows = []
    for snapshot in list_snapshots(lm_dir):
        model = snapshot.load()
        probe = induction_probe(model, ids, start_id=tokenizer.start_id)
        groups = name_losses(model, tokenizer, stories)
        last = snapshot.step == summary["steps"]
        row = {"variant": variant, "step": snapshot.step, "induction": probe["best_induction"],
               "head": "L{}H{}".format(*probe["best_head"]),
               "copy_ratio": probe["second_copy_loss"] / probe["first_copy_loss"],
               "name_ratio": groups["name_repeat"]["loss"] / groups["name_first"]["loss"],
               "val_loss": summary["val_loss"] if last else None,
               "seconds": summary["wall_time_s"] if last else None}
        print(_line(row), flush=True)
        rows.append(row)
    return rows


def _line(row: dict) -> str:
    val = "-" if row["val_loss"] is None else f"{row['val_loss']:.3f}"
    seconds = "-" if row["seconds"] is None else f"{row['seconds']:.0f}"
    return (f"| {row['variant']} | {row['step']:,} | {row['induction']:.3f} ({row['head']}) | "
            f"{row['copy_ratio']:.3f} | {row['name_ratio']:.3f} | {val} | {seconds} |")


HEADER = ("| variant | step | best induction (head) | second / first copy | name repeat / first | "
          "val loss | lm s |\n|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/tiny"), help="a tiny run with tokenizer and shards")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_induction"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                        help="override a field of the tiny preset for every variant, e.g. --set train.max_steps=3000")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    for needed in ("tokenizer", "shards"):
        if not (args.run / needed).is_dir():
            raise SystemExit(f"{args.run / needed} is missing: build it with "
                             f"`tinycourse run --preset tiny --stages tokenizer,shards`")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; seed {args.seed}; overrides {args.set or 'none'}\n{HEADER}")
    last = [bench_variant(v, args.run, args.out, args.seed, tuple(args.set))[-1]
            for v in args.variants.split(",")]
    print("\nAt the last step:\n" + HEADER)
    for row in last:
        print(_line(row))
    print(json.dumps(last))


if __name__ == "__main__":
    main()
