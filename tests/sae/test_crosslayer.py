import dataclasses
import json

import pytest
import torch

from tinycourse.config import ConfigError, ModelConfig, TranscodersConfig
from tinycourse.lm.model import GPT
from tinycourse.sae.crosslayer import (
    CrossLayerTranscoder,
    load_crosslayer,
    save_crosslayer,
    train_crosslayer,
)
from tinycourse.sae.model import SparseAutoencoder, load_sae, save_sae
from tinycourse.sae.transcoders import MultiHookStream, mlp_hooks, stream_config
from tinycourse.training import CHECKPOINT

# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")

BUFFER = 256
CFG = TranscodersConfig(d_sae=32, k=4, n_tokens=128 * 12, batch_size=128, lr=3e-3,
                        lr_warmup_steps=3, checkpoint_every=5, lm_batch_size=8,
                        dead_after_tokens=128 * 2, cross_layer=True)


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    return random_shards(tmp_path / "shards", train_tokens=3000, val_tokens=800)


def random_clt(n_layers=3, d=8, d_sae=12, k=3, scales=False):
    clt = CrossLayerTranscoder(TranscodersConfig(d_sae=d_sae, k=k), range(n_layers), d)
    with torch.no_grad():
        clt.b_enc.normal_(0, 0.3)
        clt.b_dec.normal_(0, 0.3)
        if scales:
            clt.input_scale.copy_(torch.tensor([1.7, 0.4, 2.2][:n_layers]))
            clt.output_scale.copy_(torch.tensor([0.6, 1.9, 0.8][:n_layers]))
    return clt.eval()


def test_the_readable_forward_is_the_hand_computation():
    clt = random_clt()
    xs = [torch.randn(5, 8, dtype=torch.float64) for _ in range(3)]
    clt = clt.double()
    out = clt(xs)
    # by hand, token by token: pre, keep the k largest (ReLU'd), every earlier layer's writes
    W_enc, b_enc, b_dec = clt.W_enc.detach(), clt.b_enc.detach(), clt.b_dec.detach()
    for t in range(5):
        f = []
        for i in range(3):
            pre = xs[i][t] @ W_enc[i] + b_enc[i]
            top = sorted(range(12), key=lambda a: -float(pre[a]))[:3]
            fi = torch.zeros(12, dtype=torch.float64)
            for a in top:
                fi[a] = max(float(pre[a]), 0.0)
            f.append(fi)
            torch.testing.assert_close(out.pre[i][t], pre)
            torch.testing.assert_close(out.latents[i][t], fi)
        for j in range(3):
            y = b_dec[j].clone()
            for i in range(j + 1):
                y += f[i] @ clt.W_dec[i][j - i].detach()
            torch.testing.assert_close(out.reconstructions[j][t], y)
    # encode and decode are the two halves of forward; layer 0 reads nothing but its own features
    assert all(torch.equal(a, b) for a, b in zip(clt.encode(xs), out.latents))
    assert all(torch.equal(a, b) for a, b in zip(clt.decode(out.latents), out.reconstructions))
    assert all(((f > 0).sum(1) <= 3).all() for f in out.latents)
    moved = [f.clone() for f in out.latents]
    moved[2] += 1.0
    assert torch.equal(clt.decode(moved)[1], out.reconstructions[1])  # layer 2 writes no earlier MLP
    assert not torch.equal(clt.decode(moved)[2], out.reconstructions[2])
    # every feature's decoders, all targets together, start at unit norm
    torch.testing.assert_close(random_clt().decoder_norms(), torch.ones(3, 12))


def diagonal_pair(scales=True):
    """A CLT whose off-diagonal decoders are 0, and per-layer TopK transcoders with its weights."""
    clt = random_clt(n_layers=2, scales=scales)
    tcs = []
    with torch.no_grad():
        clt.W_dec[0][1].zero_()
        for i in range(2):
            tc = SparseAutoencoder(TranscodersConfig(d_sae=12, k=3).sae_config(i), d_in=8)
            tc.W_enc.copy_(clt.W_enc[i])
            tc.b_enc.copy_(clt.b_enc[i])
            tc.W_dec.copy_(clt.W_dec[i][0])
            tc.b_dec.copy_(clt.b_dec[i])
            tc.input_scale.fill_(float(clt.input_scale[i]))
            tc.output_scale.fill_(float(clt.output_scale[i]))
            tcs.append(tc.eval())
    return clt, tcs


def test_a_diagonal_clt_is_the_per_layer_transcoders(tmp_path):
    clt, tcs = diagonal_pair()
    xs = [torch.randn(20, 8) for _ in range(2)]
    out = clt(xs)
    for i, tc in enumerate(tcs):
        theirs = tc(xs[i])
        torch.testing.assert_close(out.latents[i], theirs.latents)
        torch.testing.assert_close(out.reconstructions[i], theirs.reconstruction)
    # folded and saved, the two still agree, and on raw activations
    loaded = load_crosslayer(save_crosslayer(clt, tmp_path / "clt"))
    for i, tc in enumerate(tcs):
        folded = load_sae(save_sae(tc, tmp_path / f"tc{i}"))
        torch.testing.assert_close(loaded.W_enc[i], folded.W_enc)
        torch.testing.assert_close(loaded.decoder(i, i), folded.W_dec)  # the own decoder is untouched
        torch.testing.assert_close(loaded(xs).reconstructions[i], folded(xs[i]).reconstruction)


def test_save_and_load_fold_the_scales_and_keep_the_provenance(tmp_path):
    clt = random_clt(scales=True)
    xs = [torch.randn(6, 8) for _ in range(3)]
    folder = save_crosslayer(clt, tmp_path / "clt", training_tokens=1234)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "crosslayer.safetensors"]
    loaded = load_crosslayer(folder / "crosslayer.safetensors")  # a file in the folder works too
    assert not loaded.training and loaded.layers == (0, 1, 2) and loaded.k == 3
    # raw x -> raw y: the scaled module's output divided by its output scale
    want = clt([x * s for x, s in zip(xs, clt.input_scale)]).reconstructions
    for j, y in enumerate(loaded(xs).reconstructions):
        torch.testing.assert_close(y, want[j] / clt.output_scale[j], rtol=1e-5, atol=1e-5)
    assert torch.equal(loaded.input_scale, torch.ones(3)) and torch.equal(clt.input_scale[:2], torch.tensor([1.7, 0.4]))
    meta = json.loads((folder / "cfg.json").read_text())
    assert meta["kind"] == "crosslayer" and meta["training_tokens"] == 1234 and meta["d_sae"] == 12
    assert meta["hooks"] == [list(mlp_hooks(i)) for i in range(3)]
    assert meta["folded_scales"]["output_scale"] == pytest.approx([0.6, 1.9, 0.8])
    assert meta["transcoders_config"]["d_sae"] == 12 and len(meta["config_hash"]) > 8
    # a second save of the loaded one is the same weights
    again = load_crosslayer(save_crosslayer(loaded, tmp_path / "again"))
    assert all(torch.equal(t, again.state_dict()[n]) for n, t in loaded.state_dict().items())


def test_training_lowers_the_loss_and_resumes_bitwise(model, shards, tmp_path):
    straight = train_crosslayer(CFG, model, shards, tmp_path / "straight", progress=False, buffer_tokens=BUFFER)
    assert straight["finished"] and straight["layers"] == [0, 1] and straight["steps"] == 12
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < 0.85 * rows[0]["loss"]  # 12 steps: the per-layer transcoders fall as far
    assert all(len(r["fve"]) == 2 and all(l0 <= 4 for l0 in r["l0"]) for r in rows)
    assert all(r["loss"] == pytest.approx(sum(r["mse"]), rel=1e-5) for r in rows)
    # the summary's figures are the saved CLT's (folded: on raw activations) on the eight
    # fresh batches of seed + 2, pooled
    clt = load_crosslayer(tmp_path / "straight")
    hooks = [h for layer in (0, 1) for h in mlp_hooks(layer)]
    source = MultiHookStream(model, shards, stream_config(CFG), hooks, buffer_tokens=BUFFER)
    sse, sst, active, n = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), [0, 0], 0
    for batch, _ in zip(source.batches(CFG.batch_size, seed=CFG.seed + 2), range(8)):
        with torch.no_grad():
            out = clt([batch[mlp_hooks(i)[0]] for i in (0, 1)])
        for i in (0, 1):
            y = batch[mlp_hooks(i)[1]].double() * source.scale(mlp_hooks(i)[1])  # the trained units
            y_hat = out.reconstructions[i].double() * source.scale(mlp_hooks(i)[1])
            sse[i] += (y - y_hat).pow(2).sum()
            sst[i] += (y - y.mean(0)).pow(2).sum()
            active[i] += int((out.latents[i] > 0).sum())
        n += len(batch[hooks[0]])
    per_layer = straight["per_layer"]
    assert [r["layer"] for r in per_layer] == [0, 1]
    for i in (0, 1):
        assert per_layer[i]["fve"] == pytest.approx(float(1 - sse[i] / sst[i]), rel=1e-4, abs=1e-5)
        assert per_layer[i]["mse"] == pytest.approx(float(sse[i] / n), rel=1e-4)
        assert per_layer[i]["l0"] == active[i] / n == 4
    assert straight["scales"]["0"] == [source.scale(mlp_hooks(0)[0]), source.scale(mlp_hooks(0)[1])]

    # killed at step 8: the last checkpoint is step 5, steps 6-8 are lost and redone
    partial = train_crosslayer(CFG, model, shards, tmp_path / "resumed", progress=False,
                               buffer_tokens=BUFFER, stop_after=8)
    assert not partial["finished"] and not (tmp_path / "resumed" / "cfg.json").exists()
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 5
    resumed = train_crosslayer(CFG, model, shards, tmp_path / "resumed", progress=False, buffer_tokens=BUFFER)
    a, b = (torch.load(tmp_path / run / CHECKPOINT, weights_only=True) for run in ("straight", "resumed"))
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(t, b["model"][n]) for n, t in a["model"].items())
    assert torch.equal(a["since_fired"], b["since_fired"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[key], sb[key]) for key in sa)
    again = load_crosslayer(tmp_path / "resumed")
    assert all(torch.equal(t, again.state_dict()[n]) for n, t in clt.state_dict().items())
    drop = lambda r: {k: v for k, v in r.items() if k != "tokens_per_s"}
    resumed_rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [drop(r) for r in resumed_rows] == [drop(r) for r in rows]  # no step twice
    assert resumed["per_layer"] == straight["per_layer"]
    # a finished run returns its summary; another config refuses the checkpoint
    assert train_crosslayer(CFG, model, shards, tmp_path / "resumed", progress=False,
                            buffer_tokens=BUFFER)["per_layer"] == straight["per_layer"]
    with pytest.raises(ConfigError, match="different configuration"):
        train_crosslayer(dataclasses.replace(CFG, k=3), model, shards, tmp_path / "resumed", progress=False,
                         buffer_tokens=BUFFER)


def one_line(message: str) -> bool:
    return "\n" not in message


def test_bad_input_is_a_one_line_error(model, shards, tmp_path):
    clt = random_clt()
    with pytest.raises(ValueError, match="2 inputs for a CLT over 3 layers") as e:
        clt.encode([torch.randn(4, 8)] * 2)
    assert one_line(str(e.value))
    with pytest.raises(ValueError, match=r"inputs of shape \(4, 9\)"):
        clt([torch.randn(4, 9)] * 3)
    with pytest.raises(ValueError, match="4 feature sets for a CLT over 3 layers"):
        clt.decode([torch.randn(4, 12)] * 4)
    with pytest.raises(ValueError, match="no decoder 2 -> 1"):
        clt.decoder(2, 1)
    with pytest.raises(ConfigError, match="distinct increasing layers"):
        CrossLayerTranscoder(TranscodersConfig(d_sae=12, k=3), [1, 0], 8)
    with pytest.raises(ConfigError, match="k=20 is larger"):
        CrossLayerTranscoder(TranscodersConfig(kind="relu", d_sae=12, k=20), [0], 8)
    with pytest.raises(ConfigError) as e:  # a layer the model does not have: refused before writing
        train_crosslayer(dataclasses.replace(CFG, layers=(0, 5)), model, shards, tmp_path / "out", progress=False)
    assert one_line(str(e.value)) and "layer 5 but the model has 2 layers" in str(e.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="transcoders.cross_layer=true"):
        load_crosslayer(tmp_path / "nothing")
    sae = SparseAutoencoder(TranscodersConfig(d_sae=12, k=3).sae_config(0), d_in=8)
    with pytest.raises(ValueError, match="is a 'topk'.*reads crosslayer"):
        load_crosslayer(save_sae(sae, tmp_path / "an_sae"))


def test_one_layer_of_the_model(model, shards, tmp_path):
    cfg = dataclasses.replace(CFG, layers=(1,), n_tokens=128 * 3)
    summary = train_crosslayer(cfg, model, shards, tmp_path, progress=False, buffer_tokens=BUFFER)
    clt = load_crosslayer(tmp_path)
    assert summary["layers"] == [1] and clt.layers == (1,) and clt.hooks == [mlp_hooks(1)]
    assert len(clt.W_dec) == 1 and clt.W_dec[0].shape == (1, 32, 32)
