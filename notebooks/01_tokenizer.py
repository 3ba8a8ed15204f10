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
# # 01 · The tokenizer: from stories to integers
#
# A language model reads and predicts integers, not text. The tokenizer is the fixed,
# invertible map between the two, and it is chosen before training starts: its vocabulary
# is the first and last layer of the model (the embedding and the unembedding have one row
# per token), and every later lesson reads activations *per token*.
#
# This notebook builds the first two stages of the pipeline:
#
# ```
# stories -> [tokenizer] -> [token shards] -> LM -> activations -> SAE -> ...
# ```
#
# It trains the course's tokenizer, asks how large its vocabulary should be, builds the
# TinyModel-style "top-K" vocabulary, and writes the corpus as flat token files that the
# next notebook trains on.

# %%
import os
PRESET = os.environ.get("TINYCOURSE_PRESET", "tiny")

# %%
import dataclasses
import html
import inspect
import itertools
import re

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

import tinycourse.config
from tinycourse.config import TokenizerConfig
from tinycourse.corpus.sources import iter_stories
from tinycourse.pipeline import Run, bytes_per_token
from tinycourse.corpus.shards import WindowSampler
from tinycourse.corpus.tokenizer import (UNK_TOKEN, RemapTokenizer, build_remap, count_tokens,
                                         load_base_tokenizer, train_bpe, unk_rates)
from tinycourse.exercises import check

cfg = tinycourse.config.preset(PRESET)
run = Run(cfg)
print(run.root)
print(cfg.data)
print(cfg.tokenizer)

# %% [markdown]
# The experiments below train several extra tokenizers. On `tiny` they use every story;
# on the larger presets a sample is enough to see the trends (and keeps this notebook
# minutes, not hours). Only the pipeline stages (`run.tokenizer()`, `run.shards()`) use
# the preset's full settings.

# %%
if PRESET == "tiny":
    N_TRAIN, N_VAL = None, None  # all of tiny's ~3,800 training and ~200 validation stories
    SWEEP_SIZES = [300, 512, 1024, 2048, 4096]
else:
    N_TRAIN, N_VAL = 50_000, 2_000
    SWEEP_SIZES = [1024, 2048, 4096, 8192, 16384]

train_texts = list(itertools.islice(iter_stories(cfg.data, "train"), N_TRAIN))
val_texts = list(itertools.islice(iter_stories(cfg.data, "val"), N_VAL))
n_bytes = sum(len(t.encode()) for t in train_texts)
print(f"{len(train_texts):,} training stories ({n_bytes / 1e6:.2f} MB), "
      f"{len(val_texts):,} validation stories")

# %% [markdown]
# ## 1. The corpus
#
# On `tiny` the stories come from `storyworld`, the course's own generator of
# TinyStories-like text (offline, seeded, and labelled for later lessons); on `small` and
# `replication` they are the real TinyStories. Two of them:

# %%
for story in train_texts[:2]:
    print(story, end="\n\n")
lengths = np.array([len(t.encode()) for t in train_texts])
print(f"bytes per story: median {np.median(lengths):.0f}, 5%-95% "
      f"{np.percentile(lengths, 5):.0f}-{np.percentile(lengths, 95):.0f}")
print(f"distinct whitespace-separated words: {len({w for t in train_texts for w in t.split()}):,}")

# %% [markdown]
# ## 2. The idea: byte-level BPE
#
# Byte-pair encoding (Sennrich et al. 2016, after Gage 1994) builds a vocabulary bottom up.
# Start with one token per symbol; count every adjacent pair in the corpus; add the most
# frequent pair as a new token and replace it everywhere; repeat until the vocabulary has
# the size you asked for. Frequent words end up as one token, rare words as a few pieces.
#
# *Byte-level* BPE (GPT-2, Radford et al. 2019) starts from the 256 byte values instead of
# characters, so every string, in any script or with any emoji, can be encoded, and
# decoding returns exactly the bytes that went in: there is no "unknown" token. Text is
# first split into words, with a word's leading space kept on the word (`" Lily"`), so
# merges never cross a word boundary.
#
# One merge step is two small functions, and you can write them. Each exercise below
# gives a stub; write its body and run the cell after it: `check` runs your function and
# the package's own on the same cases and says which case disagrees, and why it probably
# does. Left as `raise NotImplementedError`, the package's version is used and the
# notebook carries on.
#
# ### Exercise 1 · the pair to merge (difficulty 1, about 5 minutes)
#
# Count every adjacent pair of ids *within* each sequence (a sequence is one word's
# bytes: pairs never cross from one word to the next) and return the most frequent.
# Ties go to the smallest pair, comparing first ids, then second; a Python `min` over
# `(-count, pair)` does it. No pair at all: `None`.

# %%
def most_frequent_pair(seqs: list[list[int]]) -> tuple[int, int] | None:
    """The adjacent pair of ids that occurs most often in `seqs`.

    seqs: a list of id sequences (one per word), e.g. [[104, 105], [104, 105, 33]].
    Pairs are counted within each sequence, never across two; in [5, 5, 5] the pair
    (5, 5) occurs twice. Ties: the smallest pair wins.
    Returns the pair as a tuple (a, b), or None when no sequence holds two ids.
    """
    raise NotImplementedError


# %%
most_frequent_pair = check("01.most_frequent_pair", most_frequent_pair)

# %% [markdown]
# ### Exercise 2 · one merge (difficulty 2, about 10 minutes)
#
# Replace every occurrence of `pair` by `new_id`, scanning each sequence left to right.
# Overlaps are the subtle part: merging (5, 5) in `5 5 5` gives `new_id 5`, since the
# middle 5 can only belong to one merge. Return new lists and leave the input as it was.

# %%
def merge_pair(seqs: list[list[int]], pair: tuple[int, int], new_id: int) -> list[list[int]]:
    """Each sequence of `seqs` with every occurrence of `pair` replaced by `new_id`.

    seqs: a list of id sequences; pair: (a, b), two ids that follow each other;
    new_id: the id of the merged token. Returns a list of lists, one per sequence, e.g.
    merge_pair([[1, 2, 3, 1, 2]], (1, 2), 9) == [[9, 3, 9]].
    """
    raise NotImplementedError


# %%
merge_pair = check("01.merge_pair", merge_pair)

# %% [markdown]
# Your two functions are a BPE trainer already: split a few stories into words (a word
# keeps its leading space, as GPT-2's pre-tokenizer does), start from their UTF-8 bytes,
# and merge a dozen times. Each new token is the bytes of the two it joins.

# %%
words = [w for text in train_texts[:100] for w in re.findall(r" ?\w+| ?[^\w\s]+|\s+", text)]
seqs = [list(w.encode()) for w in words]
pieces = {i: bytes([i]) for i in range(256)}
n_start = sum(map(len, seqs))
for new_id in range(256, 268):
    pair = most_frequent_pair(seqs)
    if pair is None:
        break
    pieces[new_id] = pieces[pair[0]] + pieces[pair[1]]
    seqs = merge_pair(seqs, pair, new_id)
    print(f"merge {new_id}: {pieces[pair[0]].decode(errors='replace')!r:>8} + "
          f"{pieces[pair[1]].decode(errors='replace')!r:<8} "
          f"-> {pieces[new_id].decode(errors='replace')!r:<10} {sum(map(len, seqs)):,} tokens")
print(f"{n_start:,} bytes -> {sum(map(len, seqs)):,} tokens after {len(pieces) - 256} merges")
assert b"".join(pieces[i] for seq in seqs for i in seq) == "".join(words).encode()

# %% [markdown]
# The first merges join a space to the letters that most often start a word, and common
# pairs such as `he` and `ed`; within a dozen merges ` the` and ` to` are single tokens.
# Decoding is the lookup table `pieces`, so nothing is lost (the assert). The package trains the same thing with
# Hugging Face `tokenizers` (Rust, thousands of merges in seconds; it breaks ties its own
# way). The whole recipe:

# %%
print(inspect.getsource(train_bpe))

# %% [markdown]
# `<|endoftext|>` is a special token (id 0), added beside the merges rather than learned.
# The shard writer puts it in front of every story, so the model sees where stories begin.
#
# ## 3. Train the course's tokenizer
#
# `run.tokenizer()` builds the pipeline's `tokenizer` stage (or reuses it, if a previous run
# built it with the same config) and loads it. The stage records a few key figures in its
# manifest.

# %%
tokenizer = run.tokenizer()
summary = run.dir.manifest("tokenizer")["summary"]
print(type(tokenizer).__name__, "vocab_size =", tokenizer.vocab_size, "start_id =", tokenizer.start_id)
print(summary)

# %% [markdown]
# How sentences split. `pieces(text)` cuts the text where the tokens are cut. Each
# coloured box below is one token; a box marked ×n is one character that takes n byte
# tokens.

# %%
PALETTE = ["#cfe8ff", "#ffe2b8", "#d7f5d0", "#f1d7ff"]


def token_groups(tok, text):
    """[[piece, n_tokens, first_token_index, (start, end)]]: tokens covering the same
    characters (the bytes of one character) are grouped."""
    groups = []
    for index, (piece, span) in enumerate(zip(tok.pieces(text), tok.offsets(text))):
        if groups and groups[-1][0] == piece and groups[-1][3] == span:
            groups[-1][1] += 1
        else:
            groups.append([piece, 1, index, span])
    return groups


def show_tokens(tok, text, tokens=None):
    """Print the text with '|' between tokens, and show it as coloured boxes.

    `tokens=(a, b)` shows only tokens a..b-1 of the text (tokenized whole, in context).
    """
    groups = token_groups(tok, text)
    if tokens is not None:
        groups = [g for g in groups if tokens[0] <= g[2] < tokens[1]]
    n_tokens = sum(n for _, n, _, _ in groups)
    n_bytes = sum(len(text[a:b].encode()) for _, _, _, (a, b) in groups)
    plain = "|".join(p.replace("\n", "\\n") + (f"×{n}" if n > 1 else "") for p, n, _, _ in groups)
    print(f"{n_tokens:3d} tokens, {n_bytes / n_tokens:.2f} bytes/token: {plain}")
    spans = []
    for i, (piece, n, _, _) in enumerate(groups):
        style = ("background:#ff9c9c;font-weight:bold" if piece == UNK_TOKEN
                 else f"background:{PALETTE[i % len(PALETTE)]}")
        label = html.escape(piece.replace("\n", "\u23ce")) + (f"<sub>×{n}</sub>" if n > 1 else "")
        spans.append(f'<span style="{style};white-space:pre;border-radius:3px;'
                     f'margin-right:1px">{label}</span>')
    display(HTML('<div style="font-family:monospace;line-height:1.9">' + "".join(spans) + "</div>"))


SENTENCES = [
    "Once upon a time, there was a little girl named Lily.",
    'Tom said, "Can I have the red ball?" Lily smiled and gave it to him.',
    "The thermodynamics of photosynthesis are complicated.",
    "Zoë ate 3 crêpes 🥞 in Zürich.",
]
for sentence in SENTENCES:
    show_tokens(tokenizer, sentence)

# %% [markdown]
# Common story words are single tokens, with their leading space: `" Lily"` and `"Lily"`
# (at the start of a text) are different tokens. Words the corpus rarely or never uses
# fall apart into pieces, down to single bytes. `ë` is two bytes in UTF-8 and
# 🥞 is four, so they take two and four byte tokens. Nothing is lost:

# %%
for sentence in SENTENCES:
    assert tokenizer.decode(tokenizer.encode(sentence)) == sentence
print(tokenizer.encode(SENTENCES[0]))

# %% [markdown]
# ## 4. How big should the vocabulary be?
#
# A larger vocabulary makes sequences shorter (more bytes per token, so a context window
# holds more story), but costs embedding rows, and every token needs enough training
# examples to learn a good embedding. We train BPEs of several sizes on the training
# stories and measure, on held-out validation stories,
#
# - **bytes per token** (the compression: higher means shorter sequences), and
# - **share of the vocabulary used**: the share of token ids that the encoder actually
#   emits on those stories.

# %%
sweep = {}
rows = []
for size in SWEEP_SIZES:
    tok = train_bpe(train_texts, size, cfg.tokenizer.min_frequency)
    sweep[size] = tok
    encoded = tok.encode_batch(val_texts)
    used = len({i for ids in encoded for i in ids})
    learned = tok.tokenizer.get_vocab_size()
    rows.append((size, learned, bytes_per_token(tok, val_texts), used / size, used / learned))
print(f"{'asked':>6} {'learned':>8} {'bytes/token':>12} {'used/asked':>11} {'used/learned':>13}")
for size, learned, bpt, used_asked, used_learned in rows:
    print(f"{size:6d} {learned:8d} {bpt:12.2f} {used_asked:11.1%} {used_learned:13.1%}")

largest = sweep[SWEEP_SIZES[-1]]
emitted = {i for ids in largest.encode_batch(train_texts) for i in ids}
never = [i for i in range(257, largest.tokenizer.get_vocab_size()) if i not in emitted]
print(f"\n{len(never)} learned tokens of the {SWEEP_SIZES[-1]} BPE are never emitted, even on the "
      f"training stories; the longest: {sorted((largest.decode([i]) for i in never), key=len)[-8:]}")

# %%
sizes = np.array([r[0] for r in rows])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(sizes, [r[2] for r in rows], "o-")
ax1.set(xscale="log", xlabel="vocabulary size (asked)", ylabel="bytes per token (validation)",
        title="Compression")
ax2.plot(sizes, [r[3] for r in rows], "o-", label="used / asked")
ax2.plot(sizes, [r[4] for r in rows], "s--", label="used / learned")
ax2.set(xscale="log", xlabel="vocabulary size (asked)", ylabel="share of vocabulary used",
        title="Vocabulary use (validation)", ylim=(0, 1.05))
ax2.legend()
for ax in (ax1, ax2):
    ax.axvline(cfg.tokenizer.vocab_size, color="grey", ls=":", lw=1)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
fig.suptitle(f"BPE vocabulary size on {cfg.data.source} ({PRESET}); dotted: this preset's size")
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read it:
#
# - At small sizes most of the vocabulary is the 256 byte tokens, and plain English text
#   uses well under half of them (storyworld: 59 distinct bytes): the rest are there so
#   that *any* text can be encoded.
# - Compression climbs fast, then flattens once every frequent word has its own token.
# - A corpus can only fill a vocabulary as large as its repeated pieces. `storyworld` has
#   under two thousand distinct words (section 1), so at the largest sizes the trainer runs
#   out of pairs seen at least `min_frequency` times and stops early ("learned" below
#   "asked").
# - Some learned tokens are intermediate merges, steps on the way to a longer token, that
#   the encoder never emits once the longer token exists (printed above).
# - Unused ids still cost an embedding row each, and rare ones get few gradient updates:
#   a vocabulary much larger than the corpus needs buys little.
#
# ## 5. TinyModel's remap: a big tokenizer, cut down to its top K tokens
#
# Another road to a small vocabulary: take a big general tokenizer and keep only the K
# tokens that are most frequent on the corpus. The TinyStories paper (Eldan & Li 2023)
# "use[s] GPT-Neo tokenizer but only keep[s] the top 10K most common tokens". TinyModel
# (Noa Nabeshima 2024) does the same with GPT-NeoX's tokenizer, and says exactly what
# happens to the rest: tokens outside the top 10K become `[UNK]`, the kept ones are
# renumbered 1..10K by falling frequency, and each story starts with `[BEGIN]`.
#
# Unlike a BPE, this map is *lossy*: text made of rare tokens comes back as `[UNK]`.
# The package's version:

# %%
print(inspect.getsource(build_remap))

# %% [markdown]
# The real base is GPT-NeoX's `tokenizer.json`, which lives on the Hugging Face hub. To
# stay offline this notebook uses its largest BPE from the sweep above as the base; set
# the environment variable `TINYCOURSE_BASE_TOKENIZER` to a `tokenizer.json` to use a real
# one. First, how often each base token occurs on the training stories: a few tokens do
# most of the work, so a top-K list covers most of the text long before K reaches the
# number of tokens the corpus uses at all.

# %%
BASE = os.environ.get("TINYCOURSE_BASE_TOKENIZER", "")
base = load_base_tokenizer(BASE) if BASE else sweep[SWEEP_SIZES[-1]].tokenizer
base_counts = count_tokens(base, train_texts)  # (base vocabulary,), indexed by base id
counts = np.sort(base_counts)[::-1]
n_used = int(np.count_nonzero(counts))
coverage = np.cumsum(counts) / counts.sum()
print(f"base: {BASE or f'our {SWEEP_SIZES[-1]} BPE'} ({base.get_vocab_size():,} tokens), "
      f"{n_used:,} of them occur in the training stories")
for k in (10, 100, 1000, 10_000):
    if k < n_used:
        print(f"top {k:6,} tokens cover {coverage[k - 1]:.1%} of training tokens")

# K values to try: fractions of the tokens the corpus uses (and the preset's top_k)
REMAP_KS = sorted({max(1, round(n_used * f)) for f in (0.125, 0.25, 0.5, 0.75, 0.85, 0.9, 0.95, 1.0)}
                  | ({cfg.tokenizer.top_k} if cfg.tokenizer.top_k < n_used else set()))

# %% [markdown]
# ### Exercise 3 · which tokens the remap keeps (difficulty 2, about 10 minutes)
#
# Given every base token's count, return the ids of the `top_k` most frequent, most
# frequent first: that order *is* the remap (the first id you return becomes id 1).
# Two details decide it. Equal counts go to the smaller id (a stable sort does it, but
# `np.argsort` is not stable by default, and `[::-1]` reverses ties too). And a token
# the corpus never uses is never kept, even if that leaves fewer than `top_k`.

# %%
def top_k_ids(counts: np.ndarray, top_k: int) -> list[int]:
    """Ids of the `top_k` largest counts, most frequent first, ties by the smaller id.

    counts: (vocab,) int array, counts[i] = occurrences of base token i.
    Returns a list of Python ints, at most top_k long, with no id whose count is 0.
    """
    raise NotImplementedError


# %%
top_k_ids = check("01.top_k_ids", top_k_ids)

# %% [markdown]
# Now the remap for each K: keep the top K of the counts (with your `top_k_ids`; this is
# `build_remap` without recounting for every K) and measure `[UNK]` on the validation
# stories.

# %%
remaps, unk = {}, {}
for k in REMAP_KS:
    remaps[k] = RemapTokenizer(base, top_k_ids(base_counts, k), k)
    unk[k] = unk_rates(remaps[k], val_texts)
    print(f"K={k:6d}: stories with [UNK] {unk[k]['unk_story_share']:6.1%}, "
          f"tokens that are [UNK] {unk[k]['unk_token_share']:7.3%}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ranks = np.arange(1, n_used + 1)
ax1.plot(ranks, coverage[:n_used])
ax1.set(xscale="log", xlabel="K (top base tokens kept)", ylabel="share of training tokens",
        title="Coverage of the top K tokens", ylim=(0, 1.02))
ax2.plot(REMAP_KS, [unk[k]["unk_story_share"] for k in REMAP_KS], "o-",
         label="stories containing [UNK]")
ax2.plot(REMAP_KS, [unk[k]["unk_token_share"] for k in REMAP_KS], "s--",
         label="tokens that are [UNK]")
ax2.set(xlabel="K (top base tokens kept)", ylabel="share (validation)",
        title="[UNK] rate of the top-K remap", ylim=(-0.03, 1.03))
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Share of *stories* is the harsher measure: when only a percent of tokens are `[UNK]`,
# most stories still contain one, and one `[UNK]` can spoil a sentence for the model. A
# sample at a K that still loses a few percent of tokens, with `[UNK]` in red, and what
# decoding gives back:

# %%
lossy = [k for k in REMAP_KS if unk[k]["unk_token_share"] > 0.01] or REMAP_KS[:1]
remap = remaps[lossy[-1]]
print(f"K = {lossy[-1]}")
# the first validation story with an [UNK], tokenized whole; show 40 tokens around it
story = next((t for t in val_texts if remap.unk_id in remap.encode(t)), val_texts[0])
ids = remap.encode(story)
at = ids.index(remap.unk_id) if remap.unk_id in ids else 0
window_ids = (max(0, at - 20), at + 20)
show_tokens(remap, story, tokens=window_ids)
print("decoded:", remap.decode(ids[window_ids[0] : window_ids[1]]))

# %% [markdown]
# With GPT-NeoX as the base, use the remap as the pipeline's tokenizer stage by setting
# the tokenizer config. Download the file once on a machine with internet
# (`huggingface-cli download EleutherAI/gpt-neox-20b tokenizer.json`); with a hub connection
# `base_tokenizer` may also be the repo id itself. The model's vocabulary becomes K + 2
# (`[UNK]` and `[BEGIN]`). This cell only builds and checks the config; `Run(...).tokenizer()`
# would build it.

# %%
neox_tokenizer = TokenizerConfig(kind="remap", top_k=10_000,  # vocab_size is unused with a base
                                 base_tokenizer="path/to/gpt-neox-20b/tokenizer.json")
neox_cfg = dataclasses.replace(cfg, tokenizer=neox_tokenizer)
print(neox_cfg.tokenizer)
print("model d_vocab:", neox_cfg.resolved_model.d_vocab)
# run_neox = Run(neox_cfg, name=f"{PRESET}-neox"); tok_neox = run_neox.tokenizer()

# %% [markdown]
# ## 6. Shards: the corpus as one flat array of token ids
#
# Training reads random windows from the whole corpus many times, so we encode it once.
# `run.shards()` builds the `shards` stage: each split is one flat file of `uint16` ids
# (2 bytes a token; `uint32` only if the vocabulary exceeded 65,536), stories back to
# back, each starting with the start token, plus a `meta.json`. Encoding streams in
# batches, so memory stays flat for a corpus of any size.

# %%
shards = run.shards()
print(shards.meta)
for split, info in shards.meta["splits"].items():
    path = shards.root / f"{split}.bin"
    print(f"{split:5s}: {info['tokens']:>11,} tokens, {info['stories']:>9,} stories, "
          f"{info['tokens'] / info['stories']:.0f} tokens/story, {path.stat().st_size / 1e6:.2f} MB")

# %% [markdown]
# Every story starts with the start token: the first few starts in `train.bin`, and the
# tokens that follow each.

# %%
train_tokens = shards.tokens("train")
head = np.asarray(train_tokens[:5000])
starts = np.flatnonzero(head == shards.start_id)[:5]
for s in starts:
    print(f"position {s:5d}: {head[s]} then {head[s + 1:s + 8].tolist()} = "
          f"{tokenizer.decode(head[s + 1:s + 8])!r}")

# %% [markdown]
# What the model will see. `WindowSampler` draws random windows of `n_ctx + 1` tokens: the
# model reads the first `n_ctx` and is trained to predict each next one. A window knows
# nothing of story boundaries; the start token is the only signal that a new story
# begins (shown as ⟨start⟩).

# %%
sampler = WindowSampler(train_tokens, batch_size=8, n_ctx=cfg.model.n_ctx, seed=0)
batch = sampler.batch(0).numpy()
print("batch shape:", batch.shape, "(batch_size, n_ctx + 1)")
window = next((w for w in batch if (w == shards.start_id).any()), batch[0])
cuts = np.flatnonzero(window == shards.start_id)
segments = np.split(window, cuts)
text = " ⟨start⟩ ".join(tokenizer.decode(seg[seg != shards.start_id]) for seg in segments)
print(f"start token at window positions {cuts.tolist()}\n")
print(text)

# %% [markdown]
# ## 7. Invariants
#
# The notebook checks what the rest of the course relies on, so it fails loudly if the
# package breaks: decoding inverts encoding, every id fits the vocabulary (the
# embedding's rows), the shards hold exactly one start token per story, and the shards
# hold what the tokenizer produces.

# %%
held_out = val_texts[:200]
if cfg.tokenizer.kind == "bpe":  # a remap is lossy where [UNK] appears
    for story in held_out:
        assert tokenizer.decode(tokenizer.encode(story)) == story, story[:80]
for size, tok in sweep.items():
    assert all(tok.decode(ids) == s for s, ids in zip(held_out, tok.encode_batch(held_out))), size
for k, rm in remaps.items():  # without [UNK], the remap decodes exactly too
    for s, ids in zip(held_out, rm.encode_batch(held_out)):
        assert rm.unk_id in ids or rm.decode(ids) == s, k
assert tokenizer.vocab_size == shards.vocab_size
for split, info in shards.meta["splits"].items():
    tokens = shards.tokens(split)
    assert len(tokens) == info["tokens"]
    assert int(tokens.max()) < tokenizer.vocab_size, split
    assert tokens[0] == shards.start_id
    assert np.count_nonzero(tokens == shards.start_id) == info["stories"], split
first = next(iter_stories(cfg.data, "train"))
ids = [tokenizer.start_id] + tokenizer.encode(first)
assert train_tokens[: len(ids)].tolist() == ids
assert batch.min() >= 0 and batch.max() < tokenizer.vocab_size
print("all invariants hold")

# %% [markdown]
# ## 8. What good looks like
#
# | tokenizer | vocabulary | source |
# |---|---|---|
# | GPT-2 byte-level BPE | 50,257 (256 bytes + 50,000 merges + `<\|endoftext\|>`) | Radford et al. 2019 |
# | TinyStories models | GPT-Neo's tokenizer, top 10K tokens kept | Eldan & Li 2023, footnote 2 |
# | TinyModel | GPT-NeoX's tokenizer remapped to top 10K + `[UNK]` + `[BEGIN]` | Nabeshima 2024 |
# | this course, `replication` | our byte-level BPE, 10,000 tokens | `config.py` |
#
# Typical English with a GPT-2-style BPE runs at about 4 bytes per token (OpenAI's rule of
# thumb is "about 4 characters"). Our own measurement on real TinyStories
# (`benchmarks/bench_tokenize.py`, first 2 MiB of the train file): a 4,096-token BPE trained
# on it gives 4.0 bytes per token. Simple text compresses well even with a small
# vocabulary. On `storyworld`, expect ~3.5 bytes per token at 1,024 and saturation by ~2,000,
# since it uses under two thousand distinct words. Signs of trouble: bytes per token below ~3
# on English (vocabulary too small, or trained on the wrong text), a trained vocabulary far
# smaller than asked (corpus too small), or an `[UNK]` share of stories above a few percent
# (K too small).

# %%
print(f"this run ({PRESET}, {cfg.data.source}): vocab {tokenizer.vocab_size}, "
      f"{summary['val_bytes_per_token']:.2f} bytes/token on validation, "
      f"{shards.meta['splits']['train']['tokens']:,} training tokens")

# %% [markdown]
# ## 9. Scaling up: the `replication` preset
#
# Run this notebook with `TINYCOURSE_PRESET=replication` (or change the first cell). That
# preset reads the full TinyStories train set (~2.1M stories, ~1.9 GB of text) from the
# Hugging Face hub. Offline, give it the file instead:
# `cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="path/to/TinyStories-train.txt"))`,
# or on the command line `tinycourse run --preset replication --data path/to/TinyStories-train.txt`.
#
# - The BPE (10,000 tokens) trains on the first 200,000 training stories
#   (`tokenizer.train_stories`, ~180 MB): ample text to rank 10,000 merges of simple
#   English, while BPE training time and memory grow with the text.
# - Shards: ~470M tokens, so ~0.95 GB of `uint16` for `train.bin`. Encoding streams 4,096
#   stories at a time (`shards.encode_batch_stories`), so memory stays flat. On 2 CPU cores
#   our benchmark encodes ~8 MB of text a second, which extrapolates to ~4 minutes for the
#   full file (an extrapolation, for encoding alone: reading and cleaning the stories, or
#   streaming them from the hub, comes on top).
# - The experiments in this notebook (sweep, remap) switch to samples of 50,000 training
#   and 2,000 validation stories on the larger presets.
# - Both stages are cached in `runs/replication/`: the next notebook, and a rerun of this
#   one, reuse them.
