"""The stages in order: what each reads, calls and writes.

This is the one module that knows the stage order. Each stage is a function that gets the
`Run` and an empty (or, for resumable stages, partly filled) folder, writes its files
there, and returns a summary of key figures; `Run.ensure` wraps it with the manifest
rules of `rundir.py`. A notebook asks for what it needs and gets it built if missing:

    run = Run(preset("tiny"))
    shards = run.shards()          # builds tokenizer and shards if needed
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .artifacts import atomic_write_bytes, atomic_write_json, file_sha256
from .config import ConfigError, CourseConfig, config_hash
from .corpus.shards import Shards, token_dtype, write_split
from .corpus.sources import iter_stories, source_fingerprint
from .corpus.tokenizer import (BPETokenizer, RemapTokenizer, build_remap, load_base_tokenizer,
                               load_tokenizer, train_bpe, unk_rates)
from .rundir import RunDir


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream stages whose outputs this one reads
    reads: tuple[str, ...]  # parts of CourseConfig this stage depends on
    build: Callable[["Run", Path], dict]
    resumable: bool = False  # keeps its folder across a rebuild (checkpoints)
    reads_all: bool = False  # reads every other finished stage (the report): they are its upstream
    optional: tuple[str, ...] = ()  # read when finished, never built for this stage

    def upstream_of(self, run_dir: RunDir) -> tuple[str, ...]:
        """The stages whose manifests this one records: `needs` and the `optional` ones
        finished now, or for a `reads_all` stage every other stage finished now, so it is
        stale once any of them changes."""
        if not self.reads_all:
            return self.needs + tuple(s for s in self.optional if run_dir.manifest(s) is not None)
        return tuple(s for s in STAGES if s != self.name and run_dir.manifest(s) is not None)


STAGES: dict[str, Stage] = {}


def stage(name: str, needs: tuple[str, ...], reads: tuple[str, ...], resumable: bool = False,
          reads_all: bool = False, optional: tuple[str, ...] = ()):
    def register(build: Callable[["Run", Path], dict]) -> Callable[["Run", Path], dict]:
        STAGES[name] = Stage(name, needs, reads, build, resumable, reads_all, optional)
        return build
    return register


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


# --- the stages ------------------------------------------------------------------------

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
    from .lm.train import train_lm  # torch-heavy; the data stages do not need it

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
    from .interpret.in_context import in_context_summary
    from .lm.model import load_model

    model = load_model(folder)
    result = in_context_summary(model, load_tokenizer(run.stage_dir("tokenizer")),
                                probe_stories(run), Shards.open(run.stage_dir("shards")).tokens("train"))
    result["source"] = _probe_source(run)
    atomic_write_json(folder / "in_context.json", result)
    return result


def probe_stories(run: Run) -> list:
    """The stories the in-context probes read: on storyworld, fresh ones past the corpus's
    last (never trained on, exact labels); on other text, the validation split with names
    found by rule (`interpret.in_context.text_story`)."""
    from .corpus.storyworld import generate_stories
    from .interpret.in_context import text_story

    data = run.cfg.data
    if data.source == "storyworld":
        return list(generate_stories(IN_CONTEXT_STORIES, seed=data.seed, start=data.max_stories))
    return [text_story(t) for t in _sample_texts(run, "val", IN_CONTEXT_STORIES)]


def _probe_source(run: Run) -> str:
    return "storyworld (fresh stories)" if run.cfg.data.source == "storyworld" else "val split, names by rule"


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

    from .artifacts import atomic_write_text
    from .interpret.ablation import ablation_table, induction_groups, story_groups
    from .interpret.catalogue import catalogue
    from .interpret.formation import head_formation, nan_to_none, story_batch
    from .interpret.head_examples import (MEASURES, STUDY_PROMPT, example_records, head_examples,
                                          prompt_patterns, token_label)
    from .interpret.heads import (SCORES, composition_baseline, composition_scores,
                                  copying_scores, head_detector_scores, head_scores, pivot_ids)
    from .interpret.in_context import repeated_sequences, training_token_ids
    from .lm.model import load_model
    from .lm.snapshots import list_snapshots
    from .report.heads_page import write_heads_page

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
            "stories": f"{len(stories)} stories ({_probe_source(run)}), first "
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
    shown = ((f"the first probe story, {_probe_source(run)}", stories[0].text), ("the TinyStories-1L-21M study's prompt", STUDY_PROMPT))
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
    from .corpus.storyworld import NAMES
    from .interpret.patching import IOI_TEMPLATE, ioi_pairs, patch_heads, patch_residual

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
    from .interpret.patching import REPEATED_NAME_TEMPLATE, patch_heads, patch_residual, repeated_name_pairs

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


@stage("capabilities", needs=("tokenizer", "shards", "lm"), reads=("capabilities",))
def build_capabilities(run: Run, folder: Path) -> dict:
    """The shipped task suites (data/tasks/) scored on the final model, item by item and
    per capability, and per capability across the lm stage's snapshots; and the mining of
    the model's confident predictions (capabilities.json; see `interpret/capabilities.py`
    and `interpret/mining.py`), and the stage's own page of all of it, index.html
    (`report/capabilities_page.py`). The suites are files, not config: after editing them,
    rebuild with `tinycourse run --stages capabilities --force`."""
    from tqdm.auto import tqdm

    from .interpret.capabilities import (emergence, fits, score_tasks, scores_records,
                                         shipped_suites, summarize)
    from .lm.model import count_parameters, load_model
    from .lm.snapshots import list_snapshots
    from .report.capabilities_page import write_capabilities_page

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
    others = [(name, *load_other_model(spec)) for name, spec in other_models(run)]
    result["models"] = {f"this run ({run.root.name})": result["final"]}
    result["model_sources"] = {}
    for name, other, other_tokenizer, kind in tqdm(others, desc="capabilities: other models", unit="model",
                                                   disable=not others):
        fitting = {k: [i for i in items if fits(i, other_tokenizer, other.cfg.n_ctx)] for k, items in shipped.items()}
        result["models"][name] = {k: summarize(score_tasks(other, other_tokenizer, items))
                                  for k, items in fitting.items() if items}
        result["model_sources"][name] = {"kind": kind, "parameters": count_parameters(other).total,
                                         "n_ctx": other.cfg.n_ctx,
                                         "same_tokenizer": same_tokenizer(tokenizer, other_tokenizer)}
    result["mining"] = mine_capabilities(run, model, tokenizer,
                                         [(n, m) for n, m, t, _ in others if same_tokenizer(tokenizer, t)])
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
    from .lm.pretrained import cached_pretrained

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
    from .lm.model import load_model
    from .lm.pretrained import load_pretrained

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


def mine_capabilities(run: Run, model, tokenizer, others: Iterable[tuple[str, object]] = ()) -> dict:
    """The confident, correct predictions of the final model on validation windows, by the
    rule that explains them (`interpret/mining.py`), with examples of each; the same for
    the middle snapshot, with what the second half of training added; and for each of
    `others` ((name, model) pairs sharing the run's tokenizer, so the same windows) its
    shares and the tokens the larger of the two models gets right and the smaller not."""
    import numpy as np
    import torch

    from .interpret.mining import LABELS, UNEXPLAINED, TrigramModel, compare, examples, mine, token_pieces
    from .lm.model import count_parameters
    from .lm.snapshots import list_snapshots

    shards = Shards.open(run.stage_dir("shards"))
    val = np.asarray(shards.tokens("val"))
    n_ctx = model.cfg.n_ctx
    n = min(MINING_WINDOWS, (len(val) - 1) // n_ctx)
    windows = torch.from_numpy(val[: n * n_ctx].reshape(n, n_ctx).astype(np.int64))
    pieces = token_pieces(tokenizer, model.cfg.d_vocab)
    trigrams = TrigramModel.count(shards.tokens("train"), model.cfg.d_vocab)

    def record(mining) -> dict:
        return {"confident_share": float(mining.confident.mean()), "shares": mining.shares(),
                "examples": {label: examples(mining, pieces, label, n=8) for label in (*LABELS, UNEXPLAINED)}}

    final = mine(model, windows, pieces, trigrams)
    out = {"tokens": int(windows[:, 1:].numel()), "threshold": 0.5, "final": record(final)}
    snapshots = sorted(list_snapshots(run.stage_dir("lm")), key=lambda s: s.step)
    if len(snapshots) > 2:
        middle = snapshots[len(snapshots) // 2]
        earlier = mine(middle.load(), windows, pieces, trigrams)
        out["middle"] = {"step": middle.step, "tokens": middle.tokens, **record(earlier),
                         "gained_by_final": compare(final, earlier)}
    ours = count_parameters(model).total
    out["models"] = {}
    for name, other in others:
        if other.cfg.n_ctx < n_ctx:
            continue  # it cannot read the windows whole
        theirs = mine(other, windows, pieces, trigrams)
        larger, smaller, names = (theirs, final, (name, "this run")) if count_parameters(other).total > ours \
            else (final, theirs, ("this run", name))
        out["models"][name] = {"confident_share": float(theirs.confident.mean()), "shares": theirs.shares(),
                               "larger": names[0], "smaller": names[1],
                               "gained_by_larger": compare(larger, smaller)}
    return out


@stage("activations", needs=("shards", "lm"), reads=("activations",), resumable=True)
def build_activations(run: Run, folder: Path) -> dict:
    from .lm.model import load_model
    from .sae.activations import collect_activations

    cfg = run.cfg.activations
    if cfg.storage == "stream":
        return {"storage": "stream"}  # nothing stored: the SAE stage runs the LM itself
    device = _device()
    lm = run.stage_dir("lm")
    summary = collect_activations(load_model(lm, device=device), Shards.open(run.stage_dir("shards")),
                                  cfg, folder, device=device,
                                  model_hash=file_sha256(lm / "model.safetensors")[:16])
    keep = ("n_tokens", "n_windows", "dtype", "bytes", "tokens_per_s")
    return {k: summary[k] for k in keep}


@stage("sae", needs=("activations",), reads=("sae",), resumable=True)
def build_sae(run: Run, folder: Path) -> dict:
    from .sae.train import train_sae

    cfg, hooks = run.cfg.sae, run.cfg.activations.hooks
    for hook in filter(None, (cfg.hook_in, cfg.hook_out)):
        if hook not in hooks:
            raise ConfigError(
                f"sae reads {hook!r}, which the activations stage does not collect "
                f"({', '.join(hooks)}); add it with --set activations.hooks=...,{hook}"
            )
    source = run.activation_source(cfg.hook_in, cfg.hook_out or None, device=_device())
    summary = train_sae(cfg, source, folder, device=_device(),
                        input_scale=source.scale(cfg.hook_in),
                        output_scale=source.scale(cfg.hook_out) if cfg.is_transcoder else None)
    keep = ("mse", "fve", "l0", "dead_fraction", "tokens", "tokens_per_s")
    return {k: summary[k] for k in keep if k in summary}


SWEPT_FIELD = {"topk": "k", "batchtopk": "k", "relu": "l1_coeff", "jumprelu": "l0_coeff"}


def sweep_configs(cfg: CourseConfig) -> list:
    """The `sae` config with its sparsity setting set to each of `sweep.values`."""
    name = SWEPT_FIELD[cfg.sae.kind]
    cast = int if name == "k" else float
    return [dataclasses.replace(cfg.sae, **{name: cast(value)}, n_tokens=cfg.sweep.n_tokens)
            for value in cfg.sweep.values]


@stage("sweep", needs=("activations",), reads=("sae", "sweep"), resumable=True)
def build_sweep(run: Run, folder: Path) -> dict:
    from .sae.train import train_sweep

    cfgs = sweep_configs(run.cfg)
    sae = run.cfg.sae
    source = run.activation_source(sae.hook_in, sae.hook_out or None, device=_device())
    summaries = train_sweep(cfgs, source, folder, device=_device(),
                            input_scale=source.scale(sae.hook_in),
                            output_scale=source.scale(sae.hook_out) if sae.is_transcoder else None)
    return {"members": len(cfgs), "swept": SWEPT_FIELD[sae.kind],
            "l0": ", ".join(f"{s['l0']:.1f}" for s in summaries),
            "fve": ", ".join(f"{s['fve']:.3f}" for s in summaries)}


@stage("eval", needs=("shards", "lm", "sae"), reads=("eval",), optional=("sweep",))
def build_eval(run: Run, folder: Path) -> dict:
    """Held-out metrics of the `sae` stage's SAE/transcoder (metrics.json), each latent's
    firing density (latent_density.npy), the sweep's members on the same tokens when the
    sweep was built (sweep.json: the Pareto plot's points), and, on storyworld, how well
    its latents recover the generator's labelled variables on stories the corpus never
    held (ground_truth.json)."""
    import io

    import numpy as np

    from .evaluate.metrics import evaluate_with_density
    from .lm.model import load_model
    from .sae.model import load_sae

    device = _device()
    model = load_model(run.stage_dir("lm"), device=device)
    sae = load_sae(run.stage_dir("sae"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    cfg = run.cfg.eval
    # the tokens the SAE was trained on decide which positions count (see metrics)
    exclude_start = run.cfg.activations.exclude_start
    metrics, density = evaluate_with_density(model, sae, shards, cfg, device=device,
                                             exclude_start=exclude_start)
    atomic_write_json(folder / "metrics.json", metrics)
    buffer = io.BytesIO()
    np.save(buffer, density)
    atomic_write_bytes(folder / "latent_density.npy", buffer.getvalue())
    spliced = metrics["spliced"]
    summary = {"fve": metrics["reconstruction"]["fve"], "l0": metrics["sparsity"]["l0_mean"],
               "ce_loss_recovered": spliced["ce_loss_recovered"], "kl": spliced["kl_spliced"],
               "dead_fraction": metrics["sparsity"]["dead_fraction"],
               "n_tokens": metrics["n_tokens"]}
    if run.dir.manifest("sweep") is not None:
        # the sweep's members on the same held-out tokens: the Pareto plot's points
        from .evaluate.metrics import sweep_rows

        members = {p.parent.name: load_sae(p.parent, device=device)
                   for p in sorted(run.stage_dir("sweep").glob("*/cfg.json"))}
        rows = sweep_rows(model, members, shards, cfg, device=device, exclude_start=exclude_start)
        atomic_write_json(folder / "sweep.json", rows)
    if run.cfg.data.source == "storyworld":
        from .evaluate.groundtruth import ground_truth_recovery

        # stories from index max_stories on: drawn like the corpus, never in it
        truth = ground_truth_recovery(model, sae, load_tokenizer(run.stage_dir("tokenizer")), cfg,
                                      data_seed=run.cfg.data.seed,
                                      first_index=run.cfg.data.max_stories, device=device)
        atomic_write_json(folder / "ground_truth.json", truth)
        summary.update({f"ground_truth_auroc_{k}": v for k, v in truth["mean"].items()})
        summary.update({f"ground_truth_chance_{k}": v for k, v in truth["chance"].items()})
    return summary


@stage("transcoders", needs=("shards", "lm"), reads=("transcoders",), resumable=True)
def build_transcoders(run: Run, folder: Path) -> dict:
    """A transcoder for every MLP (or `transcoders.layers`), all trained from one stream of
    LM forwards, nothing on disk (`sae/transcoders.py`): layer_{i}/ each an SAE folder,
    training.json; then measured on held-out tokens alone and with every MLP replaced at
    once (`evaluate/replacement.py`): transcoders.json. With `transcoders.cross_layer`, then
    a cross-layer transcoder on the same stream (`sae/crosslayer.py`) into crosslayer/,
    measured the same way (transcoders.json's "crosslayer"). With `transcoders.attention_saes`,
    an SAE on each attention output trained beside the transcoders into attention/layer_{i}/,
    each measured with that attention output alone replaced (and all at once): "attention"."""
    from .config import EvalConfig
    from .evaluate.replacement import evaluate_replacement
    from .lm.model import load_model
    from .sae.crosslayer import FOLDER, load_crosslayer, train_crosslayer
    from .sae.transcoders import load_attention_saes, load_transcoders, train_transcoders

    device, cfg = _device(), run.cfg.transcoders
    started = time.time()
    model = load_model(run.stage_dir("lm"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    trained = train_transcoders(cfg, model, shards, folder, device=device)
    train_s = time.time() - started
    saes = {f"layer_{layer}": sae for layer, sae in load_transcoders(folder, device).items()}
    at = time.time()
    figures = evaluate_replacement(model, saes, shards,
                                   EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                   device=device, exclude_start=True)  # as the stream trained
    for row, layer in zip(figures["dictionaries"], trained["layers"]):
        row["layer"] = layer
        member = trained["members"][str(layer)]
        row["train"] = {k: member.get(k) for k in ("tokens", "fve", "l0", "dead_fraction", "tokens_per_s")}
    seconds = {"train": round(train_s, 2), "evaluate": round(time.time() - at, 2)}
    result = {"layers": trained["layers"], "n_tokens": figures["n_tokens"],
              "training_tokens": cfg.n_tokens, "per_layer": figures["dictionaries"],
              "replacement": figures["replacement"], "seconds": seconds}
    if cfg.attention_saes:  # trained in the same sweep; each spliced at its hook_attn_out
        at = time.time()
        attention = {f"layer_{layer}": sae for layer, sae in load_attention_saes(folder, device).items()}
        attn_figures = evaluate_replacement(model, attention, shards,
                                            EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                            device=device, exclude_start=True)
        seconds["attention_evaluate"] = round(time.time() - at, 2)
        for row, layer in zip(attn_figures["dictionaries"], trained["layers"]):
            row["layer"] = layer
            member = trained["attention"]["members"][str(layer)]
            row["train"] = {k: member.get(k) for k in ("tokens", "fve", "l0", "dead_fraction")}
        result["attention"] = {"per_layer": attn_figures["dictionaries"], "replacement": attn_figures["replacement"]}
    if cfg.cross_layer:  # the CLT after the per-layer ones: the same stream, a second pass
        at = time.time()
        clt_trained = train_crosslayer(cfg, model, shards, folder / FOLDER, device=device)
        seconds["crosslayer_train"] = round(time.time() - at, 2)
        at = time.time()
        clt_figures = evaluate_replacement(model, load_crosslayer(folder / FOLDER, device), shards,
                                           EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                           device=device, exclude_start=True)
        seconds["crosslayer_evaluate"] = round(time.time() - at, 2)
        for row, train_row in zip(clt_figures["dictionaries"], clt_trained["per_layer"]):
            row["layer"] = train_row["layer"]
            row["train"] = {k: train_row.get(k) for k in ("fve", "l0", "dead_fraction")}
        result["crosslayer"] = {"per_layer": clt_figures["dictionaries"], "replacement": clt_figures["replacement"],
                                "tokens_per_s": clt_trained["tokens_per_s"]}
    atomic_write_json(folder / "transcoders.json", result)
    replacement = figures["replacement"]
    rows = figures["dictionaries"]

    def per_layer(key: str, digits: int, rows=rows) -> str:
        return ", ".join("-" if r[key] is None else f"{r[key]:.{digits}f}" for r in rows)

    summary = {"layers": len(rows), "fve": per_layer("fve", 3), "l0": per_layer("l0", 1),
               "dead_fraction": per_layer("dead_fraction", 3),
               "ce_loss_recovered": replacement["ce_loss_recovered"], "kl": replacement["kl"],
               "ce_loss_recovered_vs_mean": replacement["ce_loss_recovered_vs_mean"],
               "n_tokens": figures["n_tokens"], "seconds": round(time.time() - started, 2),
               "seconds_by_part": seconds}
    if cfg.cross_layer:
        clt_rows = result["crosslayer"]["per_layer"]
        summary.update({"crosslayer_fve": per_layer("fve", 3, clt_rows), "crosslayer_l0": per_layer("l0", 1, clt_rows),
                        "crosslayer_dead_fraction": per_layer("dead_fraction", 3, clt_rows),
                        "crosslayer_ce_loss_recovered": result["crosslayer"]["replacement"]["ce_loss_recovered"],
                        "crosslayer_kl": result["crosslayer"]["replacement"]["kl"]})
    if cfg.attention_saes:
        attn_rows = result["attention"]["per_layer"]
        summary.update({"attention_fve": per_layer("fve", 3, attn_rows), "attention_l0": per_layer("l0", 1, attn_rows),
                        "attention_dead_fraction": per_layer("dead_fraction", 3, attn_rows),
                        "attention_ce_loss_recovered": ", ".join(
                            "-" if r["alone"]["ce_loss_recovered"] is None else f"{r['alone']['ce_loss_recovered']:.3f}"
                            for r in attn_rows)})
    return summary


@stage("features", needs=("tokenizer", "shards", "lm", "sae"), reads=("features", "eval"),
       resumable=True, optional=("transcoders",))
def build_features(run: Run, folder: Path) -> dict:
    """What each latent of the `sae` stage's dictionary does, into `features/`
    (`interpret/study.py` lists the files: the scan, causal effects and nearest latents,
    auto-labels with their baselines, the prompt view), plus:
        labels.json's variables   (storyworld) the ground-truth variable of each latent
        steering.json             (storyworld) a place latent steered: effect and cost
        index.html                the dashboard of all of it, offline
    and, when the transcoders stage has finished, the same for each layer's transcoder
    in `features/transcoders/layer_{i}/` (the circuits stage labels graph nodes from them)."""
    from .interpret.autolabel import latent_variables
    from .interpret.features import load_features
    from .interpret.study import LABELS, study_dictionary
    from .lm.model import load_model
    from .report.dashboard import write_dashboard
    from .sae.model import load_sae

    device = _device()
    started = time.time()
    cfg = run.cfg.features
    model = load_model(run.stage_dir("lm"), device=device)
    sae = load_sae(run.stage_dir("sae"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    exclude_start = run.cfg.activations.exclude_start
    text = token_text(tokenizer, shards.start_id)
    kw = {"token_text": text, "decode": tokenizer.decode, "exclude_start": exclude_start, "device": device,
          "log": run.log}
    summary = study_dictionary(model, sae, shards, cfg, folder, **kw)
    times = summary.pop("seconds_by_part")

    at = time.time()
    if run.cfg.data.source == "storyworld":
        labels = json.loads((folder / LABELS).read_text())
        variables = latent_variables(model, sae, tokenizer, run.cfg.eval.ground_truth_stories,
                                     data_seed=run.cfg.data.seed, first_index=run.cfg.data.max_stories,
                                     device=device)
        for row, match in zip(labels["latents"], variables["latents"]):
            row["variable"], row["variable_auroc"] = match["variable"], match["auroc"]
        labels["variables"] = variables["variables"]
        atomic_write_json(folder / LABELS, labels)
        steering = place_steering(model, sae, tokenizer, shards, variables, run.cfg, load_features(folder))
        if steering is not None:
            atomic_write_json(folder / "steering.json", steering)
            summary.update({"steering_latent": steering["latent"], "steering_place": steering["place"],
                            "steering_share_factor": steering["best"]["share_factor"],
                            "steering_loss_increase": steering["best"]["loss_increase"]})
        times["ground truth, steering"] = time.time() - at
    write_dashboard(folder, token_text=text, title=f"Features of run {run.root.name}: {summary['hook_in']}",
                    contexts=cfg.page_contexts)

    if run.dir.manifest("transcoders") is not None:
        from .sae.transcoders import load_transcoders

        at = time.time()
        for layer, transcoder in load_transcoders(run.stage_dir("transcoders"), device).items():
            sub = folder / "transcoders" / f"layer_{layer}"
            figures = study_dictionary(model, transcoder, shards, cfg, sub, **kw)
            write_dashboard(sub, token_text=text, contexts=cfg.page_contexts,
                            title=f"Features of run {run.root.name}: layer {layer}'s transcoder")
            summary[f"transcoder_{layer}"] = {k: figures[k] for k in (
                "alive", "causal_effect_mean", "detection_auroc_sae", "simulation_r_sae")}
        times["transcoders"] = time.time() - at
    summary["seconds"] = round(time.time() - started, 2)
    summary["seconds_by_part"] = {k: round(v, 2) for k, v in times.items()}
    return summary


def token_text(tokenizer, start_id: int | None):
    """id -> the text a page shows for it: `<start>` for the start token, newlines escaped,
    an empty decode as the empty-set sign."""
    def text(i: int) -> str:
        if i == start_id:
            return "<start>"
        return tokenizer.decode([int(i)]).replace("\n", "\\n") or "\u2205"
    return text


STEER_PLACES = ("beach", "forest", "park", "garden")  # the first with a latent of its own is steered
STEER_MULTIPLES = (0.0, 1.0, 2.0, 4.0, 8.0)  # clamp values, in multiples of the latent's mean activation


def place_steering(model, sae, tokenizer, shards: Shards, variables: dict, cfg: CourseConfig,
                   scan: dict) -> dict | None:
    """Steer the latent that best tracks a storyworld place (`variables`, from
    `latent_variables`): clamped at multiples of its mean activation at every position,
    on openings of held-out stories; per strength the share of the place's words in the
    generations and the held-out loss (`interpret.steering.steering_sweep`)."""
    import numpy as np
    import torch

    from .corpus.storyworld import generate_stories
    from .interpret.steering import concept_token_ids, place_words, steering_sweep

    found = [(p, variables["variables"].get(f"place={p}")) for p in STEER_PLACES]
    found = [(p, v) for p, v in found if v is not None and v["latent"] is not None]
    if not found:
        return None
    place, match = found[0]
    latent = int(match["latent"])
    mean = float(scan["mean_active"][latent])
    strengths = [round(m * mean, 4) for m in STEER_MULTIPLES]
    stories = generate_stories(16, seed=cfg.data.seed + 1, start=cfg.data.max_stories)
    prompts = [[shards.start_id] + tokenizer.encode(s.text.split(".")[0] + ".") for s in stories]
    n_ctx = model.cfg.n_ctx
    val = shards.tokens("val")
    rows = min(32, len(val) // (n_ctx + 1))
    heldout = torch.from_numpy(np.asarray(val[:rows * (n_ctx + 1)], dtype=np.int64)).view(rows, n_ctx + 1)
    concept = concept_token_ids(tokenizer, place_words(place))
    sweep = steering_sweep(model, sae, latent, strengths, prompts, concept, heldout,
                           max_new_tokens=40, seed=cfg.data.seed, mode="clamp", stop_id=shards.start_id)
    for row in sweep:
        row["generations"] = [tokenizer.decode([i for i in g if i != shards.start_id]) for g in row["generations"][:3]]
    best = max(sweep, key=lambda r: r["concept_share"])
    return {"place": place, "latent": latent, "variable_auroc": match["auroc"], "mode": "clamp",
            "mean_activation": mean, "multiples": list(STEER_MULTIPLES), "concept_ids": concept,
            "rows": sweep, "best": {k: best[k] for k in ("strength", "concept_share", "share_factor",
                                                           "heldout_loss", "loss_increase")}}


@stage("circuits", needs=("tokenizer", "lm", "transcoders"), reads=("circuits",), optional=("features",))
def build_circuits(run: Run, folder: Path) -> dict:
    """Attribution graphs through the transcoders (`interpret/circuits.py`) for the first
    items of a few shipped task suites (`circuits.capabilities`): per item, the graph of
    the answer's and the wrong answer's logits in circuit-tracer's schema
    (`<slug>.json`), our offline viewer (`<slug>.html`, `report/graph_page.py`), and the
    top nodes ablated in the real model against the graph's prediction; `circuits.json`
    lists them. Node labels and hover contexts come from the features stage's scans of
    the transcoders, when it has made them. With `transcoders.cross_layer`, each prompt's
    graph is also built through the cross-layer transcoder, and its scores stand beside
    the transcoders' in circuits.json (each graph's "crosslayer"; the means of both
    kinds under the top-level "crosslayer")."""
    from .interpret.capabilities import answer_ids, shipped_suites
    from .interpret.circuits import attribution_graph, intervention_check, prune, to_circuit_tracer_json
    from .lm.model import load_model
    from .report.graph_page import scan_contexts, write_graph_page
    from .report.standalone import json_safe
    from .sae.crosslayer import FOLDER, load_crosslayer
    from .sae.transcoders import load_transcoders

    cfg = run.cfg.circuits
    started = time.time()
    model = load_model(run.stage_dir("lm"))
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    transcoders = load_transcoders(run.stage_dir("transcoders"))
    clt = load_crosslayer(run.stage_dir("transcoders") / FOLDER) if run.cfg.transcoders.cross_layer else None
    text = token_text(tokenizer, tokenizer.start_id)
    kind = "storyworld" if run.cfg.data.source == "storyworld" else "tinystories"
    suite = shipped_suites().get(kind, [])
    scans = {layer: run.stage_dir("features") / "transcoders" / f"layer_{layer}" for layer in transcoders}
    scans = {layer: path for layer, path in scans.items() if (path / "labels.json").is_file()}
    labels = {layer: json.loads((path / "labels.json").read_text()) for layer, path in scans.items()}
    graphs = []
    for capability in cfg.capabilities:
        items = [item for item in suite if item.capability == capability]
        if not items:
            raise ConfigError(f"circuits.capabilities names {capability!r}, which the {kind} suites in "
                              f"data/tasks/{kind}/ do not have: use one of "
                              f"{', '.join(sorted({i.capability for i in suite}))}")
        # whole prompts only, the start token first: a graph of a cut prompt explains another text
        fitting = [item for item in items
                   if len(answer_ids(tokenizer, item.prompt, item.answer)[0]) < model.cfg.n_ctx]
        for n, item in enumerate(fitting[:cfg.prompts]):
            context, answer = answer_ids(tokenizer, item.prompt, item.answer)
            ids = [tokenizer.start_id] + context
            targets = [answer[0]]
            if item.wrong is not None:
                _, wrong = answer_ids(tokenizer, item.prompt, item.wrong)
                if wrong[0] != answer[0]:
                    targets.append(wrong[0])
            graph = attribution_graph(model, transcoders, ids, targets=targets)
            pruned = prune(graph, cfg.node_threshold, cfg.edge_threshold)
            slug = f"{capability}-{n}"
            as_json = to_circuit_tracer_json(graph, text, labels=labels or None, slug=slug,
                                             node_threshold=cfg.node_threshold,
                                             edge_threshold=cfg.edge_threshold, prompt=item.prompt)
            atomic_write_json(folder / f"{slug}.json", as_json)
            contexts = scan_contexts(as_json, scans, text) if scans else None
            write_graph_page(as_json, folder / f"{slug}.html", contexts=contexts,
                             title=f"Attribution graph, {capability} {n}: the answer {item.answer.strip()!r}")
            check = intervention_check(model, transcoders, ids, graph, top=cfg.intervention_top)
            graphs.append({
                "slug": slug, "capability": capability, "prompt": item.prompt, "answer": item.answer,
                "wrong": item.wrong, "targets": [text(t) for t in targets],
                "target_probs": [float(p) for p in graph.logit_probs],
                **graph_figures(graph, pruned, check),
                "intervention_correlation_frozen": json_safe(float(check.frozen_correlation))})
            if clt is not None:  # the same prompt and targets through the CLT, scores side by side
                g = attribution_graph(model, clt, ids, targets=targets)
                check = intervention_check(model, clt, ids, g, top=cfg.intervention_top)
                graphs[-1]["crosslayer"] = graph_figures(g, prune(g, cfg.node_threshold, cfg.edge_threshold), check)
    result = {"graphs": graphs, "labelled_from": sorted(str(p.relative_to(run.root)) for p in scans.values()),
              "config": dataclasses.asdict(cfg), "seconds": round(time.time() - started, 2)}
    if clt is not None and graphs:  # both kinds' scores side by side, averaged over the prompts
        result["crosslayer"] = {key: {"transcoders": sum(g[key] for g in graphs) / len(graphs),
                                      "crosslayer": sum(g["crosslayer"][key] for g in graphs) / len(graphs)}
                                for key in ("replacement_score", "replacement_score_pruned",
                                            "completeness_score", "completeness_score_pruned")}
    atomic_write_json(folder / "circuits.json", result)
    correlations = [g["intervention_correlation"] for g in graphs if g["intervention_correlation"] is not None]
    summary = {"graphs": len(graphs), "nodes_kept": sum(g["nodes_kept"] for g in graphs),
               "replacement_score_mean": sum(g["replacement_score"] for g in graphs) / len(graphs) if graphs else None,
               "intervention_correlation_mean": sum(correlations) / len(correlations) if correlations else None,
               "seconds": result["seconds"]}
    if "crosslayer" in result:
        summary.update({f"crosslayer_{key}_mean": result["crosslayer"][key]["crosslayer"]
                        for key in ("replacement_score", "completeness_score")})
    return summary


def graph_figures(graph, pruned, check) -> dict:
    """One attribution graph's sizes and scores, whole and pruned, and the intervention
    check's correlation (`interpret/circuits.py`), as circuits.json records them."""
    from .interpret.circuits import completeness_score, replacement_score
    from .report.standalone import json_safe

    return {"features": int(graph.n_features), "nodes_kept": int(pruned.node_mask.sum()),
            "edges_kept": int(pruned.edge_mask.sum()),
            "replacement_score": float(replacement_score(graph)),
            "replacement_score_pruned": float(replacement_score(graph, pruned)),
            "completeness_score": float(completeness_score(graph)),
            "completeness_score_pruned": float(completeness_score(graph, pruned)),
            "intervention_correlation": json_safe(float(check.correlation))}


@stage("report", needs=(), reads=(), reads_all=True)
def build_report(run: Run, folder: Path) -> dict:
    """One self-contained HTML page of whatever the run has built (see `report/page.py`)."""
    from .report import headline, write_report

    write_report(run.root, folder / "index.html", preset=run.cfg.preset)
    return {k: v for k, v in headline(run.root).items() if k != "run"}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
