import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from tinycourse.config import FeaturesConfig, ModelConfig, SAEConfig
from tinycourse.interpret.features import FORMAT_VERSION, load_features, scan_features
from tinycourse.lm.model import GPT
from tinycourse.report.dashboard import (
    _pack_floats,
    _pack_ids,
    dashboard_data,
    write_dashboard,
)
from tinycourse.report.standalone import script_json
from tinycourse.sae.model import SparseAutoencoder

from .test_page import CHROMIUM, EXTERNAL, DevTools, load_in_chromium

N_CTX, D, D_SAE = 16, 32, 48
HOOK = "blocks.1.hook_resid_pre"
CFG = FeaturesConfig(n_tokens=0, top_k=6, context=3, quantile_samples=3, reservoir=8, hist_bins=12,
                     top_logits=5, batch_size=4, checkpoint_every=2)
# token texts that would be markup, or end the data's <script>, if the page interpreted them
HOSTILE = {1: "</script><script>window.__pwned=1</script>", 2: '" onmouseover="window.__pwned=2" x="',
           3: "<img src=x onerror=window.__pwned=3>", 4: "<!--", 5: "&amp; \u2028 'quote'", 6: "\\u003c/script>"}
LABEL = "Fires on </script><b>bold</b> & \"quotes\""
SIZE_BOUND = 25_000_000  # bytes: the page of a 16,384-latent scan (top_k 16, context 8, 10,000 tokens)
SCRIPT = Path(__file__).parents[2] / "tinycourse" / "report" / "templates" / "dashboard.js"

pytestmark = pytest.mark.usefixtures("one_thread")


def token_text(i):
    return HOSTILE.get(i, f" t{i}")


# --- the features folders ----------------------------------------------------------------------

def add_effects(folder, d_sae, contexts, top_values, w_dec=None, neighbors=4, seed=0):
    """effects.safetensors as the causal stage writes it: NaN where a latent has no context."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0, 0.05, (d_sae, contexts)).astype(np.float32)
    effects[top_values[:, :contexts] <= 0] = np.nan
    n = (~np.isnan(effects)).sum(1)
    mean = np.where(n > 0, np.nan_to_num(effects).sum(1) / np.maximum(n, 1), np.nan).astype(np.float32)
    if w_dec is None:  # random neighbours (a 16K x 16K cosine matrix would be most of the test's time)
        ids = (np.arange(d_sae)[:, None] + rng.integers(1, d_sae, (d_sae, neighbors))) % d_sae
        cos = np.sort(rng.uniform(0, 1, (d_sae, neighbors)), 1)[:, ::-1]
    else:
        unit = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
        cos = unit @ unit.T
        np.fill_diagonal(cos, -np.inf)
        ids = np.argsort(-cos, axis=1)[:, :neighbors]
        cos = np.take_along_axis(cos, ids, 1)
    safetensors.numpy.save_file({"effect_contexts": effects, "effect_mean": mean, "neighbor_ids": ids.astype(np.int32),
                                 "neighbor_cos": np.ascontiguousarray(cos, dtype=np.float32)},
                                folder / "effects.safetensors")


def add_labels(folder, latents, variable=True):
    entries = [{"latent": i, "label": LABEL if i == latents[0] else f"label of {i}", "tokens": [1, 2, 7],
                "detection_auroc": 0.5 + i / 200, "simulation_r": None if i % 2 else 0.3,
                **({"variable": "inside_quote" if i == latents[0] else None, "variable_auroc": 0.9} if variable else {})}
               for i in latents]
    summary = {name: {"n": len(latents), "detection_auroc_mean": m, "detection_auroc_median": m + 0.01,
                      "simulation_r_mean": m - 0.4, "simulation_r_median": m - 0.39}
               for name, m in (("sae", 0.8), ("random", 0.55), ("pca", 0.6))}
    (folder / "labels.json").write_text(json.dumps({"method": "top-token", "n_build_tokens": 1000,
                                                     "n_score_tokens": 1000, "latents": entries, "summary": summary}))


def add_prompts(folder, d_sae, n=2, length=12, seed=0):
    rng = np.random.default_rng(seed)
    prompts = []
    for k in range(n):
        ids = rng.integers(1, 64, length).tolist()
        top = [[[int(l), float(rng.uniform(0.1, 3))] for l in rng.choice(d_sae, rng.integers(0, 4), replace=False)]
               for _ in ids]
        prompts.append({"text": "".join(token_text(i) for i in ids), "tokens": [token_text(i) for i in ids],
                        "ids": ids, "top": top})
    (folder / "prompts.json").write_text(json.dumps({"prompts": prompts}))


@pytest.fixture
def real_folder(tmp_path, random_shards):
    """A real scan (random GPT and SAE on random shards) with synthetic effects, labels, prompts."""
    shards = random_shards(tmp_path / "shards", train_tokens=500, val_tokens=700)
    model = GPT(ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                            d_vocab=64, init_std=0.3)).eval()
    sae = SparseAutoencoder(SAEConfig(kind="relu", hook_in=HOOK, d_sae=D_SAE, k=4), d_in=D).eval()
    with torch.no_grad():  # a few latents that never fire
        sae.b_enc[:3] = -1e4
    folder = tmp_path / "features"
    scan_features(model, sae, shards, CFG, folder, progress=False, log=lambda _: None)
    top = load_features(folder)["top_values"].numpy()
    add_effects(folder, D_SAE, 4, top, w_dec=sae.W_dec.detach().numpy())
    add_labels(folder, list(range(5, 30)))
    add_prompts(folder, D_SAE)
    return folder


def synthetic_folder(folder, d_sae, *, vocab=10_000, top_k=16, context=8, quantiles=4, bins=60,
                     top_logits=10, dla=True, seed=0):
    """features.json + features.safetensors of the right shapes, random, without a model:
    every 97th latent dead."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    width = 2 * context + 1
    dead = np.arange(d_sae) % 97 == 5
    n_active = rng.integers(1, 200_000, d_sae)
    n_active[dead] = 0
    max_active = rng.uniform(0.5, 40, d_sae).astype(np.float32)
    top_values = np.sort(rng.uniform(0, 1, (d_sae, top_k)), axis=1)[:, ::-1] * max_active[:, None]
    windows = rng.integers(0, vocab, (d_sae, top_k, width))
    windows[:, :, :2] = np.where(rng.random((d_sae, top_k, 2)) < 0.2, -1, windows[:, :, :2])  # start of the split
    q_windows = rng.integers(0, vocab, (d_sae, quantiles, width))
    hist = rng.integers(0, 5000, (d_sae, bins)) * (rng.random((d_sae, bins)) < 0.5)
    for array in (top_values, hist):
        array[dead] = 0
    windows[dead], q_windows[dead] = -1, -1
    tensors = {
        "top_values": top_values.astype(np.float32), "top_positions": rng.integers(0, 10**6, (d_sae, top_k)),
        "top_windows": windows.astype(np.int32),
        "quantile_levels": ((np.arange(quantiles) + 0.5) / quantiles).astype(np.float32),
        "quantile_values": (rng.uniform(0, 1, (d_sae, quantiles)) * max_active[:, None] * ~dead[:, None]).astype(np.float32),
        "quantile_positions": rng.integers(0, 10**6, (d_sae, quantiles)), "quantile_windows": q_windows.astype(np.int32),
        "hist_counts": hist.astype(np.int32), "hist_edges": np.logspace(-3, 3, bins + 1).astype(np.float32),
        "density": (n_active / 10**6).astype(np.float32), "n_active": n_active.astype(np.int32),
        "mean_active": (max_active / 3 * ~dead).astype(np.float32), "max_active": max_active * ~dead,
    }
    if dla:
        tensors.update({
            "dla_boost_ids": rng.integers(0, vocab, (d_sae, top_logits)).astype(np.int32),
            "dla_boost_values": np.sort(rng.uniform(0, 2, (d_sae, top_logits)), 1)[:, ::-1].astype(np.float32),
            "dla_suppress_ids": rng.integers(0, vocab, (d_sae, top_logits)).astype(np.int32),
            "dla_suppress_values": -np.sort(rng.uniform(0, 2, (d_sae, top_logits)), 1)[:, ::-1].astype(np.float32),
            "dla_hist_counts": rng.multinomial(vocab, np.ones(bins) / bins, d_sae).astype(np.int32),
            "dla_hist_edges": np.linspace(-3, 3, bins + 1).astype(np.float32)})
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    safetensors.numpy.save_file(tensors, folder / "features.safetensors", metadata={"format": str(FORMAT_VERSION)})
    index = {"format_version": FORMAT_VERSION, "hook_in": HOOK, "hook_out": HOOK, "is_transcoder": False,
             "d_sae": d_sae, "split": "val", "n_tokens": 10**6, "alive": int((~dead).sum()), "dead": int(dead.sum()),
             "mean_density": float(tensors["density"].mean()), "norm": "layernorm",
             "config": {"top_k": top_k, "context": context, "quantile_samples": quantiles, "hist_bins": bins},
             "dla": {"skipped": None if dla else "blocks.0.ln2.hook_normalized is not in the residual stream"}}
    (folder / "features.json").write_text(json.dumps(index))
    return folder


# --- reading the page back ---------------------------------------------------------------------

def blob(page):
    """The page's data, parsed from its <script type="application/json">."""
    match = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(match.group(1))


def unpack(p):
    """The script's decoding, in numpy: the test that the encodings round-trip."""
    raw = base64.b64decode(p["b"])
    if p["t"] == "f2":
        return (np.frombuffer(raw, "<f2").astype(np.float64) / 2.0 ** p["k"]).reshape(p["s"])
    a = np.frombuffer(raw, {"u1": "<u1", "u2": "<u2", "u4": "<u4", "i4": "<i4"}[p["t"]]).astype(np.int64)
    if p.get("p"):
        a = np.where(a == {"u1": 255, "u2": 65535}[p["t"]], -1, a)
    return a.reshape(p["s"])


def close(a, b, rel=1e-3):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert (np.isnan(a) == np.isnan(b)).all()
    ok = ~np.isnan(a)
    assert np.allclose(a[ok], b[ok], rtol=rel, atol=0), np.abs(a[ok] - b[ok]).max()


# --- the page ----------------------------------------------------------------------------------

def test_page_holds_every_latent_in_one_escaped_blob(real_folder):
    path = write_dashboard(real_folder, token_text=token_text, title="Dashboard <of> run", contexts=4)
    assert path == real_folder / "index.html"
    page = path.read_text(encoding="utf-8")
    data = blob(page)
    feats = load_features(real_folder)
    assert data["d_sae"] == D_SAE and data["contexts"] == 4
    for name, p in data["arrays"].items():
        assert p["s"][0] == D_SAE, name  # every array has a row for every latent
    assert (unpack(data["arrays"]["top_windows"]) == feats["top_windows"][:, :4].numpy()).all()
    assert (unpack(data["arrays"]["quantile_windows"]) == feats["quantile_windows"].numpy()).all()
    assert (unpack(data["arrays"]["dla_boost_ids"]) == feats["dla_boost_ids"].numpy()).all()
    assert (unpack(data["arrays"]["n_active"]) == feats["n_active"].numpy()).all()
    for name in ("top_values", "density", "max_active", "hist_counts", "dla_suppress_values"):
        expected = feats[name].numpy()[:, :4] if name == "top_values" else feats[name].numpy()
        close(unpack(data["arrays"][name]), expected)
    effects = safetensors.numpy.load_file(real_folder / "effects.safetensors")
    close(unpack(data["arrays"]["effect_contexts"]), effects["effect_contexts"])  # NaN where no context
    assert np.isnan(unpack(data["arrays"]["effect_mean"])[:3]).all()  # the three dead latents
    # the vocabulary once, id -> text, hostile text intact in the data ...
    for i, text in HOSTILE.items():
        assert data["vocab"][i] == text
    assert data["labels"]["text"][5] == LABEL and data["labels"]["text"][4] is None
    assert data["labels"]["variable"][5] == "inside_quote"
    assert len(data["prompts"]) == 2
    # ... and never markup in the page: the blob and the script are the only <script>s
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "<!--" not in page and "<b>bold" not in page
    assert "<title>Dashboard &lt;of&gt; run</title>" in page
    assert SCRIPT.read_text(encoding="utf-8").rstrip() in page  # Jinja included the script verbatim
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:5]
    for url in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page):
        assert url.startswith("#"), url
    # the label summary is rendered by the template
    assert 'id="labels"' in page and "top-token" in page and "0.55" in page
    assert 'id="prompts"' in page and 'data-key="variable"' in page and 'data-key="boosts"' in page


def test_script_json_cannot_close_its_element():
    text = script_json({"a": "</script><!-- <script>", "b": "&amp;", "c": float("nan"), "d": [np.float32(1.5)]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- <script>", "b": "&amp;", "c": None, "d": [1.5]}


def test_compact_encodings_round_trip():
    rng = np.random.default_rng(0)
    values = np.concatenate([10.0 ** rng.uniform(-7, 6, 1000), -10.0 ** rng.uniform(-3, 2, 100), [0.0, np.nan]])
    packed = _pack_floats(values)
    assert packed["t"] == "f2"
    # three significant digits everywhere above the largest magnitude * 1e-9
    big = np.abs(values) > np.nanmax(np.abs(values)) * 1e-9
    close(unpack(packed)[big], values[big], rel=1e-3)
    counts = rng.integers(0, 10**9, (5, 7))  # counts past float16's 65504 keep three digits too
    close(unpack(_pack_floats(counts)), counts, rel=1e-3)
    for top, kind in ((200, "u1"), (60_000, "u2"), (100_000, "i4")):
        ids = rng.integers(-1, top, (3, 4, 5))
        assert _pack_ids(ids)["t"] == kind and (unpack(_pack_ids(ids)) == ids).all()


def test_missing_optional_files_leave_their_parts_out(tmp_path):
    folder = synthetic_folder(tmp_path / "f", 30, vocab=500, top_k=6, context=3, dla=False)
    page = write_dashboard(folder, tmp_path / "bare.html", token_text=token_text).read_text()
    data = blob(page)
    assert data["labels"] is None and data["prompts"] is None
    assert not data["has_effects"] and not data["has_neighbors"] and not data["has_dla"]
    assert not any(name.startswith(("effect", "neighbor", "label", "dla")) for name in data["arrays"])
    for part in ('id="prompts"', 'id="labels"', 'data-key="label"', 'data-key="boosts"', 'data-key="variable"'):
        assert part not in page, part
    assert 'data-key="fires"' in page  # the table's top tokens come from the contexts instead
    assert data["dla_skipped"].endswith("not in the residual stream")
    add_effects(folder, 30, 4, np.ones((30, 6)))
    data = blob(write_dashboard(folder, tmp_path / "effects.html", token_text=token_text, contexts=3).read_text())
    assert data["has_effects"] and data["has_neighbors"] and data["arrays"]["effect_contexts"]["s"] == [30, 3]
    add_labels(folder, [1, 2], variable=False)
    page = write_dashboard(folder, tmp_path / "labels.html", token_text=token_text).read_text()
    assert 'data-key="label"' in page and 'data-key="variable"' not in page
    # prompts as interpret.effects.prompt_latents gives them: ids, no token texts
    (folder / "prompts.json").write_text(json.dumps({"prompts": [{"ids": [3, 9], "top": [[[4, 1.23456]], []]}]}))
    prompts = blob(write_dashboard(folder, tmp_path / "p.html", token_text=token_text).read_text())["prompts"]
    assert prompts == [{"text": HOSTILE[3] + " t9", "tokens": [HOSTILE[3], " t9"], "top": [[[4, 1.23]], []]}]


def test_no_scan_says_to_run_the_features_stage(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        write_dashboard(tmp_path, token_text=token_text)
    message = str(error.value)
    assert "features.json" in message and "run the features stage" in message and "\n" not in message


def test_mismatched_effects_are_refused(tmp_path):
    folder = synthetic_folder(tmp_path / "f", 30, vocab=500, top_k=6, context=3)
    add_effects(folder, 20, 4, np.ones((20, 6)))
    with pytest.raises(ValueError, match="for 20 latents but the scan has 30"):
        dashboard_data(folder, token_text=token_text)


@pytest.fixture(scope="module")
def page_16k(tmp_path_factory):
    """The dashboard of a synthetic scan of 16,384 latents, top_k 16, context 8, a 10,000-token
    vocabulary, 8 contexts drawn, with DLA, effects and labels for half the latents."""
    d_sae = 16_384
    folder = synthetic_folder(tmp_path_factory.mktemp("f16k"), d_sae)
    add_effects(folder, d_sae, 8, np.ones((d_sae, 16)), neighbors=5)
    add_labels(folder, list(range(0, d_sae, 2)))
    start = time.perf_counter()
    path = write_dashboard(folder, token_text=lambda i: f" tok{i}", contexts=8)
    return path, time.perf_counter() - start


def test_page_of_16k_latents_stays_small(page_16k):
    """Under SIZE_BOUND bytes, by the compact encodings (float16, uint16 ids, base64;
    see report/dashboard.py)."""
    path, seconds = page_16k
    size = path.stat().st_size
    print(f"\n16K-latent dashboard: {size:,} bytes, written in {seconds:.1f} s")
    assert size < SIZE_BOUND, size
    assert blob(path.read_text())["arrays"]["top_windows"]["s"] == [16_384, 8, 17]


# --- in a real browser ---------------------------------------------------------------------------

def browse(path, profile, expression, settle=0.5):
    """Like test_page.load_in_chromium, but evaluates `expression` (an async function's body,
    so it may click, wait and return facts) on the loaded page: (errors, outside requests, facts)."""
    browser = DevTools(CHROMIUM, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        url = path.resolve().as_uri()
        browser.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in browser.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            browser.pump(0.2)
        browser.pump(settle)
        result = browser.send("Runtime.evaluate", {
            "expression": f"(async () => {{ const wait = ms => new Promise(r => setTimeout(r, ms)); {expression} }})()",
            "returnByValue": True, "awaitPromise": True}, session=session, timeout=60)
        browser.pump(0.2)
    finally:
        browser.close()
    if "exceptionDetails" in result:
        raise AssertionError(result["exceptionDetails"])
    ours = [e for e in browser.events if e.get("sessionId") == session]
    errors = [e["params"]["exceptionDetails"].get("exception", {}).get("description") or e["params"]["exceptionDetails"].get("text")
              for e in ours if e.get("method") == "Runtime.exceptionThrown"]
    errors += [str(e["params"].get("args")) for e in ours
               if e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert")]
    errors += [e["params"]["entry"].get("text") for e in ours
               if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
    requests = [e["params"]["request"]["url"] for e in ours if e.get("method") == "Network.requestWillBeSent"]
    assert url in requests
    return errors, [u for u in requests if u != url and not u.startswith("data:")], result["result"]["value"]


INTERACT = """
const rows = () => [...document.querySelectorAll('#latent-table tbody tr')];
const facts = {ready: document.body.dataset.ready, rows: rows().length, count: document.getElementById('count').textContent,
               dead: document.querySelectorAll('#latent-table tr.dead').length};
document.querySelector('th[data-key="id"]').click();
facts.firstById = rows()[0].dataset.latent;
rows().find(r => r.dataset.latent === '5').click();
await wait(100);
facts.title = document.getElementById('panel-title').textContent;
facts.label = document.querySelector('#panel .label').textContent;
facts.contexts = document.querySelectorAll('#top-contexts .ctx').length;
facts.effects = document.querySelectorAll('#top-contexts .eff').length;
facts.centres = document.querySelectorAll('#top-contexts .act').length;
facts.quantiles = document.querySelectorAll('#quantiles .q').length;
facts.bars = document.querySelectorAll('#panel svg.hist rect.bar').length;
facts.histograms = document.querySelectorAll('#panel svg.hist').length;
facts.logitRows = document.querySelectorAll('#panel table.logits tbody tr').length;
facts.panelText = document.getElementById('panel').textContent;
const neighbor = document.querySelector('#neighbors a');
facts.neighbors = document.querySelectorAll('#neighbors a').length;
facts.neighborTarget = neighbor.getAttribute('href');
neighbor.click();
await wait(100);
facts.afterNeighbor = document.getElementById('panel-title').textContent;
const search = document.getElementById('search');
search.value = 'label of 1';
search.dispatchEvent(new Event('input'));
facts.searched = rows().map(r => r.dataset.latent);
search.value = 'onerror';  // a token's text
search.dispatchEvent(new Event('input'));
facts.byToken = rows().length;
facts.byTokenAll = rows().every(r => r.textContent.includes('onerror'));
search.value = '';
search.dispatchEvent(new Event('input'));
document.getElementById('hide-dead').click();
facts.alive = rows().length;
const token = document.querySelector('#prompt-tokens .tok');
facts.promptTokens = document.querySelectorAll('#prompt-tokens .tok').length;
facts.prompts = document.querySelectorAll('#prompt-select option').length;
for (const t of document.querySelectorAll('#prompt-tokens .tok')) {
  t.dispatchEvent(new MouseEvent('mouseenter'));
  if (document.querySelectorAll('#prompt-latents a').length) break;
}
facts.firing = document.querySelectorAll('#prompt-latents a').length;
facts.scripts = document.scripts.length;
facts.pwned = window.__pwned === undefined ? null : window.__pwned;
return facts;
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_dashboard_works_in_chromium(real_folder, tmp_path):
    path = write_dashboard(real_folder, token_text=token_text, contexts=4)
    errors, outside, _ = load_in_chromium(path, tmp_path / "profile0", settle=0.5)  # the report's own check
    assert errors == [] and outside == [], (errors, outside)
    errors, outside, facts = browse(path, tmp_path / "profile", INTERACT)
    assert errors == [], errors
    assert outside == [], outside
    assert facts["ready"] == "1" and facts["rows"] == D_SAE  # the script built the whole table
    assert facts["count"] == f"{D_SAE} of {D_SAE} latents (3 dead)" and facts["dead"] == 3
    assert facts["firstById"] == "0"
    assert facts["title"] == "Latent #5" and facts["label"] == LABEL  # text, not markup
    n_top = int((load_features(real_folder)["top_values"][5, :4] > 0).sum())
    assert facts["contexts"] == facts["centres"] == facts["effects"] == n_top > 0
    assert facts["quantiles"] >= 1 and facts["histograms"] == 2 and facts["bars"] > 0
    assert facts["logitRows"] == CFG.top_logits
    assert "inside_quote" in facts["panelText"] and "causal effect" in facts["panelText"]
    assert facts["neighbors"] == 4 and facts["afterNeighbor"] == "Latent #" + facts["neighborTarget"][2:]
    assert facts["searched"] == [str(i) for i in range(10, 20)]  # "label of 10".."19"
    assert 0 < facts["byToken"] < D_SAE and facts["byTokenAll"]
    assert facts["alive"] == D_SAE - 3
    assert facts["prompts"] == 2 and facts["promptTokens"] == 12 and facts["firing"] > 0
    assert facts["scripts"] == 2 and facts["pwned"] is None
    assert any(text in facts["panelText"] for text in HOSTILE.values())  # drawn, as text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_bare_dashboard_works_in_chromium(tmp_path):
    folder = synthetic_folder(tmp_path / "f", 250, vocab=500, top_k=6, context=3, dla=False)
    path = write_dashboard(folder, token_text=token_text)
    errors, outside, facts = browse(path, tmp_path / "profile", """
        const facts = {rows: document.querySelectorAll('#latent-table tbody tr').length};
        document.getElementById('more').click();
        facts.more = document.querySelectorAll('#latent-table tbody tr').length;
        location.hash = '#l7';
        await wait(100);
        facts.title = document.getElementById('panel-title').textContent;
        facts.note = document.getElementById('panel').textContent.includes('No logit attribution');
        location.hash = '#l5';  // dead: every 97th from 5
        await wait(100);
        facts.dead = document.getElementById('panel').textContent.includes('never fired');
        return facts;""")
    assert errors == [] and outside == [], (errors, outside)
    assert facts == {"rows": 200, "more": 250, "title": "Latent #7", "note": True, "dead": True}


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_16k_dashboard_opens_in_chromium(page_16k, tmp_path):
    path, _ = page_16k
    errors, outside, facts = browse(path, tmp_path / "profile", """
        const facts = {rows: document.querySelectorAll('#latent-table tbody tr').length,
                       count: document.getElementById('count').textContent,
                       ready: performance.now()};
        location.hash = '#l16383';
        await wait(100);
        facts.title = document.getElementById('panel-title').textContent;
        facts.contexts = document.querySelectorAll('#top-contexts .ctx').length;
        return facts;""")
    print(f"\n16K-latent dashboard ready in Chromium after {facts['ready'] / 1000:.1f} s")
    assert errors == [] and outside == [], (errors, outside)
    assert facts["rows"] == 200 and facts["count"].startswith("16,384 of 16,384 latents")
    assert facts["title"] == "Latent #16383" and facts["contexts"] == 8
