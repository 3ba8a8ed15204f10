import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def seed_everything():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is much faster than two fighting over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    """Tests never touch the network: the hub is always offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


SHARED_SAMPLE = "../shared/data/tinystories/train_head_2MiB.txt"


@pytest.fixture
def tinystories_sample(request):
    """The 2 MiB real TinyStories slice beside the project; skip cleanly without it."""
    from pathlib import Path

    path = Path(request.config.rootpath) / SHARED_SAMPLE
    if not path.is_file():
        pytest.skip(f"{SHARED_SAMPLE} not present")
    return path


STORIES = [
    "Once upon a time, there was a little girl named Lily.\nShe liked to play.",
    'Tom said, "Can I have the ball?" Lily said, "Yes!"',
    "The dog ran to the park. It was happy. The end.",
    "Ben and Mia went to the beach. They found a shell.",
] * 25


@pytest.fixture
def stories():
    return list(STORIES)


def write_random_shards(folder, train_tokens: int, val_tokens: int, vocab: int = 64, seed: int = 0):
    """Shards of random 'stories' of 5-20 tokens (ids 1..vocab-1), each after a start
    token (id 0), written into `folder`; returns the opened `Shards`."""
    import json
    from pathlib import Path

    from tinycourse.corpus.shards import Shards

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    meta = {"splits": {}, "dtype": "uint16", "start_id": 0, "vocab_size": vocab}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        tokens = []
        while len(tokens) < n:
            tokens += [0] + rng.integers(1, vocab, size=rng.integers(5, 21)).tolist()
        np.asarray(tokens[:n], dtype=np.uint16).tofile(folder / f"{split}.bin")
        meta["splits"][split] = {"tokens": n, "stories": tokens.count(0)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return Shards.open(folder)


@pytest.fixture
def random_shards():
    """`write_random_shards`, for tests that need token shards without a tokenizer."""
    return write_random_shards
