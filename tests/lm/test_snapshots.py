"""Weights across training: log-spaced steps, written by train_lm, resumable, loadable."""

import json

import pytest
import torch

from tinycourse.lm.model import GPT, load_model
from tinycourse.lm.snapshots import list_snapshots, load_snapshot, save_snapshot, snapshot_steps
from tinycourse.lm.train import train_lm

from .test_train import MODEL, TRAIN, read_metrics, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"))


def test_steps_double_from_16_and_end_at_the_last():
    assert snapshot_steps(400) == [0, 16, 32, 64, 128, 256, 400]
    assert snapshot_steps(256) == [0, 16, 32, 64, 128, 256]
    assert snapshot_steps(10) == [0, 10]
    assert snapshot_steps(40, first=4) == [0, 4, 8, 16, 32, 40]


def test_training_keeps_the_weights_at_each_snapshot_step(shards, tmp_path):
    summary = train_lm(MODEL, TRAIN, shards, tmp_path, progress=False)
    kept = list_snapshots(tmp_path)
    assert [s.step for s in kept] == snapshot_steps(TRAIN.max_steps) == summary["snapshot_steps"]
    assert [s.tokens for s in kept] == [s.step * TRAIN.batch_size * MODEL.n_ctx for s in kept]
    # step 0 is the initial weights, the last one the final model
    torch.manual_seed(TRAIN.seed)
    initial = GPT(MODEL)
    for name, tensor in load_snapshot(tmp_path, 0).state_dict().items():
        assert torch.equal(tensor, initial.state_dict()[name]), name
    final = load_model(tmp_path)
    for name, tensor in kept[-1].load().state_dict().items():
        assert torch.equal(tensor, final.state_dict()[name]), name
    # training moved the weights between snapshots, and the loss fell along them
    w16, w32 = (load_snapshot(tmp_path, s).embed.weight for s in (16, 32))
    assert not torch.equal(w16, w32)
    losses = {m["step"]: m["train_loss"] for m in read_metrics(tmp_path)}
    assert losses[32] < losses[16]


def test_a_killed_run_resumes_to_the_same_snapshots(shards, tmp_path):
    train_lm(MODEL, TRAIN, shards, tmp_path / "straight", progress=False)
    train_lm(MODEL, TRAIN, shards, tmp_path / "resumed", progress=False, stop_after=23)
    assert [s.step for s in list_snapshots(tmp_path / "resumed")] == [0, 16]
    train_lm(MODEL, TRAIN, shards, tmp_path / "resumed", progress=False)
    for a, b in zip(list_snapshots(tmp_path / "straight"), list_snapshots(tmp_path / "resumed"),
                    strict=True):
        assert a.step == b.step
        assert (a.path / "model.safetensors").read_bytes() == (b.path / "model.safetensors").read_bytes()


def test_a_missing_step_names_the_steps_there_are(tmp_path):
    model = GPT(MODEL)
    save_snapshot(model, tmp_path, 0, 0)
    save_snapshot(model, tmp_path, 16, 8192)
    assert json.loads((tmp_path / "snapshots" / "step_000016" / "snapshot.json").read_text()) == {
        "step": 16, "tokens": 8192}
    with pytest.raises(FileNotFoundError, match=r"steps kept: 0, 16"):
        load_snapshot(tmp_path, 32)
    assert list_snapshots(tmp_path / "nothing") == []
