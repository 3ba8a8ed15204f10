"""The heads section: every head's pattern scores on stories and on repeated random tokens,
its OV copying score, activation patching on indirect-object and on repeated-name pairs,
and head formation across the lm stage's snapshots (the heads stage's heads.json;
`interpret/heads.py`, `interpret/patching.py`, `interpret/formation.py`); beside a
published study's table of the same model's heads when heads.json holds one
(`interpret/study_compare.py`); a link to the stage's own catalogue page, heads/index.html.

Rendered by templates/heads.html.
"""

from __future__ import annotations

from pathlib import Path

from .figures import new_figure, png
from .files import read_json

ANCHOR, NAV, STAGE = "heads", "Heads", "heads"
COLUMNS = (("stories", "previous_token"), ("stories", "duplicate_token"),
           ("stories", "start_token"), ("stories", "pivot"), ("repeated_tokens", "induction"),
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
            cells = [f"L{layer}H{head}"]
            cells += [heads["scores"][on].get(name, [[None] * n_heads] * n_layers)[layer][head]
                      for on, name in COLUMNS]
            cells.append(heads["copying"][layer][head])
            rows.append(cells)
    header = ["head", "previous token", "duplicate token", "start token", "pivot",
              "induction (R + R)", "mean distance", "entropy (nats)", "OV copying"]
    catalogue = [e["description"] for e in heads.get("catalogue", [])]
    ablation = heads.get("ablation")
    return {"summary": manifests["heads"]["summary"], "prompts": heads["prompts"],
            "header": header, "rows": rows, "catalogue": catalogue,
            **(_ablation(ablation) if ablation else {}),
            "patching": _patching_figure(heads["patching"]) if heads.get("patching") else None,
            "patching_template": (heads.get("patching") or {}).get("template"),
            **_repeated_name(heads.get("patching_repeated_name")),
            **_study(heads.get("study")),
            "formation": _formation_figure(heads.get("formation", [])),  # none for a pretrained model
            "page": (root / "heads" / "index.html").is_file()}


def _ablation(ablation: dict) -> dict:
    """The heads x groups table of mean-ablation costs, and a heat map of both modes."""
    mean, zero = ablation["mean"], ablation["zero"]
    groups = list(mean["delta"])
    n_layers, n_heads = len(mean["delta"][groups[0]]), len(mean["delta"][groups[0]][0])
    rows = [[f"L{l}H{h}"] + [mean["delta"][g][l][h] for g in groups] + [zero["delta"]["all"][l][h]]
            for l in range(n_layers) for h in range(n_heads)]
    header = ["head"] + [f"mean-ablated: {g}" for g in groups] + ["zero-ablated: all"]
    clean = [["clean loss"] + [mean["clean"][g] for g in groups] + [zero["clean"]["all"]]]
    return {"ablation_header": header, "ablation_rows": clean + rows,
            "ablation_figure": _ablation_figure(ablation, groups, n_layers * n_heads)}


def _ablation_figure(ablation: dict, groups: list[str], n: int) -> str:
    import numpy as np

    fig, axes = new_figure(2, 10, 0.35 * n + 1.2)
    for ax, mode in zip(axes, ("mean", "zero")):
        delta = ablation[mode]["delta"]
        grid = np.array([[np.nan if v is None else v for row in delta[g] for v in row] for g in groups]).T
        image = ax.imshow(grid, cmap="Reds", aspect="auto", vmin=0)
        n_heads = len(delta[groups[0]][0])
        ax.set_yticks(range(n), [f"L{i // n_heads}H{i % n_heads}" for i in range(n)], fontsize=7)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{mode} ablation: loss change (nats)", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return png(fig)


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


def _repeated_name(patching: dict | None) -> dict:
    """The repeated-name patching figure and its caption's facts, or nothing."""
    if not patching:
        return {}
    return {"patching_repeated_name": _patching_figure(patching),
            "patching_repeated_name_template": patching["template"],
            "patching_repeated_name_example": patching.get("example")}


def _study(study: dict | None) -> dict:
    """Our catalogue beside the study's table ({"title", "url", "rows"}), or nothing."""
    if not study:
        return {}
    rows = [[r["head"], r["ours"], r["study"]] for r in study["rows"]]  # a head the study skips: None, "-"
    return {"study_title": study["title"], "study_url": study.get("url"),
            "study_header": ["head", "our catalogue", "the study"], "study_rows": rows}


def _patching_figure(patching: dict) -> str:
    """Recovered logit difference: per head (left) and per layer and position (right)."""
    import numpy as np

    heads = np.array(patching["heads"]["recovered"], dtype=float)
    resid = np.array(patching["residual"]["recovered"], dtype=float)
    fig, (left, right) = new_figure(2, 12, 3.2)
    for ax, grid in ((left, heads), (right, resid)):
        image = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
    left.set(xlabel="head", ylabel="layer", title="each head's output patched")
    tokens = [t.replace("\n", "\\n") or "<s>" for t in patching["tokens"]]
    right.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    for i in patching.get("replaced", []):  # the repeated-name pairs' replaced first mention, in red
        right.get_xticklabels()[i].set_color("tab:red")
    right.set_yticks(range(len(patching["residual"]["hooks"])),
                     [h.replace("blocks.", "").replace("hook_", "") for h in patching["residual"]["hooks"]], fontsize=7)
    right.set_title("the residual stream patched at one layer and position", fontsize=9)
    return png(fig)
