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
