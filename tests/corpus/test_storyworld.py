"""Tests for the embedded story corpus and its ground-truth labels."""

import collections
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinycourse.corpus import storyworld as sw
from tinycourse.corpus.storyworld import (LABEL_VARIABLES, NAMES, PARENTS, PLACES, SKELETONS, Span,
                                          Story, gender_of)

GENDER = {c.name: c.gender for c in NAMES + PARENTS}
PRONOUN_GENDER = {"she": "female", "her": "female", "herself": "female",
                  "he": "male", "him": "male", "his": "male", "himself": "male",
                  "it": "neuter", "its": "neuter", "itself": "neuter",
                  "they": "plural", "them": "plural", "their": "plural", "themselves": "plural"}


@pytest.fixture(scope="module")
def stories():
    return list(sw.generate_stories(2000, seed=0))


def spans_of(story, variable):
    return sorted((s for s in story.spans if s.variable == variable), key=lambda s: s.start)


# --- determinism -------------------------------------------------------------

def test_same_seed_same_bytes():
    a = [s.text for s in sw.generate_stories(50, seed=3)]
    b = [s.text for s in sw.generate_stories(50, seed=3)]
    assert a == b
    assert list(sw.story_texts(50, seed=3)) == a


def test_different_seed_differs():
    a = [s.text for s in sw.generate_stories(50, seed=0)]
    b = [s.text for s in sw.generate_stories(50, seed=1)]
    assert sum(x != y for x, y in zip(a, b)) >= 45


def test_story_independent_of_order_and_start():
    forward = list(sw.generate_stories(20, seed=7, start=100))
    backward = [sw.generate_story(7, i) for i in reversed(range(100, 120))][::-1]
    assert forward == backward
    assert list(sw.generate_stories(3, seed=7, start=105)) == forward[5:8]


def test_independent_of_hash_seed():
    # Python's str hash is salted per process; the corpus must not depend on it.
    root = Path(__file__).resolve().parents[2]
    code = ("import hashlib; from tinycourse.corpus.storyworld import story_texts;"
            "print(hashlib.sha256(''.join(story_texts(30, seed=5)).encode()).hexdigest())")
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                             capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    here = hashlib.sha256("".join(sw.story_texts(30, seed=5)).encode()).hexdigest()
    assert digests == {here}


# --- coverage of the story world -------------------------------------------

def test_skeletons_used(stories):
    assert len(SKELETONS) >= 10
    used = collections.Counter(s.skeleton for s in stories[:500])
    assert len(used) >= 10
    assert set(used) <= set(SKELETONS)


def test_names_and_genders():
    names = [c.name for c in NAMES]
    assert len(names) == len(set(names)) >= 40
    kinds = collections.Counter(c.kind for c in NAMES)
    assert kinds["girl"] >= 15 and kinds["boy"] >= 15
    assert {"dog", "cat", "bird", "bunny"} <= set(kinds)
    assert {c.gender for c in NAMES} == {"female", "male", "neuter"}
    assert GENDER["Lily"] == "female" and GENDER["Tom"] == "male" and GENDER["Spot"] == "male"


def test_many_characters_appear(stories):
    appeared = {name for s in stories for name in s.characters}
    assert len(appeared & {c.name for c in NAMES}) >= 40


def test_half_the_children_have_invented_names_that_cannot_be_memorised(stories):
    table = {c.name for c in NAMES + PARENTS}
    heroes = [s.characters[0] for s in stories]
    invented = [n for n in heroes if n not in table]
    assert 0.4 < len(invented) / len(heroes) < 0.6
    assert len(set(invented)) > 0.95 * len(invented)  # almost never the same name twice
    assert all(re.fullmatch(r"[A-Z][a-z]{3,}", n) and n.lower() not in sw.known_words()
               for n in invented)


def test_gender_is_a_function_of_the_name():
    rng = __import__("random").Random(0)
    for _ in range(200):
        for gender in ("female", "male"):
            assert gender_of(sw.invented_name(rng, gender)) == gender
    assert gender_of("Lily") == "female" and gender_of("Tweety") == "neuter" and gender_of("Dad") == "male"


def test_copying_plots_repeat_what_was_said(stories):
    """The memory game's lists, the parrot's lines, the magic word and the packed bag come
    back word for word: only copying predicts them."""
    found = collections.Counter()
    for s in stories:
        if s.skeleton == "memory_game":
            lists = re.findall(r'"(?:Listen: |Now you: |Try this one: |Now a long one: )?([a-z]+(?:, [a-z]+){3,})[.,!]?"', s.text)
            lists += [x.lower() for x in re.findall(r'"([A-Z][a-z]+(?:, [a-z]+){3,})[.,!]?"', s.text)]
            counts = collections.Counter(x.lower() for x in lists)
            assert counts and all(n >= 2 for n in counts.values()), s.text
            found["memory_game"] += 1
        elif s.skeleton == "parrot":
            quotes = collections.Counter(re.findall(r'"([^"]+)"', s.text))
            assert sum(n >= 2 for n in quotes.values()) >= 2, s.text
            found["parrot"] += 1
        elif s.skeleton == "magic_word":
            word = re.search(r"magic word(?:: |\. It was )([a-z]+)\.", s.text).group(1)
            assert s.text.lower().count(word) >= 4, s.text
            found["magic_word"] += 1
        unpacked = re.search(r"(?:Out came|There were) (.+?)\.", s.text)
        if s.skeleton == "trip" and unpacked and "packed" in s.text:
            assert s.text.count(unpacked.group(1)) == 2, s.text
            found["packing"] += 1
    assert min(found.values()) > 20 and found["memory_game"] > 2 * found["parrot"], found


def test_vocabulary(stories):
    words = {w.lower() for s in stories for w in re.findall(r"[A-Za-z']+", s.text)}
    assert len(words) >= 400


def test_places_table():
    assert len(PLACES) >= 6
    assert {"fish", "waves", "sand", "shell"} <= PLACES["beach"].words
    assert {"swing", "slide", "tree"} <= PLACES["park"].words
    for place in PLACES.values():
        assert len(place.acts) >= 3 and len(place.spots) >= 3 and len(place.sights) >= 3


# --- surface form ------------------------------------------------------------

def test_length_and_paragraphs(stories):
    paragraph_counts = collections.Counter()
    for s in stories:
        assert 80 <= len(s.text.split()) <= 250, s.text
        paragraphs = s.text.split("\n")
        paragraph_counts[len(paragraphs)] += 1
        assert 1 <= len(paragraphs) <= 4
        assert all(p and p == p.strip() for p in paragraphs)
    assert set(paragraph_counts) == {1, 2, 3, 4}


def test_typography(stories):
    for s in stories:
        t = s.text
        assert "  " not in t and " ." not in t and " ," not in t and ".." not in t
        assert not re.search(r"[.!?] [a-z]", t), t  # sentences start with a capital
        assert not re.search(r"\b[aA] [aeiouAEIOU]", t), t
        assert not re.search(r"\b[aA]n [^aeiouAEIOU\W]", t), t
        assert t[0].isupper() or t[0] == '"'
        assert t[-1] in '.!?"'
        assert "{" not in t and "[" not in t and "|" not in t


def test_openings_and_closings(stories):
    texts = [s.text for s in stories]
    assert sum(t.startswith("Once upon a time") for t in texts) > len(texts) / 4
    assert any("One day," in t for t in texts)
    for phrase in ("From that day on", "happily ever after", "The end.", "learned that"):
        assert any(phrase in t for t in texts), phrase


def test_dialogue_styles(stories):
    texts = " ".join(s.text for s in stories)
    assert re.search(r'\b[A-Z][a-z]+ said, "[A-Z]', texts)  # Tom said, "...
    assert re.search(r'," said [A-Z][a-z]+\.', texts)  # "...," said Lily.


def test_indirect_objects(stories):
    hits = 0
    for s in stories:
        for m in re.finditer(r"\bgave ([a-z][a-z ]*?) to ([A-Z][a-z]+)\b", s.text):
            assert m.group(2) in s.characters
            hits += 1
    assert hits >= 200


# --- labels ------------------------------------------------------------------

def test_spans_well_formed(stories):
    for s in stories:
        assert all(name in GENDER or name not in sw.known_words() for name in s.characters)
        by_var = collections.defaultdict(list)
        for span in s.spans:
            assert isinstance(span, Span)
            assert span.variable in LABEL_VARIABLES
            assert 0 <= span.start < span.end <= len(s.text)
            by_var[span.variable].append(span)
        for spans in by_var.values():  # spans of one variable never overlap
            spans.sort(key=lambda x: x.start)
            assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_quotes_open_and_close(stories):
    n_quotes = 0
    for s in stories:
        t = s.text
        assert t.count('"') % 2 == 0
        quotes = spans_of(s, "in_quote")
        speakers = spans_of(s, "speaker")
        assert [(q.start, q.end) for q in quotes] == [(q.start, q.end) for q in speakers]
        marks = {i for i, ch in enumerate(t) if ch == '"'}
        assert marks == {q.start for q in quotes} | {q.end - 1 for q in quotes}
        for q, sp in zip(quotes, speakers):
            assert q.value == "1"
            assert t[q.start] == '"' and t[q.end - 1] == '"' and q.end - q.start >= 3
            assert '"' not in t[q.start + 1:q.end - 1]
            assert sp.value in s.characters
        n_quotes += len(quotes)
    assert n_quotes > len(stories)  # dialogue is common


def test_speaker_matches_attribution(stories):
    # When the narration says '"...," said NAME', the label must name NAME.
    checked = 0
    for s in stories:
        speaker_at = {sp.end: sp.value for sp in spans_of(s, "speaker")}
        for m in re.finditer(r'" said ([A-Z][a-z]+)\b', s.text):
            assert speaker_at[m.start() + 1] == m.group(1), s.text
            checked += 1
    assert checked > 100


def test_sections_tile_text(stories):
    for s in stories:
        sections = spans_of(s, "section")
        assert [x.value for x in sections] == ["opening", "middle", "ending"]
        assert sections[0].start == 0 and sections[-1].end == len(s.text)
        assert all(a.end == b.start for a, b in zip(sections, sections[1:]))


def test_pronouns_agree_with_referent(stories):
    seen = collections.Counter()
    for s in stories:
        for span in spans_of(s, "pronoun_referent"):
            word = s.text[span.start:span.end].lower()
            names = span.value.split("+")
            assert all(n in s.characters for n in names)
            expected = "plural" if len(names) > 1 else gender_of(span.value)
            assert PRONOUN_GENDER[word] == expected, (word, span.value, s.text)
            seen[expected] += 1
    assert min(seen.values()) > 10 and len(seen) == 4


def test_name_repeats(stories):
    for s in stories:
        repeats = collections.Counter()
        for span in spans_of(s, "name_repeat"):
            assert s.text[span.start:span.end] == span.value
            repeats[span.value] += 1
        for name in s.characters:
            occurrences = len(re.findall(rf"\b{name}\b", s.text))
            assert repeats[name] == max(occurrences - 1, 0), (name, s.text)
    # induction needs names that come back, usually many times
    assert sum(len(spans_of(s, "name_repeat")) >= 4 for s in stories) > 0.9 * len(stories)


def test_place_spans_hold_related_words(stories):
    by_place = collections.defaultdict(lambda: [0, 0])
    for s in stories:
        for span in spans_of(s, "place"):
            assert span.value in PLACES
            words = {w.lower() for w in re.findall(r"[A-Za-z]+", s.text[span.start:span.end])}
            by_place[span.value][0] += bool(words & PLACES[span.value].words)
            by_place[span.value][1] += 1
    assert set(by_place) == set(PLACES)
    for place, (related, total) in by_place.items():
        assert related / total >= 0.9, place


# --- token_labels ------------------------------------------------------------

def test_token_labels_hand_made():
    text = 'Tom said, "Hi." He ran.'
    spans = (Span(0, 10, "section", "opening"), Span(10, len(text), "section", "ending"),
             Span(10, 15, "in_quote", "1"), Span(10, 15, "speaker", "Tom"),
             Span(16, 18, "pronoun_referent", "Tom"), Span(0, 16, "place", "park"))
    story = Story(text, spans, "test", ("Tom",))
    offsets = [(0, 3), (3, 8), (8, 9), (9, 11), (11, 13), (13, 15), (15, 18), (18, 22), (22, 23), (0, 0)]
    labels = sw.token_labels(story, offsets)
    assert set(labels) == set(LABEL_VARIABLES)
    assert all(len(v) == len(offsets) for v in labels.values())
    assert labels["in_quote"] == [None, None, None, "1", "1", "1", None, None, None, None]
    assert labels["speaker"][3:6] == ["Tom"] * 3
    # " He" (15, 18): last character is inside the pronoun span
    assert labels["pronoun_referent"] == [None] * 6 + ["Tom", None, None, None]
    assert labels["section"] == ["opening"] * 3 + ["ending"] * 6 + [None]
    assert labels["place"] == ["park"] * 6 + [None] * 4
    assert labels["name_repeat"] == [None] * 10


def test_token_labels_on_generated_story():
    story = sw.generate_story(0, 11)
    offsets = [m.span() for m in re.finditer(r"\s*\S+", story.text)]  # words with leading space
    labels = sw.token_labels(story, offsets)
    assert all(len(v) == len(offsets) for v in labels.values())
    assert None not in labels["section"]
    for (s, e), value in zip(offsets, labels["name_repeat"]):
        if value is not None:
            assert value in story.text[s:e]


def test_token_labels_with_hf_tokenizer():
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sw.story_texts(200, seed=0), trainer)
    story = sw.generate_story(1, 0)
    enc = tok.encode(story.text)
    labels = sw.token_labels(story, enc.offsets)
    assert all(len(v) == len(enc.offsets) for v in labels.values())
    assert labels["section"][0] == "opening" and labels["section"][-1] == "ending"
    assert [v is None for v in labels["in_quote"]] == [v is None for v in labels["speaker"]]
    n_named = 0
    for (s, e), value in zip(enc.offsets, labels["name_repeat"]):
        if value is not None:  # a name may be split into several tokens
            assert story.text[s:e].strip() in value
            n_named += 1
    assert n_named >= len(spans_of(story, "name_repeat"))
