"""The checker itself, on a toy exercise: fallback, failure messages, hints, copies, seeds."""

import random

import numpy as np
import pytest
import torch

from tinycourse import exercises
from tinycourse.exercises import (
    EXERCISES,
    Case,
    Exercise,
    ExerciseFailed,
    Hint,
    check,
    register,
)
from tinycourse.exercises.checker import compare_values

SEEN = []  # what the toy reference was called with


def running_total(xs):
    """The toy reference: prefix sums of a list."""
    SEEN.append(list(xs))
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


def _cases():
    return [Case("three numbers", ([1, 2, 3],)), Case("empty input", ([],)),
            Case("negatives", ([-1, -2, 4],))]


@pytest.fixture
def toy():
    exercise = register(Exercise(
        name="99.running_total", reference=running_total, cases=_cases,
        hints=(Hint(lambda case, expected, got: got == expected[1:], "you dropped the first sum"),
               Hint(lambda case, expected, got: isinstance(got, ZeroDivisionError),
                    "nothing to divide here"),
               Hint(lambda case, expected, got: got == [sum(case.args[0])] * len(expected),
                    "each entry is a *prefix* sum"))))
    SEEN.clear()
    yield exercise
    del EXERCISES["99.running_total"]


def _failure(name, fn):
    with pytest.raises(ExerciseFailed) as failure:
        check(name, fn)
    return str(failure.value)


def test_exercise_failed_is_an_assertion_error():
    assert issubclass(ExerciseFailed, AssertionError)


def test_a_stub_falls_back_to_the_reference(toy, capsys):
    def stub(xs):
        raise NotImplementedError
    assert check("99.running_total", stub) is running_total
    assert capsys.readouterr().out == (
        "99.running_total: not attempted yet: using the reference, the notebook carries on\n")


def test_a_correct_function_is_returned_with_one_line(toy, capsys):
    def mine(xs):
        return [sum(xs[: i + 1]) for i in range(len(xs))]
    assert check("99.running_total", mine) is mine
    assert capsys.readouterr().out == (
        "99.running_total: correct on 3 cases (three numbers, empty input, negatives)\n")


def test_a_wrong_function_names_the_case_expected_got_and_only_the_hint_that_applies(toy):
    message = _failure("99.running_total", lambda xs: running_total(xs)[1:])
    assert "case 'three numbers'" in message
    assert "length differs: expected 3, got 2" in message
    assert "expected: [1, 3, 6]" in message and "got:      [3, 6]" in message
    assert "hint: you dropped the first sum" in message
    assert "prefix" not in message and "divide" not in message
    assert "compare with the reference" not in message


def test_the_hint_is_chosen_from_the_failing_case(toy):
    message = _failure("99.running_total", lambda xs: [sum(xs)] * len(xs))
    assert "case 'three numbers'" in message
    assert "value differs at [0]: expected 1, got 6" in message
    assert "hint: each entry is a *prefix* sum" in message
    assert message.count("hint:") == 1


def test_without_an_applicable_hint_it_points_at_the_reference(toy):
    message = _failure("99.running_total", lambda xs: [x + 1 for x in running_total(xs)])
    assert "hint:" not in message
    assert f"compare with the reference: `{__name__}.running_total`" in message


def test_a_later_case_can_fail(toy):
    message = _failure("99.running_total", lambda xs: [abs(x) for x in running_total(xs)])
    assert "case 'negatives'" in message
    assert "value differs at [0]: expected -1, got 1" in message
    assert "expected: [-1, -3, 1]" in message


def test_an_exception_is_reported_with_the_case_and_a_traceback(toy):
    def crashes_on_empty(xs):
        return [xs[0]] + running_total(xs)[1:]
    message = _failure("99.running_total", crashes_on_empty)
    assert "raised IndexError on case 'empty input'" in message
    assert "in crashes_on_empty" in message and "return [xs[0]]" in message
    assert "compare with the reference" in message


def test_an_exception_can_have_its_hint(toy):
    message = _failure("99.running_total", lambda xs: [x / 0 for x in xs])
    assert "raised ZeroDivisionError" in message and "hint: nothing to divide here" in message


def test_a_hint_that_cannot_read_the_result_does_not_apply():
    register(Exercise("99.fragile", running_total, _cases,
                      hints=(Hint(lambda case, expected, got: got.shape == (3,), "never"),)))
    try:
        message = _failure("99.fragile", lambda xs: None)
    finally:
        del EXERCISES["99.fragile"]
    assert "type differs: expected a list, got None" in message
    assert "never" not in message and "compare with the reference" in message


def test_mutating_the_inputs_does_not_leak_into_the_reference_or_the_cases(toy):
    cases = _cases()

    def mutates(xs):
        out = running_total(list(xs))
        xs.clear()  # the learner's own copy
        xs.append(99)
        return out
    SEEN.clear()
    assert check("99.running_total", mutates) is mutates
    # the reference saw every case's real input, before and after the learner ran
    assert [s for s in SEEN if s != [99]] == [c.args[0] for c in cases for _ in range(2)]
    assert toy.cases() == cases


def test_a_wrong_function_that_mutated_its_inputs_is_told(toy):
    def wrong(xs):
        xs.reverse()
        return xs
    message = _failure("99.running_total", wrong)
    assert "changed its inputs in place" in message
    assert "inputs:   [1, 2, 3]" in message  # the inputs shown are the case's, not the mutated


def test_both_functions_see_the_same_randomness_and_the_caller_keeps_its_own():
    def noisy(n):
        return torch.rand(n) + np.random.rand() + random.random()
    register(Exercise("99.noisy", noisy, lambda: [Case("three", (3,)), Case("five", (5,))]))
    try:
        torch.manual_seed(123)
        before = torch.rand(2)
        torch.manual_seed(123)
        assert check("99.noisy", lambda n: torch.rand(n) + np.random.rand() + random.random())
        assert torch.equal(torch.rand(2), before)  # check() left the global state alone
    finally:
        del EXERCISES["99.noisy"]


def test_tensors_compare_shapes_then_dtypes_then_values():
    e = torch.arange(6.0).view(2, 3)
    assert compare_values(e, e.clone()) is None
    assert compare_values(e, e.double()) is None  # float32 vs float64: both floating
    assert "shape differs: expected (2, 3), got (3, 2)" in compare_values(e, e.T)
    assert "dtype differs" in compare_values(e, e.long())
    assert "expected a torch.Tensor" in compare_values(e, e.numpy())
    got = e.clone()
    got[1, 2] = 7.0
    diff = compare_values(e, got)
    assert "1 of 6 entries" in diff and "index [1, 2]: expected 5.0, got 7.0" in diff
    assert compare_values(e, e + 1e-7) is None  # within the tolerance
    assert compare_values(1.0, 1.0 + 1e-9) is None and compare_values(3, np.int64(3)) is None
    assert "expected a number" in compare_values(1.0, "1.0")
    assert "keys differ" in compare_values({"a": 1}, {"b": 1})
    assert compare_values((1, 2), [1, 2]) is None  # lists and tuples alike


def test_an_unknown_name_suggests_the_closest(toy):
    with pytest.raises(KeyError, match="99.running_total"):
        check("99.runing_total", running_total)


def test_a_name_cannot_be_taken_by_another_reference(toy):
    with pytest.raises(ValueError, match="already registered"):
        register(Exercise("99.running_total", sorted, _cases))


def test_every_exercise_checks_against_a_function_of_the_package():
    assert EXERCISES, "import tinycourse.exercises registers the notebooks' exercises"
    for name, exercise in EXERCISES.items():
        module = exercise.reference.__module__
        assert module.startswith("tinycourse.") and not module.startswith("tinycourse.exercises")
        assert name[:2].isdigit() and name[2] == "."
        assert getattr(__import__(module, fromlist=["x"]), exercise.reference.__name__) \
            is exercise.reference


def test_the_package_docstring_shows_how_to_add_one():
    assert "register(Exercise(" in exercises.__doc__ and "Hint(" in exercises.__doc__


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_reference_passes_its_own_check(name, capsys):
    reference = EXERCISES[name].reference
    assert check(name, reference) is reference
    assert f"{name}: correct on" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_unattempted_stub_falls_back_to_the_reference(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert check(name, stub) is EXERCISES[name].reference
    assert "not attempted yet: using the reference" in capsys.readouterr().out
