"""Trained LM and dictionaries -> understanding.

In: an LM (`lm`), its token shards (`corpus`) and an SAE or transcoder (`sae`). Out:
measurements of what the dictionary's latents do. So far: `steering` (push a latent at
every position, generated tokens included; side-by-side generations). Feature scans and
dashboards, the attention-head catalogue, transcoder circuits and capability suites land
here too; each may import `corpus`, `lm`, `sae` and `evaluate`, never the frame's
`rundir`, `pipeline`, `cli` or `report`.
Exports `steer`, `steered_generations`, `steering_hook`, `latent_activation`.
"""

from .steering import MODES, latent_activation, steer, steered_generations, steering_hook

__all__ = ["MODES", "latent_activation", "steer", "steered_generations", "steering_hook"]
