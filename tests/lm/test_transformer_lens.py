"""Our GPT to TransformerLens's HookedTransformer and back: same logits, same activations."""

import dataclasses
import itertools
import sys
import warnings

import pytest
import torch

from tinycourse.config import ModelConfig
from tinycourse.lm.model import GPT
from tinycourse.lm.transformer_lens import (
    from_transformer_lens,
    shared_hook_names,
    to_transformer_lens,
)

tl = pytest.importorskip("transformer_lens")

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, "n_ctx": 16,
         "d_vocab": 64}
KINDS = list(itertools.product(("layernorm", "rmsnorm", "none"), ("gelu", "relu"), (False, True)))
# GPT-Neo's options (the TinyStories models): a window shorter than the 16 positions tested
NEO = {"act": "gelu_tanh", "qkv_bias": False, "attn_scale": False,
       "attention_layers": ("global", "local"), "window": 5, "norm_eps": 1e-6}
ATOL = 1e-4  # fp32


def randomised(model):
    """Every weight random at a scale that keeps activations O(1), biases and norm gains
    included: a zero bias or a unit gain would hide a mapping bug."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
            if ".ln" in name or name.startswith("ln_final."):
                p.copy_((1.0 if name.endswith(".weight") else 0.0) + 0.3 * torch.randn_like(p))
    return model.eval()


def tokens(cfg, batch=3):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx), generator=generator)


def hooked_from_config(**overrides):
    """A HookedTransformer built from its own config, with random biases and norm weights
    (TransformerLens initialises those to 0 and 1)."""
    cfg = tl.HookedTransformerConfig(**{**SMALL, "act_fn": "gelu", "normalization_type": "LN",
                                        "seed": 0, "device": "cpu", **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        hooked = tl.HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in hooked.named_parameters():
            if name.split(".")[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "w", "b"):
                p.add_(0.3 * torch.randn_like(p))
    return hooked.eval()


def assert_same_activations(ours, theirs, names):
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name], atol=ATOL, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")


def assert_computes_the_same(model, hooked, x):
    """The same logits and the same activations at every shared hook name."""
    names = shared_hook_names(model.cfg.n_layers)
    with torch.no_grad():
        torch.testing.assert_close(hooked(x), model(x), atol=ATOL, rtol=0)
    _, ours = model.run_with_cache(x, names=names)
    _, theirs = hooked.run_with_cache(x, names_filter=names)
    assert_same_activations(ours, theirs, names)
    return ours


@pytest.mark.parametrize("norm,act,tied", KINDS)
def test_same_logits_and_activations(norm, act, tied):
    cfg = ModelConfig(**SMALL, norm=norm, act=act, tied_embeddings=tied)
    model = randomised(GPT(cfg))
    hooked = to_transformer_lens(model)
    x = tokens(cfg)
    with torch.no_grad():
        logits = model(x)
        assert logits.abs().max() > 1  # weights that matter, not a near-zero output
        torch.testing.assert_close(hooked(x), logits, atol=ATOL, rtol=0)
    names = shared_hook_names(cfg.n_layers)
    _, ours = model.run_with_cache(x, names=names)
    _, theirs = hooked.run_with_cache(x, names_filter=names)
    assert set(ours) == set(theirs) == set(names)  # every shared name exists on both sides
    assert_same_activations(ours, theirs, names)


@pytest.mark.parametrize("norm,act,tied", KINDS)
def test_round_trip_gives_back_the_same_model(norm, act, tied):
    cfg = ModelConfig(**SMALL, norm=norm, act=act, tied_embeddings=tied, init_std=0.05)
    model = randomised(GPT(cfg))
    back = from_transformer_lens(to_transformer_lens(model))
    assert back.cfg == cfg
    assert back.state_dict().keys() == model.state_dict().keys()
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    assert (back.unembed.weight is back.embed.weight) == tied
    x = tokens(cfg)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("options", [NEO, {**NEO, "attention_layers": ("local", "local")},
                                     {"attn_scale": False}, {"act": "gelu_tanh"}])
def test_gpt_neo_options_carry_over(options):
    cfg = ModelConfig(**SMALL, tied_embeddings=True, **options)
    model = randomised(GPT(cfg))
    hooked = to_transformer_lens(model)
    x = tokens(cfg)
    ours = assert_computes_the_same(model, hooked, x)
    if cfg.is_local(1):  # the window shows in the pattern: nothing 5 or more positions back
        assert ours["blocks.1.attn.hook_pattern"][..., 10, :6].abs().max() == 0

    back = from_transformer_lens(hooked)
    # no q/k/v biases went over as zero biases and come back as such
    assert back.cfg == dataclasses.replace(cfg, qkv_bias=True)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=ATOL, rtol=0)


def test_from_a_gpt_neo_shaped_hooked_transformer():
    """The config TransformerLens's own GPT-Neo loader writes (loading_from_pretrained.py)."""
    hooked = hooked_from_config(act_fn="gelu_new", use_attn_scale=False, use_local_attn=True,
                                attn_types=["global", "local"], window_size=4, eps=1e-6)
    model = from_transformer_lens(hooked)
    assert (model.cfg.act, model.cfg.attn_scale, model.cfg.attention_layers, model.cfg.window,
            model.cfg.norm_eps) == ("gelu_tanh", False, ("global", "local"), 4, 1e-6)
    x = tokens(model.cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hooked(x), atol=ATOL, rtol=0)


def test_shared_names_are_ours_but_the_norm_outputs():
    """A new hook point in the GPT must be classed as shared or not, here."""
    model = GPT(ModelConfig(**SMALL))
    left_out = set(model.hook_points) - set(shared_hook_names(2))
    assert left_out == {"blocks.0.ln1.hook_normalized", "blocks.0.ln2.hook_normalized",
                        "blocks.1.ln1.hook_normalized", "blocks.1.ln2.hook_normalized",
                        "ln_final.hook_normalized"}


def test_into_saelens_hooked_sae_transformer():
    sae_lens = pytest.importorskip("sae_lens")
    model = randomised(GPT(ModelConfig(**SMALL)))
    hooked = to_transformer_lens(model, cls=sae_lens.HookedSAETransformer)
    assert isinstance(hooked, sae_lens.HookedSAETransformer)
    x = tokens(model.cfg)
    with torch.no_grad():
        torch.testing.assert_close(hooked(x), model(x), atol=ATOL, rtol=0)


def test_no_bos_is_added():
    hooked = to_transformer_lens(GPT(ModelConfig(**SMALL)))
    assert hooked.cfg.default_prepend_bos is False


@pytest.mark.parametrize("overrides", [
    {}, {"normalization_type": "RMS", "act_fn": "relu"}, {"normalization_type": None},
])
def test_from_a_hooked_transformer_built_from_its_config(overrides):
    hooked = hooked_from_config(**overrides)
    model = from_transformer_lens(hooked)
    x = tokens(model.cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hooked(x), atol=ATOL, rtol=0)
    names = shared_hook_names(model.cfg.n_layers)
    _, ours = model.run_with_cache(x, names=names)
    _, theirs = hooked.run_with_cache(x, names_filter=names)
    assert_same_activations(ours, theirs, names)


@pytest.mark.parametrize("options", [{}, {"center_writing_weights": False,
                                                    "center_unembed": False}])
def test_folded_and_centred_weights_are_just_weights(options):
    """process_weights_ (fold_ln, centring) leaves LNPre norms and ln_final's bias in b_U."""
    hooked = hooked_from_config()
    x = tokens(hooked.cfg)
    with torch.no_grad():
        before = hooked(x)
        hooked.process_weights_(**options)
        assert hooked.cfg.normalization_type == "LNPre" and hooked.unembed.b_U.abs().max() > 0.1
        model = from_transformer_lens(hooked)
        assert model.cfg.norm == "layernorm"
        torch.testing.assert_close(model(x), hooked(x), atol=ATOL, rtol=0)
        # center_unembed shifts each position's logits by a constant: probabilities are kept
        torch.testing.assert_close(model(x).log_softmax(-1), before.log_softmax(-1),
                                   atol=ATOL, rtol=0)


def test_any_unembedding_bias_after_an_lnpre_norm():
    hooked = hooked_from_config(normalization_type="LNPre")
    with torch.no_grad():
        hooked.unembed.b_U.copy_(torch.randn_like(hooked.unembed.b_U))
        model = from_transformer_lens(hooked)
        x = tokens(model.cfg)
        torch.testing.assert_close(model(x), hooked(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("overrides,what", [
    ({"positional_embedding_type": "rotary"}, "rotary positions"),
    ({"parallel_attn_mlp": True}, "parallel attention and MLP"),
    ({"gated_mlp": True}, "a gated MLP"),
    ({"attn_only": True}, "attn_only"),
    ({"act_fn": "silu"}, "act_fn='silu'"),
    ({"attn_scale": 3.0}, "an attention scale other than sqrt(d_head) or 1 (3.0)"),
])
def test_refuses_what_our_gpt_cannot_compute(overrides, what):
    with pytest.raises(ValueError, match="from_transformer_lens") as error:
        from_transformer_lens(hooked_from_config(**overrides))
    message = str(error.value)
    assert what in message and "keep it in TransformerLens" in message and "\n" not in message


def test_an_unembedding_bias_comes_back_as_ours_and_goes_out_again():
    hooked = hooked_from_config()
    with torch.no_grad():
        hooked.unembed.b_U.copy_(torch.randn_like(hooked.unembed.b_U))  # not W_U's span
    ours = from_transformer_lens(hooked)
    assert ours.cfg.unembed_bias and torch.equal(ours.unembed.bias, hooked.unembed.b_U)
    tokens = torch.randint(0, hooked.cfg.d_vocab, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hooked(tokens), atol=1e-4, rtol=0)
        torch.testing.assert_close(to_transformer_lens(ours)(tokens), hooked(tokens), atol=1e-4, rtol=0)


def test_missing_transformer_lens_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # `import` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[interp\]"'):
        to_transformer_lens(GPT(ModelConfig(**SMALL)))


def test_smeared_keys_go_over_as_a_permanent_hook_and_come_back():
    cfg = ModelConfig(**SMALL, tied_embeddings=True, smeared_keys=(1,))
    model = randomised(GPT(cfg))  # the smear logits random too: shares other than a half
    hooked = to_transformer_lens(model)
    x = tokens(cfg)
    assert_computes_the_same(model, hooked, x)  # hook_k after the mix on both sides
    hooked.reset_hooks()  # a learner's reset keeps permanent hooks
    with torch.no_grad():
        torch.testing.assert_close(hooked(x), model(x), atol=ATOL, rtol=0)
    back = from_transformer_lens(hooked)
    assert back.cfg == cfg
    for name, t in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    # without the hook TransformerLens computes another model: the hook is what carries it
    hooked.reset_hooks(including_permanent=True)
    with torch.no_grad():
        assert not torch.allclose(hooked(x), model(x), atol=1e-2)
