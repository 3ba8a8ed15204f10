import json

import pytest
import torch
from safetensors.torch import load_file

from tinycourse.cli import main
from tinycourse.config import SAEConfig
from tinycourse.sae.export import (
    SAELENS_CONFIG,
    SAELENS_WEIGHTS,
    ExportError,
    export_sae,
    export_saelens,
    find_sae_folder,
    load_saelens,
)
from tinycourse.sae.model import SparseAutoencoder, load_sae, save_sae

D_IN, D_OUT, D_SAE = 16, 12, 48
TRANSCODER = dict(hook_in="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out")
# (kind, transcoder, skip) -> the SAELens architecture it exports as
EXPORTABLE = {
    ("relu", False, False): "standard",
    ("topk", False, False): "topk",
    ("batchtopk", False, False): "jumprelu",
    ("jumprelu", False, False): "jumprelu",
    ("relu", True, False): "transcoder",
    ("relu", True, True): "skip_transcoder",
    ("jumprelu", True, False): "jumprelu_transcoder",
    ("jumprelu", True, True): "jumprelu_skip_transcoder",
    ("batchtopk", True, False): "jumprelu_transcoder",
    ("batchtopk", True, True): "jumprelu_skip_transcoder",
}
CASES = [pytest.param(key, id=f"{key[0]}{'-transcoder' if key[1] else ''}{'-skip' if key[2] else ''}")
         for key in EXPORTABLE]


# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(kind, transcoder=False, skip=False):
    """A module with every parameter random and non-trivial (biases, thresholds, skip,
    scales != 1), as training would leave it."""
    cfg = SAEConfig(kind=kind, d_sae=D_SAE, k=4, skip_connection=skip,
                    **(TRANSCODER if transcoder else {}))
    sae = SparseAutoencoder(cfg, D_IN, D_OUT if transcoder else None)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(D_SAE) * 0.3)
        sae.b_dec.copy_(torch.randn(sae.d_out) * 0.3)
        if skip:
            sae.W_skip.copy_(torch.randn(D_IN, sae.d_out) * 0.1)
        if kind == "jumprelu":
            sae.log_threshold.copy_(torch.randn(D_SAE) * 0.3 - 1.0)
        if kind == "batchtopk":
            sae.inference_threshold.fill_(0.4)
        sae.input_scale.fill_(1.7)
        sae.output_scale.fill_(1.7 if not transcoder else 0.6)
    return sae


def saved(tmp_path, key, name="sae"):
    """save_sae (which folds the scales) then load_sae: what a run's sae stage holds."""
    folder = save_sae(trained_like(*key), tmp_path / name)
    return folder, load_sae(folder)


def make_run(tmp_path, key=("topk", False, False)):
    """A run folder with an sae stage and the lm config the exporter reads."""
    root = tmp_path / "runs" / "myrun"
    saved(root, key)
    (root / "lm").mkdir(parents=True)
    (root / "lm" / "config.json").write_text(json.dumps({"format": 1, "n_ctx": 64}))
    return root


def outputs(module, x, sae_lens=False):
    """(latents, decoded latents, full forward) of ours or of a SAELens module."""
    with torch.no_grad():
        latents = module.encode(x)
        forward = module(x) if sae_lens else module(x).reconstruction
        return latents, module.decode(latents), forward


# --- always run: the files we write ---------------------------------------------------------

@pytest.mark.parametrize("key", CASES)
def test_export_files_names_and_shapes(tmp_path, key):
    kind, transcoder, skip = key
    _, sae = saved(tmp_path, key)
    out = export_saelens(sae, tmp_path / "out", model_name="m", context_size=64)
    assert sorted(p.name for p in out.iterdir()) == [SAELENS_CONFIG, SAELENS_WEIGHTS]
    cfg = json.loads((out / SAELENS_CONFIG).read_text())
    assert cfg["architecture"] == EXPORTABLE[key]
    assert (cfg["d_in"], cfg["d_sae"]) == (D_IN, D_SAE)
    assert cfg["normalize_activations"] == "none" and cfg["dtype"] == "float32"
    assert cfg["apply_b_dec_to_input"] is (not transcoder)
    assert cfg["metadata"]["hook_name"] == sae.cfg.hook_in
    assert cfg["metadata"]["model_name"] == "m" and cfg["metadata"]["context_size"] == 64
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # else read as a pre-6 config
    assert cfg["metadata"]["tinycourse"]["kind"] == kind
    d_out = D_OUT if transcoder else D_IN
    shapes = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, d_out), "b_dec": (d_out,)}
    if kind in ("jumprelu", "batchtopk"):
        shapes["threshold"] = (D_SAE,)
    if skip:
        shapes["W_skip"] = (d_out, D_IN)  # SAELens stores it transposed
    tensors = load_file(out / SAELENS_WEIGHTS)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == shapes
    assert all(t.dtype == torch.float32 for t in tensors.values())
    if transcoder:
        assert cfg["d_out"] == D_OUT and cfg["metadata"]["hook_name_out"] == sae.cfg.hook_out
    if kind == "topk":
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False
    if kind == "batchtopk":  # one threshold for all: the inference rule of batchtopk
        assert torch.equal(tensors["threshold"], torch.full((D_SAE,), float(sae.inference_threshold)))


@pytest.mark.parametrize("key", CASES)
def test_round_trip_through_our_reader(tmp_path, key):
    _, sae = saved(tmp_path, key)
    back = load_saelens(export_saelens(sae, tmp_path / "out"))
    assert back.kind == sae.kind and back.is_transcoder == sae.is_transcoder
    x = torch.randn(64, D_IN) * 2
    for ours, theirs in zip(outputs(sae, x), outputs(back, x)):
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_exported_sae_works_on_raw_activations(tmp_path):
    """The scale is folded: the export maps raw x like the trained module mapped x * scale."""
    module = trained_like("relu").eval()
    folder = save_sae(module, tmp_path / "sae")
    back = load_saelens(export_saelens(load_sae(folder), tmp_path / "out"))
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        expected = module(x * module.input_scale).reconstruction / module.output_scale
        torch.testing.assert_close(back(x).reconstruction, expected, atol=1e-5, rtol=1e-5)


def test_topk_transcoder_is_a_clear_error(tmp_path):
    folder, sae = saved(tmp_path, ("topk", True, False))
    with pytest.raises(ExportError, match="jumprelu_transcoder.*batchtopk"):
        export_saelens(sae, tmp_path / "out")
    with pytest.raises(ExportError, match="no SAELens architecture"):
        export_sae(folder, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_find_sae_folder(tmp_path):
    root = make_run(tmp_path)
    assert find_sae_folder(root) == root / "sae"
    assert find_sae_folder(root / "sae") == root / "sae"
    assert find_sae_folder(root / "sae" / "cfg.json") == root / "sae"
    sweep = tmp_path / "sweep"
    saved(sweep, ("topk", False, False), "a")
    assert find_sae_folder(sweep) == sweep / "a"
    saved(sweep, ("relu", False, False), "b")
    with pytest.raises(FileNotFoundError, match="holds 2 SAEs"):
        find_sae_folder(sweep)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_sae_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no saved SAE"):
        find_sae_folder(root / "lm")


def test_export_sae_reads_the_run(tmp_path):
    root = make_run(tmp_path)
    out = export_sae(root, tmp_path / "out")
    meta = json.loads((out / SAELENS_CONFIG).read_text())["metadata"]
    assert meta["model_name"] == "tinycourse/myrun" and meta["context_size"] == 64
    with pytest.raises(ExportError, match="own folder"):
        export_sae(root, root / "sae")
    with pytest.raises(ExportError, match="unknown export format"):
        export_sae(root, tmp_path / "x", fmt="onnx")


def test_cli_export_sae(tmp_path, capsys):
    root = make_run(tmp_path)
    out = tmp_path / "exported"
    assert main(["export-sae", str(root), "--format", "saelens", str(out)]) == 0
    assert "SAE.load_from_disk" in capsys.readouterr().out
    assert (out / SAELENS_WEIGHTS).is_file() and (out / SAELENS_CONFIG).is_file()
    # a run name is looked up in the runs folder
    assert main(["export-sae", "myrun", str(tmp_path / "byname"), "--runs-dir", str(root.parent)]) == 0
    assert (tmp_path / "byname" / SAELENS_CONFIG).is_file()
    saved(tmp_path / "tc", ("topk", True, False))
    assert main(["export-sae", str(tmp_path / "tc" / "sae"), str(tmp_path / "no")]) == 2
    assert "SAELens loads" in capsys.readouterr().err


# --- with SAELens installed: it loads the export and computes what we compute -------------------

@pytest.mark.parametrize("key", CASES)
def test_saelens_loads_export_and_matches(tmp_path, key):
    sae_lens = pytest.importorskip("sae_lens")
    _, sae = saved(tmp_path, key)
    out = export_saelens(sae, tmp_path / "out")
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    assert theirs.cfg.architecture() == EXPORTABLE[key]
    assert theirs.cfg.metadata.hook_name == sae.cfg.hook_in
    x = torch.randn(256, D_IN) * 2
    ours_out, theirs_out = outputs(sae, x), outputs(theirs, x, sae_lens=True)
    assert (ours_out[0] > 0).any()  # the comparison is not between two zero tensors
    for name, a, b in zip(("encode", "decode", "forward"), ours_out, theirs_out):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "transcoder", "skip_transcoder",
                                          "jumprelu_transcoder", "jumprelu_skip_transcoder"])
def test_we_read_what_saelens_writes(tmp_path, architecture):
    """load_saelens also reads folders SAELens saved itself (e.g. an SAE trained with it)."""
    pytest.importorskip("sae_lens")
    from sae_lens.registry import get_sae_class

    sae_class, cfg_class = get_sae_class(architecture)
    transcoder = "transcoder" in architecture
    extra = {"d_out": D_OUT, "apply_b_dec_to_input": False} if transcoder else {}
    if architecture == "topk":
        extra["k"] = 4
    if architecture == "standard":
        extra["apply_b_dec_to_input"] = False  # we fold b_dec into b_enc on reading
    theirs = sae_class(cfg_class(d_in=D_IN, d_sae=D_SAE, **extra))
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            param.copy_(torch.randn_like(param) * (0.2 if name == "threshold" else 0.5))
            if name == "threshold":
                param.abs_()
    theirs.save_model(tmp_path / "sl")
    ours = load_saelens(tmp_path / "sl")
    x = torch.randn(64, D_IN)
    for name, a, b in zip(("encode", "decode", "forward"), outputs(ours, x), outputs(theirs, x, sae_lens=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
