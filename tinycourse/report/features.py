"""The features section: what the `sae` stage's latents respond to, from the features
stage's scan of the validation split (`interpret/features.py`). The densest latents with
their top context, auto-label, causal effect and the tokens they boost and suppress
through the unembedding (direct logit attribution); the auto-labels' held-out scores
against random and PCA directions; the place-steering sweep (storyworld); the histogram
of every latent's firing density; a link to the stage's own dashboard page.

Rendered by templates/features.html. Token text goes in as text: the template escapes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import new_figure, png
from .files import read_json

ANCHOR, NAV, STAGE = "features", "Features", "features"
SHOWN = 12  # latents in the table
LOGITS_SHOWN = 5  # boosted / suppressed tokens per latent


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None until the features stage has finished."""
    if "features" not in manifests:
        return None
    from ..interpret.features import load_features

    folder = root / "features"
    try:
        feats = load_features(folder)
    except (FileNotFoundError, ValueError):
        return None
    index = feats["index"]
    density = feats["density"].numpy()
    text = _token_text(root)
    width = index["config"]["context"]
    labels = read_json(folder / "labels.json") or {}
    effects = _effects(folder)
    rows = []
    for latent in np.argsort(-density, kind="stable")[:SHOWN]:
        window = feats["top_windows"][latent, 0].tolist()
        row = {"latent": int(latent), "density": float(density[latent]),
               "mean": float(feats["mean_active"][latent]), "max": float(feats["max_active"][latent]),
               "before": "".join(text(i) for i in window[:width] if i >= 0),
               "token": text(window[width]) if window[width] >= 0 else "",
               "after": "".join(text(i) for i in window[width + 1:] if i >= 0),
               "boost": [], "suppress": [], "label": None, "detection": None, "effect": None}
        if labels.get("latents"):
            entry = labels["latents"][latent]
            row["label"], row["detection"] = entry.get("label"), entry.get("detection_auroc")
        if effects is not None and np.isfinite(effects[latent]):
            row["effect"] = float(effects[latent])
        if "dla_boost_ids" in feats:
            row["boost"] = [text(i) for i in feats["dla_boost_ids"][latent, :LOGITS_SHOWN].tolist()]
            row["suppress"] = [text(i) for i in feats["dla_suppress_ids"][latent, :LOGITS_SHOWN].tolist()]
        rows.append(row)
    steering = read_json(folder / "steering.json")
    return {"index": index, "summary": manifests["features"]["summary"], "rows": rows,
            "dla_skipped": index["dla"].get("skipped"), "density_figure": _density_figure(density),
            "label_method": labels.get("method"), "label_scores": labels.get("summary"),
            "steering": steering, "dashboard": (folder / "index.html").is_file()}


def _effects(folder: Path) -> np.ndarray | None:
    """Each latent's mean causal effect (nats), or None before the stage wrote them."""
    path = folder / "effects.safetensors"
    if not path.is_file():
        return None
    import safetensors.numpy

    return safetensors.numpy.load_file(path)["effect_mean"]


def _token_text(root: Path):
    """id -> its visible text (the run's tokenizer; the id itself without one)."""
    from ..corpus.tokenizer import load_tokenizer

    meta = read_json(root / "shards" / "meta.json") or {}
    start = meta.get("start_id")
    try:
        tokenizer = load_tokenizer(root / "tokenizer")
    except (FileNotFoundError, OSError, ValueError):
        tokenizer = None

    def text(i: int) -> str:
        if i == start:
            return "<start>"
        if tokenizer is None:
            return f"[{i}]"
        return tokenizer.decode([int(i)]).replace("\n", "\\n") or "\u2205"

    return text


def _density_figure(density: np.ndarray) -> str | None:
    """log10 firing density of the latents that fired; the dead ones counted in the title."""
    alive = density[density > 0]
    if not len(alive):
        return None
    fig, (ax,) = new_figure(1, 5.5, 2.9)
    ax.hist(np.log10(alive), bins=30, color="#4c72b0")
    ax.set(xlabel="log10 firing density", ylabel="latents",
           title=f"latent density ({len(density) - len(alive)} never fired)")
    return png(fig)
