"""The circuits section: the attribution graphs the circuits stage traced through the
transcoders, one row per shipped prompt: its answer and wrong answer with their
probabilities, the graph's size before and after pruning, its replacement and
completeness scores, how well it predicts ablations in the real model, and a link to
its offline viewer (circuits/<slug>.html).

Rendered by templates/circuits.html.
"""

from __future__ import annotations

from pathlib import Path

from .files import read_json

ANCHOR, NAV, STAGE = "circuits", "Circuits", "circuits"


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the circuits stage has written circuits.json."""
    if "circuits" not in manifests:
        return None
    result = read_json(root / "circuits" / "circuits.json")
    if not result:
        return None
    graphs = [{**g, "page": (root / "circuits" / f"{g['slug']}.html").is_file()} for g in result["graphs"]]
    return {"graphs": graphs, "config": result.get("config") or {}, "labelled": bool(result.get("labelled_from")),
            "seconds": result.get("seconds")}
