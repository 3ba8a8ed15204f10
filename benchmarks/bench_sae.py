"""SAE training throughput and quality: our trainer side by side with SAELens.

    python benchmarks/bench_sae.py                           # tiny run's store, relu + topk
    python benchmarks/bench_sae.py --tokens 300000 --skip-saelens
    python benchmarks/bench_sae.py --store runs/small/activations --d-sae 2048

Installing the SAELens column (the optional `interp` extra, `sae-lens>=6.54,<7`). sae-lens
pulls in transformer-lens and transformers; install torch first so pip does not fetch a
CUDA build, and prefer a separate venv so the course's own stays small:

    python3 -m venv /tmp/saelens-venv
    /tmp/saelens-venv/bin/pip install torch==2.13.0          # or the CUDA build you use
    /tmp/saelens-venv/bin/pip install "sae-lens>=6.54,<7" -e .
    python benchmarks/bench_sae.py --saelens-python /tmp/saelens-venv/bin/python
    # (or run the whole benchmark with /tmp/saelens-venv/bin/python)

If `import sae_lens` fails in that interpreter, the SAELens rows are skipped with a note.

Data. Both trainers read the *same* cached activations: one hook of a store written by
`collect_activations` (default: the tiny run's `runs/tiny/activations`, built in a
temporary runs folder if missing), decoded once to float32 in memory and split at a
window boundary into training rows and a held-out tail of whole context windows that
no trainer sees. Batches are drawn from that tensor by one in-memory source (a fresh
permutation a pass) with the trainer's source interface (`d_in`, `d_out`,
`batches(batch_size, seed, start_batch)`, `scale`); SAELens gets the same batches as a
plain iterator of tensors, which is what its `SAETrainer` reads (`DataProvider`). No LM
and no SAELens ActivationsStore run: only the SAE trainers are measured.

Trainers. Ours: `train_sae` unchanged (its b_dec init, AuxK, dead counters, metrics log,
checkpoints, final evaluation and save), input scale from the store (E||x||^2 = d_in);
the saved SAE is loaded back with `load_sae` (scale folded). SAELens: its
`StandardTrainingSAE` / `TopKTrainingSAE` trained by its own `SAETrainer.fit()` (its
Adam, LR scheduler, L1 warm-up, dead-feature tracking, grad clipping, and the
`expected_average_only_in` norm estimate on its first `n_batches_for_norm_estimate`
batches, folded into the weights at the end), wandb off.

Recipes. relu = Anthropic's April 2024 update on both sides: L1 of latents weighted by
decoder-row norms with the same coefficient semantics (per-token sum, batch mean), L1
warm-up over the first 5% of steps, no LR warm-up (SAELens's recipe below), linear LR
decay to 0 over the last 20%, decoder rows initialised at norm 0.1 with encoder =
decoder^T, Adam (0.9, 0.999), grad-norm clip 1. SAELens's documented standard-SAE recipe
is used as written (`StandardTrainingSAEConfig(normalize_activations="expected_average_only_in",
l1_coefficient=5, l1_warm_up_steps=5% of steps)`, `lr_warm_up_steps=0`, `lr_decay_steps=20%`)
except the learning rate: its 5e-5 is sized for 30K steps of 4096 tokens, so both get
`--lr-relu` (`--saelens-lr-relu 5e-5` runs the tutorial's value). topk: the same k;
`TopKTrainingSAEConfig` defaults (rescale_acts_by_decoder_norm, AuxK coefficient 1,
decoder init norm 0.1) plus `expected_average_only_in`; SAELens documents no topk LR
recipe, so both get `--lr-topk` with `--lr-warmup-steps` and the decay. Each keeps its own
dead-latent rule (ours: silent 100K tokens; SAELens: 1000 steps).

Input scale. An L1 coefficient means something only against a given input norm. SAELens
scales inputs so that E||x|| = sqrt(d_in) (estimated on its first batches); the course's
stores record the constant for E||x||^2 = d_in, a few percent smaller (2.6% on the tiny
run's residual stream), which makes the same l1 bite harder. So that both trainers solve
the same problem, ours gets SAELens's convention, computed on the training rows
(`--norm mean-norm`, the default); `--norm store` uses the store's constant.

Timing. A step is everything between two batch requests (data, forward, backward,
optimizer, bookkeeping); tokens/s = batch_size / median step time, the first steps (with
compilation) and SAELens's norm-estimate requests excluded. First a short probe of every
mode of ours (fp32 / bf16 autocast, eager / torch.compile; plus SAELens as recommended
and, for reference, SAELens with its GPU tip autocast=True) picks ours' fastest; the
full runs then put it against SAELens as recommended on this device (fp32, eager on CPU).
The probe runs its trainers in lockstep: one process, a thread each, taking turns one
step at a time, so load from other jobs on a shared machine hits all of them alike.
The full runs by default (`--timing alone`) run each trainer alone in its own process,
as training is run, alternating which goes first from one repeat to the next; take the
median of several `--repeats` on a shared machine. `--timing lockstep` runs them in
lockstep instead: fairer to machine noise, but every turn refills the caches and wakes
a second OpenMP team, a cost per step that real training never pays (on the 2-core CPU,
one 1,024-latent ReLU step of ours took 3.2-4.3 ms alone, 5.2-5.5 ms alternating with a
SAELens step in one thread, 6.4-9.2 ms in lockstep threads; SAELens's 18-19 ms became
19-25 ms). On whole runs of the default settings, though, the two agreed roughly:
ours/SAELens 2.55x and 2.37x alone (ReLU, TopK; median of 3), 2.89x and 2.36x in lockstep.

Quality: after each full run, FVE = 1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2
and L0 = mean active latents per token, on the held-out rows, in eval mode, raw units.

Memory: one subprocess per (trainer, kind) trains `--memory-steps` steps alone; peak RSS
is sampled every 5 ms during training, dRSS is that minus the RSS just before it (after
imports and the decoded activations); on CUDA, torch.cuda.max_memory_allocated.

Collection: `collect_activations` of the store's model and hooks into temporary stores at
each storage dtype (median of 3 interleaved runs), with the bytes a value costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_SAE_RESULT "
OUR_MODES = ["float32", "bfloat16", "float32+compile", "bfloat16+compile"]
REPLICATION_D_SAE, REPLICATION_BATCH = 16_384, 4096  # the replication preset's SAE


# --- measuring ----------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's RSS every `interval` s in a thread; `.peak` is the maximum."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


class Baton:
    """Round-robin turns among n threads: `take(i)` blocks until it is i's turn,
    `give(i)` hands the turn to the next participant still running."""

    def __init__(self, n: int):
        self.cond, self.turn, self.running = threading.Condition(), 0, [True] * n

    def take(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def give(self, i: int) -> None:
        with self.cond:
            if self.turn != i:
                return
            n = len(self.running)
            for step in range(1, n + 1):
                if self.running[(i + step) % n]:
                    self.turn = (i + step) % n
                    break
            self.cond.notify_all()

    def finish(self, i: int) -> None:
        with self.cond:
            self.running[i] = False
        self.give(i)


class Turns:
    """A training stream that holds the baton from one request to the next: each step
    runs alone. Records the duration of each step (request k to request k+1)."""

    def __init__(self, it, baton: Baton | None, i: int, sync=None):
        self.it, self.baton, self.i, self.sync = it, baton, i, sync or (lambda: None)
        self.steps: list[float] = []
        self._start: float | None = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._start is not None:
            self.sync()
            self.steps.append(time.perf_counter() - self._start)
            if self.baton:
                self.baton.give(self.i)
        if self.baton:
            self.baton.take(self.i)
        self._start = time.perf_counter()
        return next(self.it)


class InMemorySource:
    """The trainer's source interface over a float32 tensor of raw activations (rows,
    d_in): each pass a fresh permutation drawn from (seed, pass), cut into batches (a
    pass's remainder dropped). The first stream asked for with `train_seed` (the training
    stream) is wrapped by `wrap` (e.g. `Turns`); other streams (b_dec init, evaluation)
    are plain."""

    def __init__(self, x, scale: float, wrap=None, train_seed: int = 0):
        self.x, self._scale, self.wrap, self.train_seed = x, scale, wrap, train_seed
        self.d_in = self.d_out = int(x.shape[1])
        self.train_stream = None

    def scale(self, hook: str | None = None) -> float:
        return self._scale

    def _stream(self, batch_size: int, seed: int, start_batch: int):
        import torch

        n = len(self.x)
        per_pass = n // batch_size
        if per_pass < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} training rows")
        epoch, index = divmod(start_batch, per_pass)
        while True:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=generator).to(self.x.device)
            for i in range(index, per_pass):
                batch = self.x[perm[i * batch_size : (i + 1) * batch_size]]
                yield batch, batch
            epoch, index = epoch + 1, 0

    def batches(self, batch_size: int, seed: int, start_batch: int = 0):
        stream = self._stream(batch_size, seed, start_batch)
        if seed == self.train_seed and self.train_stream is None and self.wrap:
            self.train_stream = self.wrap(stream)
            return self.train_stream
        return stream


def load_rows(store_path: str, hook: str, held_out: int, norm: str = "store"):
    """(train float32 (n, d), held-out float32 (m, d), input scale) from a store; the
    held-out rows are the store's last whole windows (collection order is a seeded
    shuffle of windows, so they are contexts the training rows never saw). The scale is
    the store's (E||x||^2 = d) or, with norm="mean-norm", SAELens's E||x|| = sqrt(d)
    measured on the training rows."""
    import numpy as np
    import torch

    from tinycourse.sae.activations import ActivationStore

    store = ActivationStore.open(store_path)
    x = torch.from_numpy(store.read(hook))
    window = np.asarray(store.rows[:, 0])
    cut = len(x) - held_out
    while cut > 0 and window[cut - 1] == window[cut]:  # back up to a window boundary
        cut -= 1
    train = x[:cut]
    if norm == "mean-norm":
        return train, x[cut:], float(train.shape[1] ** 0.5 / train.norm(dim=-1).mean())
    return train, x[cut:], store.scale(hook)


def held_out_metrics(forward, x, batch: int = 4096) -> dict:
    """forward(x) -> (reconstruction, latents), raw units. FVE and L0 pooled over x."""
    import torch

    sse, active = 0.0, 0.0
    with torch.no_grad():
        mean = x.double().mean(0)
        sst = float((x.double() - mean).pow(2).sum())
        for a in range(0, len(x), batch):
            xb = x[a : a + batch]
            recon, latents = forward(xb)
            sse += float((xb.double() - recon.double()).pow(2).sum())
            active += float((latents != 0).sum())
    return {"fve": 1 - sse / sst, "l0": active / len(x)}


# --- the two trainers ------------------------------------------------------------------------

def lr_warmup_steps(p: dict) -> int:
    """The LR warm-up both trainers get: none for relu (the documented recipe)."""
    return 0 if p["kind"] == "relu" else p["lr_warmup_steps"]


def run_ours(p: dict, source: InMemorySource, device):
    """Train with `train_sae`; -> (forward on raw x, extras)."""
    from tinycourse.config import SAEConfig
    from tinycourse.sae.model import load_sae
    from tinycourse.sae.train import train_sae

    dtype, _, compile_ = p["mode"].partition("+")
    steps = p["n_tokens"] // p["batch_size"]
    cfg = SAEConfig(
        kind=p["kind"], hook_in=p["hook"], d_sae=p["d_sae"], k=p["k"], l1_coeff=p["l1"],
        n_tokens=steps * p["batch_size"], batch_size=p["batch_size"], lr=p["lr"],
        lr_warmup_steps=lr_warmup_steps(p), lr_decay_frac=0.2, l1_warmup_frac=0.05,
        dtype=dtype, compile=compile_ == "compile", seed=source.train_seed)
    with tempfile.TemporaryDirectory(prefix="bench_sae_ours_") as out_dir:
        summary = train_sae(cfg, source, out_dir, device=device, progress=False,
                            input_scale=source.scale())
        sae = load_sae(out_dir, device=device)

    def forward(x):
        out = sae(x)
        return out.reconstruction, out.latents

    return forward, {"dead_frac": summary["dead_fraction"], "skip": 0}


def run_saelens(p: dict, source: InMemorySource, device):
    """Train with SAELens's `SAETrainer.fit()`; -> (forward on raw x, extras)."""
    import torch
    from sae_lens import (SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig,
                          TopKTrainingSAE, TopKTrainingSAEConfig)
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(source.train_seed)
    batch, steps = p["batch_size"], p["n_tokens"] // p["batch_size"]
    common = dict(d_in=source.d_in, d_sae=p["d_sae"], device=str(device),
                  normalize_activations="expected_average_only_in", apply_b_dec_to_input=True)
    if p["kind"] == "relu":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(
            **common, l1_coefficient=p["l1"], l1_warm_up_steps=steps // 20))
    elif p["kind"] == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=p["k"]))
    else:
        raise ValueError(f"no SAELens counterpart wired up for kind {p['kind']!r}")
    n_norm = p["n_norm_batches"]
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=p["lr"],
        lr_end=p["lr"] / 10,  # what LanguageModelSAERunnerConfig fills in (constant: unused)
        lr_warm_up_steps=lr_warmup_steps(p), lr_decay_steps=steps // 5, device=str(device),
        autocast=p["mode"] == "autocast", n_batches_for_norm_estimate=n_norm,
        logger=LoggingConfig(log_to_wandb=False))
    provider = (x for x, _ in source.batches(batch, seed=source.train_seed))
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider)
    trainer.fit()  # norm estimate on the first n_norm batches, training, folding
    sae.eval()

    def forward(x):
        latents = sae.encode(x)
        return sae.decode(latents), latents

    return forward, {"dead_frac": float(trainer.dead_neurons.float().mean()), "skip": n_norm}


RUNNERS = {"ours": run_ours, "saelens": run_saelens}


def prepare(spec: dict):
    """Threads, device, the activations; imports every trainer asked for."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    train, held, scale = load_rows(spec["store"], spec["hook"], spec["held_out"], spec["norm"])
    if device.type == "cuda":
        train, held = train.to(device), held.to(device)
    import torch._dynamo  # noqa: F401  sae_lens imports it, ours on its first Adam step: not
    # training memory (~70 MB of RSS), so load it before the baseline for both
    for p in spec["participants"]:
        __import__("tinycourse.sae.train" if p["trainer"] == "ours" else "sae_lens")
    return torch, device, train, held, scale


def lockstep_worker(spec: dict) -> list[dict]:
    """Train every participant in its own thread, one step at a time in turn."""
    torch, device, train, held, scale = prepare(spec)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    parts = spec["participants"]
    baton = Baton(len(parts))
    results: list[dict | None] = [None] * len(parts)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        p = {**spec, **parts[i]}
        source = InMemorySource(train, scale, wrap=lambda s: Turns(s, baton, i, sync))
        try:
            forward, extra = RUNNERS[p["trainer"]](p, source, device)
            steps = source.train_stream.steps
            timed = steps[extra.pop("skip") :][spec["skip_steps"] :] or steps
            results[i] = {**{k: p[k] for k in ("trainer", "kind", "mode", "lr", "d_sae",
                                                "batch_size", "n_tokens")},
                          "sparsity": p["k"] if p["kind"] == "topk" else p["l1"],
                          "tokens_per_s": p["batch_size"] / statistics.median(timed),
                          "mean_tokens_per_s": p["batch_size"] * len(timed) / sum(timed),
                          "steps_timed": len(timed), "train_s": sum(steps), **extra}
            if spec["evaluate"]:
                results[i].update(held_out_metrics(forward, held))
        except BaseException as err:  # noqa: BLE001 (reported by the parent)
            errors.append(err)
            raise
        finally:
            baton.finish(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def memory_worker(spec: dict) -> dict:
    """One participant alone: peak RSS (CPU) or peak CUDA memory while it trains."""
    torch, device, train, held, scale = prepare(spec)
    p = {**spec, **spec["participants"][0]}
    source = InMemorySource(train, scale, wrap=lambda s: s)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = rss_bytes()
    with PeakRSS() as peak:
        RUNNERS[p["trainer"]](p, source, device)
    return {"trainer": p["trainer"], "kind": p["kind"], "rss_base_mb": base / 2**20,
            "rss_peak_mb": peak.peak / 2**20, "steps": p["n_tokens"] // p["batch_size"],
            "cuda_peak_mb": (torch.cuda.max_memory_allocated() / 2**20
                             if device.type == "cuda" else None)}


def collect_worker(spec: dict) -> dict:
    import torch

    from tinycourse.sae.activations import BYTES_PER_VALUE, collect_activations
    from tinycourse.config import ActivationsConfig
    from tinycourse.lm.model import load_model
    from tinycourse.corpus.shards import Shards

    torch.set_num_threads(spec["threads"])
    model = load_model(spec["lm"], device=spec["device"])
    shards = Shards.open(spec["shards"])
    rates: dict[str, list[float]] = {d: [] for d in spec["dtypes"]}
    for rep in range(spec["repeats"]):
        for dtype in spec["dtypes"][:: 1 if rep % 2 == 0 else -1]:
            cfg = ActivationsConfig(hooks=tuple(spec["hooks"]), n_tokens=spec["n_tokens"],
                                    dtype=dtype, seed=rep + 1)
            with tempfile.TemporaryDirectory(prefix="bench_collect_") as out:
                summary = collect_activations(model, shards, cfg, out, device=spec["device"],
                                              progress=False, model_hash="bench")
            rates[dtype].append(summary["tokens_per_s"])
    width = sum(summary["widths"].values())
    return {"rows": [{"dtype": d, "tokens_per_s": statistics.median(r), "runs": len(r),
                      "bytes_per_value": BYTES_PER_VALUE[d],
                      "bytes_per_token": BYTES_PER_VALUE[d] * width} for d, r in rates.items()],
            "hooks": spec["hooks"], "width": width, "n_tokens": spec["n_tokens"]}


WORKERS = {"lockstep": lockstep_worker, "memory": memory_worker, "collect": collect_worker}


# --- the parent -------------------------------------------------------------------------------

def launch(python: str, spec: dict, what: str, timeout: float = 3600):
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.time()
    proc = subprocess.run([python, __file__, "--worker", json.dumps(spec)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            print(f"  {what}: {time.time() - t0:.0f} s", flush=True)
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    print(f"  ! {what} failed (exit {proc.returncode}):\n    " + "\n    ".join(tail),
          file=sys.stderr, flush=True)
    return None


def run_full(python: str, spec: dict, parts: list[dict], timing: str, what: str) -> list[dict]:
    """Train `parts` on `spec`: one after another, each alone in its own process, or all
    in lockstep in one; -> their results (failures reported and left out)."""
    if timing == "lockstep":
        return launch(python, {**spec, "participants": parts},
                      f"{what}, {len(parts)} in lockstep") or []
    results = [launch(python, {**spec, "participants": [part]}, f"{what}, {part['trainer']} alone")
               for part in parts]
    return [r[0] for r in results if r]


def has_saelens(python: str) -> tuple[bool, str]:
    proc = subprocess.run([python, "-c", "import sae_lens, torch; "
                           "print(sae_lens.__version__, torch.__version__)"],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    return False, (proc.stderr.strip().splitlines() or ["?"])[-1]


def find_store(args) -> Path:
    """--store, else the tiny run's activations (runs/tiny), else build the tiny run's
    activations stage in a temporary runs folder (a few minutes on a CPU)."""
    if args.store:
        return Path(args.store)
    default = REPO / "runs" / "tiny" / "activations"
    if (default / "store.json").exists():
        return default
    from tinycourse.config import preset
    from tinycourse.pipeline import Run

    runs_dir = Path(tempfile.gettempdir()) / "bench_sae_runs"
    print(f"no store at {default}: building the tiny run's activations in {runs_dir}")
    return Run(preset("tiny"), runs_dir=runs_dir).ensure("activations")


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:,.1f}K"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def median_of(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=1_000_000, help="training tokens per SAE")
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--k", type=int, default=16, help="topk: active latents (both trainers)")
    p.add_argument("--l1", type=float, default=5.0, help="relu: L1 coefficient (both trainers)")
    p.add_argument("--lr-relu", type=float, default=4e-4)
    p.add_argument("--lr-topk", type=float, default=1e-3)
    p.add_argument("--saelens-lr-relu", type=float, default=None,
                   help="SAELens's relu LR if not --lr-relu (its tutorial's: 5e-5)")
    p.add_argument("--lr-warmup-steps", type=int, default=50)
    p.add_argument("--kinds", default="relu,topk")
    p.add_argument("--store", default=None, help="an activation store folder (with store.json)")
    p.add_argument("--hook", default=None, help="the store's hook to train on (default: its first)")
    p.add_argument("--held-out", type=int, default=16_384, help="held-out tokens (whole windows)")
    p.add_argument("--repeats", type=int, default=1, help="full runs per kind (median)")
    p.add_argument("--timing", choices=("alone", "lockstep"), default="alone",
                   help="full runs: each trainer alone in its own process, or all in lockstep")
    p.add_argument("--norm", choices=("mean-norm", "store"), default="mean-norm",
                   help="input scale: E||x|| = sqrt(d_in) as SAELens, or the store's constant")
    p.add_argument("--probe-steps", type=int, default=60,
                   help="lockstep steps of every mode in the probe (0: no probe)")
    p.add_argument("--our-mode", default=None, choices=OUR_MODES,
                   help="use this mode of ours instead of the probe's fastest")
    p.add_argument("--memory-steps", type=int, default=100,
                   help="steps of the per-row memory runs (0: no memory columns)")
    p.add_argument("--skip-saelens", action="store_true")
    p.add_argument("--saelens-python", default=None,
                   help="an interpreter with sae_lens and tinycourse importable (default: this one)")
    p.add_argument("--n-norm-batches", type=int, default=1000,
                   help="SAELens's n_batches_for_norm_estimate (its default: 1000)")
    p.add_argument("--collect-tokens", type=int, default=50_000,
                   help="tokens per collection run (0: no collection benchmark)")
    p.add_argument("--replication", action=argparse.BooleanOptionalAction, default=None,
                   help="add the 16,384-latent, d_in 768 SAE (default: on CUDA only)")
    p.add_argument("--replication-tokens", type=int, default=REPLICATION_BATCH * 300,
                   help="training tokens of the replication-sized rows (batch 4096)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, but 1 on an oversubscribed CPU, whose "
                        "1-minute load average exceeds its cores: there more threads slow each step)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        print(RESULT_TAG + json.dumps(WORKERS[spec["worker"]](spec)), flush=True)
        return

    import platform

    import torch

    from tinycourse.sae.activations import ActivationStore

    t_start = time.time()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    oversubscribed = device == "cpu" and os.getloadavg()[0] > (os.cpu_count() or 1)
    threads = args.threads or (1 if oversubscribed else torch.get_num_threads())
    store_path = find_store(args).resolve()
    store = ActivationStore.open(store_path)
    hook = args.hook or store.hooks[0]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    print(f"store {store_path} `{hook}`: {store.n_tokens:,} tokens x {store.width(hook)} "
          f"({store.dtype}); torch {torch.__version__} on {device}, {threads} threads, "
          f"{platform.machine()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    saelens_python = args.saelens_python or sys.executable
    use_saelens, note = False, "SAELens skipped (--skip-saelens)"
    if not args.skip_saelens:
        use_saelens, info = has_saelens(saelens_python)
        note = (f"sae-lens {info.split()[0]} (torch {info.split()[1]})" if use_saelens else
                f"SAELENS COLUMN SKIPPED: `import sae_lens` failed in {saelens_python} ({info}); "
                f"install it as the top of benchmarks/bench_sae.py says")
    print(note)
    both_python = saelens_python if use_saelens else sys.executable

    base = dict(store=str(store_path), hook=hook, held_out=args.held_out, threads=threads,
                device=device, d_sae=args.d_sae, batch_size=args.batch_size, k=args.k,
                l1=args.l1, lr_warmup_steps=args.lr_warmup_steps,
                n_norm_batches=args.n_norm_batches, norm=args.norm)
    lr = {"relu": args.lr_relu, "topk": args.lr_topk}
    saelens_lr = {"relu": args.saelens_lr_relu or args.lr_relu, "topk": args.lr_topk}

    # 1. probe: every mode of ours (and SAELens two ways) in lockstep, a few dozen steps
    best = {kind: args.our_mode or "float32" for kind in kinds}
    probe_rows = []
    if args.probe_steps and not args.our_mode:
        for kind in kinds:
            parts = [{"trainer": "ours", "mode": m, "lr": lr[kind]} for m in OUR_MODES]
            if use_saelens:
                parts += [{"trainer": "saelens", "mode": m, "lr": saelens_lr[kind]}
                          for m in ("float32", "autocast")]
            spec = {**base, "worker": "lockstep", "kind": kind, "participants": parts,
                    "n_tokens": args.probe_steps * args.batch_size, "skip_steps": 10,
                    "evaluate": False, "n_norm_batches": 10}
            res = launch(both_python, spec, f"probe {kind} ({len(parts)} trainers in lockstep)")
            if not res:
                continue
            ours = {r["mode"]: r["tokens_per_s"] for r in res if r["trainer"] == "ours"}
            best[kind] = max(ours, key=ours.get)
            ref = next((r["tokens_per_s"] for r in res if r["trainer"] == "saelens"
                        and r["mode"] == "float32"), None)
            for r in res:
                mode = r["mode"] if r["trainer"] == "ours" else (
                    "fp32 (recommended)" if r["mode"] == "float32" else "autocast bf16 (GPU tip)")
                probe_rows.append([kind, r["trainer"], mode, fmt_rate(r["tokens_per_s"]),
                                   f"{r['tokens_per_s'] / ref:.2f}x" if ref else "-",
                                   "<- used" if r["trainer"] == "ours" and r["mode"] == best[kind]
                                   else ""])

    # 2. full runs: ours (fastest mode) and SAELens (as recommended), alone or in lockstep
    runs: dict[tuple, list[dict]] = {}
    for rep in range(args.repeats):
        for kind in kinds:
            parts = [{"trainer": "ours", "mode": best[kind], "lr": lr[kind]}]
            if use_saelens:
                parts.append({"trainer": "saelens", "mode": "float32", "lr": saelens_lr[kind]})
            spec = {**base, "worker": "lockstep", "kind": kind, "n_tokens": args.tokens,
                    "skip_steps": 10, "evaluate": True}
            for r in run_full(both_python, spec, parts[:: -1 if rep % 2 else 1], args.timing,
                              f"full {kind} run {rep + 1} ({args.tokens:,} tokens)"):
                runs.setdefault((kind, args.d_sae, r["trainer"]), []).append(r)

    # 3. memory: each row alone in its own process
    memory = {}
    if args.memory_steps:
        for kind in kinds:
            for trainer, python, mode in [("ours", sys.executable, best[kind])] + (
                    [("saelens", saelens_python, "float32")] if use_saelens else []):
                spec = {**base, "worker": "memory", "kind": kind, "skip_steps": 0,
                        "participants": [{"trainer": trainer, "mode": mode, "lr": lr[kind]}],
                        "n_tokens": args.memory_steps * args.batch_size,
                        "n_norm_batches": min(args.n_norm_batches, 100)}
                r = launch(python, spec, f"memory {trainer} {kind}")
                if r:
                    memory[(kind, args.d_sae, trainer)] = r

    footnote = ""
    if args.replication if args.replication is not None else device == "cuda":
        footnote = replication(args, base, lr, kinds, use_saelens, both_python, runs)

    # 4. collection throughput, with the store's model
    collect = None
    lm, shards = store_path.parent / "lm", store_path.parent / "shards"
    if args.collect_tokens and (lm / "model.safetensors").exists() and (shards / "meta.json").exists():
        collect = launch(sys.executable, {"worker": "collect", "lm": str(lm), "shards": str(shards),
                                          "hooks": store.hooks, "n_tokens": args.collect_tokens,
                                          "dtypes": ["float16", "bfloat16", "float32"],
                                          "repeats": 3, "threads": threads, "device": device},
                         "collection")

    # --- the note ---
    print(f"\n(benchmark took {time.time() - t_start:.0f} s)\n")
    print(f"SAE training on `{hook}` ({store.width(hook)} wide) of {store_path.parent.name}/"
          f"{store_path.name} ({store.n_tokens:,} tokens, {store.dtype}); {args.tokens:,} "
          f"training tokens, batch {args.batch_size}; FVE and L0 on {args.held_out:,} held-out "
          f"tokens. {device}, {threads} torch threads, torch {torch.__version__}; {note}.")
    cuda = device == "cuda"
    headers = ["trainer", "kind", "d_sae", "k / l1", "lr", "mode", "tokens/s", "vs SAELens",
               "peak CUDA MiB" if cuda else "peak RSS MiB", "dRSS MiB", "held-out FVE", "L0",
               "dead %", "train s"]
    rows = []
    for key in sorted(runs, key=lambda k: (k[1], k[0], k[2] != "ours")):
        r, kind, d_sae, trainer = median_of(runs[key]), *key
        ref = runs.get((kind, d_sae, "saelens"))
        ratio = r["tokens_per_s"] / median_of(ref)["tokens_per_s"] if ref else None
        m = memory.get(key) or r.get("memory")
        mem = ["-", "-"] if not m else (
            [f"{m['cuda_peak_mb']:,.0f}", "-"] if cuda else
            [f"{m['rss_peak_mb']:,.0f}", f"{m['rss_peak_mb'] - m['rss_base_mb']:,.0f}"])
        mode = r["mode"] if trainer == "ours" else ("fp32" if r["mode"] == "float32" else r["mode"])
        rows.append([trainer, kind, f"{d_sae:,}", f"{r['sparsity']:g}", f"{r['lr']:g}", mode,
                     fmt_rate(r["tokens_per_s"]), f"{ratio:.2f}x" if ratio else "-", *mem,
                     f"{r['fve']:.4f}", f"{r['l0']:.1f}", f"{100 * r['dead_frac']:.1f}",
                     f"{r['train_s']:.0f}"])
    print_table(headers, rows)
    timing = ("each trainer alone in its own process" if args.timing == "alone" else
              "trainers of a kind in lockstep in one process")
    print(f"tokens/s: batch / median step time, {timing}"
          f"{f', median of {args.repeats} runs' if args.repeats > 1 else ''}; memory: "
          f"{args.memory_steps} steps alone in a subprocess; train s: time in its own steps.")
    if footnote:
        print(footnote)
    if probe_rows:
        print(f"\nprobe, {args.probe_steps} steps of each mode in lockstep (first 10 untimed):")
        print_table(["kind", "trainer", "mode", "tokens/s", "vs SAELens fp32", ""], probe_rows)
    if collect:
        print(f"\nactivation collection (collect_activations, {collect['n_tokens']:,} tokens, "
              f"{len(collect['hooks'])} hooks = {collect['width']} values/token, median of 3):")
        print_table(["store dtype", "tokens/s", "bytes/value", "bytes/token", "vs float32"],
                    [[c["dtype"], fmt_rate(c["tokens_per_s"]), str(c["bytes_per_value"]),
                      f"{c['bytes_per_token']:,}", f"{c['bytes_per_value'] / 4:.2f}x"]
                     for c in collect["rows"]])
    elif args.collect_tokens:
        print(f"\n(collection benchmark skipped: no lm/ and shards/ beside {store_path})")


def replication(args, base, lr, kinds, use_saelens, python, runs) -> str:
    """The replication preset's SAE size: 16,384 latents on d_in 768, batch 4096. Its
    activations: --store's hook if it is 768 wide, else a store collected from an
    UNTRAINED replication-shaped GPT over the store's shards (a speed and memory row:
    its FVE says nothing about the trainers)."""
    import dataclasses

    import torch

    from tinycourse.sae.activations import ActivationStore, collect_activations
    from tinycourse.config import ActivationsConfig, preset
    from tinycourse.lm.model import GPT
    from tinycourse.corpus.shards import Shards

    store = ActivationStore.open(base["store"])
    path, hook = base["store"], base["hook"]
    footnote = (f"{REPLICATION_D_SAE:,}-latent rows: `{hook}` of the same store, batch "
                f"{REPLICATION_BATCH}, {args.replication_tokens:,} tokens, relu lr 5e-5; "
                f"memory from {min(args.memory_steps, 50)} steps alone.")
    if store.width(hook) != 768:
        shards = Shards.open(Path(base["store"]).parent / "shards")
        cfg = dataclasses.replace(preset("replication").model, d_vocab=shards.vocab_size, n_ctx=128)
        torch.manual_seed(0)
        hook, path = "blocks.2.hook_resid_pre", str(Path(tempfile.gettempdir()) / "bench_sae_768")
        n = max(min(300_000, args.replication_tokens), args.held_out + 8192)
        collect_activations(GPT(cfg).to(base["device"]), shards,
                            ActivationsConfig(hooks=(hook,), n_tokens=n), path,
                            device=base["device"], progress=False)
        footnote = (f"{REPLICATION_D_SAE:,}-latent rows: d_in 768, batch {REPLICATION_BATCH}, "
                    f"{args.replication_tokens:,} tokens, relu lr 5e-5, on {n:,} activations of an "
                    f"UNTRAINED replication-shaped GPT (`{hook}`) over the store's shards: speed "
                    f"and memory only, their FVE says nothing; memory from "
                    f"{min(args.memory_steps, 50)} steps alone.")
        print(footnote)
    for kind in kinds:
        parts = [{"trainer": "ours", "mode": "bfloat16+compile", "lr": 5e-5 if kind == "relu"
                  else lr[kind]}]
        if use_saelens:
            parts.append({"trainer": "saelens", "mode": "float32", "lr": parts[0]["lr"]})
        spec = {**base, "worker": "lockstep", "store": path, "hook": hook, "kind": kind,
                "d_sae": REPLICATION_D_SAE, "batch_size": REPLICATION_BATCH,
                "n_tokens": args.replication_tokens, "skip_steps": 10, "evaluate": True}
        for r in run_full(python, spec, parts, args.timing, f"replication-size {kind}"):
            runs[(kind, REPLICATION_D_SAE, r["trainer"])] = [r]
        if args.memory_steps:
            for part in parts:
                r = launch(python, {**spec, "worker": "memory", "participants": [part],
                                    "n_tokens": REPLICATION_BATCH * min(args.memory_steps, 50),
                                    "n_norm_batches": 10}, f"memory {part['trainer']} {kind} 16K")
                if r and (kind, REPLICATION_D_SAE, part["trainer"]) in runs:
                    runs[(kind, REPLICATION_D_SAE, part["trainer"])][0]["memory"] = r
    return footnote


if __name__ == "__main__":
    main()
