"""The GPT: shapes, hook shapes, attention paths, KV cache, sampling, saving."""

import dataclasses
import json
import math

import pytest
import torch

from tinycourse.config import ConfigError, ModelConfig
from tinycourse.lm.model import (GPT, KVCache, count_parameters, generate, generate_text,
                                 load_model, save_model)

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=64)
B, T = 3, CFG.n_ctx


def make(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return GPT(cfg)


def rand_tokens(batch=B, pos=T, seed=1):
    return torch.randint(0, CFG.d_vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def test_missing_vocab_is_a_clear_error():
    with pytest.raises(ConfigError, match="resolved_model"):
        GPT(dataclasses.replace(CFG, d_vocab=0))


def test_sequence_longer_than_context_is_a_clear_error():
    with pytest.raises(ValueError, match="n_ctx=16"):
        make()(rand_tokens(pos=T + 1))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_every_variant_runs_and_learns(norm, act):
    model = make(dataclasses.replace(CFG, norm=norm, act=act))
    tokens = rand_tokens(batch=4, pos=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):  # memorise one batch: the loss must fall
        logits = model(tokens)
        assert logits.shape == (4, 8, CFG.d_vocab)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_norm_none_keeps_identity_hook_points():
    model = make(dataclasses.replace(CFG, norm="none"))
    _, cache = model.run_with_cache(rand_tokens(), names=["blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized"])
    torch.testing.assert_close(cache["blocks.0.ln1.hook_normalized"], cache["blocks.0.hook_resid_pre"])
    assert count_parameters(model).norms == 0


def test_hook_shapes():
    _, cache = make().run_with_cache(rand_tokens())
    d, h, dh, m = CFG.d_model, CFG.n_heads, CFG.d_head, CFG.d_mlp
    expected = {"hook_embed": (B, T, d), "hook_pos_embed": (B, T, d), "ln_final.hook_normalized": (B, T, d)}
    for i in range(CFG.n_layers):
        for name in ("hook_resid_pre", "ln1.hook_normalized", "hook_attn_out", "hook_resid_mid",
                     "ln2.hook_normalized", "hook_mlp_out", "hook_resid_post"):
            expected[f"blocks.{i}.{name}"] = (B, T, d)
        for name in ("q", "k", "v", "z"):
            expected[f"blocks.{i}.attn.hook_{name}"] = (B, T, h, dh)
        for name in ("attn_scores", "pattern"):
            expected[f"blocks.{i}.attn.hook_{name}"] = (B, h, T, T)
        for name in ("pre", "post"):
            expected[f"blocks.{i}.mlp.hook_{name}"] = (B, T, m)
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected


def test_attention_pattern_is_causal_and_normalised():
    _, cache = make().run_with_cache(rand_tokens(), names=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"])
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(B, CFG.n_heads, T))
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (pattern[..., above] == 0).all()
    assert torch.isneginf(cache["blocks.0.attn.hook_attn_scores"][..., above]).all()


def test_fused_and_explicit_attention_agree():
    model, tokens = make(), rand_tokens()
    fused = model(tokens)
    with model.hooks([("blocks.0.attn.hook_pattern", lambda act, hook: None),
                      ("blocks.1.attn.hook_attn_scores", lambda act, hook: None)]):
        explicit = model(tokens)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=0)


def test_editing_the_pattern_changes_the_output():
    model, tokens = make(), rand_tokens()
    uniform = torch.ones(T, T).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    with model.hooks([("blocks.0.attn.hook_pattern", lambda act, hook: uniform.expand_as(act))]):
        edited = model(tokens)
    assert (edited - model(tokens)).abs().max() > 1e-4


def test_head_outputs_recombine_into_attn_out():
    model = make()
    _, cache = model.run_with_cache(rand_tokens(), names=["blocks.1.attn.hook_z", "blocks.1.hook_attn_out"])
    attn = model.blocks[1].attn
    # per-head contributions through W_O, summed over heads, plus the bias
    recombined = torch.einsum("bphd,hdm->bpm", cache["blocks.1.attn.hook_z"], attn.W_O) + attn.out.bias
    torch.testing.assert_close(recombined, cache["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-5)


def test_weight_views_match_hooked_queries():
    model = make()
    _, cache = model.run_with_cache(rand_tokens(), names=["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q"])
    attn = model.blocks[0].attn
    b_q = attn.qkv.bias[: CFG.n_heads * CFG.d_head].view(CFG.n_heads, CFG.d_head)
    q = torch.einsum("bpm,hmd->bphd", cache["blocks.0.ln1.hook_normalized"], attn.W_Q) + b_q
    torch.testing.assert_close(q, cache["blocks.0.attn.hook_q"], atol=1e-5, rtol=1e-5)


def test_residual_projections_have_scaled_init():
    cfg = dataclasses.replace(CFG, n_layers=8, d_model=128, d_mlp=512, n_heads=4, d_head=32)
    model = make(cfg)
    std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    assert model.blocks[0].mlp.fc_out.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].attn.out.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].mlp.fc_in.weight.std().item() == pytest.approx(cfg.init_std, rel=0.05)
    assert model.blocks[0].attn.qkv.bias.abs().max() == 0


def test_stop_at_layer_returns_the_residual_stream():
    model, tokens = make(), rand_tokens()
    _, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post"])
    torch.testing.assert_close(model(tokens, stop_at_layer=1), cache["blocks.0.hook_resid_post"])


def test_parameter_count_by_component():
    model = make()
    count = count_parameters(model)
    assert count.total == sum(p.numel() for p in model.parameters())
    d, v = CFG.d_model, CFG.d_vocab
    assert (count.embed, count.pos_embed, count.unembed) == (v * d, CFG.n_ctx * d, d * v)
    assert count.attn == CFG.n_layers * (d * 3 * 32 + 3 * 32 + 32 * d + d)
    table = str(count)
    assert "total" in table and f"{count.total:,}" in table

    tied = count_parameters(make(dataclasses.replace(CFG, tied_embeddings=True)))
    assert tied.total == count.total - d * v
    assert tied.non_embedding == count.non_embedding
    assert "tied" in str(tied)


def test_kv_cache_matches_full_forward():
    model, tokens = make(), rand_tokens()
    full = model(tokens)
    cache = KVCache(CFG, B)
    pieces = [model(tokens[:, :5], kv_cache=cache), model(tokens[:, 5:6], kv_cache=cache),
              model(tokens[:, 6:], kv_cache=cache)]  # a prefill, one token, then several
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == T


def naive_greedy(model, prompt, max_new_tokens):
    seq = list(prompt)
    for _ in range(max_new_tokens):
        window = torch.tensor([seq[-model.cfg.n_ctx:]])
        seq.append(int(model(window)[0, -1].argmax()))
    return seq


def test_cached_greedy_generation_equals_naive_recomputation():
    model = make()
    prompts = [[1, 2, 3], [4], [5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]]
    # 20 new tokens run past n_ctx=16: the window slides and generation recomputes
    got = generate(model, prompts, 20, temperature=0)
    assert got == [naive_greedy(model, p, 20) for p in prompts]


def test_generate_single_prompt_and_stop_token():
    model = make()
    greedy = generate(model, [1, 2], 10, temperature=0)
    assert isinstance(greedy[0], int) and len(greedy) == 12
    stop = greedy[4]  # the third generated token: generation must end right there
    assert generate(model, [1, 2], 10, temperature=0, stop_id=stop) == greedy[: greedy.index(stop, 2) + 1]


def test_sampling_is_reproducible_with_a_seed_and_leaves_global_rng_alone():
    model = make()
    state = torch.get_rng_state()
    a = generate(model, [[0]] * 4, 12, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == generate(model, [[0]] * 4, 12, seed=7)
    assert a != generate(model, [[0]] * 4, 12, seed=8)
    assert generate(model, [[0]] * 2, 12, top_k=1, seed=3) == generate(model, [[0]] * 2, 12, temperature=0)


def test_generate_rejects_bad_prompts():
    with pytest.raises(ValueError, match="empty prompt"):
        generate(make(), [[1], []], 3)
    with pytest.raises(ValueError, match="0..63"):
        generate(make(), [64], 3)


class CharTokenizer:
    """Letters a..z as ids 1..26; 0 is the start token."""

    def encode(self, text):
        return [ord(c) - 96 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 96) for i in ids)


def test_generate_text_round_trips_through_a_tokenizer():
    model = make()
    text = generate_text(model, CharTokenizer(), "abc", 5, start_id=0, temperature=0)
    ids = generate(model, [0, 1, 2, 3], 5, temperature=0, stop_id=0)
    body = ids[1:-1] if ids[-1] == 0 else ids[1:]
    assert text == CharTokenizer().decode(body) and text.startswith("abc")


@pytest.mark.parametrize("tied", [False, True])
def test_save_and_load_round_trip(tmp_path, tied):
    cfg = dataclasses.replace(CFG, tied_embeddings=tied, norm="rmsnorm")
    model = make(cfg)
    with torch.no_grad():  # make the unembedding differ from init to catch a lost tie
        model.unembed.weight.add_(1.0)
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["format"] == 1 and meta["tied_embeddings"] is tied

    state = torch.get_rng_state()
    loaded = load_model(tmp_path)
    assert torch.equal(torch.get_rng_state(), state)
    assert loaded.cfg == cfg and not loaded.training
    tokens = rand_tokens()
    assert torch.equal(loaded(tokens), model.eval()(tokens))
    if tied:
        assert loaded.unembed.weight.data_ptr() == loaded.embed.weight.data_ptr()
    assert torch.equal(load_model(tmp_path / "model.safetensors").W_U, model.W_U)


def test_load_model_explains_a_wrong_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_model or train_lm"):
        load_model(tmp_path)


def test_bf16_autocast_forward_runs():
    model, tokens = make(), rand_tokens()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    torch.testing.assert_close(logits.float(), model(tokens), atol=0.05, rtol=0.05)
    # and a cached generation under autocast (the cache takes the layers' dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(generate(model, [1, 2], 4, temperature=0)) == 6


def test_model_device_never_moves_the_model_nor_accepts_another_device():
    from tinycourse.lm.model import model_device

    model = make()
    assert model_device(model) == torch.device("cpu")
    assert model_device(model, "cpu") == model_device(model, torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"on cpu but device='meta'.*model\.to\('meta'\).*device=None"):
        model_device(model, "meta")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    if torch.cuda.is_available():
        model.cuda()
        here = torch.device("cuda", torch.cuda.current_device())
        assert model_device(model) == model_device(model, "cuda") == here
        with pytest.raises(ValueError, match=r"model\.to\('cpu'\)"):
            model_device(model, "cpu")
        assert {p.device for p in model.parameters()} == {here}


# --- GPT-Neo's options (the TinyStories models) -------------------------------------------

NEO = dataclasses.replace(CFG, act="gelu_tanh", qkv_bias=False, attn_scale=False,
                          attention_layers=("global", "local"), window=5, norm_eps=1e-6)


def test_local_mask_sees_the_last_window_positions():
    from tinycourse.lm.model import local_causal_mask

    n, window = 9, 3
    expected = [[i - window < j <= i for j in range(n)] for i in range(n)]
    assert local_causal_mask(n, window).tolist() == expected
    assert local_causal_mask(n, window).sum(-1).tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert torch.equal(local_causal_mask(n, n), torch.ones(n, n, dtype=torch.bool).tril())
    model = make(NEO)  # only the local layer gets the window
    assert torch.equal(model.blocks[0].attn.causal, torch.ones(T, T, dtype=torch.bool).tril())
    assert torch.equal(model.blocks[1].attn.causal, local_causal_mask(T, 5))


def test_gpt_neo_options_build_what_they_say():
    model = make(NEO)
    assert model.blocks[0].attn.qkv.bias is None and model.blocks[0].attn.out.bias is not None
    assert model.blocks[0].attn.scale == 1.0 and make().blocks[0].attn.scale == 1 / math.sqrt(8)
    assert model.blocks[0].ln1.eps == 1e-6
    x = torch.linspace(-4, 4, 101)
    tanh_gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(model.blocks[0].mlp.act(x), tanh_gelu)
    assert (make().blocks[0].mlp.act(x) - tanh_gelu).abs().max() > 1e-5  # exact GELU differs


def test_local_attention_pattern_keeps_to_its_window():
    _, cache = make(NEO).run_with_cache(rand_tokens(), names=["blocks.1.attn.hook_pattern",
                                                              "blocks.1.attn.hook_attn_scores"])
    pattern = cache["blocks.1.attn.hook_pattern"]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = (j > i) | (j <= i - 5)
    assert (pattern[..., hidden] == 0).all() and (pattern[..., ~hidden] > 0).all()
    assert torch.isneginf(cache["blocks.1.attn.hook_attn_scores"][..., hidden]).all()
    torch.testing.assert_close(pattern.sum(-1), torch.ones(B, CFG.n_heads, T))


@pytest.mark.parametrize("options", [{}, {"attn_scale": False},
                                     {"attention_layers": ("local", "local")}])
def test_fused_and_explicit_attention_agree_with_gpt_neo_options(options):
    model, tokens = make(dataclasses.replace(NEO, **options)), rand_tokens()
    with torch.no_grad():  # large weights, so a wrong scale or window would show
        for p in model.parameters():
            p.mul_(10)
    fused = model(tokens)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(CFG.n_layers)]
    with model.hooks([(name, lambda act, hook: None) for name in names]):
        explicit = model(tokens)
    torch.testing.assert_close(explicit, fused, atol=1e-4, rtol=1e-5)


def test_the_attention_scale_and_the_window_change_the_output():
    tokens = rand_tokens()
    neo = make(NEO)(tokens)
    for change in ({"attn_scale": True}, {"attention_layers": ()}, {"window": 6}):
        other = make(dataclasses.replace(NEO, **change))(tokens)  # the same seed: same weights
        assert (other - neo).abs().max() > 1e-4, change


def test_kv_cache_matches_full_forward_with_a_local_window():
    model, tokens = make(NEO), rand_tokens()
    full = model(tokens)
    cache = KVCache(NEO, B)
    pieces = [model(tokens[:, :3], kv_cache=cache), model(tokens[:, 3:4], kv_cache=cache),
              model(tokens[:, 4:11], kv_cache=cache)]
    pieces += [model(tokens[:, t:t + 1], kv_cache=cache) for t in range(11, T)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_greedy_generation_equals_naive_recomputation_with_a_local_window():
    model = make(NEO)  # window 5, far shorter than the 16 + 20 positions generated over
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11]]
    got = generate(model, prompts, 20, temperature=0)
    assert got == [naive_greedy(model, p, 20) for p in prompts]


def test_gpt_neo_options_save_and_load(tmp_path):
    model = make(NEO)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.cfg == NEO  # attention_layers back as a tuple, not JSON's list
    tokens = rand_tokens()
    assert torch.equal(loaded(tokens), model.eval()(tokens))


def test_a_model_saved_before_the_gpt_neo_options_loads_as_it_was(tmp_path):
    model = make()
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    for name in ("norm_eps", "qkv_bias", "attn_scale", "attention_layers", "window"):
        del meta[name]
    (tmp_path / "config.json").write_text(json.dumps(meta))
    loaded = load_model(tmp_path)
    assert loaded.cfg == CFG
    tokens = rand_tokens()
    assert torch.equal(loaded(tokens), model.eval()(tokens))


@pytest.mark.parametrize("options,match", [
    ({"attention_layers": ("global",)}, "names 1 layers but model.n_layers is 2"),
    ({"attention_layers": ("global", "sliding")}, "'sliding' is not one of global, local"),
    ({"window": 0}, "model.window must be > 0"),
    ({"act": "gelu_new"}, "gelu, gelu_tanh, relu"),
])
def test_gpt_neo_options_are_validated(options, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(CFG, **options)


def test_eval_mode_restores_each_modules_own_mode_even_on_error():
    from tinycourse.lm.model import eval_mode

    training, frozen = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).eval()
    with eval_mode(training, frozen):
        assert not training.training and not frozen.training
    assert training.training and not frozen.training
    with pytest.raises(RuntimeError):
        with eval_mode(training):
            raise RuntimeError("a measurement failed")
    assert training.training


def test_sinusoidal_position_init_makes_the_previous_position_one_linear_map():
    cfg = dataclasses.replace(CFG, n_ctx=64, pos_init="sinusoidal")
    w_pos = make(cfg).W_pos.detach().double()  # (n_ctx, d_model)
    norms = w_pos.norm(dim=1)  # a token embedding's norm, init_std sqrt(d_model)
    assert torch.allclose(norms, torch.full_like(norms, cfg.init_std * math.sqrt(cfg.d_model)), rtol=1e-4)
    # the rotation that takes (sin pw, cos pw) to (sin (p-1)w, cos (p-1)w), built from the
    # formula, takes every position's vector to the one before it
    shift = torch.zeros(cfg.d_model, cfg.d_model, dtype=torch.float64)
    for i in range(cfg.d_model // 2):
        w = torch.tensor(10000.0 ** (-2 * i / cfg.d_model), dtype=torch.float64)
        shift[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = torch.stack(
            [torch.stack([w.cos(), w.sin()]), torch.stack([-w.sin(), w.cos()])])
    assert torch.allclose(w_pos[1:] @ shift, w_pos[:-1], atol=1e-6)
    normal = make(dataclasses.replace(CFG, n_ctx=64)).W_pos.detach().double()
    assert not torch.allclose(normal[1:] @ shift, normal[:-1], atol=1e-2)
    with pytest.raises(ConfigError, match="pos_init"):
        dataclasses.replace(CFG, pos_init="rotary")


SMEARED = dataclasses.replace(CFG, smeared_keys=(1,))


def test_smeared_keys_mix_each_key_with_the_one_before():
    model = make(SMEARED)
    with torch.no_grad():
        model.blocks[1].attn.smear.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    assert model.blocks[0].attn.smear is None
    _, cache = model.run_with_cache(rand_tokens(), names=["blocks.1.ln1.hook_normalized",
                                                          "blocks.1.attn.hook_k"])
    attn = model.blocks[1].attn
    x = cache["blocks.1.ln1.hook_normalized"]
    raw = torch.einsum("bpd,hdk->bphk", x, attn.W_K) + attn.qkv.bias.view(3, 4, 8)[1]
    expected = raw.clone()
    for h, logit in enumerate([-2.0, 0.0, 1.0, 3.0]):  # one position at a time, by hand
        s = 1 / (1 + math.exp(-logit))
        for j in range(1, T):
            expected[:, j, h] = (1 - s) * raw[:, j, h] + s * raw[:, j - 1, h]
    torch.testing.assert_close(cache["blocks.1.attn.hook_k"], expected, atol=1e-5, rtol=1e-5)
    # the share is learned: a loss reaches it
    model(rand_tokens()).logsumexp(-1).mean().backward()
    assert attn.smear.grad.abs().min() > 0


def test_kv_cache_and_generation_with_smeared_keys():
    model = make(SMEARED)
    with torch.no_grad():
        model.blocks[1].attn.smear.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
    tokens = rand_tokens()
    cache = KVCache(SMEARED, B)
    pieces = [model(tokens[:, :5], kv_cache=cache), model(tokens[:, 5:6], kv_cache=cache),
              model(tokens[:, 6:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(tokens), atol=1e-5, rtol=1e-5)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]]
    assert generate(model, prompts, 12, temperature=0) == [naive_greedy(model, p, 12) for p in prompts]


def test_smeared_keys_save_load_and_are_validated(tmp_path):
    model = make(SMEARED)
    with torch.no_grad():
        model.blocks[1].attn.smear.fill_(1.5)
    loaded = load_model(save_model(model, tmp_path / "lm"))
    assert loaded.cfg.smeared_keys == (1,)
    assert torch.equal(loaded(rand_tokens()), model.eval()(rand_tokens()))
    with pytest.raises(ConfigError, match="smeared_keys names layer 2"):
        dataclasses.replace(CFG, smeared_keys=(2,))
