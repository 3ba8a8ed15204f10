"""The SAE section: what the sparse autoencoder reads and how wide it is, its sparsity
setting, the trainer's final figures, and its training curves (FVE, L0, dead fraction).

Rendered by templates/sae.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, png
from .files import read_json, read_jsonl

ANCHOR, NAV, STAGE = "sae", "SAE", "sae"


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None before the sae stage has run."""
    if "sae" not in manifests:
        return None
    cfg = read_json(root / "sae" / "cfg.json") or {}
    trained = cfg.get("sae_config") or manifests["sae"]["config"].get("sae", {})
    return {"kind": cfg.get("kind", trained.get("kind")), "hook_in": cfg.get("hook_in", trained.get("hook_in")),
            "hook_out": cfg.get("hook_out") if cfg.get("is_transcoder") else None,
            "d_in": cfg.get("d_in"), "d_sae": cfg.get("d_sae"), "sparsity": cfg.get("sparsity") or {},
            "input_scale": (cfg.get("folded_scales") or {}).get("input_scale"),
            "summary": manifests["sae"]["summary"],
            "curves": _training_figure(read_jsonl(root / "sae" / "metrics.jsonl"))}


def _training_figure(metrics: list[dict]) -> str | None:
    """FVE, L0 and dead fraction of the training batches against training tokens."""
    if not metrics:
        return None
    fig, axes = new_figure(3, 9.5, 2.8)
    t = np.array([m["tokens"] for m in metrics])
    for ax, key, title in zip(axes, ("fve", "l0", "dead_fraction"), ("FVE (train batch)", "L0", "dead fraction")):
        ax.plot(t, [m.get(key, np.nan) for m in metrics], color="#4c72b0", lw=1)
        ax.set(xlabel="training tokens", title=title)
    axes[0].set_ylim(top=1)
    axes[2].set_ylim(0, max(0.05, 1.1 * max(m.get("dead_fraction", 0) for m in metrics)))
    return png(fig)
