"""The attribution-graph viewer: one prompt's graph on one offline page,
runs/<name>/circuits/<prompt-slug>.html.

    write_graph_page(graph_json, out, *, contexts=None, title=None) -> Path
    scan_contexts(graph_json, scans, token_text, n=3) -> {node_id: [context, ...]}

`graph_json` is what `interpret.graph_json.to_circuit_tracer_json` returns (circuit-tracer's
frontend schema): metadata (prompt_tokens, n_layers, thresholds, scores), nodes (node_id,
layer, ctx_idx, feature_type, clerp, influence, activation, token_prob, ...) and links
(source, target, weight). `contexts`, optional, maps a node_id to a few texts in which
its feature fires, the activating token marked ⟦ like this ⟧ (`scan_contexts` builds them
from the features stage's scans, one per layer); the page shows them on hover.

The drawing (templates/graph_page.js, plain JavaScript, inlined with graph_page.css and
the report's style.css; no request leaves the page): an inline SVG, x the token position
(the prompt's tokens label the columns), y the layer, embeddings at the bottom, then
layers 0..L-1 (features as circles, the MLP errors as squares), the logits on top
(hexagons; embeddings are diamonds). Several nodes at one layer and position sit side by
side, wrapping into lines. A node's area follows its share of the influence; a logit's
its probability. An edge's width follows |weight| (relative to the largest), its colour
the sign. Hover shows a node's label, activation, influence and contexts; a click pins
it and highlights every path through it (its ancestors and descendants among the edges
shown), and lists its strongest inputs and outputs; a slider hides the weak edges.

Influence. circuit-tracer's `influence` is cumulative: the share of the total influence
carried by this node and every node more influential than it (largest first), so it
grows as nodes matter less. A node's own share is the step at it: its value minus the
next smaller one among the graph's nodes (`node_shares`; the pruned-away nodes between
two kept ones fold into the step, so it is an upper bound on small nodes).

The page is templates/graph_page.html around one JSON blob in a
`<script type="application/json">` element (`standalone.script_json`: `<`, `>` and `&` as
\\u escapes, so no text can close it); every text from the graph goes into the DOM as
text (`textContent`), never as markup.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from markupsafe import Markup

from ..artifacts import atomic_write_text
from .standalone import script_json, templates

FOLDER = "circuits"  # runs/<name>/circuits/<slug>.html
KINDS = {"cross layer transcoder": "feature", "mlp reconstruction error": "error",
         "embedding": "embedding", "logit": "logit"}
MAX_CONTEXTS = 8  # per node: more would only make the blob bigger
MAX_CONTEXT_CHARS = 400
PRODUCER = "interpret.graph_json.to_circuit_tracer_json"
MARK_OPEN, MARK_CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧ around the activating token


def write_graph_page(graph_json: Mapping, out: str | os.PathLike, *,
                     contexts: Mapping[str, Sequence[str]] | None = None, title: str | None = None) -> Path:
    """Write the viewer of `graph_json` (see the module docstring) and return its path:
    `out`, or, when `out` is a folder, `out/<slug>.html`."""
    data = graph_page_data(graph_json, contexts=contexts)
    meta = data["meta"]
    if title is None:
        title = f"Attribution graph: {meta['slug']}" if meta.get("slug") else "Attribution graph"
    facts = {"prompt": meta.get("prompt"), "scan": meta.get("scan"), "layers": data["n_layers"],
             "tokens": len(data["tokens"]), "nodes": len(data["nodes"]), "edges": len(data["links"]),
             "node threshold": meta.get("node_threshold"), "edge threshold": meta.get("edge_threshold"),
             "replacement score": meta.get("replacement_score"),
             "completeness score": meta.get("completeness_score")}
    page = templates.get_template("graph_page.html").render(
        title=title, facts={k: v for k, v in facts.items() if v is not None},
        has_contexts=bool(data["contexts"]), blob=Markup(script_json(data)))
    path = Path(out)
    if path.is_dir():
        path = path / f"{slug_name(meta.get('slug') or 'prompt')}.html"
    atomic_write_text(path, page)
    return path


def slug_name(slug: str) -> str:
    """A file name from a prompt's slug: letters, digits, '-', '_' and '.' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(slug)).strip("-.")
    return name[:120] or "prompt"


def graph_page_data(graph_json: Mapping, *, contexts: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The page's data blob (before JSON), checked: what the script draws from.

    nodes: [{id, kind, layer (-1 embeddings, 0..L-1, L logits), pos, label, act, inf,
    share, prob, target, feature}], links: [[source index, target index, weight]],
    contexts: {node index: [text]}."""
    meta, raw_nodes, raw_links = _parts(graph_json)
    tokens = [_clean(t) for t in meta.get("prompt_tokens") or []]
    n_layers = meta.get("n_layers")
    if n_layers is None:  # circuit-tracer's own files do not say; the features' layers do
        layers = [int(n["layer"]) for n in raw_nodes if KINDS.get(n.get("feature_type")) in ("feature", "error")]
        n_layers = max(layers) + 1 if layers else 0
    n_layers = int(n_layers)

    nodes, index, influence = [], {}, []
    for k, n in enumerate(raw_nodes):
        missing = [key for key in ("node_id", "layer", "ctx_idx", "feature_type") if key not in n]
        if missing:
            raise ValueError(f"graph node {k} has no {', '.join(missing)}: it is not what {PRODUCER} writes")
        kind = KINDS.get(n["feature_type"])
        if kind is None:
            raise ValueError(f"graph node {n['node_id']!r} has feature_type {n['feature_type']!r}, not one of "
                             f"{sorted(KINDS)}: it is not what {PRODUCER} writes")
        node_id = str(n["node_id"])
        if node_id in index:
            raise ValueError(f"graph node id {node_id!r} appears twice: {PRODUCER} writes each node once")
        if kind == "embedding":
            layer = -1
        elif kind == "logit":
            layer = n_layers
        else:
            try:
                layer = int(n["layer"])
            except (TypeError, ValueError):
                raise ValueError(f"graph node {node_id!r} has layer {n['layer']!r}, not a number: "
                                 f"it is not what {PRODUCER} writes") from None
            if not 0 <= layer < n_layers:
                raise ValueError(f"graph node {node_id!r} is at layer {layer}, outside 0..{n_layers - 1} "
                                 f"(metadata n_layers {n_layers}): it is not what {PRODUCER} writes")
        pos = int(n["ctx_idx"])
        if pos < 0 or (tokens and pos >= len(tokens)):
            raise ValueError(f"graph node {node_id!r} is at position {pos}, outside the prompt's "
                             f"{len(tokens)} tokens: it is not what {PRODUCER} writes")
        index[node_id] = k
        influence.append(_raw(n.get("influence")))
        nodes.append({"id": _clean(node_id), "kind": kind, "layer": layer, "pos": pos,
                      "label": _clean(n.get("clerp") or ""), "act": _number(n.get("activation")),
                      "inf": _number(n.get("influence")), "prob": _number(n.get("token_prob")),
                      "target": bool(n.get("is_target_logit")), "feature": n.get("feature")})
    for node, share in zip(nodes, node_shares(influence)):
        node["share"] = None if node["kind"] == "logit" else _number(share)  # a logit's size is its probability

    links = []
    for k, link in enumerate(raw_links):
        try:
            s, t, w = index[str(link["source"])], index[str(link["target"])], float(link["weight"])
        except KeyError as missing:
            raise ValueError(f"graph link {k} refers to {missing}, which is not a node of the graph: "
                             f"it is not what {PRODUCER} writes") from None
        except (TypeError, ValueError):
            raise ValueError(f"graph link {k} has weight {link.get('weight')!r}, not a number: "
                             f"it is not what {PRODUCER} writes") from None
        links.append([s, t, float(f"{w:.4g}") if math.isfinite(w) else 0.0])

    shown = {}
    for node_id, texts in (contexts or {}).items():
        if str(node_id) in index and texts:
            if isinstance(texts, str):
                raise ValueError(f"contexts[{node_id!r}] is one string; give a list of context strings")
            shown[str(index[str(node_id)])] = [_clean(t)[:MAX_CONTEXT_CHARS] for t in list(texts)[:MAX_CONTEXTS]]
    if not tokens:
        tokens = [""] * (max((n["pos"] for n in nodes), default=-1) + 1)
    keep = ("slug", "scan", "prompt", "node_threshold", "edge_threshold", "replacement_score",
            "completeness_score", "schema_version")
    return {"meta": {k: _clean(meta[k]) if isinstance(meta.get(k), str) else _number(meta.get(k))
                     for k in keep if meta.get(k) is not None},
            "tokens": tokens, "n_layers": n_layers, "nodes": nodes, "links": links, "contexts": shown,
            "marks": [MARK_OPEN, MARK_CLOSE]}


def node_shares(influence: Sequence[float | None]) -> list[float | None]:
    """Each node's own share of the influence from circuit-tracer's cumulative one (the
    module docstring): the step from the next smaller cumulative value (0 below the
    smallest). None stays None."""
    known = sorted({v for v in influence if v is not None})
    below = {v: (known[i - 1] if i else 0.0) for i, v in enumerate(known)}
    return [None if v is None else max(0.0, v - below[v]) for v in influence]


def scan_contexts(graph_json: Mapping, scans: Mapping[int, str | os.PathLike | dict],
                  token_text: Callable[[int], str], n: int = 3) -> dict[str, list[str]]:
    """The top `n` contexts of every feature node of the graph, from the features stage's
    scan of its layer's transcoder: `scans[layer]` a features folder (or what
    `interpret.features.load_features` read from one). Each context is its window's text
    with the activating token in ⟦ ⟧; a layer without a scan gives its nodes none."""
    from ..interpret.features import load_features

    _, raw_nodes, _ = _parts(graph_json)
    loaded = {}
    out = {}
    for node in raw_nodes:
        if KINDS.get(node.get("feature_type")) != "feature":
            continue
        layer, latent, _ = str(node["node_id"]).split("_")
        layer, latent = int(layer), int(latent)
        if layer not in scans:
            continue
        if layer not in loaded:
            scan = scans[layer]
            loaded[layer] = scan if isinstance(scan, Mapping) else load_features(scan)
        feats = loaded[layer]
        if latent >= int(feats["index"]["d_sae"]):
            raise ValueError(f"feature node {node['node_id']!r} is latent {latent}, but the layer-{layer} scan has "
                             f"{feats['index']['d_sae']} latents: scan the transcoder the graph was built with")
        windows, values = feats["top_windows"][latent], feats["top_values"][latent]
        centre = windows.shape[-1] // 2
        texts = []
        for window, value in zip(windows.tolist()[:n], values.tolist()[:n]):
            if not value > 0:
                continue
            texts.append("".join(f"{MARK_OPEN}{token_text(t)}{MARK_CLOSE}" if j == centre else token_text(t)
                                 for j, t in enumerate(window) if t >= 0))
        if texts:
            out[str(node["node_id"])] = texts
    return out


# --- checks and cleaning -----------------------------------------------------------------------

def _parts(graph_json) -> tuple[dict, list, list]:
    if not isinstance(graph_json, Mapping):
        raise TypeError(f"the graph is a {type(graph_json).__name__}, not the dict {PRODUCER} returns")
    missing = [key for key in ("nodes", "links") if not isinstance(graph_json.get(key), list)]
    if missing:
        raise ValueError(f"the graph JSON has no {' or '.join(repr(k) for k in missing)} list: "
                         f"it is not what {PRODUCER} writes (metadata, qParams, nodes, links)")
    meta = graph_json.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"the graph JSON's metadata is a {type(meta).__name__}, not the dict {PRODUCER} writes")
    return dict(meta), graph_json["nodes"], graph_json["links"]


def _raw(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _number(x) -> float | None:
    if x is None or isinstance(x, bool):
        return x
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return float(f"{x:.4g}") if math.isfinite(x) else None


def _clean(text) -> str:
    """Text that encodes as UTF-8 (a lone surrogate would not)."""
    return str(text).encode("utf-8", "replace").decode("utf-8")


__all__ = ["FOLDER", "graph_page_data", "node_shares", "scan_contexts", "slug_name", "write_graph_page"]
