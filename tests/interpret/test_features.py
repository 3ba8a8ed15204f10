import json

import numpy as np
import pytest
import torch

from tinycourse.config import (
    ConfigError,
    FeaturesConfig,
    ModelConfig,
    SAEConfig,
    apply_overrides,
    preset,
)
from tinycourse.interpret.features import (
    CHECKPOINT,
    DATA,
    INDEX,
    ScanState,
    context_windows,
    latent_record,
    load_features,
    naive_top_contexts,
    scan_features,
)
from tinycourse.interpret.logits import (
    direct_logit_attribution,
    logit_histogram,
    top_logit_tokens,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

N_CTX, D = 16, 32
HOOK = "blocks.1.hook_resid_pre"
TRANSCODER = {"hook_in": "blocks.0.ln2.hook_normalized", "hook_out": "blocks.0.hook_mlp_out"}
CFG = FeaturesConfig(n_tokens=0, top_k=4, context=3, quantile_samples=3, reservoir=8, hist_bins=12,
                     top_logits=5, batch_size=4, checkpoint_every=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    """Random 'stories' of 5-20 tokens (ids 1..63), each after a start token (id 0)."""
    return random_shards(tmp_path / "shards", train_tokens=500, val_tokens=700)


def sae_of(kind="relu", d_sae=48, **kw):
    return SparseAutoencoder(SAEConfig(kind=kind, hook_in=kw.pop("hook_in", HOOK), d_sae=d_sae, k=4, **kw),
                             d_in=D).eval()


def random_acts(n=300, d_sae=20, seed=0):
    """Sparse non-negative activations with ties (values on a coarse grid), a latent that
    never fires (column 3) and one that fires on fewer tokens than k (column 5)."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randint(0, 5, (n, d_sae), generator=g).float() * (torch.rand(n, d_sae, generator=g) < 0.2)
    acts[:, 3] = 0
    acts[:, 5] = 0
    acts[[7, 100], 5] = 2.0
    return acts


def scan_in_batches(acts, cfg, batch):
    state = ScanState(acts.shape[1], cfg)
    for a in range(0, len(acts), batch):
        state.update(acts[a : a + batch], torch.arange(a, min(a + batch, len(acts))))
    return state


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_bounded_top_k_equals_the_naive_sort_ties_included(batch):
    acts = random_acts()
    cfg = FeaturesConfig(top_k=6)
    values, positions = scan_in_batches(acts, cfg, batch).top()
    ref_values, ref_positions = naive_top_contexts(acts, 6)
    np.testing.assert_array_equal(values.numpy(), ref_values)
    np.testing.assert_array_equal(positions.numpy(), ref_positions)
    assert (values[3] == 0).all() and (positions[3] == -1).all()  # never fires
    assert positions[5].tolist() == [7, 100, -1, -1, -1, -1]  # fewer than k
    assert len(set(ref_values[0].tolist())) < 6  # there really were ties to break


def test_state_memory_does_not_grow_with_tokens():
    cfg = FeaturesConfig(top_k=6, reservoir=8)
    small = scan_in_batches(random_acts(n=120), cfg, 10)
    large = scan_in_batches(random_acts(n=3000), cfg, 10)
    assert small.nbytes == large.nbytes
    assert all(small.t[name].shape == large.t[name].shape for name in small.t)


def test_density_mean_histogram_and_reservoir_follow_the_activations():
    acts = random_acts()
    cfg = FeaturesConfig(top_k=4, reservoir=16, quantile_samples=4, hist_bins=24)
    state = ScanState(acts.shape[1], cfg)
    g = torch.Generator().manual_seed(1)
    for a in range(0, len(acts), 32):
        chunk = acts[a : a + 32]
        state.update(chunk, torch.arange(a, a + len(chunk)), torch.rand(chunk.shape, generator=g))
    fires = acts > 0
    assert state.t["n_active"].tolist() == fires.sum(0).tolist()
    assert state.t["hist"].sum(1).tolist() == fires.sum(0).tolist()
    mean = state.t["sum_active"] / state.t["n_active"].clamp_min(1)
    torch.testing.assert_close(mean.float(), (acts.sum(0) / fires.sum(0).clamp_min(1)))
    # reservoir entries are real active tokens with their own values
    filled = torch.isfinite(state.t["res_scores"])
    pos, val = state.t["res_positions"][filled], state.t["res_values"][filled]
    rows = filled.nonzero()[:, 0]
    assert (acts[pos, rows] == val).all() and (val > 0).all()
    assert filled.sum(1).tolist() == fires.sum(0).clamp(max=16).tolist()
    levels, q_values, q_positions = state.quantile_samples()
    assert levels.tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])
    assert (q_positions[3] == -1).all() and (q_values[3] == 0).all()
    live = q_positions[0] >= 0
    assert (acts[q_positions[0][live], 0] == q_values[0][live]).all()
    assert (q_values[0].diff() >= 0).all()  # quantiles rise


def test_context_windows_pad_past_the_ends():
    tokens = np.arange(10, 20)
    windows = context_windows(tokens, torch.tensor([[0, 9, -1]]), 2)
    assert windows.tolist() == [[[-1, -1, 10, 11, 12], [17, 18, 19, -1, -1], [-1] * 5]]


def test_scan_writes_the_index_and_tensors_and_its_top_contexts_are_right(model, shards, tmp_path):
    sae = sae_of()
    index = scan_features(model, sae, shards, CFG, tmp_path / "f", progress=False, log=lambda _: None)
    assert (tmp_path / "f" / DATA).is_file() and (tmp_path / "f" / INDEX).is_file()
    assert not (tmp_path / "f" / CHECKPOINT).exists()
    feats = load_features(tmp_path / "f")
    assert feats["index"] == json.loads((tmp_path / "f" / INDEX).read_text()) == index
    val = np.asarray(shards.tokens("val"), dtype=np.int64)
    n_windows = len(val) // N_CTX
    assert index["n_windows"] == n_windows
    # the reference: every activation kept, start-token positions left out
    tokens = torch.from_numpy(val[: n_windows * N_CTX].reshape(n_windows, N_CTX))
    _, cache = model.run_with_cache(tokens, names=[HOOK])
    acts = sae.encode(cache[HOOK].reshape(-1, D))
    acts[tokens.reshape(-1) == 0] = 0
    assert index["n_tokens"] == int((tokens != 0).sum())
    ref_values, ref_positions = naive_top_contexts(acts, CFG.top_k)
    np.testing.assert_allclose(feats["top_values"].numpy(), ref_values, rtol=1e-5)
    np.testing.assert_array_equal(feats["top_positions"].numpy(), ref_positions)
    torch.testing.assert_close(feats["density"], ((acts > 0).sum(0) / index["n_tokens"]).float())
    # the window's middle is the activating token itself
    live = feats["top_positions"] >= 0
    centre = feats["top_windows"][..., CFG.context]
    assert (centre[live].numpy() == val[feats["top_positions"][live].numpy()]).all()
    assert feats["top_windows"].shape == (48, CFG.top_k, 2 * CFG.context + 1)
    assert index["alive"] == int(((acts > 0).sum(0) > 0).sum())
    assert feats["dla_boost_ids"].shape == (48, CFG.top_logits)
    record = latent_record(feats, 0)
    assert record["density"] == pytest.approx(float(feats["density"][0]))


def test_resume_after_a_stop_gives_identical_files(model, shards, tmp_path):
    sae = sae_of()
    scan_features(model, sae, shards, CFG, tmp_path / "whole", progress=False, log=lambda _: None)
    lines = []
    stopped = scan_features(model, sae, shards, CFG, tmp_path / "parts", progress=False,
                            stop_after=5, log=lines.append)
    assert stopped["stopped_after"] == 5 and not (tmp_path / "parts" / INDEX).exists()
    assert (tmp_path / "parts" / CHECKPOINT).exists()
    scan_features(model, sae, shards, CFG, tmp_path / "parts", progress=False, log=lines.append)
    resumed = f"[features] resuming from batch 5 of {stopped['n_batches']} ({tmp_path / 'parts' / CHECKPOINT})"
    assert lines == [resumed]
    for name in (DATA, INDEX):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()
    assert not (tmp_path / "parts" / CHECKPOINT).exists()


def test_a_checkpoint_for_other_settings_is_ignored(model, shards, tmp_path):
    sae = sae_of()
    scan_features(model, sae, shards, CFG, tmp_path / "f", progress=False, stop_after=3, log=lambda _: None)
    lines = []
    other = FeaturesConfig(**{**CFG.__dict__, "top_k": 3})
    scan_features(model, sae, shards, other, tmp_path / "f", progress=False, log=lines.append)
    assert lines and lines[0].startswith("[features] ignoring")
    assert load_features(tmp_path / "f")["top_values"].shape[1] == 3


def test_transcoder_scan_and_its_logit_attribution(model, shards, tmp_path):
    sae = SparseAutoencoder(SAEConfig(kind="topk", d_sae=40, k=4, **TRANSCODER), d_in=D, d_out=D).eval()
    index = scan_features(model, sae, shards, CFG, tmp_path / "t", progress=False, log=lambda _: None)
    feats = load_features(tmp_path / "t", hook=TRANSCODER["hook_out"])
    assert index["is_transcoder"] and index["hook_out"] == TRANSCODER["hook_out"]
    assert index["dla"]["skipped"] is None and feats["dla_boost_ids"].shape == (40, CFG.top_logits)
    # the latents are the transcoder's, from hook_in
    val = np.asarray(shards.tokens("val"), dtype=np.int64)
    tokens = torch.from_numpy(val[: index["n_windows"] * N_CTX].reshape(-1, N_CTX))
    _, cache = model.run_with_cache(tokens, names=[TRANSCODER["hook_in"]])
    acts = sae.encode(cache[TRANSCODER["hook_in"]].reshape(-1, D))
    acts[tokens.reshape(-1) == 0] = 0
    np.testing.assert_array_equal(feats["top_positions"].numpy(), naive_top_contexts(acts, CFG.top_k)[1])


def test_logit_attribution_equals_a_hand_computation_through_the_final_norm(model, shards, tmp_path):
    sae = sae_of()
    index = scan_features(model, sae, shards, CFG, tmp_path / "f", progress=False, log=lambda _: None)
    # the scale: mean 1/std of the final residual over the counted tokens
    val = np.asarray(shards.tokens("val"), dtype=np.int64)
    tokens = torch.from_numpy(val[: index["n_windows"] * N_CTX].reshape(-1, N_CTX))
    final = "blocks.1.hook_resid_post"
    _, cache = model.run_with_cache(tokens, names=[final])
    resid = cache[final].reshape(-1, D)[tokens.reshape(-1) != 0].double()
    scale = (1 / (resid.var(-1, unbiased=False) + 1e-5).sqrt()).mean().item()
    assert index["ln_scale"] == pytest.approx(scale, rel=1e-5)
    # by hand: the decoder row centred, scaled, times the norm's weight, then W_U
    effects = direct_logit_attribution(model, sae, scale)
    w, W_U = model.ln_final.weight.detach(), model.unembed.weight.detach().T
    for i in (0, 17):
        row = sae.W_dec[i].detach()
        expected = ((row - row.mean()) * scale * w) @ W_U
        torch.testing.assert_close(effects[i], expected)
        # the same through the model's own modules: the norm's weight, then its unembed
        frozen = (row - row.mean()) * scale * model.ln_final.weight
        torch.testing.assert_close(effects[i], model.unembed(frozen).detach())
    feats = load_features(tmp_path / "f")
    tops = top_logit_tokens(effects, CFG.top_logits)
    assert torch.equal(feats["dla_boost_ids"], tops["boost_ids"])
    assert (feats["dla_boost_values"][:, :-1] >= feats["dla_boost_values"][:, 1:]).all()
    counts, edges = logit_histogram(effects, 12)
    assert (counts.sum(1) == model.cfg.d_vocab).all() and edges[0] == -edges[-1]


def test_rmsnorm_and_no_norm_attribution(shards):
    for norm in ("rmsnorm", "none"):
        model = GPT(ModelConfig(n_layers=1, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                                d_vocab=64, norm=norm)).eval()
        sae = sae_of(hook_in="blocks.0.hook_resid_post")
        effects = direct_logit_attribution(model, sae, 2.0)
        row = sae.W_dec[3].detach()
        if norm == "rmsnorm":
            row = row * 2.0 * model.ln_final.weight.detach()
        torch.testing.assert_close(effects[3], row @ model.W_U.detach())


def test_bad_input_gives_one_line_errors_that_say_what_to_do(model, shards, tmp_path):
    with pytest.raises(ValueError, match="no hook for") as error:
        scan_features(model, sae_of(hook_in="blocks.7.hook_resid_pre"), shards, CFG, tmp_path, progress=False)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="residual stream") as error:
        direct_logit_attribution(model, sae_of(hook_in="blocks.0.ln2.hook_normalized"), 1.0)
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="--stages features"):
        load_features(tmp_path / "nothing")
    scan_features(model, sae_of(), shards, CFG, tmp_path / "f", progress=False, log=lambda _: None)
    feats = load_features(tmp_path / "f")
    with pytest.raises(IndexError, match="pick 0..47") as error:
        latent_record(feats, 48)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no dictionary at 'blocks.0.hook_resid_pre'") as error:
        load_features(tmp_path / "f", hook="blocks.0.hook_resid_pre")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="quantile_samples"):
        FeaturesConfig(quantile_samples=9, reservoir=8)
    with pytest.raises(ConfigError, match="features.top_k"):
        apply_overrides(preset("tiny"), ["features.top_k=0"])
    assert apply_overrides(preset("tiny"), ["features.top_k=3"]).features.top_k == 3


def test_a_non_residual_dictionary_is_scanned_without_attribution(model, shards, tmp_path):
    sae = sae_of(hook_in="blocks.0.ln2.hook_normalized")
    index = scan_features(model, sae, shards, CFG, tmp_path / "f", progress=False, log=lambda _: None)
    assert "not in the residual stream" in index["dla"]["skipped"]
    assert "dla_boost_ids" not in load_features(tmp_path / "f")


def test_the_report_section_escapes_token_text():
    from tinycourse.report.page import render

    hostile = "<b>x</b>&"
    row = {"latent": 1, "density": 0.5, "mean": 1.0, "max": 2.0, "before": hostile, "token": hostile,
           "after": hostile, "boost": [hostile], "suppress": [hostile]}
    page = render("features.html", anchor="features", rows=[row], summary={"seconds": 1.0},
                  index={"n_tokens": 1234, "hook_in": "h", "d_sae": 8, "alive": 3, "mean_density": 0.1,
                         "ln_scale": 1.0, "is_transcoder": False}, dla_skipped=None, density_figure=None)
    assert '<section id="features">' in page and "1,234 validation tokens" in page
    assert "<b>x</b>" not in page and page.count("&lt;b&gt;x&lt;/b&gt;&amp;") == 5
    assert "<b>&lt;b&gt;" in page  # the activating token: bold, its text escaped


def naive_reservoir(acts, keys, r):
    """The plain way: each latent's active tokens sorted by key, ties by earliest position;
    the first r. -> (positions (d_sae, r), -1 where fewer; values (d_sae, r), 0 there)."""
    d_sae = acts.shape[1]
    positions = torch.full((d_sae, r), -1, dtype=torch.int64)
    values = torch.zeros(d_sae, r)
    for latent in range(d_sae):
        active = [(float(keys[p, latent]), p) for p in (acts[:, latent] > 0).nonzero()[:, 0].tolist()]
        for slot, (_, p) in enumerate(sorted(active)[:r]):
            positions[latent, slot], values[latent, slot] = p, acts[p, latent]
    return positions, values


@pytest.mark.parametrize("batch", [1, 13, 300])
def test_reservoir_keeps_the_smallest_keys_ties_by_earliest_position(batch):
    acts = random_acts()
    keys = torch.randint(0, 4, acts.shape).float() / 4  # coarse, so keys tie
    cfg = FeaturesConfig(reservoir=8, quantile_samples=3)
    state = ScanState(acts.shape[1], cfg)
    for a in range(0, len(acts), batch):
        state.update(acts[a : a + batch], torch.arange(a, min(a + batch, len(acts))), keys[a : a + batch])
    ref_positions, ref_values = naive_reservoir(acts, keys, 8)
    assert torch.equal(state.t["res_positions"], ref_positions)
    assert torch.equal(state.t["res_values"], ref_values)
    filled = ref_positions >= 0
    assert torch.equal(torch.isfinite(state.t["res_scores"]), filled)
    rows = filled.nonzero()[:, 0]
    assert torch.equal(-state.t["res_scores"][filled], keys[ref_positions[filled], rows])


def test_generator_keys_are_drawn_for_the_active_entries_only_by_token_then_latent():
    acts = random_acts(n=120)
    drawn, given = ScanState(acts.shape[1], CFG), ScanState(acts.shape[1], CFG)
    drawn.update(acts, torch.arange(120), torch.Generator().manual_seed(7))
    # the same keys, laid out densely: one per active entry, in row-major (token, latent) order
    dense = torch.full(acts.shape, 5.0)
    dense[acts > 0] = torch.rand(int((acts > 0).sum()), generator=torch.Generator().manual_seed(7))
    given.update(acts, torch.arange(120), dense)
    for name in drawn.t:
        assert torch.equal(drawn.t[name], given.t[name]), name


def test_reservoir_is_a_uniform_sample_of_active_tokens():
    """300 latents all active on the same 400 tokens, in 8 batches: each latent's 16 kept
    tokens should be spread evenly over the batches, whatever the activation."""
    n, d_sae, r, batch = 400, 300, 16, 50
    acts = torch.rand(n, d_sae) + 0.01
    acts[: n // 2] *= 10  # the first half activates ten times as strongly: must not matter
    state = ScanState(d_sae, FeaturesConfig(reservoir=r, quantile_samples=3))
    for b, a in enumerate(range(0, n, batch)):
        state.update(acts[a : a + batch], torch.arange(a, a + batch), torch.Generator().manual_seed(b))
    picked = state.t["res_positions"]
    assert (picked >= 0).all() and all(len(set(row.tolist())) == r for row in picked)
    counts = torch.bincount(picked.reshape(-1) // batch, minlength=n // batch).double()
    expected = d_sae * r / (n // batch)  # 600 a batch
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3, (counts.tolist(), chi2)  # chi-square, 7 degrees of freedom: p = 0.001
    assert abs(float((picked < n // 2).double().mean()) - 0.5) < 0.03


def test_a_batch_with_no_active_entries_only_counts_tokens():
    acts = random_acts(n=120)
    state = scan_in_batches(acts, CFG, 10)
    before = {name: t.clone() for name, t in state.t.items()}
    state.update(torch.zeros(5, acts.shape[1]), torch.arange(120, 125), torch.Generator().manual_seed(0))
    for name, t in state.t.items():
        expected = before[name] + 5 if name == "n_tokens" else before[name]
        assert torch.equal(t, expected), name
