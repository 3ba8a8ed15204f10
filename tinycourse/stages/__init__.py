"""The stages: one module per part of the course, each registering its build functions
with `registry.stage`. `pipeline` imports them all and puts them in the course's order.

    text          tokenizer, shards, lm (and its in-context probes)
    heads         heads
    capabilities  capabilities
    dictionaries  activations, sae, sweep, eval, transcoders
    features      features
    circuits      circuits
    report        report

Part of the frame: the flow's subpackages never import it.
"""
