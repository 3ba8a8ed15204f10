import json
import os

import pytest

from tinycourse import rundir
from tinycourse.artifacts import atomic_write_bytes
from tinycourse.rundir import RunDir


def test_atomic_write_leaves_old_file_when_killed(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_bytes(target, b"old")

    def killed(src, dst):
        raise KeyboardInterrupt  # a kill between the temp write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_seal_lists_files_and_done_rules(tmp_path):
    run = RunDir(tmp_path, "r")
    folder = run.begin("a", config_hash="h", upstream={})
    (folder / "weights.bin").write_bytes(b"1234")
    assert run.manifest("a") is None and not run.is_done("a", "h", {})
    run.seal("a", config={"x": 1}, config_hash="h", upstream={}, version="0", summary={"n": 1},
             started=0.0)
    manifest = run.manifest("a")
    assert manifest["files"] == {"weights.bin": 4} and manifest["config"] == {"x": 1}
    assert run.is_done("a", "h", {}) and not run.is_done("a", "other", {})
    assert not run.is_done("a", "h", {"up": "zz"})


def test_kill_before_manifest_leaves_stage_undone(tmp_path, monkeypatch):
    run = RunDir(tmp_path, "r")
    run.begin("a", config_hash="h", upstream={})
    run.seal("a", config={}, config_hash="h", upstream={}, version="0", summary={}, started=0.0)
    run.begin("a", config_hash="h", upstream={})  # a rebuild starts: the old manifest goes first
    monkeypatch.setattr(rundir.os, "replace", lambda s, d: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run.seal("a", config={}, config_hash="h", upstream={}, version="0", summary={}, started=0.0)
    assert run.manifest("a") is None and not run.is_done("a", "h", {})


def test_resumable_stage_keeps_files_only_for_the_same_config(tmp_path):
    run = RunDir(tmp_path, "r")
    folder = run.begin("lm", config_hash="h", upstream={"up": "1"}, resumable=True)
    (folder / "checkpoint.pt").write_bytes(b"c")
    # killed, then rerun with the same config: the checkpoint stays for resuming
    run.begin("lm", config_hash="h", upstream={"up": "1"}, resumable=True)
    assert (folder / "checkpoint.pt").exists()
    # a changed config, or a rebuilt upstream stage, starts from an empty folder
    run.begin("lm", config_hash="other", upstream={"up": "1"}, resumable=True)
    assert not (folder / "checkpoint.pt").exists()
    (folder / "checkpoint.pt").write_bytes(b"c")
    run.begin("lm", config_hash="other", upstream={"up": "2"}, resumable=True)
    assert not (folder / "checkpoint.pt").exists()
    # a stage that is not resumable always starts empty
    (folder / "checkpoint.pt").write_bytes(b"c")
    run.begin("lm", config_hash="other", upstream={"up": "2"})
    assert not (folder / "checkpoint.pt").exists()


def test_manifest_hash_changes_when_rebuilt(tmp_path):
    run = RunDir(tmp_path, "r")
    run.begin("a", config_hash="h", upstream={})
    run.seal("a", config={}, config_hash="h", upstream={}, version="0", summary={"v": 1}, started=0)
    first = run.manifest_hash("a")
    run.begin("a", config_hash="h", upstream={})
    run.seal("a", config={}, config_hash="h", upstream={}, version="0", summary={"v": 2}, started=0)
    assert run.manifest_hash("a") != first
    assert json.loads((tmp_path / "r" / "a" / "manifest.json").read_text())["summary"] == {"v": 2}
