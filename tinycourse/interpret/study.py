"""Everything the features stage measures about one dictionary, into one folder.

    study_dictionary(model, sae, shards, cfg, folder, token_text=...)  -> a summary dict

In order, each step reading what the one before wrote:

    features.safetensors + .json   the bounded scan of the val split (`features`)
    effects.safetensors            each latent's causal effect in its first
                                   `cfg.causal_contexts` top contexts (`effects`):
                                   effect_contexts (d_sae, c), effect_mean (d_sae,);
                                   its `cfg.neighbors` nearest latents by decoder cosine
                                   (`families`): neighbor_ids, neighbor_cos (d_sae, n)
    labels.json                    token-set auto-labels built on half the val windows,
                                   scored on the other half, with random and PCA
                                   baselines (`autolabel`)
    prompts.json                   the latents firing on each token of the first few val
                                   stories (`effects.prompt_latents`)

The same for an SAE and for a transcoder (whose latents read hook_in and write hook_out).
The pipeline adds what needs a run (the storyworld variables, steering) and the page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

from ..artifacts import atomic_write_bytes, atomic_write_json
from ..config import FeaturesConfig
from ..corpus.shards import Shards
from ..sae.model import SparseAutoencoder
from .autolabel import auto_label
from .effects import causal_effects, mean_effect, prompt_latents, val_prompts
from .families import nearest_latents
from .features import load_features, scan_features

EFFECTS, LABELS, PROMPTS = "effects.safetensors", "labels.json", "prompts.json"
N_PROMPTS = 4  # val stories in the prompt view


def study_dictionary(model, sae: SparseAutoencoder, shards: Shards, cfg: FeaturesConfig,
                     folder: str | os.PathLike, *, token_text: Callable[[int], str],
                     decode: Callable[[list[int]], str] | None = None, exclude_start: bool = True,
                     device=None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Scan, effects, labels and prompt view of `sae` on `model` into `folder` (the module
    docstring lists the files); returns the figures a manifest summary keeps, with the
    seconds each part took. `decode` turns a prompt's ids into its text (None: joined
    token_text)."""
    folder = Path(folder)
    started = time.time()
    start_id = shards.start_id if exclude_start else None
    index = scan_features(model, sae, shards, cfg, folder, device=device, exclude_start=exclude_start,
                          progress=progress, log=log)
    times = {"scan": time.time() - started}

    at = time.time()
    scan = load_features(folder)
    val = shards.tokens("val")
    effects = causal_effects(model, sae, val, scan["top_positions"][:, :cfg.causal_contexts],
                             start_id=start_id, batch_size=cfg.batch_size * 2, progress=progress)
    means = mean_effect(effects)
    W_dec = sae.W_dec.detach()
    neighbor_ids, neighbor_cos = nearest_latents(W_dec, W_dec, min(cfg.neighbors, sae.d_sae - 1),
                                                 exclude_self=True)
    atomic_write_bytes(folder / EFFECTS, safetensors.torch.save({
        "effect_contexts": effects.float().contiguous(), "effect_mean": means.float().contiguous(),
        "neighbor_ids": neighbor_ids.cpu().int().contiguous(),
        "neighbor_cos": neighbor_cos.cpu().float().contiguous()}))
    times["effects"] = time.time() - at

    at = time.time()
    labels = auto_label(model, sae, shards, cfg, token_text=token_text, exclude_start=exclude_start,
                        device=device, progress=progress)
    atomic_write_json(folder / LABELS, labels)
    times["labels"] = time.time() - at

    at = time.time()
    decode = decode or (lambda ids: "".join(token_text(i) for i in ids))
    prompts = []
    for ids in val_prompts(val, shards.start_id, N_PROMPTS, model.cfg.n_ctx):
        view = prompt_latents(model, sae, ids)
        prompts.append({"text": decode([i for i in ids if i != shards.start_id]),
                        "tokens": [token_text(i) for i in ids], **view})
    atomic_write_json(folder / PROMPTS, {"prompts": prompts})
    times["prompts"] = time.time() - at

    alive = means[~torch.isnan(means)]
    return {"hook_in": index["hook_in"], "hook_out": index["hook_out"], "n_tokens": index["n_tokens"],
            "alive": index["alive"], "mean_density": index["mean_density"],
            "causal_effect_mean": float(alive.mean()) if len(alive) else None,
            **{f"detection_auroc_{m}": v["detection_auroc_mean"] for m, v in labels["summary"].items()},
            **{f"simulation_r_{m}": v["simulation_r_mean"] for m, v in labels["summary"].items()},
            "seconds_by_part": {k: round(v, 2) for k, v in times.items()}}


def load_labels(folder: str | os.PathLike) -> dict:
    """labels.json of a studied folder (a one-line error if the stage has not written it)."""
    import json

    path = Path(folder) / LABELS
    if not path.is_file():
        raise FileNotFoundError(f"no {LABELS} in {folder}: run the features stage (tinycourse run --stages features)")
    return json.loads(path.read_text())


__all__ = ["study_dictionary", "load_labels", "EFFECTS", "LABELS", "PROMPTS"]
