"""A run -> one self-contained HTML page of everything it has built.

In: a run directory's finished stages (their manifests and files). Out: index.html, offline,
with the CircuitsVis bundle inlined. Exports `write_report`, `headline`, `format_headline`,
`stage_manifests` and `infer_preset`.

One module per section of the page (corpus, lm with probe, activations, sae, sweep,
evaluate, and provenance for the header) gathers its data; a Jinja template per section in
templates/ lays it out; page.py puts them together (and says how to add a section).
"""

from .files import stage_manifests
from .headline import format_headline, headline
from .page import write_report
from .provenance import infer_preset

__all__ = ["write_report", "headline", "format_headline", "stage_manifests", "infer_preset"]
