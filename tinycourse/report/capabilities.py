"""The capabilities section: each task suite scored per capability on the final model, and
each capability's mean log-probability across the lm stage's snapshots (the capabilities
stage's capabilities.json; `interpret/capabilities.py`); a link to the stage's own page,
capabilities/index.html.

Rendered by templates/capabilities.html.
"""

from __future__ import annotations

from pathlib import Path

from .figures import new_figure, png
from .files import read_json

ANCHOR, NAV, STAGE = "capabilities", "Capabilities", "capabilities"
HEADER = ["capability", "items", "mean p(answer)", "95% interval", "median p", "top-1",
          "median rank", "logit diff (mean)", "logit diff > 0"]


def _interval(ci) -> str | None:
    return None if ci is None else f"{ci[0]:.3f} to {ci[1]:.3f}"


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the capabilities stage has finished."""
    if "capabilities" not in manifests:
        return None
    result = read_json(root / "capabilities" / "capabilities.json")
    if not result:
        return None
    tables = {}
    for kind, table in result["final"].items():
        tables[kind] = [[c, r["n"], r["mean_prob"], _interval(r["mean_prob_ci"]), r["median_prob"],
                         r["top1"], r["median_rank"], r["mean_logit_diff"], r["logit_diff_positive"]]
                        for c, r in table.items()]
    return {"summary": manifests["capabilities"]["summary"], "header": HEADER, "tables": tables,
            "emergence": _emergence_figure(result["emergence"], list(result["final"])),
            **_mining(result.get("mining")),
            "page": (root / "capabilities" / "index.html").is_file()}


def _mining(mining: dict | None) -> dict:
    """The mining table (share of confident tokens per rule, final model and the middle
    snapshot, and what the second half of training added) and the unexplained examples."""
    if not mining:
        return {}
    final, middle = mining["final"], mining.get("middle")
    header = ["rule", "final model"]
    if middle:
        header += [f"step {middle['step']}", "gained after it"]
    rows = []
    for label, share in final["shares"].items():
        cells = [label, share]
        if middle:
            cells += [middle["shares"][label], middle["gained_by_final"][label]]
        rows.append(cells)
    rows.append(["confident tokens (share of all)", final["confident_share"]]
                + ([middle["confident_share"], middle["gained_by_final"]["tokens"]] if middle else []))
    unexplained = [[e["context"], e["token"], e["prob"]] for e in final["examples"]["unexplained"]]
    return {"mining_header": header, "mining_rows": rows, "mining_tokens": mining["tokens"],
            "unexplained": unexplained}


def _emergence_figure(rows: list[dict], kinds: list[str]) -> str | None:
    """Mean log-probability of the answer per capability against training tokens, a panel
    per suite."""
    rows = [r for r in rows if r["tokens"] > 0]  # step 0 cannot sit on a log axis
    if len(rows) < 2 or not kinds:
        return None
    fig, axes = new_figure(len(kinds), 5.5 * len(kinds), 3.4)
    tokens = [r["tokens"] for r in rows]
    for ax, kind in zip(axes, kinds):
        for capability in rows[-1][kind]:
            ax.plot(tokens, [r[kind][capability]["mean_logprob"] for r in rows], "o-", ms=3,
                    label=capability)
        ax.set(xscale="log", xlabel="training tokens", ylabel="mean log p(answer)", title=f"{kind} suite")
    axes[-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return png(fig)
