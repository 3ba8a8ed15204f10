"""Where the run came from, for the top of the page: its preset (given, or inferred from
the manifests with the `--set` overrides that reproduce it), the package versions, and
one row per stage (done or stale, when built, its config hash).

Rendered by templates/provenance.html.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import __version__
from ..pipeline import status
from ..rundir import RunDir


def stage_states(run_root: Path, manifests: dict[str, dict]) -> dict[str, str]:
    """done, or stale when an upstream stage was rebuilt after this one: `pipeline.status`
    for the pipeline's stages; any other stage folder by its recorded upstream hashes."""
    root = Path(run_root)
    states = {row["stage"]: row["state"] for row in status(root.parent, root.name)}
    run_dir = RunDir(root.parent, root.name)
    return {name: states.get(name) or ("done" if all(
                run_dir.manifest_hash(need) == digest
                for need, digest in m.get("upstream", {}).items()) else "stale")
            for name, m in manifests.items()}


def infer_preset(manifests: dict[str, dict]) -> tuple[str | None, list[str]]:
    """The preset whose stage configs best match the manifests, and the `--set` overrides
    that turn it into this run's config (empty: the preset exactly)."""
    from ..config import PRESETS

    best: tuple[int, str | None, list[str]] = (10**9, None, [])
    for name, cfg in PRESETS.items():
        diffs = []
        for manifest in manifests.values():
            for part, recorded in (manifest.get("config") or {}).items():
                if not dataclasses.is_dataclass(getattr(cfg, part, None)):
                    continue
                wanted = cfg.resolved_model if part == "model" else getattr(cfg, part)
                wanted = json.loads(json.dumps(dataclasses.asdict(wanted)))  # tuples -> lists, as recorded
                for key, value in recorded.items():
                    if key in wanted and wanted[key] != value:
                        shown = ",".join(map(str, value)) if isinstance(value, list) else value
                        diffs.append(f"{part}.{key}={shown}")
        diffs = sorted(set(diffs))
        if len(diffs) < best[0]:
            best = (len(diffs), name, diffs)
    return best[1], best[2]


def gather(root: Path, manifests: dict[str, dict], preset: str | None, created: str) -> dict:
    """The context of templates/provenance.html."""
    overrides: list[str] = []
    if preset is None:
        preset, overrides = infer_preset(manifests)
        preset = f"{preset} (inferred)" if preset else "unknown"
    versions = sorted({m.get("package_version") for m in manifests.values() if m.get("package_version")})
    states = stage_states(root, manifests)
    stages = [{"name": name, "state": states[name], "created": m.get("created"), "seconds": m.get("seconds"),
               "config_hash": m.get("config_hash"), "version": m.get("package_version")}
              for name, m in manifests.items()]
    return {"preset": preset, "overrides": " ".join(f"--set {o}" for o in overrides),
            "version": __version__, "built_by": versions if versions and versions != [__version__] else [],
            "created": created, "stages": stages}
