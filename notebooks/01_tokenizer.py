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
# invertible map between the two. It is chosen before training starts, for two reasons.
# Its vocabulary is the model's first and last layer: the embedding and the unembedding
# have one row per token. And every later lesson reads activations *per token*.

# %% [markdown]
# This notebook builds the first two stages of the pipeline:
#
# ```
# stories -> [tokenizer] -> [token shards] -> LM -> activations -> SAE -> ...
# ```
#
# It trains the course's tokenizer and asks how large its vocabulary should be. It then
# builds a "top-K" vocabulary: a big tokenizer cut down to its K most frequent tokens, as
# [TinyModel](https://github.com/noanabeshima/tinymodel) does (section 5). Last, it
# writes the corpus as flat token files that the next notebook trains on.

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
from tqdm.auto import tqdm

import tinycourse.config
from tinycourse.config import TokenizerConfig
from tinycourse.corpus import storyworld
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
    N_TRAIN, N_VAL = None, None  # all of tiny's ~7,600 training and ~400 validation stories
    SWEEP_SIZES = [300, 512, 1024, 2048, 4096, 8192]
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
# TinyStories-like text: offline, seeded, and labelled for later lessons. On `small` and
# `replication` they are the real TinyStories ([*TinyStories: How Small Can Language
# Models Be and Still Speak Coherent English?*](https://arxiv.org/abs/2305.07759), Eldan &
# Li 2023). Two of them:

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
# Byte-pair encoding (BPE) builds a vocabulary bottom up
# ([*Neural Machine Translation of Rare Words with Subword
# Units*](https://arxiv.org/abs/1508.07909), Sennrich, Haddow & Birch 2016, after a
# compression algorithm of Gage 1994):
#
# 1. start with one token per symbol;
# 2. count every adjacent pair in the corpus;
# 3. add the most frequent pair as a new token, and replace it everywhere;
# 4. repeat until the vocabulary has the size you asked for.
#
# Frequent words end up as one token, rare words as a few pieces.

# %% [markdown]
# *Byte-level* BPE starts from the 256 byte values instead of characters
# ([*Language Models are Unsupervised Multitask
# Learners*](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf),
# Radford et al. 2019, the GPT-2 paper). So every string, in any script or with any
# emoji, can be encoded. Decoding returns exactly the bytes that went in: there is no
# "unknown" token. Text is first split into words, each keeping its leading space
# (`" Lily"`), so merges never cross a word boundary.

# %% [markdown]
# One merge step is two small functions, and you can write them. Each exercise below
# gives a stub: write its body and run the cell after it. `check` runs your function and
# the package's own on the same cases; it says which case disagrees, and why it probably
# does. Left as `raise NotImplementedError`, the package's version is used and the
# notebook carries on.

# %% [markdown]
# ### Exercise 01.most_frequent_pair · the pair to merge (difficulty 1, about 5 minutes)
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
# ### Exercise 01.merge_pair · one merge (difficulty 2, about 10 minutes)
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
# pairs such as `he`. Within a dozen merges ` the` is a single token. Decoding is the
# lookup table `pieces`, so nothing is lost (the assert above). The next cell checks this
# run's merges:

# %%
merged = [pieces[i] for i in range(256, len(pieces))]
assert any(p.startswith(b" ") and p[1:].isalpha() for p in merged[:3]), merged[:3]
assert b" the" in merged, merged
print("merged pieces:", merged)

# %% [markdown]
# The package trains the same thing with Hugging Face `tokenizers`: Rust, thousands of
# merges in seconds, and its own way of breaking ties. The whole recipe:

# %%
print(inspect.getsource(train_bpe))

# %% [markdown]
# `<|endoftext|>` is a special token (id 0), added beside the merges rather than learned.
# The shard writer puts it in front of every story, so the model sees where stories begin.

# %% [markdown]
# ## 3. Train the course's tokenizer
#
# `run.tokenizer()` builds the pipeline's `tokenizer` stage and loads it. If a previous
# run built the stage with the same config, it is reused. The stage records a few key
# figures in its manifest.

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
# Common story words are single tokens, with their leading space: `" Lily"` is one token.
# Without the space (`"Lily"` at the start of a text) it is encoded differently, here in
# pieces. Words the corpus rarely or never uses
# fall apart into pieces, down to single bytes. `ë` is two bytes in UTF-8 and 🥞 is
# four, so they take two and four byte tokens. Nothing is lost. The cell checks each
# of these:

# %%
for sentence in SENTENCES:
    assert tokenizer.decode(tokenizer.encode(sentence)) == sentence
print(tokenizer.encode(SENTENCES[0]))
lily, lily_start = tokenizer.encode(" Lily"), tokenizer.encode("Lily")
print(f"' Lily' -> {tokenizer.pieces(' Lily')}, 'Lily' -> {tokenizer.pieces('Lily')}")
assert len(lily) == 1 and lily_start != lily
assert len(tokenizer.encode(" thermodynamics")) > 1
if cfg.data.source == "storyworld":  # a corpus that uses ë often may learn it as one token
    assert len(tokenizer.encode("ë")) == 2 and len(tokenizer.encode("🥞")) == 4

# %% [markdown]
# ## 4. How big should the vocabulary be?
#
# A larger vocabulary makes sequences shorter: more bytes per token, so a context window
# holds more story. But it costs embedding rows, and every token needs enough training
# examples to learn a good embedding. We train BPEs of several sizes on the training
# stories and measure, on held-out validation stories,
#
# - **bytes per token** (the compression: higher means shorter sequences), and
# - **share of the vocabulary used**: the share of token ids that the encoder actually
#   emits on those stories.

# %%
sweep = {}
rows = []
for size in tqdm(SWEEP_SIZES, desc="BPE sweep", unit="tokenizer"):
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
# - At small sizes most of the vocabulary is the 256 byte tokens. Plain English text
#   uses well under half of them; the rest are there so that *any* text can be encoded.
# - Compression climbs fast, then flattens once every frequent word has its own token.
# - Some learned tokens are intermediate merges: steps on the way to a longer token,
#   which the encoder never emits once the longer token exists (printed above).
#
# The cell below checks these three on this run.

# %%
n_distinct_bytes = len({b for t in train_texts for b in t.encode()})
bpt = np.array([r[2] for r in rows])
print(f"distinct bytes in the training stories: {n_distinct_bytes} of 256")
print("gain in bytes/token from each size to the next:", np.round(np.diff(bpt), 2).tolist())
assert n_distinct_bytes < 128
assert np.all(np.diff(bpt) > -0.01) and np.diff(bpt)[-1] < np.diff(bpt)[0]
assert len(never) > 0

# %% [markdown]
# A corpus can fill a vocabulary only with pieces it repeats. `storyworld` has under two
# thousand distinct words (section 1), so its words alone would saturate a BPE near two
# thousand tokens. But its invented names ("Brakomin") come back a dozen times within
# their story, and BPE counts that as repetition: at the largest sizes it keeps learning
# whole names, each from one story, which new text never uses. So the share of the
# learned vocabulary that validation text uses falls as the size grows. Unused ids still
# cost an embedding row each, and rare ones get few gradient updates. A vocabulary much
# larger than the corpus needs buys little.

# %%
words = {w.strip('.,!?"') for t in train_texts for w in t.split()}
if cfg.data.source == "storyworld":  # invented names are not in the templates' word list
    words = {w for w in words if w.lower() in storyworld.known_words()}
n_words = len(words)
used_share = {size: used_learned for size, _, _, _, used_learned in rows}
print(f"{n_words:,} distinct words; share of the learned vocabulary used on validation: "
      + ", ".join(f"{size}: {share:.0%}" for size, share in used_share.items()))
assert used_share[SWEEP_SIZES[-1]] < used_share[cfg.tokenizer.vocab_size]
if cfg.data.source == "storyworld":
    table = {c.name for c in storyworld.NAMES + storyworld.PARENTS}
    whole_names = [t for t in (largest.decode([i]).strip() for i in range(largest.tokenizer.get_vocab_size()))
                   if re.fullmatch(r"[A-Z][a-z]{4,}", t) and t not in table
                   and t.lower() not in storyworld.known_words()]
    print(f"whole invented names among the {SWEEP_SIZES[-1]} BPE's tokens: {len(whole_names)}, "
          f"e.g. {whole_names[:5]}")
    assert n_words < 2000 and len(whole_names) > 100

# %% [markdown]
# ## 5. TinyModel's remap: a big tokenizer, cut down to its top K tokens
#
# Another road to a small vocabulary: take a big general tokenizer, and keep only the K
# tokens that are most frequent on the corpus. The TinyStories paper
# ([Eldan & Li 2023](https://arxiv.org/abs/2305.07759), footnote 2) "use[s] GPT-Neo
# tokenizer but only keep[s] the top 10K most common tokens". GPT-Neo and GPT-NeoX are
# EleutherAI's open models.

# %% [markdown]
# [TinyModel](https://github.com/noanabeshima/tinymodel) (Noa Nabeshima 2024) does the
# same with GPT-NeoX's tokenizer, and says exactly what happens to the rest:
#
# - tokens outside the top 10K become `[UNK]`;
# - the kept ones are renumbered 1..10K by falling frequency;
# - each story starts with `[BEGIN]`.
#
# Unlike a BPE, this map is *lossy*: text made of rare tokens comes back as `[UNK]`.
# The package's version:

# %%
print(inspect.getsource(build_remap))

# %% [markdown]
# The real base is GPT-NeoX's `tokenizer.json`, which lives on the Hugging Face hub. To
# stay offline, this notebook uses its largest BPE from the sweep above as the base. To
# use a real one, set the environment variable `TINYCOURSE_BASE_TOKENIZER` to a
# `tokenizer.json`.
#
# First, how often each base token occurs on the training stories. A few tokens do most
# of the work: a top-K list covers most of the text long before K reaches the number of
# tokens the corpus uses at all. The cell checks that a quarter of them cover over three
# quarters of the training tokens.

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
print(f"top quarter ({n_used // 4:,} tokens) covers {coverage[n_used // 4 - 1]:.1%}")
assert coverage[n_used // 4 - 1] > 0.75

# K values to try: fractions of the tokens the corpus uses (and the preset's top_k)
REMAP_KS = sorted({max(1, round(n_used * f)) for f in (0.125, 0.25, 0.5, 0.75, 0.85, 0.9, 0.95, 1.0)}
                  | ({cfg.tokenizer.top_k} if cfg.tokenizer.top_k < n_used else set()))

# %% [markdown]
# ### Exercise 01.top_k_ids · which tokens the remap keeps (difficulty 2, about 10 minutes)
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
# Share of *stories* is the harsher measure. When only a percent of tokens are `[UNK]`,
# most stories still contain one, and one `[UNK]` can spoil a sentence for the model.
# Below: a sample at a K that still loses over a percent of tokens, with `[UNK]` in red,
# and what decoding gives back. The cell asserts that most stories hold an `[UNK]` there.

# %%
lossy = [k for k in REMAP_KS if unk[k]["unk_token_share"] > 0.01] or REMAP_KS[:1]
remap = remaps[lossy[-1]]
print(f"K = {lossy[-1]}: {unk[lossy[-1]]['unk_token_share']:.1%} of tokens, "
      f"{unk[lossy[-1]]['unk_story_share']:.0%} of stories")
assert unk[lossy[-1]]["unk_story_share"] > 0.5
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
# package breaks:
#
# - decoding inverts encoding;
# - every id fits the vocabulary (the embedding's rows);
# - the shards hold exactly one start token per story;
# - the shards hold what the tokenizer produces.

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
# | GPT-2 byte-level BPE | 50,257 (256 bytes + 50,000 merges + `<\|endoftext\|>`) | [Radford et al. 2019](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf) |
# | TinyStories models | GPT-Neo's tokenizer, top 10K tokens kept | [Eldan & Li 2023](https://arxiv.org/abs/2305.07759), footnote 2 |
# | TinyModel | GPT-NeoX's tokenizer remapped to top 10K + `[UNK]` + `[BEGIN]` | [Nabeshima 2024](https://github.com/noanabeshima/tinymodel) |
# | this course, `replication` | our byte-level BPE, 10,000 tokens | `config.py` |

# %% [markdown]
# Typical English with a GPT-2-style BPE runs at about 4 bytes per token: OpenAI's rule
# of thumb is "1 token ≈ 4 characters" ([*What are tokens and how to count
# them?*](https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them),
# OpenAI Help Center). On real TinyStories, `benchmarks/README.md` records 4.0 bytes per
# token for a 4,096-token BPE (`benchmarks/bench_tokenize.py`, first 2 MiB of the train
# file). Simple text compresses well even with a small vocabulary.

# %% [markdown]
# On `storyworld`, expect about 3 bytes per token at 1,024: its invented names ("Brakomin")
# take several tokens each. The cell below checks it on `storyworld`. Signs of trouble:
#
# - bytes per token below ~3 on English: vocabulary too small, or trained on the wrong text;
# - a trained vocabulary far smaller than asked: corpus too small;
# - an `[UNK]` share of stories above a few percent: K too small.

# %%
print(f"this run ({PRESET}, {cfg.data.source}): vocab {tokenizer.vocab_size}, "
      f"{summary['val_bytes_per_token']:.2f} bytes/token on validation, "
      f"{shards.meta['splits']['train']['tokens']:,} training tokens")
if cfg.data.source == "storyworld":
    by_size = {size: (learned, bpt) for size, learned, bpt, _, _ in rows}
    assert abs(by_size[1024][1] - 3.0) < 0.4, by_size[1024]

# %% [markdown]
# ## 9. Scaling up: the `replication` preset
#
# Run this notebook with `TINYCOURSE_PRESET=replication` (or change the first cell). That
# preset reads the full TinyStories train set from the Hugging Face hub
# ([`roneneldan/TinyStories`](https://huggingface.co/datasets/roneneldan/TinyStories):
# about 2.1M stories, 1.9 GB of text). Offline, give it the file instead, in a notebook:
# `cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="path/to/TinyStories-train.txt"))`.
# On the command line:
# `tinycourse run --preset replication --data path/to/TinyStories-train.txt`.

# %% [markdown]
# What changes at that scale (the cell below checks the preset's numbers):
#
# - The BPE (10,000 tokens) trains on the first 200,000 training stories
#   (`tokenizer.train_stories`, ~180 MB). That is ample text to rank 10,000 merges of
#   simple English, and BPE training time and memory grow with the text.
# - Shards: ~470M tokens, so ~0.94 GB of `uint16` for `train.bin`. Encoding streams 4,096
#   stories at a time (`shards.encode_batch_stories`), so memory stays flat.

# %% [markdown]
# - `benchmarks/README.md` records the encoding speed on 2 CPU cores, and what it
#   extrapolates to for the full file (encoding alone: reading the stories comes on top).
# - The experiments in this notebook (sweep, remap) switch to samples of 50,000 training
#   and 2,000 validation stories on the larger presets.
# - Both stages are cached in `runs/replication/`: the next notebook, and a rerun of this
#   one, reuse them.

# %%
rep_cfg = tinycourse.config.preset("replication")
print(rep_cfg.tokenizer, rep_cfg.shards, sep="\n")
assert rep_cfg.tokenizer.vocab_size == 10_000 and rep_cfg.tokenizer.train_stories == 200_000
assert rep_cfg.shards.encode_batch_stories == 4096
assert rep_cfg.tokenizer.vocab_size < 2**16  # so uint16: 470M tokens x 2 bytes = 0.94 GB
