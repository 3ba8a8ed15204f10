"""The features stage: every latent of the SAE (and of each transcoder) studied, and the
dashboard page features/index.html."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_json
from ..config import CourseConfig
from ..corpus.shards import Shards
from ..corpus.tokenizer import load_tokenizer
from .registry import default_device, stage

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("features", needs=("tokenizer", "shards", "lm", "sae"), reads=("features", "eval"),
       resumable=True, optional=("transcoders",))
def build_features(run: Run, folder: Path) -> dict:
    """What each latent of the `sae` stage's dictionary does, into `features/`
    (`interpret/study.py` lists the files: the scan, causal effects and nearest latents,
    auto-labels with their baselines, the prompt view), plus:
        labels.json's variables   (storyworld) the ground-truth variable of each latent
        steering.json             (storyworld) a place latent steered: effect and cost
        index.html                the dashboard of all of it, offline
    and, when the transcoders stage has finished, the same for each layer's transcoder
    in `features/transcoders/layer_{i}/` (the circuits stage labels graph nodes from them)."""
    from ..interpret.autolabel import latent_variables
    from ..interpret.features import load_features
    from ..interpret.study import LABELS, study_dictionary
    from ..lm.model import load_model
    from ..report.dashboard import write_dashboard
    from ..sae.model import load_sae

    device = default_device()
    started = time.time()
    cfg = run.cfg.features
    model = load_model(run.stage_dir("lm"), device=device)
    sae = load_sae(run.stage_dir("sae"), device=device)
    shards = Shards.open(run.stage_dir("shards"))
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    exclude_start = run.cfg.activations.exclude_start
    text = token_text(tokenizer, shards.start_id)
    kw = {"token_text": text, "decode": tokenizer.decode, "exclude_start": exclude_start, "device": device,
          "log": run.log}
    summary = study_dictionary(model, sae, shards, cfg, folder, **kw)
    times = summary.pop("seconds_by_part")

    at = time.time()
    if run.cfg.data.source == "storyworld":
        labels = json.loads((folder / LABELS).read_text())
        variables = latent_variables(model, sae, tokenizer, run.cfg.eval.ground_truth_stories,
                                     data_seed=run.cfg.data.seed, first_index=run.cfg.data.max_stories,
                                     device=device)
        for row, match in zip(labels["latents"], variables["latents"]):
            row["variable"], row["variable_auroc"] = match["variable"], match["auroc"]
        labels["variables"] = variables["variables"]
        atomic_write_json(folder / LABELS, labels)
        steering = place_steering(model, sae, tokenizer, shards, variables, run.cfg, load_features(folder))
        if steering is not None:
            atomic_write_json(folder / "steering.json", steering)
            summary.update({"steering_latent": steering["latent"], "steering_place": steering["place"],
                            "steering_share_factor": steering["best"]["share_factor"],
                            "steering_loss_increase": steering["best"]["loss_increase"]})
        times["ground truth, steering"] = time.time() - at
    write_dashboard(folder, token_text=text, title=f"Features of run {run.root.name}: {summary['hook_in']}",
                    contexts=cfg.page_contexts)

    if run.dir.manifest("transcoders") is not None:
        from ..sae.transcoders import load_transcoders

        at = time.time()
        for layer, transcoder in load_transcoders(run.stage_dir("transcoders"), device).items():
            sub = folder / "transcoders" / f"layer_{layer}"
            figures = study_dictionary(model, transcoder, shards, cfg, sub, **kw)
            write_dashboard(sub, token_text=text, contexts=cfg.page_contexts,
                            title=f"Features of run {run.root.name}: layer {layer}'s transcoder")
            summary[f"transcoder_{layer}"] = {k: figures[k] for k in (
                "alive", "causal_effect_mean", "detection_auroc_sae", "simulation_r_sae")}
        times["transcoders"] = time.time() - at
    summary["seconds"] = round(time.time() - started, 2)
    summary["seconds_by_part"] = {k: round(v, 2) for k, v in times.items()}
    return summary


def token_text(tokenizer, start_id: int | None):
    """id -> the text a page shows for it: `<start>` for the start token, newlines escaped,
    an empty decode as the empty-set sign."""
    def text(i: int) -> str:
        if i == start_id:
            return "<start>"
        return tokenizer.decode([int(i)]).replace("\n", "\\n") or "\u2205"
    return text


STEER_PLACES = ("beach", "forest", "park", "garden")  # the first with a latent of its own is steered
STEER_MULTIPLES = (0.0, 1.0, 2.0, 4.0, 8.0)  # clamp values, in multiples of the latent's mean activation


def place_steering(model, sae, tokenizer, shards: Shards, variables: dict, cfg: CourseConfig,
                   scan: dict) -> dict | None:
    """Steer the latent that best tracks a storyworld place (`variables`, from
    `latent_variables`): clamped at multiples of its mean activation at every position,
    on openings of held-out stories; per strength the share of the place's words in the
    generations and the held-out loss (`interpret.steering.steering_sweep`)."""
    import numpy as np
    import torch

    from ..corpus.storyworld import generate_stories
    from ..interpret.steering import concept_token_ids, place_words, steering_sweep

    found = [(p, variables["variables"].get(f"place={p}")) for p in STEER_PLACES]
    found = [(p, v) for p, v in found if v is not None and v["latent"] is not None]
    if not found:
        return None
    place, match = found[0]
    latent = int(match["latent"])
    mean = float(scan["mean_active"][latent])
    strengths = [round(m * mean, 4) for m in STEER_MULTIPLES]
    stories = generate_stories(16, seed=cfg.data.seed + 1, start=cfg.data.max_stories)
    prompts = [[shards.start_id] + tokenizer.encode(s.text.split(".")[0] + ".") for s in stories]
    n_ctx = model.cfg.n_ctx
    val = shards.tokens("val")
    rows = min(32, len(val) // (n_ctx + 1))
    heldout = torch.from_numpy(np.asarray(val[:rows * (n_ctx + 1)], dtype=np.int64)).view(rows, n_ctx + 1)
    concept = concept_token_ids(tokenizer, place_words(place))
    sweep = steering_sweep(model, sae, latent, strengths, prompts, concept, heldout,
                           max_new_tokens=40, seed=cfg.data.seed, mode="clamp", stop_id=shards.start_id)
    for row in sweep:
        row["generations"] = [tokenizer.decode([i for i in g if i != shards.start_id]) for g in row["generations"][:3]]
    best = max(sweep, key=lambda r: r["concept_share"])
    return {"place": place, "latent": latent, "variable_auroc": match["auroc"], "mode": "clamp",
            "mean_activation": mean, "multiples": list(STEER_MULTIPLES), "concept_ids": concept,
            "rows": sweep, "best": {k: best[k] for k in ("strength", "concept_share", "share_factor",
                                                           "heldout_loss", "loss_increase")}}
