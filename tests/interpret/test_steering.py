"""Steering: every position (prompt, cached steps, sliding window), the no-op cases, the
clamp formula, transcoders, cleanup and errors, on a tiny random GPT and random SAEs; the
sweep's effect and cost on a planted latent, against hand-computed losses and counts."""

import copy

import pytest
import torch

from tinycourse.config import ModelConfig, SAEConfig
from tinycourse.corpus.storyworld import PLACES
from tinycourse.interpret.logits import direct_logit_attribution
from tinycourse.interpret.steering import (concept_token_ids, heldout_loss, latent_activation,
                                           latents_boosting, place_words, steer,
                                           steered_generations, steering_sweep)
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


# --- the sweep: effect (concept share) and cost (held-out loss) ---------------------------

LAST = "blocks.1.hook_resid_post"  # only the final norm and the unembedding come after it
PROMPTS = [[1, 5, 9, 2, 7], [3, 3, 8], [10, 20, 30, 40], [7], [50, 51], [33, 2, 11]]
STRENGTHS = [0.0, 0.1, 0.2, 0.5, 2.0]


def confident_model():
    """The tiny random GPT with its final norm's gain raised 10x: a random model's logits
    are nearly flat, so a push toward one token would barely show in samples at T=1."""
    model = make_model()
    with torch.no_grad():
        model.ln_final.weight.mul_(10.0)
    return model


def planted(model, token):
    """An SAE on the last residual whose latent LATENT writes the unit unembedding
    direction of `token`: adding it raises that token's logit above all others."""
    torch.manual_seed(1)
    sae = SparseAutoencoder(SAEConfig(kind="relu", d_sae=48, hook_in=LAST), d_in=32).eval()
    with torch.no_grad():
        u = model.W_U[:, token]
        sae.W_dec[LATENT] = u / u.norm()
    return sae


def unwritten_token(model, n, **sampling):
    """A token the unsteered model never writes from PROMPTS: its share starts at 0."""
    rows = [generate(model, p, n, seed=j, **sampling) for j, p in enumerate(PROMPTS)]
    written = {t for p, r in zip(PROMPTS, rows) for t in r[len(p):]}
    return min(set(range(CFG.d_vocab)) - written)


def reference_loss(model, sae, strength, tokens):
    """The held-out loss with the push added by hand at the hook, log-softmax by hand."""
    direction = sae.W_dec[LATENT].detach()
    with model.hooks([(LAST, lambda x, hook: x + strength * direction)]):
        logits = model(tokens[:, :-1]).double()
    picked = logits.log_softmax(-1).gather(-1, tokens[:, 1:, None])
    return float(-picked.mean())


@torch.no_grad()
def test_strength_zero_in_add_mode_is_the_unsteered_model_exactly():
    model = confident_model()
    sae = planted(model, 6)
    held = torch.randint(0, CFG.d_vocab, (40, 17))  # 40 rows: two held-out batches
    rows = steering_sweep(model, sae, LATENT, [0.0, 1.0], PROMPTS, {6}, held,
                          max_new_tokens=12, seed=5, top_k=20)
    assert rows[0]["generations"] == [generate(model, p, 12, seed=5 + j, top_k=20)
                                      for j, p in enumerate(PROMPTS)]
    assert rows[0]["heldout_loss"] == heldout_loss(model, held)
    assert rows[0]["share_factor"] == 1.0 or rows[0]["share_factor"] is None
    assert rows[0]["loss_increase"] == 0.0
    torch.testing.assert_close(rows[0]["heldout_loss"], reference_loss(model, sae, 0.0, held))
    torch.testing.assert_close(rows[1]["heldout_loss"], reference_loss(model, sae, 1.0, held))
    assert rows[1]["generations"] != rows[0]["generations"]
    assert no_hooks(model)


@torch.no_grad()
def test_a_planted_unembedding_latent_raises_its_token_and_the_loss_with_strength():
    model = confident_model()
    target = unwritten_token(model, 12)
    sae = planted(model, target)
    held = torch.randint(0, CFG.d_vocab, (8, 17))
    rows = steering_sweep(model, sae, LATENT, STRENGTHS, PROMPTS, [target], held,
                          max_new_tokens=12, seed=0)
    shares = [r["concept_share"] for r in rows]
    losses = [r["heldout_loss"] for r in rows]
    # the share, recounted from the generations: prompt tokens never count
    for r in rows:
        written = [t for p, g in zip(PROMPTS, r["generations"]) for t in g[len(p):]]
        assert r["generated_tokens"] == len(written) == 12 * len(PROMPTS)
        assert r["concept_share"] == written.count(target) / len(written)
    assert shares[0] == 0.0 and shares[-1] > 0.5
    assert all(b >= a - 0.05 for a, b in zip(shares, shares[1:]))  # rises, up to sampling noise
    assert all(b > a for a, b in zip(losses, losses[1:]))  # the cost grows with the push
    assert rows[-1]["loss_increase"] > 1.0
    for s, loss in zip(STRENGTHS, losses):
        torch.testing.assert_close(loss, reference_loss(model, sae, s, held))


@torch.no_grad()
def test_latents_boosting_finds_the_planted_latent():
    model = make_model()
    sae = planted(model, 11)
    ids, scores = latents_boosting(model, sae, [11], ln_scale=2.0, n=3)
    assert ids.tolist()[0] == LATENT and ids.dtype == torch.int64
    assert scores[0] > scores[1] >= scores[2]
    # by hand: the centred row through the norm's gain and W_U, token minus vocabulary mean
    row = sae.W_dec[LATENT] - sae.W_dec[LATENT].mean()
    effect = (row * 2.0 * model.ln_final.weight) @ model.W_U
    torch.testing.assert_close(scores[0], effect[11] - effect.mean())
    every = direct_logit_attribution(model, sae, 2.0)  # (d_sae, d_vocab)
    torch.testing.assert_close(scores, (every[:, 11] - every.mean(1))[ids])
    # against other tokens: the mean over those is subtracted instead
    ids, scores = latents_boosting(model, sae, [11], ln_scale=2.0, n=48, against=[2, 30])
    torch.testing.assert_close(scores, (every[:, 11] - every[:, [2, 30]].mean(1))[ids])
    assert ids[0] == LATENT and sorted(ids.tolist()) == list(range(48))


class FakeTokenizer:
    """Encodes from a table: 'sand' one token either way, 'castle' three after a space."""
    TABLE = {"sand": [4], " sand": [5], "castle": [9], " castle": [6, 7, 8], "sea": [1, 2],
             " sea": [3, 2]}

    def encode(self, text):
        return self.TABLE[text]


def test_concept_token_ids_keeps_single_token_forms_unless_asked_for_first_pieces():
    tok = FakeTokenizer()
    assert concept_token_ids(tok, ["sand", "castle", "sea"]) == [4, 5, 9]
    assert concept_token_ids(tok, ["sand", "castle", "sea"], multi_token="first") == [1, 3, 4, 5, 6, 9]
    assert concept_token_ids(tok, "sand") == [4, 5]
    with pytest.raises(ValueError, match="none of 1 words encodes to a single token"):
        concept_token_ids(tok, ["sea"])


def test_place_words_reads_the_storyworld_tables():
    words = place_words("beach")
    assert {"sand", "waves", "shell", "beach"} <= set(words) and words == sorted(words)
    assert set(words) == PLACES["beach"].words
    with pytest.raises(ValueError, match="unknown place 'moon': storyworld's places are park"):
        place_words("moon")


@pytest.mark.parametrize("change,match", [
    (dict(strengths=[]), "strengths must be a non-empty list"),
    (dict(strengths=[1.0, float("nan")]), "strengths must be a non-empty list of finite"),
    (dict(strengths="big"), "strengths must be a list of numbers"),
    (dict(prompts=[]), "prompts must be a non-empty list of non-empty token lists"),
    (dict(prompts=[1, 2, 3]), "prompts must be a non-empty list of non-empty token lists"),
    (dict(prompts=[[1, 99]]), "prompt ids must be in 0..63"),
    (dict(concept_ids=set()), "concept_ids must be a non-empty set of ids in 0..63"),
    (dict(concept_ids=[64]), "concept_ids must be a non-empty set of ids in 0..63, got 1 ids"),
    (dict(concept_ids=["sand"]), "concept_ids must be token ids"),
    (dict(heldout=torch.zeros(4, 17)), "heldout must be an int64 tensor"),
    (dict(heldout=torch.zeros(17, dtype=torch.int64)), "heldout must be an int64 tensor"),
    (dict(heldout=torch.zeros(2, 30, dtype=torch.int64)), "heldout rows must hold 2..17 tokens"),
    (dict(heldout=torch.full((2, 5), 64)), "heldout ids must be in 0..63"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
    (dict(latent=48), "latent must be an int in 0..47"),
    (dict(mode="push"), "mode must be one of"),
])
def test_sweep_bad_input_is_a_one_line_error(change, match):
    model, sae = make_model(), make_sae()
    args = dict(latent=LATENT, strengths=[0.0, 1.0], prompts=[PROMPT], concept_ids=[3],
                heldout=torch.zeros(2, 9, dtype=torch.int64), max_new_tokens=4, mode="add")
    args.update(change)
    with pytest.raises(ValueError, match=match) as error:
        steering_sweep(model, sae, args.pop("latent"), args.pop("strengths"), args.pop("prompts"),
                       args.pop("concept_ids"), args.pop("heldout"), seed=0, **args)
    assert "\n" not in str(error.value)
    assert no_hooks(model)


def test_latents_boosting_bad_input():
    model, sae = make_model(), make_sae()
    with pytest.raises(ValueError, match="token_ids must be a non-empty set of ids in 0..63"):
        latents_boosting(model, sae, [70], ln_scale=1.0)
    with pytest.raises(ValueError, match="n must be in 1..48"):
        latents_boosting(model, sae, [3], ln_scale=1.0, n=0)
    with pytest.raises(ValueError, match="against must be a non-empty set of ids"):
        latents_boosting(model, sae, [3], ln_scale=1.0, against=[])
