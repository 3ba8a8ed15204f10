"""CircuitsVis's browser bundle, read from the installed package so the page can inline it.

CircuitsVis's Python functions load the same JavaScript from a CDN; the page inlines the
file their `render_local` reads (`circuitsvis/dist/cdn/iife.js`, about 1.3 MB) once, in
its <head>, so the widgets draw offline, from a file.
"""

from __future__ import annotations

from pathlib import Path


def circuitsvis_bundle() -> str | None:
    """The bundle, made safe to inline in a <script> element, or None without CircuitsVis."""
    try:
        import circuitsvis
    except ImportError:
        return None
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        return None
    js = path.read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script")  # would end the inline element early
    # the source map is not shipped: a browser with devtools open would ask for it
    return "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMappingURL="))
