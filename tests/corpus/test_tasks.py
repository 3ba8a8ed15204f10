import json
import re

import pytest

from tinycourse.cli import main
from tinycourse.corpus.storyworld import generate_story, known_words
from tinycourse.corpus.tasks import (CAPABILITIES, DATA_DIR, TaskItem, items_jsonl, read_items,
                                     stale_storyworld_suites, storyworld_tasks,
                                     write_storyworld_suites)


@pytest.fixture(scope="module")
def suites() -> dict[str, list[TaskItem]]:
    return {c: storyworld_tasks(c) for c in CAPABILITIES}


def test_the_committed_storyworld_suites_are_what_the_generator_writes():
    assert stale_storyworld_suites() == [], "run `tinycourse tasks` and commit data/tasks/storyworld"


def test_every_capability_has_enough_distinct_items(suites):
    for capability, items in suites.items():
        assert len(items) >= 30, capability
        assert len({(i.prompt, i.answer) for i in items}) == len(items), capability
        assert all(i.capability == capability and i.answer != i.wrong for i in items)


def _story(item: TaskItem):
    match = re.fullmatch(r"storyworld seed (\d+) story (\d+)", item.source)
    return None if match is None else generate_story(int(match[1]), int(match[2]))


def test_items_cut_from_stories_continue_as_the_story_does(suites):
    cut = 0
    for items in suites.values():
        for item in items:
            story = _story(item)
            if story is not None:
                assert item.prompt + item.answer in story.text, item
                cut += 1
    assert cut >= 200


def test_the_answers_are_what_the_labels_say(suites):
    for item in suites["repeated_names"]:
        name = item.answer.strip()
        assert name in item.prompt and name.lower() not in known_words()  # invented: only copying helps
        assert item.wrong.strip() not in item.prompt
    for item in suites["pronouns"]:
        assert {item.answer.strip().lower(), item.wrong.strip().lower()} == {"he", "she"}
    for item in suites["closing_quote"]:
        assert item.answer.endswith('"') and item.prompt.count('"') % 2 == 1  # inside a quote
    for item in suites["indirect_object"]:
        receiver, giver = item.answer.strip(), item.wrong.strip()
        assert receiver in item.prompt and re.search(rf"\b{giver} (found|gave)", item.prompt)
    for item in suites["repeated_tokens"]:
        assert item.answer.strip().lower() in item.prompt.lower()


def test_a_bad_suite_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "ngram.jsonl"
    good = items_jsonl([TaskItem("Once upon a", " time", None, "ngram", "by hand")])
    path.write_text(good + json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"ngram.jsonl:2: not a task item"):
        read_items(path)
    with pytest.raises(ValueError, match="unknown capability"):
        TaskItem("a", " b", None, "telepathy", "by hand")


def test_the_tasks_command_writes_and_checks(tmp_path, capsys):
    assert main(["tasks", "--check", "--out", str(tmp_path)]) == 1  # nothing there yet
    assert main(["tasks", "--out", str(tmp_path)]) == 0
    assert main(["tasks", "--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "pronouns.jsonl").write_text("")
    assert main(["tasks", "--check", "--out", str(tmp_path)]) == 1
    assert "pronouns.jsonl" in capsys.readouterr().out
    assert sorted(p.name for p in write_storyworld_suites(tmp_path)) == sorted(
        f"{c}.jsonl" for c in CAPABILITIES)
    assert DATA_DIR.name == "tasks"
