"""Does an induction head form on `tiny`, and when? Training variants side by side.

    python benchmarks/bench_induction.py --run runs/tiny                    # every variant, 2,000 steps
    python benchmarks/bench_induction.py --run runs/tiny --variants preset --steps 12000 --every 500
    python benchmarks/bench_induction.py --run runs/tiny --variants copy25,sinusoidal+copy25

Each variant trains the tiny preset's model (its shape, optimizer, schedule over `--steps`,
seed) on the run's storyworld shards with one thing changed, and measures every `--every`
steps what issue 12 holds the model to: the best head's induction score and the second /
first copy loss on [start] + R + R (`interpret.in_context.induction_probe`: 32 sequences, R
40 tokens seen at least 20 times in training), and every 1,000 steps and at the end the loss
on name repeats / first mentions on 60 storyworld stories the corpus never held (seed 12345).
The issue asks for induction >= 0.3 and both ratios <= 0.5.

Variants (combine with +, e.g. sinusoidal+copy25):
    preset      the tiny preset as it is
    sinusoidal  model.pos_init=sinusoidal: the position embedding starts as sines and cosines
    copy25      a quarter of every batch's windows replaced by [start] + R + R (+ random tokens
                to fill the window), R 20 to 64 distinct training tokens: the probe's own form
    copy100     every window so: the copying task alone, no stories
`--alphabet N` draws the copy windows' R from the N most frequent training tokens only (the
probe still draws from all of them), to test whether a copying head that forms on a few
tokens carries over to the rest. `--set stage.field=value` (repeatable) changes the preset
itself, as `tinycourse run --set` does: e.g. `--set model.init_std=0.12`.

Needs the run's tokenizer and shards (`tinycourse run --preset tiny --stages tokenizer,shards`).
Prints one row per measurement and a table of the last; figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tinycourse.config import apply_overrides, preset
from tinycourse.corpus.shards import Shards, WindowSampler, token_counts
from tinycourse.corpus.storyworld import generate_stories
from tinycourse.corpus.tokenizer import load_tokenizer
from tinycourse.interpret.in_context import induction_probe, name_losses, training_token_ids
from tinycourse.lm.model import GPT
from tinycourse.lm.train import lm_loss, lr_at, make_optimizer

VARIANTS = ("preset", "sinusoidal", "copy25", "copy100")
FRESH_SEED, FRESH_STORIES = 12345, 60


def copy_windows(rng: np.random.Generator, ids: np.ndarray, n: int, width: int, start_id: int) -> torch.Tensor:
    """(n, width) int64: each row [start] + R + R, R 20 to (width - 1) // 2 distinct tokens of
    `ids`, then tokens of `ids` drawn at random to fill the row. One copy per row, so every
    token of the second R has exactly one earlier occurrence to look back to."""
    rows = []
    for _ in range(n):
        r = rng.choice(ids, size=int(rng.integers(20, (width - 1) // 2 + 1)), replace=False)
        pad = rng.choice(ids, size=width - 1 - 2 * len(r))
        rows.append(np.concatenate([[start_id], r, r, pad]))
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def train_variant(variant: str, run: Path, steps: int, every: int, seed: int,
                  alphabet: int = 0, overrides: tuple[str, ...] = ()) -> list[dict]:
    parts = set(variant.split("+"))
    if not parts <= set(VARIANTS):
        raise SystemExit(f"unknown variant {variant!r}: combine {', '.join(VARIANTS)} with +")
    cfg = apply_overrides(preset("tiny"), list(overrides))
    model_cfg = dataclasses.replace(cfg.resolved_model,
                                    pos_init="sinusoidal" if "sinusoidal" in parts else "normal")
    train_cfg = dataclasses.replace(cfg.train, max_steps=steps, seed=seed)
    shards, tokenizer = Shards.open(run / "shards"), load_tokenizer(run / "tokenizer")
    train = shards.tokens("train")
    ids = np.array(training_token_ids(train, exclude=[tokenizer.start_id]))
    copy_ids = ids
    if alphabet:
        counts = token_counts(train, int(ids.max()) + 1)[ids]
        copy_ids = ids[np.argsort(-counts, kind="stable")[:alphabet]]
    stories = list(generate_stories(FRESH_STORIES, seed=FRESH_SEED))
    share = 1.0 if "copy100" in parts else 0.25 if "copy25" in parts else 0.0
    n_copy = round(share * train_cfg.batch_size)

    torch.manual_seed(seed)
    model = GPT(model_cfg)
    optimizer = make_optimizer(model, train_cfg, torch.device("cpu"))
    sampler = WindowSampler(train, train_cfg.batch_size, model_cfg.n_ctx, seed=seed)
    rng = np.random.default_rng(seed + 1)
    rows, begun = [], time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, train_cfg)
        batch = sampler.batch(step)  # (batch, n_ctx + 1)
        if n_copy:
            batch[:n_copy] = copy_windows(rng, copy_ids, n_copy, model_cfg.n_ctx + 1, tokenizer.start_id)
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % every and done != steps:
            continue
        probe = induction_probe(model, ids, start_id=tokenizer.start_id)
        row = {"variant": variant, "step": done, "train_loss": loss.item(),
               "induction": probe["best_induction"], "head": "L{}H{}".format(*probe["best_head"]),
               "copy_ratio": probe["second_copy_loss"] / probe["first_copy_loss"],
               "name_ratio": None, "seconds": time.perf_counter() - begun}
        if done % 1000 == 0 or done == steps:
            groups = name_losses(model, tokenizer, stories)
            row["name_ratio"] = groups["name_repeat"]["loss"] / groups["name_first"]["loss"]
        print(_line(row), flush=True)
        rows.append(row)
    return rows


def _line(row: dict) -> str:
    name = "-" if row["name_ratio"] is None else f"{row['name_ratio']:.3f}"
    return (f"| {row['variant']} | {row['step']:,} | {row['induction']:.3f} ({row['head']}) | "
            f"{row['copy_ratio']:.3f} | {name} | {row['train_loss']:.3f} | {row['seconds']:.0f} |")


HEADER = ("| variant | step | best induction (head) | second / first copy | name repeat / first | "
          "train loss | s |\n|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/tiny"), help="a tiny run with tokenizer and shards")
    parser.add_argument("--variants", default="preset,sinusoidal,copy25,sinusoidal+copy25,copy100")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alphabet", type=int, default=0,
                        help="copy windows draw from the N most frequent training tokens (0: all)")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                        help="override a field of the tiny preset, e.g. --set model.init_std=0.06")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.alphabet and args.alphabet < 64:
        raise SystemExit(f"--alphabet {args.alphabet}: R holds up to 64 distinct tokens, so use 64 or more (0: all)")
    for needed in ("tokenizer", "shards"):
        if not (args.run / needed).is_dir():
            raise SystemExit(f"{args.run / needed} is missing: build it with "
                             f"`tinycourse run --preset tiny --stages tokenizer,shards`")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.steps:,} steps per variant; alphabet "
          f"{args.alphabet or 'all'}; overrides {args.set or 'none'}\n{HEADER}")
    last = [train_variant(v, args.run, args.steps, args.every, args.seed, args.alphabet, tuple(args.set))[-1]
            for v in args.variants.split(",")]
    print("\nAt the last step:\n" + HEADER)
    for row in last:
        print(_line(row))


if __name__ == "__main__":
    main()
