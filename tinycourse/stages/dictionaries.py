"""The dictionary stages: activations, the SAE and its sweep, their evaluation, and the
transcoders (per layer, cross-layer, attention-output SAEs)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_bytes, atomic_write_json, file_sha256
from ..config import ConfigError, CourseConfig
from ..corpus.shards import Shards
from ..corpus.tokenizer import load_tokenizer
from .registry import default_device, stage

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("activations", needs=("shards", "lm"), reads=("activations",), resumable=True)
def build_activations(run: Run, folder: Path) -> dict:
    from ..lm.model import load_model
    from ..sae.activations import collect_activations

    cfg = run.cfg.activations
    if cfg.storage == "stream":
        return {"storage": "stream"}  # nothing stored: the SAE stage runs the LM itself
    device = default_device()
    lm = run.stage_dir("lm")
    summary = collect_activations(load_model(lm, device=device), Shards.open(run.stage_dir("shards")),
                                  cfg, folder, device=device,
                                  model_hash=file_sha256(lm / "model.safetensors")[:16])
    keep = ("n_tokens", "n_windows", "dtype", "bytes", "tokens_per_s")
    return {k: summary[k] for k in keep}


@stage("sae", needs=("activations",), reads=("sae",), resumable=True)
def build_sae(run: Run, folder: Path) -> dict:
    from ..sae.train import train_sae

    cfg, hooks = run.cfg.sae, run.cfg.activations.hooks
    for hook in filter(None, (cfg.hook_in, cfg.hook_out)):
        if hook not in hooks:
            raise ConfigError(
                f"sae reads {hook!r}, which the activations stage does not collect "
                f"({', '.join(hooks)}); add it with --set activations.hooks=...,{hook}"
            )
    source = run.activation_source(cfg.hook_in, cfg.hook_out or None, device=default_device())
    summary = train_sae(cfg, source, folder, device=default_device(),
                        input_scale=source.scale(cfg.hook_in),
                        output_scale=source.scale(cfg.hook_out) if cfg.is_transcoder else None)
    keep = ("mse", "fve", "l0", "dead_fraction", "tokens", "tokens_per_s")
    return {k: summary[k] for k in keep if k in summary}


SWEPT_FIELD = {"topk": "k", "batchtopk": "k", "relu": "l1_coeff", "jumprelu": "l0_coeff"}


def sweep_configs(cfg: CourseConfig) -> list:
    """The `sae` config with its sparsity setting set to each of `sweep.values`."""
    name = SWEPT_FIELD[cfg.sae.kind]
    cast = int if name == "k" else float
    return [dataclasses.replace(cfg.sae, **{name: cast(value)}, n_tokens=cfg.sweep.n_tokens)
            for value in cfg.sweep.values]


@stage("sweep", needs=("activations",), reads=("sae", "sweep"), resumable=True)
def build_sweep(run: Run, folder: Path) -> dict:
    from ..sae.train import train_sweep

    cfgs = sweep_configs(run.cfg)
    sae = run.cfg.sae
    source = run.activation_source(sae.hook_in, sae.hook_out or None, device=default_device())
    summaries = train_sweep(cfgs, source, folder, device=default_device(),
                            input_scale=source.scale(sae.hook_in),
                            output_scale=source.scale(sae.hook_out) if sae.is_transcoder else None)
    return {"members": len(cfgs), "swept": SWEPT_FIELD[sae.kind],
            "l0": ", ".join(f"{s['l0']:.1f}" for s in summaries),
            "fve": ", ".join(f"{s['fve']:.3f}" for s in summaries)}


@stage("eval", needs=("shards", "lm", "sae"), reads=("eval",), optional=("sweep",))
def build_eval(run: Run, folder: Path) -> dict:
    """Held-out metrics of the `sae` stage's SAE/transcoder (metrics.json), each latent's
    firing density (latent_density.npy), the sweep's members on the same tokens when the
    sweep was built (sweep.json: the Pareto plot's points), and, on storyworld, how well
    its latents recover the generator's labelled variables on stories the corpus never
    held (ground_truth.json)."""
    import io

    import numpy as np

    from ..evaluate.metrics import evaluate_with_density
    from ..lm.model import load_model
    from ..sae.model import load_sae

    device = default_device()
    model = load_model(run.stage_dir("lm"), device=device)
    sae = load_sae(run.stage_dir("sae"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    cfg = run.cfg.eval
    # the tokens the SAE was trained on decide which positions count (see metrics)
    exclude_start = run.cfg.activations.exclude_start
    metrics, density = evaluate_with_density(model, sae, shards, cfg, device=device,
                                             exclude_start=exclude_start)
    atomic_write_json(folder / "metrics.json", metrics)
    buffer = io.BytesIO()
    np.save(buffer, density)
    atomic_write_bytes(folder / "latent_density.npy", buffer.getvalue())
    spliced = metrics["spliced"]
    summary = {"fve": metrics["reconstruction"]["fve"], "l0": metrics["sparsity"]["l0_mean"],
               "ce_loss_recovered": spliced["ce_loss_recovered"], "kl": spliced["kl_spliced"],
               "dead_fraction": metrics["sparsity"]["dead_fraction"],
               "n_tokens": metrics["n_tokens"]}
    if run.dir.manifest("sweep") is not None:
        # the sweep's members on the same held-out tokens: the Pareto plot's points
        from ..evaluate.metrics import sweep_rows

        members = {p.parent.name: load_sae(p.parent, device=device)
                   for p in sorted(run.stage_dir("sweep").glob("*/cfg.json"))}
        rows = sweep_rows(model, members, shards, cfg, device=device, exclude_start=exclude_start)
        atomic_write_json(folder / "sweep.json", rows)
    if run.cfg.data.source == "storyworld":
        from ..evaluate.groundtruth import ground_truth_recovery

        # stories from index max_stories on: drawn like the corpus, never in it
        truth = ground_truth_recovery(model, sae, load_tokenizer(run.stage_dir("tokenizer")), cfg,
                                      data_seed=run.cfg.data.seed,
                                      first_index=run.cfg.data.max_stories, device=device)
        atomic_write_json(folder / "ground_truth.json", truth)
        summary.update({f"ground_truth_auroc_{k}": v for k, v in truth["mean"].items()})
        summary.update({f"ground_truth_chance_{k}": v for k, v in truth["chance"].items()})
    return summary


@stage("transcoders", needs=("shards", "lm"), reads=("transcoders",), resumable=True)
def build_transcoders(run: Run, folder: Path) -> dict:
    """A transcoder for every MLP (or `transcoders.layers`), all trained from one stream of
    LM forwards, nothing on disk (`sae/transcoders.py`): layer_{i}/ each an SAE folder,
    training.json; then measured on held-out tokens alone and with every MLP replaced at
    once (`evaluate/replacement.py`): transcoders.json. With `transcoders.cross_layer`, then
    a cross-layer transcoder on the same stream (`sae/crosslayer.py`) into crosslayer/,
    measured the same way (transcoders.json's "crosslayer"). With `transcoders.attention_saes`,
    an SAE on each attention output trained beside the transcoders into attention/layer_{i}/,
    each measured with that attention output alone replaced (and all at once): "attention"."""
    from ..config import EvalConfig
    from ..evaluate.replacement import evaluate_replacement
    from ..lm.model import load_model
    from ..sae.crosslayer import FOLDER, load_crosslayer, train_crosslayer
    from ..sae.transcoders import load_attention_saes, load_transcoders, train_transcoders

    device, cfg = default_device(), run.cfg.transcoders
    started = time.time()
    model = load_model(run.stage_dir("lm"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    trained = train_transcoders(cfg, model, shards, folder, device=device)
    train_s = time.time() - started
    saes = {f"layer_{layer}": sae for layer, sae in load_transcoders(folder, device).items()}
    at = time.time()
    figures = evaluate_replacement(model, saes, shards,
                                   EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                   device=device, exclude_start=True)  # as the stream trained
    for row, layer in zip(figures["dictionaries"], trained["layers"]):
        row["layer"] = layer
        member = trained["members"][str(layer)]
        row["train"] = {k: member.get(k) for k in ("tokens", "fve", "l0", "dead_fraction", "tokens_per_s")}
    seconds = {"train": round(train_s, 2), "evaluate": round(time.time() - at, 2)}
    result = {"layers": trained["layers"], "n_tokens": figures["n_tokens"],
              "training_tokens": cfg.n_tokens, "per_layer": figures["dictionaries"],
              "replacement": figures["replacement"], "seconds": seconds}
    if cfg.attention_saes:  # trained in the same sweep; each spliced at its hook_attn_out
        at = time.time()
        attention = {f"layer_{layer}": sae for layer, sae in load_attention_saes(folder, device).items()}
        attn_figures = evaluate_replacement(model, attention, shards,
                                            EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                            device=device, exclude_start=True)
        seconds["attention_evaluate"] = round(time.time() - at, 2)
        for row, layer in zip(attn_figures["dictionaries"], trained["layers"]):
            row["layer"] = layer
            member = trained["attention"]["members"][str(layer)]
            row["train"] = {k: member.get(k) for k in ("tokens", "fve", "l0", "dead_fraction")}
        result["attention"] = {"per_layer": attn_figures["dictionaries"], "replacement": attn_figures["replacement"]}
    if cfg.cross_layer:  # the CLT after the per-layer ones: the same stream, a second pass
        at = time.time()
        clt_trained = train_crosslayer(cfg, model, shards, folder / FOLDER, device=device)
        seconds["crosslayer_train"] = round(time.time() - at, 2)
        at = time.time()
        clt_figures = evaluate_replacement(model, load_crosslayer(folder / FOLDER, device), shards,
                                           EvalConfig(n_tokens=cfg.eval_tokens, batch_size=cfg.lm_batch_size),
                                           device=device, exclude_start=True)
        seconds["crosslayer_evaluate"] = round(time.time() - at, 2)
        for row, train_row in zip(clt_figures["dictionaries"], clt_trained["per_layer"]):
            row["layer"] = train_row["layer"]
            row["train"] = {k: train_row.get(k) for k in ("fve", "l0", "dead_fraction")}
        result["crosslayer"] = {"per_layer": clt_figures["dictionaries"], "replacement": clt_figures["replacement"],
                                "tokens_per_s": clt_trained["tokens_per_s"]}
    atomic_write_json(folder / "transcoders.json", result)
    replacement = figures["replacement"]
    rows = figures["dictionaries"]

    def per_layer(key: str, digits: int, rows=rows) -> str:
        return ", ".join("-" if r[key] is None else f"{r[key]:.{digits}f}" for r in rows)

    summary = {"layers": len(rows), "fve": per_layer("fve", 3), "l0": per_layer("l0", 1),
               "dead_fraction": per_layer("dead_fraction", 3),
               "ce_loss_recovered": replacement["ce_loss_recovered"], "kl": replacement["kl"],
               "ce_loss_recovered_vs_mean": replacement["ce_loss_recovered_vs_mean"],
               "n_tokens": figures["n_tokens"], "seconds": round(time.time() - started, 2),
               "seconds_by_part": seconds}
    if cfg.cross_layer:
        clt_rows = result["crosslayer"]["per_layer"]
        summary.update({"crosslayer_fve": per_layer("fve", 3, clt_rows), "crosslayer_l0": per_layer("l0", 1, clt_rows),
                        "crosslayer_dead_fraction": per_layer("dead_fraction", 3, clt_rows),
                        "crosslayer_ce_loss_recovered": result["crosslayer"]["replacement"]["ce_loss_recovered"],
                        "crosslayer_kl": result["crosslayer"]["replacement"]["kl"]})
    if cfg.attention_saes:
        attn_rows = result["attention"]["per_layer"]
        summary.update({"attention_fve": per_layer("fve", 3, attn_rows), "attention_l0": per_layer("l0", 1, attn_rows),
                        "attention_dead_fraction": per_layer("dead_fraction", 3, attn_rows),
                        "attention_ce_loss_recovered": ", ".join(
                            "-" if r["alone"]["ce_loss_recovered"] is None else f"{r['alone']['ce_loss_recovered']:.3f}"
                            for r in attn_rows)})
    return summary
