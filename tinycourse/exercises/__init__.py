"""The notebooks' checked exercises: write a function, get it checked against the package's.

A notebook poses an exercise as a stub that raises NotImplementedError, then runs

    my_fn = check("02.causal_mask", my_fn)

`check` runs the learner's function and the package's own (the reference) on seeded cases,
edge cases included. Correct everywhere: one line, and the learner's function comes back.
Still a stub: the reference comes back, so the notebook runs end to end either way. Wrong
on a case (or raising): `ExerciseFailed` names the case, its inputs, expected against got
(shapes and types first), and the hint for the mistake that explains what was seen.

Adding an exercise: in the module of its notebook (`tokenizer` for 01, `lm` for 02, ...),
with the reference imported from the package, never copied:

    from ..lm.train import lr_at
    from .checker import Case, Exercise, Hint, register

    register(Exercise(
        name="02.lr_at",                      # notebook number + short name
        reference=lr_at,
        cases=lambda: [Case("the first step", (0, CFG)), Case("the last step", (99, CFG))],
        hints=(Hint(lambda case, expected, got: got == 0.0,
                    "step 0 already trains: lr * (step + 1) / warmup_steps"),),
        rtol=1e-6, atol=1e-12,                # a tolerance that fits the quantity
    ))

A hint's `applies(case, expected, got)` sees the failing case and both results (`got` is
the exception when the learner's function raised), so it can recompute the mistake it
names and only speak when it explains what happened. A new module is imported below, so
that `import tinycourse.exercises` registers everything; its tests go in
`tests/exercises/test_<module>.py` (the reference passes, each hinted mistake fails with
its hint).
"""

from . import activations, capabilities, circuits, evaluate, features, heads, lm, sae, tokenizer  # noqa: F401
from .checker import EXERCISES, Case, Exercise, ExerciseFailed, Hint, check, register

__all__ = ["EXERCISES", "Case", "Exercise", "ExerciseFailed", "Hint", "check", "register"]
