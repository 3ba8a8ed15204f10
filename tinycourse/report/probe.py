"""One validation story through the trained LM, for the LM section: each token shaded by
the loss of predicting it, and every head's attention pattern (CircuitsVis widgets, or a
static figure when the page is to carry no JavaScript).

Rendered by the probe part of templates/lm.html.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle import circuitsvis_bundle
from .figures import png
from .files import val_tokens

ATTENTION_TOKENS = 64  # positions of the validation story whose attention is drawn


def gather(root: Path, interactive: bool) -> dict | None:
    """Run the LM on the start of the first validation story; None without a model or
    validation tokens. `panels` (one CircuitsVis widget per layer) when `interactive` and
    CircuitsVis is installed, else `attention` (a PNG)."""
    found = val_tokens(root, 4096)
    if found is None or not (root / "lm" / "model.safetensors").is_file():
        return None
    import torch

    from ..corpus.tokenizer import load_tokenizer
    from ..lm.model import load_model

    tokens, meta = found
    starts = np.flatnonzero(tokens == meta["start_id"])
    begin = int(starts[0]) if len(starts) else 0
    model = load_model(root / "lm")
    n = min(ATTENTION_TOKENS, model.cfg.n_ctx, len(tokens) - begin)
    ids = torch.from_numpy(tokens[begin:begin + n].astype(np.int64))[None]
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(ids, names)
    losses = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none").tolist()
    tokenizer = load_tokenizer(root / "tokenizer")
    labels = [_visible("<start>" if int(i) == meta["start_id"] else tokenizer.decode([int(i)])) for i in ids[0]]
    patterns = [cache[name][0].float().numpy() for name in names]  # (heads, query, key) each

    top = max(max(losses, default=1.0), 1e-6)  # the darkest shade
    context = {"top": top, "tokens": [{"text": labels[0], "loss": None}]
               + [{"text": t, "loss": loss, "alpha": min(loss / top, 1.0)} for t, loss in zip(labels[1:], losses)],
               "panels": None, "attention": None}
    if interactive and circuitsvis_bundle() is not None:
        context["panels"] = [{"layer": layer, "id": f"cv-attention-{layer}",
                              "props": {"attention": np.round(p, 3).tolist(), "tokens": labels,
                                        "maskUpperTri": True,
                                        "attentionHeadNames": [f"L{layer}H{h}" for h in range(p.shape[0])]}}
                             for layer, p in enumerate(patterns)]
    else:
        context["attention"] = _attention_figure(patterns)
    return context


def _visible(piece: str) -> str:
    """A token as it can be seen: newlines spelled out, the empty string as ∅."""
    return piece.replace("\n", "\\n") or "\u2205"


def _attention_figure(patterns: list[np.ndarray]) -> str:
    """Every head's pattern as a small heat map, a row of heads per layer."""
    from matplotlib.figure import Figure

    n_layers, n_heads = len(patterns), patterns[0].shape[0]
    fig = Figure(figsize=(1.6 * n_heads + 0.5, 1.7 * n_layers + 0.3), layout="constrained")
    axes = fig.subplots(n_layers, n_heads, squeeze=False)
    for layer, pattern in enumerate(patterns):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"L{layer}H{head}", fontsize=8)
    return png(fig)
