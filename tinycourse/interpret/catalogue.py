"""The head catalogue: a one-line description of every head, generated from its measurements.

    L1H2: induction (0.61); copies (OV 0.93); ablating it costs +1.20 nats on repeated names

A head gets a label for each pattern score at or above its threshold (`LABELS`), the OV
copying score when it is high, and the group of tokens its ablation costs most when that
cost is noticeable. A head with no label is described by how far back and how broadly it
looks, so a random model gets no confident label. Thresholds are judgement calls, written
here once: a score is the attention mass on the pattern's keys, so 0.4 means "40% of its
attention, where the pattern has a key".
"""

from __future__ import annotations

import math
import re

# (score, label, threshold), in the order they are listed
LABELS = (("induction", "induction", 0.3), ("previous_token", "previous-token", 0.4),
          ("duplicate_token", "duplicate-token", 0.3), ("pivot", "structural pivot", 0.4),
          ("current_token", "current-token", 0.4), ("start_token", "attention sink", 0.6))
COPYING_THRESHOLD = 0.8  # share of positive OV eigenvalue mass
ABLATION_THRESHOLD = 0.05  # nats: a cost worth naming
GROUP_NAMES = {"all": "all tokens", "name_repeat": "repeated names", "pronoun": "pronouns",
               "closing_quote": "closing quotes", "second_copy": "the second copy of R + R"}


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head(name: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """"L1H2" -> (1, 2); a malformed or absent head is a one-line error naming the range."""
    match = re.fullmatch(r"L(\d+)H(\d+)", name.strip())
    valid = f"layers 0-{n_layers - 1}, heads 0-{n_heads - 1} (e.g. L0H0)"
    if match is None:
        raise ValueError(f"{name!r} is not a head name like L1H2: this model has {valid}")
    layer, head = int(match[1]), int(match[2])
    if layer >= n_layers or head >= n_heads:
        raise ValueError(f"{name} does not exist: this model has {valid}")
    return layer, head


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def describe_head(layer: int, head: int, scores: dict, copying=None, ablation: dict | None = None) -> dict:
    """One head's entry: {"head", "labels": [(label, score)], "description"}.

    `scores` maps score names (those of `LABELS`, plus "distance" and "entropy") to
    (n_layers, n_heads) nested lists; `copying` is (n_layers, n_heads); `ablation` maps
    group -> (n_layers, n_heads) loss changes in nats."""
    labels = [(label, scores[s][layer][head]) for s, label, threshold in LABELS
              if s in scores and _finite(scores[s][layer][head]) and scores[s][layer][head] >= threshold]
    parts = [f"{label} ({value:.2f})" for label, value in labels]
    if copying is not None and _finite(copying[layer][head]) and copying[layer][head] >= COPYING_THRESHOLD:
        parts.append(f"copies (OV {copying[layer][head]:.2f})")
    if ablation:
        group, cost = max(((g, d[layer][head]) for g, d in ablation.items() if _finite(d[layer][head])),
                          key=lambda gc: gc[1], default=(None, 0.0))
        if cost >= ABLATION_THRESHOLD:
            parts.append(f"ablating it costs {cost:+.2f} nats on {GROUP_NAMES.get(group, group)}")
    if not labels:
        shape = []
        if "distance" in scores and _finite(scores["distance"][layer][head]):
            shape.append(f"looks {scores['distance'][layer][head]:.1f} tokens back on average")
        if "entropy" in scores and _finite(scores["entropy"][layer][head]):
            shape.append(f"entropy {scores['entropy'][layer][head]:.2f} nats")
        parts.insert(0, "no clear pattern" + (f" ({', '.join(shape)})" if shape else ""))
    name = head_name(layer, head)
    return {"head": name, "layer": layer, "index": head, "labels": labels,
            "description": f"{name}: " + "; ".join(parts)}


def catalogue(scores: dict, copying=None, ablation: dict | None = None) -> list[dict]:
    """`describe_head` for every head, layer by layer."""
    first = next(iter(scores.values()))
    return [describe_head(layer, head, scores, copying, ablation)
            for layer in range(len(first)) for head in range(len(first[0]))]


__all__ = ["LABELS", "COPYING_THRESHOLD", "ABLATION_THRESHOLD", "GROUP_NAMES", "head_name",
           "parse_head", "describe_head", "catalogue"]
