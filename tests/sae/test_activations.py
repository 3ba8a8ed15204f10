"""Activation stores, their readers, the streaming source, and activation statistics."""

import dataclasses
import itertools
import json
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from tinycourse.config import ActivationsConfig, ModelConfig
from tinycourse.corpus.shards import Shards
from tinycourse.lm.model import GPT
from tinycourse.sae import activations as act
from tinycourse.sae.activations import (ActivationStore, DiskSpaceError, StreamingSource,
                                        activation_stats, collect_activations, decode,
                                        disk_cost_table, encode, estimate_bytes, hook_width)

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=64)
START = 0
POST0, PRE1, Z0 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"
ACFG = ActivationsConfig(hooks=(POST0, PRE1, Z0), n_tokens=1000, batch_size=8, seed=3)


def write_shards(root, n_tokens=4000, seed=0):
    """A shards folder of random "stories" (each opened by START) over a 64-token vocabulary."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", n_tokens), ("val", n_tokens // 4)):
        tokens = rng.integers(1, CFG.d_vocab, n).astype(np.uint16)
        starts = np.cumsum(rng.integers(5, 40, n // 5))
        tokens[np.concatenate([[0], starts[starts < n]])] = START
        tokens.tofile(root / f"{split}.bin")
        splits[split] = {"tokens": n, "stories": int((tokens == START).sum())}
    meta = {"splits": splits, "dtype": "uint16", "start_id": START, "vocab_size": CFG.d_vocab,
            "tokenizer_hash": "test"}
    (root / "meta.json").write_text(json.dumps(meta))
    return Shards.open(root)


def make_model():
    torch.manual_seed(0)
    return GPT(CFG)


Built = namedtuple("Built", "model shards store")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fp16 store of 1000 rows at three hooks, shared by the reader tests."""
    root = tmp_path_factory.mktemp("acts")
    model, shards = make_model(), write_shards(root / "shards")
    collect_activations(model, shards, ACFG, root / "store", progress=False)
    return Built(model, shards, ActivationStore.open(root / "store"))


def direct(model, shards, store, hook):
    """Activations of `hook` recomputed by hand from the split at each row's window and
    position: (n_tokens, width) float32."""
    split = shards.tokens("train")
    windows = np.stack([split[s : s + CFG.n_ctx] for s in store.window_start])
    _, cache = model.run_with_cache(torch.from_numpy(windows.astype(np.int64)), names=[hook])
    full = cache[hook].reshape(len(windows), CFG.n_ctx, -1).numpy()
    return full[store.rows[:, 0], store.rows[:, 1]]


def multiset(rows):
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique, counts


# --- collection ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rows_equal_a_direct_forward_pass(built, tmp_path, dtype):
    store = built.store
    if dtype != "float16":
        cfg = dataclasses.replace(ACFG, dtype=dtype)
        collect_activations(built.model, built.shards, cfg, tmp_path, progress=False)
        store = ActivationStore.open(tmp_path)
    raw_dtype = {"float16": np.float16, "bfloat16": np.uint16}[dtype]
    tolerance = {"float16": 1e-3, "bfloat16": 4e-3}[dtype]  # two ulps, relative
    for hook in (POST0, Z0):
        raw = store.array(hook)
        assert raw.shape == (1000, hook_width(hook, CFG)) and raw.dtype == raw_dtype
        expected = direct(built.model, built.shards, store, hook)
        np.testing.assert_allclose(store.read(hook), expected, rtol=tolerance, atol=1e-6)
    # the windows are the split's own, in a shuffled order of non-overlapping windows
    split = built.shards.tokens("train")
    for w, start in enumerate(store.window_start):
        assert start % CFG.n_ctx == 0
        assert np.array_equal(store.windows[w], split[start : start + CFG.n_ctx])
    assert not np.all(np.diff(store.window_start) > 0)


def test_exclude_start_drops_start_positions(built, tmp_path):
    assert START not in built.store.token_ids()
    cfg = dataclasses.replace(ACFG, exclude_start=False)
    collect_activations(built.model, built.shards, cfg, tmp_path, progress=False)
    kept = ActivationStore.open(tmp_path)
    ids = kept.token_ids()
    assert (ids == START).sum() > 10
    # nothing dropped: rows are every position of the windows, in order
    assert np.array_equal(kept.rows[:, 1], np.arange(1000) % CFG.n_ctx)


def test_context_ends_at_the_row_and_stays_in_its_window(built):
    store, split = built.store, built.shards.tokens("train")
    for row in (0, 1, 17, 500, 999):
        offset, pos = store.locate(row)
        ctx = store.context(row, before=5)
        assert ctx[-1] == split[offset + pos] == store.token_ids(np.array([row]))[0]
        assert np.array_equal(ctx, split[offset + max(0, pos - 5) : offset + pos + 1])
    row = int(np.flatnonzero(store.rows[:, 1] == 2)[0])
    assert len(store.context(row, before=20)) == 3  # never reaches before the window


def test_scale_normalises_mean_squared_norm_to_width(built):
    for hook in built.store.hooks:
        x = built.store.read(hook).astype(np.float64) * built.store.scale(hook)
        assert np.mean((x**2).sum(axis=1)) == pytest.approx(built.store.width(hook), rel=1e-3)
    assert built.store.scale(POST0) != pytest.approx(built.store.scale(Z0))


def test_refuses_when_the_disk_is_too_small(built, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    need = estimate_bytes(1000, 3 * 32, "float16")
    free = lambda factor: lambda path: usage._replace(free=int(need * factor))
    # the store (with its ~5% of index) fits in 1.08 x need, but not with 10% headroom
    monkeypatch.setattr(act.shutil, "disk_usage", free(1.08))
    with pytest.raises(DiskSpaceError, match=r"activations.storage=stream") as info:
        collect_activations(built.model, built.shards, ACFG, tmp_path / "s", progress=False)
    assert "activations.n_tokens" in str(info.value) and "KiB" in str(info.value)
    assert list((tmp_path / "s").iterdir()) == []  # refused before writing anything
    monkeypatch.setattr(act.shutil, "disk_usage", free(1.3))
    assert collect_activations(built.model, built.shards, ACFG, tmp_path / "s", progress=False)["complete"]


def test_resume_after_kill_writes_identical_files(built, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    collect_activations(built.model, built.shards, ACFG, whole, progress=False)

    summary = collect_activations(built.model, built.shards, ACFG, parts, progress=False,
                                  stop_after=2)
    assert not summary["complete"] and 0 < summary["n_tokens"] < 1000
    with pytest.raises(FileNotFoundError, match="unfinished"):
        ActivationStore.open(parts)
    claimed = (parts / "progress.json").read_text()
    # a kill: work went on past the last progress file, and left junk behind it
    collect_activations(built.model, built.shards, ACFG, parts, progress=False,
                        stop_after=5)  # three batches more
    (parts / "progress.json").write_text(claimed)
    rows = json.loads(claimed)["rows"]
    junk = np.memmap(parts / f"{POST0}.bin", dtype=np.float16, mode="r+", shape=(1000, 32))
    junk[rows:] = 7.0
    junk.flush()
    del junk

    forwards = []
    run_hooks = act.run_hooks
    monkeypatch.setattr(act, "run_hooks", lambda *a: forwards.append(1) or run_hooks(*a))
    assert collect_activations(built.model, built.shards, ACFG, parts, progress=False)["complete"]
    n_batches = -(-json.loads((whole / "store.json").read_text())["n_windows"] // ACFG.batch_size)
    assert len(forwards) == 1 + n_batches - json.loads(claimed)["batch"]  # a probe + the rest
    assert not (parts / "progress.json").exists()
    for path in whole.iterdir():
        if path.name != "store.json":
            assert path.read_bytes() == (parts / path.name).read_bytes(), path.name
    meta = [json.loads((d / "store.json").read_text()) for d in (whole, parts)]
    assert meta[0]["scales"] == meta[1]["scales"]

    # a finished store with the same inputs is kept as it is
    before = (parts / "store.json").stat().st_mtime_ns
    collect_activations(built.model, built.shards, ACFG, parts, progress=False)
    assert (parts / "store.json").stat().st_mtime_ns == before


def test_bad_requests_say_what_to_do(built, tmp_path):
    with pytest.raises(ValueError, match="query, key"):
        collect_activations(built.model, built.shards,
                            dataclasses.replace(ACFG, hooks=("blocks.0.attn.hook_pattern",)),
                            tmp_path, progress=False)
    with pytest.raises(ValueError, match="activations.n_tokens"):
        collect_activations(built.model, built.shards,
                            dataclasses.replace(ACFG, n_tokens=10**6), tmp_path, progress=False)
    with pytest.raises(KeyError, match="has no hook"):
        built.store.array("blocks.1.hook_mlp_out")


def test_the_model_runs_where_it_is_and_is_never_moved(built, tmp_path):
    with pytest.raises(ValueError, match=r"model\.to\('meta'\)"):
        collect_activations(built.model, built.shards, ACFG, tmp_path, device="meta",
                            progress=False)
    with pytest.raises(ValueError, match="device=None"):
        StreamingSource(built.model, built.shards, ACFG, POST0, device="meta")
    assert {p.device.type for p in built.model.parameters()} == {"cpu"}
    assert StreamingSource(built.model, built.shards, ACFG, POST0, device="cpu").device.type == "cpu"


def test_bfloat16_bits_round_trip():
    x = torch.randn(50, 7) * 100
    raw = encode(x, "bfloat16")
    assert raw.dtype == np.uint16
    assert np.array_equal(decode(raw, "bfloat16"), x.to(torch.bfloat16).float().numpy())


def test_sizes_and_disk_table(built):
    assert estimate_bytes(1000, [32, 64], "bfloat16") == 1000 * 96 * 2
    assert estimate_bytes(1000, 32, "float32") == 1000 * 32 * 4
    for hook in built.store.hooks:
        assert hook_width(hook, CFG) == built.store.width(hook)
    assert hook_width("blocks.1.mlp.hook_post", CFG) == CFG.d_mlp
    table = disk_cost_table(CFG, ACFG, sizes=(10**6, 10**7))
    assert [r["bytes"] for r in table] == [10**6 * 96 * 2, 10**7 * 96 * 2]
    assert all(r["float32_bytes"] == 2 * r["bytes"] for r in table)
    assert table[0]["size"] == "183.1 MiB"


# --- reading batches from a store -------------------------------------------------------

def test_each_pass_yields_every_row_once(built):
    store = built.store
    source = store.source(POST0, buffer_tokens=128)
    assert (source.d_in, source.d_out) == (32, 32)
    batches = list(itertools.islice(source.batches(64, seed=1), 32))  # 2048 rows: 2+ passes
    rows = torch.cat([x for x, _ in batches]).numpy()
    everything = multiset(store.read(POST0))
    for first in (0, 1000):
        got = multiset(rows[first : first + 1000])
        assert np.array_equal(got[0], everything[0]) and np.array_equal(got[1], everything[1])
    assert not np.array_equal(rows[:1000], rows[1000:2000])  # a new order each pass
    assert all(x.dtype == torch.float32 and x.shape == (64, 32) and y is x for x, y in batches)


def test_batches_are_mixed_within_a_bounded_buffer(built):
    store = built.store
    source = store.source(POST0, buffer_tokens=128)
    x, _ = next(source.batches(64, seed=0))
    assert 0 < source.peak_buffer_rows <= 128
    # the buffer holds chunks from all over the store, not one contiguous stretch
    where = {row.tobytes(): i for i, row in enumerate(store.read(POST0))}
    found = np.array([where[row.tobytes()] for row in x.numpy()])
    assert found.max() - found.min() > 500 and not np.all(np.diff(found) > 0)
    list(itertools.islice(source.batches(100, seed=0), 30))
    assert source.peak_buffer_rows <= 128


def test_batches_are_deterministic_and_skip_exactly(built):
    source = built.store.source(POST0, buffer_tokens=128)
    take = lambda seed, start, n: [x for x, _ in itertools.islice(source.batches(48, seed, start), n)]
    first = take(5, 0, 30)
    assert all(a.equal(b) for a, b in zip(first, take(5, 0, 30)))
    assert not first[0].equal(take(6, 0, 1)[0])
    for start in (1, 7, 20, 21):  # 1000 / 48: batch 20 straddles the first two passes
        assert all(a.equal(b) for a, b in zip(take(5, start, 30 - start), first[start:]))


def test_transcoder_pairs_come_from_the_same_token(built):
    source = built.store.source(POST0, PRE1, buffer_tokens=128)
    assert (source.d_in, source.d_out) == (32, 32)
    for x_in, x_out in itertools.islice(source.batches(40, seed=2, start_batch=3), 30):
        assert x_in is not x_out and torch.equal(x_in, x_out)  # resid_post 0 == resid_pre 1
    other = built.store.source(POST0, Z0, buffer_tokens=128)
    x_in, x_out = next(other.batches(40, seed=2))
    assert not torch.equal(x_in, x_out)
    assert source.scale(PRE1) == built.store.scale(PRE1)


def test_sample_gives_store_rows_reproducibly(built):
    source = built.store.source(Z0, seed=4)
    sample = source.sample(100)
    assert sample.shape == (100, 32) and sample.dtype == torch.float32
    assert sample.equal(built.store.source(Z0, seed=4).sample(100))
    assert not sample.equal(built.store.source(Z0, seed=5).sample(100))
    stored = {row.tobytes() for row in built.store.read(Z0)}
    assert all(row.tobytes() in stored for row in sample.numpy())
    with pytest.raises(ValueError, match="holds 1,000"):
        source.sample(1001)


# --- streaming ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    shards = write_shards(tmp_path_factory.mktemp("stream") / "shards", n_tokens=1600)
    return make_model(), shards


def test_streaming_pass_covers_every_kept_token_once(streamed):
    model, shards = streamed
    # hook_embed rows are W_E[token] exactly, so a pass can be checked row for row
    source = StreamingSource(model, shards, ACFG, "hook_embed", buffer_tokens=64)
    split = shards.tokens("train")
    kept = split[: len(split) // CFG.n_ctx * CFG.n_ctx]
    kept = kept[kept != START]
    assert source.rows_per_pass == len(kept)
    n_batches = -(-len(kept) // 50)
    batches = list(itertools.islice(source.batches(50, seed=0), n_batches))
    rows = torch.cat([x for x, _ in batches])[: len(kept)].numpy()
    expected = model.W_E.detach()[torch.from_numpy(kept.astype(np.int64))].numpy()
    got, want = multiset(rows), multiset(expected)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert 0 < source.peak_buffer_rows <= 64
    assert all(x.dtype == torch.float32 and x.shape == (50, 32) and y is x for x, y in batches)


def test_streaming_is_deterministic_skips_exactly_and_pairs_match(streamed):
    model, shards = streamed
    source = StreamingSource(model, shards, ACFG, POST0, PRE1, buffer_tokens=64)
    assert (source.d_in, source.d_out) == (32, 32)
    take = lambda seed, start, n: list(itertools.islice(source.batches(40, seed, start), n))
    first = take(1, 0, 8)
    again = take(1, 3, 5)
    for (a_in, a_out), (b_in, b_out) in zip(first[3:], again):
        assert a_in.equal(b_in) and a_out.equal(b_out)
    assert not first[0][0].equal(take(2, 0, 1)[0][0])
    assert all(x_in is not x_out and x_in.equal(x_out) for x_in, x_out in first)
    sample = source.sample(64)
    assert sample.shape == (64, 32) and sample.equal(source.sample(64))
    scale = source.scale(POST0)
    x = torch.cat([x for x, _ in first]).double() * scale
    assert (x**2).sum(dim=1).mean().item() == pytest.approx(32, rel=0.2)


# --- statistics ----------------------------------------------------------------------

def test_stats_match_numpy():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2000, 20)).astype(np.float32)
    stats = activation_stats(x, n_components=5, bins=30)
    flat = x.astype(np.float64).ravel()
    q = np.percentile(x.ravel(), [25, 50, 75])
    assert (stats["q25"], stats["median"], stats["q75"]) == pytest.approx(tuple(q))
    assert stats["mean"] == pytest.approx(flat.mean()) and stats["std"] == pytest.approx(flat.std())
    assert (stats["min"], stats["max"]) == (x.min(), x.max())
    np.testing.assert_allclose(stats["channel_mean"], x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["channel_std"], x.std(axis=0), rtol=1e-4)
    assert stats["values_hist"]["counts"].sum() == x.size and len(stats["values_hist"]["edges"]) == 31
    assert stats["norm_hist"]["counts"].sum() == 2000
    assert stats["norm_mean"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-5)
    assert activation_stats(torch.from_numpy(x))["median"] == stats["median"]
    with pytest.raises(TypeError, match="decode"):
        activation_stats(x.view(np.uint16))


def test_pca_finds_a_low_rank_structure():
    rng = np.random.default_rng(1)
    directions = np.linalg.qr(rng.normal(size=(40, 3)))[0].T  # 3 orthonormal rows
    x = rng.normal(size=(3000, 3)) * [10, 6, 4] @ directions + rng.normal(size=(3000, 40)) * 0.3
    pca = activation_stats(x, n_components=8)["pca"]
    assert pca["cumulative"][2] > 0.9 and pca["components"].shape == (8, 40)
    assert np.all(np.diff(pca["explained_variance_ratio"]) <= 1e-12)
    np.testing.assert_allclose(pca["cumulative"], np.cumsum(pca["explained_variance_ratio"]))
    # the top three components span the planted directions
    overlap = np.linalg.svd(pca["components"][:3] @ directions.T, compute_uv=False)
    assert overlap.min() > 0.99


def test_store_stats_reads_decoded_rows(built):
    stats = built.store.stats(POST0, max_rows=300, n_components=4)
    assert stats["n_rows"] == 300 and stats["width"] == 32
    full = built.store.stats(POST0)
    assert full["n_rows"] == 1000
    assert full["mean"] == pytest.approx(float(built.store.read(POST0).astype(np.float64).mean()))


def test_a_resumed_collection_says_where_it_resumed_from(built, tmp_path, capsys):
    collect_activations(built.model, built.shards, ACFG, tmp_path, progress=False, stop_after=2)
    assert "resuming" not in capsys.readouterr().out
    collect_activations(built.model, built.shards, ACFG, tmp_path, progress=False)
    said = capsys.readouterr().out
    assert "[activations] resuming from batch 2 of" in said and "progress.json" in said
