"""GPT-Neo checkpoints (the TinyStories models' kind) into our GPT, checked against transformers.

Offline: each test builds a small random GPTNeoForCausalLM shaped like a TinyStories family
(local layers whose window is shorter than the tokens fed, weights large enough that a
wrong attention scale shows), saves it with `save_pretrained` beside a tiny byte-level
BPE `tokenizer.json`, and loads that folder.
"""

import dataclasses
import json
import socket
import time

import pytest
import torch

from tinycourse.lm.model import GPT, generate_text
from tinycourse.lm.pretrained import (
    ALIASES,
    HUB_MODELS,
    PretrainedError,
    gptneo_model_config,
    gptneo_state_dict,
    load_pretrained,
)
from tinycourse.lm.transformer_lens import from_transformer_lens, to_transformer_lens

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4  # fp32
WINDOW, POSITIONS, SEQ = 7, 48, 40  # local layers see 7 positions; the tokens fed are 40
# Scaled-down shapes of the TinyStories families (hub configs: 1M..28M are 8 layers of
# global, local, ... with many narrow heads; 33M and 2Layers-33M 4 and 2 such layers;
# 1Layer-21M one global layer) and a GPT-Neo that is none of them, to reach the other
# branches: exact GELU, its own d_mlp, an untied lm_head.
FAMILIES = {
    "1M-28M": {"num_layers": 4, "attention_types": [[["global", "local"], 2]], "hidden_size": 32,
               "num_heads": 8},
    "33M": {"num_layers": 2, "attention_types": [[["global", "local"], 1]], "hidden_size": 48,
            "num_heads": 4},
    "1Layer-21M": {"num_layers": 1, "attention_types": [[["global"], 1]], "hidden_size": 64,
                   "num_heads": 4},
    "other": {"num_layers": 2, "attention_types": [[["local"], 2]], "hidden_size": 32,
              "num_heads": 2, "activation_function": "gelu", "intermediate_size": 40,
              "tie_word_embeddings": False, "layer_norm_epsilon": 1e-6},
}
TEXTS = ["Once upon a time, there was a little girl named Lily. She liked to play.",
         'Tom said, "Can I have the ball?" Lily said, "Yes!" They were happy.',
         "The dog ran to the park. It saw a big red ball. The end."] * 20


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A tiny byte-level BPE shaped like GPT-Neo's: <|endoftext|> is the last id (50256 there)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(["<|endoftext|>"])
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


def hf_model(tokenizer_json, family="33M", seed=0):
    """A random GPTNeoForCausalLM of `family`'s shape, biases and norms random too."""
    vocab = tokenizers.Tokenizer.from_file(str(tokenizer_json)).get_vocab_size()
    config = transformers.GPTNeoConfig(
        vocab_size=vocab, max_position_embeddings=POSITIONS, window_size=WINDOW,
        initializer_range=0.3, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
        **FAMILIES[family])
    torch.manual_seed(seed)
    model = transformers.GPTNeoForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif ".ln_" in name or "ln_f" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model.eval()


def save_folder(model, tokenizer_json, folder):
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    return folder


def rand_tokens(vocab, batch=2, pos=SEQ):
    return torch.randint(0, vocab, (batch, pos), generator=torch.Generator().manual_seed(1))


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_same_logits_as_transformers(tokenizer_json, tmp_path, family):
    reference = hf_model(tokenizer_json, family)
    model, _ = load_pretrained(save_folder(reference, tokenizer_json, tmp_path))
    assert isinstance(model, GPT) and not model.training
    x = rand_tokens(model.cfg.d_vocab)
    expected = hf_logits(reference, x)
    assert expected.abs().max() > 1  # weights that matter, not a near-zero output
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)
    cfg, hf = model.cfg, reference.config
    assert (cfg.n_layers, cfg.d_model, cfg.n_ctx, cfg.window) == (hf.num_layers, hf.hidden_size,
                                                                  POSITIONS, WINDOW)
    assert cfg.attention_layers == tuple(hf.attention_layers)
    assert cfg.tied_embeddings == hf.tie_word_embeddings
    assert (model.unembed.weight is model.embed.weight) == cfg.tied_embeddings


def test_a_wrong_scale_or_window_would_show(tokenizer_json, tmp_path):
    """The comparison above can fail: GPT-2's scaling, or no window, gives other logits."""
    reference = hf_model(tokenizer_json, "33M")
    model, _ = load_pretrained(save_folder(reference, tokenizer_json, tmp_path))
    x = rand_tokens(model.cfg.d_vocab)
    expected = hf_logits(reference, x)
    for wrong in ({"attn_scale": True}, {"attention_layers": ()}, {"act": "gelu"}):
        other = GPT(dataclasses.replace(model.cfg, **wrong)).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert (other(x) - expected).abs().max() > 10 * ATOL, wrong  # the GELUs differ least


def test_the_window_matters_only_past_its_length(tokenizer_json, tmp_path):
    reference = hf_model(tokenizer_json, "33M")
    model, _ = load_pretrained(save_folder(reference, tokenizer_json, tmp_path))
    everything = GPT(dataclasses.replace(model.cfg, attention_layers=())).eval()
    everything.load_state_dict(model.state_dict())
    x = rand_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        a, b = model(x), everything(x)
    torch.testing.assert_close(a[:, :WINDOW], b[:, :WINDOW], atol=ATOL, rtol=0)
    assert (a[:, WINDOW:] - b[:, WINDOW:]).abs().max() > 100 * ATOL


def test_the_tokenizer_is_the_folders(tokenizer_json, tmp_path):
    reference = hf_model(tokenizer_json)
    model, tokenizer = load_pretrained(save_folder(reference, tokenizer_json, tmp_path))
    base = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    assert tokenizer.start_id == base.token_to_id("<|endoftext|>") == base.get_vocab_size() - 1
    assert tokenizer.vocab_size == model.cfg.d_vocab
    text = "Once upon a time, Lily saw a dog."
    assert tokenizer.encode(text) == base.encode(text).ids
    assert tokenizer.decode(tokenizer.encode(text)) == text
    story = generate_text(model, tokenizer, "Once upon", 5, start_id=tokenizer.start_id,
                          temperature=0)
    assert story.startswith("Once upon")


def test_an_old_pytorch_model_bin_with_mask_buffers_and_a_tied_lm_head(tokenizer_json, tmp_path):
    """Checkpoints written by transformers 4.28 (the TinyStories ones) hold each layer's
    mask buffers and repeat the tied lm_head."""
    reference = hf_model(tokenizer_json, "33M")
    reference.config.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    state = dict(reference.state_dict())
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    for i in range(reference.config.num_layers):
        state[f"transformer.h.{i}.attn.attention.bias"] = torch.ones(1, 1, POSITIONS, POSITIONS,
                                                                      dtype=torch.bool).tril()
        state[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, _ = load_pretrained(tmp_path)
    x = rand_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_logits(reference, x), atol=ATOL, rtol=0)


def test_n_ctx_keeps_the_first_positions(tokenizer_json, tmp_path):
    """The TinyStories configs declare 2048 positions; the models were trained on 512."""
    reference = hf_model(tokenizer_json)
    folder = save_folder(reference, tokenizer_json, tmp_path)
    model, _ = load_pretrained(folder, n_ctx=32)
    assert model.cfg.n_ctx == 32 and model.W_pos.shape == (32, model.cfg.d_model)
    x = rand_tokens(model.cfg.d_vocab, pos=32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_logits(reference, x), atol=ATOL, rtol=0)
    hub_like = {**reference.config.to_dict(), "max_position_embeddings": 2048}
    assert gptneo_model_config(hub_like, n_ctx=512).n_ctx == 512
    assert gptneo_model_config(hub_like).n_ctx == 2048
    assert load_pretrained(folder, n_ctx=None).model.cfg.n_ctx == POSITIONS


def test_the_pieces_are_public(tokenizer_json):
    reference = hf_model(tokenizer_json)
    cfg = gptneo_model_config(reference.config.to_dict())
    assert (cfg.attn_scale, cfg.qkv_bias, cfg.act, cfg.norm) == (False, False, "gelu_tanh",
                                                                 "layernorm")
    model = GPT(cfg).eval()
    model.load_state_dict(gptneo_state_dict(reference.state_dict(), cfg))
    x = rand_tokens(cfg.d_vocab)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_logits(reference, x), atol=ATOL, rtol=0)


def test_into_transformer_lens_with_the_same_logits(tokenizer_json, tmp_path):
    pytest.importorskip("transformer_lens")
    reference = hf_model(tokenizer_json, "33M")
    model, _ = load_pretrained(save_folder(reference, tokenizer_json, tmp_path))
    hooked = to_transformer_lens(model)
    assert (hooked.cfg.use_attn_scale, hooked.cfg.attn_types, hooked.cfg.window_size,
            hooked.cfg.act_fn) == (False, ["global", "local"], WINDOW, "gelu_new")
    x = rand_tokens(model.cfg.d_vocab)
    expected = hf_logits(reference, x)
    with torch.no_grad():
        torch.testing.assert_close(hooked(x), expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(from_transformer_lens(hooked)(x), expected, atol=ATOL, rtol=0)


# --- names, the hub, and what is refused -----------------------------------------------------

def test_aliases_name_the_hub_models():
    assert len(HUB_MODELS) == 14 and set(ALIASES.values()) == set(HUB_MODELS)
    assert ALIASES["TinyStories-33M"] == "roneneldan/TinyStories-33M"
    # the hub spells this one "Instuct"; both spellings reach it
    assert (ALIASES["TinyStories-Instruct-1Layer-21M"]
            == ALIASES["TinyStories-Instuct-1Layer-21M"]
            == "roneneldan/TinyStories-Instuct-1Layer-21M")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so a model downloaded on this machine cannot answer."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def assert_says_how_to_get_it(error, repo, short):
    message = str(error.value)
    assert "\n" not in message and "cannot be reached" in message
    assert f"hf download {repo} --local-dir models/{short}" in message
    assert f'load_pretrained("models/{short}")' in message


def test_offline_hub_fails_at_once_with_the_local_alternative(empty_hub_cache):
    start = time.monotonic()  # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE") as error:
        load_pretrained("TinyStories-33M")
    assert time.monotonic() - start < 2
    assert_says_how_to_get_it(error, "roneneldan/TinyStories-33M", "TinyStories-33M")
    with pytest.raises(PretrainedError) as error:
        load_pretrained("TinyStories-Instruct-1Layer-21M")
    assert_says_how_to_get_it(error, "roneneldan/TinyStories-Instuct-1Layer-21M",
                              "TinyStories-Instuct-1Layer-21M")


def test_unreachable_hub_fails_at_once(empty_hub_cache, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []

    def no_network(address, timeout=None, *args, **kwargs):
        asked.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    with pytest.raises(PretrainedError, match="Network is unreachable") as error:
        load_pretrained("roneneldan/TinyStories-1M")
    assert time.monotonic() - start < 2
    assert asked and asked[0][1] is not None and asked[0][1] <= 5  # a short timeout
    assert_says_how_to_get_it(error, "roneneldan/TinyStories-1M", "TinyStories-1M")


def test_a_model_in_the_hub_cache_loads_offline(tokenizer_json, empty_hub_cache):
    """huggingface_hub's cache layout: refs/main names the snapshot folder."""
    reference = hf_model(tokenizer_json)
    repo = empty_hub_cache / "models--roneneldan--TinyStories-33M"
    commit = "0" * 40
    save_folder(reference, tokenizer_json, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, _ = load_pretrained("TinyStories-33M")
    x = rand_tokens(model.cfg.d_vocab)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_logits(reference, x), atol=ATOL, rtol=0)


def test_refuses_a_config_that_is_not_gpt_neo(tmp_path):
    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="model_type='gpt2'.*GPT-Neo") as error:
        load_pretrained(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(PretrainedError, match="model_type=None.*load_model"):
        gptneo_model_config({"format": 1, "n_layers": 2})


def test_refuses_what_our_gpt_cannot_compute(tokenizer_json):
    config = hf_model(tokenizer_json).config.to_dict()
    with pytest.raises(PretrainedError, match="activation_function='silu'"):
        gptneo_model_config({**config, "activation_function": "silu"})
    with pytest.raises(PretrainedError, match="global or local"):
        gptneo_model_config({**config, "attention_layers": ["global", "sliding"]})


def test_explains_a_wrong_name_or_folder(tmp_path):
    with pytest.raises(PretrainedError, match="neither a folder here nor a hub name"):
        load_pretrained("TinyStories-99M")
    with pytest.raises(PretrainedError, match="no config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neo"}))
    with pytest.raises(PretrainedError, match="lacks hidden_size, num_heads"):
        load_pretrained(tmp_path)
