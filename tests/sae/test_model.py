import ast
import copy
import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import tinycourse.sae.model as sae_module
from tinycourse.config import ConfigError, SAEConfig
from tinycourse.sae.model import (
    JumpReLUFunction,
    SparseAutoencoder,
    StepFunction,
    batch_topk_relu,
    geometric_median,
    load_sae,
    sae_loss,
    save_sae,
    topk_relu,
)

KINDS = ("relu", "topk", "batchtopk", "jumprelu")
TRANSCODER = dict(hook_in="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out")


# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(kind="topk", **kw):
    return SAEConfig(kind=kind, d_sae=kw.pop("d_sae", 48), k=kw.pop("k", 4), **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_parameters(kind):
    sae = SparseAutoencoder(cfg(kind), d_in=16)
    out = sae(torch.randn(5, 16))
    assert out.reconstruction.shape == (5, 16)
    assert out.latents.shape == out.pre.shape == (5, 48)
    assert sae.encode(torch.randn(5, 16)).shape == (5, 48)
    assert sae.decode(torch.rand(5, 48)).shape == (5, 16)
    names = {n for n, _ in sae.named_parameters()}
    assert {"W_enc", "b_enc", "W_dec", "b_dec"} <= names
    assert ("log_threshold" in names) == (kind == "jumprelu")
    assert ("inference_threshold" in dict(sae.named_buffers())) == (kind == "batchtopk")
    assert (out.latents >= 0).all()


def test_transcoder_shapes_and_skip():
    sae = SparseAutoencoder(cfg("topk", skip_connection=True, **TRANSCODER), d_in=16, d_out=12)
    assert sae.W_enc.shape == (16, 48) and sae.W_dec.shape == (48, 12) and sae.W_skip.shape == (16, 12)
    x = torch.randn(5, 16)
    with torch.no_grad():
        sae.W_skip.normal_()
    out = sae(x)
    # the skip path is added to the sparse reconstruction
    torch.testing.assert_close(out.reconstruction, sae.decode(out.latents) + x @ sae.W_skip)


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="d_out must equal d_in"):
        SparseAutoencoder(cfg(), d_in=16, d_out=12)
    with pytest.raises(ConfigError, match="skip_connection is for transcoders"):
        SparseAutoencoder(cfg(skip_connection=True), d_in=16)
    with pytest.raises(ConfigError, match="larger than sae.d_sae"):
        SparseAutoencoder(cfg(k=64), d_in=16)


def test_init_follows_the_recipes():
    relu = SparseAutoencoder(cfg("relu"), d_in=16)
    torch.testing.assert_close(relu.W_dec.norm(dim=-1), torch.full((48,), 0.1))
    torch.testing.assert_close(relu.W_enc, relu.W_dec.T)  # encoder = decoder transpose
    topk = SparseAutoencoder(cfg("topk"), d_in=16)
    torch.testing.assert_close(topk.W_dec.norm(dim=-1), torch.ones(48))
    assert (relu.b_enc == 0).all() and (relu.b_dec == 0).all()
    jump = SparseAutoencoder(cfg("jumprelu", jumprelu_init_threshold=0.25), d_in=16)
    torch.testing.assert_close(jump.threshold, torch.full((48,), 0.25))


def test_topk_keeps_exactly_k_per_token():
    pre = torch.randn(10, 48) + 3  # all positive: every kept value survives the ReLU
    latents = topk_relu(pre, 4)
    assert ((latents > 0).sum(-1) == 4).all()
    # the kept ones are the largest
    torch.testing.assert_close(latents.max(-1).values, pre.max(-1).values)
    kept_min = torch.where(latents > 0, latents, torch.inf).min(-1).values
    assert (kept_min == pre.topk(4, dim=-1).values[:, -1]).all()


def test_batchtopk_keeps_k_per_token_on_average_and_thresholds_in_eval():
    sae = SparseAutoencoder(cfg("batchtopk"), d_in=16)
    pre = torch.randn(10, 48) * torch.linspace(0.1, 3, 10)[:, None] + 2  # tokens differ
    latents = batch_topk_relu(pre, 4)
    assert (latents > 0).sum() == 40
    per_token = (latents > 0).sum(-1)
    assert per_token.min() < 4 < per_token.max()  # loud tokens take more latents
    # training mode: batch top-k; eval mode: ReLU(pre) * (pre > threshold), per token
    with torch.no_grad():
        sae.b_enc.fill_(1.0)  # plenty of positive pre-activations
    x = torch.randn(10, 16)
    assert (sae(x).latents > 0).sum() == 40
    sae.update_inference_threshold(sae(x).latents)
    assert float(sae.inference_threshold) > 0
    sae.inference_threshold.fill_(1.3)  # a value no pre-activation sits exactly on
    sae.eval()
    pre = sae.pre_activations(x)
    expected = torch.where(pre > 1.3, pre, 0.0)
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.encode(x[:1]), expected[:1])  # each token on its own


def test_inference_threshold_is_set_then_averaged():
    sae = SparseAutoencoder(cfg("batchtopk"), d_in=16)
    sae.update_inference_threshold(torch.tensor([[0.0, 2.0, 3.0]]))
    assert float(sae.inference_threshold) == 2.0  # first batch: set outright
    sae.update_inference_threshold(torch.tensor([[0.0, 1.0, 3.0]]))
    averaged = 2.0 + sae_module.THRESHOLD_EMA_RATE * (1.0 - 2.0)  # then moved toward 1.0
    assert float(sae.inference_threshold) == pytest.approx(averaged)
    sae.update_inference_threshold(torch.zeros(1, 3))  # nothing fired: no change
    assert float(sae.inference_threshold) == pytest.approx(averaged)


# --- JumpReLU straight-through estimators ----------------------------------------------------

def test_jumprelu_forward_and_gradients():
    eps, theta = 0.01, torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    # just above threshold (inside the kernel), far above, below
    pre = torch.tensor([[0.5 + eps / 4, 2.0, 0.1]], requires_grad=True)
    out = JumpReLUFunction.apply(pre, theta, eps)
    torch.testing.assert_close(out.detach(), torch.tensor([[0.5 + eps / 4, 2.0, 0.0]]))
    out.sum().backward()
    # d f / d theta = -(theta / eps) K: raising theta would switch the first latent off
    torch.testing.assert_close(theta.grad, torch.tensor([-0.5 / eps, 0.0, 0.0]))
    torch.testing.assert_close(pre.grad, torch.tensor([[1.0, 1.0, 0.0]]))  # H(pre - theta)


def test_step_gradient_points_the_l0_penalty_at_raising_the_threshold():
    eps = 0.01
    log_theta = torch.zeros(2, requires_grad=True)  # theta = 1
    pre = torch.tensor([[1.0 + eps / 3, 1.0 - eps / 3], [3.0, 3.0]], requires_grad=True)
    l0 = StepFunction.apply(pre, log_theta.exp(), eps)
    torch.testing.assert_close(l0.detach(), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    l0.sum().backward()
    # both first-row entries sit inside the kernel: dL0/dtheta = -1/eps each (theta = 1)
    torch.testing.assert_close(log_theta.grad, torch.tensor([-1 / eps, -1 / eps]))
    assert pre.grad is None or (pre.grad == 0).all()  # the L0 penalty moves thresholds only


def test_step_estimator_matches_the_derivative_of_expected_l0():
    # pre ~ U(0, 2): E[H(pre - theta)] = 1 - theta/2, derivative -1/2 at any theta in (0, 2)
    pre = torch.rand(200_000, 1) * 2
    theta = torch.tensor([0.7], requires_grad=True)
    StepFunction.apply(pre, theta, 0.05).mean().backward()
    assert theta.grad.item() == pytest.approx(-0.5, rel=0.05)


# --- losses ---------------------------------------------------------------------------------

def test_relu_loss_conventions():
    sae = SparseAutoencoder(cfg("relu"), d_in=16)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2, 48)[:, None])  # unequal decoder norms
        sae.b_enc.fill_(0.3)
    x = torch.randn(7, 16)
    out = sae(x)
    loss = sae_loss(sae, x, out, penalty_coeff=2.0)
    mse = ((out.reconstruction - x) ** 2).sum() / 7  # sum over dims, mean over batch
    l1 = (out.latents * sae.W_dec.norm(dim=-1)).sum() / 7
    torch.testing.assert_close(loss.mse, mse)
    torch.testing.assert_close(loss.sparsity, l1)
    torch.testing.assert_close(loss.total, mse + 2.0 * l1)


def test_jumprelu_loss_counts_active_latents():
    sae = SparseAutoencoder(cfg("jumprelu", jumprelu_init_threshold=0.5), d_in=16)
    x = torch.randn(7, 16) * 3
    out = sae(x)
    loss = sae_loss(sae, x, out, penalty_coeff=0.1)
    torch.testing.assert_close(loss.sparsity, (out.latents > 0).sum() / 7.0)
    torch.testing.assert_close(loss.total, loss.mse + 0.1 * loss.sparsity)


def test_auxk_applies_to_topk_kinds_with_a_coefficient_and_dead_latents():
    dead = torch.zeros(48, dtype=torch.bool)
    dead[5] = True
    for kind in KINDS:
        assert sae_module.auxk_applies(SparseAutoencoder(cfg(kind), d_in=16), dead) == (
            kind in ("topk", "batchtopk"))
    topk = SparseAutoencoder(cfg("topk"), d_in=16)
    assert not sae_module.auxk_applies(topk, None)
    assert not sae_module.auxk_applies(topk, torch.zeros(48, dtype=torch.bool))
    no_coeff = SparseAutoencoder(cfg("topk", aux_coeff=0.0), d_in=16)
    assert not sae_module.auxk_applies(no_coeff, dead)
    x = torch.randn(8, 16)
    assert sae_loss(no_coeff, x, no_coeff(x), dead=dead).auxk == 0


def test_auxk_loss_is_the_masked_fit_of_the_error():
    """Written out: the aux_k largest pre-activations of dead latents (live ones masked
    to -inf, so fewer dead than aux_k leaves zeros) decode the error, normalised by its
    variance times the target's."""
    torch.manual_seed(0)
    sae = SparseAutoencoder(cfg("topk", aux_k=8), d_in=16)
    pre, error, target = torch.randn(32, 48), torch.randn(32, 16), torch.randn(32, 16)
    for n_dead in (3, 20):
        dead = torch.zeros(48, dtype=torch.bool)
        dead[torch.randperm(48)[:n_dead]] = True
        kept = min(8, n_dead)
        ids = torch.where(dead, pre, -torch.inf).topk(kept, dim=-1).indices
        latents = torch.zeros_like(pre).scatter(1, ids, pre.gather(1, ids).relu())
        error_hat = latents @ sae.W_dec
        expected = ((error_hat - error).pow(2).sum() / (error - error.mean(0)).pow(2).sum()
                    * (target - target.mean(0)).pow(2).sum(-1).mean())
        torch.testing.assert_close(sae_module.auxk_loss(sae, pre, dead, error, target), expected)


def test_auxk_trains_only_dead_latents_and_is_zero_without_them():
    sae = SparseAutoencoder(cfg("topk", aux_k=8), d_in=16)
    x = torch.randn(32, 16) * 4
    out = sae(x)
    none_dead = torch.zeros(48, dtype=torch.bool)
    assert sae_loss(sae, x, out, dead=none_dead).auxk == 0
    dead = torch.zeros(48, dtype=torch.bool)
    dead[:20] = True
    sae.zero_grad()
    loss = sae_loss(sae, x, out, dead=dead)
    assert loss.auxk > 0
    (sae.cfg.aux_coeff * loss.auxk).backward()  # the AuxK term alone
    touched = sae.W_dec.grad.abs().sum(-1) > 0
    assert touched[:20].any() and not touched[20:].any()


def test_auxk_revives_latents_that_lose_every_topk_race(synthetic):
    """16 latents start as weak copies of others: never in a token's top k, they stay dead
    without AuxK; with it they find the directions nobody covers."""
    x_all = synthetic

    def dead_fraction(aux_coeff: float) -> float:
        torch.manual_seed(0)
        sae = SparseAutoencoder(cfg("topk", d_sae=64, aux_coeff=aux_coeff, aux_k=16), d_in=32)
        with torch.no_grad():
            sae.W_dec[48:] = sae.W_dec[:16]
            sae.W_enc[:, 48:] = 0.5 * sae.W_enc[:, :16]
        optimizer = torch.optim.Adam(sae.parameters(), lr=3e-3)
        since = torch.zeros(64, dtype=torch.long)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            x = x_all[torch.randint(0, len(x_all), (256,), generator=g)]
            dead = since >= 256 * 5
            out = sae(x)
            sae_loss(sae, x, out, dead=dead).total.backward()
            sae.remove_parallel_decoder_grad()
            optimizer.step()
            optimizer.zero_grad()
            sae.normalize_decoder()
            since = torch.where((out.latents > 0).any(0), 0, since + 256)
        return (since >= 256 * 5).float().mean().item()

    without, with_auxk = dead_fraction(0.0), dead_fraction(1 / 32)
    assert without >= 0.2  # the 16 copies (25%) stay dead
    assert with_auxk < without / 2


@pytest.fixture
def synthetic():
    """4-sparse codes over 64 unit directions in 32 dimensions, scaled so E||x||^2 = 32."""
    g = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(64, 32, generator=g), dim=-1)
    idx = torch.rand(8192, 64, generator=g).argsort(-1)[:, :4]
    codes = torch.zeros(8192, 64).scatter(1, idx, torch.rand(8192, 4, generator=g) + 0.5)
    x = codes @ directions + 0.01 * torch.randn(8192, 32, generator=g)
    return x * (32 / x.pow(2).sum(-1).mean()).sqrt()


def test_unit_norm_maintenance():
    sae = SparseAutoencoder(cfg("topk"), d_in=16)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_decoder_grad()
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(-1), torch.zeros(48), atol=1e-6, rtol=0)
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(48))


# --- decoder bias init -----------------------------------------------------------------------

def test_geometric_median_resists_outliers():
    points = torch.randn(200, 8) * 0.1 + 1.0
    points[:20] += 100.0  # 10% far outliers drag the mean, not the median
    median = geometric_median(points)
    assert (median - 1.0).abs().max() < 0.1
    assert (points.mean(0) - 1.0).abs().max() > 5
    # Weiszfeld's fixed point: the unit vectors from the median to the points cancel out
    pull = F.normalize(points - median, dim=-1).sum(0)
    assert pull.norm() < 1.0


@pytest.mark.parametrize("kind", ["relu", "topk"])
@pytest.mark.parametrize("how", ["auto", "geometric_median", "mean", "zeros"])
def test_init_b_dec(how, kind):
    sae = SparseAutoencoder(cfg(kind, b_dec_init=how), d_in=8)
    sample = torch.randn(100, 8) + 2
    sae.init_b_dec(sample)
    if how == "auto":  # relu: Anthropic's zeros; topk: Gao et al.'s geometric median
        how = "zeros" if kind == "relu" else "geometric_median"
    expected = {"geometric_median": geometric_median(sample), "mean": sample.mean(0),
                "zeros": torch.zeros(8)}[how]
    torch.testing.assert_close(sae.b_dec.detach(), expected)


# --- fold, save, load --------------------------------------------------------------------------

def _perturbed(sae: SparseAutoencoder) -> SparseAutoencoder:
    """Random non-trivial values everywhere, as after training."""
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        if sae.kind == "jumprelu":
            sae.log_threshold.copy_(torch.rand(sae.d_sae).log())
    return sae


@pytest.mark.parametrize("kind,transcoder,skip", [
    (kind, False, False) for kind in KINDS
] + [("topk", True, False), ("jumprelu", True, True), ("batchtopk", True, True)])
def test_saved_sae_works_on_raw_activations(tmp_path, kind, transcoder, skip):
    c = cfg(kind, skip_connection=skip, **(TRANSCODER if transcoder else {}))
    d_out = 12 if transcoder else None
    sae = _perturbed(SparseAutoencoder(c, d_in=16, d_out=d_out))
    s_in, s_out = 2.5, (0.4 if transcoder else 2.5)
    sae.input_scale.fill_(s_in)
    sae.output_scale.fill_(s_out)
    x = torch.randn(64, 16)
    if kind == "batchtopk":
        sae.inference_threshold.fill_(1.234)  # as if estimated (on no pre-activation exactly)
    sae.eval()
    save_sae(sae, tmp_path / "sae", training_tokens=1234)
    loaded = load_sae(tmp_path / "sae")
    assert not loaded.training
    with torch.no_grad():
        # what training saw (normalised in, normalised out), in float64 so that the
        # comparison measures the saved float32 model's error alone
        trained = copy.deepcopy(sae).double()(x.double() * s_in)
        raw = loaded(x)
    torch.testing.assert_close(raw.reconstruction.double(), trained.reconstruction / s_out,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(raw.latents.double(), trained.latents / s_out, atol=1e-5, rtol=1e-5)
    assert (raw.latents > 0).sum() > 0
    # folded constants are recorded, the loaded module needs no scaling of its own
    meta = __import__("json").loads((tmp_path / "sae" / "cfg.json").read_text())
    assert meta["folded_scales"] == pytest.approx({"input_scale": s_in, "output_scale": s_out})
    assert meta["training_tokens"] == 1234 and meta["kind"] == kind and meta["d_sae"] == 48
    assert meta["hook_out"] == (TRANSCODER["hook_out"] if transcoder else c.hook_in)
    assert float(loaded.input_scale) == float(loaded.output_scale) == 1.0
    # saving did not touch the module being trained
    assert float(sae.input_scale) == s_in


def test_fold_keeps_unit_norm_decoder_and_divides_thresholds(tmp_path):
    sae = _perturbed(SparseAutoencoder(cfg("jumprelu"), d_in=16))
    sae.normalize_decoder()
    sae.input_scale.fill_(4.0)
    sae.output_scale.fill_(4.0)
    theta = sae.threshold.detach().clone()
    loaded = load_sae(save_sae(sae, tmp_path))
    torch.testing.assert_close(loaded.W_dec.norm(dim=-1), torch.ones(48))
    torch.testing.assert_close(loaded.threshold, theta / 4.0)


def test_load_sae_needs_no_trainer():
    assert load_sae.__module__ == "tinycourse.sae.model"
    tree = ast.parse(inspect.getsource(sae_module))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not any("sae_train" in (name or "") for name in imported)


def test_load_refuses_unknown_format(tmp_path):
    save_sae(SparseAutoencoder(cfg(), d_in=8), tmp_path)
    path = tmp_path / "cfg.json"
    meta = __import__("json").loads(path.read_text())
    meta["format_version"] = 99
    path.write_text(__import__("json").dumps(meta))
    with pytest.raises(ValueError, match="format_version 99"):
        load_sae(tmp_path)


def test_config_round_trips_through_cfg_json(tmp_path):
    c = cfg("relu", l1_coeff=3.0, d_sae=32, b_dec_init="mean")
    loaded = load_sae(save_sae(SparseAutoencoder(c, d_in=8), tmp_path))
    assert loaded.cfg == c
    assert dataclasses.asdict(loaded.cfg)["l1_coeff"] == 3.0
    assert math.isclose(loaded.W_dec.norm(dim=-1).mean().item(), 0.1, rel_tol=1e-5)
