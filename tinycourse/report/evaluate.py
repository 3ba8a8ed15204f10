"""The SAE evaluation section: the eval stage's held-out figures. Reconstruction and
sparsity (with histograms of latent density, L0 per token and FVE per channel), the SAE
spliced into the LM (CE loss recovered), the PCA and random baselines, and how well single
latents recover storyworld's labelled variables (the ground truth).

Rendered by templates/eval.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import hist_from_counts, new_figure, png
from .files import eval_dir, read_json
from .numbers import fmt

ANCHOR, NAV, STAGE = "eval", "Evaluation", "eval"
METHODS = ("sae", "pca", "random")  # the ground truth's columns, as the template's header names them
HISTOGRAMS = (("density_log10_hist", "latent density (log10 firing rate)", "latents"),
              ("l0_hist", "L0 per token", "tokens"))


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the eval stage has written its metrics."""
    folder = eval_dir(root)
    if folder is None:
        return None
    metrics = read_json(folder / "metrics.json")
    recon, sparsity = metrics.get("reconstruction", {}), metrics.get("sparsity", {})
    baselines = [[b.get("name"), _coefficients(b.get("coefficients")), b.get("fve"), b.get("ce_loss_recovered")]
                 for b in metrics.get("baselines") or []]
    truth = read_json(folder / "ground_truth.json")
    return {"metrics": metrics, "recon": recon, "sparsity": sparsity, "spliced": metrics.get("spliced", {}),
            "histograms": _histograms(recon, sparsity), "baselines": baselines,
            "truth": _ground_truth(truth) if truth and truth.get("rows") else None}


def _coefficients(value):
    """A baseline's coefficients per token: a count, or the list of them."""
    return len(value) if isinstance(value, (list, tuple)) else value


def _histograms(recon: dict, sparsity: dict) -> str | None:
    """Latent density and L0 per token (binned by the eval stage), and FVE per channel."""
    hists = [h for h in HISTOGRAMS if sparsity.get(h[0])]
    per_channel = [v for v in recon.get("fve_per_channel") or [] if v is not None]  # None: a constant channel
    n_axes = len(hists) + bool(per_channel)
    if not n_axes:
        return None
    fig, axes = new_figure(n_axes, 3.3 * n_axes, 2.9)
    for ax, (key, title, counted) in zip(axes, hists):
        hist_from_counts(ax, sparsity[key]["counts"], sparsity[key]["edges"], color="#4c72b0")
        ax.set(title=title, ylabel=counted)
    if per_channel:
        ax = axes[-1]
        ax.hist(np.clip(np.asarray(per_channel, dtype=float), -1, 1), bins=30, color="#55a868")
        ax.set(title="FVE per channel (clipped to ≥ -1)", ylabel="channels")
    return png(fig)


def _ground_truth(truth: dict) -> dict:
    """One row per labelled variable (AUROC and F1 of each method, the SAE's best latent),
    the mean row's and the chance row's cells (the chance row only where the stage wrote
    one: files from before select-then-report scoring have none), and the facts of the
    note above the table."""
    rows = []
    for row in truth["rows"]:
        cells = [row.get("variable"), row.get("positives")]
        for method in METHODS:
            scores = row.get(method) or {}
            cells += [scores.get("auroc"), scores.get("f1")]
        rows.append(cells + [(row.get("sae") or {}).get("latent")])
    facts = [f"{fmt(truth[k])} {label}" for k, label in (
                ("n_stories", "unseen stories"), ("n_tokens", "tokens")) if truth.get(k) is not None]
    stories = truth.get("stories") or {}
    if stories.get("selection") is not None and stories.get("report") is not None:
        facts.append(f"chosen on {fmt(len(stories['selection']))} of them, "
                     f"reported on the other {fmt(len(stories['report']))}")
    if truth.get("pca_components") is not None:
        facts.append(f"PCA: all {fmt(truth['pca_components'])} components")
    if truth.get("random_directions") is not None:
        facts.append(f"random: {fmt(truth['random_directions'])} directions, "
                     f"{fmt(truth.get('coefficients'))} per token")
    elif truth.get("coefficients") is not None:
        facts.append(f"{fmt(truth['coefficients'])} coefficients per token for PCA and random")
    return {"rows": rows, "mean": _summary_cells(truth.get("mean"), truth.get("mean_f1")),
            "chance": _summary_cells(truth.get("chance"), truth.get("chance_f1")),
            "held_out": truth.get("stories") is not None, "facts": facts, "skipped": truth.get("skipped")}


def _summary_cells(auroc: dict | None, f1: dict | None) -> list:
    """The AUROC and F1 cells of a summary row (mean or chance), per method; [] if none."""
    cells = []
    if auroc:
        for method in METHODS:
            value = auroc.get(method)
            if isinstance(value, dict):  # AUROC and F1 together
                cells += [value.get("auroc"), value.get("f1")]
            else:  # the AUROC, with its F1 in the other dict
                cells += [value, (f1 or {}).get(method)]
    return cells
