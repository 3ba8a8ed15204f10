"""tinycourse: train a small language model on TinyStories, then take it apart."""

__version__ = "0.1.0"
