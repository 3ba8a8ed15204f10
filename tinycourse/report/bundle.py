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


def circuitsvis_script() -> str:
    """`<script>` with the bundle, once per page or notebook, before `attention_heads_html`
    widgets: then they draw offline. Empty without CircuitsVis."""
    bundle = circuitsvis_bundle()
    return f"<script>{bundle}</script>" if bundle else ""


def attention_heads_html(attention, tokens: list[str], head_names: list[str], element_id: str) -> str:
    """A CircuitsVis AttentionHeads widget (attention (heads, query, key), one label per token)
    as an HTML snippet that draws from the inlined bundle (`circuitsvis_script`), for a
    page or `IPython.display.HTML`."""
    import numpy as np

    props = {"attention": np.round(np.asarray(attention, dtype=np.float64), 3).tolist(), "tokens": tokens,
             "maskUpperTri": True, "attentionHeadNames": head_names}
    return _widget("AttentionHeads", props, element_id)


def colored_tokens_html(tokens: list[str], values, element_id: str) -> str:
    """A CircuitsVis ColoredTokens widget: each token shaded by its value (pos,), e.g. one
    latent's activation along a prompt; draws from the inlined bundle like the above."""
    import numpy as np

    props = {"tokens": tokens, "values": np.round(np.asarray(values, dtype=np.float64), 4).tolist()}
    return _widget("ColoredTokens", props, element_id)


def _widget(component: str, props: dict, element_id: str) -> str:
    import html
    import json

    # escape <, > and & as JSON \\u escapes, so a token cannot close the <script> early
    payload = json.dumps(props).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    element = html.escape(element_id, quote=True)
    return (f'<div id="{element}" class="cv"></div>'
            f'<script>CircuitsVis.render("{element}", CircuitsVis.{component}, {payload});</script>')
