"""The circuits stage: attribution graphs for the shipped prompts through either kind of
transcoder, checked against interventions, with a page per graph."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import atomic_write_json
from ..config import ConfigError
from ..corpus.tokenizer import load_tokenizer
from .features import token_text
from .registry import stage

if TYPE_CHECKING:
    from ..pipeline import Run


@stage("circuits", needs=("tokenizer", "lm", "transcoders"), reads=("circuits",), optional=("features",))
def build_circuits(run: Run, folder: Path) -> dict:
    """Attribution graphs through the transcoders (`interpret/circuits.py`) for the first
    items of a few shipped task suites (`circuits.capabilities`): per item, the graph of
    the answer's and the wrong answer's logits in circuit-tracer's schema
    (`<slug>.json`), our offline viewer (`<slug>.html`, `report/graph_page.py`), and the
    top nodes ablated in the real model against the graph's prediction; `circuits.json`
    lists them. Node labels and hover contexts come from the features stage's scans of
    the transcoders, when it has made them. With `transcoders.cross_layer`, each prompt's
    graph is also built through the cross-layer transcoder, and its scores stand beside
    the transcoders' in circuits.json (each graph's "crosslayer"; the means of both
    kinds under the top-level "crosslayer")."""
    from ..interpret.capabilities import answer_ids, shipped_suites
    from ..interpret.circuits import attribution_graph
    from ..interpret.graph_check import intervention_check
    from ..interpret.graph_influence import prune
    from ..interpret.graph_json import to_circuit_tracer_json
    from ..lm.model import load_model
    from ..report.graph_page import scan_contexts, write_graph_page
    from ..report.standalone import json_safe
    from ..sae.crosslayer import FOLDER, load_crosslayer
    from ..sae.transcoders import load_transcoders

    cfg = run.cfg.circuits
    started = time.time()
    model = load_model(run.stage_dir("lm"))
    tokenizer = load_tokenizer(run.stage_dir("tokenizer"))
    transcoders = load_transcoders(run.stage_dir("transcoders"))
    clt = load_crosslayer(run.stage_dir("transcoders") / FOLDER) if run.cfg.transcoders.cross_layer else None
    text = token_text(tokenizer, tokenizer.start_id)
    kind = "storyworld" if run.cfg.data.source == "storyworld" else "tinystories"
    suite = shipped_suites().get(kind, [])
    scans = {layer: run.stage_dir("features") / "transcoders" / f"layer_{layer}" for layer in transcoders}
    scans = {layer: path for layer, path in scans.items() if (path / "labels.json").is_file()}
    labels = {layer: json.loads((path / "labels.json").read_text()) for layer, path in scans.items()}
    graphs = []
    for capability in cfg.capabilities:
        items = [item for item in suite if item.capability == capability]
        if not items:
            raise ConfigError(f"circuits.capabilities names {capability!r}, which the {kind} suites in "
                              f"data/tasks/{kind}/ do not have: use one of "
                              f"{', '.join(sorted({i.capability for i in suite}))}")
        # whole prompts only, the start token first: a graph of a cut prompt explains another text
        fitting = [item for item in items
                   if len(answer_ids(tokenizer, item.prompt, item.answer)[0]) < model.cfg.n_ctx]
        for n, item in enumerate(fitting[:cfg.prompts]):
            context, answer = answer_ids(tokenizer, item.prompt, item.answer)
            ids = [tokenizer.start_id] + context
            targets = [answer[0]]
            if item.wrong is not None:
                _, wrong = answer_ids(tokenizer, item.prompt, item.wrong)
                if wrong[0] != answer[0]:
                    targets.append(wrong[0])
            graph = attribution_graph(model, transcoders, ids, targets=targets)
            pruned = prune(graph, cfg.node_threshold, cfg.edge_threshold)
            slug = f"{capability}-{n}"
            as_json = to_circuit_tracer_json(graph, text, labels=labels or None, slug=slug,
                                             node_threshold=cfg.node_threshold,
                                             edge_threshold=cfg.edge_threshold, prompt=item.prompt)
            atomic_write_json(folder / f"{slug}.json", as_json)
            contexts = scan_contexts(as_json, scans, text) if scans else None
            write_graph_page(as_json, folder / f"{slug}.html", contexts=contexts,
                             title=f"Attribution graph, {capability} {n}: the answer {item.answer.strip()!r}")
            check = intervention_check(model, transcoders, ids, graph, top=cfg.intervention_top)
            graphs.append({
                "slug": slug, "capability": capability, "prompt": item.prompt, "answer": item.answer,
                "wrong": item.wrong, "targets": [text(t) for t in targets],
                "target_probs": [float(p) for p in graph.logit_probs],
                **graph_figures(graph, pruned, check),
                "intervention_correlation_frozen": json_safe(float(check.frozen_correlation))})
            if clt is not None:  # the same prompt and targets through the CLT, scores side by side
                g = attribution_graph(model, clt, ids, targets=targets)
                check = intervention_check(model, clt, ids, g, top=cfg.intervention_top)
                graphs[-1]["crosslayer"] = graph_figures(g, prune(g, cfg.node_threshold, cfg.edge_threshold), check)
    result = {"graphs": graphs, "labelled_from": sorted(str(p.relative_to(run.root)) for p in scans.values()),
              "config": dataclasses.asdict(cfg), "seconds": round(time.time() - started, 2)}
    if clt is not None and graphs:  # both kinds' scores side by side, averaged over the prompts
        result["crosslayer"] = {key: {"transcoders": sum(g[key] for g in graphs) / len(graphs),
                                      "crosslayer": sum(g["crosslayer"][key] for g in graphs) / len(graphs)}
                                for key in ("replacement_score", "replacement_score_pruned",
                                            "completeness_score", "completeness_score_pruned")}
    atomic_write_json(folder / "circuits.json", result)
    correlations = [g["intervention_correlation"] for g in graphs if g["intervention_correlation"] is not None]
    summary = {"graphs": len(graphs), "nodes_kept": sum(g["nodes_kept"] for g in graphs),
               "replacement_score_mean": sum(g["replacement_score"] for g in graphs) / len(graphs) if graphs else None,
               "intervention_correlation_mean": sum(correlations) / len(correlations) if correlations else None,
               "seconds": result["seconds"]}
    if "crosslayer" in result:
        summary.update({f"crosslayer_{key}_mean": result["crosslayer"][key]["crosslayer"]
                        for key in ("replacement_score", "completeness_score")})
    return summary


def graph_figures(graph, pruned, check) -> dict:
    """One attribution graph's sizes and scores, whole and pruned, and the intervention
    check's correlation (`interpret/circuits.py`), as circuits.json records them."""
    from ..interpret.graph_influence import completeness_score, replacement_score
    from ..report.standalone import json_safe

    return {"features": int(graph.n_features), "nodes_kept": int(pruned.node_mask.sum()),
            "edges_kept": int(pruned.edge_mask.sum()),
            "replacement_score": float(replacement_score(graph)),
            "replacement_score_pruned": float(replacement_score(graph, pruned)),
            "completeness_score": float(completeness_score(graph)),
            "completeness_score_pruned": float(completeness_score(graph, pruned)),
            "intervention_correlation": json_safe(float(check.correlation))}
