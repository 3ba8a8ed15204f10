"""Steering: every position (prompt, cached steps, sliding window), the no-op cases, the
clamp formula, transcoders, cleanup and errors, on a tiny random GPT and random SAEs."""

import copy

import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.interpret.steering import latent_activation, steer, steered_generations
from tinycourse.lm.model import GPT, KVCache, generate
from tinycourse.sae.model import SparseAutoencoder

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=64)
HOOK = "blocks.0.hook_resid_post"
TRANSCODER = dict(hook_in="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out")
PROMPT = [1, 5, 9, 2, 7]
LATENT = 3


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def make_model():
    torch.manual_seed(0)
    return GPT(CFG).eval()


def make_sae(kind="relu", transcoder=False, **kw):
    hooks = TRANSCODER if transcoder else dict(hook_in=HOOK)
    torch.manual_seed(1)
    return SparseAutoencoder(SAEConfig(kind=kind, d_sae=48, k=4, **hooks, **kw), d_in=32).eval()


def cached_logits(model, tokens, prompt_len):
    """Logits as `generate` computes them: the prompt in one pass, then one token a step."""
    cache, t = KVCache(model.cfg, 1), torch.tensor([tokens])
    steps = [model(t[:, :prompt_len], kv_cache=cache)]
    steps += [model(t[:, i:i + 1], kv_cache=cache) for i in range(prompt_len, len(tokens))]
    return torch.cat(steps, dim=1)


def greedy_without_cache(model, prompt, n):
    """Greedy decoding with a full forward over the (last n_ctx) tokens at every step."""
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(model(torch.tensor([tokens[-CFG.n_ctx:]]))[0, -1].argmax()))
    return tokens


def no_hooks(model):
    return not any(p.has_hooks for p in model.hook_points.values())


@pytest.mark.parametrize("transcoder", [False, True])
@pytest.mark.parametrize("mode,value", [("add", 4.0), ("clamp", 6.0)])
@torch.no_grad()
def test_every_position_is_steered_with_and_without_the_cache(transcoder, mode, value):
    model, sae = make_model(), make_sae(transcoder=transcoder)
    seen = []  # the shapes the steered hook point sees, step by step
    with steer(model, sae, LATENT, mode=mode, value=value):
        with model.hooks([(sae.cfg.hook_out or HOOK, lambda x, hook: seen.append(x.shape[1]))]):
            tokens = generate(model, PROMPT, 8, seed=0)
        steered = cached_logits(model, tokens, len(PROMPT))
        full = model(torch.tensor([tokens]))
        # past n_ctx generate recomputes the window: still steered at every position
        assert generate(model, PROMPT, 20, temperature=0) == greedy_without_cache(model, PROMPT, 20)
    assert seen == [len(PROMPT)] + [1] * 7  # the prompt, then each new token's position
    torch.testing.assert_close(steered, full, rtol=1e-4, atol=1e-5)
    plain = cached_logits(model, tokens, len(PROMPT))
    # generated positions are steered too, not just the prompt (as in SAELens's tutorial)
    assert (steered - plain)[0, len(PROMPT):].abs().amax(-1).min() > 1e-4


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("transcoder", [False, True])
@torch.no_grad()
def test_clamp_is_encode_set_decode_plus_the_error_term(kind, transcoder):
    model = make_model()
    sae = make_sae(kind, transcoder, **({"skip_connection": True} if transcoder else {}))
    if transcoder:
        torch.nn.init.normal_(sae.W_skip, std=0.1)
    tokens, hook_out = torch.tensor([PROMPT]), sae.cfg.hook_out or HOOK
    _, before = model.run_with_cache(tokens, names=[sae.cfg.hook_in, hook_out])
    with steer(model, sae, LATENT, mode="clamp", value=2.5):
        _, after = model.run_with_cache(tokens, names=[hook_out])
    x, y = before[sae.cfg.hook_in], before[hook_out]
    out = sae(x)
    latents = out.latents.clone()
    latents[..., LATENT] = 2.5
    skip = x @ sae.W_skip if transcoder else 0
    expected = sae.decode(latents) + skip + (y - out.reconstruction)
    torch.testing.assert_close(after[hook_out], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transcoder", [False, True])
@torch.no_grad()
def test_clamp_at_the_current_activation_and_add_zero_are_no_ops(transcoder):
    model, sae = make_model(), make_sae(transcoder=transcoder)
    # a latent that reads nothing and is always 0.7: clamping it at 0.7 changes nothing
    sae.W_enc[:, LATENT] = 0.0
    sae.b_enc[LATENT] = 0.7
    tokens = torch.tensor([PROMPT + [3, 4, 8]])
    plain = model(tokens)
    with steer(model, sae, LATENT, mode="clamp", value=0.7):
        torch.testing.assert_close(model(tokens), plain, rtol=1e-5, atol=1e-6)
    with steer(model, sae, LATENT, mode="add", value=0.0):
        assert torch.equal(model(tokens), plain)
    # a live latent on one position: clamped at what it reads there
    fresh = make_sae(transcoder=transcoder)
    _, cache = model.run_with_cache(tokens[:, :1], names=[sae.cfg.hook_in])
    live = int(fresh.encode(cache[sae.cfg.hook_in])[0, 0].argmax())
    f = float(latent_activation(fresh, cache[sae.cfg.hook_in], live))
    assert f > 0
    with steer(model, fresh, live, mode="clamp", value=f):
        torch.testing.assert_close(model(tokens[:, :1]), plain[:, :1], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_steered_generations_side_by_side_strength_zero_is_unsteered():
    model, sae = make_model(), make_sae()
    # a random model's logits are nearly flat: a low temperature lets steering show
    rows = steered_generations(model, sae, LATENT, [0.0, 20.0, 60.0], PROMPT,
                               max_new_tokens=10, seed=3, temperature=0.05)
    assert rows[0] == generate(model, PROMPT, 10, seed=3, temperature=0.05)
    assert all(len(r) == len(PROMPT) + 10 and r[:len(PROMPT)] == PROMPT for r in rows)
    assert rows[2] != rows[0]  # a strong push changes what is written
    assert no_hooks(model)


@torch.no_grad()
def test_unfolded_scales_steer_as_the_folded_sae_does():
    model, sae = make_model(), make_sae("topk")
    sae.input_scale.fill_(3.0)
    sae.output_scale.fill_(2.0)
    folded = copy.deepcopy(sae)
    folded.fold_scale()
    tokens = torch.tensor([PROMPT])
    for mode in ("add", "clamp"):
        with steer(model, sae, LATENT, mode=mode, value=5.0):
            a = model(tokens)
        with steer(model, folded, LATENT, mode=mode, value=5.0 / 2.0):  # latents / s_out
            torch.testing.assert_close(model(tokens), a, rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_after_the_block_and_after_an_exception():
    model, sae = make_model(), make_sae(transcoder=True)
    with steer(model, sae, LATENT, mode="clamp", value=1.0):
        assert not no_hooks(model)
    assert no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), steer(model, sae, LATENT, value=1.0):
        raise RuntimeError("boom")
    assert no_hooks(model)


@pytest.mark.parametrize("kwargs,match", [
    (dict(latent=48), "latent must be an int in 0..47"),
    (dict(latent=-1), "latent must be an int"),
    (dict(latent=1.5), "latent must be an int"),
    (dict(mode="multiply"), "mode must be one of"),
    (dict(sae=dict(hook_in="blocks.5.hook_resid_pre")), "no hook point 'blocks.5"),
    (dict(sae=dict(hook_in="blocks.1.hook_resid_pre", hook_out="blocks.0.hook_mlp_out")),
     "reads 'blocks.1.hook_resid_pre' after it writes"),
])
def test_bad_input_is_a_one_line_error(kwargs, match):
    model = make_model()
    sae_cfg = kwargs.pop("sae", {})
    sae = SparseAutoencoder(SAEConfig(kind="relu", d_sae=48, **{"hook_in": HOOK, **sae_cfg}), d_in=32)
    args = {"latent": LATENT, "mode": "add", **kwargs}
    with pytest.raises(ValueError, match=match) as error, \
            steer(model, sae, args["latent"], mode=args["mode"], value=1.0):
        pass
    assert "\n" not in str(error.value)
    assert no_hooks(model)


def test_a_hook_of_the_wrong_width_says_so():
    model = make_model()
    sae = SparseAutoencoder(SAEConfig(kind="relu", d_sae=48, hook_in="blocks.0.mlp.hook_post"), d_in=32)
    with pytest.raises(ValueError, match="width 64 but the SAE writes d_out=32"), \
            steer(model, sae, LATENT, value=1.0):
        model(torch.tensor([PROMPT]))
