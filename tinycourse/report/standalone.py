"""What the stand-alone pages share: the features dashboard (`dashboard`), the heads
catalogue (`heads_page`), the capabilities page (`capabilities_page`) and each attribution
graph (`graph_page`). Each is one HTML file its stage writes beside its data, drawn by a
small inlined script from one JSON blob, with no request leaving it.

    templates          the Jinja environment, configured as the report's (`page.py`)
    script_json(data)  the blob, safe inside <script type="application/json">
    json_safe(value)   NaN and infinities as null, numpy scalars as Python's

The pages include templates/elements.js (the `el` DOM builder) before their own script.
"""

from __future__ import annotations

import json
import math

import numpy as np
from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from .numbers import fmt

# configured as page.py's; its own, because importing page.py would import the pipeline,
# and each stage writes its page from inside the pipeline
templates = Environment(loader=PackageLoader("tinycourse.report"), autoescape=select_autoescape(),
                        trim_blocks=True, lstrip_blocks=True)
templates.filters["fmt"] = lambda value: fmt(None if isinstance(value, Undefined) else value)


def script_json(data: dict) -> str:
    """`data` as compact JSON safe inside a <script> element: no `<`, `>` or `&` (JSON
    \\u escapes instead), so no text in it can close the element or open a comment."""
    text = json.dumps(json_safe(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def json_safe(value):
    """JSON-safe: NaN and infinities as null (JSON has neither), numpy scalars as Python's."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = ["templates", "script_json", "json_safe"]
