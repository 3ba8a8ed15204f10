"""The training skeleton on its own: a third trainer is a loss and a schedule."""

import json

import pytest
import torch

from tinycourse.config import ConfigError
from tinycourse.training import (CHECKPOINT, METRICS, TrainingDiverged, TrainingLoop,
                                 config_changes)

TOTAL, EVERY = 12, 5


def regression(out_dir, *, lr=0.1, stop_after=None, poison_at=None, log=None):
    """Least squares on fresh random batches: the smallest trainer the skeleton can run.
    Returns the weights and the loop."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loop = TrainingLoop(out_dir, {"lr": lr, "width": 4}, total_steps=TOTAL,
                        checkpoint_every=EVERY, metrics=[out_dir / METRICS], desc="toy",
                        progress=False, stop_after=stop_after, log=log or (lambda line: None))
    state = loop.resume()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    for step in loop.steps():
        x = torch.randn(8, 4)  # drawn from the global RNG, which the checkpoint restores
        loss = (model(x).squeeze(-1) - x.sum(-1)).pow(2).mean()
        if step == poison_at:
            loss = loss * float("nan")
        loop.stop_if_diverged(loss.item(), step, lr, hint="Lower lr.")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loop.end_step()
        loop.record([{"step": step + 1, "loss": loss.item()}])
        loop.checkpoint_if_due(step + 1, lambda: {"model": model.state_dict(),
                                                  "optimizer": optimizer.state_dict()})
    return model.state_dict(), loop


def read_steps(folder):
    return [json.loads(line)["step"] for line in (folder / METRICS).read_text().splitlines()]


def test_a_killed_run_resumes_bitwise_and_says_so(tmp_path):
    straight, _ = regression(tmp_path / "straight")
    _, partial = regression(tmp_path / "resumed", stop_after=7)
    assert not partial.finished and partial.last_checkpoint == 5
    assert read_steps(tmp_path / "resumed") == list(range(1, 8))  # steps 6, 7 logged, not saved
    said = []
    resumed, loop = regression(tmp_path / "resumed", log=said.append)
    assert said == [f"[toy] resuming from step 5 of {TOTAL} ({tmp_path / 'resumed' / CHECKPOINT})"]
    assert loop.start == 5 and loop.steps_run == TOTAL - 5 and loop.finished
    assert read_steps(tmp_path / "resumed") == list(range(1, TOTAL + 1))  # no step twice
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


def test_checkpoints_every_n_steps_and_at_the_last(tmp_path):
    _, loop = regression(tmp_path)
    assert loop.last_checkpoint == TOTAL
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == TOTAL


def test_a_checkpoint_of_another_configuration_is_refused_naming_the_change(tmp_path):
    regression(tmp_path, stop_after=5)
    with pytest.raises(ConfigError, match=r"lr: 0\.1 -> 0\.2"):
        regression(tmp_path, lr=0.2)


def test_divergence_stops_before_the_update_and_names_the_intact_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        regression(tmp_path / "early", poison_at=2)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 8 .*step 5\) is intact"):
        regression(tmp_path / "late", poison_at=7)


def test_config_changes_lists_every_differing_leaf():
    old = {"model": {"d": 4, "n": 2}, "train": {"lr": 0.1}, "gone": 1}
    new = {"model": {"d": 8, "n": 2}, "train": {"lr": 0.1}, "added": [1]}
    assert config_changes(old, new) == ["model.d: 4 -> 8", "added: None -> [1]",
                                        "gone: 1 -> None"]
    assert config_changes(new, new) == []
