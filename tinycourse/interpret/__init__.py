"""Trained LM and dictionaries -> understanding.

In: an LM (`lm`), its token shards (`corpus`) and an SAE or transcoder (`sae`). Out:
measurements of what the LM and the dictionary's latents do. So far: `in_context` (the
LM's loss on repeated names against first mentions, the [start] + R + R induction
probe), `formation` (head scores and abilities across the LM's snapshots), `features`
(one bounded-memory pass: each latent's top contexts, quantile
samples, activation histogram, density), `logits` (direct logit attribution of each
latent's decoder row), `effects` (each latent's causal effect on the next-token loss in
its top contexts, the latents firing on a prompt), `autolabel` (offline token-set labels
built on half the val windows and scored on the other half, against random and PCA
directions; the storyworld variable each latent matches), `families` (nearest latents by
decoder cosine, within a dictionary and across widths), `steering` (push or pin a latent
at every position, generated tokens included; a sweep of its effect and cost) and `heads`
(every head's attention scores, batched; Q/K/V composition and OV copying from the
weights; `head_examples`: the queries where each head is most active), with the head
catalogue, patching, capabilities and mining beside them. Each
may import `corpus`, `lm`, `sae` and `evaluate`, never the frame's `rundir`, `pipeline`,
`cli` or `report`. Exports `name_losses`, `induction_probe`, `in_context_summary`,
`scan_features`, `load_features`, `direct_logit_attribution`, `causal_effects`,
`prompt_latents`, `auto_label`, `latent_variables`, `nearest_latents`,
`feature_families`, `steer`, `steered_generations`, `steering_sweep`, `head_scores`,
`composition_scores`, `copying_scores`.
"""

from .autolabel import auto_label, latent_variables
from .effects import causal_effects, mean_effect, prompt_latents, val_prompts
from .families import feature_families, nearest_latents
from .features import (ScanState, context_windows, hist_edges, latent_record, load_features,
                       naive_top_contexts, scan_features)
from .formation import head_formation, snapshot_record, story_batch
from .head_examples import example_records, head_examples, prompt_patterns
from .heads import (COMPOSITIONS, SCORES, composition_baseline, composition_scores,
                    copying_scores, head_scores, key_masks, ov_eigenvalues, pattern_scores,
                    repeated_random_tokens)
from .in_context import (in_context_summary, induction_probe, name_losses, repeated_sequences,
                         text_story, token_groups)
from .logits import direct_logit_attribution, logit_histogram, top_logit_tokens, writes_residual
from .steering import (MODES, concept_token_ids, heldout_loss, latent_activation, latents_boosting,
                       place_words, steer, steered_generations, steering_hook, steering_sweep)

__all__ = ["ScanState", "context_windows", "hist_edges", "latent_record", "load_features",
           "naive_top_contexts", "scan_features", "direct_logit_attribution",
           "logit_histogram", "top_logit_tokens", "writes_residual", "MODES",
           "latent_activation", "steer", "steered_generations", "steering_hook",
           "COMPOSITIONS", "SCORES", "composition_baseline", "composition_scores",
           "copying_scores", "head_scores", "key_masks", "ov_eigenvalues", "pattern_scores",
           "repeated_random_tokens", "in_context_summary", "induction_probe", "name_losses",
           "repeated_sequences", "text_story", "token_groups", "head_formation",
           "snapshot_record", "story_batch", "auto_label", "latent_variables", "causal_effects",
           "mean_effect", "prompt_latents", "val_prompts", "feature_families", "nearest_latents",
           "concept_token_ids", "heldout_loss", "latents_boosting", "place_words", "steering_sweep",
           "head_examples", "example_records", "prompt_patterns"]
