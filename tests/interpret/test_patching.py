"""Activation patching on the planted previous-token + induction circuit: the induction
head's output and the clean token at the copied position carry the answer; nothing else."""

import pytest
import torch

from tinycourse.interpret.patching import last_logit_diff, patch_heads, patch_residual

from .test_in_context import induction_copier


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _pair():
    # [start] a b c d a b c -> d (clean), with d replaced by e at its first occurrence (corrupted)
    clean = torch.tensor([[0, 1, 2, 3, 4, 1, 2, 3], [0, 5, 6, 7, 8, 5, 6, 7]])
    corrupted = clean.clone()
    corrupted[:, 4] = torch.tensor([9, 10])
    return clean, corrupted, clean[:, 4], corrupted[:, 4]


def test_the_induction_heads_output_carries_the_answer():
    model = induction_copier()
    clean, corrupted, answer, wrong = _pair()
    result = patch_heads(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])
    assert result["clean"] > 5 and result["corrupted"] < -5
    assert grid[1, 0] == pytest.approx(1.0, abs=0.02)  # the induction head
    assert grid[0, 0].abs() < 0.02  # the previous-token head: the keys did not change
    assert grid[:, 1].abs().max() < 1e-4  # the silent heads


def test_the_residual_stream_carries_it_at_the_copied_token_then_at_the_end():
    model = induction_copier()
    clean, corrupted, answer, wrong = _pair()
    result = patch_residual(model, clean, corrupted, answer, wrong)
    grid = torch.tensor(result["recovered"])  # (n_layers + 1, pos)
    assert grid.shape == (3, 8) and result["hooks"][-1] == "blocks.1.hook_resid_post"
    assert grid[0, 4] == pytest.approx(1.0, abs=0.02)  # the embedding of the copied token
    assert grid[0, :4].abs().max() < 1e-4 and grid[0, 5:].abs().max() < 1e-4
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-4)  # everything, at the last position


def test_logit_difference_and_bad_pairs():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[1, -1, 2] = 4.0, -1.0
    assert last_logit_diff(logits, torch.tensor([1, 2]), torch.tensor([0, 0])).tolist() == [4.0, -1.0]
    clean, corrupted, answer, wrong = _pair()
    with pytest.raises(ValueError, match="same shape"):
        patch_heads(induction_copier(), clean, corrupted[:, :-1], answer, wrong)
