import tracemalloc

import numpy as np
import pytest

from tinycourse.corpus.shards import Shards, WindowSampler, token_dtype, write_split
from tinycourse.corpus.tokenizer import train_bpe


def test_dtype_by_vocab():
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_write_split_each_story_starts_with_start_token(stories, tmp_path):
    tok = train_bpe(stories, 400)
    info = write_split(tok, stories, tmp_path / "train.bin", batch_stories=7)
    tokens = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    assert info == {"tokens": len(tokens), "stories": len(stories)}
    starts = np.flatnonzero(tokens == tok.start_id)
    assert len(starts) == len(stories) and starts[0] == 0
    pieces = np.split(tokens, starts[1:])
    assert [tok.decode(p[1:]) for p in pieces] == stories
    assert not (tmp_path / "train.bin.tmp").exists()


def test_sampler_is_reproducible_and_windows_are_contiguous():
    tokens = np.arange(1000, dtype=np.uint16)
    a = WindowSampler(tokens, batch_size=4, n_ctx=16, seed=3)
    b = WindowSampler(tokens, batch_size=4, n_ctx=16, seed=3)
    assert a.batch(5).equal(b.batch(5)) and not a.batch(5).equal(a.batch(6))
    batch = a.batch(0)
    assert batch.shape == (4, 17) and (batch.diff(dim=1) == 1).all()
    assert not WindowSampler(tokens, 4, 16, seed=4).batch(5).equal(a.batch(5))
    ranks = [WindowSampler(tokens, 4, 16, seed=3, rank=r, world_size=2).batch(0) for r in (0, 1)]
    assert not ranks[0].equal(ranks[1])


def test_sampler_rejects_too_few_tokens():
    with pytest.raises(ValueError, match="n_ctx"):
        WindowSampler(np.arange(10), batch_size=2, n_ctx=16)


def test_memory_stays_flat_as_corpus_grows(stories, tmp_path):
    tok = train_bpe(stories, 400)

    def peak(n_stories):
        corpus = (stories[i % len(stories)] for i in range(n_stories))
        tracemalloc.start()
        write_split(tok, corpus, tmp_path / "x.bin", batch_stories=256)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    small, large = peak(2_000), peak(20_000)
    assert large < 1.5 * small + 200_000  # ten times the stories, not ten times the memory


def test_shards_open_missing_gives_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="--stages shards"):
        Shards.open(tmp_path)
