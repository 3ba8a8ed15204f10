"""The notebooks' checked exercises (empty for now).

`check("name", learner_fn)` will run a learner's function against the package's reference
on seeded cases and name the likely mistake when they differ.
"""
