"""The attention-head catalogue, first slice: what each head attends to, and how heads compose.

Pattern scores (`head_scores`, one batched `run_with_cache` over many prompts). Each is the
attention mass a head puts on a defined set of keys, averaged over the queries that have
such a key (and over the batch). With p = pattern[b, h, q, k] and t = tokens[b]:

    previous_token   keys {q-1},                           queries q >= 1
    current_token    keys {q},                             queries q >= 1
    start_token      keys {0} (or {k < q: t[k] == start_id}), queries q >= 1 (that have one)
    duplicate_token  keys {k < q: t[k] == t[q]},           queries that have one
    induction        keys {1 <= k <= q: t[k-1] == t[q]},   queries that have one
    pivot            keys {the latest k <= q with t[k] a comma, full stop or quote mark},
                     queries that have one (the "structural pivot" heads the
                     TinyStories-1L-21M study described); needs `pivot_ids`
    distance         sum_k p (q - k), mean over all queries (tokens back)
    entropy          -sum_k p log p (nats), mean over all queries

The key sets are TransformerLens's `head_detector` detection patterns (previous_token_head,
duplicate_token_head, induction_head; the induction one is the duplicate pattern shifted a
key to the right, so k = q counts when t[q-1] == t[q]). Where ours differs: TransformerLens
divides by the attention of *every* query (`(pattern * detection).sum() / pattern.sum()`),
so a head is marked down for queries that have no duplicate at all; we average only over
queries that have a target, so a perfect head scores 1 on any prompt. Current- and
start-token skip q = 0, where all attention is on key 0 whatever the head does. Score
induction on `repeated_random_tokens`: [start] + r + r, where only the copy explains it.
`head_detector_scores` gives TransformerLens's own numbers (its "mul" measure, every query
in the denominator), batched, for comparing with tools built on it.

Composition (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"). The
paper writes column vectors: W_OV = W_O W_V, W_QK = W_Q^T W_K, and
Q-comp = |W_QK^h2 ^T W_OV^h1|_F / (|W_QK^h2|_F |W_OV^h1|_F), K-comp = |W_QK^h2 W_OV^h1|,
V-comp = |W_OV^h2 W_OV^h1| (same normalisation). Our weights act on row vectors (x @ W_V),
so here W_OV = W_V W_O (d_model, d_model) and W_QK = W_Q W_K^T (score = x_q W_QK x_k^T);
transposing the paper's products gives the same norms as

    Q-comp = |W_OV^h1 W_QK^h2|,  K-comp = |W_OV^h1 W_QK^h2 ^T|,  V-comp = |W_OV^h1 W_OV^h2|,

each over |W_OV^h1|_F |W^h2|_F, as TransformerLens's `all_composition_scores` computes them.
The norms between blocks (and their centring) are ignored; biases too. The baseline is the
same score for Gaussian factors of the same shapes (the score is scale-free), averaged.

OV copying score: the eigenvalues of the full OV circuit W_E W_V W_O W_U (d_vocab, d_vocab)
are, apart from zeros, those of W_O W_U W_E W_V (d_head, d_head). A copying head has them
positive; the score is the share of positive eigenvalue mass sum(relu(Re l)) / sum(|l|):
1 for a head that maps each token onto itself, 0 for one that suppresses it.
"""

from __future__ import annotations

import torch

from ..lm.model import model_device

SCORES = ("previous_token", "current_token", "start_token", "duplicate_token", "induction",
          "pivot", "distance", "entropy")
PIVOT_MARKS = (",", ".", '"')
COMPOSITIONS = ("q", "k", "v")


def repeated_random_tokens(n_seqs: int, half_len: int, vocab: int, *, seed: int,
                           start_id: int | None = None) -> torch.Tensor:
    """(n_seqs, [1 +] 2 half_len) int64: [start_id] + r + r, r uniform over the vocabulary
    (without `start_id`), seeded. The second half is predictable only by induction."""
    gen = torch.Generator().manual_seed(seed)
    n_choices = vocab - (start_id is not None)
    r = torch.randint(0, n_choices, (n_seqs, half_len), generator=gen)
    if start_id is not None:
        r = r + (r >= start_id).long()  # skip start_id
    parts = [r, r]
    if start_id is not None:
        parts.insert(0, torch.full((n_seqs, 1), start_id, dtype=torch.long))
    return torch.cat(parts, dim=1)


def pivot_ids(tokenizer, vocab_size: int) -> list[int]:
    """The ids whose text holds a comma, full stop or quote mark (`,` `.` `"` `."` ...)."""
    return [i for i in range(vocab_size) if any(m in tokenizer.decode([i]) for m in PIVOT_MARKS)]


def _latest(is_mark: torch.Tensor) -> torch.Tensor:
    """is_mark (batch, pos) bool -> (batch, q, k) bool: k is the latest mark at or before q."""
    pos = is_mark.shape[1]
    index = torch.arange(pos, device=is_mark.device).expand_as(is_mark)
    last = torch.where(is_mark, index, -1).cummax(dim=1).values  # (batch, q): -1 if none yet
    return index[:, None, :] == last[:, :, None]


def key_masks(tokens: torch.Tensor, start_id: int | None = None,
              pivot_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """tokens (batch, pos) -> {score: bool (batch, q, k)}, True at the keys each
    mass score counts (see the module docstring); "pivot" only with `pivot_ids`."""
    batch, pos = tokens.shape
    q = torch.arange(pos, device=tokens.device).view(-1, 1)
    k = torch.arange(pos, device=tokens.device).view(1, -1)
    before = (k < q).expand(batch, pos, pos)  # strictly earlier keys
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, q, k]: t[q] == t[k]
    # induction: t[k-1] == t[q], i.e. `same` shifted one key to the right, 1 <= k <= q
    after_copy = torch.zeros_like(same)
    after_copy[:, :, 1:] = same[:, :, :-1] & (k[:, :-1] < q)
    if start_id is None:
        start = (k == 0) & (q >= 1)
    else:
        start = (tokens[:, None, :] == start_id) & before
    masks = {
        "previous_token": (k == q - 1).expand(batch, pos, pos),
        "current_token": ((k == q) & (q >= 1)).expand(batch, pos, pos),
        "start_token": start.expand(batch, pos, pos),
        "duplicate_token": same & before,
        "induction": after_copy,
    }
    if pivot_ids is not None:
        marks = torch.isin(tokens, torch.as_tensor(pivot_ids, dtype=tokens.dtype, device=tokens.device))
        masks["pivot"] = _latest(marks)
    return masks


def pattern_scores(pattern: torch.Tensor, tokens: torch.Tensor, start_id: int | None = None,
                   pivot_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """One layer: pattern (batch, n_heads, q, k), rows summing to 1, and tokens (batch, pos)
    -> {score: (n_heads,)}. A mass score with no query that has a target is NaN, and so is
    "pivot" without `pivot_ids`."""
    pattern = pattern.float()
    out = {"pivot": torch.full(pattern.shape[1:2], torch.nan, device=pattern.device)}
    for name, mask in key_masks(tokens.to(pattern.device), start_id, pivot_ids).items():
        mass = (pattern * mask[:, None]).sum(-1)  # (batch, n_heads, q)
        has = mask.any(-1)[:, None].float()  # (batch, 1, q): queries with a target
        n = has.sum((0, 2))
        out[name] = (mass * has).sum((0, 2)) / n.where(n > 0, torch.nan)
    pos = pattern.shape[-1]
    back = (torch.arange(pos).view(-1, 1) - torch.arange(pos).view(1, -1)).clamp(min=0)
    out["distance"] = (pattern * back.to(pattern)).sum(-1).mean((0, 2))
    out["entropy"] = -torch.xlogy(pattern, pattern).sum(-1).mean((0, 2))
    return out


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """pattern (batch, n_heads, q, k) -> (n_heads,): the previous-token score alone."""
    tokens = torch.zeros(pattern.shape[0], pattern.shape[-1], dtype=torch.long)
    return pattern_scores(pattern, tokens)["previous_token"]


def induction_score(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """pattern (batch, n_heads, q, k), tokens (batch, pos) -> (n_heads,): the induction
    score alone."""
    return pattern_scores(pattern, tokens)["induction"]


def k_composition(w_ov: torch.Tensor, w_qk: torch.Tensor) -> float:
    """W_OV of the earlier head and W_QK of the later one, each (d_model, d_model) in
    row-vector form -> the K-composition score."""
    return float(composition_score(w_ov, w_qk.transpose(-2, -1)))


@torch.no_grad()
def _patterns(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention pattern (batch, n_heads, q, k) on tokens (batch, pos)."""
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"prompts of {tokens.shape[1]} tokens are longer than the model's "
                         f"n_ctx={model.cfg.n_ctx}: cut them to at most {model.cfg.n_ctx}")
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    device = model_device(model)
    _, cache = model.run_with_cache(tokens.to(device), names=names, stop_at_layer="auto")
    return [cache[n] for n in names]


@torch.no_grad()
def head_scores(model, tokens: torch.Tensor, *, start_id: int | None = None,
                pivot_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Every head's pattern scores on tokens (batch, pos), in one batched forward pass:
    {score: (n_layers, n_heads)} for each name in `SCORES`, on the CPU."""
    per_layer = [pattern_scores(p, tokens.to(p.device), start_id, pivot_ids) for p in _patterns(model, tokens)]
    return {s: torch.stack([layer[s] for layer in per_layer]).cpu() for s in SCORES}


DETECTOR_HEADS = {"previous_token_head": "previous_token", "duplicate_token_head": "duplicate_token",
                  "induction_head": "induction"}


@torch.no_grad()
def head_detector_scores(model, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens's `detect_head` scores ("mul" measure, nothing excluded), batched:
    {"previous_token_head" | "duplicate_token_head" | "induction_head": (n_layers, n_heads)},
    each the attention mass on the detection pattern divided by the mass of every query
    (the sequence length), averaged over the prompts of tokens (batch, pos)."""
    masks = key_masks(tokens)
    out = {name: [] for name in DETECTOR_HEADS}
    for pattern in _patterns(model, tokens):
        pattern = pattern.float()
        total = pattern.sum((-2, -1))  # (batch, n_heads): the number of queries
        for name, ours in DETECTOR_HEADS.items():
            if ours == "previous_token":  # the mask is the first subdiagonal: read it directly
                mass = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1)
            else:  # contract with the mask, without a (batch, heads, q, k) product in memory
                mass = torch.einsum("bhqk,bqk->bh", pattern, masks[ours].to(pattern))
            out[name].append((mass / total).mean(0))
    return {name: torch.stack(rows).cpu() for name, rows in out.items()}


def _circuits(model) -> tuple[torch.Tensor, torch.Tensor]:
    """W_OV = W_V W_O and W_QK = W_Q W_K^T, each (n_layers, n_heads, d_model, d_model)."""
    attn = [block.attn for block in model.blocks]
    ov = torch.stack([a.W_V @ a.W_O for a in attn]).detach().float()
    qk = torch.stack([a.W_Q @ a.W_K.transpose(-2, -1) for a in attn]).detach().float()
    return ov, qk


def composition_score(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """|left @ right|_F / (|left|_F |right|_F), broadcast over leading dimensions: how much
    of what `left` writes `right` reads (1 when aligned, about 1/sqrt(d) for random ones)."""
    norm = torch.linalg.matrix_norm
    return norm(left @ right) / (norm(left) * norm(right))


def composition_scores(model) -> dict[str, torch.Tensor]:
    """{"q", "k", "v": (n_layers, n_heads, n_layers, n_heads)}: entry [i, h1, j, h2] is how
    much head h2 of layer j reads (through its query, key or value) what head h1 of layer i
    writes; NaN where j <= i. Row-vector forms as in the module docstring."""
    ov, qk = _circuits(model)
    n_layers = ov.shape[0]
    left = ov[:, :, None, None]  # (i, h1, 1, 1, d, d) against (j, h2, d, d)
    scores = {"q": composition_score(left, qk), "k": composition_score(left, qk.transpose(-2, -1)), "v": composition_score(left, ov)}
    later = torch.arange(n_layers).view(1, 1, -1, 1) > torch.arange(n_layers).view(-1, 1, 1, 1)
    return {name: s.where(later, torch.nan) for name, s in scores.items()}


def composition_baseline(model, n_draws: int = 8, seed: int = 0) -> dict[str, float]:
    """{"q", "k", "v": the mean composition score of `n_draws` pairs of heads whose W_Q, W_K,
    W_V, W_O are standard Gaussian of the model's shapes}: what chance alignment looks like."""
    d_model, d_head = model.cfg.d_model, model.cfg.d_head
    gen = torch.Generator().manual_seed(seed)

    def low_rank(draws):  # (draws, d_model, d_head) @ (draws, d_head, d_model)
        return (torch.randn(draws, d_model, d_head, generator=gen)
                @ torch.randn(draws, d_head, d_model, generator=gen))

    ov1, ov2, qk2 = low_rank(n_draws), low_rank(n_draws), low_rank(n_draws)
    return {"q": composition_score(ov1, qk2).mean().item(),
            "k": composition_score(ov1, qk2.transpose(-2, -1)).mean().item(),
            "v": composition_score(ov1, ov2).mean().item()}


def ov_eigenvalues(model) -> torch.Tensor:
    """(n_layers, n_heads, d_head) complex: the eigenvalues of W_O W_U W_E W_V, which are the
    nonzero eigenvalues of each head's full OV circuit W_E W_V W_O W_U (d_vocab, d_vocab)."""
    W_E, W_U = model.W_E.detach().float(), model.W_U.detach().float()
    mats = [a.W_O.detach().float() @ (W_U @ (W_E @ a.W_V.detach().float()))
            for a in (block.attn for block in model.blocks)]
    return torch.linalg.eigvals(torch.stack(mats))  # stack: (n_layers, n_heads, d_head, d_head)


def copying_scores(model) -> torch.Tensor:
    """(n_layers, n_heads): the share of positive eigenvalue mass of each head's OV circuit,
    sum(relu(Re l)) / sum(|l|), in [0, 1] (NaN for a head whose circuit is zero)."""
    lam = ov_eigenvalues(model)
    total = lam.abs().sum(-1)
    return lam.real.clamp(min=0).sum(-1) / total.where(total > 0, torch.nan)


__all__ = ["SCORES", "COMPOSITIONS", "PIVOT_MARKS", "DETECTOR_HEADS", "repeated_random_tokens",
           "pivot_ids", "key_masks", "pattern_scores", "head_detector_scores",
           "head_scores", "previous_token_score", "induction_score", "k_composition", "composition_score", "composition_scores", "composition_baseline", "ov_eigenvalues",
           "copying_scores"]
