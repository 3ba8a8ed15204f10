import dataclasses
import itertools
import json

import pytest
import torch

from tinycourse.config import (
    ConfigError,
    ModelConfig,
    TranscodersConfig,
    apply_overrides,
    preset,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.activations import StreamingSource
from tinycourse.sae.model import load_sae
from tinycourse.sae.train import train_sae, train_sweep
from tinycourse.sae.transcoders import (
    MultiHookStream,
    load_transcoders,
    mlp_hooks,
    stream_config,
    train_transcoders,
)
from tinycourse.training import CHECKPOINT

# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")

BUFFER = 256  # mixing-buffer rows: several buffers a pass over the small split
CFG = TranscodersConfig(d_sae=32, k=4, n_tokens=128 * 12, batch_size=128, lr=3e-3,
                        lr_warmup_steps=3, checkpoint_every=5, lm_batch_size=8,
                        dead_after_tokens=128 * 2)


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16,
                      d_vocab=64, init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    return random_shards(tmp_path / "shards", train_tokens=3000, val_tokens=800)


def read_metrics(folder):
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def same_weights(a, b) -> bool:
    return all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())


def test_the_multi_hook_stream_hands_out_each_hooks_single_stream(model, shards):
    hooks = [h for layer in (0, 1) for h in mlp_hooks(layer)]
    multi = MultiHookStream(model, shards, stream_config(CFG), hooks, buffer_tokens=BUFFER)
    assert multi.widths == dict.fromkeys(hooks, 32)
    take = lambda source, start: list(itertools.islice(source.batches(100, seed=4, start_batch=start), 7))
    batches = take(multi, 0)
    assert all(set(b) == set(hooks) and all(x.shape == (100, 32) for x in b.values()) for b in batches)
    for layer in (0, 1):
        hook_in, hook_out = mlp_hooks(layer)
        alone = StreamingSource(model, shards, stream_config(CFG), hook_in, hook_out, buffer_tokens=BUFFER)
        for b, (x_in, x_out) in zip(batches, take(alone, 0)):
            assert torch.equal(b[hook_in], x_in) and torch.equal(b[hook_out], x_out)
        assert multi.scale(hook_in) == alone.scale(hook_in) and multi.scale(hook_out) == alone.scale(hook_out)
    # one LM forward feeds every hook: row r of each is the same token (layer 1's input
    # is the normed residual after MLP 0's output), and a later start is the same tail
    for b, late in zip(batches[3:], take(multi, 3)):
        assert all(torch.equal(b[h], late[h]) for h in hooks)
    assert not torch.equal(batches[0][hooks[0]], take(multi, 1)[0][hooks[0]])
    with pytest.raises(KeyError, match="blocks.0.hook_mlp_out"):
        MultiHookStream(model, shards, stream_config(CFG), ["blocks.0.hook_mlp_outt"])


def test_two_layers_from_one_stream_equal_each_trained_alone(model, shards, tmp_path):
    result = train_transcoders(CFG, model, shards, tmp_path / "both", progress=False,
                               buffer_tokens=BUFFER)
    assert result["finished"] and result["layers"] == [0, 1]
    saes = load_transcoders(tmp_path / "both")
    assert list(saes) == [0, 1]
    for layer in (0, 1):
        hook_in, hook_out = mlp_hooks(layer)
        alone = StreamingSource(model, shards, stream_config(CFG), hook_in, hook_out, buffer_tokens=BUFFER)
        summary = train_sae(CFG.sae_config(layer), alone, tmp_path / f"alone_{layer}", progress=False,
                            input_scale=alone.scale(hook_in), output_scale=alone.scale(hook_out))
        joint = saes[layer]
        assert (joint.cfg.hook_in, joint.cfg.hook_out) == (hook_in, hook_out) and joint.is_transcoder
        # the same initial weights, batches and scales: bitwise the same transcoder,
        # the same training log and the same final figures
        assert same_weights(joint, load_sae(tmp_path / f"alone_{layer}"))
        assert read_metrics(tmp_path / "both" / f"layer_{layer}") == read_metrics(tmp_path / f"alone_{layer}")
        member = result["members"][str(layer)]
        assert {k: member[k] for k in ("mse", "fve", "l0", "dead_fraction")} == \
               {k: summary[k] for k in ("mse", "fve", "l0", "dead_fraction")}
        assert result["scales"][str(layer)] == [alone.scale(hook_in), alone.scale(hook_out)]
    assert json.loads((tmp_path / "both" / "training.json").read_text())["layers"] == [0, 1]


def test_resume_after_a_kill_is_bitwise_identical(model, shards, tmp_path):
    train_transcoders(CFG, model, shards, tmp_path / "straight", progress=False, buffer_tokens=BUFFER)
    # killed at step 8: the last checkpoint is step 5, steps 6-8 are lost and redone
    partial = train_transcoders(CFG, model, shards, tmp_path / "resumed", progress=False,
                                buffer_tokens=BUFFER, stop_after=8)
    assert not partial["finished"] and not (tmp_path / "resumed" / "training.json").exists()
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 5
    train_transcoders(CFG, model, shards, tmp_path / "resumed", progress=False, buffer_tokens=BUFFER)
    straight = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert straight["step"] == resumed["step"] == 12
    for a, b in zip(straight["members"], resumed["members"]):
        assert all(torch.equal(t, b["model"][n]) for n, t in a["model"].items())
        assert torch.equal(a["since_fired"], b["since_fired"])
        for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            assert all(torch.equal(sa[key], sb[key]) for key in sa)
    for layer in (0, 1):
        a, b = (load_sae(tmp_path / run / f"layer_{layer}") for run in ("straight", "resumed"))
        assert same_weights(a, b)
        rows = read_metrics(tmp_path / "resumed" / f"layer_{layer}")
        assert [r["step"] for r in rows] == list(range(1, 13))  # no step twice
        assert rows == read_metrics(tmp_path / "straight" / f"layer_{layer}")


def test_members_with_other_hooks_need_a_multi_hook_source(model, shards, tmp_path):
    hook_in, hook_out = mlp_hooks(0)
    plain = StreamingSource(model, shards, stream_config(CFG), hook_in, hook_out, buffer_tokens=BUFFER)
    with pytest.raises(ConfigError, match="hook_in must be the same"):
        train_sweep([CFG.sae_config(0), CFG.sae_config(1)], plain, tmp_path, names=["a", "b"], progress=False)
    multi = MultiHookStream(model, shards, stream_config(CFG), mlp_hooks(0), buffer_tokens=BUFFER)
    with pytest.raises(ConfigError, match="does not stream"):
        train_sweep([CFG.sae_config(0), CFG.sae_config(1)], multi, tmp_path, names=["a", "b"], progress=False)
    with pytest.raises(ConfigError, match="input_scale has 3 values for 2 configs"):
        train_sweep([CFG.sae_config(0), CFG.sae_config(0)], multi, tmp_path, names=["a", "b"],
                    progress=False, input_scale=[1.0, 1.0, 1.0])


def test_bad_layers_are_one_line_errors(model, shards, tmp_path):
    with pytest.raises(ConfigError) as err:
        train_transcoders(dataclasses.replace(CFG, layers=(0, 5)), model, shards, tmp_path / "out",
                          progress=False)
    assert "\n" not in str(err.value)
    assert "layer 5 but the model has 2 layers (0..1)" in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="distinct layer indices"):
        TranscodersConfig(layers=(1, 1))
    with pytest.raises(ConfigError, match="transcoders.k=64 is larger"):
        TranscodersConfig(d_sae=32, k=64)
    assert apply_overrides(preset("tiny"), ["transcoders.layers=1,0"]).transcoders.layers == (1, 0)
    with pytest.raises(ConfigError, match="comma-separated ints"):
        apply_overrides(preset("tiny"), ["transcoders.layers=a"])


def test_one_layer_of_the_model(model, shards, tmp_path):
    result = train_transcoders(dataclasses.replace(CFG, layers=(1,)), model, shards, tmp_path,
                               progress=False, buffer_tokens=BUFFER)
    assert result["layers"] == [1] and list(load_transcoders(tmp_path)) == [1]
    assert load_transcoders(tmp_path)[1].cfg.hook_out == "blocks.1.hook_mlp_out"
