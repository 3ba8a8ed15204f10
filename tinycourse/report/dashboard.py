"""The feature dashboard: every latent of one dictionary on one offline page,
runs/<name>/features/index.html.

    write_dashboard(folder, out=None, *, token_text, title=..., contexts=8) -> Path

It reads what the features stage wrote in `folder` and draws what is there:

  features.json + .safetensors   the scan (interpret/features.py), required: the table of
                                 latents; per latent its activation histogram, top and
                                 quantile contexts, and, when the dictionary writes the
                                 residual stream, its direct logit attribution
  effects.safetensors            optional: the change in next-token loss when the latent
                                 is ablated (mean, and at each of its first top contexts);
                                 its nearest latents by decoder cosine
  labels.json                    optional: auto-labels and their scores (table columns,
                                 panel, and the sae / random / pca summary)
  prompts.json                   optional: example prompts, token by token, with the
                                 latents firing on each

The page is templates/dashboard.html around one JSON blob in a
`<script type="application/json">` element, drawn by templates/dashboard.js (plain
JavaScript, inlined with dashboard.css and the report's style.css): no request leaves it.
Every text from the run goes into the DOM as text (`textContent`), never as markup, and
the blob escapes `<`, `>` and `&` (as JSON \\u escapes), so a token cannot close its tag.

The blob stays small (a 16,384-latent scan is well under 25 MB; tests/report/
test_dashboard.py measures it): the vocabulary goes in once, as id -> text, for the ids
the page uses, and arrays go in as base64 of little-endian binary (`_pack`), never as
JSON lists of objects:

  ids      uint8 / uint16 / int32, the smallest that fits; padding (-1) as the type's max
           ("p": true) where the type is unsigned
  counts   uint8 / uint16 / uint32
  floats   float16 (three significant digits) scaled by a power of two 2^k ("k") so the
           largest magnitude fills the half range: tiny densities and large counts keep
           their three digits; NaN stays NaN (no context, never fired)

Each pack is {"t": type, "s": shape, "b": base64, "k": exponent, "p": padded}; the script
decodes them into typed arrays once.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from markupsafe import Markup

from ..artifacts import atomic_write_text
from ..interpret.features import INDEX, load_features
from .standalone import json_safe, script_json, templates

PAGE, EFFECTS, LABELS, PROMPTS = "index.html", "effects.safetensors", "labels.json", "prompts.json"
HALF_MAX = 65504.0  # the largest finite float16


def write_dashboard(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                    token_text: Callable[[int], str], title: str = "Feature dashboard",
                    contexts: int = 8) -> Path:
    """Write the dashboard of the features folder (see the module docstring) and return
    its path: `out`, or `folder/index.html`. `token_text(id)` is a token's visible text;
    `contexts` is how many top contexts per latent the page draws (at most the scan's top_k)."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"no {INDEX} in {folder}: run the features stage first "
                                f"(tinycourse run --stages features)")
    data = dashboard_data(folder, token_text=token_text, contexts=contexts)
    page = templates.get_template("dashboard.html").render(
        title=title, index=data["index"], labels=data["labels"], has_prompts=data["prompts"] is not None,
        has_effects=data["has_effects"], has_dla=data["has_dla"], blob=Markup(script_json(data)))
    path = Path(out) if out is not None else folder / PAGE
    atomic_write_text(path, page)
    return path


def dashboard_data(folder: str | os.PathLike, *, token_text: Callable[[int], str], contexts: int = 8) -> dict:
    """The page's data blob (before JSON): what the script draws from."""
    if contexts < 1:
        raise ValueError(f"contexts must be at least 1, got {contexts}")
    folder = Path(folder)
    feats = load_features(folder)
    index = feats["index"]
    d_sae = int(index["d_sae"])
    top_k = int(feats["top_windows"].shape[1])
    contexts = min(contexts, top_k)
    arrays = {
        "top_windows": feats["top_windows"][:, :contexts].numpy(),
        "top_values": feats["top_values"][:, :contexts].numpy(),
        "quantile_windows": feats["quantile_windows"].numpy(),
        "quantile_values": feats["quantile_values"].numpy(),
        "hist_counts": feats["hist_counts"].numpy(),
        "density": feats["density"].numpy(), "mean_active": feats["mean_active"].numpy(),
        "max_active": feats["max_active"].numpy(), "n_active": feats["n_active"].numpy(),
    }
    has_dla = "dla_boost_ids" in feats
    if has_dla:
        for name in ("boost_ids", "boost_values", "suppress_ids", "suppress_values", "hist_counts"):
            arrays[f"dla_{name}"] = feats[f"dla_{name}"].numpy()
    effects = _effects(folder, d_sae, contexts)
    arrays.update(effects)
    labels = _labels(folder, d_sae)
    if labels is not None:
        arrays.update(labels.pop("arrays"))
    prompts = _prompts(folder, token_text)

    used = [arrays["top_windows"].ravel(), arrays["quantile_windows"].ravel()]
    if has_dla:
        used += [arrays["dla_boost_ids"].ravel(), arrays["dla_suppress_ids"].ravel()]
    if labels is not None:
        used += [np.asarray(t, dtype=np.int64) for t in labels["tokens"] if t]
    ids = np.unique(np.concatenate([np.asarray(u, dtype=np.int64) for u in used]))
    ids = ids[ids >= 0]
    vocab = [""] * (int(ids[-1]) + 1 if len(ids) else 0)
    for i in ids.tolist():
        vocab[i] = _clean(token_text(i))

    packed = {}
    for name, a in arrays.items():
        if name.endswith(("windows", "_ids")):
            packed[name] = _pack_ids(a)
        elif name == "n_active":
            packed[name] = _pack_counts(a)
        else:  # values, histogram counts (three digits are enough to draw them), scores
            packed[name] = _pack_floats(a)
    shown_index = {key: index.get(key) for key in ("hook_in", "hook_out", "is_transcoder", "d_sae", "split",
                                                   "n_tokens", "alive", "dead", "mean_density", "norm")}
    return {
        "d_sae": d_sae, "context": int(index["config"]["context"]), "contexts": contexts,
        "index": json_safe(shown_index), "vocab": vocab, "arrays": packed,
        "hist_edges": json_safe(feats["hist_edges"].tolist()),
        "quantile_levels": json_safe(feats["quantile_levels"].tolist()),
        "has_dla": has_dla, "dla_skipped": index.get("dla", {}).get("skipped"),
        "dla_hist_edges": json_safe(feats["dla_hist_edges"].tolist()) if has_dla else None,
        "has_effects": bool({"effect_mean", "effect_contexts"} & effects.keys()), "has_neighbors": "neighbor_ids" in effects,
        "labels": labels, "prompts": prompts,
    }


# --- the optional files ----------------------------------------------------------------------

def _effects(folder: Path, d_sae: int, contexts: int) -> dict[str, np.ndarray]:
    """effects.safetensors' arrays (what of it exists), checked against the scan."""
    path = folder / EFFECTS
    if not path.is_file():
        return {}
    import safetensors.numpy

    tensors = safetensors.numpy.load_file(path)
    out = {}
    for name in ("effect_contexts", "effect_mean", "neighbor_ids", "neighbor_cos"):
        if name not in tensors:
            continue
        if tensors[name].shape[0] != d_sae:
            raise ValueError(f"{path} has {name} for {tensors[name].shape[0]} latents but the scan has "
                             f"{d_sae}: rerun the features stage")
        out[name] = tensors[name]
    if "effect_contexts" in out:
        out["effect_contexts"] = out["effect_contexts"][:, :contexts]
    return out


def _labels(folder: Path, d_sae: int) -> dict | None:
    """labels.json as per-latent columns: label, variable and tokens as lists (None where a
    latent has none), the scores as float arrays (NaN where none)."""
    path = folder / LABELS
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    text, variable, tokens = [None] * d_sae, [None] * d_sae, [[] for _ in range(d_sae)]
    scores = {name: np.full(d_sae, np.nan, dtype=np.float32)
              for name in ("detection_auroc", "simulation_r", "variable_auroc")}
    for entry in raw.get("latents", []):
        i = int(entry["latent"])
        if not 0 <= i < d_sae:
            raise ValueError(f"{path} labels latent {i}, but the scan has latents 0..{d_sae - 1}: "
                             f"rerun the labels with this dictionary")
        text[i], variable[i] = entry.get("label"), entry.get("variable")
        tokens[i] = [int(t) for t in entry.get("tokens") or []]
        for name, column in scores.items():
            if entry.get(name) is not None:
                column[i] = float(entry[name])
    return {"method": raw.get("method"), "n_build_tokens": raw.get("n_build_tokens"),
            "n_score_tokens": raw.get("n_score_tokens"), "summary": raw.get("summary") or {},
            "text": text, "variable": variable, "tokens": tokens, "has_variable": any(v is not None for v in variable),
            "arrays": {f"label_{name}": column for name, column in scores.items()}}


def _prompts(folder: Path, token_text: Callable[[int], str]) -> list[dict] | None:
    """prompts.json's prompts (their texts, token texts and the latents firing on each),
    activations rounded to three digits. A prompt with ids but no token texts (what
    `interpret.effects.prompt_latents` returns) gets them from `token_text`."""
    path = folder / PROMPTS
    if not path.is_file():
        return None
    out = []
    for p in json.loads(path.read_text(encoding="utf-8")).get("prompts", []):
        tokens = p.get("tokens") or [token_text(int(i)) for i in p.get("ids", [])]
        if len(p["top"]) != len(tokens):
            raise ValueError(f"{path}: a prompt has {len(tokens)} tokens but latents for {len(p['top'])}: "
                             f"rerun the features stage")
        out.append({"text": _clean(p.get("text") or "".join(tokens)), "tokens": [_clean(t) for t in tokens],
                    "top": [[[int(latent), _round(value)] for latent, value in fired] for fired in p["top"]]})
    return out


# --- compact encodings -----------------------------------------------------------------------

def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _pack_ids(a: np.ndarray) -> dict:
    """Token or latent ids, -1 for padding: the smallest unsigned type with room for the
    padding value (its max), else int32."""
    a = np.asarray(a, dtype=np.int64)
    top = int(a.max()) if a.size else 0
    for kind, dtype, pad in (("u1", "<u1", 255), ("u2", "<u2", 65535)):
        if top < pad:
            return {"t": kind, "s": list(a.shape), "b": _b64(np.where(a < 0, pad, a).astype(dtype)), "p": True}
    return {"t": "i4", "s": list(a.shape), "b": _b64(a.astype("<i4"))}


def _pack_counts(a: np.ndarray) -> dict:
    a = np.asarray(a, dtype=np.int64)
    top = int(a.max()) if a.size else 0
    kind, dtype = ("u1", "<u1") if top < 256 else ("u2", "<u2") if top < 65536 else ("u4", "<u4")
    return {"t": kind, "s": list(a.shape), "b": _b64(a.astype(dtype))}


def _pack_floats(a: np.ndarray) -> dict:
    """float16 of a * 2^k, k the largest with the array's largest magnitude still finite."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.abs(a[np.isfinite(a)])
    top = float(finite.max()) if finite.size else 0.0
    k = 0 if top == 0 else math.floor(math.log2(HALF_MAX / top))
    k = max(-60, min(60, k))
    half = (a * 2.0**k).astype("<f2")
    if finite.size and not np.isfinite(half[np.isfinite(a)]).all():  # rounding went up past the max
        k -= 1
        half = (a * 2.0**k).astype("<f2")
    return {"t": "f2", "s": list(a.shape), "b": _b64(half), "k": k}


def _round(x: float) -> float | None:
    x = float(x)
    return float(f"{x:.3g}") if math.isfinite(x) else None


def _clean(text: str) -> str:
    """Text that encodes as UTF-8 (a lone surrogate would not)."""
    return str(text).encode("utf-8", "replace").decode("utf-8")


__all__ = ["dashboard_data", "write_dashboard"]
