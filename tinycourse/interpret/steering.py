"""Steering: push one SAE latent, or pin it, at every position while the model generates.

SAELens's steering tutorial adds the steering vector at the prompt's positions only, so
the tokens the model goes on to write are never steered. Here the hook stays attached for
the whole of `generate`: the prompt's forward pass steers every prompt position (so the
keys and values the KV cache keeps are steered ones), and each cached step steers the one
new position it computes. A full forward over the finished sequence under the same hook
gives the same logits as the cached steps, and past n_ctx, where `generate` recomputes the
sliding window, every position of the window is steered again. (The tests check all three.)

    with steer(model, sae, latent=7, mode="add", value=8.0):
        ids = generate(model, prompt, 40, seed=0)

The hook sits where the dictionary writes: `hook_in` for an SAE, `hook_out` for a
transcoder (whose latents are read from `hook_in` at the same positions). With W_dec[i]
the latent's decoder row, the activation x (batch, pos, d_out) becomes

    add     x + value * W_dec[i]
    clamp   decode(f with f_i := value) + skip + (x - sae(x))
          = x + (value - f_i(x)) * W_dec[i]

Clamp is the SAE's output with latent i set to `value`, plus the SAE's error term, so
whatever the SAE fails to reconstruct is kept. The two lines are equal because decode is
affine in the latents and a transcoder's skip path depends on the input only; the second
is what runs (one encode, no decode), and clamping at f_i(x) returns x up to rounding.

Units: `value` is a latent activation in the SAE's own units, and latent i contributes
value * W_dec[i] / output_scale to the raw activation. `load_sae` folds the scales
(output_scale = 1), so there W_dec rows are in raw units and `value` is exactly the
latent's activation as the loaded SAE reports it.

Effect and cost. `steering_sweep` runs the same prompts, with the same seeds, at each
strength and measures two things: the effect, the share of the *generated* tokens that
are concept tokens (say a storyworld place's words: `place_words`, `concept_token_ids`),
and the cost, the mean next-token loss on held-out text under the same steering. A latent
that steers well raises the first a lot before the second climbs. `latents_boosting` picks
candidate latents: those whose decoder row, through the unembedding, most raises the
concept tokens' logits.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from ..corpus.storyworld import PLACES
from ..lm.model import GPT, generate, model_device, unwrap
from ..sae.model import SparseAutoencoder
from .logits import direct_logit_attribution

HELDOUT_BATCH = 32  # held-out rows per forward pass: bounds the logits' memory

MODES = ("add", "clamp")


def steering_hook(sae: SparseAutoencoder) -> str:
    """The hook point a dictionary writes to, where steering acts: hook_out for a
    transcoder, hook_in for an SAE."""
    return sae.cfg.hook_out if sae.is_transcoder else sae.cfg.hook_in


def latent_activation(sae: SparseAutoencoder, x: torch.Tensor, latent: int) -> torch.Tensor:
    """Latent `latent` of raw activations x (..., d_in) -> (...), in the SAE's units."""
    # the whole encode, not one column: topk/batchtopk decide by comparing all latents
    return sae.encode(x.to(sae.W_enc.dtype) * sae.input_scale)[..., latent]


@contextmanager
def steer(model: GPT, sae: SparseAutoencoder, latent: int, *, mode: str = "add",
          value: float) -> Iterator[None]:
    """For the `with` block, steer `latent` at every position of every forward pass of
    `model` (see the module docstring for `mode`). Inputs are checked before any hook is
    attached, and the hooks are removed on exit, exceptions included."""
    model = unwrap(model)
    latent = _check(model, sae, latent, mode)
    # (d_out,): the latent's contribution per unit of activation, in raw units
    direction = (sae.W_dec[latent] / sae.output_scale).detach()
    read_in = {}  # a transcoder's f_i, read at hook_in and used at hook_out of one pass

    def read(x: torch.Tensor, hook) -> None:
        read_in["f"] = latent_activation(sae, x, latent)

    def write(x: torch.Tensor, hook) -> torch.Tensor:
        if x.shape[-1] != direction.shape[0]:
            raise ValueError(f"{hook.name} has width {x.shape[-1]} but the SAE writes "
                             f"d_out={direction.shape[0]}: use the SAE trained on this model")
        if mode == "add":
            return x + (value * direction).to(x.dtype)
        f = read_in.pop("f") if sae.is_transcoder else latent_activation(sae, x, latent)
        return x + ((value - f)[..., None] * direction).to(x.dtype)  # (batch, pos, d_out)

    hooks = [(steering_hook(sae), write)]
    if sae.is_transcoder and mode == "clamp":
        hooks.insert(0, (sae.cfg.hook_in, read))
    with model.hooks(hooks):
        yield


def _check(model: GPT, sae: SparseAutoencoder, latent: int, mode: str) -> int:
    """Raise a one-line ValueError for a bad mode, latent or hook; return the latent."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        latent = operator.index(latent)  # ints, numpy ints, 0-d integer tensors
    except TypeError:
        latent = None
    if latent is None or not 0 <= latent < sae.d_sae:
        raise ValueError(f"latent must be an int in 0..{sae.d_sae - 1} (the SAE's d_sae "
                         f"latents), got {latent!r}")
    points = list(model.hook_points)
    needed = [sae.cfg.hook_in, steering_hook(sae)]
    for name in needed:
        if name not in points:
            raise ValueError(f"the model has no hook point {name!r}, which the SAE was "
                             f"trained on: pass the model it was trained on "
                             f"(model.hook_points lists them)")
    if sae.is_transcoder and points.index(needed[0]) > points.index(needed[1]):
        raise ValueError(f"the transcoder reads {needed[0]!r} after it writes {needed[1]!r} "
                         f"in the forward pass: check its cfg.hook_in and hook_out")
    if next(sae.parameters()).device != model_device(model):
        raise ValueError(f"the SAE is on {next(sae.parameters()).device} but the model on "
                         f"{model_device(model)}: move it with sae.to(...)")
    return latent


def steered_generations(model: GPT, sae: SparseAutoencoder, latent: int,
                        strengths: Sequence[float], prompt_ids: Sequence[int], *,
                        max_new_tokens: int, seed: int, mode: str = "add",
                        **sampling) -> list[list[int]]:
    """One generation per strength, all from the same prompt and `seed`, so they differ
    only by the steering: a side-by-side row per strength, prompt + continuation.

    prompt_ids: one prompt (list of ints). `sampling`: `generate`'s temperature, top_k,
    stop_id. In add mode strength 0 is the unsteered generation exactly (x + 0 is x);
    in clamp mode 0 ablates the latent.
    """
    prompt = [int(t) for t in prompt_ids]
    rows = []
    for strength in strengths:
        with steer(model, sae, latent, mode=mode, value=float(strength)):
            rows.append(generate(model, prompt, max_new_tokens, seed=seed, **sampling))
    return rows


# --- what to steer toward: concept tokens ------------------------------------------------

def place_words(place: str) -> list[str]:
    """A storyworld place's related words (its name included), sorted: read from
    `storyworld.PLACES`, where the stories draw them from, so the lists never drift apart."""
    if place not in PLACES:
        raise ValueError(f"unknown place {place!r}: storyworld's places are {', '.join(PLACES)}")
    return sorted(PLACES[place].words)


def concept_token_ids(tokenizer, words: Iterable[str], *, multi_token: str = "skip") -> list[int]:
    """The token ids `words` are written as, each word encoded alone and after a space
    ("sand" and " sand"), sorted and without repeats.

    A word that encodes to several tokens ("castle" -> " c" "ast" "le") is left out in that
    form by default (`multi_token="skip"`): its pieces, the first included, also begin or
    end many other words (" c" starts " cat" and " cake"), so counting them would count
    those words too. `multi_token="first"` keeps its first token instead, for a tokenizer
    whose first pieces are themselves word-like. Raises if no word gives an id.
    """
    if multi_token not in ("skip", "first"):
        raise ValueError(f"multi_token must be 'skip' or 'first', got {multi_token!r}")
    words = [words] if isinstance(words, str) else list(words)
    ids = set()
    for word in words:
        for form in (word, " " + word):
            encoded = tokenizer.encode(form)
            if len(encoded) == 1 or (encoded and multi_token == "first"):
                ids.add(int(encoded[0]))
    if not ids:
        raise ValueError(f"none of {len(words)} words encodes to a single token: pass "
                         f"multi_token='first', or other words")
    return sorted(ids)


@torch.no_grad()
def latents_boosting(model: GPT, sae: SparseAutoencoder, token_ids: Sequence[int], *,
                     ln_scale: float, n: int = 10,
                     against: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The `n` latents whose decoder rows most raise `token_ids`' logits on the direct path
    (`logits.direct_logit_attribution`, norm scale frozen at `ln_scale`, e.g. the features
    scan's): ids (n,) int64 and scores (n,) float32, best first.

    score[i] = mean over token_ids of effect[i, t] - mean over `against` of effect[i, t],
    logits per unit of activation. Something is subtracted because softmax ignores a shift
    of every logit: a latent raising all tokens alike boosts none of them. `against` is
    the whole vocabulary by default; other concepts' tokens (say the other places' words)
    ask instead for latents that prefer this concept to those.
    """
    effects = direct_logit_attribution(unwrap(model), sae, ln_scale)  # (d_sae, d_vocab)
    ids = _token_ids(token_ids, effects.shape[1], "token_ids")
    if not 1 <= n <= sae.d_sae:
        raise ValueError(f"n must be in 1..{sae.d_sae} (the SAE's latents), got {n}")
    base = effects if against is None else effects[:, _token_ids(against, effects.shape[1], "against")]
    scores = effects[:, ids].mean(1) - base.mean(1)  # (d_sae,)
    top = scores.topk(n)
    return top.indices.cpu(), top.values.float().cpu()


# --- the sweep: effect and cost at each strength ------------------------------------------

@torch.no_grad()
def heldout_loss(model: GPT, tokens: Tensor) -> float:
    """Mean next-token cross-entropy (nats) of `model` as it is (hooks included, so under
    any `steer` block around the call) on tokens (batch, L) int64, 2 <= L <= n_ctx + 1
    (evaluate's windows of n_ctx + 1): every position but the last predicts the next one."""
    model = unwrap(model)
    device, total, count = model_device(model), 0.0, 0
    for a in range(0, tokens.shape[0], HELDOUT_BATCH):
        rows = tokens[a:a + HELDOUT_BATCH].to(device)
        logits = model(rows[:, :-1]).float()  # (b, n_ctx - 1, d_vocab)
        total += float(F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum"))
        count += rows[:, 1:].numel()
    return total / count


def steering_sweep(model: GPT, sae: SparseAutoencoder, latent: int, strengths: Sequence[float],
                   prompts: Sequence[Sequence[int]], concept_ids: Iterable[int], heldout: Tensor,
                   *, max_new_tokens: int, seed: int, mode: str = "add",
                   **sampling) -> list[dict]:
    """Effect and cost of steering `latent` at each strength: one row (a dict) per strength.

    prompts: token lists (start token included, if the model's stories begin with one);
    prompt j is always sampled with seed `seed + j`, so across strengths its generations
    differ only by the steering. concept_ids: the token ids that count as the concept
    (`concept_token_ids`). heldout (batch, L) int64: text for the cost (`heldout_loss`). `sampling`:
    `generate`'s temperature, top_k, stop_id.

    Each row: strength; concept_share, the concept tokens among the generated tokens
    (prompt tokens never count; a stop token the model wrote does), pooled over prompts,
    with the counts concept_tokens and generated_tokens; heldout_loss, the mean
    next-token loss on `heldout` under the steering; share_factor (concept_share over the
    unsteered one; None if that is 0) and loss_increase (over the unsteered loss), against
    the model with no steering at all, measured once here (in add mode the same as
    strength 0; in clamp mode 0 is not "no steering" but the latent ablated); and
    generations, prompt + continuation per prompt.
    """
    model = unwrap(model)
    latent = _check(model, sae, latent, mode)
    strengths = _strengths(strengths)
    prompts = _prompts(prompts, model.cfg.d_vocab)
    concept = set(_token_ids(concept_ids, model.cfg.d_vocab, "concept_ids"))
    heldout = _heldout(heldout, model.cfg)
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")

    def measure(strength: float | None) -> dict:
        rows = [generate(model, p, max_new_tokens, seed=seed + j, **sampling)
                for j, p in enumerate(prompts)]
        written = [t for p, row in zip(prompts, rows) for t in row[len(p):]]
        hits = sum(t in concept for t in written)
        return {"strength": strength, "concept_share": hits / max(len(written), 1),
                "concept_tokens": hits, "generated_tokens": len(written),
                "heldout_loss": heldout_loss(model, heldout), "generations": rows}

    base = measure(None)
    table = []
    for strength in strengths:
        with steer(model, sae, latent, mode=mode, value=strength):
            row = measure(strength)
        share = base["concept_share"]
        row["share_factor"] = row["concept_share"] / share if share > 0 else None
        row["loss_increase"] = row["heldout_loss"] - base["heldout_loss"]
        table.append(row)
    return table


def _token_ids(ids: Iterable[int], d_vocab: int, what: str) -> list[int]:
    """Sorted distinct ids, each checked to be an int in the vocabulary."""
    try:
        out = sorted({operator.index(t) for t in ids})
    except TypeError:
        raise ValueError(f"{what} must be token ids (ints), e.g. from concept_token_ids") from None
    if not out or out[0] < 0 or out[-1] >= d_vocab:
        raise ValueError(f"{what} must be a non-empty set of ids in 0..{d_vocab - 1}, got "
                         f"{len(out)} ids" + (f" from {out[0]} to {out[-1]}" if out else ""))
    return out


def _strengths(strengths: Sequence[float]) -> list[float]:
    try:
        values = [float(s) for s in strengths]
    except (TypeError, ValueError):
        raise ValueError("strengths must be a list of numbers, e.g. [0, 4, 8, 16]") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"strengths must be a non-empty list of finite numbers, got {values}")
    return values


def _prompts(prompts: Sequence[Sequence[int]], d_vocab: int) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        prompts = prompts.tolist()
    if not prompts or not all(isinstance(p, (list, tuple)) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists "
                         "(one prompt is [[ids...]])")
    rows = [[int(t) for t in p] for p in prompts]
    if min(map(min, rows)) < 0 or max(map(max, rows)) >= d_vocab:
        raise ValueError(f"prompt ids must be in 0..{d_vocab - 1}")
    return rows


def _heldout(tokens: Tensor, cfg) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"heldout must be an int64 tensor (batch, L), got {shape}: e.g. "
                         f"torch.from_numpy(val[:n * L].astype('int64')).view(n, L)")
    if not 2 <= tokens.shape[1] <= cfg.n_ctx + 1 or tokens.shape[0] < 1:
        raise ValueError(f"heldout rows must hold 2..{cfg.n_ctx + 1} tokens (n_ctx + 1, the "
                         f"last only a target), got shape {tuple(tokens.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.d_vocab:
        raise ValueError(f"heldout ids must be in 0..{cfg.d_vocab - 1}")
    return tokens


__all__ = ["MODES", "concept_token_ids", "heldout_loss", "latent_activation", "latents_boosting",
           "place_words", "steer", "steered_generations", "steering_hook", "steering_sweep"]
