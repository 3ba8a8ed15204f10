"""The run report: one self-contained HTML page of everything a run has built.

    write_report(run_root, out_path)   runs/<name>/report/index.html by default

Each section of the page is a Python module of this package that gathers its data (reads
the stage's files, draws its figures) and a Jinja template in templates/ that words and
lays it out; templates/base.html is the page around them. A section appears only once its
stage has finished, in the pipeline's order of the stages (`pipeline.STAGES`).

Self-contained means it works offline, from a file, forever: figures are PNGs embedded as
base64 `data:` URIs (figures.py), the one stylesheet (templates/style.css) is inlined with
system fonts only, and the one interactive piece, the attention heads of one validation
story drawn by CircuitsVis, inlines CircuitsVis's own JavaScript bundle (bundle.py) once.
`interactive=False` leaves the bundle out and draws the patterns as a static figure.

Templates escape everything they print (autoescape); only the CircuitsVis bundle and the
sections this module rendered itself go in as markup. Text from the run (the LM's samples,
its tokens) is therefore shown, never interpreted.

To add a section for a new stage (features, heads, circuits, ...):
  1. a module `report/<name>.py` with `ANCHOR` (the <section id> and the template's name),
     `NAV` (its link in the navigation bar), `STAGE` (the stage whose place in the
     pipeline's order it takes) and `gather(root, manifests, interactive)`, which returns
     the template's context, or None while there is nothing to show (`interactive`: may
     the page carry JavaScript; `circuitsvis: True` in the context asks for the bundle);
  2. a template `report/templates/<ANCHOR>.html`, built from the macros in macros.html;
  3. the module in `SECTIONS` below.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape
from markupsafe import Markup

from ..artifacts import atomic_write_text
from ..pipeline import STAGES
from . import (activations, capabilities, circuits, corpus, evaluate, features, heads, lm, provenance, sae,
               sweep, transcoders)
from .bundle import circuitsvis_bundle
from .files import stage_manifests
from .headline import format_headline, headline
from .numbers import fmt
from .provenance import infer_preset, stage_states  # re-exported, with the others in __all__

SECTIONS = [corpus, lm, heads, capabilities, activations, sae, sweep, evaluate, transcoders, features, circuits]  # placed by STAGE, whatever the order here


def _cell(value) -> str:
    """The templates' `fmt` filter: markup a template wrote stays markup, and a key the
    run's files lack reads as a missing value."""
    if isinstance(value, Markup):
        return value
    return fmt(None if isinstance(value, Undefined) else value)


_templates = Environment(loader=PackageLoader("tinycourse.report"), autoescape=select_autoescape(),
                         trim_blocks=True, lstrip_blocks=True)
_templates.filters["fmt"] = _cell
_templates.policies["json.dumps_kwargs"] = {"separators": (",", ":")}  # CircuitsVis props: compact


def render(template: str, **context) -> Markup:
    """A template rendered to markup, for the page around it (escaped as it rendered)."""
    return Markup(_templates.get_template(template).render(**context))


def write_report(run_root: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                 preset: str | None = None, interactive: bool = True) -> Path:
    """Write the run's report (one self-contained HTML file) and return its path.

    `out_path` defaults to `run_root/report/index.html`. `preset` names the run's preset
    (the pipeline knows it); without it the closest preset is inferred from the manifests
    and the differences are shown as `--set` overrides. `interactive=False` leaves out
    the CircuitsVis bundle (static figures only, a smaller page)."""
    root = Path(run_root)
    out = Path(out_path) if out_path is not None else root / "report" / "index.html"
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder {root}")
    manifests = stage_manifests(root)
    order = list(STAGES)
    shown = []  # (module, context) of each section with something to show, in stage order
    for module in sorted(SECTIONS, key=lambda s: order.index(s.STAGE)):
        context = module.gather(root, manifests, interactive)
        if context is not None:
            shown.append((module, context))
    created = time.strftime("%Y-%m-%d %H:%M:%S %z")
    summary = format_headline(headline(root)).split("\n")[1:]  # the lines under the title line
    bundle = circuitsvis_bundle() if any(c.get("circuitsvis") for _, c in shown) else None
    page = _templates.get_template("base.html").render(
        run=root.name, provenance=render("provenance.html", **provenance.gather(root, manifests, preset, created)),
        headline="\n".join(line.strip() for line in summary),
        nav=[(module.ANCHOR, module.NAV) for module, _ in shown],
        sections=[render(f"{module.ANCHOR}.html", anchor=module.ANCHOR, **context) for module, context in shown],
        bundle=Markup(bundle) if bundle else None)
    atomic_write_text(out, page)
    return out


__all__ = ["write_report", "headline", "format_headline", "stage_manifests", "stage_states", "infer_preset"]
