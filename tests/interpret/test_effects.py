import math

import numpy as np
import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.interpret.effects import causal_effects, mean_effect, prompt_latents, val_prompts
from tinycourse.interpret.steering import steer
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

N_CTX, D, START = 16, 32, 0
HOOK = "blocks.1.hook_resid_pre"
TRANSCODER = {"hook_in": "blocks.0.ln2.hook_normalized", "hook_out": "blocks.0.hook_mlp_out"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


def sae_of(transcoder=False, kind="relu"):
    hooks = TRANSCODER if transcoder else {"hook_in": HOOK}
    return SparseAutoencoder(SAEConfig(kind=kind, d_sae=24, k=4, **hooks), d_in=D).eval()


def split_tokens(n=200, seed=0):
    """A token stream with a start token (0) every 10-20 tokens, as shards hold stories."""
    g = np.random.default_rng(seed)
    tokens = g.integers(1, 64, n)
    at = 0
    while at < n:
        tokens[at] = START
        at += int(g.integers(10, 20))
    return tokens.astype(np.uint16)


def brute_force(model, sae, tokens, latent, p, *, start_id):
    """One context by hand: the scan's window, clean and with the latent clamped to 0
    (steer's clamp is the spliced model with that latent zeroed, error kept) everywhere
    but at start tokens."""
    start = p // N_CTX * N_CTX
    ids = torch.tensor(tokens[start:start + N_CTX].astype(np.int64))[None]
    target = int(tokens[p + 1])
    clean = -torch.log_softmax(model(ids)[0, p - start], -1)[target]
    with steer(model, sae, latent, mode="clamp", value=0.0):
        ablated_all = model(ids)
    if (ids == start_id).any():
        # steer clamps every position; leave the start tokens alone as causal_effects does
        keep = (ids != start_id)
        stream = {}
        with model.hooks([(steer_site(sae), lambda x, hook: stream.__setitem__("clean", x))]):
            model(ids)
        with steer(model, sae, latent, mode="clamp", value=0.0):
            with model.hooks([(steer_site(sae), lambda x, hook: torch.where(keep[..., None], x, stream["clean"]))]):
                ablated_all = model(ids)
    ablated = -torch.log_softmax(ablated_all[0, p - start], -1)[target]
    return float(ablated - clean)


def steer_site(sae):
    return sae.cfg.hook_out if sae.is_transcoder else sae.cfg.hook_in


@pytest.mark.parametrize("transcoder", [False, True])
def test_effects_equal_ablating_one_latent_by_hand(model, transcoder):
    sae = sae_of(transcoder)
    tokens = split_tokens()
    g = torch.Generator().manual_seed(1)
    positions = torch.randint(1, len(tokens) - 1, (sae.d_sae, 3), generator=g)
    positions[2, 1] = -1  # an empty slot
    positions[4, 0] = len(tokens) - 1  # no next token
    with torch.no_grad():
        effects = causal_effects(model, sae, tokens, positions, start_id=START, batch_size=5,
                                 progress=False)
    assert effects.shape == (sae.d_sae, 3)
    assert math.isnan(effects[2, 1]) and math.isnan(effects[4, 0])
    checked = 0
    for latent in range(0, sae.d_sae, 5):
        for slot in range(3):
            p = int(positions[latent, slot])
            if p < 0 or p + 1 >= len(tokens):
                continue
            with torch.no_grad():
                expected = brute_force(model, sae, tokens, latent, p, start_id=START)
            assert float(effects[latent, slot]) == pytest.approx(expected, abs=2e-5)
            checked += 1
    assert checked >= 10
    # a latent that is active somewhere has some effect: not everything is zero
    assert effects.nan_to_num(0).abs().max() > 1e-4


def test_a_latent_that_never_fires_has_no_effect(model):
    sae = sae_of()
    with torch.no_grad():
        sae.b_enc[3] = -1e4  # never active
    tokens = split_tokens()
    positions = torch.full((sae.d_sae, 2), 40)
    effects = causal_effects(model, sae, tokens, positions, start_id=START, progress=False)
    assert effects[3].abs().max() < 1e-5  # rounding only: the same logits by another batch shape


def test_mean_effect_skips_missing_contexts():
    effects = torch.tensor([[1.0, 3.0], [math.nan, 2.0], [math.nan, math.nan]])
    mean = mean_effect(effects)
    assert mean[:2].tolist() == [2.0, 2.0] and math.isnan(mean[2])


def test_prompt_latents_are_the_encoded_activations_largest_first(model):
    sae = sae_of()
    ids = [START, 5, 9, 12, 5]
    view = prompt_latents(model, sae, ids, top=3)
    _, cache = model.run_with_cache(torch.tensor([ids]), names=[HOOK])
    with torch.no_grad():
        f = sae.encode(cache[HOOK][0])
    assert view["ids"] == ids and len(view["top"]) == len(ids)
    for position, row in enumerate(view["top"]):
        values = [a for _, a in row]
        assert values == sorted(values, reverse=True) and all(a > 0 for a in values)
        for latent, activation in row:
            assert activation == pytest.approx(float(f[position, latent]), abs=1e-3)
        assert len(row) == min(3, int((f[position] > 0).sum()))


def test_bad_input_is_a_one_line_error(model):
    sae = sae_of()
    with pytest.raises(ValueError, match=r"longer than the model's n_ctx=16: shorten"):
        prompt_latents(model, sae, list(range(1, 20)))
    with pytest.raises(ValueError, match="no tokens"):
        prompt_latents(model, sae, [])
    other = SparseAutoencoder(SAEConfig(kind="relu", hook_in="blocks.7.hook_resid_pre", d_sae=8), d_in=D)
    with pytest.raises(ValueError, match="no hook point 'blocks.7.hook_resid_pre'"):
        causal_effects(model, other, split_tokens(), torch.zeros(8, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="pass the scan of this SAE"):
        causal_effects(model, sae, split_tokens(), torch.zeros(5, 1, dtype=torch.long))


def test_val_prompts_start_at_start_tokens_and_fit_the_context():
    tokens = split_tokens()
    prompts = val_prompts(tokens, START, 3, N_CTX)
    starts = np.flatnonzero(tokens == START)
    assert len(prompts) == 3
    for prompt, at in zip(prompts, starts):
        assert prompt[0] == START and len(prompt) <= N_CTX
        assert prompt == tokens[at:at + len(prompt)].astype(int).tolist()
