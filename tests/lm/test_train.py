"""LM training: schedule, optimizer, files, exact resumption, divergence, DDP on CPU."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tinycourse.lm.train as train_module
from tinycourse.config import ConfigError, ModelConfig, TrainConfig
from tinycourse.lm.model import GPT, load_model
from tinycourse.corpus.repeats import RepeatWindows, repeat_alphabet
from tinycourse.corpus.shards import Shards, WindowSampler
from tinycourse.lm.train import (TrainingDiverged, lr_at, make_optimizer, train_lm,
                              unigram_entropy)

VOCAB = 64
MODEL = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=VOCAB)
TRAIN = TrainConfig(batch_size=16, max_steps=40, lr=1e-2, warmup_steps=5, eval_every=10,
                    eval_batches=2, checkpoint_every=10)
REPO = Path(__file__).resolve().parents[2]


def write_shards(root: Path, seed: int = 0) -> Shards:
    """Stories of counting sequences (start, start+k, start+2k, ... mod vocab): easy to learn,
    so the loss falls within a few dozen steps."""
    rng = np.random.default_rng(seed)
    splits = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, n_tokens in (("train", 20_000), ("val", 4_000)):
        tokens: list[int] = []
        while len(tokens) < n_tokens:
            first, stride, length = rng.integers(1, VOCAB), rng.integers(1, 4), rng.integers(8, 40)
            tokens += [0] + [1 + (first - 1 + stride * i) % (VOCAB - 1) for i in range(length)]
        array = np.array(tokens, dtype=np.uint16)
        array.tofile(root / f"{split}.bin")
        splits[split] = {"tokens": len(array), "stories": int((array == 0).sum())}
    meta = {"splits": splits, "dtype": "uint16", "start_id": 0, "vocab_size": VOCAB}
    (root / "meta.json").write_text(json.dumps(meta))
    return Shards.open(root)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"))


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    model = GPT(MODEL)
    groups = make_optimizer(model, TRAIN, torch.device("cpu")).param_groups
    decayed, plain = groups
    assert decayed["weight_decay"] == TRAIN.weight_decay and plain["weight_decay"] == 0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_unigram_entropy():
    assert unigram_entropy(np.array([0, 1, 2, 3] * 5, dtype=np.uint16), 8) == pytest.approx(math.log(4))
    assert unigram_entropy(np.zeros(10, dtype=np.uint16), 8) == 0


def test_training_learns_and_writes_its_files(shards, tmp_path):
    summary = train_lm(MODEL, TRAIN, shards, tmp_path, progress=False,
                       decode=lambda ids: " ".join(map(str, ids)))
    assert summary["finished"] and summary["steps"] == 40
    assert summary["tokens"] == 40 * TRAIN.batch_size * MODEL.n_ctx
    assert summary["val_loss"] < 0.5 * summary["unigram_entropy"]
    assert summary["unigram_entropy"] == pytest.approx(unigram_entropy(shards.tokens("val"), VOCAB))
    assert summary["tokens_per_s"] > 0 and summary["dtype"] == "float32"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert [m["step"] for m in metrics if "val_loss" in m] == [10, 20, 30, 40]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 1.0
    assert metrics[0]["lr"] == pytest.approx(lr_at(0, TRAIN))

    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [10] * 3 + [20] * 3 + [30] * 3 + [40] * 3
    assert all(s["tokens"][0] == 0 and s["text"] for s in samples)

    model = load_model(tmp_path)  # the final model, loadable without training code
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 40
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name])


def test_resume_after_a_kill_is_bitwise_identical(shards, tmp_path):
    train_lm(MODEL, TRAIN, shards, tmp_path / "straight", progress=False)
    # killed after step 23: the last checkpoint is step 20, steps 21-23 are redone
    partial = train_lm(MODEL, TRAIN, shards, tmp_path / "resumed", progress=False, stop_after=23)
    assert not partial["finished"] and not (tmp_path / "resumed" / "model.safetensors").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 20
    assert read_metrics(tmp_path / "resumed")[-1]["step"] == 23
    train_lm(MODEL, TRAIN, shards, tmp_path / "resumed", progress=False)

    straight, resumed = load_model(tmp_path / "straight"), load_model(tmp_path / "resumed")
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in b] == list(range(1, 41))  # no duplicated lines
    assert [(m["train_loss"], m.get("val_loss")) for m in a] == [(m["train_loss"], m.get("val_loss")) for m in b]


REPEATS_MODEL = dataclasses.replace(MODEL, n_ctx=32, smeared_keys=(1,))
REPEATS = dataclasses.replace(TRAIN, repeat_share=0.25)


def test_repeat_windows_take_their_share_of_each_batch_and_are_logged_apart(shards, tmp_path, monkeypatch):
    seen, returned = [], []
    real = train_module._forward_backward

    def spy(model, batch, *args):
        seen.append(batch.clone())
        returned.append(real(model, batch, *args))
        return returned[-1]

    monkeypatch.setattr(train_module, "_forward_backward", spy)
    cfg = dataclasses.replace(REPEATS, max_steps=6, eval_every=6, checkpoint_every=6)
    train_lm(REPEATS_MODEL, cfg, shards, tmp_path, progress=False)
    sampler = WindowSampler(shards.tokens("train"), cfg.batch_size, REPEATS_MODEL.n_ctx, seed=cfg.seed)
    alphabet = repeat_alphabet(shards.tokens("train"), exclude=[shards.start_id])
    windows = RepeatWindows(alphabet, REPEATS_MODEL.n_ctx + 1, seed=cfg.seed)
    for step, batch in enumerate(seen):
        assert torch.equal(batch[:4], windows.batch(step, 4))  # 0.25 of 16 rows
        assert torch.equal(batch[4:], sampler.batch(step)[4:])  # the rest is text, as drawn
    records = read_metrics(tmp_path)
    for record, (step_loss, row_losses) in zip(records, returned, strict=True):
        # train_loss is the text rows' mean alone, repeat_loss the windows'
        assert record["train_loss"] == pytest.approx(row_losses[4:].mean().item(), rel=1e-6)
        assert record["repeat_loss"] == pytest.approx(row_losses[:4].mean().item(), rel=1e-6)
        assert step_loss == pytest.approx(row_losses.mean().item(), rel=1e-6)
    plain = train_lm(REPEATS_MODEL, dataclasses.replace(cfg, repeat_share=0.0), shards,
                     tmp_path / "plain", progress=False)
    assert "repeat_loss" not in read_metrics(tmp_path / "plain")[0] and plain["finished"]
    with pytest.raises(ConfigError, match="repeat_share"):
        dataclasses.replace(TRAIN, repeat_share=1.0)


def test_resume_with_repeat_windows_is_bitwise_identical(shards, tmp_path):
    train_lm(REPEATS_MODEL, REPEATS, shards, tmp_path / "straight", progress=False)
    train_lm(REPEATS_MODEL, REPEATS, shards, tmp_path / "resumed", progress=False, stop_after=23)
    train_lm(REPEATS_MODEL, REPEATS, shards, tmp_path / "resumed", progress=False)
    straight, resumed = load_model(tmp_path / "straight"), load_model(tmp_path / "resumed")
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert read_metrics(tmp_path / "straight") != [] and [
        (m["train_loss"], m["repeat_loss"]) for m in read_metrics(tmp_path / "straight")] == [
        (m["train_loss"], m["repeat_loss"]) for m in read_metrics(tmp_path / "resumed")]


def test_a_resumed_run_says_where_it_resumed_from(shards, tmp_path, capsys):
    train_lm(MODEL, TRAIN, shards, tmp_path, progress=False, stop_after=23)
    assert "resuming" not in capsys.readouterr().out  # a fresh start says nothing
    train_lm(MODEL, TRAIN, shards, tmp_path, progress=False)
    said = capsys.readouterr().out
    assert f"[lm] resuming from step 20 of {TRAIN.max_steps} ({tmp_path / 'checkpoint.pt'})" in said


def test_grad_accumulation_matches_one_big_batch(shards, tmp_path):
    cfg = dataclasses.replace(TRAIN, max_steps=5, eval_every=5, checkpoint_every=5)
    train_lm(MODEL, cfg, shards, tmp_path / "one", progress=False)
    train_lm(MODEL, dataclasses.replace(cfg, grad_accum=4), shards, tmp_path / "four", progress=False)
    one, four = load_model(tmp_path / "one"), load_model(tmp_path / "four")
    for name, tensor in one.state_dict().items():
        torch.testing.assert_close(four.state_dict()[name], tensor, atol=1e-5, rtol=1e-4)


def test_checkpoint_from_other_config_is_refused(shards, tmp_path):
    train_lm(MODEL, TRAIN, shards, tmp_path, progress=False, stop_after=10)
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.01 -> 0\.001"):
        train_lm(MODEL, dataclasses.replace(TRAIN, lr=1e-3), shards, tmp_path, progress=False)


def test_finished_run_is_not_trained_again(shards, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TRAIN, max_steps=10)
    summary = train_lm(MODEL, cfg, shards, tmp_path, progress=False)
    monkeypatch.setattr(train_module, "lm_row_losses", lambda *a: pytest.fail("trained again"))
    assert train_lm(MODEL, cfg, shards, tmp_path, progress=False) == summary


def test_nan_loss_stops_training_and_keeps_the_checkpoint(shards, tmp_path, monkeypatch):
    real_loss, calls = train_module.lm_row_losses, []

    def poisoned(logits, targets):  # the 15th call is step 15 (evaluations use lm_loss)
        calls.append(1)
        loss = real_loss(logits, targets)
        return loss * float("nan") if len(calls) == 15 else loss

    monkeypatch.setattr(train_module, "lm_row_losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 15 .*step 10\) is intact"):
        train_lm(MODEL, TRAIN, shards, tmp_path, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 10
    assert read_metrics(tmp_path)[-1]["step"] == 14


def test_absurd_learning_rate_diverges(shards, tmp_path):
    cfg = dataclasses.replace(TRAIN, lr=1e6, warmup_steps=1, grad_clip=0.0)
    with pytest.raises(TrainingDiverged, match="at step"):
        train_lm(dataclasses.replace(MODEL, norm="none"), cfg, shards, tmp_path, progress=False)


def test_bf16_autocast_trains_on_cpu(shards, tmp_path):
    cfg = dataclasses.replace(TRAIN, max_steps=10, dtype="bfloat16")
    summary = train_lm(MODEL, cfg, shards, tmp_path, progress=False)
    assert summary["dtype"] == "bfloat16" and summary["val_loss"] < math.log(VOCAB)


def test_vocab_smaller_than_the_shards_is_refused(shards, tmp_path):
    with pytest.raises(ConfigError, match="resolved_model"):
        train_lm(dataclasses.replace(MODEL, d_vocab=32), TRAIN, shards, tmp_path, progress=False)


def test_many_passes_over_a_small_split_warn_with_a_step_count_that_fits(shards, tmp_path):
    many = dataclasses.replace(TRAIN, max_steps=2000)  # 2000 x 16 x 16 tokens = 26 passes
    with pytest.warns(UserWarning, match=r"26 passes over the 20,0\d\d training tokens") as record:
        train_lm(MODEL, many, shards, tmp_path / "many", progress=False, stop_after=1)
    message = next(str(w.message) for w in record if "passes" in str(w.message))
    suggested = int(re.search(r"max_steps=(\d+) \(about", message).group(1))
    assert 0 < suggested < 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the suggestion itself does not warn
        train_lm(MODEL, dataclasses.replace(TRAIN, max_steps=suggested), shards, tmp_path / "fits",
                 progress=False, stop_after=1)


DDP_SCRIPT = """
import json, sys
import torch
from tinycourse.config import ModelConfig, TrainConfig
from tinycourse.corpus.repeats import RepeatWindows, repeat_alphabet
from tinycourse.corpus.shards import Shards, WindowSampler
from tinycourse.lm.train import train_lm
model_cfg = ModelConfig(**json.loads(sys.argv[1]))
train_cfg = TrainConfig(**json.loads(sys.argv[2]))
summary = train_lm(model_cfg, train_cfg, Shards.open(sys.argv[3]), sys.argv[4], progress=False)
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(__import__("os").environ["RANK"])
json.dump(summary, open(f"{sys.argv[5]}/rank{rank}.json", "w"))
"""


def test_data_parallel_on_two_cpu_processes(shards, tmp_path):
    script, out, results = tmp_path / "ddp_train.py", tmp_path / "run", tmp_path / "results"
    script.write_text(DDP_SCRIPT)
    results.mkdir()
    cfg = dataclasses.replace(TRAIN, max_steps=20)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(dataclasses.asdict(MODEL)), json.dumps(dataclasses.asdict(cfg)),
         str(shards.root), str(out), str(results)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["world_size"] == 2 and s["finished"] for s in summaries)
    assert summaries[0]["val_loss"] == summaries[1]["val_loss"]  # all-reduced
    metrics = read_metrics(out)  # one writer: exactly one line per step
    assert [m["step"] for m in metrics] == list(range(1, 21))
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 1.0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.jsonl", "model.safetensors", "samples.jsonl",
        "snapshots", "summary.json"]
    # the two processes drew different windows: a run on one process differs
    single = train_lm(MODEL, cfg, shards, tmp_path / "single", progress=False)
    assert single["val_loss"] != summaries[0]["val_loss"]
