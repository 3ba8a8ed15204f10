import pytest
import torch

from tinycourse.config import TranscodersConfig
from tinycourse.evaluate.metrics import eval_windows, fve
from tinycourse.evaluate.replacement import evaluate_replacement
from tinycourse.sae.crosslayer import CrossLayerTranscoder
from tinycourse.sae.transcoders import mlp_hooks

from .test_replacement import CFG, D, N_CTX, by_hand, model, shards, transcoders  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def crosslayer(lm, d_sae=48, k=6, diagonal_only=False, scales=True):
    """A CLT from the MLPs' weights on random neurons (as `transcoders` builds them), with a
    random decoder from layer 0 into MLP 1 and unfolded scales, so every term counts."""
    clt = CrossLayerTranscoder(TranscodersConfig(d_sae=d_sae, k=k), [0, 1], D)
    with torch.no_grad():
        for layer, block in enumerate(lm.blocks):
            neurons = torch.randperm(64)[:d_sae]
            s_in, s_out = (1.5, 0.7) if scales and layer == 0 else (0.8, 1.3) if scales else (1.0, 1.0)
            clt.input_scale[layer], clt.output_scale[layer] = s_in, s_out
            clt.W_enc[layer] = block.mlp.fc_in.weight[neurons].T / s_in
            clt.b_enc[layer] = block.mlp.fc_in.bias[neurons]
            clt.W_dec[layer][0] = block.mlp.fc_out.weight[:, neurons].T * s_out
            clt.b_dec[layer] = block.mlp.fc_out.bias * s_out
        clt.W_dec[0][1] = 0 if diagonal_only else 0.2 * torch.randn(d_sae, D)
    return clt.eval()


@torch.no_grad()
def test_the_clt_replacement_model_matches_a_hand_computation(model, shards):
    clt = crosslayer(model)
    result = evaluate_replacement(model, clt, shards, CFG, progress=False)
    windows = torch.from_numpy(eval_windows(shards, "val", CFG.n_tokens, N_CTX, start_id=shards.start_id))
    tokens, targets = windows[:, :-1], windows[:, 1:]
    keep = tokens != shards.start_id
    target = targets[keep]
    W, b_enc, b_dec = clt.W_enc, clt.b_enc, clt.b_dec
    s_in, s_out = clt.input_scale, clt.output_scale

    def features(i, x):  # TopK of layer i's pre-activations, by sorting
        pre = (x * s_in[i]) @ W[i] + b_enc[i]
        cut = pre.sort(-1, descending=True).values[:, clt.k - 1 : clt.k]
        return torch.where(pre >= cut, pre.clamp_min(0), 0)

    def output(j, fs):  # layer j's MLP output from the features of layers 0..j
        return (sum(fs[i] @ clt.W_dec[i][j - i] for i in range(j + 1)) + b_dec[j]) / s_out[j]

    def ce_kl(mlp):
        lp = by_hand(model, tokens, keep, mlp)[keep].log_softmax(-1).double()
        return -lp.gather(1, target[:, None]).mean().item(), lp

    xs, ys, live = {}, {}, {}

    def record(i, x, y):
        xs[i], ys[i] = x, y

    def replaced_mlp(i, x, y):  # layer i's features from this very forward's input
        live[i] = features(i, x)
        return output(i, live)

    clean, lp_clean = ce_kl(record)
    replaced, lp_rep = ce_kl(replaced_mlp)
    zero, _ = ce_kl(lambda i, x, y: torch.zeros_like(y))
    mean, _ = ce_kl(lambda i, x, y: ys[i].mean(0).expand_as(y))
    kl = (lp_clean.exp() * (lp_clean - lp_rep)).sum(-1).mean().item()
    rep = result["replacement"]
    assert result["n_tokens"] == int(keep.sum())
    assert rep["ce_clean"] == pytest.approx(clean, rel=1e-5)
    assert rep["ce_replacement"] == pytest.approx(replaced, rel=1e-5)
    assert rep["ce_zero_ablation"] == pytest.approx(zero, rel=1e-5)
    assert rep["ce_mean_ablation"] == pytest.approx(mean, rel=1e-5)
    assert rep["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert rep["ce_loss_recovered"] == pytest.approx((zero - replaced) / (zero - clean), rel=1e-4)
    # the cross-layer decoder matters: without it layer 1's output and the CE change
    no_cross, _ = ce_kl(lambda i, x, y: (features(i, x) @ clt.W_dec[i][0] + b_dec[i]) / s_out[i])
    assert abs(no_cross - replaced) > 1e-4

    # per layer, on the clean forward: layer j reads every layer's clean input up to j
    clean_fs = {i: features(i, xs[i]) for i in (0, 1)}
    for i, row in enumerate(result["dictionaries"]):
        assert (row["name"], row["kind"], row["d_sae"]) == (f"layer_{i}", "crosslayer", 48)
        assert (row["hook_in"], row["hook_out"]) == mlp_hooks(i)
        assert row["fve"] == pytest.approx(fve(output(i, clean_fs), ys[i]), rel=1e-5)
        assert row["l0"] == pytest.approx((clean_fs[i] > 0).sum(1).double().mean().item())
        dead = (clean_fs[i] > 0).sum(0) == 0
        assert row["n_dead"] == int(dead.sum())
        alone, _ = ce_kl(lambda j, x, y, i=i: output(i, clean_fs) if j == i else None)
        assert row["alone"]["ce_spliced"] == pytest.approx(alone, rel=1e-5)


@torch.no_grad()
def test_a_diagonal_clt_measures_as_the_per_layer_transcoders(model, shards):
    clt = crosslayer(model, diagonal_only=True, scales=False)
    saes = transcoders(model)
    for layer, sae in enumerate(saes.values()):  # the same weights
        sae.W_enc.copy_(clt.W_enc[layer])
        sae.b_enc.copy_(clt.b_enc[layer])
        sae.W_dec.copy_(clt.W_dec[layer][0])
        sae.b_dec.copy_(clt.b_dec[layer])
    ours = evaluate_replacement(model, clt, shards, CFG, progress=False)
    theirs = evaluate_replacement(model, saes, shards, CFG, progress=False)
    assert ours["replacement"] == pytest.approx(theirs["replacement"], rel=1e-5)
    for a, b in zip(ours["dictionaries"], theirs["dictionaries"]):
        assert a["kind"] == "crosslayer" and b["kind"] == "topk"
        for key in ("fve", "mse", "nmse", "l0", "dead_fraction", "n_dead", "dense_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
        assert a["alone"] == pytest.approx(b["alone"], rel=1e-5)


def test_a_clt_of_another_model_is_refused(model, shards):
    clt = CrossLayerTranscoder(TranscodersConfig(d_sae=16, k=2), [0, 1, 2], D)
    with pytest.raises(ValueError, match=r"covers layers \[0, 1, 2\] but the model has 2") as e:
        evaluate_replacement(model, clt, shards, CFG, progress=False)
    assert "\n" not in str(e.value)
    wide = CrossLayerTranscoder(TranscodersConfig(d_sae=16, k=2), [0, 1], D + 1)
    with pytest.raises(ValueError, match="the CLT maps 33 -> 33 values"):
        evaluate_replacement(model, wide, shards, CFG, progress=False)
