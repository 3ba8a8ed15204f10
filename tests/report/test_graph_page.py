import json
import re
from importlib.resources import files

import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.interpret.circuits import attribution_graph
from tinycourse.interpret.graph_json import to_circuit_tracer_json
from tinycourse.lm.model import GPT
from tinycourse.report.graph_page import (
    MARK_CLOSE,
    MARK_OPEN,
    graph_page_data,
    node_shares,
    scan_contexts,
    slug_name,
    write_graph_page,
)
from tinycourse.sae.model import SparseAutoencoder

from .test_page import CHROMIUM, EXTERNAL, load_in_chromium

D, VOCAB = 32, 64
# token texts and labels that would be markup, or end the data's <script>, if the page interpreted them
HOSTILE = {1: "</script><script>window.__pwned=1</script>", 2: '" onmouseover="window.__pwned=2" x="',
           3: "<img src=x onerror=window.__pwned=3>", 4: "<!--", 5: "&amp; \u2028 'quote'"}
LABEL = "</script><img src=x onerror=window.__pwned=4> & <b>bold</b>"
SIZE_BOUND = 3_000_000  # bytes: the page of a 64-token graph
SCRIPT_FILE = "graph_page.js"

pytestmark = pytest.mark.usefixtures("one_thread")


def token_text(i):
    return HOSTILE.get(i, f" t{i}")


def make_model(n_ctx=16):
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=n_ctx, d_vocab=VOCAB, init_std=0.3)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_transcoders(d_sae=48):
    tcs = {}
    for i in range(2):
        cfg = SAEConfig(kind="topk", d_sae=d_sae, k=6, hook_in=f"blocks.{i}.ln2.hook_normalized",
                        hook_out=f"blocks.{i}.hook_mlp_out")
        tc = SparseAutoencoder(cfg, d_in=D)
        with torch.no_grad():
            tc.b_enc.normal_(0, 0.05)
            tc.b_dec.normal_(0, 0.1)
        tcs[i] = tc.eval()
    return tcs


def graph_json(n=12, seed=1, n_ctx=16):
    """A pruned graph of a random GPT and random transcoders, the same whichever test asks first."""
    torch.manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))
    ids[:5] = torch.tensor([1, 2, 3, 4, 5])  # every hostile token in the prompt
    graph = attribution_graph(make_model(n_ctx), make_transcoders(), ids)
    labels = {0: {i: (LABEL if i % 3 == 0 else f"zero {i}") for i in range(48)},
              1: {i: (LABEL if i % 3 == 0 else f"one {i}") for i in range(48)}}
    return to_circuit_tracer_json(graph, token_text, labels, slug="demo </script> story")


@pytest.fixture(scope="module")
def graph():
    return graph_json()


def contexts_for(g):
    """Two contexts per feature node, the activating token marked, some hostile."""
    return {n["node_id"]: [f"once {HOSTILE[1]} {MARK_OPEN}{HOSTILE[3]}{MARK_CLOSE} end", f"a {MARK_OPEN} tok{k}{MARK_CLOSE}"]
            for k, n in enumerate(g["nodes"]) if n["feature_type"] == "cross layer transcoder"}


def blob(page):
    match = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(match.group(1))


def paths_through(g, node_id, cut=0.0):
    """The node ids on a path through `node_id` (its ancestors, itself, its descendants),
    along the links with |weight| >= cut: the reference for the page's pin."""
    links = [(l["source"], l["target"]) for l in g["links"] if abs(l["weight"]) >= cut]
    seen = {node_id}
    for start, end in ((1, 0), (0, 1)):  # up: from a target to its sources; down: the reverse
        reached, frontier = {node_id}, [node_id]
        while frontier:
            x = frontier.pop()
            for link in links:
                if link[start] == x and link[end] not in reached:
                    reached.add(link[end])
                    frontier.append(link[end])
        seen |= reached
    return seen


# --- the page ----------------------------------------------------------------------------------

def test_page_holds_every_node_and_link_in_one_escaped_blob(graph, tmp_path):
    contexts = contexts_for(graph)
    path = write_graph_page(graph, tmp_path / "demo.html", contexts=contexts, title="Graph <of> demo")
    assert path == tmp_path / "demo.html"
    page = path.read_text(encoding="utf-8")
    data = blob(page)
    assert [n["id"] for n in data["nodes"]] == [n["node_id"] for n in graph["nodes"]]
    assert len(data["links"]) == len(graph["links"]) > 0
    ids = [n["node_id"] for n in graph["nodes"]]
    for (s, t, w), link in zip(data["links"], graph["links"]):
        assert ids[s] == link["source"] and ids[t] == link["target"]
        assert w == pytest.approx(link["weight"], rel=1e-3)
    kinds = {n["kind"] for n in data["nodes"]}
    assert kinds == {"feature", "error", "embedding", "logit"} or kinds == {"feature", "embedding", "logit"}
    for node, raw in zip(data["nodes"], graph["nodes"]):
        assert node["pos"] == raw["ctx_idx"] and node["label"] == raw["clerp"]
        expected_layer = {"embedding": -1, "logit": 2}.get(node["kind"], int(raw["layer"]) if raw["layer"] != "E" else None)
        assert node["layer"] == expected_layer
    assert data["n_layers"] == 2 and data["tokens"] == graph["metadata"]["prompt_tokens"]
    # contexts by node index, hostile text intact in the data ...
    assert len(data["contexts"]) == len(contexts) > 0
    first = next(k for k, n in enumerate(graph["nodes"]) if n["node_id"] in contexts)
    assert data["contexts"][str(first)] == contexts[graph["nodes"][first]["node_id"]]
    assert any(n["label"] == LABEL for n in data["nodes"])
    assert data["tokens"][:5] == [HOSTILE[i] for i in range(1, 6)]
    # ... and never markup in the page: the blob and the script are the only <script>s
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "<!--" not in page and "<b>bold" not in page
    assert "<title>Graph &lt;of&gt; demo</title>" in page
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:5]
    assert "sourceMappingURL" not in page
    for url in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page):
        assert url.startswith("#"), url
    js = (files("tinycourse.report") / "templates" / SCRIPT_FILE).read_text(encoding="utf-8")
    assert js.rstrip() in page  # Jinja included the script verbatim
    assert "replacement score" in page and "edge threshold" in page


def test_shares_from_cumulative_influence():
    assert node_shares([0.5, 0.9, 0.8, None, 1.0]) == pytest.approx([0.5, 0.1, 0.3, None, 0.1], nan_ok=True)
    assert node_shares([]) == []
    shares = [s for s in node_shares([0.2, 0.2, 0.7]) if s is not None]  # ties share one step
    assert shares == pytest.approx([0.2, 0.2, 0.5])


def test_sizes_come_from_the_graph(graph):
    data = graph_page_data(graph)
    logits = [n for n in data["nodes"] if n["kind"] == "logit"]
    assert all(n["share"] is None and n["prob"] > 0 for n in logits)
    assert sum(n["target"] for n in logits) == 1
    features = [n for n in data["nodes"] if n["kind"] == "feature"]
    assert all(n["share"] >= 0 and n["act"] is not None for n in features)
    # the most influential node has the largest share: the smallest cumulative value
    top = min((n for n in data["nodes"] if n["inf"] is not None and n["kind"] != "logit"), key=lambda n: n["inf"])
    assert top["share"] == max(n["share"] for n in data["nodes"] if n["share"] is not None)


def test_a_folder_gets_the_slug_as_its_name(graph, tmp_path):
    path = write_graph_page(graph, tmp_path)
    assert path == tmp_path / "demo-script-story.html" and path.is_file()
    assert "<title>Attribution graph: demo &lt;/script&gt; story</title>" in path.read_text()
    assert slug_name("../../etc/passwd") == "etc-passwd" and slug_name("///") == "prompt"


def test_bad_input_says_what_produced_it(graph):
    broken = {k: v for k, v in graph.items() if k != "nodes"}
    with pytest.raises(ValueError) as error:
        write_graph_page(broken, "unused.html")
    message = str(error.value)
    assert "'nodes'" in message and "to_circuit_tracer_json" in message and "\n" not in message
    cases = [
        ({**graph, "links": graph["links"] + [{"source": "nope", "target": graph["nodes"][0]["node_id"], "weight": 1}]},
         "refers to 'nope'"),
        ({**graph, "nodes": [{**graph["nodes"][0], "feature_type": "attention"}] + graph["nodes"][1:]},
         "feature_type 'attention'"),
        ({**graph, "nodes": [{k: v for k, v in graph["nodes"][0].items() if k != "ctx_idx"}] + graph["nodes"][1:]},
         "has no ctx_idx"),
        ({**graph, "nodes": graph["nodes"] + graph["nodes"][:1]}, "appears twice"),
    ]
    for bad, expected in cases:
        with pytest.raises(ValueError, match=re.escape(expected)) as error:
            graph_page_data(bad)
        assert "to_circuit_tracer_json" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(TypeError, match="not the dict .*to_circuit_tracer_json returns"):
        graph_page_data([1, 2])
    with pytest.raises(ValueError, match="one string"):
        graph_page_data(graph, contexts={graph["nodes"][0]["node_id"]: "a string"})


def test_contexts_for_nodes_not_in_the_graph_are_left_out(graph):
    data = graph_page_data(graph, contexts={"9_9_9": ["x"], graph["nodes"][0]["node_id"]: ["y"] * 20})
    assert data["contexts"] == {"0": ["y"] * 8}


def test_scan_contexts_mark_the_activating_token(graph, tmp_path):
    from .test_dashboard import synthetic_folder

    folder = synthetic_folder(tmp_path / "f0", 48, vocab=VOCAB, top_k=4, context=2, dla=False)
    from tinycourse.interpret.features import load_features

    feats = load_features(folder)
    contexts = scan_contexts(graph, {0: folder}, token_text, n=2)
    features0 = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder" and n["layer"] == "0"]
    assert features0 and set(contexts) <= {n["node_id"] for n in features0}
    node = next(n for n in features0 if n["node_id"] in contexts)
    latent = int(node["node_id"].split("_")[1])
    window = feats["top_windows"][latent, 0].tolist()
    expected = "".join(f"{MARK_OPEN}{token_text(t)}{MARK_CLOSE}" if j == 2 else token_text(t)
                       for j, t in enumerate(window) if t >= 0)
    assert contexts[node["node_id"]][0] == expected and len(contexts[node["node_id"]]) <= 2
    with pytest.raises(ValueError, match="scan the transcoder the graph was built with"):
        scan_contexts(graph, {0: synthetic_folder(tmp_path / "small", 2, vocab=VOCAB, top_k=4, context=2, dla=False)},
                      token_text)


@pytest.fixture(scope="module")
def page_64(tmp_path_factory):
    g = graph_json(n=64, seed=3, n_ctx=64)
    path = write_graph_page(g, tmp_path_factory.mktemp("g64") / "g64.html", contexts=contexts_for(g))
    return g, path


def test_page_of_a_64_token_graph_stays_small(page_64):
    g, path = page_64
    size = path.stat().st_size
    print(f"\n64-token graph page: {len(g['nodes'])} nodes, {len(g['links'])} links, {size:,} bytes")
    assert size < SIZE_BOUND, size
    assert len(blob(path.read_text())["nodes"]) == len(g["nodes"])


# --- in a real browser ---------------------------------------------------------------------------

def browse(path, profile, expression):
    from .test_dashboard import browse as dashboard_browse

    return dashboard_browse(path, profile, expression)


INTERACT = """
const facts = {ready: document.body.dataset.ready,
               svgs: document.querySelectorAll('#graph-view svg.graph').length,
               rowNames: document.querySelectorAll('#graph-view svg.row-names .row-label').length,
               nodes: document.querySelectorAll('#graph-view svg .node').length,
               circles: document.querySelectorAll('#graph-view svg circle.node').length,
               squares: document.querySelectorAll('#graph-view svg rect.node').length,
               links: document.querySelectorAll('#graph-view svg path.link').length,
               columns: document.querySelectorAll('#graph-view svg .col-label').length,
               count: document.getElementById('edge-count').textContent};
const node = i => document.querySelector('#graph-view svg .node[data-index="' + i + '"]');
const hovered = node(HOVER);
hovered.dispatchEvent(new MouseEvent('mouseenter', {clientX: 100, clientY: 100}));
const tip = document.getElementById('tooltip');
facts.tipShown = !tip.hidden;
facts.tipLabel = tip.querySelector('.node-label').textContent;
facts.tipContexts = tip.querySelectorAll('.ctx').length;
facts.tipMarks = [...tip.querySelectorAll('.ctx .mark')].map(m => m.textContent);
facts.tipMarkup = tip.querySelectorAll('img, b, script').length;
hovered.dispatchEvent(new MouseEvent('mouseleave'));
facts.tipHidden = tip.hidden;
const on = () => [...document.querySelectorAll('#graph-view svg .node.on')].map(e => Number(e.dataset.index)).sort((a, b) => a - b);
node(PIN).dispatchEvent(new MouseEvent('click', {bubbles: true}));
facts.pinned = document.querySelector('#graph-view svg.graph').classList.contains('pinned');
facts.on = on();
facts.onLinks = document.querySelectorAll('#graph-view svg .link.on').length;
facts.panel = document.getElementById('node-panel').textContent;
const slider = document.getElementById('threshold');
slider.value = 50;
slider.dispatchEvent(new Event('input'));
facts.shownAtHalf = document.querySelectorAll('#graph-view svg .link:not(.off)').length;
facts.onAtHalf = on();
document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));
facts.unpinned = !document.querySelector('#graph-view svg.graph').classList.contains('pinned') && on().length === 0;
facts.scripts = document.scripts.length;
facts.pwned = window.__pwned === undefined ? null : window.__pwned;
return facts;
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_graph_page_works_in_chromium(page_64, tmp_path):
    g, path = page_64
    errors, outside, _ = load_in_chromium(path, tmp_path / "profile0", settle=0.5)  # the report's own check
    assert errors == [] and outside == [], (errors, outside)
    ids = [n["node_id"] for n in g["nodes"]]
    kinds = [n["feature_type"] for n in g["nodes"]]
    hover = next(k for k, n in enumerate(g["nodes"]) if n["clerp"] == LABEL)
    # pin a feature with both inputs and outputs: the paths through it go both ways
    sources, targets = {l["source"] for l in g["links"]}, {l["target"] for l in g["links"]}
    pin = next(k for k, i in enumerate(ids) if kinds[k] == "cross layer transcoder" and i in sources and i in targets)
    expression = INTERACT.replace("HOVER", str(hover)).replace("PIN", str(pin))
    errors, outside, facts = browse(path, tmp_path / "profile", expression)
    assert errors == [] and outside == [], (errors, outside)
    assert facts["ready"] == "1" and facts["svgs"] == 1
    assert facts["nodes"] == len(g["nodes"])  # one SVG element per node
    assert facts["circles"] == kinds.count("cross layer transcoder")
    assert facts["squares"] == kinds.count("mlp reconstruction error")
    assert facts["links"] == len(g["links"]) and facts["count"] == f"{len(g['links'])} of {len(g['links'])} edges shown"
    assert facts["columns"] == 64 and facts["rowNames"] == 4  # embeddings, layers 0 and 1, logits
    assert facts["tipShown"] and facts["tipHidden"] and facts["tipLabel"] == LABEL  # text, not markup
    assert facts["tipContexts"] == 2 and facts["tipMarks"] == [HOSTILE[3], " tok" + str(hover)]
    assert facts["tipMarkup"] == 0
    expected = paths_through(g, ids[pin])
    assert facts["pinned"] and [ids[i] for i in facts["on"]] == [i for i in ids if i in expected]
    assert len(expected) > 2 and facts["onLinks"] > 0
    assert "strongest inputs" in facts["panel"] and "strongest outputs" in facts["panel"]
    top = max(abs(l["weight"]) for l in g["links"])
    cut = top * 0.25  # the slider at 50: |weight| >= max * 0.5^2
    shown = sum(abs(l["weight"]) >= cut * (1 + 1e-3) for l in g["links"])
    assert shown <= facts["shownAtHalf"] <= sum(abs(l["weight"]) >= cut * (1 - 1e-3) for l in g["links"])
    assert 0 < facts["shownAtHalf"] < len(g["links"])
    assert {ids[i] for i in facts["onAtHalf"]} <= expected  # fewer paths along fewer edges
    assert facts["unpinned"] and facts["scripts"] == 2 and facts["pwned"] is None
