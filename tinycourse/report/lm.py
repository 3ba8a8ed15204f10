"""The language-model section: the architecture and training figures, the loss curves,
what it does in context (in_context.json: name repeats against first mentions, the
repeated-random-tokens probe), the stories it generated during training, and one
validation story through the model (probe.py).

Rendered by templates/lm.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import probe
from .figures import new_figure, png
from .files import read_json, read_jsonl

ANCHOR, NAV, STAGE = "lm", "LM", "lm"


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None before the lm stage has run. `circuitsvis` is true
    when the page must carry CircuitsVis's bundle for the attention widgets."""
    if "lm" not in manifests:
        return None
    summary = manifests["lm"]["summary"]
    context = {"model": manifests["lm"]["config"].get("model", {}), "summary": summary,
               "loss_curves": _loss_figure(read_jsonl(root / "lm" / "metrics.jsonl"), summary),
               "samples": _samples(read_jsonl(root / "lm" / "samples.jsonl")),
               "probe": None, "probe_error": None,
               "in_context": read_json(root / "lm" / "in_context.json")}
    try:
        context["probe"] = probe.gather(root, interactive)
    except Exception as error:  # a report must not fail because one figure could not be drawn
        context["probe_error"] = repr(error)
    context["circuitsvis"] = bool(context["probe"] and context["probe"]["panels"])
    return context


def _loss_figure(metrics: list[dict], summary: dict) -> str | None:
    """Train loss (raw and smoothed) and val loss against training tokens."""
    if not metrics:
        return None
    fig, (ax,) = new_figure(1, 7.5, 3.4)
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
        ax.axhline(summary["unigram_entropy"], ls="--", color="gray", label="unigram entropy (no context)")
    ax.set(xlabel="training tokens", ylabel="loss (nats/token)", ylim=(0, None))
    ax.legend(frameon=False)
    return png(fig)


def _samples(samples: list[dict]) -> dict | None:
    """The stories of the last evaluation, and the earlier ones by step."""
    if not samples:
        return None
    steps = sorted({s["step"] for s in samples})
    texts = {step: [s["text"] for s in samples if s["step"] == step] for step in steps}
    return {"step": steps[-1], "texts": texts[steps[-1]],
            "earlier": [(step, texts[step]) for step in steps[:-1]]}
