"""The run directory: one folder per stage, each sealed by a manifest.

    runs/<name>/<stage>/manifest.json   written last, atomically
    runs/<name>/<stage>/...             the stage's files

A stage is *done* when its manifest exists and records the same config hash and the same
upstream manifest hashes as the run now asks for. Anything else (no manifest, a killed
run, a changed config, a rebuilt upstream stage) means the stage is built again. Because
the manifest is the last file written, and written by rename, a killed stage never looks
finished.

It only stores and checks artifacts; of ours it imports only `artifacts` (atomic writes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from .artifacts import atomic_write_json, file_sha256

MANIFEST = "manifest.json"
BUILDING = "building.json"  # what a build in progress was started for (resume or wipe)


class RunDir:
    """The folder `runs_dir/name` and the manifests of its stages."""

    def __init__(self, runs_dir: str | os.PathLike, name: str):
        self.root = Path(runs_dir) / name

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest(self, stage: str) -> dict | None:
        """The stage's manifest, or None if the stage never finished."""
        path = self.stage_dir(stage) / MANIFEST
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def manifest_hash(self, stage: str) -> str | None:
        """Hash of the manifest file itself: downstream stages record it, so a rebuilt
        upstream stage (new creation time, new files) invalidates them."""
        path = self.stage_dir(stage) / MANIFEST
        return file_sha256(path)[:16] if path.exists() else None

    def is_done(self, stage: str, config_hash: str, upstream: dict[str, str]) -> bool:
        found = self.manifest(stage)
        return (
            found is not None
            and found.get("config_hash") == config_hash
            and found.get("upstream") == upstream
        )

    def begin(self, stage: str, *, config_hash: str, upstream: dict[str, str],
              resumable: bool = False) -> Path:
        """Prepare the stage folder for a build. The old manifest goes first, so a kill
        from here on leaves the stage undone. A resumable stage (checkpoints) keeps its
        files only if they were made for this same config and upstream; anything else
        starts from an empty folder, so a changed config never resumes a stale build."""
        folder = self.stage_dir(stage)
        manifest, building = folder / MANIFEST, folder / BUILDING
        if manifest.exists():
            manifest.unlink()
        wanted = {"config_hash": config_hash, "upstream": upstream}
        same = building.exists() and json.loads(building.read_text()) == wanted
        if folder.exists() and not (resumable and same):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(building, wanted)
        return folder

    def seal(self, stage: str, *, config: dict, config_hash: str, upstream: dict[str, str],
             version: str, summary: dict, started: float) -> dict:
        """Write the manifest, last: it lists every file of the stage with its size."""
        folder = self.stage_dir(stage)
        files = {
            str(p.relative_to(folder)): p.stat().st_size
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, BUILDING) and not p.name.endswith(".tmp")
        }
        manifest = {
            "stage": stage,
            "config": config,
            "config_hash": config_hash,
            "upstream": upstream,
            "package_version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_id": uuid.uuid4().hex,  # two builds in one second still differ
            "seconds": round(time.time() - started, 3),
            "files": files,
            "summary": summary,
        }
        atomic_write_json(folder / MANIFEST, manifest)
        (folder / BUILDING).unlink(missing_ok=True)
        return manifest
