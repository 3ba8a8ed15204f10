"""The stages in order, and the `Run` that builds them.

This is the one module that knows the stage order (`ORDER`). Each stage is a function in
`stages/` that gets the `Run` and an empty (or, for resumable stages, partly filled)
folder, writes its files there, and returns a summary of key figures; `Run.ensure` wraps
it with the manifest rules of `rundir.py`. A notebook asks for what it needs and gets it built if missing:

    run = Run(preset("tiny"))
    shards = run.shards()          # builds tokenizer and shards if needed
"""


from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from . import __version__
from .config import CourseConfig, config_hash
from .corpus.shards import Shards
from .corpus.sources import source_fingerprint
from .corpus.tokenizer import BPETokenizer, RemapTokenizer, load_tokenizer
from .rundir import RunDir
# importing a stage module registers its stages; the names below are the ones notebooks,
# tests and other modules use from here
from .stages import capabilities, circuits, dictionaries, features, heads, report, text
from .stages.capabilities import build_capabilities, load_other_model, other_models, same_tokenizer
from .stages.features import token_text
from .stages.heads import build_heads
from .stages.registry import STAGES, Stage, stage
from .stages.text import bytes_per_token, probe_stories

ORDER = ("tokenizer", "shards", "lm", "heads", "capabilities", "activations", "sae", "sweep",
         "eval", "transcoders", "features", "circuits", "report")
if set(ORDER) != set(STAGES):
    raise RuntimeError(f"pipeline.ORDER {ORDER} and the registered stages {tuple(STAGES)} differ")
_registered = dict(STAGES)
STAGES.clear()
STAGES.update((name, _registered[name]) for name in ORDER)  # the course's order, for everyone


def default_runs_dir() -> Path:
    """`$TINYCOURSE_RUNS`, else `runs/` at the course's root (found from the working
    directory, so notebooks/ and the repo root share one), else `./runs`."""
    if os.environ.get("TINYCOURSE_RUNS"):
        return Path(os.environ["TINYCOURSE_RUNS"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "tinycourse").is_dir():
            return folder / "runs"
    return here / "runs"


class Run:
    """One course run: a config, a folder, and the stages built in it.

    `force` names stages to rebuild even if their manifest matches (True = all asked for).
    `log` receives one line per stage (the CLI prints them; notebooks too).
    """

    def __init__(self, cfg: CourseConfig, name: str | None = None,
                 runs_dir: str | os.PathLike | None = None,
                 force: bool | Iterable[str] = False, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.dir = RunDir(runs_dir if runs_dir is not None else default_runs_dir(),
                          name or cfg.preset)
        self.force = force if isinstance(force, bool) else set(force)
        self.log = log
        self._checked: set[str] = set()  # stages known up to date in this Run

    @property
    def root(self) -> Path:
        return self.dir.root

    def stage_dir(self, name: str) -> Path:
        return self.dir.stage_dir(name)

    def stage_config(self, name: str) -> dict:
        """The config parts a stage reads (what its hash is made of)."""
        parts = {}
        for key in STAGES[name].reads:
            part = self.cfg.resolved_model if key == "model" else getattr(self.cfg, key)
            parts[key] = dataclasses.asdict(part)
            if key == "data":
                parts[key]["fingerprint"] = source_fingerprint(self.cfg.data)
        return parts

    def ensure(self, name: str) -> Path:
        """Build `name` (and what it needs) unless already done; return its folder."""
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        if name in self._checked:
            return self.stage_dir(name)
        spec = STAGES[name]
        for need in spec.needs:
            self.ensure(need)
        upstream = {need: self.dir.manifest_hash(need) for need in spec.upstream_of(self.dir)}
        config = self.stage_config(name)
        digest = config_hash(config)
        forced = self.force is True or (isinstance(self.force, set) and name in self.force)
        if not forced and self.dir.is_done(name, digest, upstream):
            summary = self.dir.manifest(name)["summary"]
            self.log(f"[{name}] up to date ({_brief(summary)})")
        else:
            self.log(f"[{name}] building in {self.stage_dir(name)}")
            started = time.time()
            # under torchrun every process builds (the lm stage trains data-parallel), but
            # only the first one prepares and seals the folder
            primary = int(os.environ.get("RANK", "0")) == 0
            folder = self.stage_dir(name)
            if primary:
                folder = self.dir.begin(name, config_hash=digest, upstream=upstream,
                                        resumable=spec.resumable)
            summary = spec.build(self, folder)
            if primary:
                self.dir.seal(name, config=config, config_hash=digest, upstream=upstream,
                              version=__version__, summary=summary, started=started)
            self.log(f"[{name}] done in {time.time() - started:.1f}s ({_brief(summary)})")
        self._checked.add(name)
        return self.stage_dir(name)

    def run(self, stages: Iterable[str] | None = None) -> None:
        """Build `stages` (default: all) in pipeline order."""
        wanted = list(STAGES) if stages is None else list(stages)
        for name in wanted:
            if name not in STAGES:
                raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        for name in STAGES:
            if name in wanted:
                self.ensure(name)

    # conveniences for notebooks: each ensures its stage, then loads it
    def tokenizer(self) -> BPETokenizer | RemapTokenizer:
        return load_tokenizer(self.ensure("tokenizer"))

    def shards(self) -> Shards:
        return Shards.open(self.ensure("shards"))

    def model(self, device: str = "cpu"):
        """The trained language model (trains it first if needed)."""
        from .lm.model import load_model

        return load_model(self.ensure("lm"), device=device)

    def sae(self, device: str = "cpu"):
        """The trained sparse autoencoder (or transcoder) of this run's `sae` config."""
        from .sae.model import load_sae

        return load_sae(self.ensure("sae"), device=device)

    def tagged(self, device: str = "cpu"):
        """The LM with TinyModel's tags on the transcoders stage's dictionaries (`sae.tags`)."""
        from .sae.tags import TaggedModel

        return TaggedModel.from_run_dir(self.ensure("transcoders"), self.model(device))

    def activation_source(self, hook_in: str, hook_out: str | None = None, device: str = "cpu"):
        """What the SAE trainer reads: the collected store, or (storage=stream) the LM run live."""
        from .sae.activations import ActivationStore, StreamingSource

        cfg = self.cfg.activations
        if cfg.storage == "stream":
            return StreamingSource(self.model(device), self.shards(), cfg, hook_in, hook_out)
        store = ActivationStore.open(self.ensure("activations"))
        return store.source(hook_in, hook_out, seed=cfg.seed)


def _brief(summary: dict) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in summary.items() if isinstance(v, (int, float, str))]
    return ", ".join(shown[:5])



def status(runs_dir: str | os.PathLike, name: str) -> list[dict]:
    """Each stage of a run: done, stale (an upstream stage was rebuilt since), or missing."""
    run_dir = RunDir(runs_dir, name)
    rows = []
    for stage_name, spec in STAGES.items():
        manifest = run_dir.manifest(stage_name)
        if manifest is None:
            rows.append({"stage": stage_name, "state": "missing", "summary": {}})
            continue
        current = {need: run_dir.manifest_hash(need) for need in spec.upstream_of(run_dir)}
        state = "done" if manifest["upstream"] == current else "stale"
        rows.append({"stage": stage_name, "state": state, "summary": manifest["summary"],
                     "created": manifest["created"], "seconds": manifest.get("seconds")})
    return rows


__all__ = ["ORDER", "STAGES", "Stage", "stage", "Run", "default_runs_dir", "status", "build_capabilities",
           "build_heads", "bytes_per_token", "load_other_model", "other_models", "probe_stories",
           "same_tokenizer", "token_text", "capabilities", "circuits", "dictionaries", "features", "heads",
           "report", "text"]
