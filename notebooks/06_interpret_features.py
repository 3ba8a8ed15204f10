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
# # 06 · Interpreting features: what each latent does, measured
#
# Notebook 05 measured the dictionary as a whole. Here we ask of each latent: what does it
# fire on, what does it do to the model's predictions, and can we name it? The budget
# replication's last notebook listed the top-activating tokens of one feature (the ocean)
# and stopped. Top activations alone mislead: they show a latent at its most extreme, and
# say nothing of what it does. So this notebook goes further:
#
# 1. the scan: every latent's top contexts, quantile samples and histogram, in bounded
#    memory (an exercise);
# 2. a dashboard of every latent, and a browser here;
# 3. what a latent does: direct logit attribution (an exercise) and its causal effect;
# 4. steering during generation, with its cost;
# 5. offline auto-labels, scored on held-out text against baselines (an exercise);
# 6. ground truth on storyworld, scored fairly;
# 7. feature families across widths;
# 8. scaling up.

# %%
import os
PRESET = os.environ.get("TINYCOURSE_PRESET", "tiny")

# %%
import dataclasses
import html
import json

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import safetensors.torch
import torch
from IPython.display import HTML, display

from tinycourse.config import config_hash, preset
from tinycourse.exercises import check
from tinycourse.interpret.effects import prompt_latents
from tinycourse.interpret.families import feature_families
from tinycourse.interpret.features import ScanState, load_features, naive_top_contexts
from tinycourse.interpret.logits import direct_logit_attribution
from tinycourse.pipeline import Run, token_text
from tinycourse.report.bundle import circuitsvis_script, colored_tokens_html
from tinycourse.sae.model import load_sae
from tinycourse.sae.train import train_sae

cfg = preset(PRESET)
run = Run(cfg)
folder = run.ensure("features")
model, sae, shards, tokenizer = run.model(), run.sae(), run.shards(), run.tokenizer()
feats = load_features(folder)
effects = safetensors.torch.load_file(folder / "effects.safetensors")
labels = json.loads((folder / "labels.json").read_text())
text = token_text(tokenizer, shards.start_id)
index = feats["index"]
d_sae, width = index["d_sae"], index["config"]["context"]
print(f"{run.root}: {d_sae:,} latents at {index['hook_in']}, scanned on {index['n_tokens']:,} "
      f"validation tokens; {index['alive']:,} fired at least once")

# %% [markdown]
# ## 1. The scan
#
# One pass over the validation split keeps, per latent:
#
# - its **top k contexts** (activation, position, a window of tokens either side);
# - **quantile samples**: contexts at the 1/8, 3/8, 5/8 and 7/8 quantiles of its
#   activations, so we see how it usually fires, not only at its peak;
# - the **histogram** of its non-zero activations, its density and its mean when active.
#
# SAEDashboard and sae_vis keep every activation of every token and sort. That costs
# 4 × tokens × d_sae bytes: 64 GiB for a million tokens of 16K latents. Ours keeps a fixed
# state per latent and merges each batch into it, so memory does not grow with the tokens.
# Here is the state's size for this dictionary:

# %%
scan_cfg = cfg.features
state = ScanState(d_sae, scan_cfg)
print(f"running state: {state.nbytes / 2**20:.2f} MiB for {d_sae:,} latents "
      f"(top_k={scan_cfg.top_k}, reservoir={scan_cfg.reservoir}, {scan_cfg.hist_bins} bins), "
      f"whatever the number of tokens; keep-everything would need "
      f"{4 * index['n_tokens'] * d_sae / 2**20:,.0f} MiB for this scan")

# %% [markdown]
# ### Exercise 06.merge_top_k (difficulty 2, about 10 minutes)
#
# The scan's core step. Per latent, the running top k (values, positions; empty slots
# -inf at position -1) and a new batch of activations, all at later positions. Return
# the new running top k: the k largest *active* (> 0) activations over old and new,
# largest first, ties to the earliest position, empty slots 0 at position -1 (as
# `ScanState.top()` shows them).
#
# Tip: concatenate old and new along the k axis, mask inactive entries to -inf, and sort
# with `stable=True` so that equal values keep their position order.

# %%
def my_merge_top_k(top_values: torch.Tensor, top_positions: torch.Tensor,
                   latents: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """top_values (d_sae, k) float, top_positions (d_sae, k) int64, latents (n, d_sae),
    positions (n,) int64 -> (values (d_sae, k), positions (d_sae, k))."""
    raise NotImplementedError


my_merge_top_k = check("06.merge_top_k", my_merge_top_k)

# %% [markdown]
# Folded over batches, your merge gives exactly what keeping everything and sorting gives.
# The cell checks it on the first 2,048 validation tokens of this run's SAE.

# %%
val = shards.tokens("val")
ids = torch.from_numpy(np.asarray(val[:16 * model.cfg.n_ctx], dtype=np.int64)).view(16, -1)
_, cache = model.run_with_cache(ids, names=[sae.cfg.hook_in])
with torch.no_grad():
    acts = sae.encode(cache[sae.cfg.hook_in].reshape(-1, sae.d_in))
k = 4
values, where = torch.full((d_sae, k), -torch.inf), torch.full((d_sae, k), -1, dtype=torch.long)
for a in range(0, len(acts), 512):
    values, where = my_merge_top_k(values, where, acts[a:a + 512], torch.arange(a, min(a + 512, len(acts))))
_, naive_where = naive_top_contexts(acts, k)
assert torch.equal(where, torch.from_numpy(naive_where)), "the bounded merge must equal the sort"
print(f"bounded merge == keep-everything-and-sort on {len(acts):,} tokens x {d_sae:,} latents")

# %% [markdown]
# ### Why the top contexts alone mislead
#
# A latent's top contexts are its most extreme firings. The quantile samples are its
# typical ones. For many latents they differ: below, the latent whose top contexts agree
# most on one token while its quantile samples agree least.

# %%
def centre_tokens(windows):
    return windows[..., width]


top_tokens = centre_tokens(feats["top_windows"])  # (d_sae, top_k)
quantile_tokens = centre_tokens(feats["quantile_windows"])  # (d_sae, m)


def agreement(tokens):
    """Share of a latent's contexts whose activating token is its most common one."""
    share = []
    for row in tokens.tolist():
        row = [t for t in row if t >= 0]
        share.append(max(row.count(t) for t in set(row)) / len(row) if row else 0.0)
    return torch.tensor(share)


gap = agreement(top_tokens) - agreement(quantile_tokens)
gap[feats["n_active"] < 4 * scan_cfg.quantile_samples] = -1  # rare latents: too few samples
shown = int(gap.argmax())


def show_context(window, value, colour="#f4a261"):
    ids = [i for i in window.tolist()]
    left = "".join(text(i) for i in ids[:width] if i >= 0)
    right = "".join(text(i) for i in ids[width + 1:] if i >= 0)
    return (f"<code>{value:6.2f}</code> <code>{html.escape(left)}<b style='background:{colour}'>"
            f"{html.escape(text(ids[width]))}</b>{html.escape(right)}</code>")


rows = [show_context(w, float(v)) for w, v in zip(feats["top_windows"][shown][:5], feats["top_values"][shown][:5])]
rows += ["<i>quantile samples:</i>"]
rows += [f"q={float(q):.2f} " + show_context(w, float(v), "#a8dadc")
         for q, w, v in zip(feats["quantile_levels"], feats["quantile_windows"][shown], feats["quantile_values"][shown])]
display(HTML(f"<p>latent {shown}: top contexts, then quantile samples</p>" + "<br>".join(rows)))
assert gap[shown] > 0, "some latent's top contexts agree more than its typical ones"
print(f"latent {shown}: top contexts agree {agreement(top_tokens)[shown]:.0%} on one token, "
      f"quantile samples {agreement(quantile_tokens)[shown]:.0%}")

# %% [markdown]
# ## 2. A dashboard of every latent
#
# The stage wrote one offline page, `features/index.html`: a table of all latents
# (density, max activation, top tokens, auto-label and its score, the storyworld variable
# it matches), sortable and searchable; a panel per latent with its histogram, contexts,
# quantile samples, logit table, causal effect and nearest latents; and a prompt view.
# Open it in a browser. Here, a smaller browser: pick a latent, see its panel.

# %%
print(f"open {folder / 'index.html'} ({(folder / 'index.html').stat().st_size / 2**20:.1f} MiB, offline)")


def latent_panel(latent: int) -> str:
    """One latent's figures as HTML: the notebook's small copy of the page's panel."""
    entry = labels["latents"][latent]
    parts = [f"<h4>latent {latent}</h4>",
             f"density {float(feats['density'][latent]):.4f}, mean when active "
             f"{float(feats['mean_active'][latent]):.3f}, max {float(feats['max_active'][latent]):.3f}; "
             f"causal effect {float(effects['effect_mean'][latent]):+.3f} nats"]
    if entry["label"]:
        parts.append(f"auto-label <code>{html.escape(entry['label'])}</code>, detection AUROC "
                     f"{entry['detection_auroc']}, simulation r {entry['simulation_r']}"
                     + (f"; matches <code>{entry['variable']}</code> (AUROC {entry['variable_auroc']})"
                        if entry.get("variable") else ""))
    if "dla_boost_ids" in feats:
        boost = " ".join(html.escape(text(i)) for i in feats["dla_boost_ids"][latent, :6].tolist())
        suppress = " ".join(html.escape(text(i)) for i in feats["dla_suppress_ids"][latent, :6].tolist())
        parts.append(f"boosts <code>{boost}</code>; suppresses <code>{suppress}</code>")
    near = ", ".join(f"{int(j)} ({float(c):.2f})" for j, c in
                     zip(effects["neighbor_ids"][latent], effects["neighbor_cos"][latent]))
    parts.append(f"nearest by decoder cosine: {near}")
    parts += [show_context(w, float(v)) + f" <small>effect {float(e):+.3f}</small>"
              for w, v, e in zip(feats["top_windows"][latent][:5], feats["top_values"][latent][:5],
                                 effects["effect_contexts"][latent][:5])]
    return "<br>".join(parts)


picker = widgets.IntSlider(value=shown, min=0, max=d_sae - 1, description="latent")
search = widgets.Text(placeholder="a token, e.g. ' beach'", description="search")
panel = widgets.HTML(latent_panel(shown))


def on_search(change):
    wanted = change["new"]
    for row in labels["latents"]:
        if row["label"] and wanted and wanted in row["label"]:
            picker.value = row["latent"]
            return


picker.observe(lambda change: setattr(panel, "value", latent_panel(change["new"])), names="value")
search.observe(on_search, names="value")
display(widgets.VBox([widgets.HBox([picker, search]), panel]))

# %% [markdown]
# The prompt view: type a text, see which latents fire on each token. The page holds it
# for a few stories of the validation split; here it runs live.

# %%
prompt_box = widgets.Text(value="Once upon a time, there was a little girl. She went to the beach.",
                          layout=widgets.Layout(width="80%"))
prompt_view = widgets.HTML()


def show_prompt(change=None):
    ids = [shards.start_id] + tokenizer.encode(prompt_box.value)
    view = prompt_latents(model, sae, ids[:model.cfg.n_ctx], top=3)
    cells = [f"<code>{html.escape(text(i))}</code>: " + ", ".join(f"{lat} ({a:.1f})" for lat, a in row)
             for i, row in zip(view["ids"], view["top"])]
    prompt_view.value = "<br>".join(cells)


prompt_box.observe(show_prompt, names="value")
show_prompt()
display(widgets.VBox([prompt_box, prompt_view]))

# %% [markdown]
# One latent along a prompt, drawn by CircuitsVis (its bundle inlined, so it works
# offline): the latent that fires most on the prompt above, each token shaded by its
# activation.

# %%
display(HTML(circuitsvis_script()))
ids = [shards.start_id] + tokenizer.encode(prompt_box.value)
_, cache = model.run_with_cache(torch.tensor([ids[:model.cfg.n_ctx]]), names=[sae.cfg.hook_in])
with torch.no_grad():
    along = sae.encode(cache[sae.cfg.hook_in][0])  # (pos, d_sae)
strongest = int(along.max(0).values.argmax())
display(HTML(f"<p>latent {strongest} along the prompt</p>"
             + colored_tokens_html([text(i) for i in ids], along[:, strongest].tolist(), "cv-prompt-latent")))

# %% [markdown]
# ## 3. What a latent does
#
# **Direct logit attribution** (DLA) follows a latent's decoder row straight to the
# logits: through the final LayerNorm, with its scale frozen at the mean over the scanned
# tokens, and the unembedding. It ignores every layer in between, so it is cheap and
# partial.
#
# ### Exercise 06.direct_logit_attribution (difficulty 2, about 5 minutes)
#
# Each latent's decoder row through the final LayerNorm, its scale frozen at ln_scale,
# and the unembedding: (center(W_dec) * ln_scale * w) @ W_U, where center() subtracts
# each row's mean. Returns logits per unit of activation, (d_sae, d_vocab).

# %%
def my_direct_logit_attribution(W_dec: torch.Tensor, w: torch.Tensor, ln_scale: float,
                                W_U: torch.Tensor) -> torch.Tensor:
    """W_dec (d_sae, d_model), w (d_model,), ln_scale, W_U (d_model, d_vocab) -> (d_sae, d_vocab)."""
    raise NotImplementedError


my_direct_logit_attribution = check("06.direct_logit_attribution", my_direct_logit_attribution)

# %%
if model.ln_final.kind == "layernorm":
    with torch.no_grad():
        mine = my_direct_logit_attribution(sae.W_dec, model.ln_final.weight, index["ln_scale"], model.W_U)
    package = direct_logit_attribution(model, sae, index["ln_scale"])
    assert torch.allclose(mine, package, atol=1e-4)
    top = package[shown].topk(5).indices.tolist()
    print(f"latent {shown} pushes up: {[text(i) for i in top]} (matches the scan's "
          f"{[text(i) for i in feats['dla_boost_ids'][shown, :5].tolist()]})")

# %% [markdown]
# **Causal effect.** Run the model on each of a latent's top contexts twice: as it is,
# and with the latent taken out of the activation at every position (x − f_i(x) W_dec[i]:
# the spliced model with that latent zeroed and the SAE's error term kept, so nothing
# else changes). The change in the next-token loss at the activating token, in nats, is
# what the latent contributed there. Positive: it helped predict what came next.
# SAEDashboard once computed this and dropped it.

# %%
mean_effect = effects["effect_mean"]
alive = ~torch.isnan(mean_effect)
helps = float((mean_effect[alive] > 0).float().mean())
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].hist(mean_effect[alive].numpy(), bins=60, color="#4c72b0")
ax[0].set(xlabel="mean causal effect in its top contexts (nats)", ylabel="latents",
          title=f"{helps:.0%} of latents help where they fire most")
if "dla_boost_ids" in feats:
    # the DLA of the token that actually came next, against the causal effect
    next_ids = torch.from_numpy(np.asarray(val[np.clip(feats["top_positions"][:, 0].numpy() + 1, 0, len(val) - 1)], dtype=np.int64))
    dla_next = package[torch.arange(d_sae), next_ids] * feats["top_values"][:, 0]
    ax[1].scatter(dla_next.numpy(), effects["effect_contexts"][:, 0].numpy(), s=4, alpha=0.5)
    ax[1].set(xlabel="DLA of the next token x activation (logits)", ylabel="causal effect (nats)",
              title="top context of each latent")
    corr = float(np.corrcoef(dla_next.numpy()[alive.numpy()],
                             effects["effect_contexts"][:, 0].nan_to_num(0).numpy()[alive.numpy()])[0, 1])
    print(f"correlation of DLA on the next token with the causal effect: {corr:.2f}")
plt.tight_layout()
plt.show()
if PRESET == "tiny":
    assert helps > 0.5, helps

# %% [markdown]
# The cell above asserts what its title says: on `tiny`, most latents lower the loss in
# their own top contexts. DLA and the causal effect agree only in part. DLA misses every
# path through the later layers. The causal effect includes them.

# %% [markdown]
# ## 4. Steering, during generation
#
# Pin a latent to a value at every position, generated tokens included. SAELens's
# steering tutorial adds the vector at the prompt's positions only, so the tokens the
# model writes are never steered. `interpret.steering.steer` keeps the hook on for the
# whole of generation, with and without the KV cache (tested equal). The stage steered
# the latent that best tracks a storyworld place (`clamp` mode: the spliced model with
# the latent set to the value, error term kept) and measured two things per strength:
# the share of the place's words among generated tokens (the effect) and the loss on
# held-out text (the cost).

# %%
steering_path = folder / "steering.json"
steering = json.loads(steering_path.read_text()) if steering_path.exists() else None
if steering:
    rows = steering["rows"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot([r["heldout_loss"] for r in rows], [r["concept_share"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"{r['strength']:.1f}", (r["heldout_loss"], r["concept_share"]), fontsize=8)
    ax.set(xlabel="held-out loss (nats)", ylabel=f"share of {steering['place']} words",
           title=f"clamping latent {steering['latent']} (place={steering['place']})")
    plt.show()
    for r in rows:
        print(f"clamp {r['strength']:5.2f}: share {r['concept_share']:.3f}, loss {r['heldout_loss']:.3f}"
              f" | {r['generations'][0][-90:]!r}")
    best = steering["best"]
    print(f"best: x{best['share_factor']:.1f} the unsteered share at +{best['loss_increase']:.2f} nats")
    if PRESET == "tiny":
        assert best["share_factor"] > 2 and best["loss_increase"] > 0, best

# %% [markdown]
# On `tiny` the place latents are weak (their held-out AUROC for the place is near 0.55;
# section 6), and steering shows it: the share of place words rises several-fold, but from
# well under 1%, and by then the stories fall apart. Steering a latent is only as good as
# the latent.

# %% [markdown]
# ## 5. Auto-labels, offline, scored on text they were not built from
#
# No LLM is available offline, so labels are built from data. Each latent's label is a
# token set: the current tokens that best predict its firing (sorted by how often the
# latent fires on them, the prefix with the best F1), built on the even windows of the
# validation split. It is scored on the odd windows:
#
# - **detection**: AUROC of "the current token is in the set" against "the latent fires";
# - **simulation**: correlation of the predicted activation (the latent's mean activation
#   on that token, from the build half) with the real one.
#
# The same procedure on random directions and on PCA components of the same activations,
# each thresholded to fire as often as a latent does, is the baseline.

# %%
for name, s in labels["summary"].items():
    print(f"{name:7s} n={s['n']:5d}  detection AUROC {s['detection_auroc_mean']:.3f} "
          f"(median {s['detection_auroc_median']:.3f})  simulation r {s['simulation_r_mean']:.3f}")
best_labels = sorted((r for r in labels["latents"] if r["detection_auroc"] is not None),
                     key=lambda r: -r["detection_auroc"])[:6]
for r in best_labels:
    print(f"  latent {r['latent']:5d}: {r['label']:40s} detection {r['detection_auroc']:.3f}  r {r['simulation_r']:.2f}")
summary = labels["summary"]
if PRESET == "tiny":
    assert summary["sae"]["simulation_r_mean"] > max(summary["pca"]["simulation_r_mean"],
                                                     summary["random"]["simulation_r_mean"])
    assert summary["sae"]["detection_auroc_mean"] > summary["pca"]["detection_auroc_mean"]

# %% [markdown]
# The SAE's labels simulate their latents better than the baselines' do, and detect
# better than PCA's. Random directions detect about as well as the SAE here: this layer's
# residual stream is dominated by the current token's embedding, so any sparse direction
# picks out a few tokens. A token-set label is a low bar; richer explanations (n-grams,
# Neuron2Graph; or an LLM, as Bills et al. 2023 scored them,
# [*Language models can explain neurons in language models*](https://openaipublic.blob.core.windows.net/neuron-explainer/paper/index.html))
# are what separates the methods.
#
# ### Exercise 06.detection_auroc (difficulty 1, about 5 minutes)
#
# How well one latent's activation detects a label: the AUROC, the chance that a random
# positive scores above a random negative, with ties counting half. From ranks:
# (sum of the positives' average ranks − P(P + 1)/2) / (P N). Returns a float.

# %%
def my_detection_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """scores (n,), labels (n,) bool -> AUROC."""
    raise NotImplementedError


my_detection_auroc = check("06.detection_auroc", my_detection_auroc)

# %% [markdown]
# ## 6. Ground truth on storyworld, scored fairly
#
# Storyworld labels every token: inside a quote, who speaks, which character a pronoun
# points to, repeated names, the place, the story's section. So we can ask "is there a
# latent that *is* this variable?" The fair way: choose each variable's best latent (and
# its sign and threshold) on half the stories, report on the other half, give PCA all
# d_in components, and read each method's mean against its own chance level (the same
# scoring with shuffled labels). Choosing and reporting on the same tokens inflates rare
# variables, and dense PCA more than the sparse SAE.

# %%
truth_path = run.ensure("eval") / "ground_truth.json"
if cfg.data.source == "storyworld" and truth_path.exists():
    truth = json.loads(truth_path.read_text())
    print("held-out mean AUROC:", {k: round(v, 3) for k, v in truth["mean"].items()})
    print("chance (shuffled labels), held out:", {k: round(v, 3) for k, v in truth["chance"].items()})
    if "chance_selection" in truth:
        print("chance on the selection half (what same-tokens scoring credits for nothing):",
              {k: round(v, 3) for k, v in truth["chance_selection"].items()})
    variables = labels.get("variables", {})
    for name in sorted(variables, key=lambda n: -(variables[n]["auroc"] or 0))[:8]:
        v = variables[name]
        print(f"  {name:16s} latent {v['latent']:5d}  held-out AUROC {v['auroc']:.3f}")
    for method, chance in truth["chance"].items():
        assert abs(chance - 0.5) < 0.05, (method, chance)

# %% [markdown]
# Held out, chance is 0.5 for every method (the cell asserts it). Pronouns and quotes
# have latents of their own; places do not, which is why steering a place was weak.

# %% [markdown]
# ## 7. Feature families across widths
#
# Train a narrower SAE on the same activations and match its latents to ours by decoder
# cosine. A narrow latent with several close wide latents has *split* into a family
# (Bricken et al. 2023, [*Towards Monosemanticity*](https://transformer-circuits.pub/2023/monosemantic-features),
# "feature splitting").

# %%
# another seed: with the same one, the narrow SAE's initial decoder rows would be the wide
# one's first rows, and "matches" would be left over from the initialisation
narrow_cfg = dataclasses.replace(cfg.sae, d_sae=cfg.sae.d_sae // 4, seed=cfg.sae.seed + 1,
                                 n_tokens=min(cfg.sae.n_tokens, 500_000))
narrow_dir = run.root / "notebook06" / f"narrow-{config_hash({'sae': dataclasses.asdict(narrow_cfg), 'activations': run.dir.manifest_hash('activations')})}"
source = run.activation_source(cfg.sae.hook_in)
train_sae(narrow_cfg, source, narrow_dir, progress=True, input_scale=source.scale(cfg.sae.hook_in))
narrow = load_sae(narrow_dir)
families = feature_families(narrow, sae, threshold=0.6)
print(families.summary)
for row in families.splits[:5]:
    print(f"  narrow latent {row['latent']:4d} -> wide {row['family']} (cos {[round(c, 2) for c in row['family_cos']]})")
assert sum(families.summary[k] for k in ("one_to_one", "splits", "unmatched")) == narrow.d_sae
same_index = sum(r["best"] == r["latent"] for r in families.rows)
assert same_index < 0.05 * narrow.d_sae, f"{same_index} matches share an index: an initialisation artefact"

# %% [markdown]
# ## 8. What good looks like, and scaling up
#
# | what | where | figure | source |
# |---|---|---|---|
# | auto-interpretability (LLM explanations, simulation scoring) | GPT-2 neurons | mean explanation score ≈ 0.15 for neurons | Bills et al. 2023, [*Language models can explain neurons*](https://openaipublic.blob.core.windows.net/neuron-explainer/paper/index.html) |
# | SAE features vs neurons, detection scoring | Pythia, Gemma SAEs | SAE latents far more interpretable than neurons | Paulo et al. 2024, [*Automatically interpreting millions of features*](https://arxiv.org/abs/2410.13928) |
# | steering with SAE features | Claude 3 Sonnet | clamping "Golden Gate Bridge" changes behaviour | Templeton et al. 2024, [*Scaling Monosemanticity*](https://transformer-circuits.pub/2024/scaling-monosemanticity/) |
#
# With `TINYCOURSE_PRESET=replication` the stage scans `features.n_tokens` validation
# tokens (10M) of the 16,384-latent SAE on a 24 GB GPU; the scan's memory stays at its
# fixed state (`ScanState.nbytes`), the dashboard page holds every latent (about 18 MB at
# 16K latents), and the auto-labels use `features.label_tokens`. Real TinyStories has no
# ground truth, so section 6 is storyworld's alone.

# %%
print(f"this run ({PRESET}): stage took {json.loads((folder / 'manifest.json').read_text())['seconds']:.1f} s;",
      {k: v for k, v in json.loads((folder / "manifest.json").read_text())["summary"].items()
       if k.startswith(("detection", "simulation", "steering", "causal"))})
