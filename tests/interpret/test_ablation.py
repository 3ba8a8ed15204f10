"""Head ablations: on the planted previous-token + induction circuit, removing either head
of the pair costs the second copy its prediction and the idle heads cost nothing; the loss
groups by hand; zero and mean ablation of a silent head agree."""

import pytest
import torch
import torch.nn.functional as F

from tinycourse.corpus.storyworld import generate_stories
from tinycourse.corpus.tokenizer import train_bpe
from tinycourse.interpret.ablation import (LossGroups, ablation_table, group_losses,
                                           induction_groups, story_groups)
from tinycourse.interpret.in_context import repeated_sequences

from .test_heads import CTX, START, V
from .test_in_context import hand_story, induction_copier


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def test_ablating_either_head_of_the_induction_pair_breaks_the_copy():
    model = induction_copier()
    batch = induction_groups(repeated_sequences(range(1, V), 8, (CTX - 1) // 2, seed=0, start_id=START))
    for mode in ("zero", "mean"):
        table = ablation_table(model, [batch], mode=mode)
        delta = torch.tensor(table["delta"]["second_copy"])
        assert table["clean"]["second_copy"] < 0.01
        assert delta[1, 0] > 1.0 and delta[0, 0] > 1.0, mode  # induction head, previous-token head
        assert delta[0, 1].abs() < 1e-4 and delta[1, 1].abs() < 1e-4, mode  # silent heads
    with pytest.raises(ValueError, match="zero, mean"):
        ablation_table(model, [batch], mode="resample")


def test_group_losses_are_the_mean_loss_of_each_mask():
    model = induction_copier()
    tokens = repeated_sequences(range(1, V), 3, 5, seed=1, start_id=START)
    mask = torch.zeros(3, tokens.shape[1] - 1, dtype=torch.bool)
    mask[0, 2] = mask[2, 7] = True
    got = group_losses(model, LossGroups(tokens, {"two": mask}))["two"]
    with torch.no_grad():
        losses = F.cross_entropy(model(tokens[:, :-1]).transpose(1, 2), tokens[:, 1:], reduction="none")
    assert got == pytest.approx(((losses[0, 2] + losses[2, 7]) / 2).item(), rel=1e-5)


def test_story_groups_mark_names_pronouns_and_closing_quotes():
    story = next(s for s in generate_stories(50) if sum(x.variable == "in_quote" for x in s.spans) >= 2)
    tokenizer = train_bpe([s.text for s in generate_stories(200)], vocab_size=400)
    groups = story_groups(tokenizer, [story, hand_story()], n_ctx=512)
    targets = tokenizer.pieces(story.text)  # story 0's predicted tokens, in order
    marked = {g: [targets[j] for j in m[0].nonzero().flatten().tolist()] for g, m in groups.masks.items()}
    assert len(marked["all"]) == len(targets) and groups.masks["all"][1].sum() < len(targets)  # padding
    assert all(piece.endswith('"') for piece in marked["closing_quote"])
    assert len(marked["closing_quote"]) == sum(x.variable == "in_quote" for x in story.spans)
    assert marked["pronoun"] and marked["name_repeat"]
    assert groups.tokens.shape == (2, 1 + len(targets))
