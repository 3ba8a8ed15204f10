"""Feature families: the chunked nearest-latent search against a brute-force cosine
matrix, and planted dictionaries whose one-to-one matches and splits are known."""

import pytest
import torch
import torch.nn.functional as F

from tinycourse.config import SAEConfig
from tinycourse.interpret.families import feature_families, nearest_latents
from tinycourse.sae.model import SparseAutoencoder

D = 64  # random unit rows in 64 dims have cosines of std 1/8: none near the 0.7 threshold
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def brute_force(W_a, W_b, n, exclude_self=False):
    """Every pair's cosine at once (torch's own cosine_similarity), then the top n."""
    cos = F.cosine_similarity(W_a[:, None, :].double(), W_b[None, :, :].double(), dim=-1)
    if exclude_self:
        cos.fill_diagonal_(float("-inf"))
    top = cos.topk(n, dim=1)
    return top.indices, top.values.float()


def make_sae(d_sae, rows=None):
    """A top-k SAE on HOOK with `rows` (d_sae, D) as its decoder, if given."""
    torch.manual_seed(d_sae)
    sae = SparseAutoencoder(SAEConfig(kind="topk", d_sae=d_sae, k=4, hook_in=HOOK), d_in=D)
    if rows is not None:
        with torch.no_grad():
            sae.W_dec.copy_(rows)
    return sae


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_nearest_latents_matches_the_full_cosine_matrix(chunk):
    W_a = torch.randn(50, 16) * torch.rand(50, 1) * 3  # rows of different norms
    W_b = torch.randn(300, 16)
    W_b[17] = 0.0  # a dead row: cosine 0 with everything, never NaN
    ids, cos = nearest_latents(W_a, W_b, 5, chunk=chunk)
    ref_ids, ref_cos = brute_force(W_a, W_b, 5)
    assert ids.dtype == torch.int64 and cos.dtype == torch.float32 and ids.shape == (50, 5)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(cos, ref_cos)
    assert not cos.isnan().any()


@pytest.mark.parametrize("chunk", [3, 1024])
def test_within_one_dictionary_a_row_is_not_its_own_neighbour(chunk):
    W = torch.randn(40, 8)
    W[25] = 2.0 * W[3] + 0.01 * torch.randn(8)  # a near-duplicate: each other's nearest
    ids, cos = nearest_latents(W, W, 4, exclude_self=True, chunk=chunk)
    ref_ids, ref_cos = brute_force(W, W, 4, exclude_self=True)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(cos, ref_cos)
    assert not (ids == torch.arange(40)[:, None]).any()
    assert ids[3, 0] == 25 and ids[25, 0] == 3 and cos[3, 0] > 0.99
    # without exclude_self every row finds itself first, at cosine 1
    self_ids, self_cos = nearest_latents(W, W, 1)
    assert torch.equal(self_ids[:, 0], torch.arange(40))
    torch.testing.assert_close(self_cos[:, 0], torch.ones(40))


def planted_pair():
    """small: 16 random unit rows. large: 64 random unit rows, but row 5 is small's row 0
    (a one-to-one match) and rows 10 and 40 are two small perturbations of small's row 3
    (row 3 split in two)."""
    torch.manual_seed(0)
    small_rows = unit(torch.randn(16, D))
    large_rows = unit(torch.randn(64, D))
    large_rows[5] = small_rows[0]
    large_rows[10] = unit(small_rows[3] + 0.3 * unit(torch.randn(D)))
    large_rows[40] = unit(small_rows[3] + 0.3 * unit(torch.randn(D)))
    return make_sae(16, small_rows), make_sae(64, large_rows)


def test_two_perturbations_of_one_row_are_reported_as_its_split():
    small, large = planted_pair()
    families = feature_families(small, large, threshold=0.7, n=4)
    rows = {r["latent"]: r for r in families.rows}
    assert [r["latent"] for r in families.splits] == [3]
    split = rows[3]
    assert split["kind"] == "split" and set(split["family"]) == {10, 40}
    assert len(split["family_cos"]) == 2 and min(split["family_cos"]) > 0.9
    assert split["best"] in (10, 40) and not split["truncated"]
    assert rows[0]["kind"] == "one-to-one" and rows[0]["family"] == [5]
    assert rows[0]["best_cos"] == pytest.approx(1.0, abs=1e-6)
    assert all(rows[i]["kind"] == "unmatched" and rows[i]["family"] == []
               for i in range(16) if i not in (0, 3))
    assert families.summary == {"one_to_one": 1, "splits": 1, "unmatched": 14,
                                "large_in_a_family": 3, "large_unclaimed": 61, "d_small": 16,
                                "d_large": 64, "threshold": 0.7, "n": 4}
    # the best match is the brute-force nearest large row, for every small latent
    ref_ids, ref_cos = brute_force(small.W_dec.detach(), large.W_dec.detach(), 1)
    assert [r["best"] for r in families.rows] == ref_ids[:, 0].tolist()
    torch.testing.assert_close(torch.tensor([r["best_cos"] for r in families.rows]), ref_cos[:, 0])


def test_a_threshold_above_the_perturbations_cosine_leaves_the_row_unmatched():
    small, large = planted_pair()
    families = feature_families(small, large, threshold=0.999, n=4)
    assert families.summary["splits"] == 0 and families.summary["one_to_one"] == 1
    assert {r["latent"]: r["kind"] for r in families.rows}[3] == "unmatched"


def test_a_family_as_large_as_n_is_marked_truncated():
    small, large = planted_pair()
    row = {r["latent"]: r for r in feature_families(small, large, threshold=0.7, n=2).rows}[3]
    assert row["kind"] == "split" and row["truncated"] and len(row["family"]) == 2


def test_identical_dictionaries_match_one_to_one_at_cosine_one():
    small, _ = planted_pair()
    families = feature_families(small, small, n=3)
    assert all(r["kind"] == "one-to-one" and r["best"] == r["latent"] for r in families.rows)
    torch.testing.assert_close(torch.tensor([r["best_cos"] for r in families.rows]), torch.ones(16))
    assert families.summary["one_to_one"] == 16 and families.summary["large_unclaimed"] == 0
    assert families.splits == []


@pytest.mark.parametrize("large_cfg,match", [
    ({"hook_in": "blocks.1.hook_resid_post"}, "the SAEs read different hooks \\(hook_in"),
    ({"d_in": 32}, "the SAEs have different widths"),
    ({"d_sae": 8}, "small has 16 latents, more than large's 8: pass them the other way round"),
])
def test_families_of_incomparable_dictionaries_are_a_one_line_error(large_cfg, match):
    small = make_sae(16)
    d_sae = large_cfg.pop("d_sae", 64)
    d_in = large_cfg.pop("d_in", D)
    large = SparseAutoencoder(SAEConfig(kind="topk", d_sae=d_sae, k=4, **{"hook_in": HOOK, **large_cfg}),
                              d_in=d_in)
    with pytest.raises(ValueError, match=match) as error:
        feature_families(small, large)
    assert "\n" not in str(error.value)


def test_families_threshold_must_be_a_cosine():
    small, large = planted_pair()
    with pytest.raises(ValueError, match="threshold is a cosine, in -1..1, got 1.5"):
        feature_families(small, large, threshold=1.5)


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.randn(4, 8), torch.randn(5, 7), 2), {}, "same d, got \\(4, 8\\) and \\(5, 7\\)"),
    ((torch.randn(8), torch.randn(5, 8), 2), {}, "must be \\(n, d\\) matrices"),
    ((torch.randn(4, 8), torch.randn(5, 8), 6), {}, "n must be in 1..5"),
    ((torch.randn(5, 8), torch.randn(5, 8), 5), {"exclude_self": True}, "n must be in 1..4"),
    ((torch.randn(4, 8), torch.randn(5, 8), 2), {"exclude_self": True}, "pass the same matrix twice"),
    ((torch.randn(4, 8), torch.randn(5, 8), 2), {"chunk": 0}, "chunk must be a positive"),
])
def test_nearest_latents_bad_input_is_a_one_line_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match) as error:
        nearest_latents(*args, **kwargs)
    assert "\n" not in str(error.value)
