import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder, save_sae
from tinycourse.sae.tags import TaggedModel


def transcoder(layer, d_sae=12):
    cfg = SAEConfig(kind="relu", hook_in=f"blocks.{layer}.ln2.hook_normalized",
                    hook_out=f"blocks.{layer}.hook_mlp_out", d_sae=d_sae)
    return SparseAutoencoder(cfg, d_in=16).eval()


@pytest.fixture
def model():
    return GPT(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=8, d_vocab=20)).eval()


def test_tags_give_the_dictionaries_latents_loaded_lazily(model, tmp_path):
    saes = {layer: transcoder(layer) for layer in (0, 1)}
    for layer, sae in saes.items():
        save_sae(sae, tmp_path / f"layer_{layer}")
    tagged = TaggedModel(model, {"M": tmp_path})
    tokens = torch.tensor([[1, 4, 7, 2, 9]])
    assert tagged._loaded == {}
    got = tagged["M1"](tokens)
    _, cache = model.run_with_cache(tokens, names=["blocks.1.ln2.hook_normalized"])
    with torch.no_grad():
        expected = saes[1].encode(cache["blocks.1.ln2.hook_normalized"])
    assert got.shape == (1, 5, 12) and torch.allclose(got, expected, atol=1e-6)
    assert list(tagged._loaded) == [("M", 1)]  # only what was asked for
    assert torch.allclose(tagged["M1N3"](tokens[0]), expected[..., 3], atol=1e-6)
    assert torch.equal(tagged(tokens), model(tokens))


def test_bad_tags_are_one_line_errors(model):
    tagged = TaggedModel(model, {"M": {0: transcoder(0)}})
    for tag, match in [("X1", "not a tag"), ("M5", "layers 0..1"), ("M1", "no M1"),
                       ("A0", "no A dictionaries"), ("M0N99", "latents 0..11")]:
        with pytest.raises(KeyError, match=match):
            tagged[tag]
    with pytest.raises(ValueError, match="unknown dictionary kinds"):
        TaggedModel(model, {"Q": {}})
    wrong = TaggedModel(model, {"M": {0: transcoder(1)}})
    with pytest.raises(ValueError, match="should read blocks.0.ln2.hook_normalized"):
        wrong["M0"]


def attention_sae(layer, d_sae=10):
    cfg = SAEConfig(kind="topk", k=3, hook_in=f"blocks.{layer}.hook_attn_out", d_sae=d_sae)
    sae = SparseAutoencoder(cfg, d_in=16)
    with torch.no_grad():
        sae.b_enc.normal_()  # TopK keeps 3 of 10, some latents of some tokens non-zero
    return sae.eval()


def test_a_run_dirs_tags_give_the_attention_saes_latents(model, tmp_path):
    from tinycourse.lm.model import save_model

    save_model(model, tmp_path / "lm")
    for layer in (0, 1):
        save_sae(transcoder(layer), tmp_path / "transcoders" / f"layer_{layer}")
    sae = attention_sae(0)
    save_sae(sae, tmp_path / "transcoders" / "attention" / "layer_0")
    tokens = torch.tensor([[1, 4, 7, 2, 9], [3, 3, 5, 0, 1]])
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_attn_out"])
    with torch.no_grad():
        expected = sae.encode(cache["blocks.0.hook_attn_out"])
    assert expected.count_nonzero() > 0
    for tagged in (TaggedModel.from_run_dir(tmp_path), TaggedModel.from_run_dir(tmp_path / "transcoders", model)):
        assert tagged._loaded == {}  # nothing until asked
        got = tagged["A0"](tokens)
        assert got.shape == (2, 5, 10) and torch.allclose(got, expected, atol=1e-6)
        assert torch.allclose(tagged["A0N3"](tokens), expected[..., 3], atol=1e-6)
        assert list(tagged._loaded) == [("A", 0)]
        assert tagged["M1"](tokens).shape == (2, 5, 12)
        with pytest.raises(KeyError, match=r"no A1: .* --set transcoders.attention_saes=true"):
            tagged["A1"]
    assert torch.equal(TaggedModel.from_run_dir(tmp_path)(tokens), model(tokens))  # the run's LM, loaded


def test_an_untrained_attention_tag_names_the_setting(model, tmp_path):
    save_sae(transcoder(0), tmp_path / "transcoders" / "layer_0")
    tagged = TaggedModel.from_run_dir(tmp_path, model)
    with pytest.raises(KeyError) as err:
        tagged["A0"]
    assert "\n" not in str(err.value) and "--set transcoders.attention_saes=true" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no transcoders in"):
        TaggedModel.from_run_dir(tmp_path / "nowhere", model)
