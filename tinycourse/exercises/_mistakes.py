"""What the exercise modules share to recognise a mistake: `like(got, value)`, "is what the
learner returned the value this mistake would have produced?", never raising (a hint that
does not apply is False, whatever the learner returned)."""

from __future__ import annotations

import numpy as np
import torch


def as_array(x) -> np.ndarray:
    """A tensor, array or number -> float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def like(got, value, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether `got` equals `value` (same shape, close), without ever raising."""
    try:
        if got is None or value is None:
            return got is None and value is None
        a, b = as_array(got), as_array(value)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    except Exception:  # noqa: BLE001 - whatever came back, this mistake does not explain it
        return False


def safely(fn):
    """`applies` functions built from `fn(case, expected, got) -> bool` that may raise on
    an odd `got` (a tuple, a wrong shape): an exception means "does not apply", and a
    division by zero in recomputing the mistake warns nothing."""
    def applies(case, expected, got) -> bool:
        try:
            with np.errstate(all="ignore"):  # a mistake may divide by zero: that's fine here
                return bool(fn(case, expected, got))
        except Exception:  # noqa: BLE001
            return False
    return applies
