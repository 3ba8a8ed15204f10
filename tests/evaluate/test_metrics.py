import dataclasses
import json

import numpy as np
import pytest
import torch

from tinycourse.config import EvalConfig, ModelConfig, SAEConfig
from tinycourse.evaluate.metrics import (
    LinearBaseline,
    RandomDictionary,
    _Splicer,
    eval_windows,
    evaluate,
    evaluate_with_density,
    latent_densities,
    pareto_front,
    sweep_rows,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

N_CTX, D = 16, 32
HOOK = "blocks.1.hook_resid_pre"
TRANSCODER = {"hook_in": "blocks.0.ln2.hook_normalized", "hook_out": "blocks.0.hook_mlp_out"}
CFG = EvalConfig(n_tokens=600, batch_size=8)


# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model():
    # init_std 0.3 rather than 0.02: a model at the usual init predicts uniformly whatever
    # is spliced in, and every CE difference would be lost in rounding
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    """Random 'stories' of 5-20 tokens (ids 1..63), each after a start token (id 0)."""
    return random_shards(tmp_path, train_tokens=3000, val_tokens=1000)


def identity_sae(hook=HOOK, d=D):
    """relu(x) - relu(-x) = x: a ReLU SAE of width 2d that reconstructs exactly."""
    sae = SparseAutoencoder(SAEConfig(kind="relu", hook_in=hook, d_sae=2 * d), d_in=d)
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def constant_sae(value, hook=HOOK, d=D, d_sae=48, **kw):
    """An SAE whose reconstruction is always `value` (decoder zero, bias = value)."""
    sae = SparseAutoencoder(SAEConfig(kind="relu", hook_in=hook, d_sae=d_sae, **kw), d_in=d)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(value)
    return sae


def kept_windows(shards):
    windows = eval_windows(shards, "val", CFG.n_tokens, N_CTX, start_id=shards.start_id)
    tokens, targets = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])
    return tokens, targets, tokens != shards.start_id


def log_probs_by_hand(model, shards, replace=None):
    """Next-token log-probs at the counted positions by a plain full forward, optionally
    with the activation at HOOK replaced there by `replace(act)`; and their targets."""
    tokens, targets, keep = kept_windows(shards)

    def hook(act, _):
        out = act.clone()
        out[keep] = replace(act)[keep]
        return out

    with torch.no_grad(), model.hooks([(HOOK, hook)] if replace else []):
        logits = model(tokens)
    return logits[keep].log_softmax(-1), targets[keep]


def ce_by_hand(model, shards, replace=None):
    lp, targets = log_probs_by_hand(model, shards, replace)
    return float(torch.nn.functional.nll_loss(lp, targets))


# --- the tokens -----------------------------------------------------------------------------

def test_eval_windows_are_consecutive_windows_with_their_targets(shards):
    val = np.asarray(shards.tokens("val"))
    windows = eval_windows(shards, "val", 300, N_CTX, start_id=0)
    assert windows.shape[1] == N_CTX + 1
    starts = set()
    for w in windows:
        hits = [s for s in range(0, len(val) - N_CTX, N_CTX) if (val[s : s + N_CTX + 1] == w).all()]
        assert hits, "each window is a slice of the split at a multiple of n_ctx"
        starts.add(hits[0])
    assert len(starts) == len(windows)  # no window twice
    counted = (windows[:, :-1] != 0).sum(1)
    assert counted.sum() >= 300 > counted[:-1].sum()  # just enough windows


def test_eval_windows_take_everything_when_the_split_is_short(shards):
    with pytest.warns(UserWarning, match="only"):
        windows = eval_windows(shards, "val", 10**6, N_CTX, start_id=0)
    assert len(windows) == (1000 - 1) // N_CTX


# --- evaluate ---------------------------------------------------------------------------------

LAYOUT = {
    "": {"n_tokens", "hook_in", "hook_out", "kind", "d_sae", "reconstruction", "sparsity",
         "spliced", "baselines"},
    "reconstruction": {"mse", "nmse", "fve", "cosine", "fve_per_channel"},
    "sparsity": {"l0_mean", "l0_hist", "dead_fraction", "dense_fraction", "density_log10_hist",
                 "n_dead", "n_dense"},
    "spliced": {"ce_clean", "ce_spliced", "ce_zero_ablation", "ce_mean_ablation",
                "ce_loss_recovered", "ce_loss_recovered_vs_mean", "kl_spliced"},
}


def test_an_exact_sae_scores_perfectly_in_the_promised_layout(model, shards):
    result = evaluate(model, identity_sae(), shards, CFG, progress=False)
    assert set(result) == LAYOUT[""]
    for section in ("reconstruction", "sparsity", "spliced"):
        assert set(result[section]) == LAYOUT[section]
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    _, _, keep = kept_windows(shards)
    assert result["n_tokens"] == int(keep.sum()) >= CFG.n_tokens
    rec, spliced = result["reconstruction"], result["spliced"]
    assert rec["fve"] == pytest.approx(1, abs=1e-5) and rec["nmse"] == pytest.approx(0, abs=1e-5)
    assert rec["cosine"] == pytest.approx(1, abs=1e-5)
    assert len(rec["fve_per_channel"]) == D and min(rec["fve_per_channel"]) > 0.9999
    assert spliced["ce_spliced"] == pytest.approx(spliced["ce_clean"], abs=1e-5)
    assert spliced["kl_spliced"] == pytest.approx(0, abs=1e-5)
    # a random model on random tokens may even do better without the residual: it only
    # has to differ, or the recovered fraction would be 0 / 0
    assert abs(spliced["ce_zero_ablation"] - spliced["ce_clean"]) > 0.01
    assert spliced["ce_loss_recovered"] == pytest.approx(1, abs=1e-3)
    assert spliced["ce_loss_recovered_vs_mean"] == pytest.approx(1, abs=1e-3)
    # every channel is nonzero, so one of its two latents fires: L0 = d on every token
    assert result["sparsity"]["l0_mean"] == D
    assert result["sparsity"]["l0_hist"]["counts"][-1] == result["n_tokens"]
    # with d coefficients, PCA and the random dictionary are exact too
    base = {row["name"]: row for row in result["baselines"]}
    assert list(base) == ["sae", "pca", "random"]
    assert base["pca"]["coefficients"] == base["random"]["coefficients"] == D
    for row in base.values():
        assert row["fve"] == pytest.approx(1, abs=1e-4)
        assert row["ce_loss_recovered"] == pytest.approx(1, abs=1e-2)


def test_losses_match_a_plain_forward_with_the_activation_replaced(model, shards):
    """The evaluator runs interventions from the hook's block on; a plain full forward
    with the hook replaced must give the same numbers."""
    _, cache = model.run_with_cache(kept_windows(shards)[0], names=HOOK)
    mean = cache[HOOK][kept_windows(shards)[2]].mean(0)
    result = evaluate(model, constant_sae(mean), shards, CFG, progress=False)["spliced"]
    assert result["ce_clean"] == pytest.approx(ce_by_hand(model, shards), rel=1e-5)
    assert result["ce_zero_ablation"] == pytest.approx(
        ce_by_hand(model, shards, torch.zeros_like), rel=1e-5)
    assert result["ce_mean_ablation"] == pytest.approx(
        ce_by_hand(model, shards, lambda a: mean.expand_as(a)), rel=1e-4)
    # an SAE that always outputs the mean *is* the mean ablation
    assert result["ce_spliced"] == pytest.approx(result["ce_mean_ablation"], rel=1e-4)
    assert result["ce_loss_recovered_vs_mean"] == pytest.approx(0, abs=1e-3)
    # KL(clean || spliced), the clean distribution weighting
    clean, _ = log_probs_by_hand(model, shards)
    spliced, _ = log_probs_by_hand(model, shards, lambda a: mean.expand_as(a))
    kl = float((clean.exp() * (clean - spliced)).sum(-1).mean())
    reverse = float((spliced.exp() * (spliced - clean)).sum(-1).mean())
    assert result["kl_spliced"] == pytest.approx(kl, rel=1e-5)
    assert abs(kl - reverse) > 1e-3 * kl  # so the direction is tested


def test_splicer_from_the_block_equals_the_full_forward(model, shards):
    tokens, targets, keep = kept_windows(shards)
    for hook in (HOOK, "blocks.0.hook_mlp_out", "blocks.1.attn.hook_z", "hook_embed"):
        splicer = _Splicer(model, hook, hook)
        with torch.no_grad():
            batch, _ = splicer.clean(tokens, targets, keep)
            values = torch.randn(int(keep.sum()), batch.y.shape[-1])
            got = splicer.log_probs(batch, values)

            def replace(act, _, values=values):
                out = act.flatten(2).clone()
                out[keep] = values
                return out.view_as(act)

            with model.hooks([(hook, replace)]):
                want = model(tokens)[keep].log_softmax(-1)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_transcoder_replaces_the_mlp_output(model, shards):
    d_out = D
    zero = constant_sae(torch.zeros(d_out), hook=TRANSCODER["hook_in"],
                        hook_out=TRANSCODER["hook_out"])
    result = evaluate(model, zero, shards, CFG, progress=False)
    assert (result["hook_in"], result["hook_out"]) == (TRANSCODER["hook_in"], TRANSCODER["hook_out"])
    spliced = result["spliced"]
    assert spliced["ce_spliced"] == pytest.approx(spliced["ce_zero_ablation"], rel=1e-5)
    assert spliced["ce_loss_recovered"] == pytest.approx(0, abs=1e-3)
    assert spliced["ce_zero_ablation"] != pytest.approx(spliced["ce_clean"], rel=1e-4)
    assert [row["name"] for row in result["baselines"]] == ["sae", "pca", "random"]
    # the best linear map from the MLP's input recovers some of its output
    assert result["baselines"][1]["fve"] > 0


def test_a_transcoder_must_read_before_it_writes(model, shards):
    backwards = constant_sae(torch.zeros(D), hook="blocks.1.hook_resid_pre",
                             hook_out="blocks.0.hook_mlp_out")
    with pytest.raises(ValueError, match="comes after"):
        evaluate(model, backwards, shards, CFG, progress=False)


def test_an_sae_of_the_wrong_width_is_refused(model, shards):
    with pytest.raises(ValueError, match="another model"):
        evaluate(model, identity_sae(d=16), shards, CFG, progress=False)


def test_dead_and_dense_latents_are_counted(model, shards):
    sae = SparseAutoencoder(SAEConfig(kind="relu", hook_in=HOOK, d_sae=40), d_in=D)
    with torch.no_grad():
        sae.b_enc[:3] = -1e6  # never fire
        sae.b_enc[3] = 1e6  # always fires
    result = evaluate(model, sae, shards, dataclasses.replace(CFG, dense_threshold=0.9),
                      progress=False)
    density = latent_densities(model, sae, shards, CFG)
    sparsity, n = result["sparsity"], result["n_tokens"]
    assert density.shape == (40,) and (density[:3] == 0).all() and density[3] == 1
    assert sparsity["n_dead"] == int((density == 0).sum()) >= 3
    assert sparsity["dead_fraction"] == sparsity["n_dead"] / 40
    # the eval stage's one-pass variant: the same metrics and the same densities
    metrics, same_pass = evaluate_with_density(
        model, sae, shards, dataclasses.replace(CFG, dense_threshold=0.9), progress=False)
    np.testing.assert_array_equal(same_pass, density)
    assert metrics["sparsity"] == sparsity
    assert sparsity["n_dense"] == int((density > 0.9).sum()) >= 1
    assert sparsity["l0_mean"] == pytest.approx(density.sum())
    assert sum(sparsity["l0_hist"]["counts"]) == n
    hist = sparsity["density_log10_hist"]
    assert sum(hist["counts"]) == 40 - sparsity["n_dead"]  # the dead are counted apart
    assert len(hist["edges"]) == len(hist["counts"]) + 1
    assert hist["edges"][0] <= np.log10(1 / n) and hist["edges"][-1] == pytest.approx(0)


# --- baselines -----------------------------------------------------------------------------------

def test_linear_baseline_is_pca_for_an_sae_and_reduced_rank_regression_for_a_transcoder():
    basis = torch.linalg.qr(torch.randn(12, 3)).Q  # a 3-dim subspace of 12
    x = torch.randn(500, 3) @ basis.T + 5.0  # offset: the mean must be handled
    assert torch.allclose(LinearBaseline(x, x, 3, same_space=True)(x), x, atol=1e-4)
    two = LinearBaseline(x, x, 2, same_space=True)(x)
    assert (two - x).pow(2).sum() > 1.0  # one dimension short
    y = (x - 5.0) @ torch.randn(12, 7) + 1.0  # a linear function of x of rank 3
    assert torch.allclose(LinearBaseline(x, y, 3, same_space=False)(x), y, atol=1e-3)


def test_random_dictionary_fits_its_chosen_atoms_by_least_squares():
    x = torch.randn(200, 10)
    exact = RandomDictionary(x, x, d_sae=40, k=10, same_space=True)
    assert torch.allclose(exact(x), x, atol=1e-4)  # k = d: any point is reachable
    sparse = RandomDictionary(x, x, d_sae=40, k=3, same_space=True)
    codes = sparse.encode(x)
    assert ((codes != 0).sum(1) == 3).all()
    residual = x - sparse(x)
    # least squares: the residual is orthogonal to every atom it used
    used = codes != 0
    along = residual @ sparse.directions.T  # (n, d_sae)
    assert along[used].abs().max() < 1e-4
    assert torch.allclose(sparse(x), sparse.x_mean + codes @ sparse.directions, atol=1e-5)


def test_random_dictionary_transcoder_fits_a_decoder():
    x = torch.randn(800, 8)
    y = x[:, :4] * 2.0
    random = RandomDictionary(x, y, d_sae=64, k=8, same_space=False)
    fve = 1 - (y - random(x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    assert 0.3 < fve < 1  # a random code carries real, incomplete information


# --- sweeps ------------------------------------------------------------------------------------

def test_sweep_rows_and_pareto_front(model, shards):
    saes = {"exact": identity_sae(), "nothing": constant_sae(torch.zeros(D)),
            "exact2": identity_sae()}
    rows = sweep_rows(model, saes, shards, CFG, progress=False)
    assert [row["name"] for row in rows] == list(saes)
    by = {row["name"]: row for row in rows}
    assert by["exact"]["fve"] == pytest.approx(1, abs=1e-5)
    assert by["exact"]["ce_loss_recovered"] == pytest.approx(1, abs=1e-3)
    assert by["nothing"]["ce_loss_recovered"] == pytest.approx(0, abs=1e-3)
    assert by["exact"]["l0"] == D
    # "nothing" decodes to zero but its encoder still fires: its L0 is the mean number of
    # positive pre-activations relu(x W_enc + b_enc) (b_dec = 0) on the counted tokens,
    # from a plain forward (one flipped sign near 0 would move the mean by 1/n)
    tokens, _, keep = kept_windows(shards)
    _, cache = model.run_with_cache(tokens, names=HOOK)
    nothing = saes["nothing"]
    pre = cache[HOOK][keep] @ nothing.W_enc.detach() + nothing.b_enc.detach()
    expected = float((pre > 0).sum(1).double().mean())
    assert 1 < expected < nothing.d_sae - 1  # neither none nor all: the count is tested
    assert by["nothing"]["l0"] == pytest.approx(expected, abs=2 / int(keep.sum()))
    # the same SAE measured alone gives the same figures
    alone = evaluate(model, saes["exact"], shards, CFG, progress=False)
    assert alone["reconstruction"]["fve"] == pytest.approx(by["exact"]["fve"])
    front = pareto_front([{"name": "a", "l0": 1, "fve": 0.5}, {"name": "b", "l0": 2, "fve": 0.4},
                          {"name": "c", "l0": 3, "fve": 0.9}])
    assert front == ["a", "c"]  # b has more latents and explains less than a


# --- devices ---------------------------------------------------------------------------------

def test_a_mismatched_device_is_refused_and_the_model_stays_where_it_was(model, shards):
    """The evaluators run the model where it is: they never move the caller's model."""
    with pytest.raises(ValueError, match=r"model\.to\('meta'\)"):
        evaluate(model, identity_sae(), shards, CFG, device="meta", progress=False)
    with pytest.raises(ValueError, match="device=None"):
        latent_densities(model, identity_sae(), shards, CFG, device="meta")
    with pytest.raises(ValueError, match="on cpu"):
        sweep_rows(model, {"exact": identity_sae()}, shards, CFG, device="meta", progress=False)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    # the model's own device is accepted
    result = evaluate(model, identity_sae(), shards, CFG, device="cpu", progress=False)
    assert result["reconstruction"]["fve"] == pytest.approx(1, abs=1e-5)
