"""The transcoders section: a transcoder per MLP, trained from one stream. Per layer its
held-out FVE, L0 and dead latents and its CE loss recovered spliced in alone; then the
replacement model, every MLP replaced at once: CE loss recovered against zero- and
mean-ablating every MLP, and the KL to the clean model; and the training curves per layer.
With `transcoders.attention_saes`, the same per-layer row for each attention-output SAE,
spliced in alone at its hook_attn_out.

Rendered by templates/transcoders.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, png
from .files import read_json, read_jsonl

ANCHOR, NAV, STAGE = "transcoders", "Transcoders", "transcoders"
CURVES = (("fve", "FVE (train batch)"), ("l0", "L0"), ("dead_fraction", "dead fraction"))


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the transcoders stage has written its figures."""
    if "transcoders" not in manifests:
        return None
    result = read_json(root / "transcoders" / "transcoders.json")
    if not result:
        return None
    rows = _rows(result.get("per_layer"))
    curves = {r.get("layer", r.get("name")): read_jsonl(root / "transcoders" / str(r.get("name")) / "metrics.jsonl")
              for r in result.get("per_layer") or []}
    return {"rows": rows, "replacement": result.get("replacement") or {},
            "n_tokens": result.get("n_tokens"), "training_tokens": result.get("training_tokens"),
            "seconds": result.get("seconds") or {}, "curves": _training_figure(curves),
            "attention_rows": _rows((result.get("attention") or {}).get("per_layer"))}


def _rows(per_layer: list | None) -> list[list]:
    """A table row per dictionary of transcoders.json: layer, hooks, kind, FVE, L0, dead, alone."""
    rows = []
    for r in per_layer or []:
        alone = r.get("alone") or {}
        rows.append([r.get("layer", r.get("name")), f"{r.get('hook_in')} → {r.get('hook_out')}",
                     f"{r.get('kind')}, {r.get('d_sae')}", r.get("fve"), r.get("l0"),
                     f"{r.get('n_dead')} ({r.get('dead_fraction'):.3g})" if r.get("n_dead") is not None else None,
                     alone.get("ce_loss_recovered"), alone.get("kl")])
    return rows


def _training_figure(curves: dict) -> str | None:
    """FVE, L0 and dead fraction of the training batches against training tokens, a line per layer."""
    curves = {layer: rows for layer, rows in curves.items() if rows}
    if not curves:
        return None
    fig, axes = new_figure(len(CURVES), 9.5, 2.8)
    for layer, rows in curves.items():
        t = np.array([m["tokens"] for m in rows])
        for ax, (key, _) in zip(axes, CURVES):
            ax.plot(t, [m.get(key, np.nan) for m in rows], lw=1, label=f"layer {layer}")
    for ax, (_, title) in zip(axes, CURVES):
        ax.set(xlabel="training tokens", title=title)
    axes[0].set_ylim(top=1)
    axes[0].legend(frameon=False, fontsize=8)
    return png(fig)
