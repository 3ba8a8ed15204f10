"""The head catalogue page (report/heads_page.py): every head in one escaped blob, hostile
token text kept as text, nothing fetched, the optional files' parts left out when absent,
and in headless Chromium the sortable table, the open head's examples and the CircuitsVis
widgets drawn without a console error."""

import json
import re
from pathlib import Path

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.catalogue import catalogue
from tinycourse.interpret.head_examples import MEASURES, example_records, head_examples, prompt_patterns
from tinycourse.lm.model import GPT
from tinycourse.report.bundle import circuitsvis_bundle
from tinycourse.report.heads_page import heads_page_data, write_heads_page

from .test_dashboard import browse
from .test_page import CHROMIUM, EXTERNAL, load_in_chromium

N_LAYERS, N_HEADS, VOCAB, N_CTX = 2, 3, 24, 24
SCRIPT = Path(__file__).parents[2] / "tinycourse" / "report" / "templates" / "heads_page.js"
# token texts that would be markup, or end a <script>, if the page interpreted them
HOSTILE = {1: "</script><script>window.__pwned=1</script>", 2: '" onmouseover="window.__pwned=2" x="',
           3: "<img src=x onerror=window.__pwned=3>", 4: "<!--", 5: "&amp; \u2028 'quote'"}
GROUPS = ("all", "name_repeat", "pronoun", "closing_quote", "second_copy")

pytestmark = pytest.mark.usefixtures("one_thread")


class Tokenizer:
    """Characters as ids, a few of them hostile text."""
    start_id = 0

    def encode(self, text):
        return [1 + ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids):
        return HOSTILE.get(ids[0], f" w{ids[0]}")


def grid(seed, low=0.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(N_LAYERS, N_HEADS, generator=gen)).tolist()


def write_heads_json(folder):
    """heads.json in the shape the heads stage writes it (pipeline.build_heads), random."""
    names = ("previous_token", "current_token", "start_token", "duplicate_token", "induction", "pivot",
             "distance", "entropy")
    stories = {name: grid(i) for i, name in enumerate(names)}
    stories["pivot"][0][1] = None  # a score no query had a target for
    repeated = {name: grid(10 + i) for i, name in enumerate(names)}
    ablation = {mode: {"mode": mode, "clean": {g: 1.0 + i / 10 for i, g in enumerate(GROUPS)},
                       "delta": {g: grid(20 + i, -0.1, 1.2) for i, g in enumerate(GROUPS)}}
                for mode in ("zero", "mean")}
    ablation["mean"]["clean"]["closing_quote"] = None
    copying = grid(30)
    entries = catalogue({**stories, "induction": repeated["induction"]}, copying, ablation["mean"]["delta"])
    entries[0]["description"] += " </script><b>bold</b> & more"
    heads = {"scores": {"stories": stories, "repeated_tokens": repeated}, "score_names": list(names),
             "prompts": {"stories": "8 stories <test>", "repeated_tokens": "4 x [start] + R + R"},
             "copying": copying, "ablation": ablation, "catalogue": entries,
             "patching": {"template": "<A> gave <B> a ball", "pairs": 4, "tokens": ["a", "b"],
                          "heads": {"recovered": grid(40, -1, 1)}, "residual": {"recovered": [[0.5]], "hooks": ["x"]}},
             "patching_repeated_name": {
                 "template": "a <girl> named {name}.", "pairs": 4, "tokens": ["a", "Zu", "bo", "."], "replaced": [1, 2],
                 "example": {"clean": "a girl named Zubo.", "corrupted": "a girl named Kora."},
                 "heads": {"recovered": grid(41, -1, 1)},
                 "residual": {"recovered": [[0.0, 1.0, 0.2, 0.1]] * 3, "hooks": ["blocks.0.hook_resid_pre",
                                                                              "blocks.1.hook_resid_pre",
                                                                              "blocks.1.hook_resid_post"]}},
             "composition": {}, "formation": []}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heads.json").write_text(json.dumps(heads))
    return heads


@pytest.fixture
def heads_folder(tmp_path):
    """heads.json, and examples.json and patterns.json computed by the package on a random model."""
    folder = tmp_path / "heads"
    write_heads_json(folder)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=N_LAYERS, d_model=24, n_heads=N_HEADS, d_head=8, d_mlp=32, n_ctx=N_CTX,
                            d_vocab=VOCAB, init_std=0.4)).eval()
    tokenizer = Tokenizer()
    tokens = torch.randint(1, VOCAB, (10, N_CTX), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    tokens[:, 5:8] = torch.tensor([1, 2, 3])  # hostile text in every story
    examples = head_examples(model, tokens.split(4), n=5, start_id=0)
    (folder / "examples.json").write_text(json.dumps({
        "measure": "attention", "measure_text": MEASURES["attention"], "prompts": "10 random stories",
        "heads": example_records(examples, lambda i: "<start>" if i == 0 else tokenizer.decode([i]))}))
    shown = [("a story <b>", "abc.\u0001\u0002 def ghi jkl"), ("the study's prompt", "One day, Lucy")]
    (folder / "patterns.json").write_text(json.dumps({"prompts": [
        {"title": title, **prompt_patterns(model, tokenizer, text)} for title, text in shown]}))
    return folder


def blob(page):
    match = re.search(r'<script type="application/json" id="heads-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(match.group(1))


def test_page_holds_every_head_in_one_escaped_blob(heads_folder):
    path = write_heads_page(heads_folder, title="Heads <of> run")
    assert path == heads_folder / "index.html"
    page = path.read_text(encoding="utf-8")
    data = blob(page)
    assert [h["head"] for h in data["heads"]] == [f"L{l}H{h}" for l in range(N_LAYERS) for h in range(N_HEADS)]
    assert data["n_layers"] == N_LAYERS and data["n_heads"] == N_HEADS
    heads = json.loads((heads_folder / "heads.json").read_text())
    keys = [c["key"] for c in data["columns"]]
    assert keys[:8] == [f"stories.{n}" for n in heads["score_names"]]
    assert keys[8:] == ["repeated_tokens.induction", "copying", "ablation.mean.all", "ablation.mean.max", "patching",
                        "patching_repeated_name"]
    for i, h in enumerate(data["heads"]):
        layer, index = h["layer"], h["index"]
        assert len(h["values"]) == len(keys)
        assert h["values"][0] == heads["scores"]["stories"]["previous_token"][layer][index]
        assert h["values"][keys.index("copying")] == heads["copying"][layer][index]
        deltas = [heads["ablation"]["mean"]["delta"][g][layer][index] for g in GROUPS]
        assert h["values"][keys.index("ablation.mean.max")] == max(deltas)
        assert data["ablation"]["modes"]["zero"]["delta"][i] == [heads["ablation"]["zero"]["delta"][g][layer][index]
                                                                 for g in GROUPS]
        assert h["description"] == heads["catalogue"][i]["description"]
        assert h["values"][-1] == heads["patching_repeated_name"]["heads"]["recovered"][layer][index]
    assert data["heads"][1]["values"][keys.index("stories.pivot")] is None
    assert data["ablation"]["modes"]["mean"]["clean"][3] is None
    assert len(data["examples"]["heads"]) == N_LAYERS * N_HEADS
    assert all(len(h["examples"]) == 5 for h in data["examples"]["heads"])
    assert [p["title"] for p in data["patterns"]] == ["a story <b>", "the study's prompt"]
    # hostile text intact in the data ...
    texts = {t for h in data["examples"]["heads"] for x in h["examples"] for t in x["tokens"]}
    assert set(HOSTILE.values()) - {HOSTILE[4], HOSTILE[5]} <= texts
    assert HOSTILE[1] in data["patterns"][0]["tokens"]
    assert data["heads"][0]["description"].endswith("</script><b>bold</b> & more")
    # ... and never markup in the page: the bundle, the blob and the script are its <script>s
    bundle = circuitsvis_bundle()
    scripts = 3 if bundle else 2
    assert page.count("</script>") == scripts  # (React's own code holds a "<script>" string: not a tag)
    assert page.count("<script") - (bundle.count("<script") if bundle else 0) == scripts
    assert "<img" not in page and "<b>bold" not in page and "window.__pwned=1</script>" not in page
    assert "<title>Heads &lt;of&gt; run</title>" in page and "8 stories &lt;test&gt;" in page
    assert SCRIPT.read_text(encoding="utf-8").rstrip() in page  # Jinja included the script verbatim
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:5]
    assert "sourceMappingURL" not in page
    for url in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page):
        assert url.startswith(("#", "data:")), url
    assert 'id="patterns"' in page and 'href="#patterns"' in page


def test_without_the_optional_files_their_parts_are_left_out(heads_folder, tmp_path):
    (heads_folder / "examples.json").unlink()
    (heads_folder / "patterns.json").unlink()
    page = write_heads_page(heads_folder, tmp_path / "bare.html").read_text(encoding="utf-8")
    data = blob(page)
    assert data["examples"] is None and data["patterns"] == [] and not data["has_circuitsvis"]
    assert 'id="patterns"' not in page and 'id="examples"' not in page
    assert page.count("<script") == 2 and len(page) < 200_000  # no CircuitsVis bundle without patterns
    heads = json.loads((heads_folder / "heads.json").read_text())
    del heads["patching"], heads["ablation"], heads["patching_repeated_name"]
    (heads_folder / "heads.json").write_text(json.dumps(heads))
    data = heads_page_data(heads_folder)
    assert data["ablation"] is None and data["patching_template"] is None
    assert data["patching_repeated_name_template"] is None and "repeated-name patching" not in data["facts"]
    assert [c["key"] for c in data["columns"]][-2:] == ["repeated_tokens.induction", "copying"]


def test_no_heads_json_says_to_run_the_heads_stage(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        write_heads_page(tmp_path)
    message = str(error.value)
    assert "heads.json" in message and "run the heads stage" in message and "\n" not in message


def test_examples_for_other_heads_are_refused(heads_folder):
    examples = json.loads((heads_folder / "examples.json").read_text())
    examples["heads"] = examples["heads"][:2]
    (heads_folder / "examples.json").write_text(json.dumps(examples))
    with pytest.raises(ValueError, match="examples for 2 heads but heads.json has 6"):
        heads_page_data(heads_folder)


INTERACT = """
const rows = () => [...document.querySelectorAll('#head-table tbody tr')];
const facts = {ready: document.body.dataset.ready, rows: rows().length,
               headers: document.querySelectorAll('#head-table thead th').length,
               openAtLoad: document.getElementById('panel-title').textContent};
document.querySelector('th[data-key="v0"]').click();  // previous token, largest first
facts.byPrevious = rows().map(r => r.dataset.head);
document.querySelector('th[data-key="v0"]').click();
facts.byPreviousUp = rows().map(r => r.dataset.head);
document.querySelector('th[data-key="order"]').click();
facts.byOrder = rows().map(r => r.dataset.head);
rows().find(r => r.dataset.head === 'L1H2').click();
await wait(600);
facts.title = document.getElementById('panel-title').textContent;
facts.selected = document.querySelectorAll('#head-table tr.selected').length;
facts.examples = document.querySelectorAll('#examples .ex').length;
facts.queries = document.querySelectorAll('#examples .ex .q').length;
facts.keys = document.querySelectorAll('#examples .ex .k').length;
facts.ablationRows = document.querySelectorAll('#panel table.ablation tbody tr').length;
facts.panelText = document.getElementById('panel').textContent;
location.hash = '#L0H0';
await wait(600);
facts.afterHash = document.getElementById('panel-title').textContent;
facts.description = document.querySelector('#panel .description').textContent;
const widgets = () => [...document.querySelectorAll('.cv')];
for (let t = 0; t < 150 && widgets().some(d => d.childElementCount === 0); t++) await wait(100);  // React draws later
facts.widgets = widgets().length;
facts.rendered = widgets().filter(d => d.childElementCount > 0).length;
facts.headWidgets = document.querySelectorAll('#head-patterns .cv').length;
facts.scripts = document.scripts.length;
facts.pwned = window.__pwned === undefined ? null : window.__pwned;
return facts;
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
@pytest.mark.skipif(circuitsvis_bundle() is None, reason="CircuitsVis is not installed")
def test_heads_page_works_in_chromium(heads_folder, tmp_path):
    path = write_heads_page(heads_folder)
    errors, outside, facts = load_in_chromium(path, tmp_path / "profile0", settle=1.0)  # the report's own check
    assert errors == [] and outside == [], (errors, outside)
    assert facts["widgets"] == 2 * N_LAYERS + 2  # each layer on two prompts, and the open head's two
    errors, outside, facts = browse(path, tmp_path / "profile", INTERACT, settle=1.0)
    assert errors == [], errors
    assert outside == [], outside
    data = blob(path.read_text(encoding="utf-8"))
    names = [h["head"] for h in data["heads"]]
    assert facts["ready"] == "1" and facts["rows"] == len(names) == N_LAYERS * N_HEADS
    assert facts["headers"] == 2 + len(data["columns"]) and facts["openAtLoad"] == "L0H0"
    by_previous = [h["head"] for h in sorted(data["heads"], key=lambda h: -h["values"][0])]
    assert facts["byPrevious"] == by_previous and facts["byPreviousUp"] == by_previous[::-1]
    assert facts["byOrder"] == names
    assert facts["title"] == "L1H2" and facts["selected"] == 1
    assert facts["examples"] == facts["queries"] == 5 and facts["keys"] == 5
    assert facts["ablationRows"] == 4  # clean and change, mean and zero
    assert "weight" in facts["panelText"] and any(t in facts["panelText"] for t in HOSTILE.values())
    assert facts["afterHash"] == "L0H0" and facts["description"].endswith("</script><b>bold</b> & more")
    assert facts["widgets"] == facts["rendered"] == 2 * N_LAYERS + 2 and facts["headWidgets"] == 2
    assert facts["scripts"] == 3 and facts["pwned"] is None


def test_the_reports_heads_section_links_the_page_once_it_exists(tmp_path):
    from tinycourse.report import heads as section
    from tinycourse.report.page import render

    write_heads_json(tmp_path / "heads")
    manifests = {"heads": {"summary": {"labelled_heads": 0}}}
    link = '<a href="../heads/index.html">'
    assert link not in render("heads.html", anchor="heads", **section.gather(tmp_path, manifests, True))
    write_heads_page(tmp_path / "heads")
    assert link in render("heads.html", anchor="heads", **section.gather(tmp_path, manifests, True))


def test_the_reports_heads_section_draws_both_kinds_of_patching(tmp_path):
    from tinycourse.report import heads as section
    from tinycourse.report.page import render

    heads = write_heads_json(tmp_path / "heads")
    context = section.gather(tmp_path, {"heads": {"summary": {}}}, True)
    assert all(context[k].startswith("data:image/png") for k in ("patching", "patching_repeated_name"))
    assert context["patching"] != context["patching_repeated_name"]
    html = render("heads.html", anchor="heads", **context)
    assert html.count("<img") == 3  # ablations, IOI patching, repeated-name patching (no formation rows)
    assert 'alt="activation patching on repeated names"' in html and "a &lt;girl&gt; named {name}." in html
    assert "a girl named Zubo." in html and "Beside the study" not in html
    del heads["patching_repeated_name"]
    (tmp_path / "heads" / "heads.json").write_text(json.dumps(heads))
    html = render("heads.html", anchor="heads", **section.gather(tmp_path, {"heads": {"summary": {}}}, True))
    assert "repeated names" not in html.split("Activation patching")[1]
