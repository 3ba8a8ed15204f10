"""How a value reads on the page: the one formatter of the report's tables.

    fmt(40000) -> '40,000'   fmt(0.00012) -> '0.00012'   fmt(3.14159) -> '3.142'
    fmt(None) -> '-'         fmt(True) -> 'true'          fmt([1, 2]) -> '1, 2'

Templates use it as the `fmt` filter; Python uses it where a number goes into a label.
"""

from __future__ import annotations

import math


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
            return f"{value:.3g}"  # far from 1: scientific, three digits
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
