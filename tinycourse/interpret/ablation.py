"""Head ablations: what each attention head is for, measured by what breaks without it.

Ablating head h of layer l replaces its output z (`blocks.l.attn.hook_z[:, :, h]`) before
the output projection:

    zero   z = 0: the head says nothing
    mean   z = its mean over the clean run's positions: it says what it says on average,
           so only what depends on the context is removed (the gentler, usual choice)

and the next-token loss is measured again on groups of tokens, each a boolean mask over a
batch's predicted positions (`loss_groups`): every token, repeated names, pronouns and
closing quote marks (storyworld's exact labels), and the second copy of [start] + R + R
(what an induction head predicts). The table is the change in mean loss per head and
group, in nats: a head whose ablation costs +1.2 on repeated names and nothing elsewhere
is a name-copying head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..corpus.storyworld import Story
from ..lm.model import eval_mode, model_device
from .in_context import token_groups

MODES = ("zero", "mean")


@dataclass(frozen=True)
class LossGroups:
    """A batch and the predicted positions each group's loss averages over."""

    tokens: torch.Tensor  # (batch, pos) int64
    masks: dict[str, torch.Tensor]  # group -> (batch, pos - 1) bool; [b, j] is about tokens[b, j + 1]


def story_groups(tokenizer, stories: Sequence[Story], n_ctx: int) -> LossGroups:
    """Stories from their start token, padded to one length (at most n_ctx) with the start
    token; groups "all", "name_repeat", "pronoun", "closing_quote" over real tokens only."""
    rows, groups = [], []
    for story in stories:
        ids = [tokenizer.start_id] + list(tokenizer.encode(story.text))
        offsets = [(0, 0)] + [tuple(o) for o in tokenizer.offsets(story.text)]
        ids, offsets = ids[:n_ctx], offsets[:n_ctx]
        names = token_groups(story, offsets)
        # a closing quote mark: the token holding a quotation's last character
        ends = [s.end - 1 for s in story.spans if s.variable == "in_quote"]
        closing = [any(a <= e < b for e in ends) for a, b in offsets]
        rows.append(ids)
        groups.append((names, closing))
    length = max(map(len, rows))
    tokens = torch.full((len(rows), length), tokenizer.start_id, dtype=torch.long)
    masks = {g: torch.zeros(len(rows), length - 1, dtype=torch.bool)
             for g in ("all", "name_repeat", "pronoun", "closing_quote")}
    for b, (ids, (names, closing)) in enumerate(zip(rows, groups)):
        tokens[b, :len(ids)] = torch.tensor(ids)
        for j in range(1, len(ids)):  # target j is predicted at position j - 1
            masks["all"][b, j - 1] = True
            if names[j] in ("name_repeat", "pronoun"):
                masks[names[j]][b, j - 1] = True
            masks["closing_quote"][b, j - 1] = closing[j]
    return LossGroups(tokens, masks)


def induction_groups(tokens: torch.Tensor) -> LossGroups:
    """[start] + R + R (batch, 1 + 2L): group "second_copy", the second R after its first
    token (only copying predicts those)."""
    length = (tokens.shape[1] - 1) // 2
    mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
    mask[:, length + 1:] = True  # targets L+2 .. 2L
    return LossGroups(tokens, {"second_copy": mask})


def _z_hook(head: int, replacement: torch.Tensor | None):
    def hook(z: torch.Tensor, hook=None) -> torch.Tensor:  # z (batch, pos, n_heads, d_head)
        z = z.clone()
        z[:, :, head] = 0.0 if replacement is None else replacement.to(z)
        return z
    return hook


@torch.no_grad()
def group_losses(model, groups: LossGroups, hooks: Sequence = ()) -> dict[str, float]:
    """Mean next-token loss per group, with `hooks` (name, fn) applied."""
    device = model_device(model)
    tokens = groups.tokens.to(device)
    with model.hooks(hooks):
        logits = model(tokens[:, :-1])
    losses = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(),
                             reduction="none").view(tokens.shape[0], -1).cpu()
    return {g: float(losses[m].mean()) if m.any() else float("nan") for g, m in groups.masks.items()}


@torch.no_grad()
def mean_z(model, groups: LossGroups) -> list[torch.Tensor]:
    """Each layer's mean head output over the real positions of `groups`: (n_heads, d_head)."""
    names = [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]
    device = model_device(model)
    _, cache = model.run_with_cache(groups.tokens[:, :-1].to(device), names=names)
    real = groups.masks.get("all", torch.ones(groups.tokens.shape[0], groups.tokens.shape[1] - 1,
                                              dtype=torch.bool))
    return [cache[n][real.to(device)].mean(0).cpu() for n in names]


@torch.no_grad()
def ablation_table(model, batches: Sequence[LossGroups], mode: str = "mean") -> dict:
    """Every head ablated alone (`mode` zero or mean; the mean taken on the first batch):
    {"clean": {group: loss}, "delta": {group: (n_layers, n_heads) list of loss changes}}."""
    if mode not in MODES:
        raise ValueError(f"ablation mode {mode!r}: use one of {', '.join(MODES)}")
    with eval_mode(model):
        clean = {g: v for b in batches for g, v in group_losses(model, b).items()}
        means = mean_z(model, batches[0]) if mode == "mean" else None
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        delta = {g: [[0.0] * n_heads for _ in range(n_layers)] for g in clean}
        for layer in range(n_layers):
            for head in range(n_heads):
                hook = (f"blocks.{layer}.attn.hook_z",
                        _z_hook(head, None if means is None else means[layer][head]))
                for batch in batches:
                    for g, loss in group_losses(model, batch, [hook]).items():
                        delta[g][layer][head] = loss - clean[g]
    return {"mode": mode, "clean": clean, "delta": delta}


__all__ = ["MODES", "LossGroups", "story_groups", "induction_groups", "group_losses", "mean_z",
           "ablation_table"]
