"""The catalogue of a public GPT-Neo model beside a study's table of its heads: on a random
1-layer GPT-Neo written by transformers and read by `load_pretrained`, the heads' scores,
ablations and catalogue end to end, the join by head name, and the page and the report's
section drawing it; on the real TinyStories-1Layer-21M when a local copy is named by
$TINYCOURSE_TINYSTORIES_1L_21M (else skipped, saying what to download)."""

import json
import os
import re
from pathlib import Path

import pytest

from tinycourse.corpus.storyworld import generate_stories
from tinycourse.interpret.study_compare import (STUDY_MODEL, STUDY_PATH, beside_study, load_study,
                                                pretrained_heads)
from tinycourse.lm.pretrained import load_pretrained

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.usefixtures("one_thread")
N_HEADS = 4
ENV = "TINYCOURSE_TINYSTORIES_1L_21M"
# made up for these tests, not the study's words: the study's own table is data/heads/
TABLE = {"title": "A hand-written table <for the tests>", "url": "https://example.org/study",
         "heads": {"L0H0": "test description of head zero", "L0H2": "test description of head two"}}


@pytest.fixture(scope="module")
def gptneo_folder(tmp_path_factory):
    """A random GPTNeoForCausalLM shaped like TinyStories-1Layer-21M (one global layer),
    scaled down, saved by transformers beside a byte-level BPE tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((s.text for s in generate_stories(100, seed=1)), trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(["<|endoftext|>"])
    vocab = tok.get_vocab_size()
    config = transformers.GPTNeoConfig(
        vocab_size=vocab, max_position_embeddings=64, window_size=16, hidden_size=32, num_heads=N_HEADS,
        num_layers=1, attention_types=[[["global"], 1]], initializer_range=0.3,
        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gptneo")
    transformers.GPTNeoForCausalLM(config).eval().save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def measured(gptneo_folder):
    model, tokenizer = load_pretrained(gptneo_folder)
    return pretrained_heads(model, tokenizer, list(generate_stories(8, seed=0)), n_seqs=4, ablation_stories=4)


def test_the_catalogue_of_a_loaded_gptneo_end_to_end(measured):
    names = [f"L0H{h}" for h in range(N_HEADS)]
    assert [e["head"] for e in measured["catalogue"]] == names
    assert all(e["description"].startswith(e["head"] + ": ") for e in measured["catalogue"])
    for on in ("stories", "repeated_tokens"):
        assert set(measured["scores"][on]) == set(measured["score_names"])
        assert all(len(grid) == 1 and len(grid[0]) == N_HEADS for grid in measured["scores"][on].values())
    assert len(measured["copying"][0]) == N_HEADS
    assert set(measured["ablation"]) == {"zero", "mean"}
    assert set(measured["ablation"]["mean"]["delta"]) == {"all", "name_repeat", "pronoun", "closing_quote",
                                                         "second_copy"}
    assert "8 storyworld stories" in measured["prompts"]["stories"]
    json.dumps(measured, allow_nan=False)  # heads.json as it is: no NaN left


def test_the_join_puts_the_study_beside_each_head(measured):
    beside = beside_study(measured["catalogue"], TABLE)
    assert beside["title"] == TABLE["title"] and beside["url"] == TABLE["url"]
    rows = {r["head"]: r for r in beside["rows"]}
    assert list(rows) == [f"L0H{h}" for h in range(N_HEADS)]
    assert rows["L0H0"]["study"] == "test description of head zero" and rows["L0H1"]["study"] is None
    for entry in measured["catalogue"]:
        assert entry["description"] == f"{entry['head']}: {rows[entry['head']]['ours']}"
        assert rows[entry["head"]]["labels"] == [label for label, _ in entry["labels"]]
    with pytest.raises(ValueError, match="L0H4 does not exist: this model has layers 0-0, heads 0-3"):
        beside_study(measured["catalogue"], {**TABLE, "heads": {"L0H4": "a head of another model"}})
    with pytest.raises(ValueError, match="empty catalogue"):
        beside_study([], TABLE)


def test_the_study_table_is_read_or_says_what_to_write(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no study table at .*: transcribe the study's table") as error:
        load_study(tmp_path / "absent.json")
    assert "\n" not in str(error.value)
    (tmp_path / "bad.json").write_text(json.dumps({"title": "t"}))
    with pytest.raises(ValueError, match="lacks url, heads"):
        load_study(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps(TABLE))
    assert load_study(tmp_path / "ok.json") == TABLE
    assert STUDY_PATH.parent.name == "heads" and STUDY_PATH.parents[1].name == "data"


def test_the_shipped_study_table_joins_every_head_of_the_study_shape(gptneo_folder, tmp_path):
    """data/heads/ holds the study's own table (16 rows, its head numbers as L0H<n>); on a
    random GPT-Neo of the study's shape (1 layer x 16 heads, scaled down) measured end to
    end, every row lands beside its head."""
    import shutil

    import torch

    study = load_study()
    assert study["model"] == STUDY_MODEL and study["url"].startswith("https://")
    assert list(study["heads"]) == [f"L0H{h}" for h in range(16)]
    assert "structural pivot" in study["heads"]["L0H1"] and "previous token" in study["heads"]["L0H6"]
    vocab = transformers.GPTNeoConfig.from_pretrained(gptneo_folder).vocab_size
    config = transformers.GPTNeoConfig(
        vocab_size=vocab, max_position_embeddings=64, window_size=16, hidden_size=32, num_heads=16,
        num_layers=1, attention_types=[[["global"], 1]], bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(1)
    transformers.GPTNeoForCausalLM(config).eval().save_pretrained(tmp_path)
    shutil.copy(gptneo_folder / "tokenizer.json", tmp_path / "tokenizer.json")
    model, tokenizer = load_pretrained(tmp_path)
    heads = pretrained_heads(model, tokenizer, list(generate_stories(4, seed=0)), n_seqs=2, ablation_stories=2)
    rows = beside_study(heads["catalogue"], study)["rows"]
    assert [r["head"] for r in rows] == list(study["heads"])
    assert all(r["study"] == study["heads"][r["head"]] for r in rows)


def test_the_page_and_the_report_draw_the_side_by_side(measured, tmp_path):
    from tinycourse.artifacts import atomic_write_json
    from tinycourse.report import heads as section
    from tinycourse.report.heads_page import write_heads_page
    from tinycourse.report.page import render

    folder = tmp_path / "heads"
    folder.mkdir()
    atomic_write_json(folder / "heads.json", {**measured, "study": beside_study(measured["catalogue"], TABLE)})
    page = write_heads_page(folder, title="TinyStories-1L-21M, shaped").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="heads-data">(.*?)</script>', page, re.DOTALL).group(1))
    keys = [c["key"] for c in data["columns"]]
    assert keys[-1] == "study" and "patching" not in keys  # no patching measured on a pretrained model
    said = [h["values"][-1] for h in data["heads"]]
    assert said == ["test description of head zero", None, "test description of head two", None]
    assert data["study_title"] == TABLE["title"]
    assert data["facts"]["beside"] == f"{TABLE['title']} ({TABLE['url']})"
    assert "&lt;for the tests&gt;" in page and "<for the tests>" not in page.replace(r"\u003cfor", "")
    context = section.gather(tmp_path, {"heads": {"summary": {}}}, True)
    html = render("heads.html", anchor="heads", **context)
    assert "Beside the study" in html and "test description of head two" in html
    assert html.count("<tr>") >= N_HEADS * 3  # scores, ablations, the side-by-side
    for entry in measured["catalogue"]:
        assert entry["description"].split(": ", 1)[1].replace("'", "&#39;") in html


def test_the_real_tinystories_1layer_21m_beside_the_study(tmp_path):
    path = os.environ.get(ENV)
    if not path:
        pytest.skip(f"set {ENV} to a local copy of {STUDY_MODEL}: huggingface-cli download {STUDY_MODEL} "
                    f"--local-dir models/TinyStories-1Layer-21M, then {ENV}=models/TinyStories-1Layer-21M")
    from tinycourse.artifacts import atomic_write_json
    from tinycourse.report.heads_page import write_heads_page

    model, tokenizer = load_pretrained(Path(path).expanduser())
    assert (model.cfg.n_layers, model.cfg.n_heads) == (1, 16)
    heads = pretrained_heads(model, tokenizer, list(generate_stories(16, seed=0)), n_seqs=8, ablation_stories=4)
    assert [e["head"] for e in heads["catalogue"]] == [f"L0H{h}" for h in range(16)]
    if not STUDY_PATH.is_file():
        pytest.skip(f"the catalogue ran, but there is no study table at {STUDY_PATH} to set it beside")
    heads["study"] = beside_study(heads["catalogue"], load_study())
    assert sum(r["study"] is not None for r in heads["study"]["rows"]) == len(load_study()["heads"])
    atomic_write_json(tmp_path / "heads.json", heads)
    assert "the study" in write_heads_page(tmp_path).read_text(encoding="utf-8")
