"""The command line, on top of `pipeline`.

    tinycourse run [--preset P] [--name NAME] [--runs-dir DIR] [--data SOURCE]
                   [--stages S1,S2] [--set stage.field=value ...] [--force]
    tinycourse status [--runs-dir DIR] [--name NAME]
    tinycourse storyworld [--n N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, apply_overrides, preset
from .data import DataError
from .pipeline import STAGES, Run, default_runs_dir, status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinycourse", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="build the pipeline's stages, reusing finished ones")
    run.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESETS)} (default tiny)")
    run.add_argument("--name", help="run name (default: the preset's name)")
    run.add_argument("--runs-dir", type=Path, help="where runs live (default $TINYCOURSE_RUNS or runs/)")
    run.add_argument("--data", help="storyworld, tinystories, tinystories-v2, or a .txt/.jsonl/.parquet path")
    run.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default all)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                     help="override a config field, e.g. --set model.n_layers=1 (repeatable)")
    run.add_argument("--force", action="store_true", help="rebuild the named stages even if up to date")

    stat = commands.add_parser("status", help="show each stage of a run, done or not, with key figures")
    stat.add_argument("--runs-dir", type=Path)
    stat.add_argument("--name", default="tiny")

    world = commands.add_parser("storyworld", help="print stories from the embedded generator")
    world.add_argument("--n", type=int, default=3)
    world.add_argument("--seed", type=int, default=0)
    return parser


def _run(args: argparse.Namespace) -> None:
    cfg = preset(args.preset)
    if args.data:
        cfg = apply_overrides(cfg, [f"data.source={args.data}"])
    cfg = apply_overrides(cfg, args.overrides)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    for name in stages or []:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    run = Run(cfg, name=args.name, runs_dir=args.runs_dir,
              force=(set(stages) if stages else True) if args.force else False)
    started = time.time()
    print(f"tinycourse {cfg.preset}: run folder {run.root}")
    run.run(stages)
    print(f"finished in {time.time() - started:.1f}s; results in {run.root}")


def _status(args: argparse.Namespace) -> None:
    runs_dir = args.runs_dir or default_runs_dir()
    root = Path(runs_dir) / args.name
    if not root.exists():
        print(f"no run named {args.name!r} in {runs_dir}; start one with `tinycourse run --name {args.name}`")
        return
    print(f"run {root}")
    for row in status(runs_dir, args.name):
        figures = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row["summary"].items())
        print(f"  {row['stage']:<12} {row['state']:<8} {figures}")


def _storyworld(args: argparse.Namespace) -> None:
    from .storyworld import generate_stories

    for story in generate_stories(args.n, seed=args.seed):
        print(story.text)
        print("<|endoftext|>")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"run": _run, "status": _status, "storyworld": _storyworld}[args.command](args)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"tinycourse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


