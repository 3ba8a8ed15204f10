import dataclasses
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import numpy as np
import pytest

from tinycourse.cli import main
from tinycourse.config import DataConfig, ModelConfig, SAEConfig, preset
from tinycourse.lm.model import GPT, save_model
from tinycourse.pipeline import Run
from tinycourse.report.page import (
    format_headline,
    headline,
    infer_preset,
    stage_states,
    write_report,
)
from tinycourse.artifacts import atomic_write_json
from tinycourse.rundir import RunDir
from tinycourse.sae.model import SparseAutoencoder, save_sae

HOOK = "blocks.1.hook_resid_pre"
SECTIONS = ("corpus", "lm", "activations", "sae", "sweep", "eval")
# anything that would make a browser fetch: an attribute, a CSS url()/@import, an ES import,
# a fetch() of an http(s):// or protocol-relative // address
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|srcset|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)"""
    r"""|(?:\bimport\s*\(?\s*["'](?:https?:)?//)|(?:\bfrom\s*["'](?:https?:)?//)"""
    r"""|(?:\bfetch\(\s*["'`](?:https?:)?//)""", re.IGNORECASE)


# --- a small run, every stage written the way its stage writes it, without training -------

def _begin(run_dir, stage):
    folder = run_dir.stage_dir(stage)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _seal(run_dir, stage, summary, config=None, needs=()):
    run_dir.seal(stage, config=config or {stage: {}}, config_hash=f"{stage}hash",
                 upstream={n: run_dir.manifest_hash(n) for n in needs if run_dir.manifest(n)},
                 version="0.1.0",
                 summary=summary, started=time.time())


def _lm_stage(run_dir, vocab):
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=64, d_vocab=vocab)
    folder = _begin(run_dir, "lm")
    save_model(GPT(cfg), folder)
    lines = [{"step": s, "tokens": 512 * s, "train_loss": 6.0 - s / 10} for s in range(1, 21)]
    for line in lines[9::10]:
        line["val_loss"] = line["train_loss"] + 0.1
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    samples = [{"step": s, "tokens": [0, 5], "text": f"Once upon a time <b>{s}</b> & more"} for s in (10, 20)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(m) + "\n" for m in samples))
    summary = {"steps": 20, "tokens": 10240, "train_loss": 4.0, "val_loss": 4.1,
               "unigram_entropy": 4.5, "parameters": 40000, "tokens_per_s": 1000.0, "wall_time_s": 10.0}
    _seal(run_dir, "lm", summary, {"model": dataclasses.asdict(cfg), "train": {"max_steps": 20}},
          needs=("tokenizer", "shards"))


def _activation_stage(run_dir, n=600, width=32):
    folder = _begin(run_dir, "activations")
    (folder / f"{HOOK}.bin").write_bytes(np.random.randn(n, width).astype(np.float16).tobytes())
    store = {"hooks": [HOOK], "widths": {HOOK: width}, "dtype": "float16", "n_tokens": n,
             "n_windows": 10, "bytes": n * width * 2, "split": "train", "exclude_start": True,
             "mean_sq_norm": {HOOK: 32.0}, "scales": {HOOK: 1.0}, "tokens_per_s": 5000.0}
    atomic_write_json(folder / "store.json", store)
    _seal(run_dir, "activations", {"n_tokens": n, "dtype": "float16", "bytes": n * width * 2},
          needs=("shards", "lm"))


def _sae_stages(run_dir, width=32):
    folder = _begin(run_dir, "sae")
    save_sae(SparseAutoencoder(SAEConfig(kind="topk", hook_in=HOOK, d_sae=64, k=4), width), folder)
    lines = [{"step": s, "tokens": 256 * s, "fve": 0.5 + s / 100, "l0": 4.0, "dead_fraction": 0.0}
             for s in range(1, 31)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    _seal(run_dir, "sae", {"fve": 0.8, "l0": 4.0, "dead_fraction": 0.0, "mse": 3.0, "tokens": 7680},
          needs=("activations",))
    folder = _begin(run_dir, "sweep")
    for k in (2, 8):
        member = save_sae(SparseAutoencoder(SAEConfig(kind="topk", hook_in=HOOK, d_sae=64, k=k), width),
                          folder / f"topk_d64_k{k}")
        atomic_write_json(member / "summary.json", {"name": member.name, "l0": float(k),
                                                    "fve": 0.6 + k / 40, "dead_fraction": 0.01, "tokens": 7680})
    _seal(run_dir, "sweep", {"members": 2, "swept": "k", "l0": "2.0, 8.0", "fve": "0.650, 0.800"},
          needs=("activations",))


def _eval_stage(run_dir):
    folder = _begin(run_dir, "eval")
    edges = np.linspace(-5, 0, 11).tolist()
    metrics = {
        "n_tokens": 5000, "hook_in": HOOK, "hook_out": HOOK, "kind": "topk", "d_sae": 64,
        "reconstruction": {"mse": 3.1, "nmse": 0.21, "fve": 0.79, "cosine": 0.9,
                           "fve_per_channel": np.linspace(0.5, 0.95, 32).tolist()},
        "sparsity": {"l0_mean": 4.0, "l0_hist": {"counts": [0, 0, 10, 0], "edges": [2, 3, 4, 5, 6]},
                     "dead_fraction": 0.03125, "dense_fraction": 0.0,
                     "density_log10_hist": {"counts": [2, 0, 1, 3, 8, 20, 15, 10, 3, 0], "edges": edges},
                     "n_dead": 2, "n_dense": 0},
        "spliced": {"ce_clean": 4.1, "ce_spliced": 4.3, "ce_zero_ablation": 6.0, "ce_mean_ablation": 5.5,
                    "ce_loss_recovered": 0.8947, "ce_loss_recovered_vs_mean": 0.857, "kl_spliced": 0.21},
        "baselines": [{"name": "pca", "coefficients": 4, "fve": 0.5, "ce_loss_recovered": 0.6},
                      {"name": "random-directions", "coefficients": 4, "fve": 0.1, "ce_loss_recovered": 0.2}],
    }
    atomic_write_json(folder / "metrics.json", metrics)
    rows = [{"variable": "inside_quote", "positives": 120,
             "sae": {"auroc": 0.97, "f1": 0.81, "latent": 12}, "pca": {"auroc": 0.7, "f1": 0.4},
             "random": {"auroc": 0.52, "f1": 0.1}},
            {"variable": "topic=ocean", "positives": 40,
             "sae": {"auroc": 0.91, "f1": 0.66, "latent": 3}, "pca": {"auroc": 0.64, "f1": 0.3},
             "random": {"auroc": 0.5, "f1": 0.05}}]
    atomic_write_json(folder / "ground_truth.json",
                      {"rows": rows, "mean": {"sae": 0.94, "pca": 0.67, "random": 0.51},
                       "mean_f1": {"sae": 0.73, "pca": 0.35, "random": 0.08},
                       "chance": {"sae": 0.5, "pca": 0.49, "random": 0.51},
                       "chance_f1": {"sae": 0.04, "pca": 0.05, "random": 0.04},
                       "stories": {"selection": [80, 82], "report": [81, 83]}, "n_stories": 4,
                       "n_tokens": 900, "coefficients": 4, "pca_components": 32, "random_directions": 64})
    _seal(run_dir, "eval", {"fve": 0.79}, needs=("shards", "lm", "sae", "sweep"))


def build_run(root, stages=SECTIONS):
    """runs/<name> with the data stages built for real (a second or two) and the rest written
    as their stages write them (random weights: the report only reads files)."""
    base = preset("tiny")
    cfg = dataclasses.replace(base, data=DataConfig(source="storyworld", max_stories=80, val_fraction=0.1),
                              tokenizer=dataclasses.replace(base.tokenizer, vocab_size=300))
    Run(cfg, name=root.name, runs_dir=root.parent, log=lambda line: None).run(["tokenizer", "shards"])
    run_dir = RunDir(root.parent, root.name)
    if "lm" in stages:
        _lm_stage(run_dir, vocab=300)
    if "activations" in stages:
        _activation_stage(run_dir)
    if "sae" in stages:
        _sae_stages(run_dir)
    if "eval" in stages:
        _eval_stage(run_dir)
    return root


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = build_run(tmp_path_factory.mktemp("runs") / "full")
    interactive = write_report(root, root / "report" / "index.html")
    static = write_report(root, root / "report" / "static.html", interactive=False)
    return root, interactive, static


def section_ids(page):
    return set(re.findall(r'<section id="([^"]+)"', page))


# --- the page ---------------------------------------------------------------------------------

def test_report_has_a_section_per_stage(full_run):
    _, interactive, static = full_run
    for path in (interactive, static):
        page = path.read_text()
        assert section_ids(page) == set(SECTIONS)
        for text in ("Generated stories at step 20", "CE loss recovered", "Baselines", "random-directions",
                     "inside_quote", "Ground truth", "FVE against L0", "config hash", "tinycourse 0.1.0"):
            assert text in page, text
        assert "&lt;b&gt;20&lt;/b&gt; &amp; more" in page  # sample text is escaped, not markup
        assert "One validation story through the model" in page and "not drawn" not in page
    # corpus, LM loss, norms, SAE curves, sweep, eval; the static page draws attention too
    assert interactive.read_text().count("data:image/png;base64,") == 6
    assert static.read_text().count("data:image/png;base64,") == 7
    assert interactive.read_text().count("CircuitsVis.render(") == 2  # one per layer
    assert "<script" not in static.read_text()  # static: no JavaScript at all


def test_sections_follow_the_stages_that_exist(tmp_path):
    root = build_run(tmp_path / "part", stages=())
    page = write_report(root, tmp_path / "part.html").read_text()
    assert section_ids(page) == {"corpus"}
    _lm_stage(RunDir(tmp_path, "part"), vocab=300)
    page = write_report(root, tmp_path / "part.html").read_text()
    assert section_ids(page) == {"corpus", "lm"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No stage has finished yet" in write_report(empty, tmp_path / "empty.html").read_text()


def test_no_external_urls(full_run):
    _, interactive, static = full_run
    for path in (interactive, static):
        page = path.read_text()
        assert not EXTERNAL.findall(page), EXTERNAL.findall(page)[:5]
        assert "sourceMappingURL" not in page
        for url in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page):
            assert url.startswith(("#", "data:")), url


def test_pattern_catches_what_it_should():
    for bad in ('<script src="https://unpkg.com/x.js">', "<link href='//cdn.x/y.css'>",
                'import { render } from "https://unpkg.com/circuitsvis/dist/cdn/esm.js"',
                "@import url(x.css)", "background: url('https://x/y.png')", 'fetch("http://x")'):
        assert EXTERNAL.search(bad), bad
    assert not EXTERNAL.search('<a href="#lm">LM</a> see https://example.org in prose')


def test_headline_and_cli(full_run, capsys):
    root, _, _ = full_run
    figures = headline(root)
    assert figures["lm_val_loss"] == 4.1 and figures["sae_fve"] == 0.79  # eval's figures win
    assert figures["ce_loss_recovered"] == 0.8947 and figures["ground_truth_auroc_sae"] == 0.94
    text = format_headline(figures)
    assert "CE loss recovered 0.895" in text and "sae 0.940" in text
    out = root / "cli.html"
    assert main(["report", "--runs-dir", str(root.parent), "--name", root.name, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "FVE 0.790" in printed and out.is_file()
    assert main(["report", "--runs-dir", str(root.parent), "--name", "nope"]) == 2


def test_provenance_preset_and_staleness(full_run):
    root, interactive, _ = full_run
    manifests = {"lm": {"config": {"train": {**dataclasses.asdict(preset("tiny").train), "max_steps": 600}},
                        "upstream": {}}}
    assert infer_preset(manifests) == ("tiny", ["train.max_steps=600"])
    manifests["lm"]["config"]["train"]["max_steps"] = preset("tiny").train.max_steps
    assert infer_preset(manifests) == ("tiny", [])
    page = interactive.read_text()
    assert "preset <b>tiny (inferred)</b>" in page and "tokenizer.vocab_size=300" in page
    from tinycourse.report.page import stage_manifests

    assert set(stage_states(root, stage_manifests(root)).values()) == {"done"}


def test_stale_stage_is_marked(tmp_path):
    root = build_run(tmp_path / "s", stages=())
    manifest = root / "tokenizer" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"build_id"', '"rebuilt": 1, "build_id"'))
    from tinycourse.report.page import stage_manifests

    assert stage_states(root, stage_manifests(root)) == {"tokenizer": "done", "shards": "stale"}
    assert '<span class="state stale">stale</span>' in write_report(root, tmp_path / "s.html").read_text()


# --- in a real browser: no console error, no network request -----------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: it reads
    NUL-terminated JSON commands on fd 3 and answers on fd 4), so no port, no websocket
    package, nothing but the browser."""

    def __init__(self, binary, profile):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # numbered 10 and up, so "3<&N 4>&M" below never reads from a fd it just overwrote
        # (bash: dash refuses fd numbers above 9)
        to_chrome_r, from_chrome_w = (self._high(fd) for fd in (to_chrome_r, from_chrome_w))
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--mute-audio", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4, where Chromium looks for them
        script = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", script, "bash", *args], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._id, self.events = b"", 0, []

    @staticmethod
    def _high(fd):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return high

    def send(self, method, params=None, session=None, timeout=30.0):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)

    def pump(self, seconds):
        """Collect events for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.events.extend(self._read(deadline, block=False))

    def _read(self, deadline, block=True):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if block:
                raise TimeoutError("Chromium did not answer in time")
            return []
        ready, _, _ = select.select([self._from_chrome], [], [], min(remaining, 0.1))
        if ready:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def load_in_chromium(path, profile, settle=1.5):
    """Open `path`; return (console errors and exceptions, requests other than the page and
    data: URIs, facts about the rendered page)."""
    browser = DevTools(CHROMIUM, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        url = path.resolve().as_uri()
        browser.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 20
        while not any(e.get("method") == "Page.loadEventFired" for e in browser.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            browser.pump(0.2)
        browser.pump(settle)  # React renders after load
        facts = browser.send("Runtime.evaluate", {"returnByValue": True, "expression": """({
            images: document.images.length,
            broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
            widgets: document.querySelectorAll('.cv').length,
            rendered: [...document.querySelectorAll('.cv')].filter(d => d.childElementCount > 0).length,
            sections: [...document.querySelectorAll('section')].map(s => s.id),
        })"""}, session=session)["result"]["value"]
    finally:
        browser.close()
    ours = [e for e in browser.events if e.get("sessionId") == session]
    errors = []
    for event in ours:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description")
                          or params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    requests = [e["params"]["request"]["url"] for e in ours if e.get("method") == "Network.requestWillBeSent"]
    outside = [u for u in requests if u != url and not u.startswith("data:")]
    assert url in requests  # the network log works: it saw the page itself
    return errors, outside, facts


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_report_renders_in_chromium(full_run, tmp_path):
    _, interactive, _ = full_run
    errors, outside, facts = load_in_chromium(interactive, tmp_path / "profile")
    assert errors == [], errors
    assert outside == [], outside
    assert facts["images"] == 6 and facts["broken"] == 0
    assert facts["widgets"] == 2 and facts["rendered"] == 2  # one CircuitsVis panel per layer, drawn
    assert set(facts["sections"]) == set(SECTIONS)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_browser_check_catches_errors_and_requests(tmp_path):
    """The check itself: a page that logs an error and asks the network is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='https://example.invalid/x.png'>"
                   "<script>console.error('boom'); undefined_function();</script></body></html>")
    errors, outside, _ = load_in_chromium(bad, tmp_path / "profile", settle=0.5)
    assert any("boom" in e for e in errors) and any("undefined_function" in e for e in errors)
    assert outside == ["https://example.invalid/x.png"]
