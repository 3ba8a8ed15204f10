"""Trained LM and dictionaries -> understanding.

In: an LM (`lm`), its token shards (`corpus`) and an SAE or transcoder (`sae`). Out:
measurements of what the LM and the dictionary's latents do. So far: `in_context` (the
LM's loss on repeated names against first mentions, the [start] + R + R induction
probe), `formation` (head scores and abilities across the LM's snapshots), `features`
(one bounded-memory pass: each latent's top contexts, quantile
samples, activation histogram, density), `logits` (direct logit attribution of each
latent's decoder row), `steering` (push or pin a latent at every position, generated
tokens included) and `heads` (every head's attention scores, batched; Q/K/V composition
and OV copying from the weights). Dashboards, auto-labels, the attention-head catalogue,
transcoder circuits and capability suites land here too; each may import `corpus`, `lm`,
`sae` and `evaluate`, never the frame's `rundir`, `pipeline`, `cli` or `report`.
Exports `name_losses`, `induction_probe`, `in_context_summary`, `scan_features`,
`load_features`, `direct_logit_attribution`, `steer`, `steered_generations`,
`head_scores`, `composition_scores`, `copying_scores`.
"""

from .features import (ScanState, context_windows, hist_edges, latent_record, load_features,
                       naive_top_contexts, scan_features)
from .formation import head_formation, snapshot_record, story_batch
from .heads import (COMPOSITIONS, SCORES, composition_baseline, composition_scores,
                    copying_scores, head_scores, key_masks, ov_eigenvalues, pattern_scores,
                    repeated_random_tokens)
from .in_context import (in_context_summary, induction_probe, name_losses, repeated_sequences,
                         text_story, token_groups)
from .logits import direct_logit_attribution, logit_histogram, top_logit_tokens, writes_residual
from .steering import MODES, latent_activation, steer, steered_generations, steering_hook

__all__ = ["ScanState", "context_windows", "hist_edges", "latent_record", "load_features",
           "naive_top_contexts", "scan_features", "direct_logit_attribution",
           "logit_histogram", "top_logit_tokens", "writes_residual", "MODES",
           "latent_activation", "steer", "steered_generations", "steering_hook",
           "COMPOSITIONS", "SCORES", "composition_baseline", "composition_scores",
           "copying_scores", "head_scores", "key_masks", "ov_eigenvalues", "pattern_scores",
           "repeated_random_tokens", "in_context_summary", "induction_probe", "name_losses",
           "repeated_sequences", "text_story", "token_groups", "head_formation",
           "snapshot_record", "story_batch"]
