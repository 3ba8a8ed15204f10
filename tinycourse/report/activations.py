"""The activations section: the stored activations of the LM's hooks (how many, how big
on disk, their norms and the scales that normalise them), and a histogram of the norms.

Rendered by templates/activations.html.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..artifacts import format_bytes
from .figures import new_figure, png
from .files import read_json

ANCHOR, NAV, STAGE = "activations", "Activations", "activations"
NORM_SAMPLE_ROWS = 20_000  # activation rows read per hook for the norm histogram


def gather(root: Path, manifests: dict[str, dict], interactive: bool) -> dict | None:
    """The section's context, or None before the activations stage has run. `store` is
    None when activations were streamed (the SAE stage ran the LM itself)."""
    if "activations" not in manifests:
        return None
    store = read_json(root / "activations" / "store.json")
    if store is None:
        cfg = manifests["activations"]["config"].get("activations", {})
        storage = manifests["activations"]["summary"].get("storage", cfg.get("storage"))
        return {"store": None, "storage": storage, "hooks": cfg.get("hooks")}
    hooks = [[h, store["widths"][h], store["mean_sq_norm"][h], math.sqrt(store["mean_sq_norm"][h]),
              store["scales"][h]] for h in store["hooks"]]
    return {"store": store, "on_disk": format_bytes(store.get("bytes", 0)), "hooks": hooks,
            "norms": _norm_figure(root / "activations", store)}


def _norm_figure(folder: Path, store: dict) -> str:
    """Histograms of ||x|| per hook, over a random sample of the stored rows."""
    from ..sae.activations import decode

    n, rng = store["n_tokens"], np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(NORM_SAMPLE_ROWS, n), replace=False))
    fig, (ax,) = new_figure(1, 7.5, 3.0)
    raw_dtype = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[store["dtype"]]
    for hook in store["hooks"]:
        path = folder / f"{hook}.bin"
        if not path.is_file():
            continue
        values = np.memmap(path, dtype=raw_dtype, mode="r", shape=(n, store["widths"][hook]))
        norms = np.linalg.norm(decode(values[rows], store["dtype"]), axis=-1)
        ax.hist(norms, bins=60, histtype="step", lw=1.5, label=hook)
    ax.set(xlabel="||x|| (raw)", ylabel="tokens", title=f"activation norms ({len(rows):,} sampled rows)")
    ax.legend(frameon=False, fontsize=8)
    return png(fig)
