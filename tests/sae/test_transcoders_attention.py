"""SAEs on each attention output, trained beside the transcoders on one stream."""

import dataclasses

import pytest
import torch

from tinycourse.config import ConfigError
from tinycourse.sae.activations import StreamingSource
from tinycourse.sae.model import load_sae
from tinycourse.sae.train import train_sae
from tinycourse.sae.transcoders import (
    ATTENTION,
    attention_config,
    attention_hook,
    load_attention_saes,
    load_transcoders,
    stream_config,
    train_transcoders,
)
from tinycourse.training import CHECKPOINT

from .test_transcoders import BUFFER, CFG, model, read_metrics, same_weights, shards  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

ATTN = dataclasses.replace(CFG, attention_saes=True)


def test_attention_saes_train_on_the_transcoders_rows(model, shards, tmp_path):
    result = train_transcoders(ATTN, model, shards, tmp_path / "both", progress=False, buffer_tokens=BUFFER)
    assert result["finished"] and result["attention"]["hooks"] == {"0": "blocks.0.hook_attn_out",
                                                                   "1": "blocks.1.hook_attn_out"}
    saes = load_attention_saes(tmp_path / "both")
    assert list(saes) == [0, 1] and list(load_transcoders(tmp_path / "both")) == [0, 1]  # apart
    for layer in (0, 1):
        hook = attention_hook(layer)
        alone = StreamingSource(model, shards, stream_config(CFG), hook, buffer_tokens=BUFFER)
        summary = train_sae(attention_config(CFG, layer), alone, tmp_path / f"alone_{layer}",
                            progress=False, input_scale=alone.scale(hook))
        joint = saes[layer]
        assert (joint.cfg.hook_in, joint.cfg.hook_out, joint.is_transcoder) == (hook, "", False)
        assert (joint.cfg.kind, joint.d_sae, joint.cfg.k) == (CFG.kind, CFG.d_sae, CFG.k)
        # the same rows of the same stream (a stream of its hook alone hands out the same):
        # bitwise the same SAE, log and final figures
        assert same_weights(joint, load_sae(tmp_path / f"alone_{layer}"))
        folder = tmp_path / "both" / ATTENTION / f"layer_{layer}"
        assert read_metrics(folder) == read_metrics(tmp_path / f"alone_{layer}")
        member = result["attention"]["members"][str(layer)]
        assert {k: member[k] for k in ("mse", "fve", "l0", "dead_fraction")} == \
               {k: summary[k] for k in ("mse", "fve", "l0", "dead_fraction")}
        assert result["attention"]["scales"][str(layer)] == alone.scale(hook)
    # and the transcoders are those trained without the attention SAEs
    plain = train_transcoders(CFG, model, shards, tmp_path / "plain", progress=False, buffer_tokens=BUFFER)
    assert "attention" not in plain and not (tmp_path / "plain" / ATTENTION).exists()
    for layer, sae in load_transcoders(tmp_path / "plain").items():
        assert same_weights(sae, load_transcoders(tmp_path / "both")[layer])


def test_resume_with_attention_saes_is_bitwise_identical(model, shards, tmp_path):
    train_transcoders(ATTN, model, shards, tmp_path / "straight", progress=False, buffer_tokens=BUFFER)
    partial = train_transcoders(ATTN, model, shards, tmp_path / "resumed", progress=False,
                                buffer_tokens=BUFFER, stop_after=8)  # killed: steps 6-8 are lost
    assert not partial["finished"] and not (tmp_path / "resumed" / ATTENTION / "layer_0" / "cfg.json").exists()
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 5
    train_transcoders(ATTN, model, shards, tmp_path / "resumed", progress=False, buffer_tokens=BUFFER)
    for sub in (ATTENTION, "."):
        for layer in (0, 1):
            a, b = (load_sae(tmp_path / run / sub / f"layer_{layer}") for run in ("straight", "resumed"))
            assert same_weights(a, b)
            rows = read_metrics(tmp_path / "resumed" / sub / f"layer_{layer}")
            assert [r["step"] for r in rows] == list(range(1, 13))
            assert rows == read_metrics(tmp_path / "straight" / sub / f"layer_{layer}")


def test_a_checkpoint_from_the_other_setting_is_a_one_line_error(model, shards, tmp_path):
    train_transcoders(CFG, model, shards, tmp_path / "a", progress=False, buffer_tokens=BUFFER, stop_after=5)
    with pytest.raises(ConfigError) as err:
        train_transcoders(ATTN, model, shards, tmp_path / "a", progress=False, buffer_tokens=BUFFER)
    assert "\n" not in str(err.value)
    assert "written without the attention-output SAEs" in str(err.value)
    assert "transcoders.attention_saes=false" in str(err.value)
    train_transcoders(ATTN, model, shards, tmp_path / "b", progress=False, buffer_tokens=BUFFER, stop_after=5)
    with pytest.raises(ConfigError, match="written with the attention-output SAEs.*attention_saes=true"):
        train_transcoders(CFG, model, shards, tmp_path / "b", progress=False, buffer_tokens=BUFFER)
    with pytest.raises(FileNotFoundError, match="--set transcoders.attention_saes=true"):
        load_attention_saes(tmp_path / "a")


def test_the_attention_sae_has_no_skip_path():
    cfg = attention_config(dataclasses.replace(CFG, skip_connection=True), 1)
    assert (cfg.hook_in, cfg.hook_out, cfg.skip_connection) == ("blocks.1.hook_attn_out", "", False)
    assert CFG.sae_config(1).hook_in == "blocks.1.ln2.hook_normalized"
