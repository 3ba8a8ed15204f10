"""The sparsity sweep section: one SAE per sparsity setting, their L0 / FVE / CE loss
recovered (held-out figures once the eval stage has run, else the trainer's), and FVE
against L0, the Pareto frontier a sparsity setting picks a point on.

Rendered by templates/sweep.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, png
from .files import read_json
from .numbers import fmt

ANCHOR, NAV, STAGE = "sweep", "Sweep", "sweep"


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None before the sweep stage has run. Without members on
    disk, only the stage's summary (`rows` empty)."""
    if "sweep" not in manifests:
        return None
    summary = manifests["sweep"]["summary"]
    members = []
    for summary_path in sorted((root / "sweep").glob("*/summary.json")):
        cfg = read_json(summary_path.parent / "cfg.json") or {}
        members.append({**read_json(summary_path), "sparsity": cfg.get("sparsity", {}), "d_sae": cfg.get("d_sae")})
    # held-out figures from the eval stage, when it has run, replace the training ones
    held_out = {r["name"]: r for r in (read_json(root / "eval" / "sweep.json") or [])}
    for m in members:
        if m.get("name") in held_out:
            m.update({k: held_out[m["name"]][k] for k in ("l0", "fve", "ce_loss_recovered")})
    members.sort(key=lambda m: m.get("l0") or 0)
    swept = summary.get("swept")
    rows = [[m.get("name"), fmt(m["sparsity"].get(swept)) if swept else "", m.get("l0"), m.get("fve"),
             m.get("ce_loss_recovered"), m.get("dead_fraction"), m.get("tokens")] for m in members]
    main = manifests.get("sae", {}).get("summary", {})
    return {"summary": summary, "rows": rows, "swept": swept, "held_out": bool(held_out),
            "frontier": _frontier_figure(members, swept, main)}


def _frontier_figure(members: list[dict], swept: str | None, main: dict) -> str | None:
    """FVE against L0, one point per member, the sae stage's SAE as a star."""
    points = [(m["l0"], m["fve"]) for m in members if m.get("l0") is not None and m.get("fve") is not None]
    if not points:
        return None
    from matplotlib.ticker import NullFormatter

    fig, (ax,) = new_figure(1, 5.5, 3.4)
    l0, fve = np.array(points).T
    ax.plot(l0, fve, "o-", color="#4c72b0", label="sweep")
    for m, x, y in zip(members, l0, fve):
        ax.annotate(f"{swept}={fmt(m['sparsity'].get(swept))}" if swept else m.get("name", ""),
                    (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    if main.get("l0") is not None and main.get("fve") is not None:
        ax.plot([main["l0"]], [main["fve"]], "*", ms=12, color="#c44e52", label="the sae stage")
    ax.set(xscale="log", xlabel="L0 (active latents per token)", ylabel="FVE",
           title="sparsity against reconstruction")
    ax.set_xticks(l0, [f"{v:.3g}" for v in l0])  # the members' own L0s, not powers of 10
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return png(fig)
