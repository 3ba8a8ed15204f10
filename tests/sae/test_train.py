import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import tinycourse.sae.train as sae_train
from tinycourse.config import ConfigError, SAEConfig
from tinycourse.sae.model import load_sae
from tinycourse.sae.train import (
    SAETrainingDiverged,
    default_name,
    lr_at,
    penalty_at,
    train_sae,
    train_sweep,
)
from tinycourse.training import CHECKPOINT

MLP_OUT = "blocks.0.hook_mlp_out"


# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


class SyntheticSource:
    """Activations with a known sparse structure, served like the activation store.

    x = codes @ directions + noise, the codes 4-sparse over 64 random unit directions in
    32 dimensions (superposition: more features than dimensions), magnitudes in [0.5, 1.5].
    Target: x itself (an SAE), or for a transcoder codes @ out_directions (d_out dims),
    plus a dense linear part x @ A when `linear` > 0.
    """

    def __init__(self, n=8192, d_in=32, m=64, k=4, noise=0.01, d_out=None, linear=0.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.directions = F.normalize(torch.randn(m, d_in, generator=g), dim=-1)
        idx = torch.rand(n, m, generator=g).argsort(-1)[:, :k]
        codes = torch.zeros(n, m).scatter(1, idx, torch.rand(n, k, generator=g) + 0.5)
        self.x = codes @ self.directions + noise * torch.randn(n, d_in, generator=g)
        self.y = self.x
        if d_out is not None:
            self.y = codes @ F.normalize(torch.randn(m, d_out, generator=g), dim=-1)
            self.y = self.y + linear * self.x @ torch.randn(d_in, d_out, generator=g) / d_in**0.5
        self.n, self.d_in, self.d_out = n, d_in, self.y.shape[1]
        self.nan_at: int | None = None  # batch index served as NaN (divergence test)
        self.batches_served = 0

    def batches(self, batch_size, seed, start_batch=0):
        """Endless; batch i depends only on (batch_size, seed, i): a fresh permutation of
        the data every epoch."""
        per_epoch = self.n // batch_size
        i, epoch_of_perm, perm = start_batch, None, None
        while True:
            epoch, j = divmod(i, per_epoch)
            if epoch != epoch_of_perm:
                g = torch.Generator().manual_seed(seed * 7919 + epoch)
                perm = torch.randperm(self.n, generator=g)
                epoch_of_perm = epoch
            rows = perm[j * batch_size:(j + 1) * batch_size]
            x = self.x[rows].half()  # stores hand out fp16: the trainer casts
            if i == self.nan_at:
                x = torch.full_like(x, float("nan"))
            self.batches_served += 1
            yield x, (self.y[rows].half() if self.y is not self.x else x)
            i += 1

    @staticmethod
    def scale(t: torch.Tensor) -> float:
        """The constant that makes the mean squared norm equal the width."""
        return (t.shape[1] / t.pow(2).sum(-1).mean()).sqrt().item()


def cfg(kind="topk", steps=600, **kw):
    base = dict(kind=kind, d_sae=64, k=4, batch_size=256, n_tokens=256 * steps, lr=3e-3,
                lr_warmup_steps=20, dead_after_tokens=256 * 50, checkpoint_every=10_000)
    return SAEConfig(**{**base, **kw})


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def recovered(folder, directions) -> torch.Tensor:
    """For each ground-truth direction, its best cosine with a decoder row."""
    w = F.normalize(load_sae(folder).W_dec.detach(), dim=-1)
    return (directions @ w.T).max(1).values


# --- schedules ---------------------------------------------------------------------------------

def test_lr_schedule_warms_up_holds_and_decays_to_zero():
    c = cfg(steps=100, lr=1.0, lr_warmup_steps=10, lr_decay_frac=0.2)
    lrs = [lr_at(step, c) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(lr == 1.0 for lr in lrs[10:80])
    assert lrs[80] == pytest.approx(1.0) and lrs[99] == pytest.approx(1 / 20)
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))


def test_sparsity_coefficient_warms_up():
    relu = cfg("relu", steps=100, l1_coeff=5.0, l1_warmup_frac=0.1)
    assert penalty_at(0, relu) == pytest.approx(0.5)
    assert penalty_at(9, relu) == penalty_at(99, relu) == 5.0
    jump = cfg("jumprelu", steps=100, l0_coeff=0.2, l1_warmup_frac=0.1)
    assert penalty_at(4, jump) == pytest.approx(0.1)
    assert penalty_at(0, cfg("topk")) == 0.0


# --- quality on synthetic data ------------------------------------------------------------------

def test_topk_and_batchtopk_recover_the_sparse_structure(tmp_path):
    source = SyntheticSource()
    summaries = train_sweep([cfg("topk"), cfg("batchtopk")], source, tmp_path,
                            names=["topk", "batchtopk"], progress=False,
                            input_scale=source.scale(source.x.float()))
    topk, batchtopk = summaries
    for summary in summaries:
        assert summary["finished"] and summary["tokens"] == 600 * 256
        assert summary["fve"] > 0.9
        assert summary["dead_fraction"] < 0.05
        assert recovered(tmp_path / summary["name"], source.directions).mean() > 0.95
        saved = load_sae(tmp_path / summary["name"])
        torch.testing.assert_close(saved.W_dec.norm(dim=-1), torch.ones(64))
    assert topk["l0"] == 4.0  # exactly k, every token
    # batchtopk: k per token on average over a training batch; the threshold keeps that at inference
    assert all(m["l0"] == 4.0 for m in read_metrics(tmp_path / "batchtopk")[-50:])
    assert abs(batchtopk["l0"] - 4.0) < 0.5
    assert float(load_sae(tmp_path / "batchtopk").inference_threshold) > 0
    # the metrics: one line per step, in order
    metrics = read_metrics(tmp_path / "topk")
    assert [m["step"] for m in metrics] == list(range(1, 601))
    fields = {"step", "tokens", "loss", "mse", "fve", "l0", "dead_fraction", "lr", "auxk"}
    assert fields <= set(metrics[-1])
    assert metrics[-1]["mse"] < metrics[0]["mse"] / 3
    summary = json.loads((tmp_path / "topk" / "summary.json").read_text())
    assert summary["tokens_per_s"] > 0 and summary["fve"] == topk["fve"]


def test_relu_and_jumprelu_trade_reconstruction_for_sparsity(tmp_path):
    source = SyntheticSource()
    # jumprelu in our units (E||x||^2 = d_in): thresholds start at 0.1, kernel width 0.05
    jump = dict(jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.1)
    cfgs = [cfg("relu", l1_coeff=0.5), cfg("jumprelu", l0_coeff=0.03, **jump),
            cfg("jumprelu", l0_coeff=0.3, **jump)]
    relu, loose, tight = train_sweep(cfgs, source, tmp_path, progress=False,
                                     input_scale=source.scale(source.x.float()))
    assert relu["fve"] > 0.8 and 2 <= relu["l0"] <= 16
    assert loose["l0"] > 2 * tight["l0"]  # L0 falls as l0_coeff rises
    assert tight["l0"] < 12 and tight["fve"] > 0.8
    assert loose["fve"] > tight["fve"]
    assert recovered(tmp_path / tight["name"], source.directions).mean() > 0.9
    # the L1 penalty was warmed up: its coefficient ramps from near 0 to l1_coeff
    metrics = read_metrics(tmp_path / relu["name"])
    assert metrics[0]["coeff"] < 0.05 and metrics[-1]["coeff"] == 0.5


def test_transcoder_learns_a_linear_then_sparse_map(tmp_path):
    source = SyntheticSource(d_out=24, linear=1.0)
    plain, skip = train_sweep(
        [cfg("topk", hook_out=MLP_OUT, steps=800),
         cfg("topk", hook_out=MLP_OUT, steps=800, skip_connection=True)],
        source, tmp_path, names=["plain", "skip"], progress=False,
        input_scale=source.scale(source.x.float()), output_scale=source.scale(source.y.float()))
    assert plain["fve"] > 0.8
    assert skip["fve"] > 0.9 and skip["fve"] > plain["fve"] + 0.03  # the skip path takes the linear part
    loaded = load_sae(tmp_path / "skip")
    assert loaded.W_skip.shape == (32, 24) and loaded.W_skip.abs().sum() > 0
    # the saved transcoder maps raw inputs to raw targets
    x, y = source.x[:2048], source.y[:2048]
    with torch.no_grad():
        y_hat = loaded(x).reconstruction
    assert 1 - (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum() > 0.9


# --- resumption -------------------------------------------------------------------------------------

def resume_cfgs():
    """Every kind, with latents dying fast so AuxK and the dead counters take part."""
    return [cfg(kind, steps=30, d_sae=256, checkpoint_every=10, dead_after_tokens=256 * 2,
                l1_coeff=0.5) for kind in ("topk", "batchtopk", "relu", "jumprelu")]


def test_resume_after_a_kill_is_bitwise_identical(tmp_path):
    source = SyntheticSource()
    scale = source.scale(source.x.float())
    train_sweep(resume_cfgs(), source, tmp_path / "straight", progress=False, input_scale=scale)
    # killed at step 15: the last checkpoint is step 10, steps 11-15 are lost and redone
    partial = train_sweep(resume_cfgs(), source, tmp_path / "resumed", progress=False,
                          input_scale=scale, stop_after=15)
    assert not partial[0]["finished"]
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 10
    train_sweep(resume_cfgs(), source, tmp_path / "resumed", progress=False, input_scale=scale)

    straight = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert straight["step"] == resumed["step"] == 30
    for a, b in zip(straight["members"], resumed["members"]):
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), name
        assert torch.equal(a["since_fired"], b["since_fired"])
        for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            assert all(torch.equal(sa[key], sb[key]) for key in sa)
    for name in map(default_name, resume_cfgs()):
        a, b = load_sae(tmp_path / "straight" / name), load_sae(tmp_path / "resumed" / name)
        assert all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())
        rows_a = read_metrics(tmp_path / "straight" / name)
        rows_b = read_metrics(tmp_path / "resumed" / name)
        assert [r["step"] for r in rows_b] == list(range(1, 31))  # no step twice
        drop = lambda r: {k: v for k, v in r.items() if k != "tokens_per_s"}  # noqa: E731
        assert [drop(r) for r in rows_a] == [drop(r) for r in rows_b]
        if name.startswith(("topk", "batchtopk")):  # latents died and AuxK took part
            assert any(r["auxk"] > 0 for r in rows_a[10:15])
            for r in rows_a:  # the logged loss is the one trained: AuxK (eager) included
                expected = r["mse"] + SAEConfig().aux_coeff * r["auxk"]
                assert r["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_a_finished_run_is_not_trained_again(tmp_path):
    source = SyntheticSource()
    first = train_sae(cfg(steps=20), source, tmp_path, progress=False)
    served = source.batches_served
    assert (tmp_path / "sae.safetensors").exists() and (tmp_path / "cfg.json").exists()
    again = train_sae(cfg(steps=20), source, tmp_path, progress=False)
    assert again == first and source.batches_served == served


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    source = SyntheticSource()
    train_sae(cfg(steps=20, checkpoint_every=5), source, tmp_path, progress=False, stop_after=5)
    with pytest.raises(ConfigError, match=r"sae\.lr: 0\.003 -> 0\.001"):
        train_sae(cfg(steps=20, checkpoint_every=5, lr=1e-3), source, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="input_scale"):
        train_sae(cfg(steps=20, checkpoint_every=5), source, tmp_path, progress=False, input_scale=2.0)


def test_divergence_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
    source = SyntheticSource()
    source.nan_at = 7  # the 8th batch is NaN
    with pytest.raises(SAETrainingDiverged, match=r"loss is nan at step 8.*step 5\) is intact"):
        train_sae(cfg(steps=20, checkpoint_every=5), source, tmp_path, progress=False)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 5
    assert [m["step"] for m in read_metrics(tmp_path)] == list(range(1, 8))
    assert not (tmp_path / "sae.safetensors").exists()


def test_huge_learning_rate_diverges_cleanly(tmp_path):
    source = SyntheticSource()
    with pytest.raises(SAETrainingDiverged, match="no checkpoint was written yet"):
        train_sae(cfg("relu", steps=200, lr=1e30, lr_warmup_steps=1, l1_coeff=0.5), source,
                  tmp_path, progress=False)


# --- options ------------------------------------------------------------------------------------

def test_failed_compile_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler here")
        return call

    monkeypatch.setattr(sae_train.torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        summary = train_sae(cfg(steps=20, compile=True), SyntheticSource(), tmp_path, progress=False)
    assert summary["finished"]


def test_bfloat16_autocast_trains(tmp_path):
    source = SyntheticSource()
    summary = train_sae(cfg("jumprelu", steps=60, dtype="bfloat16"), source, tmp_path,
                        progress=False, input_scale=source.scale(source.x.float()))
    assert summary["dtype"] == "bfloat16" and summary["finished"]
    metrics = read_metrics(tmp_path)
    assert metrics[-1]["mse"] < metrics[0]["mse"]


def test_sweep_members_must_share_their_data(tmp_path):
    source = SyntheticSource()
    with pytest.raises(ConfigError, match="batch_size must be the same"):
        train_sweep([cfg(), cfg(batch_size=128)], source, tmp_path, names=["a", "b"], progress=False)
    with pytest.raises(ConfigError, match="distinct name"):
        train_sweep([cfg(), cfg(lr=1e-3)], source, tmp_path, progress=False)


def test_source_shape_must_match_the_kind(tmp_path):
    source = SyntheticSource(d_out=24)
    with pytest.raises(ConfigError, match="set it to train a transcoder"):
        train_sae(cfg(), source, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="output_scale must be input_scale"):
        train_sae(cfg(), SyntheticSource(), tmp_path, progress=False, input_scale=2.0, output_scale=3.0)


def test_sweep_folders_and_summaries(tmp_path):
    source = SyntheticSource()
    cfgs = [cfg(steps=10, k=2), cfg(steps=10, k=8)]
    summaries = train_sweep(cfgs, source, tmp_path, progress=False)
    assert [s["name"] for s in summaries] == ["topk_d64_k2", "topk_d64_k8"]
    assert [s["l0"] for s in summaries] == [2.0, 8.0]
    for c, s in zip(cfgs, summaries):
        folder = tmp_path / s["name"]
        assert load_sae(folder).cfg == c
        assert json.loads((folder / "summary.json").read_text())["sweep_size"] == 2
        assert dataclasses.asdict(load_sae(folder).cfg)["k"] == c.k
