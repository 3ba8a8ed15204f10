import numpy as np
import pytest

from tinycourse.corpus.tokenizer import (BEGIN_TOKEN, START_TOKEN, UNK_TOKEN, BPETokenizer,
                                  RemapTokenizer, build_remap, load_base_tokenizer,
                                  load_tokenizer, train_bpe, unk_rates)
from tinycourse.corpus.sources import DataError


@pytest.fixture
def bpe(stories):
    return train_bpe(stories, vocab_size=400)


def test_bpe_round_trips_exactly(bpe, stories):
    tricky = ["  double  spaces\n\nand newlines\t", "émoji 🐶 and ünïcode", '"Quote," she said.']
    for text in stories + tricky:
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.start_id == bpe.tokenizer.token_to_id(START_TOKEN) == 0
    assert bpe.pieces("Once upon a time") and "".join(bpe.pieces("Once upon a time")) == "Once upon a time"


def test_bpe_learns_merges_and_saves(bpe, stories, tmp_path):
    assert bpe.tokenizer.get_vocab_size() > 257
    assert len(bpe.encode(stories[0])) < len(stories[0].encode())
    bpe.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, BPETokenizer) and again.hash == bpe.hash
    assert again.vocab_size == bpe.vocab_size == 400
    assert again.encode_batch(stories[:3]) == bpe.encode_batch(stories[:3])


def test_remap_keeps_top_k_by_frequency(bpe, stories, tmp_path):
    remap = build_remap(bpe.tokenizer, stories, top_k=20)
    counts = np.zeros(bpe.tokenizer.get_vocab_size(), dtype=int)
    for s in stories:
        np.add.at(counts, bpe.encode(s), 1)
    kept_counts = counts[remap.kept_base_ids]
    assert len(remap.kept_base_ids) == 20
    assert list(kept_counts) == sorted(kept_counts, reverse=True)
    assert kept_counts.min() >= np.sort(counts)[::-1][19]
    assert remap.vocab_size == 22 and remap.start_id == 21 and remap.unk_id == 0

    ids = remap.encode(stories[0])
    assert max(ids) <= 20 and 0 in ids  # a 20-token vocabulary cannot cover a story
    assert UNK_TOKEN in remap.decode(ids)
    remap.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, RemapTokenizer) and again.encode(stories[1]) == remap.encode(stories[1])
    assert BEGIN_TOKEN not in remap.decode([remap.start_id] + ids)


def test_remap_with_large_k_round_trips(bpe, stories):
    remap = build_remap(bpe.tokenizer, stories, top_k=10_000)
    for text in stories[:4]:
        assert remap.decode(remap.encode(text)) == text
    rates = unk_rates(remap, stories)
    assert rates["unk_story_share"] == 0.0 and rates["stories"] == len(stories)
    small = unk_rates(build_remap(bpe.tokenizer, stories, top_k=10), stories)
    assert small["unk_story_share"] == 1.0 and 0 < small["unk_token_share"] < 1


def test_base_tokenizer_from_path_or_clear_hub_error(bpe, tmp_path):
    bpe.save(tmp_path)
    size = bpe.tokenizer.get_vocab_size()
    assert load_base_tokenizer(str(tmp_path / "tokenizer.json")).get_vocab_size() == size
    assert load_base_tokenizer(str(tmp_path)).get_vocab_size() == size
    with pytest.raises(DataError, match="hub"):
        load_base_tokenizer("EleutherAI/gpt-neox-20b")


def test_real_sample_round_trip(tinystories_sample):
    from tinycourse.corpus.sources import read_local
    import itertools
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stories = list(itertools.islice(read_local(tinystories_sample), 500))
    tok = train_bpe(stories, vocab_size=1024)
    assert all(tok.decode(ids) == s for ids, s in zip(tok.encode_batch(stories), stories))
    bytes_per_token = sum(len(s.encode()) for s in stories) / sum(map(len, tok.encode_batch(stories)))
    assert bytes_per_token > 3.0  # 1K BPE on simple English compresses well
