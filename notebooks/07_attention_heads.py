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
# # 07 · Attention heads: what each one does
#
# An attention head moves information between positions. Its *pattern* says where each
# query position reads from. Its *OV circuit* says what it writes there. Some heads do one
# nameable thing: read the previous token, read the start token (an "attention sink"),
# read the token after an earlier copy of the current one (an *induction* head, Olsson et
# al. 2022,
# [In-context learning and induction heads](https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html)).
# This notebook catalogues every head of our model:
#
# 1. scores from their definitions (two exercises);
# 2. patterns drawn on a story and on the TinyStories-1L-21M study's prompt;
# 3. ablations: what breaks without each head;
# 4. composition between layers (one exercise);
# 5. the generated catalogue, and head formation across training;
# 6. the MLPs beside the heads;
# 7. a picker to look at any head on any prompt.

# %%
import os
PRESET = os.environ.get("TINYCOURSE_PRESET", "tiny")

# %%
import inspect
import json

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display

from tinycourse.config import preset
from tinycourse.exercises import check
from tinycourse.interpret import heads as H
from tinycourse.interpret.catalogue import parse_head
from tinycourse.interpret.formation import story_batch
from tinycourse.pipeline import Run, probe_stories
from tinycourse.report.bundle import attention_heads_html, circuitsvis_script
from tinycourse.sae.activations import activation_stats

cfg = preset(PRESET)
run = Run(cfg)
heads_dir = run.ensure("heads")
result = json.loads((heads_dir / "heads.json").read_text())
model, tokenizer = run.model(), run.tokenizer()
n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
print(run.root, f"- {n_layers} layers x {n_heads} heads")

# %% [markdown]
# ## 1. Scores from their definitions
#
# A pattern score is the attention mass a head puts on a defined set of keys. It is
# averaged over the queries that have such a key, so a perfect head scores 1 on any
# prompt. For query q and key k, with tokens t:
#
# - previous-token: key q − 1;
# - duplicate-token: earlier keys holding the same token, t[k] = t[q];
# - induction: keys right after an earlier copy, t[k − 1] = t[q];
# - structural pivot: the latest comma, full stop or quote mark at or before q;
# - start-token (the attention sink): key 0.
#
# These are TransformerLens's `head_detector` patterns. It divides by every query
# instead, and the package also gives its numbers, tested equal to `detect_head`. Here
# are the key sets on a 5-token prompt:

# %%
t = torch.tensor([[4, 7, 4, 9, 7]])
for name, mask in H.key_masks(t, pivot_ids=[9]).items():
    print(f"{name:16s}", mask[0].int().tolist())

# %% [markdown]
# ### Exercise 07.previous_token_score (difficulty 1, about 5 minutes)
#
# From patterns (batch, n_heads, q, k), each head's mean attention on key q − 1, over the
# queries q ≥ 1 of every prompt. Returns (n_heads,).

# %%
def my_previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """pattern (batch, n_heads, q, k) -> (n_heads,)."""
    raise NotImplementedError


my_previous_token_score = check("07.previous_token_score", my_previous_token_score)

# %% [markdown]
# ### Exercise 07.induction_score (difficulty 2, about 10 minutes)
#
# Each head's mass on keys k with 1 ≤ k ≤ q and t[k − 1] = t[q]. Average it over the
# queries that have at least one such key, pooled over the batch. Returns (n_heads,).
# Tip: compare every pair of positions at once with broadcasting, `t[:, :, None] ==
# t[:, None, :]`, then shift one key to the right.

# %%
def my_induction_score(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """pattern (batch, n_heads, q, k), tokens (batch, pos) -> (n_heads,)."""
    raise NotImplementedError


my_induction_score = check("07.induction_score", my_induction_score)

# %% [markdown]
# Your functions reproduce the stage's numbers. The stage scored the stories for
# previous-token and [start] + R + R (R = random training tokens) for induction: only an
# induction head can predict the second R.

# %%
stories = probe_stories(run)
batch = story_batch(tokenizer, stories, model.cfg.n_ctx)
from tinycourse.interpret.in_context import repeated_sequences, training_token_ids
seen = training_token_ids(run.shards().tokens("train"), exclude=[tokenizer.start_id])
rr = repeated_sequences(seen, 32, min(40, (model.cfg.n_ctx - 1) // 2), seed=0, start_id=tokenizer.start_id)
names = [f"blocks.{i}.attn.hook_pattern" for i in range(n_layers)]
_, story_cache = model.run_with_cache(batch, names=names)
_, rr_cache = model.run_with_cache(rr, names=names)
mine_prev = torch.stack([my_previous_token_score(story_cache[n]) for n in names])
mine_ind = torch.stack([my_induction_score(rr_cache[n], rr) for n in names])
print("previous-token (stories):\n", mine_prev.numpy().round(3))
print("induction ([start] + R + R):\n", mine_ind.numpy().round(3))
assert np.allclose(mine_prev, result["scores"]["stories"]["previous_token"], atol=1e-4)
assert np.allclose(mine_ind, result["scores"]["repeated_tokens"]["induction"], atol=1e-4)

# %% [markdown]
# The package scores every head at once, in one batched pass per set of prompts. It is
# many times faster than TransformerLens's `detect_head`, which loops over prompts and
# heads (`benchmarks/bench_heads.py` times both).

# %%
print(inspect.getsource(H.pattern_scores))

# %% [markdown]
# ## 2. Patterns
#
# The heads of each layer drawn with CircuitsVis, on a storyworld story and on the prompt
# the TinyStories-1L-21M study read its 16 heads on. The study's model is not ours and
# its prompt is not storyworld text, but the structure (quotes, names, commas) is there.
# Hover a head to see its pattern. The bundle is inlined, so the widgets draw offline.

# %%
STUDY_PROMPT = 'One day, Lucy asks Tom: "I am looking for a banana but I can\'t find it". Tom says: "Don\'t'
display(HTML(circuitsvis_script()))
for title, text in [("a storyworld story", stories[0].text), ("the TinyStories-1L-21M study's prompt", STUDY_PROMPT)]:
    ids = torch.tensor([[tokenizer.start_id] + tokenizer.encode(text)])[:, :min(64, model.cfg.n_ctx)]
    _, cache = model.run_with_cache(ids, names=names)
    labels = ["<start>"] + [tokenizer.decode([i]).replace("\n", "\\n") for i in ids[0, 1:].tolist()]
    print(title)
    for layer in range(n_layers):
        display(HTML(attention_heads_html(cache[names[layer]][0].numpy(), labels,
                                          [f"L{layer}H{h}" for h in range(n_heads)],
                                          f"cv-07-{title[:5]}-{layer}")))

# %% [markdown]
# ## 3. Ablations: what breaks without each head
#
# Replace one head's output by its mean over positions (mean ablation) or by zero. Then
# measure the next-token loss again on groups of tokens storyworld labels:
#
# - repeated names;
# - pronouns;
# - closing quote marks;
# - the second copy of R + R.
#
# A head whose ablation costs a lot on one group and little elsewhere is *for* that
# group. Mean ablation is the gentler test: it removes only what depends on the context.

# %%
ablation = result["ablation"]
groups = list(ablation["mean"]["delta"])
print("clean loss:", {g: round(v, 3) for g, v in ablation["mean"]["clean"].items() if v is not None})
grid = np.array([[np.nan if v is None else v for row in ablation["mean"]["delta"][g] for v in row] for g in groups]).T
fig, ax = plt.subplots(figsize=(7, 0.4 * n_layers * n_heads + 1))
im = ax.imshow(grid, cmap="Reds", aspect="auto", vmin=0)
ax.set_yticks(range(n_layers * n_heads), [f"L{i // n_heads}H{i % n_heads}" for i in range(n_layers * n_heads)])
ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
ax.set_title("mean ablation: change in loss (nats)")
fig.colorbar(im)
plt.show()

# %% [markdown]
# On `tiny` one head of layer 1 carries most of the name copying: ablating it costs more
# on repeated names than any other head, and far more than on all tokens. It is the
# induction head, too: the head with the best induction score, and the one whose
# ablation costs most on the second copy of R + R (the second copy is copied only
# through it). Names and random sequences are copied by one circuit. The next cell
# checks it.

# %%
names_cost = np.array(ablation["mean"]["delta"]["name_repeat"], dtype=float)
copier = np.unravel_index(names_cost.argmax(), names_cost.shape)
print(f"the name copier: L{copier[0]}H{copier[1]}, +{names_cost.max():.2f} nats on repeated names, "
      f"+{np.array(ablation['mean']['delta']['all'], dtype=float)[copier]:.2f} on all tokens")
if PRESET == "tiny":
    assert copier[0] == n_layers - 1 and names_cost.max() > 1.0
    assert names_cost.max() > 3 * np.array(ablation["mean"]["delta"]["all"], dtype=float)[copier]
    induction = np.array(result["scores"]["repeated_tokens"]["induction"], dtype=float)
    second_copy_cost = np.array(ablation["mean"]["delta"]["second_copy"], dtype=float)
    assert np.unravel_index(induction.argmax(), induction.shape) == copier and induction.max() >= 0.3
    assert np.unravel_index(second_copy_cost.argmax(), second_copy_cost.shape) == copier
    assert second_copy_cost[copier] > 1.0

# %% [markdown]
# ### Activation patching
#
# Ablation asks "what breaks?". Patching asks "where is the information?" (ARENA's
# indirect-object chapter; Wang et al. 2022, [arXiv:2211.00593](https://arxiv.org/abs/2211.00593)).
# Take the prompt "One day, A and B went to the park. Then B gave a ball to", where the
# answer is A. Corrupt it by swapping the giver: "... Then A gave a ball to". Run the
# corrupted prompt, copy one activation in from the clean run, and measure how much of
# the clean-minus-corrupted logit difference (logit A − logit B) comes back. A head's
# output is patched at every position, and the residual stream at one layer and position.

# %%
patching = result["patching"]
heads_grid = np.array(patching["heads"]["recovered"], dtype=float)
resid_grid = np.array(patching["residual"]["recovered"], dtype=float)
print(f"{patching['pairs']} pairs; logit diff clean {patching['heads']['clean']:+.2f}, "
      f"corrupted {patching['heads']['corrupted']:+.2f}")
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3))
left.imshow(heads_grid, cmap="RdBu", vmin=-1, vmax=1)
left.set(xlabel="head", ylabel="layer", title="head outputs patched")
right.imshow(resid_grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
right.set_xticks(range(len(patching["tokens"])), patching["tokens"], rotation=90)
right.set_yticks(range(len(patching["residual"]["hooks"])), patching["residual"]["hooks"])
right.set_title("residual stream patched (layer x position)")
plt.show()

# %% [markdown]
# On `tiny` the clean logit difference is negative: the model names the giver, the name it
# read last, which is not the indirect object. One head carries that whole decision:
# patching the name copier found above restores all of it. In the residual stream it
# sits at the giver's name until the last layer moves it to the final position.

# %%
top_head = np.unravel_index(np.nanargmax(heads_grid), heads_grid.shape)
print(f"the head that carries it: L{top_head[0]}H{top_head[1]} ({heads_grid[top_head]:.2f} recovered)")
if PRESET == "tiny":
    assert tuple(top_head) == tuple(copier) and heads_grid[top_head] > 0.8
    giver = len(patching["tokens"]) - 5  # "... Then [B] gave a ball to"
    assert resid_grid[0, giver] > 0.8 and resid_grid[-1, -1] > 0.99

# %% [markdown]
# ## 4. Composition
#
# A layer-1 head can read what a layer-0 head wrote through its query, its key or its
# value: Q-, K- and V-composition (Elhage et al. 2021,
# [A Mathematical Framework](https://transformer-circuits.pub/2021/framework/index.html)).
# An induction head is K-composition: its key reads the previous-token head's output.
# The score is |W_OV¹ W_QK²ᵀ|_F / (|W_OV¹|_F |W_QK²|_F), in our row-vector convention
# (x @ W), where W_OV = W_V W_O and W_QK = W_Q W_Kᵀ. Random matrices give a baseline:
# the same score for Gaussian weights of the same shapes.

# %% [markdown]
# ### Exercise 07.k_composition (difficulty 2, about 5 minutes)

# %%
def my_k_composition(w_ov: torch.Tensor, w_qk: torch.Tensor) -> float:
    """W_OV (d_model, d_model) of the earlier head, W_QK (d_model, d_model) of the later
    one -> the K-composition score."""
    raise NotImplementedError


my_k_composition = check("07.k_composition", my_k_composition)

# %%
a0, a1 = model.blocks[0].attn, model.blocks[n_layers - 1].attn
w_ov = (a0.W_V[0] @ a0.W_O[0]).detach()
w_qk = (a1.W_Q[0] @ a1.W_K[0].T).detach()
k_comp = np.array(result["composition"]["k"], dtype=float)  # (layer, head, later layer, later head); NaN: not later
print(f"K-composition L0H0 -> L{n_layers - 1}H0: yours {my_k_composition(w_ov, w_qk):.3f}, "
      f"the stage's {k_comp[0, 0, n_layers - 1, 0]:.3f}; random baseline {result['composition_baseline']['k']:.3f}")
assert abs(my_k_composition(w_ov, w_qk) - k_comp[0, 0, n_layers - 1, 0]) < 1e-4
print("K-composition, layer 0 heads (rows) into the last layer's heads (columns):\n",
      k_comp[0, :, n_layers - 1, :].round(3))

# %% [markdown]
# On `tiny` the induction head reads no layer-0 head through its key: its K-composition
# with each of them is near the random baseline. It needs none, because layer 1's keys
# are smeared (notebook 02, section 2): the previous token reaches the key by the smear,
# not by a previous-token head's output, and the weights-only score cannot see it. Its
# learned share of the previous key, sigmoid(`attn.smear`), is printed below. In a
# model without smeared keys (`small`, the TinyStories models) an induction head's
# K-composition stands out instead. The cell checks this run.

# %%
if PRESET == "tiny":
    best = np.unravel_index(np.array(result["scores"]["repeated_tokens"]["induction"], dtype=float).argmax(),
                            (n_layers, n_heads))
    into_induction = k_comp[:best[0], :, best[0], best[1]]
    share = torch.sigmoid(model.blocks[best[0]].attn.smear[best[1]]).item()
    print(f"induction head L{best[0]}H{best[1]}: K-composition from earlier heads "
          f"{into_induction.round(3).tolist()}, baseline {result['composition_baseline']['k']:.3f}; "
          f"share of the previous key {share:.2f}")
    assert best[0] in model.cfg.smeared_keys
    assert into_induction.max() < 2 * result["composition_baseline"]["k"]

# %% [markdown]
# ## 5. The catalogue, and how the heads formed
#
# The stage writes a one-line description of each head from its measurements: a label
# for each pattern score above its threshold, its OV copying score when high, and the
# group its ablation costs most. A head with no label is described by how far back and
# how broadly it looks.

# %%
for entry in result["catalogue"]:
    print(entry["description"])

# %%
assert len(result["catalogue"]) == n_layers * n_heads
assert all(e["description"].startswith(e["head"] + ": ") for e in result["catalogue"])
parse_head("L0H0", n_layers, n_heads)
try:
    parse_head(f"L{n_layers + 7}H0", n_layers, n_heads)
except ValueError as error:
    print(error)

# %% [markdown]
# **Formation.** The `lm` stage kept the weights at log-spaced steps. At each one the
# stage measured the best previous-token and induction scores and the loss on name
# repeats against first mentions. An induction head's phase change shows as the
# induction score jumping while the second copy's loss drops (Olsson et al., section 3).
# On `tiny` it comes between two snapshots: the induction score leaps from near zero,
# and in the same interval the second copy's loss falls by nats and the name repeats'
# loss with it.

# %%
rows = [r for r in result["formation"] if r["tokens"] > 0]
tokens = [r["tokens"] for r in rows]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
left.plot(tokens, [r["best_previous_token"] for r in rows], "o-", label="best previous-token")
left.plot(tokens, [r["best_induction"] for r in rows], "s-", label="best induction (R + R)")
left.set(xscale="log", xlabel="training tokens", ylabel="score", ylim=(0, 1))
left.legend()
right.plot(tokens, [r["name_first_loss"] for r in rows], "o-", label="first mentions")
right.plot(tokens, [r["name_repeat_loss"] for r in rows], "o-", label="name repeats")
right.set(xscale="log", xlabel="training tokens", ylabel="loss (nats)")
right.legend()
plt.show()

# %%
assert rows[-1]["name_repeat_loss"] < rows[0]["name_repeat_loss"]
if PRESET == "tiny":
    jumps = [(b["best_induction"] - a["best_induction"], a["second_copy_loss"] - b["second_copy_loss"],
              a["name_repeat_loss"] - b["name_repeat_loss"]) for a, b in zip(rows, rows[1:])]
    leap = max(range(len(jumps)), key=lambda i: jumps[i][0])
    print(f"the leap: between {rows[leap]['tokens']:,} and {rows[leap + 1]['tokens']:,} tokens, "
          f"induction +{jumps[leap][0]:.2f}, second copy -{jumps[leap][1]:.2f} nats, "
          f"name repeats -{jumps[leap][2]:.2f} nats")
    assert rows[0]["best_induction"] < 0.1 and jumps[leap][0] > 0.3
    assert jumps[leap][1] > 1.0 and jumps[leap][2] > 0.5

# %% [markdown]
# ## 6. The MLPs beside the heads
#
# Attention moves information and the MLPs transform it. Below are the statistics of each
# MLP's neurons (`mlp.hook_post`), of its output (`hook_mlp_out`) and of the final norm's
# output, over validation tokens. `activation_stats` is the same function notebook 03
# used. Then comes each MLP's most active neurons with their top tokens.

# %%
val = np.asarray(run.shards().tokens("val"))
n = min(64, (len(val) - 1) // model.cfg.n_ctx)
windows = torch.from_numpy(val[: n * model.cfg.n_ctx].reshape(n, -1).astype(np.int64))
hooks = ([f"blocks.{i}.mlp.hook_post" for i in range(n_layers)] + [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)]
         + ["ln_final.hook_normalized"])
_, cache = model.run_with_cache(windows, names=hooks)
print(f"{'hook':28s} {'mean':>7s} {'std':>7s} {'min':>7s} {'q25':>7s} {'median':>7s} {'q75':>7s} {'max':>7s}")
stats = {}
for name in hooks:
    stats[name] = s = activation_stats(cache[name], n_components=2)
    print(f"{name:28s} " + " ".join(f"{s[k]:7.3f}" for k in ("mean", "std", "min", "q25", "median", "q75", "max")))
fig, axes = plt.subplots(1, len(hooks), figsize=(2.6 * len(hooks), 2.4))
for ax, name in zip(axes, hooks):
    h = stats[name]["values_hist"]
    ax.stairs(h["counts"], h["edges"])
    ax.set(yscale="log", title=name.replace("blocks.", "b").replace("hook_", ""))
plt.tight_layout()
plt.show()

# %%
flat_tokens = windows.flatten()
for i in range(n_layers):
    post = cache[f"blocks.{i}.mlp.hook_post"].flatten(0, 1)  # (tokens, d_mlp)
    for neuron in post.mean(0).argsort(descending=True)[:3].tolist():
        top = post[:, neuron].topk(8).indices
        print(f"L{i} neuron {neuron}: mean {post[:, neuron].mean():.2f};",
              "top tokens", [tokenizer.decode([int(flat_tokens[j])]) for j in top])

# %%
for i in range(n_layers):  # GELU outputs sit above its minimum, about -0.17
    assert stats[f"blocks.{i}.mlp.hook_post"]["min"] >= -0.2
assert abs(stats["ln_final.hook_normalized"]["mean"]) < 1.0

# %% [markdown]
# ## 7. A picker: any head, any prompt
#
# Choose a head and a prompt, or type your own. The pattern is drawn as a heat map, with
# queries as rows and keys as columns. A prompt longer than the context is cut, and the
# cell says so.

# %%
head_names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
prompts = {"storyworld story": stories[1].text, "study prompt": STUDY_PROMPT}
head_box = widgets.Dropdown(options=head_names, value=head_names[-1], description="head")
prompt_box = widgets.Dropdown(options=list(prompts), description="prompt")
text_box = widgets.Text(placeholder="or type a prompt", description="text")
out = widgets.Output()


def draw(*_):
    layer, head = parse_head(head_box.value, n_layers, n_heads)
    text = text_box.value or prompts[prompt_box.value]
    ids = [tokenizer.start_id] + tokenizer.encode(text)
    if len(ids) > 40:
        ids = ids[:40]  # drawn small: the first 40 tokens
    _, c = model.run_with_cache(torch.tensor([ids]), names=[names[layer]])
    labels = ["<s>"] + [tokenizer.decode([i]) for i in ids[1:]]
    with out:
        out.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.imshow(c[names[layer]][0, head].numpy(), cmap="Blues")
        ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ids)), labels, fontsize=7)
        ax.set_title(f"{head_box.value}: {result['catalogue'][layer * n_heads + head]['description']}", fontsize=8)
        plt.show()


for box in (head_box, prompt_box, text_box):
    box.observe(draw, names="value")
display(widgets.VBox([widgets.HBox([head_box, prompt_box]), text_box, out]))
draw()

# %% [markdown]
# ## 8. Scaling up
#
# - The same stage runs on any model the course loads. On `small` (4 layers × 8 heads,
#   real TinyStories, no smeared keys) expect previous-token heads in layer 0 and
#   induction heads in the later layers, K-composed with them, once it has read enough
#   text: real text rewards copying in more ways than storyworld does.
# - On the public TinyStories-1L-21M (`load_pretrained`, notebook 09) the catalogue can
#   be set beside the study's hand-written table of its 16 heads, shipped in
#   `data/heads/` (below): `beside_study(pretrained_heads(model, tokenizer)["catalogue"],
#   load_study())`. Two of its heads are the "structural pivot" our `pivot` score measures.
# - Cost: one batched forward per prompt set, plus one per head and ablation mode. On
#   the replication shape (4 × 16 heads, n_ctx 256) the ablations are 128 forward
#   passes of the story batch.

# %%
from tinycourse.interpret.study_compare import load_study

study = load_study()
print(study["title"], "\n", study["url"], "\n")
for head, text in study["heads"].items():
    print(f"{head:>6}  {text[:110]}")
assert len(study["heads"]) == 16

# %%
rep = preset("replication")
assert rep.model.n_layers * rep.model.n_heads == 64
print("replication: heads to ablate", rep.model.n_layers * rep.model.n_heads, "x 2 modes")
