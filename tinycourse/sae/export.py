"""Export a trained SAE or transcoder in SAELens's format, and read that format back.

SAELens (6.x) loads a folder holding two files with `SAE.load_from_disk(folder)`:

    cfg.json                 the config: `architecture`, d_in, d_sae (d_out for a
                             transcoder), dtype, device, apply_b_dec_to_input,
                             normalize_activations, reshape_activations, `k` for topk, and
                             `metadata` (model_name, hook_name, hook_name_out, ...,
                             sae_lens_version, which must be >= 6 or the file is read as
                             an old pre-6 config)
    sae_weights.safetensors  W_enc (d_in, d_sae), b_enc (d_sae), W_dec (d_sae, d_out),
                             b_dec (d_out); threshold (d_sae) for JumpReLU;
                             W_skip (d_out, d_in), note the transpose, for skip transcoders

How each of our kinds maps onto SAELens's inference architectures (all exact):

    SAE         relu -> standard     topk -> topk     jumprelu -> jumprelu
                batchtopk -> jumprelu with one threshold for every latent: at inference a
                batchtopk SAE *is* a JumpReLU (SAELens saves its own batchtopk SAEs so)
    transcoder  relu -> transcoder (+ skip: skip_transcoder)
                jumprelu, batchtopk -> jumprelu_transcoder (+ skip: jumprelu_skip_transcoder)
                topk -> none: SAELens has no top-k transcoder, so it is an error

Our saved SAEs already have the input scale folded in (see `sae.py`), so the export says
`normalize_activations: "none"`: SAELens feeds raw activations, as our `load_sae` does.
The metadata also carries a `tinycourse` block (our kind, k, hooks, scales, provenance),
so `load_saelens` rebuilds exactly the module that was exported; it also reads folders
that SAELens itself wrote, for the architectures above.

This module needs neither SAELens nor the trainer: only `sae.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .. import __version__
from ..artifacts import atomic_write_bytes, atomic_write_json, file_sha256
from ..config import ConfigError, SAEConfig
from .model import CONFIG, WEIGHTS, SparseAutoencoder, load_sae

SAELENS_CONFIG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
# The config format we write is SAELens 6's (metadata block, `architecture` names).
# SAELens reads any file whose sae_lens_version is below 6.0.0-rc.0 as an old config and
# rewrites it, so this must stay >= 6.
SAELENS_FORMAT_VERSION = "6.0.0"
FORMATS = ("saelens",)

SAE_ARCHITECTURES = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu",
                     "batchtopk": "jumprelu"}
TRANSCODER_ARCHITECTURES = {  # (kind, skip connection) -> architecture
    ("relu", False): "transcoder", ("relu", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder",
    ("batchtopk", False): "jumprelu_transcoder", ("batchtopk", True): "jumprelu_skip_transcoder",
}
SUPPORTED = (
    "SAELens loads SAEs as standard (ReLU), topk, jumprelu (our batchtopk exports as one) "
    "and transcoders as transcoder, skip_transcoder, jumprelu_transcoder and "
    "jumprelu_skip_transcoder (ReLU or JumpReLU; our batchtopk exports as JumpReLU)"
)


class ExportError(ConfigError):
    """The SAE cannot be written in the asked format; the message says what can. (A
    ConfigError: the fix is a different config, and the CLI reports it as one.)"""


# --- finding the SAE ------------------------------------------------------------------

def find_sae_folder(path: str | os.PathLike) -> Path:
    """The folder of one saved SAE, from a run folder (its `sae` stage), a stage folder,
    an SAE folder or a file in one. A stage folder holding a sweep must name one member."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: pass a run folder (runs/<name>), "
                                f"its sae stage folder, or a folder holding {CONFIG}")
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    if (path / "sae").is_dir():
        return find_sae_folder(path / "sae")
    members = sorted(p.parent for p in path.glob(f"*/{CONFIG}") if (p.parent / WEIGHTS).is_file())
    if len(members) == 1:
        return members[0]
    if members:
        names = ", ".join(m.name for m in members)
        raise FileNotFoundError(f"{path} holds {len(members)} SAEs ({names}): pass one of them")
    raise FileNotFoundError(f"no saved SAE in {path}: expected {CONFIG} and {WEIGHTS} there, "
                            f"in {path / 'sae'}, or in one subfolder")


# --- writing -------------------------------------------------------------------------------

def saelens_architecture(sae: SparseAutoencoder) -> str:
    """SAELens's name for the architecture `sae` exports as; ExportError if there is none."""
    if not sae.is_transcoder:
        return SAE_ARCHITECTURES[sae.kind]
    key = (sae.kind, bool(sae.cfg.skip_connection))
    if key not in TRANSCODER_ARCHITECTURES:
        raise ExportError(
            f"a {sae.kind} transcoder{' with a skip connection' if key[1] else ''} has no "
            f"SAELens architecture: {SUPPORTED}. Train the transcoder with sae.kind=batchtopk "
            f"(same sparsity, a JumpReLU at inference) to export it.")
    return TRANSCODER_ARCHITECTURES[key]


def saelens_tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    """The state dict SAELens expects, from a folded (scales 1) module, float32."""
    if float(sae.input_scale) != 1.0 or float(sae.output_scale) != 1.0:
        raise ExportError("the SAE's input/output scales are not folded in: export a module "
                          "that save_sae wrote (load_sae), or call fold_scale() first")
    state = {name: getattr(sae, name).detach().float().cpu().contiguous()
             for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if sae.kind == "jumprelu":
        state["threshold"] = sae.threshold.detach().float().cpu().contiguous()
    elif sae.kind == "batchtopk":
        state["threshold"] = torch.full((sae.d_sae,), float(sae.inference_threshold))
    if sae.cfg.skip_connection:
        state["W_skip"] = sae.W_skip.detach().float().cpu().T.contiguous()  # SAELens: (d_out, d_in)
    return state


def saelens_config(sae: SparseAutoencoder, *, model_name: str, context_size: int | None = None,
                   dataset_path: str | None = None, extra: dict | None = None) -> dict:
    """cfg.json for SAELens's `SAE.load_from_disk`."""
    architecture = saelens_architecture(sae)
    cfg = sae.cfg
    hook_out = cfg.hook_out if sae.is_transcoder else cfg.hook_in
    metadata = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,  # not trained with SAELens
        "model_name": model_name,
        "hook_name": cfg.hook_in,
        "hook_head_index": None,
        "context_size": context_size,
        "prepend_bos": True,  # every story starts with the start token
        "dataset_path": dataset_path,
        "tinycourse": {
            "version": __version__, "kind": cfg.kind, "k": cfg.k if cfg.kind in ("topk", "batchtopk") else None,
            "hook_in": cfg.hook_in, "hook_out": hook_out, "skip_connection": cfg.skip_connection,
            "sae_config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
            **(extra or {}),
        },
    }
    config = {
        "architecture": architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not sae.is_transcoder,  # an SAE centres on b_dec; a transcoder can't
        "normalize_activations": "none",  # the input scale is folded into the weights
        "reshape_activations": "hook_z" if cfg.hook_in.endswith("hook_z") and not sae.is_transcoder else "none",
        "metadata": metadata,
    }
    if architecture == "topk":
        config["k"] = cfg.k
        config["rescale_acts_by_decoder_norm"] = False
    if sae.is_transcoder:
        config["d_out"] = sae.d_out
        metadata["hook_name_out"] = cfg.hook_out
        metadata["hook_head_index_out"] = None
    return config


def export_saelens(sae: SparseAutoencoder, out: str | os.PathLike, *, model_name: str = "tinycourse",
                   context_size: int | None = None, dataset_path: str | None = None,
                   extra: dict | None = None) -> Path:
    """Write `sae` (scales folded) to `out/` as SAELens's cfg.json + sae_weights.safetensors."""
    out = Path(out)
    config = saelens_config(sae, model_name=model_name, context_size=context_size,
                            dataset_path=dataset_path, extra=extra)
    atomic_write_bytes(out / SAELENS_WEIGHTS, save(saelens_tensors(sae)))
    atomic_write_json(out / SAELENS_CONFIG, config)  # last: a folder with a cfg.json is whole
    return out


def export_sae(run_or_path: str | os.PathLike, out: str | os.PathLike, fmt: str = "saelens") -> Path:
    """Export the SAE found at `run_or_path` (see `find_sae_folder`) to `out` in `fmt`.
    Model name, context size and data source come from the run folder when it is there."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    folder = find_sae_folder(run_or_path)
    sae = load_sae(folder)
    saelens_architecture(sae)  # fail before anything is written
    out = Path(out).resolve()
    if out == folder.resolve():
        raise ExportError(f"{out} is the SAE's own folder: both formats name their config "
                          f"{CONFIG}; export to another folder")
    run_root = _run_root(folder)
    model_name, context_size, dataset = "tinycourse", None, None
    extra = {"source_sha256": file_sha256(folder / WEIGHTS)[:16]}
    if run_root is not None:
        model_name = f"tinycourse/{run_root.name}"
        extra["run"] = run_root.name
        lm_config = run_root / "lm" / "config.json"
        if lm_config.is_file():
            context_size = json.loads(lm_config.read_text()).get("n_ctx")
        manifest = run_root / "tokenizer" / "manifest.json"
        if manifest.is_file():
            dataset = json.loads(manifest.read_text())["config"].get("data", {}).get("source")
        sae_manifest = folder / "manifest.json"
        if sae_manifest.is_file():
            extra["stage_config_hash"] = json.loads(sae_manifest.read_text()).get("config_hash")
    return export_saelens(sae, out, model_name=model_name, context_size=context_size,
                          dataset_path=dataset, extra=extra)


def _run_root(sae_folder: Path) -> Path | None:
    """The run folder above an SAE folder (the one with an `lm` stage), if any."""
    for parent in (sae_folder.resolve(), *sae_folder.resolve().parents)[:3]:
        if (parent / "lm").is_dir() and (parent / "sae").is_dir():
            return parent
    return None


# --- reading back ---------------------------------------------------------------------------

_FROM_ARCHITECTURE = {  # SAELens architecture -> (our kind, transcoder, skip)
    "standard": ("relu", False, False), "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "transcoder": ("relu", True, False), "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}


def load_saelens(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Our module from a SAELens folder (one we exported, or one SAELens wrote), in eval mode.

    What we exported comes back as the kind it was (a batchtopk, exported as a JumpReLU,
    is a batchtopk again). Other folders: the architectures in `_FROM_ARCHITECTURE`, with
    normalize_activations "none" and, for topk, rescale_acts_by_decoder_norm off."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    config = json.loads((folder / SAELENS_CONFIG).read_text())
    state = {k: v.float() for k, v in load_file(folder / SAELENS_WEIGHTS).items()}
    architecture = config.get("architecture", "standard")
    if architecture not in _FROM_ARCHITECTURE:
        raise ValueError(f"{folder}: SAELens architecture {architecture!r} has no tinycourse "
                         f"equivalent; readable: {', '.join(_FROM_ARCHITECTURE)}")
    if config.get("normalize_activations", "none") != "none":
        raise ValueError(f"{folder}: normalize_activations={config['normalize_activations']!r}; "
                         f"only 'none' (a scale already folded into the weights) is readable")
    if config.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{folder}: rescale_acts_by_decoder_norm is not supported")
    kind, transcoder, skip = _FROM_ARCHITECTURE[architecture]
    metadata = config.get("metadata") or {}
    ours = metadata.get("tinycourse") or {}
    if ours.get("kind") == "batchtopk":
        kind = "batchtopk"
    hook_in = metadata.get("hook_name") or "unknown"
    hook_out = (metadata.get("hook_name_out") or "unknown_out") if transcoder else ""
    d_in, d_sae = int(config["d_in"]), int(config["d_sae"])
    d_out = int(config.get("d_out", d_in))
    k = int(config.get("k") or ours.get("k") or 1)
    if not transcoder and not config.get("apply_b_dec_to_input", True):
        # x W + b_enc = (x - b_dec) W + (b_enc + b_dec W): our SAEs always centre on b_dec
        state["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]
    cfg = SAEConfig(kind=kind, hook_in=hook_in, hook_out=hook_out, d_sae=d_sae, k=min(k, d_sae),
                    skip_connection=skip)
    sae = SparseAutoencoder(cfg, d_in, d_out)
    tensors = {name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if skip:
        tensors["W_skip"] = state["W_skip"].T.contiguous()
    if kind == "jumprelu":
        tensors["log_threshold"] = state["threshold"].log()  # a zero threshold: -inf, exp() = 0
    if kind == "batchtopk":
        tensors["inference_threshold"] = state["threshold"].max()
    with torch.no_grad():
        for name, tensor in tensors.items():
            target = getattr(sae, name)
            if target.shape != tensor.shape:
                raise ValueError(f"{folder}: {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(target.shape)}")
            target.copy_(tensor)
    return sae.to(device).eval()


__all__ = ["export_sae", "export_saelens", "saelens_config", "saelens_tensors",
           "saelens_architecture", "load_saelens", "find_sae_folder", "ExportError",
           "SAELENS_CONFIG", "SAELENS_WEIGHTS"]
