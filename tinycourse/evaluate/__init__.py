"""Dictionaries -> figures: how good an SAE or transcoder is.

In: an LM, an SAE and held-out tokens. Out: metrics (MSE, FVE, L0, dead and dense
latents, spliced CE loss recovered, KL), the sweep's Pareto rows, and on storyworld the
recovery of the generator's labelled variables; and the replacement model, every MLP's
transcoder spliced in at once (`replacement`). Exports `evaluate`,
`evaluate_with_density`, `sweep_rows`, `pareto_front`, `ground_truth_recovery`,
`evaluate_replacement`.
"""

from .groundtruth import ground_truth_recovery
from .metrics import evaluate, evaluate_with_density, fit_baselines, pareto_front, sweep_rows
from .replacement import evaluate_replacement

__all__ = ["evaluate", "evaluate_with_density", "fit_baselines", "pareto_front", "sweep_rows",
           "ground_truth_recovery", "evaluate_replacement"]
