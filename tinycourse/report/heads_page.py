"""The attention-head catalogue: every head of the LM on one offline page,
runs/<name>/heads/index.html.

    write_heads_page(folder, out=None, *, title=...) -> Path

It reads what the heads stage wrote in `folder` and draws what is there:

  heads.json     required: every head's pattern scores, OV copying, ablations, patching
                 (indirect-object and repeated-name pairs) and its one-line description
                 (interpret/heads.py, ablation.py, patching.py, catalogue.py): the
                 sortable table of heads, and per head its description, its ablation row
                 and its patching shares; and, where it holds one, a published study's
                 description of each head beside ours (interpret/study_compare.py)
  examples.json  optional: the queries where each head is most active, in context, with
                 the key it reads most (interpret/head_examples.py)
  patterns.json  optional: every head's attention pattern on a few prompts (a story and
                 the TinyStories-1L-21M study's prompt), drawn with CircuitsVis

The page is templates/heads_page.html around one JSON blob in a
`<script type="application/json">` element, drawn by templates/heads_page.js (plain
JavaScript, inlined with heads_page.css, the report's style.css and CircuitsVis's bundle,
`bundle.circuitsvis_script`): no request leaves it. Text from the run goes into the DOM as
text (`textContent`), never as markup, and the blob escapes `<`, `>` and `&`
(`standalone.script_json`), so a token cannot close its tag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from markupsafe import Markup

from ..artifacts import atomic_write_text
from .bundle import circuitsvis_bundle
from .standalone import script_json, templates

PAGE, HEADS, EXAMPLES, PATTERNS = "index.html", "heads.json", "examples.json", "patterns.json"
SCORE_NAMES = {"previous_token": "previous token", "current_token": "current token",
               "start_token": "start token", "duplicate_token": "duplicate token", "induction": "induction",
               "pivot": "pivot", "distance": "mean distance", "entropy": "entropy (nats)"}


def write_heads_page(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                     title: str = "Attention heads") -> Path:
    """Write the head catalogue page of the heads folder (see the module docstring) and
    return its path: `out`, or `folder/index.html`."""
    folder = Path(folder)
    if not (folder / HEADS).is_file():
        raise FileNotFoundError(f"no {HEADS} in {folder}: run the heads stage first "
                                f"(tinycourse run --stages heads)")
    data = heads_page_data(folder)
    bundle = circuitsvis_bundle() if data["patterns"] else None
    data["has_circuitsvis"] = bundle is not None
    page = templates.get_template("heads_page.html").render(
        title=title, facts=data["facts"], has_examples=data["examples"] is not None,
        has_patterns=bool(data["patterns"]), circuitsvis=Markup(f"<script>{bundle}</script>") if bundle else "",
        blob=Markup(script_json(data)))
    path = Path(out) if out is not None else folder / PAGE
    atomic_write_text(path, page)
    return path


def heads_page_data(folder: str | os.PathLike) -> dict:
    """The page's data blob (before JSON): what the script draws from."""
    folder = Path(folder)
    heads = _read(folder / HEADS)
    stories = heads["scores"]["stories"]
    n_layers, n_heads = len(stories["previous_token"]), len(stories["previous_token"][0])
    cells = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    columns, values = [], []

    def column(key: str, name: str, title: str, grid) -> None:
        if grid is None:
            return
        columns.append({"key": key, "name": name, "title": title})
        values.append([grid[layer][head] for layer, head in cells])

    prompts = heads.get("prompts", {})
    for name in heads.get("score_names", list(stories)):
        if name in stories:
            column(f"stories.{name}", SCORE_NAMES.get(name, name), f"on {prompts.get('stories', 'stories')}",
                   stories[name])
    repeated = heads["scores"].get("repeated_tokens", {})
    if "induction" in repeated:
        column("repeated_tokens.induction", "induction (R + R)", f"on {prompts.get('repeated_tokens', 'R + R')}",
               repeated["induction"])
    column("copying", "OV copying", "share of positive eigenvalue mass of W_E W_V W_O W_U", heads.get("copying"))
    ablation = _ablation(heads.get("ablation"), cells)
    if ablation:
        mode = "mean" if "mean" in ablation["modes"] else next(iter(ablation["modes"]))
        mean = ablation["modes"][mode]
        groups = ablation["groups"]
        if "all" in groups:
            columns.append({"key": f"ablation.{mode}.all", "name": f"{mode}-ablated: all",
                            "title": "change in next-token loss on all tokens (nats)"})
            values.append([row[groups.index("all")] for row in mean["delta"]])
        columns.append({"key": f"ablation.{mode}.max", "name": f"{mode}-ablated: largest",
                        "title": "the largest change in loss over the token groups (nats)"})
        values.append([max((v for v in row if v is not None), default=None) for row in mean["delta"]])
    patching = heads.get("patching")
    if patching:
        column("patching", "patched: recovered", "share of the logit difference recovered by patching the "
               "head's output from clean into corrupted", patching["heads"]["recovered"])
    repeated = heads.get("patching_repeated_name")
    if repeated:
        column("patching_repeated_name", "patched (repeated name): recovered", "share of the logit "
               "difference recovered by patching the head's output from clean into corrupted, on "
               "repeated-name pairs", repeated["heads"]["recovered"])
    study = heads.get("study")
    if study:  # text, not a number: the script sorts it as text
        said = {r["head"]: r["study"] for r in study["rows"]}
        columns.append({"key": "study", "name": "the study", "title": f"the description in {study['title']}"})
        values.append([said.get(f"L{layer}H{head}") for layer, head in cells])
    catalogue = {entry["head"]: entry for entry in heads.get("catalogue", [])}
    rows = []
    for i, (layer, head) in enumerate(cells):
        name = f"L{layer}H{head}"
        entry = catalogue.get(name, {})
        rows.append({"head": name, "layer": layer, "index": head,
                     "description": entry.get("description", name),
                     "labels": [[label, score] for label, score in entry.get("labels", [])],
                     "values": [v[i] for v in values]})
    examples = _read(folder / EXAMPLES) if (folder / EXAMPLES).is_file() else None
    if examples is not None and len(examples.get("heads", [])) != len(cells):
        raise ValueError(f"{folder / EXAMPLES} has examples for {len(examples.get('heads', []))} heads but "
                         f"heads.json has {len(cells)}: rerun the heads stage")
    patterns = _read(folder / PATTERNS).get("prompts", []) if (folder / PATTERNS).is_file() else []
    for p in patterns:
        if len(p["patterns"]) != n_layers or len(p["patterns"][0]) != n_heads:
            raise ValueError(f"{folder / PATTERNS} does not hold {n_layers} x {n_heads} heads: rerun the heads stage")
    facts = {"layers": n_layers, "heads per layer": n_heads, "scored on": prompts.get("stories"),
             "induction scored on": prompts.get("repeated_tokens"),
             "patching": f"{patching['pairs']} pairs of \"{patching['template']}\"" if patching else None,
             "repeated-name patching": f"{repeated['pairs']} pairs of \"{repeated['template']}\", the first "
                                       f"mention replaced" if repeated else None,
             "beside": f"{study['title']} ({study['url']})" if study and study.get("url") else
                       study["title"] if study else None,
             "examples": f"{examples['measure_text']} ({examples['prompts']})" if examples else None}
    return {"n_layers": n_layers, "n_heads": n_heads, "columns": columns, "heads": rows,
            "ablation": ablation, "patching_template": patching["template"] if patching else None,
            "patching_repeated_name_template": repeated["template"] if repeated else None,
            "study_title": study["title"] if study else None,
            "examples": examples, "patterns": patterns, "facts": {k: v for k, v in facts.items() if v is not None}}


def _ablation(ablation: dict | None, cells: list[tuple[int, int]]) -> dict | None:
    """{"groups", "modes": {mode: {"clean": [per group], "delta": [per head: [per group]]}}}."""
    if not ablation:
        return None
    from ..interpret.catalogue import GROUP_NAMES

    groups = list(next(iter(ablation.values()))["delta"])
    modes = {mode: {"clean": [table["clean"].get(g) for g in groups],
                    "delta": [[table["delta"][g][layer][head] for g in groups] for layer, head in cells]}
             for mode, table in ablation.items()}
    return {"groups": groups, "group_names": [GROUP_NAMES.get(g, g) for g in groups], "modes": modes}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["heads_page_data", "write_heads_page"]
