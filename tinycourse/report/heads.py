"""The heads section: every head's pattern scores on stories and on repeated random tokens,
its OV copying score, and head formation across the lm stage's snapshots (the heads
stage's heads.json; `interpret/heads.py`, `interpret/formation.py`).

Rendered by templates/heads.html.
"""

from __future__ import annotations

from pathlib import Path

from .figures import new_figure, png
from .files import read_json

ANCHOR, NAV, STAGE = "heads", "Heads", "heads"
COLUMNS = (("stories", "previous_token"), ("stories", "duplicate_token"),
           ("stories", "start_token"), ("repeated_tokens", "induction"),
           ("stories", "distance"), ("stories", "entropy"))


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the heads stage has finished."""
    if "heads" not in manifests:
        return None
    heads = read_json(root / "heads" / "heads.json")
    if not heads:
        return None
    stories = heads["scores"]["stories"]
    n_layers, n_heads = len(stories["previous_token"]), len(stories["previous_token"][0])
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            cells = [f"{layer}.{head}"]
            cells += [heads["scores"][on][name][layer][head] for on, name in COLUMNS]
            cells.append(heads["copying"][layer][head])
            rows.append(cells)
    header = ["head", "previous token", "duplicate token", "start token",
              "induction (R + R)", "mean distance", "entropy (nats)", "OV copying"]
    return {"summary": manifests["heads"]["summary"], "prompts": heads["prompts"],
            "header": header, "rows": rows, "formation": _formation_figure(heads["formation"])}


def _formation_figure(rows: list[dict]) -> str | None:
    """Best previous-token and induction scores, and the name losses, against tokens."""
    rows = [r for r in rows if r["tokens"] > 0]  # step 0 cannot sit on a log axis
    if len(rows) < 2:
        return None
    tokens = [r["tokens"] for r in rows]
    fig, (left, right) = new_figure(2, 10, 3.2)
    left.plot(tokens, [r["best_previous_token"] for r in rows], "o-", label="best previous-token (stories)")
    left.plot(tokens, [r["best_induction"] for r in rows], "s-", label="best induction (R + R)")
    left.set(xscale="log", xlabel="training tokens", ylabel="score", ylim=(0, 1))
    left.legend(frameon=False, fontsize=8)
    for key, label in (("name_first_loss", "first mentions"), ("name_repeat_loss", "name repeats"),
                       ("second_copy_loss", "second R")):
        right.plot(tokens, [r[key] for r in rows], "o-", label=label)
    right.set(xscale="log", xlabel="training tokens", ylabel="loss (nats)", ylim=(0, None))
    right.legend(frameon=False, fontsize=8)
    return png(fig)
