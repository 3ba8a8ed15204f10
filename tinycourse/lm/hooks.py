"""Hook points: named places in the forward pass where activations can be read or changed.

Interpretability needs to see (and sometimes edit) what a model computes in the middle.
Following TransformerLens, the model calls a `HookPoint` on every activation worth a name::

    resid = self.hook_resid_pre(resid)      # identity unless a hook is attached

A hook point's name is its module path (`blocks.0.attn.hook_pattern`), found with
`named_modules()`, so names can never drift from the code. With no hook attached a hook
point is one list check and a return: training pays nothing for the instrumentation, and
no torch forward hook is ever left registered on the model.

`HookedModule` is a mixin for a model built from hook points. It adds

    model.hook_points                        {name: HookPoint}
    with model.hooks([(name, fn), ...]):     fn(activation, hook) -> replacement or None
    logits, cache = model.run_with_cache(tokens, names=[...])

Hooks are attached for the duration of a `with` block and removed on exit, even after an
exception, so a notebook cell that fails never leaves a stray hook behind.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Union

import torch
from torch import nn

# fn(activation, hook) -> a replacement activation, or None to leave it unchanged
HookFn = Callable[[torch.Tensor, "HookPoint"], Union[torch.Tensor, None]]
# which hook points: one name, or a predicate on names
NameFilter = Union[str, Callable[[str], bool]]


class HookPoint(nn.Module):
    """An identity module that hooks can read and replace the activation at.

    `name` is filled in by `HookedModule.hook_points` from the module path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None
        self._hooks: list[HookFn] = []

    @property
    def has_hooks(self) -> bool:
        return bool(self._hooks)

    def add_hook(self, fn: HookFn) -> Callable[[], None]:
        """Attach `fn`; return a function that detaches it again."""
        self._hooks.append(fn)

        def remove() -> None:
            # remove this very registration (the same fn may be attached twice)
            for i, attached in enumerate(self._hooks):
                if attached is fn:
                    del self._hooks[i]
                    return

        return remove

    def clear_hooks(self) -> None:
        self._hooks.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._hooks:
            return x
        for fn in list(self._hooks):
            out = fn(x, self)
            if out is not None:
                if out.shape != x.shape:
                    raise ValueError(
                        f"hook on {self.name} returned shape {tuple(out.shape)}, "
                        f"expected {tuple(x.shape)}"
                    )
                x = out
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class _StopForward(Exception):
    """Raised by a caching hook once everything asked for is cached: ends the forward."""


class HookedModule(nn.Module):
    """Mixin for models made of `HookPoint`s: lookup by name, temporary hooks, caching."""

    @property
    def hook_points(self) -> dict[str, HookPoint]:
        """All hook points by module path, in the order they were registered."""
        points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                points[name] = module
        return points

    def hook_names(self, names: NameFilter | Iterable[str] | None = None) -> list[str]:
        """Names of the hook points selected by `names` (None = all; see `run_with_cache`).

        An unknown name raises KeyError listing the closest valid names.
        """
        points = self.hook_points
        if names is None:
            return list(points)
        if callable(names):
            return [n for n in points if names(n)]
        if isinstance(names, str):
            names = [names]
        selected = list(dict.fromkeys(names))  # keep order, drop repeats
        for name in selected:
            if name not in points:
                raise KeyError(_unknown(name, points))
        return selected

    def reset_hooks(self) -> None:
        """Detach every hook (a safety net; `hooks()` already cleans up after itself)."""
        for point in self.hook_points.values():
            point.clear_hooks()

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NameFilter, HookFn]]) -> Iterator["HookedModule"]:
        """Attach `fn(activation, hook)` at each named hook point for the `with` block.

        A name may be a predicate (`lambda n: n.endswith("hook_z")`), attaching `fn` at
        every matching point. A hook may return a tensor of the same shape to replace
        the activation, or None to leave it. All names are checked before any hook is
        attached, and every hook is detached on exit, exceptions included.
        """
        points = self.hook_points
        resolved: list[tuple[HookPoint, HookFn]] = []
        for name, fn in fwd_hooks:
            if callable(name):
                resolved += [(p, fn) for n, p in points.items() if name(n)]
            elif name in points:
                resolved.append((points[name], fn))
            else:
                raise KeyError(_unknown(name, points))
        removers = []
        try:
            for point, fn in resolved:
                removers.append(point.add_hook(fn))
            yield self
        finally:
            for remove in reversed(removers):
                remove()

    @torch.no_grad()
    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: NameFilter | Iterable[str] | None = None,
        *,
        stop_at_layer: int | str | None = None,
        **forward_kwargs,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Run the model on `tokens` and return `(output, cache)`.

        `names` picks the activations to keep: None (all), a name, a list of names, or a
        predicate on names. Only those are stored (detached), so memory grows with what is
        asked for, not with the model. Runs without autograd: to take gradients through
        activations, attach your own hooks with `hooks()`.

        `stop_at_layer`:
          - None: the full forward pass; `output` is the logits.
          - "auto": stop as soon as the last requested activation is cached (layers after
            it are never computed); `output` is None if the pass was cut short.
          - an int k: passed to the model's forward, which runs blocks 0..k-1 only and
            returns the residual stream after them (as in TransformerLens).
        """
        selected = self.hook_names(names)
        points = self.hook_points
        cache: dict[str, torch.Tensor] = {}
        stop_when_full = stop_at_layer == "auto"

        def save(activation: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = activation.detach()
            if stop_when_full and len(cache) == len(selected):
                raise _StopForward

        if stop_at_layer is not None and not stop_when_full:
            if not isinstance(stop_at_layer, int):
                raise ValueError(f"stop_at_layer must be None, 'auto' or an int, got {stop_at_layer!r}")
            forward_kwargs["stop_at_layer"] = stop_at_layer
        with self.hooks([(name, save) for name in selected]):
            try:
                output = self(tokens, **forward_kwargs)
            except _StopForward:
                output = None
        # report in forward order, whatever order the names were asked in
        return output, {name: cache[name] for name in points if name in cache}


def _unknown(name: object, points: Iterable[str]) -> str:
    points = list(points)
    close = difflib.get_close_matches(str(name), points, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return f"no hook point named {name!r}{hint} (model.hook_points lists all {len(points)})"


__all__ = ["HookPoint", "HookedModule", "HookFn"]
