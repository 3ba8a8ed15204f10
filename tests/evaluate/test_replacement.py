import pytest
import torch

from tinycourse.config import EvalConfig, ModelConfig, TranscodersConfig
from tinycourse.evaluate.metrics import eval_windows, fve, sweep_rows
from tinycourse.evaluate.replacement import evaluate_replacement
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder
from tinycourse.sae.transcoders import mlp_hooks

N_CTX, D = 16, 32
CFG = EvalConfig(n_tokens=500, batch_size=8)

# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model():
    # init_std 0.3: at the usual init the model predicts uniformly whatever is spliced in
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    return random_shards(tmp_path, train_tokens=2000, val_tokens=1000)


def transcoders(model, kind="topk", d_sae=48, k=6):
    """A transcoder per MLP, random but fitted a little: its decoder is the MLP's output
    weights on a random subset of neurons, so it is neither exact nor useless."""
    cfg = TranscodersConfig(kind=kind, d_sae=d_sae, k=k)
    out = {}
    for layer, block in enumerate(model.blocks):
        sae = SparseAutoencoder(cfg.sae_config(layer), D, D)
        with torch.no_grad():
            neurons = torch.randperm(64)[:d_sae] if d_sae <= 64 else torch.arange(d_sae) % 64
            sae.W_enc.copy_(block.mlp.fc_in.weight[neurons].T)
            sae.b_enc.copy_(block.mlp.fc_in.bias[neurons])
            sae.W_dec.copy_(block.mlp.fc_out.weight[:, neurons].T)
            sae.b_dec.copy_(block.mlp.fc_out.bias)
        out[f"layer_{layer}"] = sae.eval()
    return out


def by_hand(model, tokens, keep, mlp):
    """Logits of a forward written out block by block (no hooks): at the counted
    positions MLP i's output is `mlp(i, x, y)` (x its normed input, y its own output,
    both (n, d)), or the MLP's own when that returns None."""
    resid = model.embed(tokens) + model.pos_embed(torch.arange(tokens.shape[1]))
    for i, block in enumerate(model.blocks):
        resid = resid + block.attn(block.ln1(resid))
        x = block.ln2(resid)
        y = block.mlp(x)
        new = mlp(i, x[keep], y[keep])
        if new is not None:
            y = y.clone()
            y[keep] = new
        resid = resid + y
    return model.unembed(model.ln_final(resid))


@torch.no_grad()
def test_the_replacement_model_matches_a_hand_computation(model, shards):
    saes = transcoders(model)
    result = evaluate_replacement(model, saes, shards, CFG, progress=False)

    windows = torch.from_numpy(eval_windows(shards, "val", CFG.n_tokens, N_CTX, start_id=shards.start_id))
    tokens, targets = windows[:, :-1], windows[:, 1:]
    keep = tokens != shards.start_id
    target = targets[keep]
    layers = list(saes.values())

    def ce_kl(mlp):
        lp = by_hand(model, tokens, keep, mlp)[keep].log_softmax(-1).double()
        return -lp.gather(1, target[:, None]).mean().item(), lp

    xs, ys = {}, {}

    def record(i, x, y):
        xs[i], ys[i] = x, y

    clean, lp_clean = ce_kl(record)
    replaced, lp_rep = ce_kl(lambda i, x, y: layers[i](x).reconstruction)  # x from this very forward
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
    assert rep["ce_loss_recovered_vs_mean"] == pytest.approx((mean - replaced) / (mean - clean), rel=1e-4)
    # replacing both is not replacing each on clean inputs: layer 1 reads layer 0's error
    both_clean, _ = ce_kl(lambda i, x, y: layers[i](xs[i]).reconstruction)
    assert abs(both_clean - replaced) > 1e-4

    # each layer alone, against the single-dictionary path of metrics (sweep_rows)
    rows = sweep_rows(model, saes, shards, CFG, progress=False)
    for i, (row, single) in enumerate(zip(result["dictionaries"], rows)):
        latents = layers[i].encode(xs[i])
        assert row["name"] == f"layer_{i}" and (row["hook_in"], row["hook_out"]) == mlp_hooks(i)
        assert row["fve"] == pytest.approx(fve(layers[i](xs[i]).reconstruction, ys[i]), rel=1e-5)
        assert row["fve"] == pytest.approx(single["fve"], rel=1e-6)
        assert row["l0"] == pytest.approx((latents > 0).sum(1).double().mean().item()) == single["l0"]
        dead = (latents > 0).sum(0) == 0
        assert row["n_dead"] == int(dead.sum()) and row["dead_fraction"] == pytest.approx(dead.double().mean().item())
        dense = (latents > 0).double().mean(0) > CFG.dense_threshold
        assert row["n_dense"] == int(dense.sum())
        assert row["alone"]["ce_loss_recovered"] == pytest.approx(single["ce_loss_recovered"], rel=1e-5)
        assert row["alone"]["kl"] == pytest.approx(single["kl"], rel=1e-5)
        alone, _ = ce_kl(lambda j, x, y, i=i: layers[i](x).reconstruction if j == i else None)
        assert row["alone"]["ce_spliced"] == pytest.approx(alone, rel=1e-5)


@torch.no_grad()
def test_exact_transcoders_recover_everything(model, shards):
    """A ReLU transcoder holding the MLP's own weights (d_sae = d_mlp) is the MLP when the
    activation is ReLU: the replacement model is the model itself."""
    relu_model = GPT(ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                                 d_vocab=64, init_std=0.3, act="relu")).eval()
    saes = transcoders(relu_model, kind="relu", d_sae=64)
    for sae, block in zip(saes.values(), relu_model.blocks):
        with torch.no_grad():
            sae.W_enc.copy_(block.mlp.fc_in.weight.T)
            sae.b_enc.copy_(block.mlp.fc_in.bias)
            sae.W_dec.copy_(block.mlp.fc_out.weight.T)
    result = evaluate_replacement(relu_model, saes, shards, CFG, progress=False)
    rep = result["replacement"]
    assert rep["ce_replacement"] == pytest.approx(rep["ce_clean"], abs=1e-5)
    assert rep["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert rep["kl"] == pytest.approx(0.0, abs=1e-5)
    assert rep["ce_clean"] < rep["ce_zero_ablation"]
    assert all(r["fve"] == pytest.approx(1.0, abs=1e-5) for r in result["dictionaries"])


def test_two_dictionaries_on_one_hook_are_refused(model, shards):
    saes = transcoders(model)
    with pytest.raises(ValueError, match="write the same hook"):
        evaluate_replacement(model, {"a": saes["layer_0"], "b": saes["layer_0"]}, shards, CFG, progress=False)
