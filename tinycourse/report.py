"""The run report: one self-contained HTML page of everything a run has built.

    write_report(run_root, out_path)   runs/<name>/report/index.html by default
    headline(run_root)                 the few figures worth printing at the end of a run

The page reads only what the stages wrote (manifests, metrics.jsonl, samples.jsonl,
store.json, cfg.json, eval/metrics.json, eval/ground_truth.json, and small samples of the
token and activation files), so it costs seconds whatever the run's size. Each section
appears only when its stage has finished (its manifest exists; the eval section when
eval/metrics.json does).

Self-contained means it works offline, from a file, forever: figures are PNGs embedded as
base64 `data:` URIs (matplotlib's Agg renderer, no pyplot, so notebooks keep their
backend), the CSS is inline with system fonts only, and the one interactive piece, the
attention heads of one validation story drawn by CircuitsVis, inlines CircuitsVis's own
JavaScript bundle (`circuitsvis/dist/cdn/iife.js`, the file its `render_local` reads)
once, where its Python functions would load it from a CDN. `interactive=False` leaves the
bundle out (about 1.3 MB) and draws the patterns as a static figure instead.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from . import __version__
from .rundir import MANIFEST, RunDir, atomic_write_text

STAGE_ORDER = ("tokenizer", "shards", "lm", "activations", "sae", "sweep", "eval")
ATTENTION_TOKENS = 64  # positions of the validation story whose attention is drawn
NORM_SAMPLE_ROWS = 20_000  # activation rows read per hook for the norm histogram
ZIPF_TOKENS = 5_000_000  # validation tokens counted for the frequency plot


# --- reading the run ---------------------------------------------------------------------

def _json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_manifests(run_root: Path) -> dict[str, dict]:
    """Every finished stage's manifest, pipeline stages first in their order, then any
    other stage folder (by creation time); the report's own folder is left out."""
    found = {p.parent.name: json.loads(p.read_text())
             for p in Path(run_root).glob(f"*/{MANIFEST}") if p.parent.name != "report"}
    order = [s for s in STAGE_ORDER if s in found]
    order += sorted((s for s in found if s not in STAGE_ORDER), key=lambda s: found[s].get("created", ""))
    return {s: found[s] for s in order}


def stage_states(run_root: Path, manifests: dict[str, dict]) -> dict[str, str]:
    """done, or stale when an upstream stage was rebuilt after this one (as `status`)."""
    run_dir = RunDir(Path(run_root).parent, Path(run_root).name)
    return {name: "done" if all(run_dir.manifest_hash(need) == digest
                                for need, digest in m.get("upstream", {}).items()) else "stale"
            for name, m in manifests.items()}


def infer_preset(manifests: dict[str, dict]) -> tuple[str | None, list[str]]:
    """The preset whose stage configs best match the manifests, and the `--set` overrides
    that turn it into this run's config (empty: the preset exactly)."""
    from .config import PRESETS

    best: tuple[int, str | None, list[str]] = (10**9, None, [])
    for name, cfg in PRESETS.items():
        diffs = []
        for manifest in manifests.values():
            for part, recorded in (manifest.get("config") or {}).items():
                if not dataclasses.is_dataclass(getattr(cfg, part, None)):
                    continue
                wanted = cfg.resolved_model if part == "model" else getattr(cfg, part)
                wanted = json.loads(json.dumps(dataclasses.asdict(wanted)))
                for key, value in recorded.items():
                    if key in wanted and wanted[key] != value:
                        shown = ",".join(map(str, value)) if isinstance(value, list) else value
                        diffs.append(f"{part}.{key}={shown}")
        diffs = sorted(set(diffs))
        if len(diffs) < best[0]:
            best = (len(diffs), name, diffs)
    return best[1], best[2]


def _eval_dir(run_root: Path) -> Path | None:
    folder = Path(run_root) / "eval"
    return folder if (folder / "metrics.json").is_file() else None


def headline(run_root: str | os.PathLike) -> dict:
    """The figures worth printing at the end of a run (only those the run has): LM losses
    in nats/token, the SAE's FVE / L0 / dead share (held-out eval figures when the eval
    stage ran, else the trainer's), CE loss recovered and mean ground-truth AUROCs."""
    root = Path(run_root)
    out: dict = {"run": root.name}
    manifests = stage_manifests(root)
    if "tokenizer" in manifests:
        summary = manifests["tokenizer"]["summary"]
        out["vocab_size"] = summary.get("vocab_size")
        out["bytes_per_token"] = summary.get("val_bytes_per_token")
    if "lm" in manifests:
        summary = manifests["lm"]["summary"]
        for key in ("train_loss", "val_loss", "unigram_entropy", "parameters"):
            if key in summary:
                out[f"lm_{key}" if key != "unigram_entropy" else key] = summary[key]
    if "sae" in manifests:
        summary = manifests["sae"]["summary"]
        cfg = _json(root / "sae" / "cfg.json") or {}
        out["sae_kind"] = cfg.get("kind")
        out["sae_fve"], out["sae_l0"] = summary.get("fve"), summary.get("l0")
        out["sae_dead_fraction"] = summary.get("dead_fraction")
    folder = _eval_dir(root)
    if folder is not None:
        metrics = _json(folder / "metrics.json")
        out["sae_fve"] = metrics.get("reconstruction", {}).get("fve", out.get("sae_fve"))
        sparsity = metrics.get("sparsity", {})
        out["sae_l0"] = sparsity.get("l0_mean", out.get("sae_l0"))
        out["sae_dead_fraction"] = sparsity.get("dead_fraction", out.get("sae_dead_fraction"))
        spliced = metrics.get("spliced", {})
        for key in ("ce_loss_recovered", "ce_loss_recovered_vs_mean", "kl_spliced", "ce_clean", "ce_spliced"):
            if key in spliced:
                out[key] = spliced[key]
        truth = _json(folder / "ground_truth.json")
        if truth:
            for method, value in (truth.get("mean") or {}).items():
                value = value.get("auroc") if isinstance(value, dict) else value
                if value is not None:
                    out[f"ground_truth_auroc_{method}"] = value
    return {k: v for k, v in out.items() if v is not None}


def format_headline(figures: dict) -> str:
    """`headline(...)` as a few aligned lines for the terminal."""
    def g(key, fmt="{:.3f}"):
        return fmt.format(figures[key]) if key in figures else "-"

    lines = [f"headline figures of run {figures.get('run', '?')}:"]
    if "lm_val_loss" in figures:
        lines.append(f"  LM loss (nats/token)  train {g('lm_train_loss')}  val {g('lm_val_loss')}  "
                     f"(unigram entropy {g('unigram_entropy')})")
    if "sae_fve" in figures:
        dead = figures.get("sae_dead_fraction")
        lines.append(f"  SAE ({figures.get('sae_kind', '?')})  FVE {g('sae_fve')}  L0 {g('sae_l0', '{:.1f}')}  "
                     f"dead {'-' if dead is None else f'{100 * dead:.1f}%'}")
    if "ce_loss_recovered" in figures:
        lines.append(f"  spliced in the LM     CE loss recovered {g('ce_loss_recovered')}  "
                     f"(vs mean ablation {g('ce_loss_recovered_vs_mean')})  KL {g('kl_spliced', '{:.4f}')}")
    truth = {k.removeprefix("ground_truth_auroc_"): v for k, v in figures.items()
             if k.startswith("ground_truth_auroc_")}
    if truth:
        lines.append("  ground truth AUROC    " + "  ".join(f"{k} {v:.3f}" for k, v in truth.items()))
    return "\n".join(lines)


# --- HTML pieces -------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n} B"


def _table(rows: list[list], header: list[str] | None = None, cls: str = "") -> str:
    """An HTML table; cells are escaped unless given as ("html", markup)."""
    def cell(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "html":
            return v[1]
        return html.escape(_fmt(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (f'<table class="{cls}">' + (f"<thead><tr>{head}</tr></thead>" if head else "")
            + f"<tbody>{body}</tbody></table>")


def _kv(pairs: list[tuple[str, object]]) -> str:
    return _table([[k, v] for k, v in pairs if v is not None], cls="kv")


def _figure(fig, alt: str, caption: str = "") -> str:
    """A matplotlib Figure as an inline PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _new_figure(n_axes: int = 1, width: float = 7.5, height: float = 3.0):
    from matplotlib.figure import (
        Figure,  # no pyplot: the caller's backend stays as it is
    )

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, n_axes, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _hist_from_counts(ax, counts, edges, **kw) -> None:
    edges = np.asarray(edges, dtype=float)
    ax.bar(edges[:-1], np.asarray(counts, dtype=float), width=np.diff(edges), align="edge", **kw)


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{note}{body}</section>'


# --- sections ----------------------------------------------------------------------------------

def _corpus_section(root: Path, manifests: dict) -> str | None:
    if "tokenizer" not in manifests and "shards" not in manifests:
        return None
    pairs: list[tuple[str, object]] = []
    tok = manifests.get("tokenizer")
    if tok:
        data = tok["config"].get("data", {})
        tcfg = tok["config"].get("tokenizer", {})
        summary = tok["summary"]
        pairs += [("source", data.get("source")), ("stories asked for", data.get("max_stories") or "all"),
                  ("tokenizer", f"{summary.get('kind')} (vocab {summary.get('vocab_size')})"),
                  ("bytes per token (val)", summary.get("val_bytes_per_token"))]
        if summary.get("kind") == "remap":
            pairs += [("base tokens kept (top K)", summary.get("kept_tokens")),
                      ("[UNK] share of tokens", summary.get("unk_token_share")),
                      ("stories with an [UNK]", summary.get("unk_story_share")),
                      ("base tokenizer", tcfg.get("base_tokenizer") or "our own BPE")]
    shards = manifests.get("shards")
    figures = ""
    if shards:
        s = shards["summary"]
        pairs += [("stories train / val", f"{s['train_stories']:,} / {s['val_stories']:,}"),
                  ("tokens train / val", f"{s['train_tokens']:,} / {s['val_tokens']:,}"),
                  ("tokens per story (train)", s["train_tokens"] / max(s["train_stories"], 1)),
                  ("token dtype", s.get("dtype"))]
        figures = _token_figures(root)
    return _section("corpus", "Corpus and tokenizer", _kv(pairs) + figures)


def _val_tokens(root: Path, limit: int) -> tuple[np.ndarray, dict] | None:
    meta = _json(root / "shards" / "meta.json")
    path = root / "shards" / "val.bin"
    if not meta or not path.is_file() or path.stat().st_size == 0:
        return None
    tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    return np.asarray(tokens[:limit]), meta


def _token_figures(root: Path) -> str:
    found = _val_tokens(root, ZIPF_TOKENS)
    if found is None:
        return ""
    tokens, meta = found
    fig, (ax1, ax2) = _new_figure(2)
    starts = np.flatnonzero(tokens == meta["start_id"])
    lengths = np.diff(np.append(starts, len(tokens)))
    ax1.hist(lengths, bins=40, color="#4c72b0")
    ax1.set(xlabel="tokens per story", ylabel="stories", title="story length (val)")
    counts = np.sort(np.bincount(tokens.astype(np.int64), minlength=meta["vocab_size"]))[::-1]
    counts = counts[counts > 0]
    ax2.loglog(np.arange(1, len(counts) + 1), counts / counts.sum(), color="#dd8452")
    ax2.set(xlabel="token rank", ylabel="frequency", title="token frequency by rank (val)")
    used = f"{len(counts):,} of {meta['vocab_size']:,} token ids occur in the first {len(tokens):,} val tokens"
    return _figure(fig, "story lengths and token frequencies", used)


def _lm_section(root: Path, manifests: dict, interactive: bool) -> tuple[str | None, bool]:
    """The LM section, and whether it used CircuitsVis (the bundle must come first)."""
    if "lm" not in manifests:
        return None, False
    folder = root / "lm"
    summary = manifests["lm"]["summary"]
    model = manifests["lm"]["config"].get("model", {})
    pairs = [("architecture", f"{model.get('n_layers')} layers, d_model {model.get('d_model')}, "
                              f"{model.get('n_heads')} heads, d_mlp {model.get('d_mlp')}, "
                              f"n_ctx {model.get('n_ctx')}, {model.get('norm')}, {model.get('act')}"),
             ("parameters", summary.get("parameters")), ("steps", summary.get("steps")),
             ("training tokens", summary.get("tokens")),
             ("train / val loss (nats/token)",
              f"{_fmt(summary.get('train_loss'))} / {_fmt(summary.get('val_loss'))}"),
             ("unigram entropy (nats/token)", summary.get("unigram_entropy")),
             ("tokens per second", summary.get("tokens_per_s")),
             ("wall time (s)", summary.get("wall_time_s"))]
    body = _kv(pairs)
    metrics = _jsonl(folder / "metrics.jsonl")
    if metrics:
        fig, (ax,) = _new_figure(1, 7.5, 3.4)
        train = [(m["tokens"], m["train_loss"]) for m in metrics if "train_loss" in m]
        val = [(m["tokens"], m["val_loss"]) for m in metrics if "val_loss" in m]
        if train:
            t, loss = np.array(train).T
            ax.plot(t, loss, color="#4c72b0", alpha=0.35, lw=0.8)
            width = min(20, len(loss))
            smooth = np.convolve(loss, np.ones(width) / width, mode="valid")  # centred moving mean
            ax.plot(t[(width - 1) // 2:][:len(smooth)], smooth, color="#4c72b0", label="train (smoothed)")
        if val:
            t, loss = np.array(val).T
            ax.plot(t, loss, "o-", color="#c44e52", label="val")
        if summary.get("unigram_entropy"):
            ax.axhline(summary["unigram_entropy"], ls="--", color="gray",
                       label="unigram entropy (no context)")
        ax.set(xlabel="training tokens", ylabel="loss (nats/token)", ylim=(0, None))
        ax.legend(frameon=False)
        body += _figure(fig, "LM loss curves",
                        "Below the dashed line the model uses context: the unigram entropy is the "
                        "best loss a model that ignores the past can reach.")
    body += _samples_html(_jsonl(folder / "samples.jsonl"))
    used_cv = False
    try:
        probe, used_cv = _lm_probe(root, interactive)
        body += probe
    except Exception as error:  # a report must not fail because one figure could not be drawn
        body += f'<p class="note">(attention and per-token loss not drawn: {html.escape(repr(error))})</p>'
    return _section("lm", "Language model", body), used_cv


def _samples_html(samples: list[dict]) -> str:
    if not samples:
        return ""
    steps = sorted({s["step"] for s in samples})
    last = [s for s in samples if s["step"] == steps[-1]]
    out = [f"<h3>Generated stories at step {steps[-1]:,}</h3>"]
    out += [f'<pre class="sample">{html.escape(s["text"])}</pre>' for s in last]
    if len(steps) > 1:
        inner = "".join(f"<h4>step {step:,}</h4>" + "".join(
            f'<pre class="sample">{html.escape(s["text"])}</pre>' for s in samples if s["step"] == step)
            for step in steps[:-1])
        out.append(f"<details><summary>earlier samples ({len(steps) - 1} evaluations)</summary>{inner}</details>")
    return "".join(out)


def _lm_probe(root: Path, interactive: bool) -> tuple[str, bool]:
    """Run the LM on the start of the first validation story: per-token loss as coloured
    tokens, and attention patterns (CircuitsVis, or a static figure)."""
    found = _val_tokens(root, 4096)
    if found is None or not (root / "lm" / "model.safetensors").is_file():
        return "", False
    import torch

    from .model import load_model
    from .tokenizer import load_tokenizer

    tokens, meta = found
    starts = np.flatnonzero(tokens == meta["start_id"])
    begin = int(starts[0]) if len(starts) else 0
    model = load_model(root / "lm")
    n = min(ATTENTION_TOKENS, model.cfg.n_ctx, len(tokens) - begin)
    ids = torch.from_numpy(tokens[begin:begin + n].astype(np.int64))[None]
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(ids, names)
    losses = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none")
    tokenizer = load_tokenizer(root / "tokenizer")
    pieces = ["<start>" if int(i) == meta["start_id"] else tokenizer.decode([int(i)]) for i in ids[0]]
    out = ["<h3>One validation story through the model</h3>", _loss_tokens(pieces, losses.tolist())]
    patterns = [cache[name][0].float().numpy() for name in names]  # (heads, query, key) each
    labels = [_visible(p) for p in pieces]
    bundle = _circuitsvis_bundle() if interactive else None
    if bundle is None:
        out.append(_static_attention(patterns, labels))
        return "".join(out), False
    out.append("<p>Attention patterns, one panel per layer: click a head to enlarge it, hover "
               "a cell to read the weight a query (row) puts on a key (column).</p>")
    for layer, pattern in enumerate(patterns):
        props = {"attention": np.round(pattern, 3).tolist(), "tokens": labels, "maskUpperTri": True,
                 "attentionHeadNames": [f"L{layer}H{h}" for h in range(pattern.shape[0])]}
        out.append(f"<h4>layer {layer}</h4>" + _circuitsvis_call(f"cv-attention-{layer}", "AttentionHeads", props))
    return "".join(out), True


def _visible(piece: str) -> str:
    return piece.replace("\n", "\\n") or "\u2205"


def _loss_tokens(pieces: list[str], losses: list[float]) -> str:
    """Tokens shaded by the loss of predicting them (no JavaScript: hover shows the value)."""
    top = max(max(losses, default=1.0), 1e-6)
    spans = [f'<span class="tok" title="first token">{html.escape(_visible(pieces[0]))}</span>']
    for piece, loss in zip(pieces[1:], losses):
        alpha = min(loss / top, 1.0)
        spans.append(f'<span class="tok" style="background:rgba(214,39,40,{alpha:.2f})" '
                     f'title="loss {loss:.2f} nats">{html.escape(_visible(piece))}</span>')
    return ('<p>Each token shaded by the model\'s loss when predicting it (darker: more '
            f'surprising; hover for the value, darkest = {top:.2f} nats).</p>'
            f'<div class="tokens">{"".join(spans)}</div>')


def _static_attention(patterns: list[np.ndarray], labels: list[str]) -> str:
    n_layers, n_heads = len(patterns), patterns[0].shape[0]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * n_heads + 0.5, 1.7 * n_layers + 0.3), layout="constrained")
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    for layer, pattern in enumerate(patterns):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"L{layer}H{head}", fontsize=8)
    return _figure(fig, "attention patterns", f"attention patterns on the first {len(labels)} "
                                              "tokens of a validation story (query rows, key columns)")


def _circuitsvis_bundle() -> str | None:
    """CircuitsVis's browser bundle, made safe to inline in a <script> element, or None."""
    try:
        import circuitsvis
    except ImportError:
        return None
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        return None
    js = path.read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script")  # would end the inline element early
    # the source map is not shipped: a browser with devtools open would ask for it
    return "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMappingURL="))


def _circuitsvis_call(element_id: str, component: str, props: dict) -> str:
    data = json.dumps(props, separators=(",", ":")).replace("</", "<\\/")
    return (f'<div id="{element_id}" class="cv"></div>'
            f'<script>CircuitsVis.render("{element_id}", CircuitsVis.{component}, {data});</script>')


def _activations_section(root: Path, manifests: dict) -> str | None:
    if "activations" not in manifests:
        return None
    store = _json(root / "activations" / "store.json")
    summary = manifests["activations"]["summary"]
    if store is None:  # streamed: nothing on disk
        cfg = manifests["activations"]["config"].get("activations", {})
        return _section("activations", "Activations", _kv(
            [("storage", summary.get("storage", cfg.get("storage"))), ("hooks", cfg.get("hooks"))]),
            "Streamed: the SAE stage ran the LM itself, so there is no store to describe.")
    pairs = [("tokens per hook", store["n_tokens"]), ("windows", store.get("n_windows")),
             ("split", store.get("split")), ("dtype", store.get("dtype")),
             ("on disk", _bytes(store.get("bytes", 0))),
             ("start positions excluded", store.get("exclude_start")),
             ("collection speed (tokens/s)", store.get("tokens_per_s"))]
    rows = [[h, store["widths"][h], store["mean_sq_norm"][h], math.sqrt(store["mean_sq_norm"][h]),
             store["scales"][h]] for h in store["hooks"]]
    table = _table(rows, ["hook", "width", "mean ||x||²", "rms ||x||", "scale (E||c·x||² = width)"])
    body = _kv(pairs) + table + _norm_figure(root / "activations", store)
    return _section("activations", "Activations", body)


def _norm_figure(folder: Path, store: dict) -> str:
    from .activations import decode

    n, rng = store["n_tokens"], np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(NORM_SAMPLE_ROWS, n), replace=False))
    fig, (ax,) = _new_figure(1, 7.5, 3.0)
    raw_dtype = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[store["dtype"]]
    for hook in store["hooks"]:
        path = folder / f"{hook}.bin"
        if not path.is_file():
            continue
        values = np.memmap(path, dtype=raw_dtype, mode="r", shape=(n, store["widths"][hook]))
        norms = np.linalg.norm(decode(values[rows], store["dtype"]), axis=-1)
        ax.hist(norms, bins=60, histtype="step", lw=1.5, label=hook)
    ax.set(xlabel="||x|| (raw)", ylabel="tokens", title=f"activation norms ({len(rows):,} sampled rows)")
    ax.legend(frameon=False, fontsize=8)
    return _figure(fig, "activation norm histogram")


def _sae_section(root: Path, manifests: dict) -> str | None:
    if "sae" not in manifests:
        return None
    folder = root / "sae"
    cfg = _json(folder / "cfg.json") or {}
    summary = manifests["sae"]["summary"]
    scfg = cfg.get("sae_config") or manifests["sae"]["config"].get("sae", {})
    kind = cfg.get("kind", scfg.get("kind"))
    hooks = cfg.get("hook_in", scfg.get("hook_in"))
    if cfg.get("is_transcoder"):
        hooks = f"{hooks} → {cfg.get('hook_out')} (transcoder)"
    sparsity = cfg.get("sparsity") or {}
    pairs = [("kind", kind), ("reads", hooks),
             ("d_in → d_sae", f"{cfg.get('d_in')} → {cfg.get('d_sae')}"
              + (f" (×{cfg['d_sae'] / cfg['d_in']:.0f})" if cfg.get("d_in") else "")),
             *[(f"sparsity: {k}", v) for k, v in sparsity.items()],
             ("training tokens", summary.get("tokens")),
             ("FVE (fraction of variance explained)", summary.get("fve")),
             ("L0 (active latents per token)", summary.get("l0")),
             ("dead fraction", summary.get("dead_fraction")), ("MSE (raw units)", summary.get("mse")),
             ("tokens per second", summary.get("tokens_per_s")),
             ("folded input scale", (cfg.get("folded_scales") or {}).get("input_scale"))]
    body = _kv(pairs)
    metrics = _jsonl(folder / "metrics.jsonl")
    if metrics:
        fig, axes = _new_figure(3, 9.5, 2.8)
        t = np.array([m["tokens"] for m in metrics])
        for ax, key, title in zip(axes, ("fve", "l0", "dead_fraction"),
                                  ("FVE (train batch)", "L0", "dead fraction")):
            ax.plot(t, [m.get(key, np.nan) for m in metrics], color="#4c72b0", lw=1)
            ax.set(xlabel="training tokens", title=title)
        axes[0].set_ylim(top=1)
        axes[2].set_ylim(0, max(0.05, 1.1 * max(m.get("dead_fraction", 0) for m in metrics)))
        body += _figure(fig, "SAE training curves")
    return _section("sae", "Sparse autoencoder", body)


def _sweep_section(root: Path, manifests: dict) -> str | None:
    """The sparsity sweep: one SAE per setting, FVE against L0 (the Pareto frontier)."""
    if "sweep" not in manifests:
        return None
    folder = root / "sweep"
    members = []
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = _json(summary_path)
        cfg = _json(summary_path.parent / "cfg.json") or {}
        members.append({**summary, "sparsity": cfg.get("sparsity", {}), "d_sae": cfg.get("d_sae")})
    if not members:
        return _section("sweep", "Sparsity sweep", _kv(list(manifests["sweep"]["summary"].items())))
    # held-out figures from the eval stage, when it has run, replace the training ones
    held_out = {r["name"]: r for r in (_json(root / "eval" / "sweep.json") or [])}
    for m in members:
        if m.get("name") in held_out:
            m.update({k: held_out[m["name"]][k] for k in ("l0", "fve", "ce_loss_recovered")})
    members.sort(key=lambda m: m.get("l0") or 0)
    swept = manifests["sweep"]["summary"].get("swept")
    rows = [[m.get("name"), _fmt(m["sparsity"].get(swept)) if swept else "", m.get("l0"), m.get("fve"),
             m.get("ce_loss_recovered"), m.get("dead_fraction"), m.get("tokens")] for m in members]
    where = "held-out tokens (eval stage)" if held_out else "training batches"
    body = _table(rows, ["SAE", swept or "setting", "L0", "FVE", "CE loss recovered",
                         "dead fraction", "training tokens"])
    body += f"<p class='note'>L0, FVE and CE loss recovered measured on {where}.</p>"
    points = [(m["l0"], m["fve"]) for m in members if m.get("l0") is not None and m.get("fve") is not None]
    if points:
        fig, (ax,) = _new_figure(1, 5.5, 3.4)
        l0, fve = np.array(points).T
        ax.plot(l0, fve, "o-", color="#4c72b0", label="sweep")
        for m, x, y in zip(members, l0, fve):
            ax.annotate(f"{swept}={_fmt(m['sparsity'].get(swept))}" if swept else m.get("name", ""),
                        (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
        main = manifests.get("sae", {}).get("summary", {})
        if main.get("l0") is not None and main.get("fve") is not None:
            ax.plot([main["l0"]], [main["fve"]], "*", ms=12, color="#c44e52", label="the sae stage")
        ax.set(xscale="log", xlabel="L0 (active latents per token)", ylabel="FVE",
               title="sparsity against reconstruction")
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(l0, [f"{v:.3g}" for v in l0])  # the members' own L0s, not powers of 10
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(frameon=False, fontsize=8, loc="lower right")
        body += _figure(fig, "FVE against L0", "Up and to the left is better: more variance "
                                                 "explained with fewer active latents.")
    return _section("sweep", "Sparsity sweep", body)


def _eval_section(root: Path) -> str | None:
    folder = _eval_dir(root)
    if folder is None:
        return None
    m = _json(folder / "metrics.json")
    recon, sparsity, spliced = m.get("reconstruction", {}), m.get("sparsity", {}), m.get("spliced", {})
    body = _kv([("measured on", f"{m.get('n_tokens', 0):,} held-out tokens"),
                ("reads", f"{m.get('hook_in')}" + (f" → {m['hook_out']}" if m.get("hook_out")
                                                   and m.get("hook_out") != m.get("hook_in") else "")),
                ("kind, d_sae", f"{m.get('kind')}, {m.get('d_sae')}")])
    body += "<h3>Reconstruction and sparsity</h3>" + _table(
        [["FVE", recon.get("fve")], ["MSE", recon.get("mse")], ["normalised MSE", recon.get("nmse")],
         ["cosine(x, x̂)", recon.get("cosine")], ["L0 (mean)", sparsity.get("l0_mean")],
         ["dead latents", f"{_fmt(sparsity.get('n_dead'))} ({_fmt(sparsity.get('dead_fraction'))})"],
         ["dense latents", f"{_fmt(sparsity.get('n_dense'))} ({_fmt(sparsity.get('dense_fraction'))})"]],
        ["metric", "value"], cls="kv")
    hists = [(k, t) for k, t in (("density_log10_hist", "latent density (log10 firing rate)"),
                                 ("l0_hist", "L0 per token")) if sparsity.get(k)]
    per_channel = [v for v in recon.get("fve_per_channel") or [] if v is not None]  # None: a constant channel
    n_axes = len(hists) + bool(per_channel)
    if n_axes:
        fig, axes = _new_figure(n_axes, 3.3 * n_axes, 2.9)
        for ax, (key, title) in zip(axes, hists):
            _hist_from_counts(ax, sparsity[key]["counts"], sparsity[key]["edges"], color="#4c72b0")
            ax.set(title=title, ylabel="latents" if key.startswith("density") else "tokens")
        if per_channel:
            ax = axes[-1]
            ax.hist(np.clip(np.asarray(per_channel, dtype=float), -1, 1), bins=30, color="#55a868")
            ax.set(title="FVE per channel (clipped to ≥ -1)", ylabel="channels")
        body += _figure(fig, "eval histograms")
    if spliced:
        body += "<h3>Spliced into the model</h3>" + _table(
            [["clean model", spliced.get("ce_clean")], ["SAE spliced in", spliced.get("ce_spliced")],
             ["zero ablation", spliced.get("ce_zero_ablation")],
             ["mean ablation", spliced.get("ce_mean_ablation")],
             [("html", "<b>CE loss recovered</b> (vs zero ablation)"), spliced.get("ce_loss_recovered")],
             ["CE loss recovered vs mean ablation", spliced.get("ce_loss_recovered_vs_mean")],
             ["KL(clean ‖ spliced) per token", spliced.get("kl_spliced")]],
            ["cross-entropy (nats/token)", "value"], cls="kv")
    baselines = m.get("baselines") or []
    if baselines:
        rows = [[b.get("name"), _coefficients(b.get("coefficients")), b.get("fve"), b.get("ce_loss_recovered")]
                for b in baselines]
        body += "<h3>Baselines</h3>" + _table(rows, ["method", "coefficients per token", "FVE",
                                                     "CE loss recovered"])
    truth = _json(folder / "ground_truth.json")
    if truth and truth.get("rows"):
        body += "<h3>Ground truth: storyworld's labelled variables</h3>" + _ground_truth_table(truth)
    return _section("eval", "SAE evaluation", body)


def _coefficients(value):
    if isinstance(value, (list, tuple)):
        return len(value)
    return value


def _ground_truth_table(truth: dict) -> str:
    methods = ("sae", "pca", "random")
    header = ["variable", "positives"] + [f"{m} {what}" for m in methods for what in ("AUROC", "F1")] + ["SAE latent"]
    rows = []
    for row in truth["rows"]:
        cells = [row.get("variable"), row.get("positives")]
        for method in methods:
            scores = row.get(method) or {}
            cells += [scores.get("auroc"), scores.get("f1")]
        cells.append((row.get("sae") or {}).get("latent"))
        rows.append(cells)
    mean, mean_f1 = truth.get("mean") or {}, truth.get("mean_f1") or {}
    if mean:
        cells: list = [("html", "<b>mean</b>"), ""]
        for method in methods:
            value = mean.get(method)
            auroc, f1 = (value.get("auroc"), value.get("f1")) if isinstance(value, dict) else (value, mean_f1.get(method))
            cells += [auroc, f1]
        rows.append(cells + [""])
    facts = [f"{_fmt(truth[k])} {label}" for k, label in (("n_stories", "unseen stories"), ("n_tokens", "tokens"),
                                                          ("coefficients", "coefficients per token for PCA and random"))
             if truth.get(k) is not None]
    note = (f'<p class="note">Best single latent per variable, by AUROC; {", ".join(facts)}.</p>'
            if facts else '<p class="note">Best single latent per variable, by AUROC.</p>')
    skipped = truth.get("skipped")
    if skipped:
        note += f'<p class="note">Skipped (too few positives or negatives): {html.escape(_fmt(list(skipped)))}</p>'
    return note + _table(rows, header, cls="wide")


def _provenance(root: Path, manifests: dict, preset: str | None, created: str) -> str:
    states = stage_states(root, manifests)
    overrides: list[str] = []
    if preset is None:
        preset, overrides = infer_preset(manifests)
        preset = f"{preset} (inferred)" if preset else "unknown"
    versions = sorted({m.get("package_version") for m in manifests.values() if m.get("package_version")})
    meta = (f"<p class='meta'>preset <b>{html.escape(preset)}</b>"
            + (f" with <code>{html.escape(' '.join('--set ' + o for o in overrides))}</code>" if overrides else "")
            + f" · tinycourse {html.escape(__version__)}"
            + (f" (stages built by {html.escape(', '.join(versions))})" if versions and versions != [__version__] else "")
            + f" · report written {html.escape(created)}</p>")
    rows = [[name, ("html", f'<span class="state {states[name]}">{states[name]}</span>'),
             m.get("created"), m.get("seconds"), ("html", f"<code>{html.escape(str(m.get('config_hash')))}</code>"),
             m.get("package_version")] for name, m in manifests.items()]
    table = _table(rows, ["stage", "state", "built", "seconds", "config hash", "version"], cls="wide")
    return meta + "<details class='prov'><summary>provenance: stages, config hashes</summary>" + table + "</details>"


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); line-height:1.5;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.meta, .note, figcaption { color: var(--muted); font-size: 13px; }
nav { position: sticky; top: 0; background: rgba(255,255,255,.95); border-bottom: 1px solid var(--line);
  padding: 8px 0; margin-bottom: 8px; z-index: 10; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
h2 { font-size: 20px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 16px; margin: 22px 0 8px; } h4 { font-size: 14px; margin: 14px 0 6px; color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; color: var(--muted); }
table.kv td:first-child { color: var(--muted); padding-right: 24px; }
table.wide { width: 100%; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre.sample { white-space: pre-wrap; background: var(--soft); border: 1px solid var(--line);
  border-radius: 6px; padding: 8px 10px; margin: 6px 0; }
figure { margin: 12px 0 18px; } figure img { max-width: 100%; height: auto; display: block; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
.tokens { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  line-height: 2; background: var(--soft); padding: 8px; border-radius: 6px; }
.tok { white-space: pre-wrap; border-radius: 3px; padding: 1px 0; }
.state.done { color: #1a7f37; } .state.stale { color: #bc4c00; font-weight: 600; }
.cv { margin: 8px 0 16px; }
"""


def write_report(run_root: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                 preset: str | None = None, interactive: bool = True) -> Path:
    """Write the run's report (one self-contained HTML file) and return its path.

    `out_path` defaults to `run_root/report/index.html`. `preset` names the run's preset
    (the pipeline knows it); without it the closest preset is inferred from the manifests
    and the differences are shown as `--set` overrides. `interactive=False` leaves out
    the CircuitsVis bundle (static figures only, a smaller page)."""
    root = Path(run_root)
    out = Path(out_path) if out_path is not None else root / "report" / "index.html"
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder {root}")
    manifests = stage_manifests(root)
    created = time.strftime("%Y-%m-%d %H:%M:%S %z")
    lm, used_cv = _lm_section(root, manifests, interactive)
    sections = [("corpus", "Corpus", _corpus_section(root, manifests)), ("lm", "LM", lm),
                ("activations", "Activations", _activations_section(root, manifests)),
                ("sae", "SAE", _sae_section(root, manifests)), ("sweep", "Sweep", _sweep_section(root, manifests)),
                ("eval", "Evaluation", _eval_section(root))]
    sections = [(a, t, s) for a, t, s in sections if s]
    figures = headline(root)
    summary = format_headline(figures).split("\n")[1:]
    head = (f"<header><h1>tinycourse run <code>{html.escape(root.name)}</code></h1>"
            + _provenance(root, manifests, preset, created)
            + (f"<pre class='sample'>{html.escape(chr(10).join(s.strip() for s in summary))}</pre>" if summary else "")
            + "</header>")
    nav = "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t, _ in sections) + "</nav>"
    if not sections:
        nav += "<p class='note'>No stage has finished yet: run <code>tinycourse run</code>.</p>"
    bundle = f"<script>{_circuitsvis_bundle()}</script>" if used_cv else ""
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>tinycourse · {html.escape(root.name)}</title><style>{CSS}</style>{bundle}</head>"
            f"<body><main>{head}{nav}{''.join(s for _, _, s in sections)}</main></body></html>\n")
    atomic_write_text(out, page)
    return out


__all__ = ["write_report", "headline", "format_headline", "stage_manifests", "infer_preset"]
