import dataclasses
import json

import numpy as np
import torch
import pytest

from tinycourse.config import ConfigError, DataConfig, apply_overrides, preset
from tinycourse.pipeline import Run, status
from tinycourse.corpus.shards import Shards
from tinycourse.corpus.tokenizer import load_tokenizer

SEP = "<|endoftext|>"
DATA_STAGES = ["tokenizer", "shards"]


@pytest.fixture
def cfg(tmp_path, stories):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{s} Story {i}.\n{SEP}\n" for i, s in enumerate(stories * 3)))
    base = preset("tiny")
    return dataclasses.replace(base, data=DataConfig(source=str(corpus), val_fraction=0.1),
                               tokenizer=dataclasses.replace(base.tokenizer, vocab_size=300))


def make_run(cfg, tmp_path, **kw):
    return Run(cfg, name="t", runs_dir=tmp_path / "runs", log=lambda line: None, **kw)


def test_shards_stage_builds_tokenizer_first_and_writes_manifests(cfg, tmp_path):
    run = make_run(cfg, tmp_path)
    shards = run.shards()
    assert isinstance(shards, Shards)
    for stage_name in ("tokenizer", "shards"):
        manifest = json.loads((run.stage_dir(stage_name) / "manifest.json").read_text())
        assert manifest["stage"] == stage_name and manifest["package_version"]
        assert manifest["files"] and all(size > 0 for size in manifest["files"].values())
    assert set(json.loads((run.stage_dir("shards") / "manifest.json").read_text())["upstream"]) == {"tokenizer"}
    train, val = shards.tokens("train"), shards.tokens("val")
    assert shards.meta["splits"]["train"]["stories"] + shards.meta["splits"]["val"]["stories"] == 300
    assert train[0] == shards.start_id and int(train.max()) < shards.vocab_size
    tok = load_tokenizer(run.stage_dir("tokenizer"))
    assert shards.meta["tokenizer_hash"] == tok.hash and len(val) > 0


def test_reuse_and_rebuild_rules(cfg, tmp_path):
    lines = []
    Run(cfg, name="t", runs_dir=tmp_path / "runs", log=lines.append).run(DATA_STAGES)
    before = (tmp_path / "runs/t/shards/manifest.json").read_text()
    lines.clear()
    Run(cfg, name="t", runs_dir=tmp_path / "runs", log=lines.append).run(DATA_STAGES)
    assert all("up to date" in line for line in lines) and len(lines) == len(DATA_STAGES)
    assert (tmp_path / "runs/t/shards/manifest.json").read_text() == before

    # a changed tokenizer config rebuilds the tokenizer and everything below it
    lines.clear()
    changed = apply_overrides(cfg, ["tokenizer.vocab_size=320"])
    Run(changed, name="t", runs_dir=tmp_path / "runs", log=lines.append).run(DATA_STAGES)
    assert any(line.startswith("[tokenizer] building") for line in lines)
    assert any(line.startswith("[shards] building") for line in lines)

    # a changed shards config rebuilds only shards
    lines.clear()
    changed2 = apply_overrides(changed, ["shards.encode_batch_stories=17"])
    Run(changed2, name="t", runs_dir=tmp_path / "runs", log=lines.append).run(DATA_STAGES)
    assert lines[0].startswith("[tokenizer] up to date") and lines[1].startswith("[shards] building")


def test_force_rebuilds_and_status_reports(cfg, tmp_path):
    run = make_run(cfg, tmp_path)
    run.run(["shards"])
    rows = {r["stage"]: r for r in status(tmp_path / "runs", "t")}
    assert rows["shards"]["state"] == "done" and rows["shards"]["summary"]["train_tokens"] > 0
    make_run(cfg, tmp_path, force={"tokenizer"}).run(["tokenizer"])
    rows = {r["stage"]: r for r in status(tmp_path / "runs", "t")}
    assert rows["tokenizer"]["state"] == "done" and rows["shards"]["state"] == "stale"
    lines = []
    Run(cfg, name="t", runs_dir=tmp_path / "runs", log=lines.append).run(["shards"])
    assert lines[-1].startswith("[shards] done")


def test_killed_stage_is_redone(cfg, tmp_path, monkeypatch):
    run = make_run(cfg, tmp_path)
    run.ensure("tokenizer")
    from tinycourse.stages import text

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(text, "write_split", killed)
    with pytest.raises(KeyboardInterrupt):
        make_run(cfg, tmp_path).ensure("shards")
    assert not (run.stage_dir("shards") / "manifest.json").exists()
    monkeypatch.undo()
    lines = []
    Run(cfg, name="t", runs_dir=tmp_path / "runs", log=lines.append).ensure("shards")
    assert lines[-1].startswith("[shards] done")


def test_remap_tokenizer_stage_reports_unk(cfg, tmp_path):
    remap = apply_overrides(cfg, ["tokenizer.kind=remap", "tokenizer.top_k=50"])
    run = make_run(remap, tmp_path)
    run.ensure("shards")
    summary = json.loads((run.stage_dir("tokenizer") / "manifest.json").read_text())["summary"]
    assert 0 < summary["unk_story_share"] <= 1 and summary["vocab_size"] == 52
    shards = Shards.open(run.stage_dir("shards"))
    train = np.asarray(shards.tokens("train"))
    assert train[0] == 51 and train.max() == 51 and (train == 0).any()


def test_unknown_stage(cfg, tmp_path):
    with pytest.raises(KeyError, match="stages are"):
        make_run(cfg, tmp_path).ensure("nope")


def test_model_stages_chain_to_a_trained_sae(cfg, tmp_path):
    small = apply_overrides(cfg, [
        "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_head=16",
        "model.d_mlp=64", "model.n_ctx=32", "train.max_steps=20", "train.eval_every=10",
        "train.checkpoint_every=10", "train.batch_size=8",
        "activations.n_tokens=3000", "activations.batch_size=16",
        "sae.d_sae=64", "sae.k=4", "sae.n_tokens=20000", "sae.batch_size=256",
        "sae.checkpoint_every=40", "sweep.values=2,8", "sweep.n_tokens=10000",
        "eval.n_tokens=2000", "eval.batch_size=8",
        "transcoders.d_sae=64", "transcoders.k=4", "transcoders.n_tokens=5120",
        "transcoders.batch_size=256", "transcoders.checkpoint_every=10",
        "transcoders.lm_batch_size=16", "transcoders.eval_tokens=1000",
    ])
    run = make_run(small, tmp_path)
    sae = run.sae()
    assert (sae.cfg.d_sae, sae.cfg.kind) == (64, "topk")
    model = run.model()
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]), names=[small.sae.hook_in])
    x = cache[small.sae.hook_in][0]
    assert sae.encode(x).count_nonzero(dim=-1).le(4).all()
    manifest = json.loads((run.stage_dir("sae") / "manifest.json").read_text())
    assert manifest["summary"]["fve"] > 0 and set(manifest["upstream"]) == {"activations"}
    lm_summary = json.loads((run.stage_dir("lm") / "manifest.json").read_text())["summary"]
    assert lm_summary["steps"] == 20 and lm_summary["tokens"] == 20 * 8 * 32
    # the lm stage measured in-context abilities (names by rule on a text corpus) and kept
    # its snapshots; the report shows the measurement
    probes = json.loads((run.stage_dir("lm") / "in_context.json").read_text())
    assert probes["source"] == "val split, names by rule" and probes["stories"] > 0
    assert probes["groups"]["name_first"]["tokens"] > 0  # "named Lily": a name by the rule
    assert sum(g["tokens"] for g in probes["groups"].values()) > 100
    assert lm_summary["induction_score"] == probes["repeated_tokens"]["best_induction"]
    assert sorted(p.name for p in (run.stage_dir("lm") / "snapshots").iterdir()) == [
        "step_000000", "step_000016", "step_000020"]

    # the rest of the chain: sweep, held-out evaluation, the report
    run.run()  # every stage, in order: sweep, eval, report
    page = run.stage_dir("report") / "index.html"
    metrics = json.loads((run.stage_dir("eval") / "metrics.json").read_text())
    assert 0 < metrics["n_tokens"] <= 2000 and metrics["sparsity"]["l0_mean"] <= 4
    assert metrics["spliced"]["ce_clean"] <= metrics["spliced"]["ce_zero_ablation"]
    sweep = json.loads((run.stage_dir("eval") / "sweep.json").read_text())
    assert all(r["l0"] <= k + 1e-6 for r, k in zip(sweep, (2, 8)))
    assert [r["name"] for r in sweep] == ["topk_d64_k2", "topk_d64_k8"]
    assert not (run.stage_dir("eval") / "ground_truth.json").exists()  # not storyworld
    assert "Sparsity sweep" in page.read_text() and "In context" in page.read_text()
    heads = json.loads((run.stage_dir("heads") / "heads.json").read_text())
    assert [r["step"] for r in heads["formation"]] == [0, 16, 20]
    assert all(len(v) == 2 and len(v[0]) == 2 for v in heads["scores"]["stories"].values())
    assert "Attention heads" in page.read_text()
    assert [e["head"] for e in heads["catalogue"]] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert set(heads["ablation"]["mean"]["delta"]) == {"all", "name_repeat", "pronoun", "closing_quote", "second_copy"}
    assert len(heads["head_detector"]["induction_head"]) == 2 and "Ablations" in page.read_text()
    assert "patching" in heads  # None when the test tokenizer has no one-token names
    capabilities = json.loads((run.stage_dir("capabilities") / "capabilities.json").read_text())
    assert [r["step"] for r in capabilities["emergence"]] == [0, 16, 20]
    assert capabilities["final"]["storyworld"]["indirect_object"]["n"] >= 30
    assert len(capabilities["items"]["storyworld"]) == capabilities["suites"]["storyworld"]
    assert "Capabilities" in page.read_text()
    assert {r["wrong"] is None for r in capabilities["items"]["storyworld"]} == {True, False}
    assert 'id="capabilities-data"' in (run.stage_dir("capabilities") / "index.html").read_text()
    assert '<a href="../capabilities/index.html">' in page.read_text()  # the report links the stage's page
    mining = capabilities["mining"]
    assert sum(mining["final"]["shares"].values()) == pytest.approx(1.0 if mining["final"]["confident_share"] else 0.0)
    assert mining["middle"]["step"] == 16 and mining["tokens"] > 0
    features = json.loads((run.stage_dir("features") / "manifest.json").read_text())["summary"]
    assert features["n_tokens"] > 0 and 0 < features["alive"] <= 64
    feature_dir = run.stage_dir("features")
    labels = json.loads((feature_dir / "labels.json").read_text())
    assert len(labels["latents"]) == 64 and set(labels["summary"]) == {"sae", "random", "pca"}
    assert "variables" not in labels and not (feature_dir / "steering.json").exists()  # not storyworld
    prompts = json.loads((feature_dir / "prompts.json").read_text())["prompts"]
    assert prompts and all(len(p["tokens"]) == len(p["ids"]) == len(p["top"]) for p in prompts)
    dashboard = (feature_dir / "index.html").read_text()
    assert f"<title>Features of run {run.root.name}: {small.sae.hook_in}</title>" in dashboard
    assert 'id="dashboard-data"' in dashboard
    assert "causal_effect_mean" in features and "detection_auroc_sae" in features
    assert '<section id="features">' in page.read_text()
    # a transcoder per MLP from one stream, each alone and all spliced in at once
    transcoders = json.loads((run.stage_dir("transcoders") / "transcoders.json").read_text())
    assert transcoders["layers"] == [0, 1] and 0 < transcoders["n_tokens"] < 1000 + 32  # whole windows
    assert [r["hook_out"] for r in transcoders["per_layer"]] == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert all(r["l0"] <= 4 and r["train"]["tokens"] == 5120 for r in transcoders["per_layer"])
    assert {"ce_loss_recovered", "kl", "ce_mean_ablation"} <= set(transcoders["replacement"])
    manifest = json.loads((run.stage_dir("transcoders") / "manifest.json").read_text())
    assert set(manifest["upstream"]) == {"shards", "lm"} and manifest["summary"]["layers"] == 2
    assert '<section id="transcoders">' in page.read_text() and "every MLP replaced" in page.read_text()
    # the features stage studied each transcoder too; the circuits stage labels its graphs from them
    for layer in (0, 1):
        tc_labels = json.loads((feature_dir / "transcoders" / f"layer_{layer}" / "labels.json").read_text())
        assert len(tc_labels["latents"]) == 64
    assert "transcoder_1" in features
    circuits = json.loads((run.stage_dir("circuits") / "circuits.json").read_text())
    assert circuits["labelled_from"] == ["features/transcoders/layer_0", "features/transcoders/layer_1"]
    for graph in circuits["graphs"]:  # the items of the shipped suites that fit this model's n_ctx
        assert (run.stage_dir("circuits") / f"{graph['slug']}.html").is_file()
        assert 0 <= graph["completeness_score"] <= 1 and graph["nodes_kept"] <= graph["features"] + 64
    heads_dir = run.stage_dir("heads")
    assert {"examples.json", "patterns.json", "index.html"} <= {p.name for p in heads_dir.iterdir()}

    # an SAE on a hook the store does not hold is refused with the fix in the message
    wrong = apply_overrides(small, ["sae.hook_in=blocks.0.hook_resid_post"])
    with pytest.raises(ConfigError, match="activations.hooks"):
        make_run(wrong, tmp_path).ensure("sae")


def test_capabilities_scores_other_models_side_by_side(cfg, tmp_path, monkeypatch):
    import tinycourse.lm.pretrained as pretrained
    from tinycourse.config import CapabilitiesConfig
    from tinycourse.pipeline import load_other_model, other_models

    monkeypatch.setattr(pretrained, "cached_pretrained", lambda: [])  # whatever this machine has cached
    micro = apply_overrides(cfg, [
        "model.smeared_keys=0", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
        "model.d_head=16", "model.d_mlp=64",
        "model.n_ctx=32", "train.max_steps=20", "train.eval_every=10", "train.checkpoint_every=10",
        "train.batch_size=8"])
    ours = make_run(micro, tmp_path)
    # a second run in the same runs folder: the same corpus and tokenizer, a wider model
    wider = apply_overrides(micro, ["model.d_model=64", "model.d_head=32", "train.seed=1"])
    theirs = Run(wider, name="wider", runs_dir=tmp_path / "runs", log=lambda line: None)
    theirs.run(["lm"])
    (tmp_path / "runs" / "unbuilt" / "lm").mkdir(parents=True)  # a run whose lm never finished
    assert other_models(ours) == [("run wider", str(theirs.root))]
    with pytest.raises(ConfigError, match="without a built lm stage"):
        load_other_model(str(tmp_path / "runs" / "unbuilt"))

    ours.run(["capabilities"])
    result = json.loads((ours.stage_dir("capabilities") / "capabilities.json").read_text())
    assert set(result["models"]) == {"this run (t)", "run wider"}
    assert result["models"]["this run (t)"] == result["final"]
    source = result["model_sources"]["run wider"]
    assert source["kind"] == "run" and source["same_tokenizer"] and source["n_ctx"] == 32
    mined = result["mining"]["models"]["run wider"]
    assert (mined["larger"], mined["smaller"]) == ("run wider", "this run")
    assert sum(mined["shares"].values()) == pytest.approx(1.0 if mined["confident_share"] else 0.0)
    # scored independently, the wider model's numbers match the table
    from tinycourse.interpret.capabilities import fits, score_tasks, shipped_suites, summarize
    model, tokenizer, _ = load_other_model(str(theirs.root))
    items = [i for i in shipped_suites()["storyworld"] if fits(i, tokenizer, model.cfg.n_ctx)]
    expected = summarize(score_tasks(model, tokenizer, items))
    assert result["models"]["run wider"]["storyworld"]["indirect_object"]["top1"] == pytest.approx(
        expected["indirect_object"]["top1"])
    page = (ours.stage_dir("capabilities") / "index.html").read_text()
    assert 'id="models"' in page and page.index("this run (t)") < page.index("run wider")

    # without local discovery, only what the config names; a bad name fails at once
    alone = dataclasses.replace(micro, capabilities=CapabilitiesConfig(local_models=False))
    assert other_models(make_run(alone, tmp_path)) == []
    named = dataclasses.replace(micro, capabilities=CapabilitiesConfig(models=("no/such-model",), local_models=False))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pretrained.PretrainedError, match="cannot be reached|not installed"):
        load_other_model(other_models(make_run(named, tmp_path))[0][1])


def test_transcoders_stage_trains_and_measures_attention_saes(cfg, tmp_path):
    from tinycourse.sae.transcoders import load_attention_saes

    micro = apply_overrides(cfg, [
        "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_head=16", "model.d_mlp=64",
        "model.n_ctx=32", "train.max_steps=10", "train.eval_every=10", "train.checkpoint_every=10",
        "train.batch_size=8", "transcoders.d_sae=64", "transcoders.k=4", "transcoders.n_tokens=2560",
        "transcoders.batch_size=256", "transcoders.checkpoint_every=5", "transcoders.lm_batch_size=16",
        "transcoders.eval_tokens=500", "transcoders.attention_saes=true"])
    run = make_run(micro, tmp_path)
    run.run(["transcoders", "report"])
    folder = run.stage_dir("transcoders")
    result = json.loads((folder / "transcoders.json").read_text())
    rows = result["attention"]["per_layer"]
    assert [(r["layer"], r["hook_in"], r["hook_out"]) for r in rows] == [
        (i, f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_attn_out") for i in (0, 1)]
    assert all(r["l0"] <= 4 and r["train"]["tokens"] == 2560 and "ce_loss_recovered" in r["alone"] for r in rows)
    assert [r["hook_out"] for r in result["per_layer"]] == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert list(load_attention_saes(folder)) == [0, 1]
    summary = json.loads((folder / "manifest.json").read_text())["summary"]
    assert len(summary["attention_fve"].split(", ")) == 2 and "attention_evaluate" in summary["seconds_by_part"]
    page = (run.stage_dir("report") / "index.html").read_text()
    assert "Attention outputs: an SAE on each" in page and "blocks.1.hook_attn_out" in page
    # the run's tags: M from the transcoders, A from attention/, both the dictionaries' encodes
    tagged, tokens = run.tagged(), torch.tensor([[1, 2, 3, 4, 5]])
    sae = load_attention_saes(folder)[1]
    _, cache = run.model().run_with_cache(tokens, names=["blocks.1.hook_attn_out"])
    assert torch.allclose(tagged["A1"](tokens), sae.encode(cache["blocks.1.hook_attn_out"]), atol=1e-5)
    assert tagged["M0N3"](tokens).shape == (1, 5)


def test_cross_layer_transcoder_in_the_transcoders_and_circuits_stages(cfg, tmp_path):
    from tinycourse.sae.crosslayer import FOLDER, load_crosslayer

    micro = apply_overrides(cfg, [
        "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_head=16", "model.d_mlp=64",
        "model.n_ctx=64", "train.max_steps=10", "train.eval_every=10", "train.checkpoint_every=10",
        "train.batch_size=8", "transcoders.d_sae=64", "transcoders.k=4", "transcoders.n_tokens=2560",
        "transcoders.batch_size=256", "transcoders.checkpoint_every=5", "transcoders.lm_batch_size=16",
        "transcoders.eval_tokens=500", "transcoders.cross_layer=true", "circuits.intervention_top=5"])
    run = make_run(micro, tmp_path)
    run.run(["transcoders", "circuits"])
    result = json.loads((run.stage_dir("transcoders") / "transcoders.json").read_text())
    assert [r["layer"] for r in result["crosslayer"]["per_layer"]] == [0, 1]
    assert "ce_loss_recovered" in result["crosslayer"]["replacement"]
    assert load_crosslayer(run.stage_dir("transcoders") / FOLDER).layers == (0, 1)
    circuits = json.loads((run.stage_dir("circuits") / "circuits.json").read_text())
    assert circuits["graphs"], "no shipped prompt fits n_ctx=64"
    for graph in circuits["graphs"]:  # both kinds scored on the same prompt and targets
        for kind in (graph, graph["crosslayer"]):
            assert 0 <= kind["replacement_score"] <= 1 and 0 <= kind["completeness_score"] <= 1
            assert kind["nodes_kept"] > 0
    means = circuits["crosslayer"]["replacement_score"]
    assert means["crosslayer"] == pytest.approx(
        sum(g["crosslayer"]["replacement_score"] for g in circuits["graphs"]) / len(circuits["graphs"]))
