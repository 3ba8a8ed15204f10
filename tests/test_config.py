import dataclasses

import pytest

from tinycourse.config import (PRESETS, ConfigError, CourseConfig, apply_overrides,
                               config_hash, from_dict, preset)


def test_presets_exist_and_are_frozen():
    assert set(PRESETS) == {"tiny", "small", "replication"}
    cfg = preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.n_layers = 3
    assert cfg.data.source == "storyworld"
    assert PRESETS["small"].data.source == "tinystories"


def test_replication_is_tinymodel_sized():
    model = PRESETS["replication"].resolved_model
    assert (model.n_layers, model.d_model, model.n_heads, model.n_ctx) == (4, 768, 16, 256)
    assert 9_000 <= model.d_vocab <= 11_000


def test_resolved_model_takes_vocab_from_tokenizer():
    cfg = apply_overrides(preset("tiny"), ["tokenizer.vocab_size=777"])
    assert cfg.model.d_vocab == 0 and cfg.resolved_model.d_vocab == 777
    remap = apply_overrides(cfg, ["tokenizer.kind=remap", "tokenizer.top_k=500"])
    assert remap.resolved_model.d_vocab == 502  # [UNK] + 500 + [BEGIN]


def test_override_parses_types():
    cfg = apply_overrides(preset("tiny"), ["model.n_layers=3", "train.lr=1e-4",
                                           "model.tied_embeddings=true", "model.act=relu"])
    assert cfg.model.n_layers == 3 and cfg.train.lr == 1e-4
    assert cfg.model.tied_embeddings is True and cfg.model.act == "relu"


def test_unknown_field_names_closest():
    with pytest.raises(ConfigError, match="model.n_layers"):
        apply_overrides(preset("tiny"), ["model.n_layer=3"])
    with pytest.raises(ConfigError, match="'model'"):
        apply_overrides(preset("tiny"), ["modle.n_layers=3"])


def test_wrong_type_names_field_and_type():
    with pytest.raises(ConfigError, match=r"model.n_layers expects int"):
        apply_overrides(preset("tiny"), ["model.n_layers=two"])
    with pytest.raises(ConfigError, match=r"expects a bool"):
        apply_overrides(preset("tiny"), ["model.tied_embeddings=maybe"])


def test_validation_rejects_bad_values():
    with pytest.raises(ConfigError, match="model.norm"):
        apply_overrides(preset("tiny"), ["model.norm=batchnorm"])
    with pytest.raises(ConfigError, match="divisible"):
        apply_overrides(preset("tiny"), ["train.grad_accum=5"])
    with pytest.raises(ConfigError, match="Did you mean 'tiny'"):
        preset("tiyn")


def test_hash_is_stable_and_sensitive():
    a, b = preset("tiny"), preset("tiny")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(apply_overrides(a, ["model.d_mlp=256"]))


def test_round_trip_through_dict():
    cfg = preset("small")
    assert from_dict(cfg.to_dict()) == cfg
    assert isinstance(from_dict(cfg.to_dict()), CourseConfig)
