"""matplotlib figures as PNG `data:` URIs, so the page needs no file beside it.

Figures are drawn with matplotlib's `Figure` directly (the Agg renderer), never pyplot:
a notebook that writes a report keeps its own backend and shows no stray figures.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def new_figure(n_axes: int = 1, width: float = 7.5, height: float = 3.0):
    """A figure with `n_axes` side by side, in the page's plain style."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, n_axes, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def png(fig) -> str:
    """The figure as a `data:image/png;base64,...` URI, for an <img src>."""
    buf = io.BytesIO()
    # no Software metadata: the same figure gives the same bytes
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def hist_from_counts(ax, counts, edges, **kw) -> None:
    """A histogram a stage already binned (eval's metrics.json keeps counts, not values)."""
    edges = np.asarray(edges, dtype=float)
    ax.bar(edges[:-1], np.asarray(counts, dtype=float), width=np.diff(edges), align="edge", **kw)
