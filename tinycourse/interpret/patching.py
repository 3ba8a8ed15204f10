"""Activation patching: which activations carry the information a prediction needs.

Take a clean prompt and a corrupted one of the same length that differs where the answer
is decided: the indirect-object story with the names swapped, or a story whose repeated
name was replaced at its first mention. Run the corrupted prompt, but copy in one
activation from the clean run (one head's output at every position, or the residual
stream at one layer and position), and measure the logit difference between the right
answer and the wrong one at the last position. Then

    recovered = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)

is 1 where that activation alone carries what the clean run knew, and 0 where it carries
none of it (Meng et al. 2022's causal tracing; Wang et al. 2022's path patching starts
here). The means are over the batch of pairs, taken before the ratio, so a pair with a
tiny clean-corrupted gap cannot blow the figure up.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from ..corpus.storyworld import NAMES, gender_of, invented_name


def last_logit_diff(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """logits (batch, pos, d_vocab), answer and wrong token ids (batch,) -> (batch,):
    logit[answer] - logit[wrong] at the last position."""
    last = logits[:, -1].float()
    return last.gather(1, answer[:, None])[:, 0] - last.gather(1, wrong[:, None])[:, 0]


def _check(model, clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} prompts "
                         f"must have the same shape: pair prompts whose tokens line up")
    if clean.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"prompts of {clean.shape[1]} tokens exceed n_ctx={model.cfg.n_ctx}")


@torch.no_grad()
def _baseline(model, clean, corrupted, answer, wrong, names):
    clean_logits, cache = model.run_with_cache(clean, names=names)
    ld_clean = last_logit_diff(clean_logits, answer, wrong).mean()
    ld_corrupted = last_logit_diff(model(corrupted), answer, wrong).mean()
    return cache, ld_clean, ld_corrupted


def _recovered(ld: torch.Tensor, ld_clean: torch.Tensor, ld_corrupted: torch.Tensor) -> float:
    gap = ld_clean - ld_corrupted
    return float((ld - ld_corrupted) / gap) if gap.abs() > 1e-9 else float("nan")


@torch.no_grad()
def patch_heads(model, clean: torch.Tensor, corrupted: torch.Tensor, answer: torch.Tensor,
                wrong: torch.Tensor) -> dict:
    """Each head's output (hook_z, every position) patched from clean into corrupted:
    {"recovered": (n_layers, n_heads) list, "clean": LD, "corrupted": LD}."""
    _check(model, clean, corrupted)
    names = [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]
    cache, ld_clean, ld_corrupted = _baseline(model, clean, corrupted, answer, wrong, names)
    grid = []
    for layer, name in enumerate(names):
        row = []
        for head in range(model.cfg.n_heads):
            def hook(z, hook=None, head=head, name=name):
                z = z.clone()
                z[:, :, head] = cache[name][:, :, head]
                return z
            with model.hooks([(name, hook)]):
                ld = last_logit_diff(model(corrupted), answer, wrong).mean()
            row.append(_recovered(ld, ld_clean, ld_corrupted))
        grid.append(row)
    return {"recovered": grid, "clean": float(ld_clean), "corrupted": float(ld_corrupted)}


@torch.no_grad()
def patch_residual(model, clean: torch.Tensor, corrupted: torch.Tensor, answer: torch.Tensor,
                   wrong: torch.Tensor) -> dict:
    """The residual stream before each block (and after the last), one position at a time,
    patched from clean into corrupted: {"recovered": (n_layers + 1, pos) list, "hooks",
    "clean", "corrupted"}."""
    _check(model, clean, corrupted)
    n_layers = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
    cache, ld_clean, ld_corrupted = _baseline(model, clean, corrupted, answer, wrong, names)
    grid = []
    for name in names:
        row = []
        for pos in range(clean.shape[1]):
            def hook(resid, hook=None, pos=pos, name=name):
                resid = resid.clone()
                resid[:, pos] = cache[name][:, pos]
                return resid
            with model.hooks([(name, hook)]):
                ld = last_logit_diff(model(corrupted), answer, wrong).mean()
            row.append(_recovered(ld, ld_clean, ld_corrupted))
        grid.append(row)
    return {"recovered": grid, "hooks": names, "clean": float(ld_clean), "corrupted": float(ld_corrupted)}


IOI_TEMPLATE = "One day, {a} and {b} went to the park. Then {s} gave a ball to"


def ioi_pairs(tokenizer, names, n_pairs: int = 32, seed: int = 0):
    """Indirect-object prompt pairs (Wang et al. 2022's task, storyworld's words): clean
    "One day, A and B went to the park. Then B gave a ball to" (answer " A", wrong " B")
    and corrupted with the giver swapped ("... Then A gave a ball to"), where the answer
    flips. Only names that are one token after a space, so the pairs line up.
    Returns (clean, corrupted, answer, wrong) tensors, or None with fewer than two names."""
    import random

    single = [n for n in names if len(tokenizer.encode(" " + n)) == 1]
    if len(single) < 2:
        return None
    rng = random.Random(seed)
    clean, corrupted, answer, wrong = [], [], [], []
    for _ in range(n_pairs):
        a, b = rng.sample(single, 2)
        clean.append([tokenizer.start_id] + tokenizer.encode(IOI_TEMPLATE.format(a=a, b=b, s=b)))
        corrupted.append([tokenizer.start_id] + tokenizer.encode(IOI_TEMPLATE.format(a=a, b=b, s=a)))
        answer.append(tokenizer.encode(" " + a)[0])
        wrong.append(tokenizer.encode(" " + b)[0])
    if len({len(row) for row in clean + corrupted}) != 1:
        return None  # the template's words tokenized differently around some names
    return tuple(torch.tensor(x) for x in (clean, corrupted, answer, wrong))


# The prompt ends where the name is about to come back: the token before the repeat is the
# one before the first mention (" named"), so an induction head has a key to find.
REPEATED_NAME_TEMPLATE = "Once upon a time, there was a little {kind} named {name}. One day, the little {kind} named"
_KINDS = {c.name: c.kind for c in NAMES}


def storyworld_names(n_invented: int = 400, seed: int = 0) -> list[str]:
    """The children's names storyworld casts: the table's girls and boys, then `n_invented`
    invented ones (`invented_name`, the genders alternating), without repeats."""
    rng = random.Random(f"repeated-names:{seed}")
    names = [c.name for c in NAMES if c.kind in ("girl", "boy")]
    names += [invented_name(rng, ("female", "male")[i % 2]) for i in range(n_invented)]
    return list(dict.fromkeys(names))


def name_kind(name: str) -> str:
    """"girl", "boy", "dog" ...: the table's kind, else a child of the name's gender."""
    return _KINDS.get(name) or ("girl" if gender_of(name) == "female" else "boy")


def repeated_name_pairs(tokenizer, names=None, n_pairs: int = 32, seed: int = 0, *,
                        template: str = REPEATED_NAME_TEMPLATE, name_tokens: int | None = None):
    """Repeated-name prompt pairs: clean "Once upon a time, there was a little girl named
    Zeelotina. One day, the little girl named" (answer: the first token of " Zeelotina")
    and corrupted with the first mention replaced by another name of the same kind and
    token length ("... named Brakoma. ..."; wrong: its first token), so the pair differs
    only in the replaced name's tokens and every position lines up.

    `names` defaults to `storyworld_names()`; a name counts only where the prompt
    tokenizes as its pieces (nothing merges across the name's edges) and the name has a
    partner of its kind and length whose first token differs. All pairs share one layout
    (the tokens before, in and after the name), so positions align across the batch too:
    that of `name_tokens`-token names, or by default the layout with the most names.
    Returns (clean, corrupted) (n_pairs, pos) and (answer, wrong) (n_pairs,) tensors; no
    such pair is a one-line ValueError."""
    if template.count(" {name}") != 1:
        raise ValueError(f"template {template!r} must hold \" {{name}}\" once: where the name is first mentioned")
    names = storyworld_names() if names is None else list(dict.fromkeys(names))
    before, after = template.split(" {name}")
    # layout (tokens before, in, after the name) -> kind -> [(name, ids before, in, after)]
    layouts: dict = defaultdict(lambda: defaultdict(list))
    for name in names:
        kind = name_kind(name)
        head = [tokenizer.start_id] + list(tokenizer.encode(before.format(kind=kind)))
        ids, tail = list(tokenizer.encode(" " + name)), list(tokenizer.encode(after.format(kind=kind)))
        whole = [tokenizer.start_id] + list(tokenizer.encode(template.format(kind=kind, name=name)))
        if ids and whole == head + ids + tail:
            layouts[(len(head), len(ids), len(tail))][kind].append((name, head, ids, tail))

    def pairable(kinds: dict) -> list:
        # names with a partner of their kind whose first token differs: the answer flips
        return [(n, h, i, t, kind) for kind, group in kinds.items() for n, h, i, t in group
                if len({ids[0] for _, _, ids, _ in group}) > 1]

    candidates = {layout: pairable(kinds) for layout, kinds in layouts.items()
                  if name_tokens is None or layout[1] == name_tokens}
    candidates = {layout: c for layout, c in candidates.items() if c}
    if not candidates:
        length = f"{name_tokens}-token " if name_tokens is not None else ""
        raise ValueError(f"no two of the {len(names)} names are {length}names of one kind whose first tokens "
                         f"differ and that tokenize apart from the template: pass more names "
                         f"(storyworld_names(n_invented=...)){' or another name_tokens' if name_tokens else ''}")
    layout = max(candidates, key=lambda k: (len(candidates[k]), -k[1]))  # ties: the shorter name
    pool, kinds = candidates[layout], layouts[layout]
    rng = random.Random(seed)
    clean, corrupted, answer, wrong = [], [], [], []
    for _ in range(n_pairs):
        _, head, ids, tail, kind = rng.choice(pool)
        _, _, other, _ = rng.choice([x for x in kinds[kind] if x[2][0] != ids[0]])
        clean.append(head + ids + tail)
        corrupted.append(head + other + tail)
        answer.append(ids[0])
        wrong.append(other[0])
    return tuple(torch.tensor(x) for x in (clean, corrupted, answer, wrong))


__all__ = ["IOI_TEMPLATE", "REPEATED_NAME_TEMPLATE", "last_logit_diff", "patch_heads", "patch_residual",
           "ioi_pairs", "storyworld_names", "name_kind", "repeated_name_pairs"]
