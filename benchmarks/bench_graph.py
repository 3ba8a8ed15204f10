"""Seconds per attribution graph of a 64-token prompt, by phase; circuit-tracer beside it.

    python benchmarks/bench_graph.py                          # tiny + replication, 3 repeats
    python benchmarks/bench_graph.py --quick                  # 1 repeat, no warm-up
    python benchmarks/bench_graph.py --shapes replication --repeats 1 --max-feature-nodes 0
    python benchmarks/bench_graph.py --circuit-tracer-python /tmp/ctvenv/bin/python

What is timed (ours, `tinycourse.interpret.circuits`), one 64-token prompt:

    replacement  `local_replacement`: the clean run with its cache, every transcoder on its
                 MLP input, the frozen patterns, norm scales, errors and the reads (timed
                 inside `attribution_graph` by wrapping the module's `local_replacement`)
    backward     the rest of `attribution_graph`: one frozen forward + backward per
                 `--batch-size` targets (features + logits), filling the dense adjacency,
                 and one forward for the constants
    prune        `prune(graph)` at the defaults (node 0.8, edge 0.98), alone
    export       `to_circuit_tracer_json(graph, str)`: it prunes again and computes both
                 scores, then builds the node and link dicts
    dumps        `json.dumps` of that dict (the size in MB is the JSON column)
    graph->JSON  replacement + backward + export + dumps: what one page costs (the
                 separate prune is inside export, so it is not added)
    graph+prune  replacement + backward + prune: what circuit-tracer's `attribute` +
                 `prune_graph` do, the figure `vs ours` compares

Shapes. `tiny`: 2 layers, d_model 128, 4 heads, d_mlp 512, n_ctx 128, vocab 1,024, one
512-latent topk (k 16) transcoder per MLP: the built run's LM and transcoders
(`runs/tiny/lm`, `runs/tiny/transcoders`) if present, and a prompt of 64 val tokens that
starts at a story's start token; else random weights and random tokens. `replication`:
`preset("replication").resolved_model` (4 layers, d_model 768, 16 heads of 48, d_mlp 3072,
n_ctx 256, vocab 10,000) with random weights (GPT's init, seed 0) and one random
16,384-latent transcoder per MLP with the preset's `transcoders` kind and k (topk, k 32),
`--kind relu` for ReLU ones; random prompt tokens (seed 1), the first set to 0. Random
weights give the right shapes and costs, not meaningful graphs.

Memory: the adjacency is dense, (nodes)^2 float32 (`MAX_NODES` 20,000 in circuits.py).
A 64-token prompt through 4 topk k=32 transcoders has 8,192 active features (8,522 nodes,
277 MiB); a random ReLU transcoder has thousands active a token. So the replication shape
runs with `max_feature_nodes` (`--max-feature-nodes`, default 256; 0 = no cap, which the
ReLU kind would refuse), keeping the features that write the largest vectors; the rest
stay in the error nodes. The backward passes scale with the targets: (features + logits)
/ batch_size of them, each a forward and backward of batch_size copies of the prompt.

circuit-tracer (`--circuit-tracer-python PY`, an interpreter of a separate venv with
`circuit-tracer` installed; see benchmarks/README.md): the same model exported with
`lm.transformer_lens.to_transformer_lens`, its state dict loaded into
`ReplacementModel.from_config(hooked.cfg, TranscoderSet(...))` (MLP and unembed keys renamed
to its wrappers' `old_mlp` / `old_unembed`), our transcoders as its `SingleLayerTranscoder`s
(W_enc, W_dec transposed as it stores them, our input/output scales folded in, its `TopK`
or ReLU) reading `mlp.hook_in` and writing `mlp.hook_out` (our `ln2.hook_normalized` is
after the norm's weight and bias, TransformerLens's is before). Its loader wants a HF
tokenizer; a stub gives it `decode`, `vocab_size`, `padding_side` and the prompt's first
token as its only special id, so it does not prepend a BOS of its own. Timed: `attribute`
(its clean run + backward passes, same batch size, same `max_feature_nodes`, which it
spends by its own influence ranking), `prune_graph` (0.8, 0.98); no JSON (its
`create_graph_files` wants a real tokenizer and writes files). Differences that change the
node count: it zeroes every feature at position 0 (the BOS it assumes) and its TopK does
not clip negatives.

Edges (uncapped shapes, i.e. tiny, with circuit-tracer): both workers save their graph; it
gets ours' logit tokens as `attribution_targets`; nodes are matched by identity (feature:
layer, position, latent; error: layer, position; embedding: position; logit: token) and,
over the nodes both hold, rel = |a-b| / max(|a|,|b|) on edges above `EDGE_FLOOR` x the
largest, by the source's kind. Its worker builds one more, untimed graph with `W_pos` added
to its token vectors: its embedding nodes are `W_E[token]` alone, ours `W_E[token] + W_pos[p]`.
Its error nodes at position 0 are zero (`error_vectors[:, zero_positions] = 0`), and in
cells with its negative TopK features ours' error carries their writes.

Timing: wall time, median over `--repeats` (after one untimed warm-up unless --quick);
each (implementation, shape) in its own subprocess, ours then circuit-tracer per shape.
peak RSS = the subprocess's `ru_maxrss`; +work = its rise during the graphs (after the
imports, model and transcoders). Threads: torch's default unless `--threads`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAG = "BENCH_GRAPH_RESULT "
PROMPT = 64


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- what both workers share: the model, transcoders and prompt ------------------------------

def build(spec: dict):
    """-> (model, {layer: transcoder}, ids (64,), where the weights came from)."""
    import torch

    from tinycourse.config import SAEConfig, preset
    from tinycourse.lm.model import GPT, load_model
    from tinycourse.sae.model import SparseAutoencoder
    from tinycourse.sae.transcoders import load_transcoders, mlp_hooks

    run = REPO / "runs" / "tiny"
    if spec["shape"] == "tiny" and (run / "lm" / "model.safetensors").exists() \
            and (run / "transcoders" / "layer_0" / "cfg.json").exists():
        import numpy as np

        from tinycourse.corpus.shards import Shards
        model, tcs = load_model(run / "lm"), load_transcoders(run / "transcoders")
        shards = Shards.open(run / "shards")
        val = np.asarray(shards.tokens("val")[:100_000], dtype=np.int64)
        starts = np.flatnonzero(val == shards.start_id)
        at = int(starts[0]) if len(starts) else 0
        return model.eval(), tcs, torch.from_numpy(val[at:at + PROMPT].copy()), "runs/tiny (trained)"
    course = preset(spec["shape"])
    cfg = course.resolved_model
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    tcs = {}
    for i in range(cfg.n_layers):
        hook_in, hook_out = mlp_hooks(i)
        sae_cfg = SAEConfig(kind=spec["kind"] or course.transcoders.kind, d_sae=course.transcoders.d_sae,
                            k=course.transcoders.k, hook_in=hook_in, hook_out=hook_out)
        tcs[i] = SparseAutoencoder(sae_cfg, d_in=cfg.d_model).eval()
    ids = torch.randint(0, cfg.d_vocab, (PROMPT,), generator=torch.Generator().manual_seed(1))
    ids[0] = 0
    return model, tcs, ids, "random"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def worker_ours(spec: dict) -> dict:
    import torch

    from tinycourse.interpret import circuits, graph_influence, graph_json

    model, tcs, ids, source = build(spec)
    cap = spec["max_feature_nodes"]
    base = rss_mib()
    spent = {}
    real = circuits.local_replacement

    def local_replacement(*args, **kwargs):
        out, spent["replacement"] = timed(lambda: real(*args, **kwargs))
        return out

    circuits.local_replacement = local_replacement
    rows = []
    for r in range(spec["repeats"] + (0 if spec["quick"] else 1)):
        graph, t_graph = timed(lambda: circuits.attribution_graph(model, tcs, ids, max_feature_nodes=cap,
                                                                   batch_size=spec["batch_size"]))
        kept, t_prune = timed(lambda g=graph: graph_influence.prune(g))
        page, t_export = timed(lambda g=graph: graph_json.to_circuit_tracer_json(g, str))
        text, t_dumps = timed(lambda p=page: json.dumps(p))
        row = {"replacement": spent["replacement"], "backward": t_graph - spent["replacement"],
               "prune": t_prune, "export": t_export, "dumps": t_dumps}
        row["total"] = row["replacement"] + row["backward"] + row["export"] + row["dumps"]
        row["cmp"] = row["replacement"] + row["backward"] + row["prune"]
        if r or spec["quick"]:
            rows.append(row)
    with torch.no_grad():
        active = sum(int((tcs[i].encode(x) != 0).sum()) for i, x in enumerate(_mlp_inputs(model, ids)))
    if spec.get("dump"):
        torch.save({"features": graph.features, "activations": graph.activations, "n_layers": graph.n_layers,
                    "n_pos": graph.n_pos, "logits": graph.logit_tokens, "adjacency": graph.adjacency},
                   spec["dump"])
    return {"rows": rows, "source": source, "features": graph.n_features, "active": active,
            "nodes": graph.n_nodes, "logits": graph.logit_tokens.tolist(),
            "kept_nodes": int(kept.node_mask.sum()), "kept_edges": int(kept.edge_mask.sum()),
            "json_mb": len(text) / 1e6, "peak": rss_mib(), "base": base,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def _mlp_inputs(model, ids):
    names = [f"blocks.{i}.ln2.hook_normalized" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(ids[None], names=names)
    return [cache[n][0] for n in names]


def worker_circuit_tracer(spec: dict) -> dict:
    from types import SimpleNamespace

    import torch
    from circuit_tracer import attribute
    from circuit_tracer.graph import prune_graph
    from circuit_tracer.replacement_model import ReplacementModel
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )

    from tinycourse.lm.transformer_lens import to_transformer_lens

    model, tcs, ids, source = build(spec)
    hooked = to_transformer_lens(model)
    theirs = {}
    for i, tc in tcs.items():
        act = TopK(tc.cfg.k) if tc.cfg.kind == "topk" else torch.nn.ReLU()
        if tc.cfg.kind not in ("topk", "relu"):
            raise SystemExit(f"no circuit-tracer activation for {tc.cfg.kind}")
        s = SingleLayerTranscoder(tc.d_in, tc.d_sae, act, i, device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            s.W_enc.copy_((tc.W_enc * tc.input_scale).T)
            s.b_enc.copy_(tc.b_enc)
            s.W_dec.copy_(tc.W_dec / tc.output_scale)
            s.b_dec.copy_(tc.b_dec / tc.output_scale)
        theirs[i] = s
    tset = TranscoderSet(theirs, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out",
                         scan="tinycourse")
    rm = ReplacementModel.from_config(hooked.cfg, tset, backend="transformerlens")
    state = {}
    for key, value in hooked.state_dict().items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "blocks" and parts[2] == "mlp":
            key = ".".join(parts[:3] + ["old_mlp"] + parts[3:])
        elif parts[0] == "unembed":
            key = ".".join(["unembed", "old_unembed"] + parts[1:])
        state[key] = value
    missing, unexpected = rm.load_state_dict(state, strict=False)
    missing = [k for k in missing if "transcoders" not in k]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    rm.tokenizer = SimpleNamespace(all_special_ids=[int(ids[0])], bos_token_id=int(ids[0]), pad_token_id=None,
                                   eos_token_id=None, padding_side="right", decode=lambda t: f"<{t}>",
                                   vocab_size=hooked.cfg.d_vocab)
    with torch.no_grad():
        gap = float((rm(ids[None]) - model(ids[None])).abs().max())
    cap = spec["max_feature_nodes"]
    # ours' logit tokens when ours ran first (the same targets for the edge comparison); else its own pick
    targets = torch.tensor(spec["targets"]) if spec.get("targets") else None
    base = rss_mib()
    rows = []
    for r in range(spec["repeats"] + (0 if spec["quick"] else 1)):
        graph, t_graph = timed(lambda: attribute(ids, rm, batch_size=spec["batch_size"], max_feature_nodes=cap,
                                                 attribution_targets=targets))
        kept, t_prune = timed(lambda g=graph: prune_graph(g, 0.8, 0.98))
        if r or spec["quick"]:
            rows.append({"attribute": t_graph, "prune": t_prune, "cmp": t_graph + t_prune})
    if spec.get("dump"):
        # its embedding nodes are W_E[token] alone (read at hook_embed; W_pos is in no node), ours
        # W_E[token] + W_pos[p]: one more graph with W_pos added to its token vectors, untimed
        real_setup = rm.setup_attribution

        def setup_with_pos(inputs):
            ctx = real_setup(inputs)
            ctx.token_vectors = ctx.token_vectors + rm.W_pos[:len(ids)].detach()
            return ctx

        rm.setup_attribution = setup_with_pos
        with_pos = attribute(ids, rm, batch_size=spec["batch_size"], max_feature_nodes=cap,
                             attribution_targets=targets)
        del rm.setup_attribution
        torch.save({"features": graph.active_features[graph.selected_features],
                    "activations": graph.activation_values[graph.selected_features], "n_layers": len(tcs),
                    "n_pos": len(ids), "logits": torch.tensor([t.vocab_idx for t in graph.logit_targets]),
                    "adjacency": graph.adjacency_matrix, "adjacency_pos": with_pos.adjacency_matrix},
                   spec["dump"])
    return {"rows": rows, "source": source, "features": len(graph.selected_features),
            "active": len(graph.active_features), "nodes": int(graph.adjacency_matrix.shape[0]),
            "logits": [t.vocab_idx for t in graph.logit_targets],
            "kept_nodes": int(kept.node_mask.sum()), "kept_edges": int(kept.edge_mask.sum()),
            "logit_gap": gap, "peak": rss_mib(), "base": base,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# --- edge comparison: ours vs circuit-tracer, node by node identity --------------------------

EDGE_FLOOR = 1e-6  # edges whose larger |weight| is under this times the largest |edge| are not compared
EDGE_TOL = 1e-3  # the relative difference counted as a mismatch


def node_keys(dump: dict) -> list[tuple]:
    """(kind, layer, position, latent or token) per node, in the graph's order (both use it)."""
    n_layers, n_pos = dump["n_layers"], dump["n_pos"]
    keys = [("feature", l, p, z) for l, p, z in dump["features"].tolist()]
    keys += [("error", l, p, -1) for l in range(n_layers) for p in range(n_pos)]
    keys += [("embedding", -1, p, -1) for p in range(n_pos)]
    keys += [("logit", n_layers, n_pos - 1, int(t)) for t in dump["logits"].tolist()]
    if len(keys) != dump["adjacency"].shape[0]:
        raise ValueError(f"{len(keys)} node keys for a {tuple(dump['adjacency'].shape)} adjacency")
    return keys


def compare_edges(ours: dict, theirs: dict) -> dict:
    """Edge weights over the nodes both graphs hold: rows by the source's kind."""
    import torch

    ka, kb = node_keys(ours), node_keys(theirs)
    at_b = {k: i for i, k in enumerate(kb)}
    shared = [k for k in ka if k in at_b]
    ia = torch.tensor([i for i, k in enumerate(ka) if k in at_b])
    ib = torch.tensor([at_b[k] for k in shared])
    A = ours["adjacency"].double()[ia][:, ia]
    B = theirs["adjacency"].double()[ib][:, ib]
    floor = EDGE_FLOOR * float(torch.maximum(A.abs(), B.abs()).max())

    def cells(dump):  # (layer, position) -> its feature nodes' latents
        out = {}
        for l, p, z in dump["features"].tolist():
            out.setdefault((l, p), set()).add(z)
        return out
    fa, fb = cells(ours), cells(theirs)
    n_layers, n_pos = ours["n_layers"], ours["n_pos"]
    same_sets = {(l, p) for l in range(n_layers) for p in range(n_pos)
                 if fa.get((l, p), set()) == fb.get((l, p), set())}
    kinds = [k[0] for k in shared]
    groups = {
        "all": [True] * len(shared),
        "from features": [k == "feature" for k in kinds],
        "from errors": [k == "error" for k in kinds],
        "  errors, pos 0": [k[0] == "error" and k[2] == 0 for k in shared],
        "  errors, same features": [k[0] == "error" and k[2] > 0 and (k[1], k[2]) in same_sets for k in shared],
        "  errors, other": [k[0] == "error" and k[2] > 0 and (k[1], k[2]) not in same_sets for k in shared],
        "from embeddings": [k == "embedding" for k in kinds],
    }
    rows = []

    def row(name, sources, A, B):
        mag = torch.maximum(A.abs(), B.abs())
        mask = (mag > floor) & torch.tensor(sources)[None, :]
        r, d, m = ((A - B).abs() / mag.clamp_min(floor))[mask], (A - B).abs()[mask], mag[mask]
        rows.append({"edges": name, "n": int(mask.sum()), "max_rel": float(r.max()) if len(r) else 0.0,
                     "median_rel": float(r.median()) if len(r) else 0.0, "over": int((r > EDGE_TOL).sum()),
                     "max_abs": float(d.max()) if len(d) else 0.0,
                     "over_w": float(m[r > EDGE_TOL].max()) if bool((r > EDGE_TOL).any()) else 0.0})
    for name, sources in groups.items():
        row(name, sources, A, B)
    if "adjacency_pos" in theirs:  # its graph with W_pos added to its embedding nodes' vectors
        B_pos = theirs["adjacency_pos"].double()[ib][:, ib]
        row("  embeddings, theirs+W_pos", groups["from embeddings"], A, B_pos)
        # what both define alike: features, errors of cells with the same features (not position 0),
        # embeddings with W_pos
        alike = [f or e or m for f, e, m in zip(groups["from features"], groups["  errors, same features"],
                                                 groups["from embeddings"])]
        row("alike (feat+err+emb)", alike, A, B_pos)
    only_a = [(k, float(ours["activations"][i])) for i, k in enumerate(ka) if k not in at_b and k[0] == "feature"]
    at_a = set(ka)
    only_b = [(k, float(theirs["activations"][i])) for i, k in enumerate(kb) if k not in at_a and k[0] == "feature"]
    return {"rows": rows, "floor": floor, "shared": len(shared), "nodes": (len(ka), len(kb)),
            "only_ours": len(only_a), "only_ours_pos0": sum(k[2] == 0 for k, _ in only_a),
            "only_theirs": len(only_b), "only_theirs_negative": sum(a < 0 for _, a in only_b),
            "only_theirs_pos0": sum(k[2] == 0 for k, _ in only_b),
            "other_only": [k for k, a in only_a if k[2] != 0][:5] + [k for k, a in only_b if a >= 0 and k[2] != 0][:5],
            "cells_differ": n_layers * n_pos - len(same_sets),
            "logits_same": ours["logits"].tolist() == theirs["logits"].tolist()}


def print_edges(shape: str, cmp: dict) -> None:
    print(f"\nedges, {shape}: ours vs circuit-tracer over the {cmp['shared']} nodes both hold "
          f"(ours {cmp['nodes'][0]}, theirs {cmp['nodes'][1]}; same logit targets: {cmp['logits_same']}); "
          f"rel = |a-b| / max(|a|,|b|) on edges with max(|a|,|b|) > {cmp['floor']:.1e} "
          f"({EDGE_FLOOR:g} x the largest)")
    print(f"{'edges (by source)':26s} {'compared':>9s} {'max rel':>9s} {'median rel':>10s} "
          f"{'> ' + format(EDGE_TOL, 'g'):>7s} {'max |a-b|':>9s} {'max |w| >tol':>12s}")
    for r in cmp["rows"]:
        print(f"{r['edges']:26s} {r['n']:9d} {r['max_rel']:9.1e} {r['median_rel']:10.1e} {r['over']:7d} "
              f"{r['max_abs']:9.1e} {r['over_w']:12.1e}")
    print(f"feature nodes only in ours: {cmp['only_ours']} ({cmp['only_ours_pos0']} at position 0); only in "
          f"circuit-tracer: {cmp['only_theirs']} ({cmp['only_theirs_negative']} with a negative activation, "
          f"{cmp['only_theirs_pos0']} at position 0); (layer, position) cells whose feature sets differ: "
          f"{cmp['cells_differ']}" + (f"; other: {cmp['other_only']}" if cmp["other_only"] else ""))


# --- the driver ------------------------------------------------------------------------------

def run_worker(python: str, spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([python, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          check=False, env=env, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": tail}


def machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    return platform.processor() or platform.machine()


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="tiny,replication")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat, no warm-up")
    parser.add_argument("--max-feature-nodes", type=int, default=None,
                        help="replication's cap (default 256; 0 = none); tiny has none")
    parser.add_argument("--kind", default="", help="replication transcoders: topk (the preset's) or relu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--circuit-tracer-python", default="",
                        help="python of a venv with circuit-tracer (its own torch): adds its rows")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        if spec["threads"]:
            import torch
            torch.set_num_threads(spec["threads"])
        fn = worker_circuit_tracer if spec["impl"] == "circuit-tracer" else worker_ours
        print(TAG + json.dumps(fn(spec)), flush=True)
        return

    repeats = 1 if args.quick else args.repeats
    cap = args.max_feature_nodes if args.max_feature_nodes is not None else 256
    t0 = time.time()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start; "
          f"{PROMPT}-token prompt, batch_size {args.batch_size}, median of {repeats}"
          f"{'' if args.quick else ' after a warm-up'}")
    impls = [("ours", sys.executable)] + ([("circuit-tracer", args.circuit_tracer_python)]
                                         if args.circuit_tracer_python else [])
    header = (f"{'shape':12s} {'impl':15s} {'weights':20s} {'cap':>5s} {'feat':>6s} {'nodes':>6s} {'adj MiB':>7s} "
              f"{'replace s':>9s} {'backward s':>10s} {'prune s':>7s} {'export s':>8s} {'dumps s':>7s} "
              f"{'graph->JSON s':>13s} {'graph+prune':>12s} {'vs ours':>7s} {'kept n/e':>11s} {'JSON MB':>7s} {'peak MiB':>8s} "
              f"{'+work':>6s}")
    lines, notes, edges = [], [], []
    tmp = tempfile.TemporaryDirectory(prefix="bench_graph_")
    for shape in [s for s in args.shapes.split(",") if s]:
        shape_cap = (cap or None) if shape != "tiny" else None
        ours_total, ours_logits = None, None
        dumps = {}  # uncapped shapes with circuit-tracer: both graphs, for the edge comparison
        for impl, python in impls:
            spec = {"impl": impl, "shape": shape, "kind": args.kind if shape != "tiny" else "",
                    "max_feature_nodes": shape_cap, "repeats": repeats, "quick": args.quick,
                    "batch_size": args.batch_size, "threads": args.threads,
                    "targets": ours_logits if impl == "circuit-tracer" else None}
            if args.circuit_tracer_python and shape_cap is None:
                spec["dump"] = dumps[impl] = str(Path(tmp.name) / f"{shape}-{impl}.pt")
            res = run_worker(python, spec)
            if "error" in res:
                lines.append(f"{shape:12s} {impl:15s} failed: {res['error']}")
                dumps.pop(impl, None)
                continue
            if impl == "ours":
                ours_logits = res["logits"]
            rows, n = res["rows"], res["nodes"]
            cells = {k: f"{median(rows, k):.3f}" if k in rows[0] else "-" for k in
                     ("replacement", "backward", "prune", "export", "dumps")}
            if impl == "circuit-tracer":  # attribute = its clean run + backward passes, not split here
                cells["backward"] = f"{median(rows, 'attribute'):.3f}*"
            total = f"{median(rows, 'total'):.3f}" if "total" in rows[0] else "-"
            cmp = median(rows, "cmp")
            if impl == "ours":
                ours_total = cmp
            vs = f"{cmp / ours_total:.2f}x" if ours_total else "-"
            json_mb = f"{res['json_mb']:.2f}" if "json_mb" in res else "-"
            lines.append(f"{shape:12s} {impl:15s} {res['source']:20s} {shape_cap or '-'!s:>5s} "
                         f"{res['features']:6d} {n:6d} {n * n * 4 / 2**20:7.0f} {cells['replacement']:>9s} "
                         f"{cells['backward']:>10s} {cells['prune']:>7s} {cells['export']:>8s} {cells['dumps']:>7s} "
                         f"{total:>13s} {cmp:12.3f} {vs:>7s} {res['kept_nodes']:>5d}/{res['kept_edges']:<5d} {json_mb:>7s} "
                         f"{res['peak']:8.0f} {res['peak'] - res['base']:6.0f}")
            notes.append(f"{shape} {impl}: torch {res['torch']}, {res['threads']} threads, {res['active']} active "
                         f"features, logit nodes {res['logits']}"
                         + (f", max |logit| gap of its model vs ours {res['logit_gap']:.1e}" if "logit_gap" in res
                            else ""))
        if len(dumps) == 2:
            import torch
            edges.append((shape, compare_edges(*(torch.load(dumps[i]) for i in ("ours", "circuit-tracer")))))
    print(header)
    print("\n".join(lines))
    print("\n".join(notes))
    if args.circuit_tracer_python:
        print("* circuit-tracer: `attribute` (its clean run and backward passes together) in the backward "
              "column; graph+prune = replacement + backward + prune (ours), attribute + prune_graph (theirs); "
              "vs ours = its graph+prune time over ours (above 1: ours faster)")
    for shape, cmp in edges:
        print_edges(shape, cmp)
    tmp.cleanup()
    print(f"total {time.time() - t0:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
