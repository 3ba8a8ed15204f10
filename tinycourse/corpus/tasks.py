"""Capability tasks: (prompt, answer) pairs a language model should get right.

A capability (closing a quote, copying a name, choosing the indirect object) is tested by
items that each have one right continuation: the model reads `prompt` and is scored on the
log-probability of `answer`'s tokens and, where there is an obvious wrong continuation, on
how much it prefers `answer` to `wrong` (`interpret.capabilities.score_tasks`). Answers are
text, so one suite scores every model, whatever its tokenizer.

Two kinds of suite live in the course's `data/tasks/` folder, one JSON Lines file per
capability:

    data/tasks/tinystories/<capability>.jsonl   written by hand from public TinyStories text
    data/tasks/storyworld/<capability>.jsonl    generated here, from storyworld, with known answers

This module is storyworld's task mode: `storyworld_tasks(capability)` cuts fresh stories
(indices far past any corpus the course trains on) at spans whose continuation the
generator knows (a repeated name, a pronoun's referent, a closing quote mark, a repeated
list) or fills templates whose answer follows from the prompt (who receives a gift, which
place has crabs and waves, one cat or three cats). `write_storyworld_suites()` regenerates
the files (`tinycourse tasks`); a test checks the committed files are what it writes.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..artifacts import atomic_write_text
from .storyworld import (_ADJS, _CHILDREN, PLACES, Story, gender_of, generate_stories, invented_name,
                         known_words)

CAPABILITIES = ("ngram", "repeated_tokens", "repeated_names", "common_phrases",
                "plural_singular", "story_start", "closing_quote", "pronouns",
                "related_concepts", "indirect_object")
ITEMS_PER_CAPABILITY = 40
TASK_SEED = 0
FIRST_TASK_STORY = 10_000_000  # far past any corpus's stories, so none was trained on
MAX_PROMPT_WORDS = 60  # about 80 tokens of storyworld: fits the tiny model's context
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "tasks"
_TABLE_NAMES = frozenset(c.name for c in _CHILDREN)  # the rest are invented


@dataclass(frozen=True)
class TaskItem:
    """One item: `answer` (with its leading space, if the text has one) continues `prompt`;
    `wrong` is the obvious wrong continuation, or None where there is none."""

    prompt: str
    answer: str
    wrong: str | None
    capability: str
    source: str

    def __post_init__(self) -> None:
        if self.capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {self.capability!r}; one of {', '.join(CAPABILITIES)}")
        if not self.answer:
            raise ValueError(f"empty answer for prompt {self.prompt[-40:]!r}")


def read_items(path: str | os.PathLike) -> list[TaskItem]:
    """The items of one `.jsonl` suite file; a bad line is an error naming file and line."""
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(TaskItem(**json.loads(line)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: not a task item ({error}); each line needs "
                             f"prompt, answer, wrong, capability, source") from None
    return items


def items_jsonl(items: list[TaskItem]) -> str:
    return "".join(json.dumps(asdict(item), ensure_ascii=False) + "\n" for item in items)


# --- cutting fresh stories ------------------------------------------------------------

def _fresh_stories() -> Iterator[tuple[int, Story]]:
    for offset, story in enumerate(generate_stories(100_000, seed=TASK_SEED, start=FIRST_TASK_STORY)):
        yield FIRST_TASK_STORY + offset, story


def _source(index: int) -> str:
    return f"storyworld seed {TASK_SEED} story {index}"


def _cut(text: str, start: int, end: int) -> tuple[str, str]:
    """(prompt, answer) for the answer text[start:end]; a space before it moves into the
    answer, where a tokenizer puts it."""
    if start > 0 and text[start - 1] == " ":
        start -= 1
    return text[:start], text[start:end]


def _trim(prompt: str, max_words: int = MAX_PROMPT_WORDS) -> str:
    """Drop whole sentences from the front until at most `max_words` words remain; a
    sentence ends outside quotation marks, so no quotation is cut in half."""
    while len(prompt.split()) > max_words:
        ends = [m.end() for m in re.finditer(r'[.!?]"? ', prompt) if prompt[:m.end()].count('"') % 2 == 0]
        if not ends:
            return " ".join(prompt.split()[-max_words:])
        prompt = prompt[ends[0]:]
    return prompt


def _from_stories(capability: str, pick: Callable[[Story, random.Random], tuple[str, str, str | None] | None]
                  ) -> Iterator[TaskItem]:
    for index, story in _fresh_stories():
        found = pick(story, random.Random(f"{capability}:{index}"))
        if found is not None:
            prompt, answer, wrong = found
            yield TaskItem(prompt, answer, wrong, capability, _source(index))


_FORMULAE = {  # a story's fixed phrases: prefix -> the word after it
    "ngram": (("Once upon a", " time"), ("From that day", " on"), ("in a small", " town"),
              ("The", " end")),
    "common_phrases": (("Thank", " you"), ("loved it very", " much"), ("were best", " friends"),
                       ("a big", " hug"), ("had lots of", " fun"),
                       ("could not", " find")),
}


def _phrase(capability: str):
    phrases = _FORMULAE[capability]

    def pick(story: Story, rng: random.Random):
        prefix, answer = rng.choice(phrases)
        hits = [m.end() for m in re.finditer(re.escape(prefix + answer) + r"\b", story.text)]
        if not hits:
            return None
        end = rng.choice(hits)
        prompt, ans = _cut(story.text, end - len(answer) + 1, end)
        return _trim(prompt), ans, None
    return pick


def _repeated_name(story: Story, rng: random.Random):
    """Before a later mention of an invented name (only copying predicts it); wrong: another
    invented name of the same gender that the story never says."""
    repeats = [s for s in story.spans if s.variable == "name_repeat"
               and s.value.lower() not in known_words()]
    for span in repeats:
        prompt, answer = _cut(story.text, span.start, span.end)
        prompt = _trim(prompt)
        if span.value in prompt and answer.startswith(" "):
            gender = gender_of(span.value)
            while True:
                other = invented_name(rng, gender)
                if other not in story.text and other.lower() not in known_words():
                    return prompt, answer, " " + other
    return None


_OTHER_PRONOUN = {"he": "she", "she": "he", "He": "She", "She": "He"}


def _pronoun(story: Story, rng: random.Random):
    spans = [s for s in story.spans if s.variable == "pronoun_referent" and "+" not in s.value
             and story.text[s.start:s.end] in _OTHER_PRONOUN]
    rng.shuffle(spans)
    for span in spans:
        prompt, answer = _cut(story.text, span.start, span.end)
        prompt = _trim(prompt)
        if span.value in prompt and answer.startswith(" "):
            return prompt, answer, " " + _OTHER_PRONOUN[answer.strip()]
    return None


def _closing_quote(story: Story, rng: random.Random):
    quotes = [s for s in story.spans if s.variable == "in_quote"]
    if not quotes:
        return None
    span = rng.choice(quotes)
    prompt, answer = _cut(story.text, span.end - 1, span.end)
    return _trim(prompt), answer, None


_LIST = re.compile(r"[A-Za-z]+(?:, [a-z]+){3,}")


def _repeated_list(story: Story, rng: random.Random):
    """Inside the second saying of a memory-game list, from its third word on; wrong: a word
    of the same game's vocabulary that this list does not hold."""
    if story.skeleton != "memory_game":
        return None
    lists = [m for m in _LIST.finditer(story.text)]
    vocabulary = sorted({w for m in lists for w in m.group().lower().split(", ")})
    seen: set[str] = set()
    for match in lists:
        key = match.group().lower()
        if key in seen:
            words = key.split(", ")
            j = rng.randrange(2, len(words))
            word_start = match.start() + len(", ".join(words[:j])) + 2
            prompt, answer = _cut(story.text, word_start, word_start + len(words[j]))
            prompt = _trim(prompt)
            if prompt.lower().count(", ".join(words[:j])) < 2:
                continue  # the first saying was trimmed away
            pool = [w for w in vocabulary if w not in words]
            return prompt, answer, (" " + rng.choice(pool)) if pool else None
        seen.add(key)
    return None


# --- templates with known answers ------------------------------------------------------

def _child_name(rng: random.Random, avoid: set[str]) -> str:
    """A table name or (half the time) an invented one, as storyworld casts children."""
    while True:
        if rng.random() < 0.5:
            name = invented_name(rng, rng.choice(("female", "male")))
        else:
            name = rng.choice(_CHILDREN).name
        if name not in avoid and (name in _TABLE_NAMES or name.lower() not in known_words()):
            return name


def _two_children(rng: random.Random) -> tuple[str, str]:
    a = _child_name(rng, set())
    return a, _child_name(rng, {a})


_PRONOUN_FORMS = {"female": ("she", "her"), "male": ("he", "him")}


def _indirect_object(index: int, rng: random.Random) -> tuple[str, str, str | None]:
    a, b = _two_children(rng)
    place = rng.choice(sorted(PLACES.values(), key=lambda p: p.name))
    gift = rng.choice(place.finds)
    giver, receiver = (a, b) if rng.random() < 0.5 else (b, a)
    template = rng.choice((
        "{a} and {b} went to {the}. {g} gave {gift} to",
        "{a} and {b} were playing {at}. {g} found {gift} and gave it to",
        "One day, {a} and {b} went to {the}. Then {g} gave {gift} to",
        "When {a} and {b} were {at}, {g} gave {gift} to",
    ))
    prompt = template.format(a=a, b=b, g=giver, the=place.the, at=place.at, gift=gift)
    return prompt, " " + receiver, " " + giver


_COUNT_NOUNS = ("ball", "kite", "doll", "truck", "boat", "train", "robot", "drum", "shell",
                "rock", "flower", "cookie", "egg", "feather", "cup", "book", "hat", "apple")


def _plural_singular(index: int, rng: random.Random) -> tuple[str, str, str | None]:
    a, b = _two_children(rng)
    he, him = _PRONOUN_FORMS[gender_of(a)]
    noun = rng.choice(_COUNT_NOUNS)
    if rng.random() < 0.5:
        prompt = rng.choice((f"{a} had one {noun}. Then {b} gave {him} two more. Now {he} had three",
                             f"{a} saw a {noun}. Then {he} saw another one. {a} had found two"))
        return prompt, f" {noun}s", f" {noun}"
    prompt = rng.choice((f"{a} had two {noun}s. {he.capitalize()} gave one to {b}. Now {he} had only one",
                         f"{a} and {b} each had a {noun}. {b} lost {'her' if him == 'her' else 'his'}. "
                         f"Now they had just one"))
    return prompt, f" {noun}", f" {noun}s"


def _related_concept(index: int, rng: random.Random) -> tuple[str, str, str | None]:
    places = sorted((p for p in PLACES.values() if p.the.startswith("the ")), key=lambda p: p.name)
    place = rng.choice(places)
    other = rng.choice([p for p in places if p is not place])
    a, _ = _two_children(rng)
    he = _PRONOUN_FORMS[gender_of(a)][0]
    first, second = rng.sample(place.sights, 2)
    prompt = rng.choice((f"{a} saw {first} and {second}. {he.capitalize()} loved going to the",
                         f"{a} looked around and saw {second}. {a} was so happy to be at the"))
    return prompt, " " + place.the.removeprefix("the "), " " + other.the.removeprefix("the ")


def _from_template(capability: str, make) -> Iterator[TaskItem]:
    for index in range(100_000):
        rng = random.Random(f"{capability}:{index}")
        prompt, answer, wrong = make(index, rng)
        yield TaskItem(prompt, answer, wrong, capability, f"storyworld template ({capability} #{index})")


_OPENINGS = ("Once upon a time, there was a little", "Once upon a time, in a small town, there lived a",
             "There once was a little", "Once there was a")
_ADJ_OPENINGS = ("Once upon a time, there was a", "Once upon a time, in a small town, there lived a")


def _story_starts() -> Iterator[TaskItem]:
    """An empty prompt (just the start token) and a story's first words: a model that knows
    a story begins puts its probability on the openings the corpus begins with. Every word
    prefix of every fixed opening (storyworld has few), then those openings with each of
    the adjectives they take (each about 1/12 likely)."""
    seen = set()
    answers = [" ".join(o.split()[:k]) for o in _OPENINGS for k in range(1, len(o.split()) + 1)]
    answers += [f"{o} {adj}" for o in _ADJ_OPENINGS for adj in _ADJS]
    for answer in answers:
        if answer not in seen:
            seen.add(answer)
            yield TaskItem("", answer, None, "story_start", "storyworld opening templates")


def _generators() -> dict[str, Callable[[], Iterator[TaskItem]]]:
    return {
        "ngram": lambda: _from_stories("ngram", _phrase("ngram")),
        "common_phrases": lambda: _from_stories("common_phrases", _phrase("common_phrases")),
        "repeated_names": lambda: _from_stories("repeated_names", _repeated_name),
        "pronouns": lambda: _from_stories("pronouns", _pronoun),
        "closing_quote": lambda: _from_stories("closing_quote", _closing_quote),
        "repeated_tokens": lambda: _from_stories("repeated_tokens", _repeated_list),
        "indirect_object": lambda: _from_template("indirect_object", _indirect_object),
        "plural_singular": lambda: _from_template("plural_singular", _plural_singular),
        "related_concepts": lambda: _from_template("related_concepts", _related_concept),
        "story_start": _story_starts,
    }


def storyworld_tasks(capability: str, n: int = ITEMS_PER_CAPABILITY) -> list[TaskItem]:
    """Up to `n` items of `capability` (distinct prompt and answer), deterministic."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; one of {', '.join(CAPABILITIES)}")
    items, seen = [], set()
    for item in _generators()[capability]():
        if (item.prompt, item.answer) not in seen:
            seen.add((item.prompt, item.answer))
            items.append(item)
            if len(items) == n:
                break
    return items


def write_storyworld_suites(folder: str | os.PathLike = DATA_DIR / "storyworld") -> list[Path]:
    """(Re)write every storyworld suite into `folder`; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for capability in CAPABILITIES:
        path = folder / f"{capability}.jsonl"
        atomic_write_text(path, items_jsonl(storyworld_tasks(capability)))
        written.append(path)
    return written


def stale_storyworld_suites(folder: str | os.PathLike = DATA_DIR / "storyworld") -> list[Path]:
    """The suite files in `folder` that are missing or differ from what the generator writes."""
    folder = Path(folder)
    stale = []
    for capability in CAPABILITIES:
        path = folder / f"{capability}.jsonl"
        if not path.exists() or path.read_text() != items_jsonl(storyworld_tasks(capability)):
            stale.append(path)
    return stale


__all__ = ["CAPABILITIES", "TaskItem", "read_items", "items_jsonl", "storyworld_tasks",
           "write_storyworld_suites", "stale_storyworld_suites", "DATA_DIR", "ITEMS_PER_CAPABILITY"]
