"""Trained LM and dictionaries -> understanding (empty for now).

Features (top contexts, dashboards, logit and causal effects), steering, the attention-head
catalogue, transcoder circuits and capability suites land here; each may import `corpus`,
`lm`, `sae` and `evaluate`, never the frame's `rundir`, `pipeline`, `cli` or `report`.
"""
