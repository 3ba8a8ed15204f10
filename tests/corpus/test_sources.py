import itertools
import json
import time

import pytest

from tinycourse.config import DataConfig
from tinycourse.corpus.sources import (DataError, clean_story, is_validation, iter_stories, read_local,
                             source_fingerprint)

SEP = "<|endoftext|>"


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_txt_format_with_crlf_blank_lines_and_whitespace(tmp_path):
    path = write(tmp_path / "s.txt",
                 f"  One day, Tom ran.  \r\n\r\nHe was happy.\r\n{SEP}\r\nLily sat.\n\n\n{SEP}\n")
    assert list(read_local(path)) == ["One day, Tom ran.\nHe was happy.", "Lily sat."]


def test_cut_off_last_story_is_dropped_but_complete_one_kept(tmp_path):
    cut = write(tmp_path / "cut.txt", f"A story.\n{SEP}\nThe dog wanted to")
    with pytest.warns(UserWarning, match="cut-off"):
        assert list(read_local(cut)) == ["A story."]
    whole = write(tmp_path / "whole.txt", f"A story.\n{SEP}\nThe end.")
    assert list(read_local(whole)) == ["A story.", "The end."]


def test_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file.*storyworld"):
        list(read_local(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="empty"):
        list(read_local(write(tmp_path / "empty.txt", "")))
    with pytest.raises(DataError, match="no line holding"):
        list(read_local(write(tmp_path / "nosep.txt", "Just one story.\nNo separators.\n")))
    with pytest.raises(DataError, match="unknown file type"):
        list(read_local(write(tmp_path / "x.csv", "text\nhi\n")))


def test_bad_bytes_report_offset(tmp_path):
    path = write(tmp_path / "bad.txt", b"Good story.\n" + SEP.encode() + b"\nCaf\xe9 time.\n")
    with pytest.raises(DataError, match=r"byte offset 29"):
        list(read_local(path))
    assert len(b"Good story.\n" + SEP.encode() + b"\nCaf") == 29


def test_jsonl_and_parquet(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["A cat.\r\n", "A dog."]) + "\n")
    assert list(read_local(path)) == ["A cat.", "A dog."]
    write(tmp_path / "bad.jsonl", '{"story": "x"}\n')
    with pytest.raises(DataError, match="'text' field"):
        list(read_local(tmp_path / "bad.jsonl"))

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["One.", "Two. "]}), tmp_path / "s.parquet")
    assert list(read_local(tmp_path / "s.parquet")) == ["One.", "Two."]
    pq.write_table(pa.table({"story": ["One."]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="no 'text' column"):
        list(read_local(tmp_path / "b.parquet"))


def test_split_is_deterministic_and_disjoint(tmp_path):
    path = write(tmp_path / "s.txt", "".join(f"Story {i}.\n{SEP}\n" for i in range(400)))
    cfg = DataConfig(source=str(path), val_fraction=0.1)
    train, val = list(iter_stories(cfg, "train")), list(iter_stories(cfg, "val"))
    assert len(train) + len(val) == 400 and not set(train) & set(val)
    assert 20 <= len(val) <= 60
    assert val == list(iter_stories(cfg, "val"))
    assert [is_validation(i, 0, 0.1) for i in range(50)] == [is_validation(i, 0, 0.1) for i in range(50)]


def test_max_stories_caps_source(tmp_path):
    path = write(tmp_path / "s.txt", "".join(f"Story {i}.\n{SEP}\n" for i in range(50)))
    assert len(list(iter_stories(DataConfig(source=str(path), max_stories=10)))) == 10


def test_unreachable_hub_fails_fast_with_alternatives():
    started = time.time()
    with pytest.raises(DataError, match=r"cannot reach the Hugging Face hub.*--data storyworld") as err:
        next(iter_stories(DataConfig(source="tinystories")))
    assert "\n" not in str(err.value)
    assert time.time() - started < 30
    with pytest.raises(DataError, match="hub"):
        next(iter_stories(DataConfig(source="tinystories-v2")))


def test_large_txt_streams(tmp_path):
    # 20k stories: the reader yields the first before reading the rest
    path = write(tmp_path / "big.txt", "".join(f"Story number {i}.\n{SEP}\n" for i in range(20000)))
    first = list(itertools.islice(read_local(path), 3))
    assert first == ["Story number 0.", "Story number 1.", "Story number 2."]


def test_real_sample(tinystories_sample):
    with pytest.warns(UserWarning, match="cut-off"):
        stories = list(read_local(tinystories_sample))
    assert len(stories) == 2316
    assert stories[0].startswith("One day, a little girl named Lily found a needle")
    assert all(s == clean_story(s) and SEP not in s for s in stories)


def test_fingerprint_follows_content(tmp_path):
    path = write(tmp_path / "s.txt", f"A.\n{SEP}\n")
    first = source_fingerprint(DataConfig(source=str(path)))
    write(path, f"B.\n{SEP}\n")
    assert source_fingerprint(DataConfig(source=str(path))) != first
