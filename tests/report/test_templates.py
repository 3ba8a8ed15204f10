"""The report's templates on their own: one per section, escaping what the run wrote, and
marking up only what a template wrote itself."""

from importlib.resources import files

from tinycourse.pipeline import STAGES
from tinycourse.report.page import SECTIONS, render

TEMPLATES = files("tinycourse.report") / "templates"
PAGE_PARTS = {"base.html", "macros.html", "provenance.html", "style.css"}
OWN_PAGES = {"dashboard.html", "dashboard.css", "heads_page.html", "heads_page.css", "graph_page.html", "graph_page.css", "capabilities_page.html", "capabilities_page.css"}  # the features, heads and capabilities stages' pages, the circuits viewer


def test_every_section_has_a_template_and_a_stage():
    anchors = [module.ANCHOR for module in SECTIONS]
    assert len(set(anchors)) == len(anchors)
    for module in SECTIONS:
        assert (TEMPLATES / f"{module.ANCHOR}.html").is_file(), module.__name__
        assert module.STAGE in STAGES, module.__name__
        assert module.NAV and callable(module.gather)
    on_disk = {p.name for p in TEMPLATES.iterdir() if p.name.endswith((".html", ".css"))}
    assert on_disk == PAGE_PARTS | OWN_PAGES | {f"{a}.html" for a in anchors}  # no template left over


def test_text_from_the_run_is_escaped_even_inside_a_script():
    hostile = "</script><b>x</b> & <img src=https://x>"
    page = render("lm.html", anchor="lm", model={}, summary={}, loss_curves=None, probe_error=None,
                  samples={"step": 1, "texts": [hostile], "earlier": [(0, [hostile])]},
                  probe={"top": 1.0, "tokens": [{"text": hostile, "loss": None},
                                                {"text": hostile, "loss": 0.5, "alpha": 0.5}],
                         "panels": [{"layer": 0, "id": "cv-attention-0", "props": {"tokens": [hostile]}}],
                         "attention": None})
    assert "<b>x</b>" not in page and "<img" not in page
    assert page.count("&lt;b&gt;x&lt;/b&gt; &amp;") == 4  # two samples, two tokens
    assert page.count("</script>") == 1  # the props' JSON cannot close the element early
    assert 'CircuitsVis.render("cv-attention-0", CircuitsVis.AttentionHeads, {"tokens":["\\u003c/script' in page


def test_markup_only_where_a_template_wrote_it():
    page = render("eval.html", anchor="eval", metrics={"hook_in": "<hook>", "n_tokens": 1234}, recon={},
                  sparsity={}, spliced={"ce_loss_recovered": 0.5}, histograms=None, baselines=[], truth=None)
    assert '<section id="eval">' in page and "1,234 held-out tokens" in page
    assert "<td><b>CE loss recovered</b> (vs zero ablation)</td><td>0.5</td>" in page
    assert "&lt;hook&gt;" in page
    assert "<td>FVE</td><td>-</td>" in page  # a figure the run lacks reads as missing


def test_circuitsvis_widgets_escape_their_props():
    from tinycourse.report.bundle import attention_heads_html, colored_tokens_html

    hostile = "</script><b>x</b>&"
    coloured = colored_tokens_html([hostile, "b"], [0.5, 1.0], 'id"x')
    assert "</script>" in coloured and coloured.count("</script>") == 1
    assert "\\u003c/script\\u003e\\u003cb\\u003ex" in coloured and 'id="id&quot;x"' in coloured
    assert "CircuitsVis.ColoredTokens" in coloured and '"values": [0.5, 1.0]' in coloured
    heads = attention_heads_html([[[1.0, 0.0], [0.5, 0.5]]], [hostile, "b"], ["L0H0"], "cv")
    assert heads.count("</script>") == 1 and "CircuitsVis.AttentionHeads" in heads
