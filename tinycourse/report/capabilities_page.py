"""The capabilities page: every task suite, capability and item of the capabilities stage
on one offline page, runs/<name>/capabilities/index.html.

    write_capabilities_page(folder, out=None, *, title=...) -> Path

It reads what the capabilities stage wrote in `folder` (pipeline.build_capabilities) and
draws what is there:

  capabilities.json    required: per suite, the capabilities scored on the final model
                       (`final`: mean and median probability, top-1 accuracy, logit
                       difference, with bootstrap intervals; interpret/capabilities.py),
                       every item's score (`items`), the capabilities across the lm
                       stage's snapshots (`emergence`), the mining of confident predictions
                       by rule with examples (`mining`, interpret/mining.py: the final model,
                       the middle snapshot and what training added after it), and, when the
                       file has them, other models scored on the same suites (`models`:
                       {name: {suite: {capability: row}}}, rows as in `final`)
  ../heads/heads.json  optional: the heads stage's formation across the same snapshots
                       (best previous-token and induction scores), drawn beside the
                       capabilities' emergence on the same training-token axis

The page: the sortable table of capabilities per suite; per capability its items,
filterable (failures only: the answer not the model's first choice); the emergence curves
as inline SVG; the mining shares per rule and each rule's examples (the unexplained bucket
first); the models side by side when there are several.

It is templates/capabilities_page.html around one JSON blob in a
`<script type="application/json">` element, drawn by templates/capabilities_page.js (plain
JavaScript, inlined with capabilities_page.css and the report's style.css): no request
leaves it. Text from the run goes into the DOM as text (`textContent`), never as markup,
and the blob escapes `<`, `>` and `&` (`standalone.script_json`), so a prompt cannot close
its tag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from markupsafe import Markup

from ..artifacts import atomic_write_text
from .standalone import script_json, templates

PAGE, CAPABILITIES, HEADS = "index.html", "capabilities.json", "../heads/heads.json"
PROMPT_TAIL = 160  # characters of each prompt the page keeps (the whole prompt is in capabilities.json)
SUITE_COLUMNS = (  # (key in a `final` row, header, title); *_ci keys ride along with their means
    ("mean_prob", "mean p(answer)", "mean probability of the answer's tokens after [start] + prompt"),
    ("median_prob", "median p", "median probability of the answer over the items"),
    ("top1", "top-1", "share of items greedy decoding answers right (every answer token the top choice)"),
    ("median_rank", "median rank", "median rank of the answer's first token (0 = the top choice)"),
    ("mean_logit_diff", "logit diff", ("mean logit(answer) - logit(wrong) at the first token where they "
                                       "differ, over the items with a wrong answer")),
    ("logit_diff_positive", "logit diff > 0", "share of the items with a wrong answer that prefer the right one"),
    ("n", "n", "items scored"),
)
EMERGENCE_MEASURES = {"mean_logprob": "mean log p(answer)", "top1": "top-1 accuracy",
                      "mean_logit_diff": "mean logit difference"}


def write_capabilities_page(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                            title: str = "Capabilities") -> Path:
    """Write the capabilities page of the capabilities folder (see the module docstring)
    and return its path: `out`, or `folder/index.html`."""
    folder = Path(folder)
    if not (folder / CAPABILITIES).is_file():
        raise FileNotFoundError(f"no {CAPABILITIES} in {folder}: run the capabilities stage first "
                                f"(tinycourse run --stages capabilities)")
    data = capabilities_page_data(folder)
    page = templates.get_template("capabilities_page.html").render(
        title=title, facts=data["facts"], suites=list(data["suites"]), has_emergence=bool(data["emergence"]),
        has_mining=data["mining"] is not None, has_models=len(data["models"]) > 1,
        blob=Markup(script_json(data)))
    path = Path(out) if out is not None else folder / PAGE
    atomic_write_text(path, page)
    return path


def capabilities_page_data(folder: str | os.PathLike) -> dict:
    """The page's data blob (before JSON): what the script draws from."""
    folder = Path(folder)
    result = _read(folder / CAPABILITIES)
    suites = {}
    for kind, table in result["final"].items():
        items = result.get("items", {}).get(kind, [])
        capabilities = []
        for capability, row in table.items():
            mine = [_item(r) for r in items if r["capability"] == capability]
            if len(mine) != row["n"]:
                raise ValueError(f"{folder / CAPABILITIES} scores {row['n']} {kind} items of {capability} but "
                                 f"lists {len(mine)}: rerun the capabilities stage")
            capabilities.append({"name": capability, **{k: row.get(k) for k, _, _ in SUITE_COLUMNS},
                                 **{f"{k}_ci": row.get(f"{k}_ci") for k in ("mean_prob", "top1", "mean_logit_diff")},
                                 "items": mine})
        suites[kind] = {"capabilities": capabilities, "skipped": result.get("skipped", {}).get(kind, 0)}
    emergence = [r for r in result.get("emergence", []) if r.get("tokens", 0) > 0]  # no 0 on a log axis
    formation = _formation(folder / HEADS)
    mining = result.get("mining")
    models = result.get("models") or {}
    # the run's own model first (the file's keys are sorted)
    models = dict(sorted(models.items(), key=lambda item: not item[0].startswith("this run")))
    facts = {"suites": ", ".join(f"{kind} ({sum(c['n'] for c in s['capabilities'])} items)"
                                 for kind, s in suites.items()),
             "skipped (too long for the context)": sum(s["skipped"] for s in suites.values()) or None,
             "snapshots": len(result.get("emergence", [])) or None,
             "mining": f"{mining['tokens']:,} validation tokens, confident at p >= {mining.get('threshold', 0.5)}"
                       if mining else None,
             "models": ", ".join(models) if len(models) > 1 else None}
    return {"columns": [{"key": k, "name": name, "title": t} for k, name, t in SUITE_COLUMNS],
            "suites": suites, "emergence": emergence, "measures": EMERGENCE_MEASURES,
            "formation": formation, "mining": mining, "models": models,
            "model_sources": result.get("model_sources") or {},
            "facts": {k: v for k, v in facts.items() if v is not None}}


def _item(record: dict) -> dict:
    """One item as the page shows it: the prompt's tail, the answers, the scores."""
    prompt = record["prompt"]
    tail = prompt if len(prompt) <= PROMPT_TAIL else "\u2026" + prompt[-PROMPT_TAIL:]
    return {"prompt": tail, "answer": record["answer"], "wrong": record.get("wrong"),
            "prob": record["prob"], "logprob": record["logprob"], "rank": record["rank"], "top1": record["top1"],
            "logit_diff": record.get("logit_diff"), "truncated": record.get("truncated", False)}


def _formation(path: Path) -> list[dict] | None:
    """The heads stage's formation rows (tokens, best previous-token, best induction), when
    its heads.json is there."""
    if not path.is_file():
        return None
    rows = [{"step": r["step"], "tokens": r["tokens"], "best_previous_token": r.get("best_previous_token"),
             "best_induction": r.get("best_induction")}
            for r in _read(path).get("formation", []) if r.get("tokens", 0) > 0]
    return rows or None


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["capabilities_page_data", "write_capabilities_page"]
