"""The capabilities stage: the task suites of data/tasks/ scored on the run's LM, across
its snapshots and beside other models, and the mining of its confident predictions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_json
from ..config import ConfigError
from ..corpus.shards import Shards
from ..corpus.tokenizer import load_tokenizer
from .registry import stage

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("capabilities", needs=("tokenizer", "shards", "lm"), reads=("capabilities",))
def build_capabilities(run: Run, folder: Path) -> dict:
    """The shipped task suites (data/tasks/) scored on the final model, item by item and
    per capability, and per capability across the lm stage's snapshots; and the mining of
    the model's confident predictions (capabilities.json; see `interpret/capabilities.py`
    and `interpret/mining.py`), and the stage's own page of all of it, index.html
    (`report/capabilities_page.py`). The suites are files, not config: after editing them,
    rebuild with `tinycourse run --stages capabilities --force`."""
    from tqdm.auto import tqdm

    from ..interpret.capabilities import (emergence, fits, score_tasks, scores_records,
                                         shipped_suites, summarize)
    from ..lm.model import count_parameters, load_model
    from ..lm.snapshots import list_snapshots
    from ..report.capabilities_page import write_capabilities_page

    lm_dir = run.stage_dir("lm")
    model = load_model(lm_dir)
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    shipped = shipped_suites()
    if not shipped:
        raise FileNotFoundError("no task suites in data/tasks/: regenerate them with `tinycourse tasks`")
    # a model with a short context cannot read every item: score what fits, count the rest
    suites = {kind: [i for i in items if fits(i, tokenizer, model.cfg.n_ctx)] for kind, items in shipped.items()}
    scores = {kind: score_tasks(model, tokenizer, items) for kind, items in suites.items()}
    result = {
        "suites": {kind: len(items) for kind, items in suites.items()},
        "skipped": {kind: len(shipped[kind]) - len(suites[kind]) for kind in shipped},
        "final": {kind: summarize(s) for kind, s in scores.items()},
        "items": {kind: [{**record, "wrong": item.wrong} for record, item in zip(scores_records(s), suites[kind])]
                  for kind, s in scores.items()},
        "emergence": emergence(list_snapshots(lm_dir), tokenizer, suites,
                               progress=lambda xs: tqdm(xs, desc="capabilities: snapshots", unit="snapshot")),
    }
    # the other models one at a time, each scored, mined (when it reads the same tokens)
    # and let go before the next is loaded: the local cache may hold all 14 TinyStories models
    miner = Miner(run, model, tokenizer)
    result["models"] = {f"this run ({run.root.name})": result["final"]}
    result["model_sources"] = {}
    result["mining"] = {**miner.record(), "models": {}}
    others = other_models(run)
    for name, spec in tqdm(others, desc="capabilities: other models", unit="model", disable=not others):
        other, other_tokenizer, kind = load_other_model(spec)
        fitting = {k: [i for i in items if fits(i, other_tokenizer, other.cfg.n_ctx)] for k, items in shipped.items()}
        result["models"][name] = {k: summarize(score_tasks(other, other_tokenizer, items))
                                  for k, items in fitting.items() if items}
        same = same_tokenizer(tokenizer, other_tokenizer)
        result["model_sources"][name] = {"kind": kind, "parameters": count_parameters(other).total,
                                         "n_ctx": other.cfg.n_ctx, "same_tokenizer": same}
        if same and other.cfg.n_ctx >= model.cfg.n_ctx:  # it reads the same windows whole
            result["mining"]["models"][name] = miner.beside(name, other)
        del other
    atomic_write_json(folder / "capabilities.json", result)
    write_capabilities_page(folder, title=f"Capabilities of run {run.root.name}")  # capabilities/index.html
    everything = [s for group in scores.values() for s in group]
    return {"items": len(everything), "suites": len(suites),
            "top1": sum(s.top1 for s in everything) / len(everything),
            "snapshots": len(result["emergence"]),
            "unexplained": result["mining"]["final"]["shares"]["unexplained"],
            "models": len(result["models"])}


def other_models(run: Run) -> list[tuple[str, str]]:
    """(name, spec) of the models the capabilities stage scores beside the run's own LM:
    `capabilities.models`, then, with `capabilities.local_models`, the other runs of the
    same runs folder whose LM is built and the TinyStories models in the local Hugging Face
    cache. A spec is a run directory, a Hugging Face folder or a hub name (`load_other_model`)."""
    from ..lm.pretrained import cached_pretrained

    cfg = run.cfg.capabilities
    specs = list(cfg.models)
    if cfg.local_models:
        siblings = sorted(p for p in run.root.parent.iterdir() if p.is_dir() and p.resolve() != run.root.resolve())
        specs += [str(p) for p in siblings if (p / "lm" / "model.safetensors").is_file()]
        specs += cached_pretrained()
    named: dict[str, str] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        name = f"run {path.name}" if (path / "lm").is_dir() else path.name if path.is_dir() else spec.split("/")[-1]
        named.setdefault(name, spec)
    return list(named.items())


def load_other_model(spec: str) -> tuple:
    """(model, tokenizer, kind) for a `capabilities.models` entry: a run directory (its lm
    and tokenizer stages), else a TinyStories model (`lm.pretrained.load_pretrained`: a
    Hugging Face folder or a hub name; offline and not cached it fails at once, saying how
    to fetch it)."""
    from ..lm.model import load_model
    from ..lm.pretrained import load_pretrained

    path = Path(spec).expanduser()
    if (path / "lm").is_dir():
        if not (path / "lm" / "model.safetensors").is_file() or not (path / "tokenizer").is_dir():
            raise ConfigError(f"capabilities.models: {spec} is a run without a built lm stage: build it "
                              f"with `tinycourse run --name {path.name} --stages lm`, or drop it from the list")
        return load_model(path / "lm"), load_tokenizer(path / "tokenizer"), "run"
    model, tokenizer = load_pretrained(spec)
    return model, tokenizer, "pretrained"


SAME_TOKENIZER_TEXT = 'Once upon a time, Lily said: "Look, a big red ball!" Tom smiled.'


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids (so the same windows can be mined by both)."""
    return a.vocab_size == b.vocab_size and a.start_id == b.start_id and \
        list(a.encode(SAME_TOKENIZER_TEXT)) == list(b.encode(SAME_TOKENIZER_TEXT))


MINING_WINDOWS = 200  # validation windows of n_ctx tokens the mining reads


class Miner:
    """The confident, correct predictions of the run's final model on validation windows,
    by the rule that explains them (`interpret/mining.py`), and of any other model that
    reads the same tokens, on the same windows. Built once per stage: the windows, the
    tokens' text pieces, the trigram model counted on the training split, the final
    model's mining."""

    def __init__(self, run: Run, model, tokenizer):
        import numpy as np
        import torch

        from ..interpret.mining import TrigramModel, mine, token_pieces
        from ..lm.model import count_parameters

        self.run = run
        shards = Shards.open(run.stage_dir("shards"))
        val = np.asarray(shards.tokens("val"))
        n_ctx = model.cfg.n_ctx
        n = min(MINING_WINDOWS, (len(val) - 1) // n_ctx)
        self.windows = torch.from_numpy(val[: n * n_ctx].reshape(n, n_ctx).astype(np.int64))
        self.pieces = token_pieces(tokenizer, model.cfg.d_vocab)
        self.trigrams = TrigramModel.count(shards.tokens("train"), model.cfg.d_vocab)
        self.final = mine(model, self.windows, self.pieces, self.trigrams)
        self.parameters = count_parameters(model).total

    def _summary(self, mining) -> dict:
        from ..interpret.mining import LABELS, UNEXPLAINED, examples

        return {"confident_share": float(mining.confident.mean()), "shares": mining.shares(),
                "examples": {label: examples(mining, self.pieces, label, n=8) for label in (*LABELS, UNEXPLAINED)}}

    def record(self) -> dict:
        """{"tokens", "threshold", "final": shares and examples, "middle": the same for the
        middle snapshot with what the second half of training added} (no "middle" with
        fewer than three snapshots)."""
        from ..interpret.mining import compare, mine
        from ..lm.snapshots import list_snapshots

        out = {"tokens": int(self.windows[:, 1:].numel()), "threshold": 0.5, "final": self._summary(self.final)}
        snapshots = sorted(list_snapshots(self.run.stage_dir("lm")), key=lambda s: s.step)
        if len(snapshots) > 2:
            middle = snapshots[len(snapshots) // 2]
            earlier = mine(middle.load(), self.windows, self.pieces, self.trigrams)
            out["middle"] = {"step": middle.step, "tokens": middle.tokens, **self._summary(earlier),
                             "gained_by_final": compare(self.final, earlier)}
        return out

    def beside(self, name: str, other) -> dict:
        """`other` (sharing the run's tokenizer, n_ctx at least the run's) mined on the same
        windows: its shares, and the tokens the larger of the two gets right and the smaller not."""
        from ..interpret.mining import compare, mine
        from ..lm.model import count_parameters

        theirs = mine(other, self.windows, self.pieces, self.trigrams)
        if count_parameters(other).total > self.parameters:
            larger, smaller, names = theirs, self.final, (name, "this run")
        else:
            larger, smaller, names = self.final, theirs, ("this run", name)
        return {"confident_share": float(theirs.confident.mean()), "shares": theirs.shares(),
                "larger": names[0], "smaller": names[1], "gained_by_larger": compare(larger, smaller)}
