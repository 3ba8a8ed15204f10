"""The few figures of a run worth printing when it finishes (and atop its report).

    headline(run_root)          {"lm_val_loss": 1.93, "sae_fve": 0.81, ...}, only what the run has
    format_headline(figures)    those as a few aligned lines for the terminal
"""

from __future__ import annotations

import os
from pathlib import Path

from .files import eval_dir, read_json, stage_manifests


def headline(run_root: str | os.PathLike) -> dict:
    """The figures worth printing at the end of a run (only those the run has): LM losses
    in nats/token, the SAE's FVE / L0 / dead share (held-out eval figures when the eval
    stage ran, else the trainer's), CE loss recovered and mean ground-truth AUROCs."""
    root = Path(run_root)
    out: dict = {"run": root.name}
    manifests = stage_manifests(root)
    if "tokenizer" in manifests:
        summary = manifests["tokenizer"]["summary"]
        out["vocab_size"] = summary.get("vocab_size")
        out["bytes_per_token"] = summary.get("val_bytes_per_token")
    if "lm" in manifests:
        summary = manifests["lm"]["summary"]
        for key in ("train_loss", "val_loss", "unigram_entropy", "parameters"):
            if key in summary:
                out[f"lm_{key}" if key != "unigram_entropy" else key] = summary[key]
    if "sae" in manifests:
        summary = manifests["sae"]["summary"]
        cfg = read_json(root / "sae" / "cfg.json") or {}
        out["sae_kind"] = cfg.get("kind")
        out["sae_fve"], out["sae_l0"] = summary.get("fve"), summary.get("l0")
        out["sae_dead_fraction"] = summary.get("dead_fraction")
    folder = eval_dir(root)
    if folder is not None:
        metrics = read_json(folder / "metrics.json")
        out["sae_fve"] = metrics.get("reconstruction", {}).get("fve", out.get("sae_fve"))
        sparsity = metrics.get("sparsity", {})
        out["sae_l0"] = sparsity.get("l0_mean", out.get("sae_l0"))
        out["sae_dead_fraction"] = sparsity.get("dead_fraction", out.get("sae_dead_fraction"))
        spliced = metrics.get("spliced", {})
        for key in ("ce_loss_recovered", "ce_loss_recovered_vs_mean", "kl_spliced", "ce_clean", "ce_spliced"):
            if key in spliced:
                out[key] = spliced[key]
        truth = read_json(folder / "ground_truth.json")
        if truth:
            for method, value in (truth.get("mean") or {}).items():
                value = value.get("auroc") if isinstance(value, dict) else value
                if value is not None:
                    out[f"ground_truth_auroc_{method}"] = value
    return {k: v for k, v in out.items() if v is not None}


def format_headline(figures: dict) -> str:
    """`headline(...)` as a few aligned lines for the terminal."""
    def g(key, fmt="{:.3f}"):
        return fmt.format(figures[key]) if key in figures else "-"

    lines = [f"headline figures of run {figures.get('run', '?')}:"]
    if "lm_val_loss" in figures:
        lines.append(f"  LM loss (nats/token)  train {g('lm_train_loss')}  val {g('lm_val_loss')}  "
                     f"(unigram entropy {g('unigram_entropy')})")
    if "sae_fve" in figures:
        dead = figures.get("sae_dead_fraction")
        lines.append(f"  SAE ({figures.get('sae_kind', '?')})  FVE {g('sae_fve')}  L0 {g('sae_l0', '{:.1f}')}  "
                     f"dead {'-' if dead is None else f'{100 * dead:.1f}%'}")
    if "ce_loss_recovered" in figures:
        lines.append(f"  spliced in the LM     CE loss recovered {g('ce_loss_recovered')}  "
                     f"(vs mean ablation {g('ce_loss_recovered_vs_mean')})  KL {g('kl_spliced', '{:.4f}')}")
    truth = {k.removeprefix("ground_truth_auroc_"): v for k, v in figures.items()
             if k.startswith("ground_truth_auroc_")}
    if truth:
        lines.append("  ground truth AUROC    " + "  ".join(f"{k} {v:.3f}" for k, v in truth.items()))
    return "\n".join(lines)
