"""The hand-written TinyStories capability suites in data/tasks/tinystories/.

Schema and conventions always; against the text they cite only where the 2 MiB sample of
TinyStories-train.txt sits beside the project (../shared/data/tinystories/), else skipped.
"""

import functools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "data" / "tasks" / "tinystories"
SAMPLE = (Path(__file__).resolve().parents[2].parent
          / "shared" / "data" / "tinystories" / "train_head_2MiB.txt")

CAPABILITIES = ("ngram", "repeated_tokens", "repeated_names", "common_phrases",
                "plural_singular", "story_start", "closing_quote", "pronouns",
                "related_concepts", "indirect_object")
KEYS = {"prompt", "answer", "wrong", "capability", "source"}
MIN_ITEMS = 30
SOURCE = re.compile(r'TinyStories-train\.txt story (\d+): "(.+)\.\.\."')
SEPARATOR = "<|endoftext|>"


def load(capability):
    path = SUITE / f"{capability}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(number, json.loads(line)) for number, line in enumerate(lines, 1) if line.strip()]


@functools.lru_cache(maxsize=1)
def stories():
    """The sample's stories by 0-based index: the text between lines holding only
    <|endoftext|> (the last story is cut off mid-sentence)."""
    found, current = [], []
    for line in SAMPLE.read_text(encoding="utf-8").split("\n"):
        if line == SEPARATOR:
            found.append("\n".join(current))
            current = []
        else:
            current.append(line)
    found.append("\n".join(current))
    return found


def test_one_file_per_capability():
    assert sorted(p.stem for p in SUITE.glob("*.jsonl")) == sorted(CAPABILITIES)


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_schema_and_conventions(capability):
    items = load(capability)
    assert len(items) >= MIN_ITEMS, f"{capability}: {len(items)} items, want at least {MIN_ITEMS}"
    for number, item in items:
        where = f"{capability}.jsonl:{number}"
        assert isinstance(item, dict) and set(item) == KEYS, f"{where}: keys {sorted(item)}"
        assert isinstance(item["prompt"], str), where
        assert isinstance(item["answer"], str) and item["answer"], f"{where}: empty answer"
        assert item["wrong"] is None or (isinstance(item["wrong"], str) and item["wrong"]), where
        assert item["answer"] != item["wrong"], f"{where}: answer equals wrong"
        assert item["capability"] == capability, where
        assert isinstance(item["source"], str) and SOURCE.fullmatch(item["source"]), \
            f"{where}: source {item['source']!r}"
        assert item["prompt"] == item["prompt"].rstrip(), f"{where}: trailing whitespace in prompt"
        assert item["prompt"] == item["prompt"].lstrip(), f"{where}: leading whitespace in prompt"


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_no_duplicates(capability):
    items = [item for _, item in load(capability)]
    if capability == "story_start":
        # every prompt is the empty string: each item is the opening of a different story
        assert all(item["prompt"] == "" and item["wrong"] is None for item in items)
        sources = [item["source"] for item in items]
        assert len(set(sources)) == len(sources), "story_start cites a story twice"
    else:
        prompts = [item["prompt"] for item in items]
        repeated = {p for p in prompts if prompts.count(p) > 1}
        assert not repeated, f"{capability}: duplicate prompts {sorted(repeated)[:3]}"
        assert all(item["prompt"] for item in items), f"{capability}: empty prompt"


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_citations_match_the_text(capability):
    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} not present")
    text = stories()
    for number, item in load(capability):
        where = f"{capability}.jsonl:{number}"
        index, words = SOURCE.fullmatch(item["source"]).groups()
        index = int(index)
        assert index < len(text), f"{where}: story {index} is past the sample's {len(text)}"
        story = text[index]
        assert " ".join(story.split()[:6]) == words, \
            f"{where}: story {index} opens {' '.join(story.split()[:6])!r}, cited {words!r}"
        if capability == "story_start":
            # the answer is the story's opening, with nothing before it
            assert story.startswith(item["answer"]), f"{where}: story {index} does not open with it"
        else:
            # every item is a verbatim span of its story: the prompt, then the answer
            assert item["prompt"] + item["answer"] in story, f"{where}: not a span of story {index}"


def test_the_answers_are_what_the_labels_say():
    items = {c: [item for _, item in load(c)] for c in CAPABILITIES}
    for item in items["pronouns"]:
        assert {item["answer"], item["wrong"]} == {" he", " she"}, item
    for item in items["closing_quote"]:
        prompt, answer = item["prompt"], item["answer"]
        if answer == '"':
            assert prompt.count('"') % 2 == 1, item  # the prompt ends inside a quotation
        else:
            assert answer == "”" and prompt.count("“") == prompt.count("”") + 1, item
        assert prompt[-1] in "!?.,", item
    for capability in ("repeated_names", "repeated_tokens"):
        for item in items[capability]:  # the answer repeats something the prompt holds
            assert re.search(rf"\b{re.escape(item['answer'].strip())}\b", item["prompt"], re.I), item
    for item in items["indirect_object"]:  # both characters are in the prompt
        assert item["answer"].strip() in item["prompt"] and item["wrong"].strip() in item["prompt"], item
    for item in items["plural_singular"]:  # the prompt has used the other number form
        assert re.search(rf"\b{re.escape(item['wrong'].strip())}\b", item["prompt"]), item
    for item in items["related_concepts"]:  # the answer is new: the concept calls for it
        assert not re.search(rf"\b{re.escape(item['answer'].strip())}\b", item["prompt"], re.I), item
        assert item["wrong"] is not None, item
