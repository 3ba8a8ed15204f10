"""The capabilities page (report/capabilities_page.py): every suite, capability and item in
one escaped blob, hostile prompt text kept as text, nothing fetched, the optional parts
left out when absent, and in headless Chromium the sortable tables, the filtered items,
the SVG curves beside head formation and the mining drawn without a console error."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.corpus.tasks import TaskItem
from tinycourse.interpret.capabilities import emergence, score_tasks, scores_records, summarize
from tinycourse.interpret.mining import LABELS, UNEXPLAINED, TrigramModel, compare, examples, mine, token_pieces
from tinycourse.lm.model import GPT
from tinycourse.report.capabilities_page import capabilities_page_data, write_capabilities_page

from .test_dashboard import browse
from .test_page import CHROMIUM, EXTERNAL, load_in_chromium

VOCAB, N_CTX = 40, 64
SCRIPT = Path(__file__).parents[2] / "tinycourse" / "report" / "templates" / "capabilities_page.js"
# prompt text that would be markup, or end a <script>, if the page interpreted it
HOSTILE = ("</script><script>window.__pwned=1</script>", '" onmouseover="window.__pwned=2" x="',
           "<img src=x onerror=window.__pwned=3>", "<!-- & \u2028 'quote'")
PIECES = {1: "</script><b>piece</b>", 2: " He", 3: '"', 4: "<img src=x onerror=window.__pwned=4>"}

pytestmark = pytest.mark.usefixtures("one_thread")


class Tokenizer:
    """Characters as ids (id 0 the start token); a few ids decode to hostile text."""
    start_id = 0

    def encode(self, text):
        return [1 + ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids):
        return PIECES.get(ids[0], f" w{ids[0]}")


@dataclass
class Snapshot:  # the shape of lm.snapshots.Snapshot, with the model in memory
    step: int
    tokens: int
    model: GPT

    def load(self):
        return self.model


def model(seed):
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layers=1, d_model=24, n_heads=2, d_head=12, d_mlp=32, n_ctx=N_CTX,
                           d_vocab=VOCAB, init_std=0.5)).eval()


def suites():
    """Two small suites, hostile text in prompts and answers."""
    def items(source, n):
        out = []
        for i in range(n):
            hostile = HOSTILE[i % len(HOSTILE)]
            out += [TaskItem(f"Once upon a {i}", " time", None, "ngram", source),
                    TaskItem(f"{hostile} Tom saw Mia. Mia gave it to", " Tom", " Mia", "indirect_object", source),
                    TaskItem(f"The girl {i} said", " she", " he", "pronouns", source)]
        out.append(TaskItem('He said, "<b>bold</b> & more', '"', None, "closing_quote", source))
        return out
    return {"storyworld": items("storyworld", 5), "tinystories": items("tinystories", 4)}


def write_capabilities_json(folder, with_models=True):
    """capabilities.json in the shape the capabilities stage writes it (pipeline.build_capabilities),
    computed by the package on small random models."""
    tokenizer, final = Tokenizer(), model(0)
    shipped = suites()
    scores = {kind: score_tasks(final, tokenizer, items) for kind, items in shipped.items()}
    snapshots = [Snapshot(0, 0, model(1)), Snapshot(4, 2048, model(2)), Snapshot(8, 4096, model(3)),
                 Snapshot(16, 8192, final)]
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(1, VOCAB, (6, 24), generator=gen)
    windows[:, 1::6], windows[:, 3::6] = 1, 4  # hostile pieces all through the mined text
    pieces = token_pieces(tokenizer, VOCAB)
    trigrams = TrigramModel.count(torch.randint(1, VOCAB, (5000,), generator=gen).numpy(), VOCAB)

    def record(mining):
        return {"confident_share": float(mining.confident.mean()), "shares": mining.shares(),
                "examples": {label: examples(mining, pieces, label, n=8) for label in (*LABELS, UNEXPLAINED)}}

    mined, earlier = (mine(m, windows, pieces, trigrams, threshold=0.05) for m in (final, snapshots[2].model))
    result = {
        "suites": {kind: len(items) for kind, items in shipped.items()},
        "skipped": {kind: 0 for kind in shipped},
        "final": {kind: summarize(s) for kind, s in scores.items()},
        "items": {kind: [{**r, "wrong": i.wrong} for r, i in zip(scores_records(s), shipped[kind])]
                  for kind, s in scores.items()},
        "emergence": emergence(snapshots, tokenizer, shipped),
        "mining": {"tokens": int(windows[:, 1:].numel()), "threshold": 0.05, "final": record(mined),
                   "middle": {"step": 8, "tokens": 4096, **record(earlier), "gained_by_final": compare(mined, earlier)}},
    }
    if with_models:
        other = model(7)
        result["models"] = {"ours: tiny": result["final"],
                            "another <model>": {kind: summarize(score_tasks(other, tokenizer, items))
                                                for kind, items in shipped.items()}}
        result["model_sources"] = {"another <model>": {"kind": "run", "parameters": 1234, "n_ctx": 64,
                                                       "same_tokenizer": True}}
        theirs = mine(other, windows, pieces, trigrams, threshold=0.05)
        result["mining"]["models"] = {"another <model>": {
            "confident_share": float(theirs.confident.mean()), "shares": theirs.shares(),
            "larger": "another <model>", "smaller": "this run", "gained_by_larger": compare(theirs, mined)}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "capabilities.json").write_text(json.dumps(result))
    return result


def write_formation(run):
    """heads/heads.json with only what the page reads of it: formation across the snapshots."""
    (run / "heads").mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "tokens": t, "best_previous_token": p, "best_induction": i}
            for s, t, p, i in ((0, 0, 0.1, 0.05), (4, 2048, 0.3, 0.1), (8, 4096, 0.6, 0.2), (16, 8192, 0.9, 0.5))]
    (run / "heads" / "heads.json").write_text(json.dumps({"formation": rows}))
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_capabilities_json(root / "capabilities")
    write_formation(root)
    return root


def blob(page):
    match = re.search(r'<script type="application/json" id="capabilities-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(match.group(1))


def test_page_holds_every_capability_and_item_in_one_escaped_blob(run):
    folder = run / "capabilities"
    path = write_capabilities_page(folder, title="Capabilities <of> run")
    assert path == folder / "index.html"
    page = path.read_text(encoding="utf-8")
    data = blob(page)
    result = json.loads((folder / "capabilities.json").read_text())
    assert list(data["suites"]) == ["storyworld", "tinystories"]
    for kind, table in result["final"].items():
        caps = data["suites"][kind]["capabilities"]
        assert [c["name"] for c in caps] == list(table) == ["ngram", "closing_quote", "pronouns", "indirect_object"]
        for c in caps:
            row = table[c["name"]]
            assert c["n"] == row["n"] == len(c["items"]) == sum(r["capability"] == c["name"] for r in result["items"][kind])
            assert c["top1"] == row["top1"] and c["top1_ci"] == row["top1_ci"] and c["mean_prob"] == row["mean_prob"]
            assert c["mean_logit_diff"] == row["mean_logit_diff"]
        items = [x for c in caps for x in c["items"]]
        assert sorted(x["prob"] for x in items) == sorted(r["prob"] for r in result["items"][kind])
        assert {x["wrong"] for x in items} == {None, " Mia", " he"}
        assert f'<table class="wide capability-table" data-suite="{kind}">' in page
    assert [r["tokens"] for r in data["emergence"]] == [2048, 4096, 8192]  # step 0 off the log axis
    assert [r["tokens"] for r in data["formation"]] == [2048, 4096, 8192]
    assert set(data["mining"]["final"]["shares"]) == {*LABELS, UNEXPLAINED}
    assert list(data["models"]) == ["ours: tiny", "another <model>"]
    # hostile text intact in the data ...
    prompts = {x["prompt"] for s in data["suites"].values() for c in s["capabilities"] for x in c["items"]}
    assert all(any(h in p for p in prompts) for h in HOSTILE)
    mined = {e["context"] + e["token"] for es in data["mining"]["final"]["examples"].values() for e in es}
    assert any(PIECES[1] in t for t in mined)
    # ... and never markup in the page: the blob and the script are its only <script>s
    assert page.count("</script>") == 2 and page.count("<script") == 2
    assert "<img" not in page and "<b>bold" not in page and "window.__pwned=1</script>" not in page
    assert "<title>Capabilities &lt;of&gt; run</title>" in page
    assert SCRIPT.read_text(encoding="utf-8").rstrip() in page  # Jinja included the script verbatim
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:5]
    for url in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page):
        assert url.startswith(("#", "data:")), url
    for anchor in ("suites", "items", "emergence", "mining", "models"):
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page


def test_without_the_optional_parts_they_are_left_out(tmp_path):
    result = write_capabilities_json(tmp_path / "capabilities", with_models=False)  # no heads/ beside it
    del result["mining"]
    result["emergence"] = result["emergence"][:1]  # step 0 alone: nothing to draw
    (tmp_path / "capabilities" / "capabilities.json").write_text(json.dumps(result))
    page = write_capabilities_page(tmp_path / "capabilities", tmp_path / "bare.html").read_text(encoding="utf-8")
    data = blob(page)
    assert data["formation"] is None and data["mining"] is None and data["models"] == {} and data["emergence"] == []
    for anchor in ("emergence", "mining", "models"):
        assert f'id="{anchor}"' not in page
    assert 'id="suites"' in page and 'id="items"' in page


def test_no_capabilities_json_says_to_run_the_capabilities_stage(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        write_capabilities_page(tmp_path)
    message = str(error.value)
    assert "capabilities.json" in message and "run the capabilities stage" in message and "\n" not in message


def test_items_that_disagree_with_the_table_are_refused(tmp_path):
    result = write_capabilities_json(tmp_path / "capabilities", with_models=False)
    result["items"]["storyworld"] = result["items"]["storyworld"][1:]
    (tmp_path / "capabilities" / "capabilities.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="scores 5 storyworld items of ngram but lists 4"):
        capabilities_page_data(tmp_path / "capabilities")


INTERACT = """
const table = s => document.querySelector('table.capability-table[data-suite="' + s + '"]');
const names = s => [...table(s).tBodies[0].rows].map(r => r.dataset.capability);
const itemRows = () => document.querySelectorAll('#item-table tbody tr').length;
const facts = {ready: document.body.dataset.ready, tables: document.querySelectorAll('table.capability-table').length,
               storyworld: names('storyworld'), tinystories: names('tinystories'),
               headers: table('storyworld').tHead.rows[0].cells.length,
               openAtLoad: document.getElementById('items-title').textContent, itemsAtLoad: itemRows()};
table('storyworld').querySelector('th[data-key="mean_prob"]').click();  // largest first
facts.byProb = names('storyworld');
table('storyworld').querySelector('th[data-key="mean_prob"]').click();
facts.byProbUp = names('storyworld');
location.hash = '#tinystories/indirect_object';
await wait(300);
facts.title = document.getElementById('items-title').textContent;
facts.items = itemRows();
facts.selected = document.querySelectorAll('table.capability-table tr.selected').length;
facts.itemText = document.getElementById('item-table').textContent;
const filter = document.getElementById('item-filter');
filter.value = 'failures'; filter.dispatchEvent(new Event('change'));
facts.failures = itemRows();
facts.count = document.getElementById('item-count').textContent;
filter.value = 'prefers-wrong'; filter.dispatchEvent(new Event('change'));
facts.prefersWrong = itemRows();
filter.value = 'all'; filter.dispatchEvent(new Event('change'));
const search = document.getElementById('item-search');
search.value = 'onerror'; search.dispatchEvent(new Event('input'));
facts.searched = itemRows();
search.value = ''; search.dispatchEvent(new Event('input'));
document.querySelector('#item-table th[data-key="prob"]').click();
facts.itemProbs = [...document.querySelectorAll('#item-table tbody tr td:nth-child(5)')].map(td => td.textContent);
table('storyworld').tBodies[0].rows[0].click();
await wait(300);
facts.clicked = document.getElementById('items-title').textContent;
facts.charts = document.querySelectorAll('#emergence-body svg.chart').length;
facts.lines = [...document.querySelectorAll('#emergence-body svg.chart')].map(s => s.querySelectorAll('polyline').length);
facts.dots = [...document.querySelectorAll('#emergence-body svg.chart')].map(s => s.querySelectorAll('circle').length);
const measure = document.getElementById('emergence-measure');
measure.value = 'top1'; measure.dispatchEvent(new Event('change'));
facts.top1Charts = document.querySelectorAll('#emergence-body svg.chart').length;
facts.miningRows = [...document.querySelectorAll('#mining-table tbody tr')].map(r => r.dataset.rule || 'total');
facts.miningHeaders = document.querySelectorAll('#mining-table thead th').length;
facts.rule = document.getElementById('mining-rule').value;
facts.examples = document.querySelectorAll('#mining-examples .ex').length;
const rule = document.getElementById('mining-rule');
rule.value = 'induction'; rule.dispatchEvent(new Event('change'));
facts.inductionExamples = document.querySelectorAll('#mining-examples .ex').length;
const source = document.getElementById('mining-model');
source.value = 'middle'; source.dispatchEvent(new Event('change'));
facts.middleExamples = document.querySelectorAll('#mining-examples .ex').length;
facts.miningText = document.getElementById('mining').textContent;
facts.modelTables = document.querySelectorAll('#models-body table').length;
facts.modelHeaders = [...document.querySelectorAll('#models-body table thead th')].map(th => th.textContent);
facts.scripts = document.scripts.length;
facts.pwned = window.__pwned === undefined ? null : window.__pwned;
return facts;
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_capabilities_page_works_in_chromium(run, tmp_path):
    path = write_capabilities_page(run / "capabilities")
    errors, outside, facts = load_in_chromium(path, tmp_path / "profile0", settle=0.5)  # the report's own check
    assert errors == [] and outside == [], (errors, outside)
    assert facts["sections"] == ["suites", "items", "emergence", "mining", "models"]
    errors, outside, facts = browse(path, tmp_path / "profile", INTERACT, settle=0.5)
    assert errors == [], errors
    assert outside == [], outside
    data = blob(path.read_text(encoding="utf-8"))
    caps = {kind: s["capabilities"] for kind, s in data["suites"].items()}
    assert facts["ready"] == "1" and facts["tables"] == 2
    assert facts["storyworld"] == facts["tinystories"] == ["ngram", "closing_quote", "pronouns", "indirect_object"]
    assert facts["headers"] == 1 + len(data["columns"])
    assert facts["openAtLoad"] == "storyworld / ngram" and facts["itemsAtLoad"] == 5
    by_prob = [c["name"] for c in sorted(caps["storyworld"], key=lambda c: -c["mean_prob"])]
    assert facts["byProb"] == by_prob and facts["byProbUp"] == by_prob[::-1]
    ioi = next(c for c in caps["tinystories"] if c["name"] == "indirect_object")["items"]
    assert facts["title"] == "tinystories / indirect_object" and facts["items"] == len(ioi) == 4
    assert facts["selected"] == 1
    assert all(h in facts["itemText"] for h in HOSTILE) and " Mia" in facts["itemText"]
    assert facts["failures"] == sum(x["rank"] > 0 for x in ioi) and facts["count"].endswith(f"of {len(ioi)} items")
    assert facts["prefersWrong"] == sum(x["logit_diff"] < 0 for x in ioi)
    assert facts["searched"] == sum("onerror" in x["prompt"] for x in ioi) == 1
    probs = sorted((x["prob"] for x in ioi), reverse=True)
    assert [float(p) for p in facts["itemProbs"]] == pytest.approx(probs, rel=1e-2)
    assert facts["clicked"] == "storyworld / " + by_prob[-1]  # the sorted table's first row: smallest first
    assert facts["charts"] == facts["top1Charts"] == 3  # a suite each, and head formation
    assert facts["lines"] == [4, 4, 2] and facts["dots"] == [12, 12, 6]  # mean log p of every capability, 3 snapshots
    assert facts["miningRows"] == [*LABELS, UNEXPLAINED, "total"] and facts["miningHeaders"] == 4
    final, middle = data["mining"]["final"]["examples"], data["mining"]["middle"]["examples"]
    assert facts["rule"] == UNEXPLAINED and facts["examples"] == len(final[UNEXPLAINED]) > 0
    assert facts["inductionExamples"] == len(final["induction"])
    assert facts["middleExamples"] == len(middle["induction"])
    assert "step 8" in facts["miningText"] and "gained after it" in facts["miningText"]
    # a table per suite, then the mining of the model that shares the run's tokenizer
    assert facts["modelTables"] == 3 and facts["modelHeaders"][:3] == ["capability", "ours: tiny", "another <model>"]
    assert facts["modelHeaders"][-2:] == ["another <model>", "another <model> gains over this run"]
    assert facts["scripts"] == 2 and facts["pwned"] is None


def test_the_reports_capabilities_section_links_the_page_once_it_exists(tmp_path):
    from tinycourse.report import capabilities as section
    from tinycourse.report.page import render

    write_capabilities_json(tmp_path / "capabilities", with_models=False)
    manifests = {"capabilities": {"summary": {"items": 1}}}
    link = '<a href="../capabilities/index.html">'
    assert link not in render("capabilities.html", anchor="capabilities", **section.gather(tmp_path, manifests, True))
    write_capabilities_page(tmp_path / "capabilities")
    assert link in render("capabilities.html", anchor="capabilities", **section.gather(tmp_path, manifests, True))
