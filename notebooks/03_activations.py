# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Activations: what the sparse autoencoder reads
#
# A sparse autoencoder (SAE) is trained on vectors, not on text. It reads the model's
# activation at one point of the network: one vector per token, millions of them, read
# many times over. Running the language model for every SAE step would cost far more
# than the SAE step itself. So this stage runs the trained model once over the training
# tokens, keeps the activations at a few named hook points, and stores them.
#
# ```
# stories -> tokenizer -> token shards -> LM -> [activations] -> SAE -> ...
# ```

# %% [markdown]
# This notebook:
#
# 1. lists the hook points the model offers;
# 2. collects the store, and traces rows back to the text they came from;
# 3. looks at the statistics of what was stored, and why start-of-story positions are
#    left out;
# 4. prices the store on disk for each preset;
# 5. explains the one constant every SAE of the course is trained with: the
#    normalisation scale.

# %%
import os
PRESET = os.environ.get("TINYCOURSE_PRESET", "tiny")

# %%
import dataclasses
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display
from tqdm.auto import tqdm

from tinycourse.artifacts import format_bytes
from tinycourse.sae.activations import (ActivationStore, StreamingSource, collect_activations,
                                        disk_cost_table, estimate_bytes, hook_width,
                                        norm_scale, plan_windows, run_hooks)
from tinycourse.config import PRESETS, preset
from tinycourse.exercises import check
from tinycourse.pipeline import Run

cfg = preset(PRESET)
run = Run(cfg)
print(run.root)
print(cfg.activations)

# %% [markdown]
# ## 1. Where activations can be read: the hook points
#
# Every intermediate tensor of the model passes through a `HookPoint` named after its
# module path, as in [TransformerLens](https://github.com/TransformerLensOrg/TransformerLens)
# (Nanda & Bloom 2022). `run_with_cache` runs the model on a batch and
# returns the activations at the hooks asked for (here: all of them). One window of
# training tokens, batch 1:

# %%
model = run.model()
tokenizer = run.tokenizer()
shards = run.shards()
n_ctx = model.cfg.n_ctx
window = torch.from_numpy(np.asarray(shards.tokens("train")[:n_ctx]).astype(np.int64))[None]
logits, cache = model.run_with_cache(window)
print(f"{'hook':36s} shape (batch, pos, ...)")
for name, act in cache.items():
    mark = "  <- collected" if name in cfg.activations.hooks else ""
    print(f"{name:36s} {tuple(act.shape)!s:22s}{mark}")
print(f"\n{len(cache)} hook points; logits {tuple(logits.shape)}")

# %% [markdown]
# How to read the names (block `i`, pre-norm GPT):
#
# - `blocks.i.hook_resid_pre` is the **residual stream** entering block `i`: the sum of
#   the embeddings and of every earlier attention and MLP output. It is the model's main
#   "bus", and the usual place to train an SAE. `hook_resid_mid` is after the attention
#   layer, `hook_resid_post` after the MLP.

# %% [markdown]
# - `blocks.i.ln1/ln2.hook_normalized` are the normalised inputs of attention and MLP.
# - `blocks.i.mlp.hook_pre/hook_post` are the MLP's neurons before and after the GELU
#   (`d_mlp` wide).
# - `blocks.i.hook_attn_out` and `hook_mlp_out` are what each layer adds to the stream.
# - `attn.hook_q/k/v/z` have a head axis: stored, they are flattened to
#   `n_heads * d_head` values per token.
# - `attn.hook_attn_scores` and `hook_pattern` have one value per (query, key) pair, not
#   per token, so they cannot be stored row per token.

# %% [markdown]
# The `tiny` preset collects three hooks: the residual stream in the middle of the model
# (for the SAE), and MLP 0's input and output (for a transcoder, notebook 04). The store
# knows each hook's width from the config alone, which the shapes above confirm:

# %%
for name, act in cache.items():
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        continue
    assert act.shape[:2] == window.shape, name
    assert hook_width(name, model.cfg) == int(np.prod(act.shape[2:])), name
for hook in cfg.activations.hooks:
    assert hook in cache, f"{hook} is not a hook point of the model"
print("hook widths match:", {h: hook_width(h, model.cfg) for h in cfg.activations.hooks})
if PRESET == "tiny":
    assert cfg.activations.hooks == ("blocks.1.hook_resid_pre", "blocks.0.ln2.hook_normalized",
                                     "blocks.0.hook_mlp_out")

# %% [markdown]
# ## 2. Collecting the store
#
# The idea, in three rules:
#
# 1. **Random contexts.** The training split is cut into consecutive windows of `n_ctx`
#    tokens. The collector reads them in a seeded random order until it has `n_tokens`
#    rows. So the store is a random sample of contexts, not the first stories.
# 2. **Every position of a window is one row**, except positions holding the start token
#    (section 3 says why).
# 3. **Two bytes a value.** Rows are stored as float16 (or bfloat16), row-aligned across
#    hooks: row `r` of every file is the same token.

# %% [markdown]
# The heart of it is `run_hooks`: it runs the model on a batch of windows, and keeps the
# rows that are not start tokens. `plan_windows` picks the windows:

# %%
print(inspect.getsource(run_hooks))
print(inspect.getsource(plan_windows))

# %% [markdown]
# `run.ensure("activations")` builds the stage (or reuses it), with a progress bar. The
# store is plain files:
#
# - one raw `.bin` array per hook;
# - the index: `rows.npy` (which window and position each row came from) and
#   `windows.npy` (the windows' tokens);
# - `store.json`, written last, so a store with a `store.json` is complete.
#
# A preset that streams (`replication`) stores nothing. There this notebook collects a
# 200K-token sample store to look at.

# %%
store_cfg = cfg.activations
folder = run.ensure("activations")
if store_cfg.storage == "stream":
    store_cfg = dataclasses.replace(store_cfg, storage="disk", n_tokens=200_000)
    folder = run.root / "notebook03" / "sample"
    collect_activations(run.model("cuda" if torch.cuda.is_available() else "cpu"), shards,
                        store_cfg, folder, progress=True)
store = ActivationStore.open(folder)
for path in sorted(folder.iterdir()):
    print(f"{path.name:36s} {format_bytes(path.stat().st_size):>10s}")
print()
print({k: v for k, v in store.meta.items() if k not in ("mean_sq_norm", "scales", "widths")})

# %%
width = {h: store.width(h) for h in store.hooks}
for hook in store.hooks:
    assert (folder / f"{hook}.bin").stat().st_size == store.n_tokens * width[hook] * 2
assert store.n_tokens == store_cfg.n_tokens and store.dtype == store_cfg.dtype
assert store.rows.shape == (store.n_tokens, 2)
print(f"{store.n_tokens:,} rows x {len(store.hooks)} hooks "
      f"from {store.meta['n_windows']:,} windows")

# %% [markdown]
# **Tracing a row back to its text.** Interpreting a feature later means showing the
# contexts where it fires, so every row must lead back to its tokens. `store.context(row)`
# gives the tokens the model had seen up to that row (the last one is the row's own
# token); `store.locate(row)` gives its offset in the split, to check against the shards.

# %%
rng = np.random.default_rng(0)
sample_rows = np.sort(rng.choice(store.n_tokens, 5, replace=False))
for row in sample_rows:
    ctx = store.context(int(row), before=24)
    before, token = tokenizer.decode(ctx[:-1].tolist()), tokenizer.decode(ctx[-1:].tolist())
    display(HTML(f'<div style="font-family:monospace">row {row:7d}: …{before}'
                 f'<b style="background:#ffe2b8">{token}</b></div>'))

split_tokens = shards.tokens(store.meta["split"])
for row in sample_rows:
    offset, pos = store.locate(int(row))
    assert split_tokens[offset + pos] == store.token_ids(np.array([row]))[0]
assert not np.any(store.token_ids(slice(0, 20_000)) == shards.start_id)  # starts excluded

# %% [markdown]
# The store must hold what the model computes. Rerun the model on the first stored window
# and compare with its rows (float16 keeps about 3 significant digits):

# %%
first = store.rows[:, 0] == 0
tokens0 = torch.from_numpy(store.windows[0].astype(np.int64))[None]
_, fresh = model.run_with_cache(tokens0, names=store.hooks)
for hook in store.hooks:
    want = fresh[hook][0, store.rows[first, 1]].reshape(first.sum(), -1).numpy()
    got = store.read(hook, np.flatnonzero(first))
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{hook:32s} max relative error {err:.1e}")
    assert err < 2e-3, hook

# %% [markdown]
# ## 3. What the activations look like
#
# Before training anything on them, look at them. For each hook, `store.stats` runs
# `activation_stats` on a random sample of 50,000 rows: the distribution of all values, of
# the rows' norms, and the principal components of the rows.

# %%
stats = {hook: store.stats(hook, max_rows=50_000, n_components=max(width.values()))
         for hook in tqdm(store.hooks, desc="stats", unit="hook")}
cols = ("mean", "std", "min", "q25", "median", "q75", "max", "norm_mean")
print(f"{'hook':30s}" + "".join(f"{c:>10s}" for c in cols))
for hook, s in stats.items():
    print(f"{hook:30s}" + "".join(f"{s[c]:10.3f}" for c in cols))
for s in stats.values():
    assert np.isfinite([s[c] for c in cols]).all()
    assert s["min"] <= s["q25"] <= s["median"] <= s["q75"] <= s["max"]

# %%
fig, axes = plt.subplots(2, len(stats), figsize=(4.2 * len(stats), 6))
for col, (hook, s) in enumerate(stats.items()):
    for ax, key, label in ((axes[0, col], "values_hist", "value"),
                           (axes[1, col], "norm_hist", "row norm ||x||")):
        h = s[key]
        ax.stairs(h["counts"], h["edges"], fill=True, alpha=0.7)
        ax.set(yscale="log", xlabel=label, ylabel="count")
    axes[0, col].set_title(hook, fontsize=9)
    axes[1, col].axvline(s["norm_mean"], color="k", ls=":", lw=1)
fig.suptitle(f"Values (top) and row norms (bottom), {PRESET}; dotted: mean norm")
fig.tight_layout()
plt.show()

# %% [markdown]
# `ln2.hook_normalized` is a LayerNorm output: each row has mean 0 and variance 1 before
# the learned gain and bias. So its norms sit in a narrow band. The residual stream and
# MLP output are not normalised: their values are roughly bell-shaped around 0, and their
# norms spread over a factor of about three, with a long tail of large ones. The cell
# measures the spread (99th over 1st percentile of the norms) on 20,000 rows:

# %%
spread = {}
for hook in store.hooks:
    row_norms = np.linalg.norm(store.read(hook, slice(0, 20_000)), axis=1)
    spread[hook] = float(np.percentile(row_norms, 99) / np.percentile(row_norms, 1))
    print(f"{hook:32s} norms spread over a factor of {spread[hook]:.1f}")
for hook, s in stats.items():
    assert abs(s["median"]) < 0.5 * s["std"], hook  # centred near 0
normalized = [h for h in store.hooks if h.endswith("hook_normalized")]
for ln in normalized:
    assert all(spread[ln] < spread[h] for h in store.hooks if h not in normalized), spread
for hook in store.hooks:
    if hook not in normalized and PRESET == "tiny":
        assert 2 < spread[hook] < 5, (hook, spread[hook])

# %% [markdown]
# **How many directions do the activations use?** Principal component analysis (PCA)
# answers it. Centre the rows on their mean. The singular value decomposition of the
# centred rows then gives orthogonal directions, ordered by the variance along them (the
# squared singular values).

# %% [markdown]
# ### Exercise 03.explained_variance (difficulty 2, about 10 minutes)
#
# Write the share of
# the *total* variance held by each of the top `n_components` principal directions,
# largest first. There are at most min(n_rows, width) directions: return that many when
# more are asked for; rows that do not vary have no variance to share (return zeros).

# %%
def my_explained_variance(x: np.ndarray, n_components: int) -> np.ndarray:
    """x (n_rows, width) -> (k,) float64, k = min(n_components, n_rows, width): the
    share of the total variance along each top principal direction, largest first."""
    raise NotImplementedError  # hint: np.linalg.svd(..., compute_uv=False)


my_explained_variance = check("03.explained_variance", my_explained_variance)

# %% [markdown]
# Yours against `store.stats` on the first 8,192 rows of each hook (the statistics used a
# random 8,192 of their 50,000, so the two agree closely but not exactly), then the
# cumulative variance held by the top principal components:

# %%
for hook in tqdm(store.hooks, desc="yours vs store.stats", unit="hook"):
    shares = my_explained_variance(store.read(hook, slice(0, 8192)), 16)
    print(f"{hook:32s} top 16 hold {shares.sum():.1%} on the first 8,192 rows "
          f"(store.stats: {stats[hook]['pca']['cumulative'][15]:.1%})")
    assert abs(shares.sum() - stats[hook]["pca"]["cumulative"][15]) < 0.05

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for hook, s in stats.items():
    cum = s["pca"]["cumulative"]
    ax.plot(np.arange(1, len(cum) + 1), cum, label=hook)
ax.axvline(16, color="grey", ls=":", lw=1)
ax.set(xlabel="principal components", ylabel="share of variance", ylim=(0, 1.02),
       title=f"Cumulative variance of the top components ({PRESET})")
ax.legend(fontsize=8)
plt.show()
for hook, s in stats.items():
    cum = s["pca"]["cumulative"]
    need = {q: int(np.searchsorted(cum, q)) + 1 for q in (0.5, 0.9, 0.99)}
    print(f"{hook:32s} top 16 hold {cum[15]:.1%}; components for 50/90/99%: "
          f"{need[0.5]}/{need[0.9]}/{need[0.99]} of {s['width']}")
    assert np.all(np.diff(cum) >= -1e-9) and cum[-1] <= 1 + 1e-6

# %% [markdown]
# The variance is spread over many directions: no handful of components holds most of
# it (the cell below checks that the top two hold under half). This is the bar an SAE
# must clear in notebook 04. With k = 16 active latents per token, it should explain more
# variance than the best 16-dimensional linear projection (the dotted line). Otherwise the
# sparse dictionary has found nothing a PCA would not.

# %%
for hook, s in stats.items():
    assert s["pca"]["cumulative"][1] < 0.5, hook
if PRESET == "tiny":
    assert cfg.sae.k == 16

# %% [markdown]
# **Why start positions are excluded.** Every story begins with the start token. The
# model learns to treat that position as a reset: it writes nearly the same vector there
# in every story, and a large one. Transformers commonly use the first token as a resting
# place for attention: an "attention sink" ([*Efficient Streaming Language Models with
# Attention Sinks*](https://arxiv.org/abs/2309.17453), Xiao et al. 2023). Large models put
# "massive activations" on it ([*Massive Activations in Large Language
# Models*](https://arxiv.org/abs/2402.17762), Sun et al. 2024).
#
# Measure it on 64 training windows; the cell asserts both halves of the claim (larger,
# and nearly one direction):

# %%
hook = cfg.sae.hook_in
windows = np.asarray(split_tokens[: 64 * n_ctx]).reshape(64, n_ctx)
windows = torch.from_numpy(windows.astype(np.int64))
_, c = model.run_with_cache(windows, names=[hook])
norms = c[hook].norm(dim=-1)  # (batch, pos)
is_start = windows == shards.start_id
position = torch.arange(n_ctx).expand_as(windows)
groups = {"start token": norms[is_start],
          "window position 0 (not start)": norms[(position == 0) & ~is_start],
          "all other positions": norms[(position > 0) & ~is_start]}
for label, v in groups.items():
    print(f"{label:30s} n={len(v):5d}  median norm {v.median():6.2f}  max {v.max():6.2f}")
typical = groups["all other positions"]
ratio = float(groups["start token"].median() / typical.median())
starts = torch.nn.functional.normalize(c[hook][is_start], dim=-1)
others = torch.nn.functional.normalize(c[hook][(position > 0) & ~is_start][:2000], dim=-1)
cos_start, cos_other = float((starts @ starts.T).mean()), float((others @ others.T).mean())
print(f"start-token norm / typical norm: {ratio:.2f}x; the 99th percentile of other "
      f"tokens is {typical.quantile(0.99) / typical.median():.2f}x")
print(f"mean cosine between start tokens {cos_start:.2f}, between other tokens {cos_other:.2f}")
assert len(groups["start token"]) > 0
assert ratio > 1 and cos_start > cos_other

fig, ax = plt.subplots(figsize=(6.5, 3.2))
bins = np.linspace(0, float(norms.max()) * 1.02, 40)
for label, v in groups.items():
    ax.hist(v.numpy(), bins=bins, alpha=0.6, label=label, density=True)
ax.set(xlabel=f"||x|| at {hook}", ylabel="density", yscale="log")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Start-token rows are large and, above all, nearly one fixed direction: the same vector
# once per story. (In large models their norms are also orders of magnitude above the
# rest, Sun et al. 2024.) Kept in the store, they would
#
# - take a share of the SAE's squared-error loss far beyond their information,
# - pull the normalisation constant of section 5,
# - and buy a latent that only says "start of story".
#
# So `exclude_start=True` drops them at collection.

# %% [markdown]
# A window's first position is raised too: it is the one position with no context to
# attend to. But it is an ordinary token of a story, seen that way in training as well,
# and is kept. The cell checks that it is raised:

# %%
pos0_ratio = float(groups["window position 0 (not start)"].median() / typical.median())
print(f"window position 0 (not start): median norm {pos0_ratio:.2f}x typical")
assert pos0_ratio > 1

# %% [markdown]
# ## 4. What the store costs on disk
#
# Size = tokens × (sum of hook widths) × bytes per value. `disk_cost_table` prices a
# config at several token counts, at its own dtype and at float32:

# %%
for name in PRESETS:
    pc = preset(name)
    streamed = pc.activations.storage == "stream"
    print(f"{name}: {', '.join(pc.activations.hooks)}; storage={pc.activations.storage}")
    sizes = sorted({pc.activations.n_tokens, 10**6, 10**7, 10**8, 10**9})
    for row in disk_cost_table(pc.resolved_model, pc.activations, sizes=sizes):
        here = ""
        if row["n_tokens"] == pc.activations.n_tokens:
            here = "  <- preset (streamed: 0 bytes)" if streamed else "  <- preset"
        print(f"  {row['n_tokens']:>13,} tokens x {row['values_per_token']:4d} values: "
              f"{row['size']:>10s} {row['dtype']}, {row['float32_size']:>10s} float32{here}")

this_row = disk_cost_table(model.cfg, store_cfg, sizes=[store.n_tokens])[0]
assert this_row["bytes"] == store.meta["bytes"]

# %% [markdown]
# The budget replication of *Scaling Monosemanticity* (Noa Nabeshima's
# [TinyModel](https://github.com/noanabeshima/tinymodel), 2024) stored 50 GB of float32
# residuals. At 768 values a token (the `replication` width) that is 3,072 bytes a
# token, about 16M tokens. Float16 halves it. An SAE gains nothing from the extra
# precision: the reconstruction errors it reaches are far larger than float16 rounding.
# Even so, 200M training tokens would take 300 GB (the cell below checks the sums).

# %% [markdown]
# So the `replication` preset **streams**. `StreamingSource` runs the LM on the fly and
# feeds the SAE the same kind of shuffled batches, with no disk at all. It pays instead
# one forward pass of the LM per activation. It has the same interface as the store's
# source; on this run:

# %%
stream = StreamingSource(model, shards, cfg.activations, hook, buffer_tokens=2**13,
                         scale_tokens=2**13)
x_in, _ = next(stream.batches(256, seed=0))
print(f"streamed batch {tuple(x_in.shape)}; scale {stream.scale(hook):.4f} "
      f"(store: {store.scale(hook):.4f})")
assert x_in.shape == (256, store.width(hook)) and torch.isfinite(x_in).all()
assert abs(stream.scale(hook) / store.scale(hook) - 1) < 0.1
rep = preset("replication")
rep_width = hook_width(rep.sae.hook_in, rep.resolved_model)
assert rep_width == 768 and rep.sae.n_tokens == 200_000_000
assert 15e6 < 50e9 / (4 * rep_width) < 17e6  # 50 GB of float32 is about 16M tokens
assert 290e9 < estimate_bytes(rep.sae.n_tokens, rep_width, "float16") < 320e9

# %% [markdown]
# ## 5. The normalisation constant
#
# Hooks live on very different scales: the mean norms in the table of section 3 differ
# between hooks (the cell below prints the ratio), and between models by far more. An
# SAE's loss is squared error plus a sparsity penalty. So its best learning rate and L1
# coefficient depend on that scale.

# %%
norm_means = {hook: s["norm_mean"] for hook, s in stats.items()}
print({h: round(v, 2) for h, v in norm_means.items()},
      f"largest / smallest: {max(norm_means.values()) / min(norm_means.values()):.1f}x")
if PRESET == "tiny":
    assert max(norm_means.values()) / min(norm_means.values()) > 1.5

# %% [markdown]
# Anthropic's April 2024 recipe removes the dependence
# ([*Circuits Updates – April 2024*](https://transformer-circuits.pub/2024/april-update/index.html),
# "Update on how we train SAEs", Olah et al. 2024, Anthropic). Multiply each hook's
# activations by one constant `c`, so that their norm is about √d_in. Then one set of
# hyperparameters transfers across layers, hooks and models.
#
# The package fixes the mean *squared* norm, E‖c·x‖² = d_in; the two differ only by the
# spread of the norms. The store computes `c` while collecting, from the sum of squared
# norms of every row, and keeps it in `store.json`.

# %% [markdown]
# ### Exercise 03.norm_scale (difficulty 1, about 5 minutes)
#
# Write `c` from a batch of
# rows: the number with mean ‖c·x‖² = d_in over them. Rows that are all zero have no scale
# to fix: return 1.0. The cell after uses yours on 20,000 rows of each hook.

# %%
def my_norm_scale(x: torch.Tensor) -> float:
    """x (n_rows, d_in) activations -> the float c with mean_rows ||c x||^2 = d_in
    (1.0 if every row is zero)."""
    raise NotImplementedError


my_norm_scale = check("03.norm_scale", my_norm_scale)

# %%
print(inspect.getsource(norm_scale))
for hook in store.hooks:
    x = store.read(hook, slice(0, 20_000)).astype(np.float64)
    c = store.scale(hook)
    scaled = (c**2 * (x**2).sum(1)).mean()
    mine = my_norm_scale(torch.from_numpy(x))  # your exercise, on 20K rows
    print(f"{hook:32s} E||x||^2 = {store.meta['mean_sq_norm'][hook]:8.2f}   c = {c:.4f} "
          f"(yours on 20K rows {mine:.4f})   E||c x||^2 on 20K rows = {scaled:7.1f} "
          f"(d_in = {store.width(hook)})")
    assert abs(scaled / store.width(hook) - 1) < 0.05
    assert abs(mine / c - 1) < 0.05

# %% [markdown]
# The constant is one number per hook, not a per-token normalisation. Directions and
# relative sizes are untouched, so a latent of the SAE means the same thing before and
# after. The trainer multiplies inputs by `c`, and the saved SAE folds `c` back into its
# weights, so it reads raw activations (notebook 04).

# %% [markdown]
# ## 6. What good looks like
#
# | check | expected | why |
# |---|---|---|
# | store vs fresh forward pass | relative error ≲ 1e-3 | float16 rounding only |
# | start positions in the store | none | one large vector repeated per story ([Xiao et al. 2023](https://arxiv.org/abs/2309.17453); [Sun et al. 2024](https://arxiv.org/abs/2402.17762)) |
# | E‖c·x‖² after scaling | d_in | [Anthropic, April 2024](https://transformer-circuits.pub/2024/april-update/index.html) |
# | residual variance | spread over many components | if 1-2 components held most of it, look for an outlier direction |
# | values | finite, within float16 (65,504) | else collect as bfloat16 (the collector refuses to overflow) |
# | disk | tokens × width × 2 bytes | float32 doubles it for no gain |

# %% [markdown]
# [Sun et al. (2024)](https://arxiv.org/abs/2402.17762) find a few activations up to about
# 100,000 times larger than typical ones in large models, at the first token and at
# delimiters. `tiny`, a 2-layer model trained briefly, shows a mild version: the
# start-token ratio of section 3, above 1 but nowhere near that (the cell checks it).
#
# The budget replication's store (50 GB, float32) is the reference for what not to do at
# 768 wide; the course streams instead.

# %%
print(f"this run ({PRESET}): {store.n_tokens:,} rows, {format_bytes(store.meta['bytes'])}, "
      f"scales {({h: round(store.scale(h), 3) for h in store.hooks})}, "
      f"start-token norm {ratio:.1f}x typical")
if PRESET == "tiny":
    assert model.cfg.n_layers == 2 and 1 < ratio < 100

# %% [markdown]
# ## 7. Scaling up: the `replication` preset
#
# Run with `TINYCOURSE_PRESET=replication`. The LM is 768 wide (4 layers), and the SAE reads
# `blocks.2.hook_resid_pre`.
#
# - `activations.storage="stream"`: nothing is written; the activations stage only records
#   that fact. The SAE stage runs the LM itself through `StreamingSource`, one forward
#   pass per activation, every pass over the ~470M training tokens in a new order.
# - The normalisation constant is then estimated from the first 32K streamed rows.
# - To store instead, `--set activations.storage=disk`: 10M tokens × 768 × 2 bytes =
#   15.4 GB (the table above). The collector checks free disk first, and says what to do
#   if the store does not fit.

# %% [markdown]
# - Everything in this notebook runs as it is on the larger presets. On `replication` it
#   inspects a 200K-token sample store (section 2), the statistics use 50,000 rows, and
#   the hook listing and the stream demo are one batch each.
#
# The cell checks these numbers against the preset.

# %%
rep_act = rep.activations
print(rep_act)
assert rep.resolved_model.n_layers == 4 and rep.sae.hook_in == "blocks.2.hook_resid_pre"
assert rep_act.storage == "stream" and rep_act.n_tokens == 10_000_000
assert inspect.signature(StreamingSource).parameters["scale_tokens"].default == 2**15
assert abs(estimate_bytes(rep_act.n_tokens, rep_width, rep_act.dtype) / 1e9 - 15.4) < 0.1
