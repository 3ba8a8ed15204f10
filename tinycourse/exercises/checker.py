"""The exercise checker: a learner's function against the package's own, case by case.

An `Exercise` names the package function it is checked against (`reference`), builds its
`Case`s (seeded inputs, edge cases included) and lists `Hint`s: each a predicate on what
was observed on a failing case and the message to show when it holds. `check(name, fn)`
runs both functions on every case, each on its own deep copy of the inputs and from the
same random seeds, and compares the results (shapes and types first, then values):

- `fn` raises NotImplementedError (the stub as shipped): says so and returns the
  reference, so the notebook carries on;
- every case agrees: prints one line and returns `fn`;
- a case differs, or `fn` raises: raises `ExerciseFailed` naming the case, its inputs,
  expected against got, and the hints that explain what was seen (or where to look in
  the package when none does).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["EXERCISES", "Case", "Exercise", "ExerciseFailed", "Hint", "check", "compare_values",
           "describe", "register"]


@dataclass(frozen=True)
class Case:
    """One set of inputs, with a label that says what it tests ("ties", "empty input")."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Hint:
    """A likely mistake: `applies(case, expected, got)` says whether it explains a failure
    (`got` is the learner's exception when it raised), `message` what to do about it."""

    applies: Callable[[Case, object, object], bool]
    message: str


@dataclass(frozen=True)
class Exercise:
    """A function for the learner to write, checked against the package's `reference`."""

    name: str  # "01.byte_round_trip": notebook number + short name
    reference: Callable  # the package's own function, imported from the package
    cases: Callable[[], list[Case]]  # builds the cases (called under a fixed seed)
    hints: tuple[Hint, ...] = ()
    rtol: float = 1e-5
    atol: float = 1e-6
    compare: Callable | None = None  # (expected, got) -> None if equal, else what differs


class ExerciseFailed(AssertionError):
    """The learner's function disagreed with the reference (or raised) on a case."""


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add `exercise` to `EXERCISES` under its name; return it (usable as a statement)."""
    if not exercise.name or "." not in exercise.name:
        raise ValueError(f"exercise name {exercise.name!r} should read 'NN.short_name'")
    known = EXERCISES.get(exercise.name)
    if known is not None and _qualname(known.reference) != _qualname(exercise.reference):
        raise ValueError(f"exercise {exercise.name!r} is already registered, checked against "
                         f"{_qualname(known.reference)}")
    EXERCISES[exercise.name] = exercise
    return exercise


def check(name: str, learner_fn: Callable) -> Callable:
    """Check `learner_fn` against exercise `name`'s reference on all its cases.

    Returns `learner_fn` when it agrees everywhere, the reference when it raises
    NotImplementedError (not attempted yet); raises `ExerciseFailed` otherwise.
    """
    exercise = _lookup(name)
    with _seeded(0):
        cases = list(exercise.cases())
    if not cases:
        raise ValueError(f"exercise {name!r} has no cases")
    compare = exercise.compare or (
        lambda expected, got: compare_values(expected, got, exercise.rtol, exercise.atol))
    for index, case in enumerate(cases):
        with _seeded(index):
            expected = exercise.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        args, kwargs = copy.deepcopy(case.args), copy.deepcopy(case.kwargs)
        try:
            with _seeded(index):
                got = learner_fn(*args, **kwargs)
        except NotImplementedError:
            print(f"{name}: not attempted yet: using the reference, the notebook carries on")
            return exercise.reference
        except Exception as error:  # noqa: BLE001 - any mistake of the learner's is reported
            raise ExerciseFailed(_raised_message(exercise, case, expected, error)) from None
        difference = compare(expected, got)
        if difference is not None:
            mutated = not _same_inputs(case, args, kwargs)
            raise ExerciseFailed(_failure_message(exercise, case, expected, got, difference,
                                                  mutated))
    labels = ", ".join(case.label for case in cases)
    print(f"{name}: correct on {len(cases)} cases ({labels})")
    return learner_fn


# --- comparing ---------------------------------------------------------------------------

def compare_values(expected: object, got: object, rtol: float = 1e-5, atol: float = 1e-6,
                   where: str = "") -> str | None:
    """None if `got` matches `expected`, else a few lines saying what differs, shapes and
    types first: tensors and arrays (shape, kind of dtype, then values within rtol/atol),
    numbers, strings, None, sequences (lists and tuples alike) and dicts, recursively."""
    at = f" at {where}" if where else ""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        return _compare_arrays(expected, got, rtol, atol, at)
    if expected is None:
        return None if got is None else f"type differs{at}: expected None, got {_kind(got)}"
    if isinstance(expected, (bool, np.bool_)):
        if not isinstance(got, (bool, np.bool_)):
            return f"type differs{at}: expected a bool, got {_kind(got)}"
        return None if bool(got) == bool(expected) else (
            f"value differs{at}: expected {expected}, got {got}")
    if isinstance(expected, (int, float, np.integer, np.floating)):
        if isinstance(got, (bool, np.bool_)) or not isinstance(
                got, (int, float, np.integer, np.floating)):
            return (f"type differs{at}: expected a number ({type(expected).__name__}), "
                    f"got {_kind(got)}")
        if isinstance(expected, (int, np.integer)) and isinstance(got, (int, np.integer)):
            same = int(expected) == int(got)
        else:
            same = math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol) or (
                math.isnan(float(got)) and math.isnan(float(expected)))
        return None if same else f"value differs{at}: expected {expected!r}, got {got!r}"
    if isinstance(expected, str):
        if not isinstance(got, str):
            return f"type differs{at}: expected a str, got {_kind(got)}"
        if got == expected:
            return None
        i = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b),
                 min(len(expected), len(got)))
        return (f"strings differ{at} from character {i}: expected {expected[i:i + 30]!r}, "
                f"got {got[i:i + 30]!r}")
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"type differs{at}: expected a dict, got {_kind(got)}"
        missing, extra = set(expected) - set(got), set(got) - set(expected)
        if missing or extra:
            return (f"keys differ{at}: missing {sorted(map(repr, missing))}, "
                    f"unexpected {sorted(map(repr, extra))}")
        for key in expected:
            diff = compare_values(expected[key], got[key], rtol, atol, f"{where}[{key!r}]")
            if diff:
                return diff
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return (f"type differs{at}: expected a {type(expected).__name__}, got {_kind(got)}")
        if len(got) != len(expected):
            return f"length differs{at}: expected {len(expected)}, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            diff = compare_values(e, g, rtol, atol, f"{where}[{i}]")
            if diff:
                return diff
        return None
    try:
        same = bool(expected == got)
    except Exception:  # noqa: BLE001
        same = False
    return None if same else f"value differs{at}: expected {_short(expected)}, got {_short(got)}"


def _dtype_kind(dtype) -> str:
    if isinstance(dtype, torch.dtype):
        if dtype == torch.bool:
            return "bool"
        if dtype.is_floating_point:
            return "floating"
        return "complex" if dtype.is_complex else "integer"
    kind = np.dtype(dtype).kind
    return {"b": "bool", "f": "floating", "c": "complex", "i": "integer", "u": "integer"}.get(
        kind, str(dtype))


def _compare_arrays(expected, got, rtol: float, atol: float, at: str) -> str | None:
    wanted = type(expected)
    if not isinstance(got, wanted):
        name = "torch.Tensor" if wanted is torch.Tensor else "numpy.ndarray"
        return f"type differs{at}: expected a {name}, got {_kind(got)}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape differs{at}: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if _dtype_kind(got.dtype) != _dtype_kind(expected.dtype):
        return (f"dtype differs{at}: expected {_dtype_kind(expected.dtype)} ({expected.dtype}), "
                f"got {_dtype_kind(got.dtype)} ({got.dtype})")
    e = torch.as_tensor(np.asarray(expected)) if isinstance(expected, np.ndarray) else expected
    g = torch.as_tensor(np.asarray(got)) if isinstance(got, np.ndarray) else got
    e, g = e.detach().cpu(), g.detach().cpu()
    if _dtype_kind(e.dtype) in ("floating", "complex"):
        e, g = e.double(), g.double()
        ok = torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = g == e
    if bool(ok.all()):
        return None
    if e.ndim == 0:
        return f"value differs{at}: expected {e.item()!r}, got {g.item()!r}"
    bad = (~ok).nonzero()
    first = tuple(bad[0].tolist())
    lines = [(f"values differ{at} in {len(bad)} of {ok.numel()} entries; first at index "
              f"{list(first)}: expected {e[first].item()!r}, got {g[first].item()!r}")]
    for index in bad[1:4].tolist():
        lines.append(f"  at {index}: expected {e[tuple(index)].item()!r}, "
                     f"got {g[tuple(index)].item()!r}")
    return "\n".join(lines)


# --- describing --------------------------------------------------------------------------

def describe(value: object, limit: int = 160) -> str:
    """A short readable form of `value`: tensors and arrays by shape and dtype (the values
    too when small), dataclasses by the fields that differ from their defaults."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        kind = "tensor" if isinstance(value, torch.Tensor) else "array"
        head = f"{kind}(shape={tuple(value.shape)}, dtype={value.dtype})"
        size = value.size if isinstance(value, np.ndarray) else value.numel()
        return f"{head} {_short(value.tolist(), limit)}" if size <= 36 else head
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shown = []
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if current != default:
                shown.append(f"{f.name}={current!r}")
        text = f"{type(value).__name__}({', '.join(shown)})"
        return text if len(text) <= limit else text[: limit - 4] + " ..."
    return _short(value, limit)


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _kind(value: object) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return describe(value, 80)
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    if value is None:
        return "None"
    return f"a {type(value).__name__} ({_short(value, 60)})"


def _inputs(case: Case) -> str:
    parts = [describe(a) for a in case.args]
    parts += [f"{k}={describe(v)}" for k, v in case.kwargs.items()]
    return ", ".join(parts)


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _hints(exercise: Exercise, case: Case, expected: object, got: object) -> list[str]:
    found = []
    for hint in exercise.hints:
        try:
            applies = bool(hint.applies(case, expected, got))
        except Exception:  # noqa: BLE001 - a predicate that cannot read `got` does not apply
            applies = False
        if applies:
            found.append(hint.message)
    return found


def _hint_lines(exercise: Exercise, case: Case, expected: object, got: object) -> list[str]:
    hints = _hints(exercise, case, expected, got)
    if hints:
        return [f"hint: {message}" for message in hints]
    return [f"compare with the reference: `{_qualname(exercise.reference)}`"]


def _failure_message(exercise: Exercise, case: Case, expected: object, got: object,
                     difference: str, mutated: bool) -> str:
    lines = [f"{exercise.name}: wrong on case {case.label!r}",
             f"  inputs:   {_inputs(case)}",
             *(f"  {line}" for line in difference.splitlines()),
             f"  expected: {describe(expected)}",
             f"  got:      {describe(got)}"]
    if mutated:
        lines.append("  note: your function changed its inputs in place")
    return "\n".join(lines + _hint_lines(exercise, case, expected, got))


def _raised_message(exercise: Exercise, case: Case, expected: object, error: Exception) -> str:
    frames = traceback.extract_tb(error.__traceback__)[1:]  # drop the checker's own frame
    summary = "".join(traceback.format_list(frames[-4:])).rstrip()
    lines = [f"{exercise.name}: raised {type(error).__name__} on case {case.label!r}: {error}",
             f"  inputs:   {_inputs(case)}",
             f"  expected: {describe(expected)}",
             "  traceback (most recent call last):", summary]
    return "\n".join(lines + _hint_lines(exercise, case, expected, error))


def _same_inputs(case: Case, args: tuple, kwargs: dict) -> bool:
    try:
        return compare_values(list(case.args), list(args), 0, 0) is None and compare_values(
            dict(case.kwargs), dict(kwargs), 0, 0) is None
    except Exception:  # noqa: BLE001
        return True


def _lookup(name: str) -> Exercise:
    if name in EXERCISES:
        return EXERCISES[name]
    close = difflib.get_close_matches(name, EXERCISES, n=3)
    raise KeyError(f"no exercise {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                                               else f"; known: {', '.join(sorted(EXERCISES))}"))


class _seeded:
    """Seed Python, NumPy and torch for one call, and put the caller's states back after."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        python, numpy, torch_state = self.states
        random.setstate(python)
        np.random.set_state(numpy)
        torch.random.set_rng_state(torch_state)
        return False


def sequence_of(value: object, kind: type | tuple[type, ...]) -> bool:
    """Whether `value` is a list or tuple whose items are all `kind` (for hints)."""
    return isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(v, kind) for v in value)
