"""The attention-output SAEs (transcoders.attention_saes) measured by `evaluate_replacement`,
against a forward with a hook at hook_attn_out written out here."""

import pytest
import torch

from tinycourse.evaluate.metrics import eval_windows
from tinycourse.evaluate.replacement import evaluate_replacement
from tinycourse.sae.model import SparseAutoencoder
from tinycourse.sae.transcoders import attention_config, attention_hook

from .test_replacement import CFG, D, N_CTX, model, shards  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def attention_saes(d_sae=48):
    """An SAE per attention output (the transcoders' TopK settings), random but with a decoder
    that is its encoder's transpose, so it neither reproduces nor destroys the output."""
    from tinycourse.config import TranscodersConfig

    cfg = TranscodersConfig(d_sae=d_sae, k=6)
    out = {}
    for layer in (0, 1):
        sae = SparseAutoencoder(attention_config(cfg, layer), D)
        with torch.no_grad():
            sae.W_dec.copy_(sae.W_enc.T)
        out[f"layer_{layer}"] = sae.eval()
    return out


@torch.no_grad()
def test_each_attention_output_replaced_matches_a_hook_by_hand(model, shards):
    saes = attention_saes()
    result = evaluate_replacement(model, saes, shards, CFG, progress=False)
    windows = torch.from_numpy(eval_windows(shards, "val", CFG.n_tokens, N_CTX, start_id=shards.start_id))
    tokens, targets = windows[:, :-1], windows[:, 1:]
    keep = tokens != shards.start_id
    target = targets[keep]

    def ce_kl(replace: dict):
        """CE and log-probs with each hook of `replace` given fn(its values (n, d)) at the counted positions."""
        def hook(fn):
            def run(act, point):
                act = act.clone()
                act[keep] = fn(act[keep])
                return act
            return run
        with model.hooks([(name, hook(fn)) for name, fn in replace.items()]):
            lp = model(tokens)[keep].log_softmax(-1).double()
        return -lp.gather(1, target[:, None]).mean().item(), lp

    clean_acts = {}
    clean, lp_clean = ce_kl({attention_hook(i): lambda a, i=i: clean_acts.setdefault(i, a) for i in (0, 1)})
    assert result["n_tokens"] == int(keep.sum())
    for i, (name, sae) in enumerate(saes.items()):
        row, hook = result["dictionaries"][i], attention_hook(i)
        assert (row["name"], row["hook_in"], row["hook_out"]) == (name, hook, hook)
        spliced, lp = ce_kl({hook: lambda a, sae=sae: sae(a).reconstruction})
        zero, _ = ce_kl({hook: torch.zeros_like})
        kl = (lp_clean.exp() * (lp_clean - lp)).sum(-1).mean().item()
        assert abs(zero - clean) > 1e-3 and abs(spliced - clean) > 1e-4  # both interventions change the loss
        alone = row["alone"]
        assert alone["ce_spliced"] == pytest.approx(spliced, rel=1e-5)
        assert alone["ce_zero_ablation"] == pytest.approx(zero, rel=1e-5)
        assert alone["ce_loss_recovered"] == pytest.approx((zero - spliced) / (zero - clean), rel=1e-4)
        assert alone["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
        y = clean_acts[i]
        latents, y_hat = sae.encode(y), sae(y).reconstruction
        assert row["fve"] == pytest.approx(1 - ((y - y_hat) ** 2).sum().item() / ((y - y.mean(0)) ** 2).sum().item(),
                                           rel=1e-5)
        assert row["l0"] == pytest.approx((latents > 0).sum(1).double().mean().item())
        assert row["n_dead"] == int(((latents > 0).sum(0) == 0).sum())
    # every attention output replaced at once: layer 1's SAE reads the replaced forward's output
    both, _ = ce_kl({attention_hook(i): lambda a, sae=sae: sae(a).reconstruction for i, sae in enumerate(saes.values())})
    assert result["replacement"]["ce_replacement"] == pytest.approx(both, rel=1e-5)
    assert result["replacement"]["ce_clean"] == pytest.approx(clean, rel=1e-5)
