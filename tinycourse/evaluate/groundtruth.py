"""Ground truth: do the SAE's latents recover variables we know the value of?

Storyworld labels every character of its stories (see `storyworld`): inside a quotation,
who speaks, which character a pronoun points to, repeated names, the place a sentence is
set in, and the section of the story. No real corpus offers this, so here alone we can
ask of a dictionary "is there a latent that *is* this variable?", and compare the SAE with
two dictionaries that learned nothing about the model: the principal components of the
same activations and a random dictionary.

Stories. `ground_truth_stories` storyworld stories of the run's seed with indices from
`first_index` on. The pipeline passes the preset's `data.max_stories`, so they are stories
the corpus never contained (neither train nor validation split) but drawn exactly as the
corpus was. Each is tokenised as the shards are (start token first) and labelled per
token with `storyworld.token_labels` on the tokenizer's character offsets; the start
token gets no label and is left out (the SAE is trained without it).

Context. A story can be longer than the model's n_ctx. It is read in windows of n_ctx
tokens starting every s = n_ctx // 2 tokens; the first window gives its activations
for positions 0 .. n_ctx - 1, every later one only for its last s positions. So each
token is read once, with at least n_ctx - s tokens of story before it (or the whole story).

Binary variables (one per row; positives = tokens where it holds):
    in_quote                   the token is inside a quotation (quote marks included)
    speaker=female|male        inside a quotation whose speaker is female / male
                               ("speaker has a label" would be in_quote again)
    pronoun                    the token is a pronoun with a referent
    pronoun=female|male|neuter|plural   ... whose referent is female / male / an "it"
                               animal / a plural ("Lily+Tom")
    name_repeat                the token is part of a name already written in the story
    place                      the sentence is set in a place (any)
    place=<name>               ... in that place (one-vs-rest, each place)
    section=opening|middle|ending   the story's section (one-vs-rest)
A variable with fewer than `min_positives` positives or negatives in either half is
skipped: its AUROC would be noise.

Scores: select on one half of the stories, report on the other. The stories are split
in two by story (`split_stories`: a seeded permutation, the first n // 2 of it select, the
rest report), each half read as above, so no story, and no token of one, is on both sides.
For each variable and method, everything that is chosen is chosen on the selection half:
the best single latent by AUROC (rank-based, ties counted half, vectorised over all
latents; no sklearn), its sign, and its F1 threshold (the best over thresholds there). The
AUROC and F1 reported are that latent's, with that sign and threshold, on the report half.
Choosing and reporting on the same tokens (as this module once did) inflates the best of
many noisy scores, most for rare variables and more for dense scores than for sparse ones:
labels drawn at random, 10 positives, give a best AUROC of ~0.64 over 1,024 sparse latents
and ~0.71 over 32 dense components, against 0.5 held out (tests/evaluate/test_groundtruth).
SAE latents are scored as they are (activation = evidence for the variable). PCA components
and random-dictionary codes have no meaningful sign, so both signs are tried (max(A, 1 - A)
on the selection half): this favours the baselines, which only makes "the SAE beats them"
harder to claim. Both baselines are fitted on the selection half's activations:
    pca     all d_in principal components (a rotation of the whole space, nothing left
            out): the SAE searches all its latents, so PCA searches all its directions
    random  `metrics.RandomDictionary` with the SAE's width d_sae and k = c = round(the
            SAE's mean L0 on the selection half) directions per token: the SAE's null, as
            many candidates to choose from and as sparse as the SAE, only not learned
Chance. The same select-then-report scoring with each variable's labels shuffled (within
the selection half and within the report half independently, one seeded permutation per
variable and half, the same for every method): what a method scores on a variable it
cannot know, the bar each method's mean is to be read against. Held out it is ~0.5 for
every method; on the selection half ("chance_selection") it shows what the same-tokens
scoring would have credited each method with for nothing.

How the SAE-vs-PCA comparison changes. Two changes pull against each other. Held-out
scoring takes away the credit the same-tokens scoring gave for nothing, and it gave dense
PCA components more than sparse SAE latents (compare chance_selection across methods),
most on rare variables. All d_in components give PCA directions beyond the top c to find a
variable in, and it often finds one there. On the tiny preset's run the second change
outweighed the first: PCA's mean rose, the SAE's barely moved, and the SAE's gap behind
PCA widened. So that gap is no artefact of the scoring; the SAE's lead over the random
dictionary holds too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import EvalConfig
from ..corpus.storyworld import PLACES, Story, gender_of, generate_stories, token_labels
from ..lm.model import eval_mode, model_device
from ..sae.model import SparseAutoencoder
from .metrics import LinearBaseline, RandomDictionary

MIN_POSITIVES = 10  # per half: each half needs this many positives and negatives
SPLIT_SEED = 0  # the story split and the chance level's shuffles
CHUNK = 4096  # tokens encoded at a time


# --- AUROC and F1 ------------------------------------------------------------------------

class SparseScores:
    """Scores of n tokens on L latents, stored as their nonzero entries (SAE latents are
    mostly 0, so ranking only the nonzeros is what makes a 16K-wide dictionary cheap).

    rows, cols (nnz,) int64 and values (nnz,) float: entry (rows[i], cols[i]) = values[i];
    every other entry is 0."""

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int):
        keep = values != 0
        self.rows, self.cols, self.values = rows[keep], cols[keep], values[keep]
        self.n_rows, self.n_cols = n_rows, n_cols

    @classmethod
    def from_dense(cls, scores: Tensor) -> SparseScores:
        """(n, L) -> SparseScores"""
        rows, cols = scores.nonzero(as_tuple=True)
        return cls(rows, cols, scores[rows, cols], *scores.shape)

    @classmethod
    def concat(cls, parts: Sequence[Tensor]) -> SparseScores:
        """Dense row blocks (n_i, L), stacked in order, without ever holding them all."""
        rows, cols, values, n = [], [], [], 0
        for part in parts:
            r, c = part.nonzero(as_tuple=True)
            rows.append(r + n)
            cols.append(c)
            values.append(part[r, c])
            n += len(part)
        return cls(torch.cat(rows), torch.cat(cols), torch.cat(values), n, parts[0].shape[1])

    def column(self, j: int) -> Tensor:
        """Latent j's scores, dense (n,)."""
        out = torch.zeros(self.n_rows, dtype=self.values.dtype, device=self.values.device)
        mask = self.cols == j
        return out.index_put_((self.rows[mask],), self.values[mask])

    @functools.cached_property
    def ranks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each column's ranks, computed once for any number of label sets:
        (rows (nnz,), cols (nnz,), rank (nnz,) float64, zero_rank (L,) float64), the
        entries sorted by (column, value), `rank` the 1-based average rank of each
        entry within its column (ties share the average of their ranks), `zero_rank`
        the average rank of each column's zeros. A column's zeros all tie, between its
        negative and its positive entries: their average rank is n_negative +
        (n_zero + 1) / 2, and every positive entry's rank is shifted by n_zero."""
        n, n_cols = self.n_rows, self.n_cols
        by_value = self.values.argsort(stable=True)  # by value, then stably by column
        order = by_value[self.cols[by_value].argsort(stable=True)]
        col, value = self.cols[order], self.values[order]
        nnz = len(col)
        per_col = torch.bincount(col, minlength=n_cols).double()
        below_zero = torch.bincount(col[value < 0], minlength=n_cols).double()
        zeros = n - per_col
        # first and last sorted position of each run of equal (column, value)
        new_run = torch.ones(nnz, dtype=torch.bool, device=col.device)
        new_run[1:] = (col[1:] != col[:-1]) | (value[1:] != value[:-1])
        ends_run = torch.ones_like(new_run)
        ends_run[:-1] = new_run[1:]
        index = torch.arange(nnz, device=col.device)
        first = torch.where(new_run, index, 0).cummax(0).values
        last = torch.where(ends_run, index, nnz).flip(0).cummin(0).values.flip(0)
        col_start = per_col.cumsum(0) - per_col
        rank = (first + last).double() / 2 - col_start[col] + 1
        rank += torch.where(value > 0, zeros[col], 0.0)
        return self.rows[order], col, rank, below_zero + (zeros + 1) / 2


def auroc(scores: Tensor | SparseScores, labels: Tensor) -> Tensor:
    """AUROC of each latent (column) for binary `labels` (n,): the probability that a
    random positive scores above a random negative, ties counting half (Mann-Whitney U
    from average ranks: (sum of the positives' ranks - P (P + 1) / 2) / (P N)).
    `scores` (n, L) dense or SparseScores (whose ranks are reused across calls).
    Returns (L,) float64."""
    if not isinstance(scores, SparseScores):
        scores = SparseScores.from_dense(scores)
    labels = labels.bool()
    n, n_pos = scores.n_rows, int(labels.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"AUROC needs positives and negatives, got {n_pos} of {n}")
    rows, col, rank, zero_rank = scores.ranks
    positive = labels[rows].double()
    nonzero_positives = torch.bincount(col, weights=positive, minlength=scores.n_cols)
    rank_sum = torch.bincount(col, weights=rank * positive, minlength=scores.n_cols)
    rank_sum += (n_pos - nonzero_positives) * zero_rank
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))


def detection_auroc(scores: Tensor, labels: Tensor) -> float:
    """`auroc` of one score vector (n,) against boolean labels (n,), as a float: how well
    one latent's activation detects a label."""
    return float(auroc(scores.reshape(-1, 1), labels.reshape(-1))[0])


def best_f1(score: Tensor, labels: Tensor) -> tuple[float, float]:
    """(F1, threshold) of the rule `score >= threshold` at the best threshold, for one
    score (n,) and binary labels (n,). Thresholds are the score's distinct values."""
    labels = labels.bool()
    values, order = score.sort(descending=True)
    true_pos = labels[order].double().cumsum(0)
    predicted = torch.arange(1, len(score) + 1, device=score.device, dtype=torch.float64)
    f1 = 2 * true_pos / (predicted + labels.sum())
    cut = torch.ones_like(labels)  # a threshold must take all of a run of equal scores
    cut[:-1] = values[1:] != values[:-1]
    f1 = torch.where(cut, f1, -1.0)
    best = int(f1.argmax())
    return float(f1[best]), float(values[best])


def best_latent(scores: Tensor | SparseScores, labels: Tensor, *, both_signs: bool) -> dict:
    """The latent with the highest AUROC for `labels` (n,): {"auroc", "f1", "latent",
    "sign"} (sign -1: the negated score won; only with both_signs). F1 is that latent's
    best over thresholds."""
    if not isinstance(scores, SparseScores):
        scores = SparseScores.from_dense(scores)
    a = auroc(scores, labels)
    signed = torch.maximum(a, 1 - a) if both_signs else a
    latent = int(signed.argmax())
    sign = -1 if both_signs and a[latent] < 0.5 else 1
    f1, _ = best_f1(sign * scores.column(latent), labels)
    return {"auroc": float(signed[latent]), "f1": f1, "latent": latent, "sign": sign}


def select_then_report(selection: Tensor | SparseScores, y_selection: Tensor,
                       report: Tensor | SparseScores, y_report: Tensor, *, both_signs: bool) -> dict:
    """Choose on one set of tokens, score on another (module docstring): the latent with
    the best AUROC on `selection` for `y_selection`, its sign (only with both_signs) and
    its best F1 threshold there; then that latent's AUROC and F1 (the rule
    sign * score >= threshold) on `report` for `y_report`. Both score sets have the same
    latents (columns). Returns {"auroc", "f1" (on report), "latent", "sign", "threshold",
    "selection_auroc", "selection_f1"}."""
    if not isinstance(selection, SparseScores):
        selection = SparseScores.from_dense(selection)
    if not isinstance(report, SparseScores):
        report = SparseScores.from_dense(report)
    chosen = best_latent(selection, y_selection, both_signs=both_signs)
    latent, sign = chosen["latent"], chosen["sign"]
    selection_f1, threshold = best_f1(sign * selection.column(latent), y_selection)
    score = sign * report.column(latent)
    y = y_report.bool()
    predicted = score >= threshold
    f1 = 2 * float((predicted & y).sum()) / (int(predicted.sum()) + int(y.sum()))
    return {"auroc": float(auroc(score[:, None], y)[0]), "f1": f1, "latent": latent, "sign": sign,
            "threshold": threshold, "selection_auroc": chosen["auroc"], "selection_f1": selection_f1}


def split_stories(n: int, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Stories 0 .. n - 1 into (selection, report), each sorted: a permutation seeded with
    `seed`, its first n // 2 select and the rest report. Needs n >= 2."""
    if n < 2:
        raise ValueError(f"selecting on half the stories and reporting on the other needs >= 2, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[: n // 2]), sorted(int(i) for i in order[n // 2 :])


# --- variables ------------------------------------------------------------------------------

def binary_targets(labels: dict[str, Sequence[str | None]]) -> dict[str, np.ndarray]:
    """Per-token label values (variable -> one value or None per token, as
    `storyworld.token_labels` gives, concatenated over stories) -> the binary variables
    of the module docstring, {name: (n,) bool}, in a fixed order."""
    def where(variable: str, test) -> np.ndarray:
        return np.array([v is not None and test(v) for v in labels[variable]], dtype=bool)

    out = {"in_quote": where("in_quote", lambda v: True)}
    for gender in ("female", "male"):
        out[f"speaker={gender}"] = where("speaker", lambda v, g=gender: gender_of(v) == g)
    out["pronoun"] = where("pronoun_referent", lambda v: True)
    for gender in ("female", "male", "neuter", "plural"):
        out[f"pronoun={gender}"] = where("pronoun_referent",
                                         lambda v, g=gender: _referent_gender(v) == g)
    out["name_repeat"] = where("name_repeat", lambda v: True)
    out["place"] = where("place", lambda v: True)
    for place in PLACES:
        out[f"place={place}"] = where("place", lambda v, p=place: v == p)
    for section in ("opening", "middle", "ending"):
        out[f"section={section}"] = where("section", lambda v, s=section: v == s)
    return out


def _referent_gender(value: str) -> str | None:
    return "plural" if "+" in value else gender_of(value)


# --- activations of labelled stories ---------------------------------------------------------

def context_windows(n: int, n_ctx: int) -> list[tuple[int, int]]:
    """How a sequence of n tokens is read (module docstring): [(start, first_kept)], each
    window tokens[start : start + n_ctx] giving positions first_kept .. its end."""
    step = max(1, n_ctx // 2)
    windows = [(0, 0)]
    while windows[-1][0] + n_ctx < n:
        start = windows[-1][0] + step
        windows.append((start, start + n_ctx - step))
    return windows


@torch.no_grad()
def story_activations(model, hook: str, tokenizer, stories: Sequence[Story], *,
                      batch_size: int = 32, device: str | torch.device | None = None
                      ) -> tuple[Tensor, dict[str, list[str | None]]]:
    """The activations at `hook` of every token of `stories` but the start tokens, and
    their labels: ((n, width) float32, {variable: [value or None] * n})."""
    device = model_device(model, device)
    n_ctx = model.cfg.n_ctx
    pieces: list[tuple[list[int], int]] = []  # (window tokens, first kept position in it)
    labels: dict[str, list] = {}
    for story in stories:
        ids = [tokenizer.start_id] + list(tokenizer.encode(story.text))
        offsets = [(0, 0)] + [tuple(o) for o in tokenizer.offsets(story.text)]
        if len(offsets) != len(ids):
            raise ValueError("the tokenizer's offsets do not line up with its tokens")
        for variable, values in token_labels(story, offsets).items():
            labels.setdefault(variable, []).extend(values[1:])  # drop the start token
        for start, kept in context_windows(len(ids), n_ctx):
            # positions of this window that are read from it (never the start token)
            pieces.append((ids[start : start + n_ctx], 1 if start == 0 else kept - start))
    rows = []
    for a in range(0, len(pieces), batch_size):
        batch = pieces[a : a + batch_size]
        # pad on the right: causal attention never lets padding reach earlier positions
        tokens = torch.full((len(batch), n_ctx), tokenizer.start_id, dtype=torch.long)
        for i, (ids, _) in enumerate(batch):
            tokens[i, : len(ids)] = torch.tensor(ids)
        length = max(len(ids) for ids, _ in batch)
        _, cache = model.run_with_cache(tokens[:, :length].to(device), names=hook,
                                        stop_at_layer="auto")
        act = cache[hook].flatten(2).float()
        rows += [act[i, kept : len(ids)] for i, (ids, kept) in enumerate(batch)]
    acts = torch.cat(rows)
    assert all(len(v) == len(acts) for v in labels.values()), "labels and tokens out of step"
    return acts, labels


# --- the entry point ---------------------------------------------------------------------------

@torch.no_grad()
def ground_truth_recovery(model, sae: SparseAutoencoder, tokenizer, cfg: EvalConfig,
                          data_seed: int, first_index: int, *,
                          device: str | torch.device | None = None,
                          min_positives: int = MIN_POSITIVES, seed: int = SPLIT_SEED) -> dict:
    """Score the SAE's latents (and the PCA and random baselines) against storyworld's
    labels on `cfg.ground_truth_stories` stories of seed `data_seed` from `first_index`,
    chosen on one half of the stories and reported on the other (module docstring);
    `seed` splits the stories and shuffles the labels of the chance level.

    Returns (every AUROC and F1 on the report half unless it says selection):
        rows        one per variable: {"variable", "positives" (both halves),
                    "positives_selection", "positives_report",
                    "sae": {"auroc", "f1", "latent", "threshold", "selection_auroc",
                    "selection_f1"}, "pca": {..., "sign"}, "random": {..., "sign"},
                    "chance": {"sae", "pca", "random"} (AUROC with shuffled labels)}
        mean        {"sae", "pca", "random"}: AUROC averaged over the rows
        mean_f1     the same for F1
        chance      {"sae", "pca", "random"}: the chance AUROC averaged over the rows
        chance_f1   the same for F1
        mean_selection, chance_selection   the selection half's AUROCs (chosen on the
                    same tokens: optimistic, shown for comparison), averaged
        stories     {"selection": [...], "report": [...]} storyworld indices of each half
        n_tokens, n_tokens_selection, n_tokens_report, n_stories, first_index, data_seed,
        split_seed, hook, coefficients (random's k = c per token), pca_components (d_in),
        random_directions (d_sae), skipped (variables with too few positives or negatives
        in a half)"""
    device = model_device(model, device)
    model_device(sae, device)  # the SAE must sit with the model; neither is moved here
    stories = list(generate_stories(cfg.ground_truth_stories, seed=data_seed, start=first_index))
    halves = dict(zip(("selection", "report"), split_stories(len(stories), seed)))
    acts, targets, latents = {}, {}, {}
    with eval_mode(model, sae):
        for half, chosen in halves.items():
            acts[half], labels = story_activations(model, sae.cfg.hook_in, tokenizer,
                                                   [stories[i] for i in chosen],
                                                   batch_size=cfg.batch_size, device=device)
            targets[half] = binary_targets(labels)
            latents[half] = SparseScores.concat([sae.encode(c) for c in acts[half].split(CHUNK)])
    fit = acts["selection"]  # both baselines are fitted on the selection half
    d_in = fit.shape[1]
    c = max(1, min(round(len(latents["selection"].values) / len(fit)), d_in))  # mean L0
    pca = LinearBaseline(fit, fit, d_in, same_space=True)
    random = RandomDictionary(fit, fit, sae.d_sae, c, same_space=True)
    scores = {half: {
        "sae": latents[half],
        "pca": SparseScores.from_dense(pca.scores(acts[half]).float()),
        "random": SparseScores.concat([random.encode(chunk) for chunk in acts[half].split(CHUNK)]),
    } for half in halves}
    kinds = list(scores["selection"])
    generator = torch.Generator().manual_seed(seed)
    rows, nulls, skipped = [], [], []  # nulls: each row's scores with shuffled labels
    for name in targets["selection"]:
        y = {half: torch.from_numpy(targets[half][name]).to(acts[half].device) for half in halves}
        counts = {half: int(y[half].sum()) for half in halves}
        if min(min(p, len(y[h]) - p) for h, p in counts.items()) < min_positives:
            skipped.append(name)
            continue
        # shuffled within each half; drawn for every scored variable, in order: seeded
        shuffled = {h: y[h][torch.randperm(len(y[h]), generator=generator).to(y[h].device)] for h in halves}
        row = {"variable": name, "positives": sum(counts.values()),
               "positives_selection": counts["selection"], "positives_report": counts["report"]}
        null_row = {}
        for kind in kinds:
            both_signs = kind != "sae"
            best = select_then_report(scores["selection"][kind], y["selection"], scores["report"][kind],
                                      y["report"], both_signs=both_signs)
            null = select_then_report(scores["selection"][kind], shuffled["selection"],
                                      scores["report"][kind], shuffled["report"], both_signs=both_signs)
            if not both_signs:
                del best["sign"]
            row[kind] = best
            null_row[kind] = null
        row["chance"] = {kind: null_row[kind]["auroc"] for kind in kinds}
        rows.append(row)
        nulls.append(null_row)

    def average(table: list[dict], key: str) -> dict:
        return {k: float(np.mean([r[k][key] for r in table])) if table else None for k in kinds}

    return {
        "rows": rows,
        "mean": average(rows, "auroc"), "mean_f1": average(rows, "f1"),
        "chance": average(nulls, "auroc"), "chance_f1": average(nulls, "f1"),
        "mean_selection": average(rows, "selection_auroc"),
        "chance_selection": average(nulls, "selection_auroc"),
        "stories": {half: [first_index + i for i in chosen] for half, chosen in halves.items()},
        "n_tokens": sum(len(a) for a in acts.values()), "n_tokens_selection": len(acts["selection"]),
        "n_tokens_report": len(acts["report"]), "n_stories": len(stories), "first_index": first_index,
        "data_seed": data_seed, "split_seed": seed, "hook": sae.cfg.hook_in, "coefficients": c,
        "pca_components": d_in, "random_directions": sae.d_sae, "skipped": skipped,
    }


__all__ = [
    "MIN_POSITIVES",
    "SPLIT_SEED",
    "SparseScores",
    "auroc",
    "best_f1",
    "detection_auroc",
    "best_latent",
    "binary_targets",
    "context_windows",
    "ground_truth_recovery",
    "select_then_report",
    "split_stories",
    "story_activations",
]
