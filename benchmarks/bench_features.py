"""The features scan's per-latent bookkeeping against the naive keep-everything-and-sort.

    python benchmarks/bench_features.py                       # random sparse latents, tiny + 16K width
    python benchmarks/bench_features.py --quick               # about a minute
    python benchmarks/bench_features.py --run runs/tiny       # adds the whole scan (LM + SAE) of a run
    python benchmarks/bench_features.py --tokens-16k 50000,200000,1000000 --naive-cap-gib 12

What is compared. ours = `interpret.features.ScanState`: each batch folded into the
running per-latent state (top k contexts, the reservoir for quantile samples, the
histogram, density, sums; the reservoir's random keys drawn per batch as `scan_features`
draws them: a generator seeded by the batch, one key per active entry, inside `update`,
so timed), then `top()` and `quantile_samples()` at the end. `update` works on the
batch's active entries only (see `interpret.features`), the input being the dense
(tokens, d_sae) latents `sae.encode` gives. naive = the sae_vis way,
`interpret.features.naive_top_contexts`: every (token, latent) activation kept in one
dense float32 array (each batch copied in as it comes), then per latent its active tokens
sorted; it gives the top k only, none of the other figures ours keeps. Memory: ours
O(d_sae x (top_k + reservoir)) plus one batch; naive 4 x tokens x d_sae bytes, so it is
skipped (`skipped` in the table) where that array would pass `--naive-cap-gib`.

Inputs. Random sparse latents, no LM: each token gets `k` latents drawn uniformly with
replacement (so about k distinct active), values exp(U(0,1)) (positive, with ties
improbable), in batches of `--batch` tokens (4,096 = the `tiny` and `replication` presets'
features batch: 32 x 128 and 16 x 256 tokens), seeded per batch. Generating a batch is
not timed, for either method. Shapes: the tiny SAE (d_sae 1,024, k 16) and the
replication width (d_sae 16,384, k 32), at the token counts of `--tokens-tiny` and
`--tokens-16k`. FeaturesConfig defaults (top_k 16, reservoir 64, 60 histogram bins).

With `--run DIR` (a run folder with lm, sae and shards stages built, e.g. runs/tiny), also
the whole scan: ours = `scan_features` unchanged (LM forward to the SAE's hook, encode,
bookkeeping, writing features.safetensors into a temporary folder, DLA included); naive =
the same forward and encode per batch, the latents kept in a dense array, then
`naive_top_contexts`. Both read the first `--run-tokens` tokens of the val split.

Timing. tokens/s = tokens / (time of the timed part), median over repeats: each repeat
reruns the whole (method, size) from an empty state; after the first, repeats stop once
the row has spent `--row-budget` seconds (the `runs` column says how many ran). Memory:
each (method, size) runs in its own subprocess; peak dRSS = peak RSS of that process
(resource.getrusage ru_maxrss) minus its peak just before the first repeat, after the
imports (and, for --run, the model and SAE loaded). vs naive = our tokens/s over naive's
at the same d_sae and tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "BENCH_FEATURES_RESULT "
TINY_D_SAE, TINY_K = 1024, 16
REPLICATION_D_SAE, REPLICATION_K = 16_384, 32


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the workers: one (method, size) a process ------------------------------------------------

def random_batch(b: int, n: int, d_sae: int, k: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + b)
    x = torch.zeros(n, d_sae)
    x.scatter_(1, torch.randint(0, d_sae, (n, k), generator=g), torch.rand(n, k, generator=g).exp_())
    return x


def synthetic_worker(spec: dict) -> dict:
    import numpy as np
    import torch

    from tinycourse.config import FeaturesConfig
    from tinycourse.interpret.features import (
        KEY_SEED_STRIDE,
        ScanState,
        naive_top_contexts,
    )

    torch.set_num_threads(spec["threads"])
    cfg = FeaturesConfig()
    d_sae, k, tokens, batch = spec["d_sae"], spec["k"], spec["tokens"], spec["batch"]
    n_batches = -(-tokens // batch)
    base = peak_rss_mib()
    times, extra = [], {}
    while True:
        elapsed = 0.0
        if spec["method"] == "ours":
            state = ScanState(d_sae, cfg)
            for b in range(n_batches):
                n = min(batch, tokens - b * batch)
                x = random_batch(b, n, d_sae, k, spec["seed"])
                t0 = time.perf_counter()
                keys = torch.Generator().manual_seed(cfg.seed * KEY_SEED_STRIDE + b)
                state.update(x, torch.arange(b * batch, b * batch + n), keys)
                elapsed += time.perf_counter() - t0
                del x
            t0 = time.perf_counter()
            state.top(), state.quantile_samples()
            elapsed += time.perf_counter() - t0
            extra["state_mib"] = state.nbytes / 2**20
            del state
        else:
            acts = np.empty((tokens, d_sae), dtype=np.float32)
            for b in range(n_batches):
                n = min(batch, tokens - b * batch)
                x = random_batch(b, n, d_sae, k, spec["seed"])
                t0 = time.perf_counter()
                acts[b * batch:b * batch + n] = x.numpy()
                elapsed += time.perf_counter() - t0
                del x
            t0 = time.perf_counter()
            naive_top_contexts(acts, cfg.top_k)
            elapsed += time.perf_counter() - t0
            del acts
        times.append(elapsed)
        if len(times) >= spec["repeats"] or sum(times) >= spec["row_budget"]:
            break
    return {"seconds": times, "peak_drss_mib": peak_rss_mib() - base, **extra}


def run_worker(spec: dict) -> dict:
    """The whole scan of a run's val split: ours (scan_features) or naive (forward + encode,
    keep every latent activation, naive_top_contexts)."""
    import math

    import numpy as np
    import torch

    from tinycourse.config import FeaturesConfig
    from tinycourse.corpus.shards import Shards
    from tinycourse.interpret.features import naive_top_contexts, scan_features
    from tinycourse.lm.model import load_model
    from tinycourse.sae.model import load_sae

    torch.set_num_threads(spec["threads"])
    run = Path(spec["run"])
    model, sae = load_model(run / "lm"), load_sae(run / "sae")
    shards = Shards.open(run / "shards")
    cfg = FeaturesConfig(n_tokens=spec["tokens"])
    n_ctx = model.cfg.n_ctx
    tokens = shards.tokens("val")
    n_windows = len(tokens) // n_ctx  # tokens 0 = the whole split, as FeaturesConfig reads it
    if spec["tokens"]:
        n_windows = min(n_windows, math.ceil(spec["tokens"] / n_ctx))
    base = peak_rss_mib()
    times, n_scanned = [], 0
    while True:
        if spec["method"] == "ours":
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                index = scan_features(model, sae, shards, cfg, out, progress=False, log=lambda s: None)
                times.append(time.perf_counter() - t0)
            n_scanned = index["n_tokens"]
        else:
            t0 = time.perf_counter()
            hook_in, start_id = sae.cfg.hook_in, shards.start_id
            acts = np.empty((n_windows * n_ctx, sae.d_sae), dtype=np.float32)
            filled = 0
            with torch.no_grad():
                for a in range(0, n_windows, cfg.batch_size):
                    starts = np.arange(a, min(n_windows, a + cfg.batch_size)) * n_ctx
                    ids = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(n_ctx)], dtype=np.int64))
                    _, cache = model.run_with_cache(ids, names=[hook_in], stop_at_layer="auto")
                    x = cache[hook_in].flatten(2).reshape(-1, sae.d_in)[ids.reshape(-1) != start_id]
                    latents = sae.encode(x.float()).numpy()
                    acts[filled:filled + len(latents)] = latents
                    filled += len(latents)
            naive_top_contexts(acts[:filled], cfg.top_k)
            times.append(time.perf_counter() - t0)
            n_scanned = filled
            del acts
        if len(times) >= spec["repeats"] or sum(times) >= spec["row_budget"]:
            break
    return {"seconds": times, "peak_drss_mib": peak_rss_mib() - base, "n_scanned": n_scanned,
            "d_sae": sae.d_sae}


WORKERS = {"synthetic": synthetic_worker, "run": run_worker}


# --- the parent -------------------------------------------------------------------------------

def launch(spec: dict, what: str) -> dict | None:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            print(f"  {what}: {time.time() - t0:.0f} s", flush=True)
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    print(f"  ! {what} failed (exit {proc.returncode}):\n    " + "\n    ".join(tail),
          file=sys.stderr, flush=True)
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def ints(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",") if t.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smaller token counts, one repeat (~1 min)")
    p.add_argument("--tokens-tiny", default=None, help="token counts at d_sae 1,024 (default 50000,200000)")
    p.add_argument("--tokens-16k", default=None, help="token counts at d_sae 16,384 (default 12288,49152,98304)")
    p.add_argument("--batch", type=int, default=4096, help="tokens a batch (default 4096)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--row-budget", type=float, default=15.0,
                   help="seconds a row may spend on repeats after its first (default 15)")
    p.add_argument("--naive-cap-gib", type=float, default=4.0,
                   help="skip naive where its dense array would pass this (default 4 GiB)")
    p.add_argument("--run", default=None, help="a run folder (lm, sae, shards built): adds the whole scan")
    p.add_argument("--run-tokens", type=int, default=0, help="val tokens of --run scanned (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        print(RESULT_TAG + json.dumps(WORKERS[spec["kind"]](spec)), flush=True)
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    repeats = 1 if args.quick else args.repeats
    tiny = ints(args.tokens_tiny or ("20000,50000" if args.quick else "50000,200000"))
    wide = ints(args.tokens_16k or ("4096,12288" if args.quick else "12288,49152,98304"))
    t_start = time.time()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{threads} threads, load average {os.getloadavg()[0]:.1f} at start")
    print(f"batch {args.batch} tokens, repeats {repeats} (row budget {args.row_budget:.0f} s), "
          f"naive cap {args.naive_cap_gib:g} GiB")

    rows = []  # (label, d_sae, tokens, method, result or None, note)
    sizes = [(TINY_D_SAE, TINY_K, n) for n in tiny] + [(REPLICATION_D_SAE, REPLICATION_K, n) for n in wide]
    for d_sae, k, n in sizes:
        for method in ("naive", "ours"):
            what = f"{method} d_sae {d_sae:,} k {k} {n:,} tokens"
            if method == "naive" and 4 * n * d_sae / 2**30 > args.naive_cap_gib:
                rows.append(("bookkeeping", d_sae, n, method, None,
                             f"skipped: {4 * n * d_sae / 2**30:.1f} GiB > cap"))
                print(f"  {what}: skipped ({4 * n * d_sae / 2**30:.1f} GiB dense array)", flush=True)
                continue
            spec = {"kind": "synthetic", "method": method, "d_sae": d_sae, "k": k, "tokens": n, "batch": args.batch,
                        "seed": args.seed, "threads": threads, "repeats": repeats, "row_budget": args.row_budget}
            rows.append(("bookkeeping", d_sae, n, method, launch(spec, what), ""))

    if args.run:
        run = Path(args.run)
        if not all((run / s / "manifest.json").exists() for s in ("lm", "sae", "shards")):
            print(f"--run {run}: no built lm, sae and shards stages there; whole scan skipped")
        else:
            for method in ("naive", "ours"):
                spec = {"kind": "run", "method": method, "run": str(run), "tokens": args.run_tokens,
                            "threads": threads, "repeats": repeats, "row_budget": args.row_budget}
                res = launch(spec, f"whole scan {method} {run}")
                rows.append(("whole scan", res["d_sae"] if res else 0,
                             res["n_scanned"] if res else args.run_tokens, method, res, ""))
    else:
        print("whole scan (LM + SAE): not run (no --run given)")

    print()
    print("| what | method | d_sae | tokens | tokens/s | peak dRSS MiB | vs naive | runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    speed = {}
    for what, d_sae, n, method, res, note in rows:
        if res:
            speed[(what, d_sae, n, method)] = n / statistics.median(res["seconds"])
    for what, d_sae, n, method, res, note in rows:
        if res is None:
            print(f"| {what} | {method} | {d_sae:,} | {n:,} | {note or 'failed'} | | | |")
            continue
        s = speed[(what, d_sae, n, method)]
        ref = speed.get((what, d_sae, n, "naive"))
        vs = "1.00x" if method == "naive" else (f"{s / ref:.2f}x" if ref else "naive skipped")
        print(f"| {what} | {method} | {d_sae:,} | {n:,} | {s:,.0f} | {res['peak_drss_mib']:,.0f} "
              f"| {vs} | {len(res['seconds'])} |")
    states = {d: r["state_mib"] for _, d, _, m, r, _ in rows if r and "state_mib" in r}
    for d, mib in states.items():
        print(f"ours' running state at d_sae {d:,}: {mib:.1f} MiB (ScanState.nbytes)")
    print(f"total {time.time() - t_start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
