"""tinycourse: train a small language model on TinyStories, then take it apart.

The loaders are public and need no training code:

    model = tinycourse.load_model("runs/tiny/lm")
    sae = tinycourse.load_sae("runs/tiny/sae")
"""

__version__ = "0.1.0"

_LAZY = {"load_model": "lm.model", "load_sae": "sae.model", "preset": "config", "Run": "pipeline"}


def __getattr__(name: str):
    # torch is imported on first use, so `tinycourse --help` stays fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tinycourse' has no attribute {name!r}")


__all__ = ["load_model", "load_sae", "preset", "Run", "__version__"]
