"""An attribution graph as the file circuit-tracer's viewer reads (facts marked [ct] are
taken from circuit-tracer's code).

The JSON (circuit-tracer's frontend schema [ct], kept key for key: the viewer reads these):
    metadata  slug, scan, transcoder_list [], prompt_tokens [str], prompt, node_threshold,
              schema_version 1; also ours: edge_threshold, replacement_score,
              completeness_score (of the unpruned graph), n_layers
    qParams   pinnedIds [], supernodes [], linkType "both", clickedId "", sg_pos ""
    nodes     node_id, feature, layer (a string), ctx_idx, feature_type, token_prob,
              is_target_logit, run_idx 0, reverse_ctx_idx 0, jsNodeId, clerp, influence
              (the cumulative influence share up to this node, as in circuit-tracer),
              activation (features; null otherwise)
                feature    "cross layer transcoder", node_id "{layer}_{latent}_{pos}",
                           feature cantor(layer, latent), jsNodeId "{layer}_{latent}-0",
                           clerp the latent's label when given
                error      "mlp reconstruction error", "{layer}_-1_{pos}", feature -1,
                           jsNodeId "{layer}_-1-{pos}", clerp ""
                embedding  "embedding", "E_{token}_{pos}", layer "E", feature pos,
                           jsNodeId "E_{token}-{pos}", clerp "" (prompt_tokens has the text)
                logit      "logit", "{n_layers + 1}_{token}_{pos}", layer str(n_layers + 1),
                           feature the token id, jsNodeId "L_{token}-{pos}", token_prob,
                           is_target_logit on the most probable, clerp 'Output "tok" (p=..)'
    links     source, target (node_ids), weight (the adjacency entry): the kept edges
              between kept nodes; kept features and errors left without a link are
              dropped, embeddings and logits never [ct]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .circuits import Graph
from .graph_influence import completeness_score, prune, replacement_score


def _text_of(token_text) -> Callable[[int], str]:
    if callable(token_text):
        return lambda t: str(token_text(t))
    vocabulary = list(token_text)
    return lambda t: str(vocabulary[t])


def _label(labels, layer: int, latent: int) -> str:
    """The latent's label: labels[layer] is auto_label's output, or latent -> text."""
    if labels is None or layer not in labels:
        return ""
    of_layer = labels[layer]
    if isinstance(of_layer, Mapping) and "latents" in of_layer:
        of_layer = [row.get("label") for row in of_layer["latents"]]
    try:
        text = of_layer[latent]
    except (KeyError, IndexError):
        return ""
    return text or ""


def to_circuit_tracer_json(graph: Graph, token_text, labels=None, *, node_threshold: float = 0.8,
                           edge_threshold: float = 0.98, slug: str = "prompt",
                           scan: str = "tinycourse", prompt: str | None = None) -> dict:
    """The pruned graph in circuit-tracer's frontend schema (module docstring).

    token_text: a token id's text, a function (id -> str) or a sequence indexed by id;
    labels: {layer: auto_label's output, or a mapping/sequence latent -> text}."""
    text = _text_of(token_text)
    kept = prune(graph, node_threshold, edge_threshold)
    L = graph.n_layers
    nodes, ids = [], {}
    for index in kept.node_mask.nonzero()[:, 0].tolist():
        node = graph.node(index)
        row = {"feature": 0, "layer": "", "ctx_idx": node.position, "feature_type": "",
               "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0,
               "clerp": "", "influence": float(kept.influence[index]), "activation": None}
        if node.kind == "feature":
            pair = (node.layer + node.latent) * (node.layer + node.latent + 1) // 2 + node.latent
            row.update(node_id=f"{node.layer}_{node.latent}_{node.position}", feature=pair,
                       layer=str(node.layer), feature_type="cross layer transcoder",
                       jsNodeId=f"{node.layer}_{node.latent}-0", activation=node.activation,
                       clerp=_label(labels, node.layer, node.latent))
        elif node.kind == "error":
            row.update(node_id=f"{node.layer}_-1_{node.position}", feature=-1, layer=str(node.layer),
                       feature_type="mlp reconstruction error", jsNodeId=f"{node.layer}_-1-{node.position}")
        elif node.kind == "embedding":
            row.update(node_id=f"E_{node.token}_{node.position}", feature=node.position, layer="E",
                       feature_type="embedding", jsNodeId=f"E_{node.token}-{node.position}")
        else:
            p = node.activation
            row.update(node_id=f"{L + 1}_{node.token}_{node.position}", feature=node.token,
                       layer=str(L + 1), feature_type="logit", token_prob=p,
                       is_target_logit=index == graph.logits.start, jsNodeId=f"L_{node.token}-{node.position}",
                       clerp=f'Output "{text(node.token)}" (p={p:.3f})')
        ids[index] = row["node_id"]
        nodes.append(row)
    links = [{"source": ids[s], "target": ids[t], "weight": float(graph.adjacency[t, s])}
             for t, s in kept.edge_mask.nonzero().tolist() if s in ids and t in ids]
    linked = {x for link in links for x in (link["source"], link["target"])}
    nodes = [row for row in nodes if row["node_id"] in linked or row["feature_type"] in ("embedding", "logit")]
    prompt_tokens = [text(t) for t in graph.ids.tolist()]
    metadata = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": prompt_tokens,
                "prompt": prompt if prompt is not None else "".join(prompt_tokens),
                "node_threshold": node_threshold, "schema_version": 1,
                "edge_threshold": edge_threshold, "n_layers": L, "dictionary": graph.dictionary,
                "replacement_score": replacement_score(graph), "completeness_score": completeness_score(graph)}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


__all__ = ["to_circuit_tracer_json"]
