"""The command line, on top of `pipeline`.

    tinycourse run [--preset P] [--name NAME] [--runs-dir DIR] [--data SOURCE]
                   [--stages S1,S2] [--set stage.field=value ...] [--force]
    tinycourse status [--runs-dir DIR] [--name NAME]
    tinycourse storyworld [--n N] [--seed S]
    tinycourse tasks [--out DIR] [--check]
    tinycourse export-sae RUN_OR_PATH --format saelens OUT
    tinycourse report [--runs-dir DIR] [--name NAME] [--out FILE] [--static]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, apply_overrides, preset
from .corpus.sources import DataError
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

    tasks = commands.add_parser("tasks", help="regenerate the storyworld capability suites in data/tasks/storyworld")
    tasks.add_argument("--out", type=Path, help="folder to write (default: the course's data/tasks/storyworld)")
    tasks.add_argument("--check", action="store_true",
                       help="write nothing; fail if the files differ from what the generator writes")

    export = commands.add_parser("export-sae", help="write a trained SAE/transcoder in another library's format")
    export.add_argument("source", metavar="RUN_OR_PATH",
                        help="a run folder or name (uses its sae stage), a stage folder, or an SAE folder")
    export.add_argument("out", metavar="OUT", type=Path, help="folder to write (created if missing)")
    export.add_argument("--format", dest="fmt", default="saelens", choices=["saelens"],
                        help="saelens: cfg.json + sae_weights.safetensors for SAE.load_from_disk")
    export.add_argument("--runs-dir", type=Path, help="where to look up a run name")

    report = commands.add_parser("report", help="write the run's self-contained HTML report and print headline figures")
    report.add_argument("--runs-dir", type=Path)
    report.add_argument("--name", default="tiny")
    report.add_argument("--out", type=Path, help="default: runs/<name>/report/index.html")
    report.add_argument("--static", action="store_true",
                        help="no JavaScript: attention as a figure instead of CircuitsVis (a smaller page)")
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
    page = run.stage_dir("report") / "index.html"
    if (stages is None or "report" in stages) and page.exists():
        from .report import format_headline, headline

        print(f"report: {page}  (open it in a browser; it works offline)")
        print(format_headline(headline(run.root)))


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
    from .corpus.storyworld import generate_stories

    for story in generate_stories(args.n, seed=args.seed):
        print(story.text)
        print("<|endoftext|>")


def _tasks(args: argparse.Namespace) -> int:
    from .corpus.tasks import DATA_DIR, stale_storyworld_suites, write_storyworld_suites

    folder = args.out or DATA_DIR / "storyworld"
    if args.check:
        stale = stale_storyworld_suites(folder)
        for path in stale:
            print(f"out of date: {path}")
        if stale:
            print("regenerate them with `tinycourse tasks`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_storyworld_suites(folder):
        print(f"wrote {path}")
    return 0


def _export_sae(args: argparse.Namespace) -> None:
    from .sae.export import export_sae

    source = Path(args.source)
    if not source.exists():  # a run name: look it up where runs live
        named = Path(args.runs_dir or default_runs_dir()) / args.source
        source = named if named.exists() else source
    out = export_sae(source, args.out, args.fmt)
    print(f"wrote {out} ({args.fmt}); load it with "
          f"sae_lens.SAE.load_from_disk({str(out)!r})")


def _report(args: argparse.Namespace) -> None:
    from .report import format_headline, headline, write_report

    root = Path(args.runs_dir or default_runs_dir()) / args.name
    if not root.is_dir():
        raise FileNotFoundError(f"no run named {args.name!r} in {root.parent}")
    path = write_report(root, args.out or root / "report" / "index.html", interactive=not args.static)
    print(f"report: {path}")
    print(format_headline(headline(root)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = {"run": _run, "status": _status, "storyworld": _storyworld, "tasks": _tasks,
                "export-sae": _export_sae, "report": _report}[args.command](args)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"tinycourse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return code or 0


