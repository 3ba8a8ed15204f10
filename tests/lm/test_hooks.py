"""Hook points and the HookedModule mixin, on the GPT and on a toy model."""

import pytest
import torch
from torch import nn

from tinycourse.config import ModelConfig
from tinycourse.lm.hooks import HookedModule, HookPoint
from tinycourse.lm.model import GPT

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=64)

PER_BLOCK = [
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out",
    "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post",
    "hook_mlp_out", "hook_resid_post",
]
EXPECTED = (["hook_embed", "hook_pos_embed"]
            + [f"blocks.{i}.{n}" for i in range(2) for n in PER_BLOCK]
            + ["ln_final.hook_normalized"])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(CFG)


@pytest.fixture
def tokens():
    return torch.randint(0, CFG.d_vocab, (3, CFG.n_ctx), generator=torch.Generator().manual_seed(1))


class Toy(HookedModule):
    """Not a GPT: the mixin only needs HookPoints somewhere in the module tree."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        self.acts = nn.ModuleList(HookPoint() for _ in range(3))

    def forward(self, x):
        for layer, hook in zip(self.layers, self.acts):
            x = hook(torch.relu(layer(x)))
        return x


def test_hook_names_come_from_module_paths_in_forward_order(model):
    assert list(model.hook_points) == EXPECTED
    for name, point in model.hook_points.items():
        assert point.name == name
    assert list(Toy().hook_points) == ["acts.0", "acts.1", "acts.2"]


def test_hook_point_without_hooks_returns_its_input_object():
    x = torch.randn(2, 3)
    assert HookPoint()(x) is x


def test_hook_can_replace_an_activation(model, tokens):
    clean = model(tokens)
    with model.hooks([("blocks.1.hook_mlp_out", lambda act, hook: torch.zeros_like(act))]):
        ablated = model(tokens)
        # the ablation equals computing the model without block 1's MLP by hand
        _, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"])
    assert not torch.allclose(clean, ablated)
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_mid"])
    torch.testing.assert_close(model(tokens), clean)  # the hook is gone after the block


def test_hook_returning_none_only_observes(model, tokens):
    seen = []
    with model.hooks([("blocks.0.hook_resid_post", lambda act, hook: seen.append((hook.name, act.shape)))]):
        out = model(tokens)
    torch.testing.assert_close(out, model(tokens))
    assert seen == [("blocks.0.hook_resid_post", torch.Size([3, CFG.n_ctx, CFG.d_model]))]


def test_hook_of_wrong_shape_is_an_error(model, tokens):
    with model.hooks([("hook_embed", lambda act, hook: act[:, :1])]):
        with pytest.raises(ValueError, match="hook_embed returned shape"):
            model(tokens)


def test_hooks_removed_after_an_exception(model, tokens):
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([("hook_embed", lambda act, hook: act * 0)]):
            raise RuntimeError("boom")
    assert not any(p.has_hooks for p in model.hook_points.values())


def test_unknown_hook_name_lists_close_names(model):
    with pytest.raises(KeyError, match="blocks.0.attn.hook_pattern"):
        with model.hooks([("blocks.0.attn.hook_patern", lambda act, hook: None)]):
            pass
    with pytest.raises(KeyError, match="hook_resid_post"):
        model.run_with_cache(torch.zeros(1, 4, dtype=torch.long), names=["blocks.0.hook_resid_pots"])
    # nothing was attached before the bad name was found
    assert not any(p.has_hooks for p in model.hook_points.values())


def test_predicate_names_attach_everywhere_they_match(model, tokens):
    seen = []
    with model.hooks([(lambda n: n.endswith("hook_z"), lambda act, hook: seen.append(hook.name))]):
        model(tokens)
    assert seen == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]


def test_run_with_cache_keeps_only_what_is_asked(model, tokens):
    logits, cache = model.run_with_cache(tokens, names=["blocks.1.attn.hook_pattern", "hook_embed"])
    torch.testing.assert_close(logits, model(tokens))
    assert list(cache) == ["hook_embed", "blocks.1.attn.hook_pattern"]  # forward order
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, CFG.n_heads, CFG.n_ctx, CFG.n_ctx)
    assert not cache["hook_embed"].requires_grad

    _, by_predicate = model.run_with_cache(tokens, names=lambda n: ".mlp." in n)
    assert list(by_predicate) == [f"blocks.{i}.mlp.hook_{w}" for i in range(2) for w in ("pre", "post")]
    _, everything = model.run_with_cache(tokens)
    assert list(everything) == EXPECTED


def test_run_with_cache_stops_after_last_requested(model, tokens):
    later = []
    with model.hooks([("blocks.1.hook_resid_pre", lambda act, hook: later.append(1))]):
        logits, cache = model.run_with_cache(tokens, names=["blocks.0.hook_mlp_out"], stop_at_layer="auto")
    assert logits is None and later == []
    _, full = model.run_with_cache(tokens, names=["blocks.0.hook_mlp_out"])
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], full["blocks.0.hook_mlp_out"])
    assert not any(p.has_hooks for p in model.hook_points.values())


def test_run_with_cache_stop_at_layer_returns_residual(model, tokens):
    resid, cache = model.run_with_cache(tokens, names=["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"],
                                        stop_at_layer=1)
    torch.testing.assert_close(resid, cache["blocks.0.hook_resid_post"])
    assert list(cache) == ["blocks.0.hook_resid_post"]  # block 1 never ran


def test_no_torch_hooks_are_left_registered(model, tokens):
    model.run_with_cache(tokens, names=["blocks.0.attn.hook_z"])
    with model.hooks([("hook_embed", lambda act, hook: None)]):
        model(tokens)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_mixin_works_on_any_module():
    toy = Toy()
    x = torch.randn(5, 4)
    out, cache = toy.run_with_cache(x, names=["acts.1"])
    torch.testing.assert_close(out, toy(x))
    assert cache["acts.1"].shape == (5, 4)
    with toy.hooks([("acts.2", lambda act, hook: act + 1)]):
        torch.testing.assert_close(toy(x), out + 1)
