import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tinycourse.config import ModelConfig
from tinycourse.corpus.tasks import TaskItem
from tinycourse.corpus.tokenizer import train_bpe
from tinycourse.interpret.capabilities import (AnswerTooLong, answer_ids, bootstrap_interval, fits, load_suite,
                                               score_tasks, summarize)
from tinycourse.lm.model import GPT


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class Letters:
    """a..z as ids 1..26, id 0 the start token: every letter its own token."""

    start_id = 0

    def encode(self, text):
        return [ord(c) - 96 for c in text]


class NextLetter(torch.nn.Module):
    """Logits 10 on the letter after the current one, 0 elsewhere: "abc" continues "d"."""

    cfg = dataclasses.make_dataclass("Cfg", [("n_ctx", int)])(8)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        return 10.0 * F.one_hot((tokens + 1) % 27, 27).float() + 0 * self.dummy


def test_scores_mean_what_they_say_on_a_model_known_by_hand():
    items = [TaskItem("abc", "de", "dx", "ngram", "hand"), TaskItem("abc", "x", "d", "ngram", "hand")]
    right, wrong = score_tasks(NextLetter(), Letters(), items)
    p = 1 / (1 + 26 * torch.exp(torch.tensor(-10.0)).item())  # the top token's probability
    assert right.prob == pytest.approx(p * p, rel=1e-5) and right.top1 and right.rank == 0
    assert right.logit_diff == pytest.approx(10.0)  # at 'e' vs 'x', after the shared 'd'
    assert wrong.rank == 1 and not wrong.top1 and wrong.logit_diff == pytest.approx(-10.0)
    assert wrong.logprob_diff == pytest.approx(-10.0, abs=1e-4)


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens():
    (score,) = score_tasks(NextLetter(), Letters(), [TaskItem("abcdefghijkl", "m", None, "ngram", "hand")])
    assert score.truncated and score.top1 and score.answer_tokens == 1


@pytest.fixture(scope="module")
def bpe():
    texts = ['Tom said, "Hi." Mia said, "Yes." The end.', "Once upon a time, there was a dog."] * 50
    return train_bpe(texts, vocab_size=300)


def test_answer_tokens_are_split_where_the_prompt_ends_or_a_token_earlier(bpe):
    for prompt, answer in [("Once upon a", " time"), ('Tom said, "Hi.', '"'), ("", "Once")]:
        context, continuation = answer_ids(bpe, prompt, answer)
        assert context + continuation == bpe.encode(prompt + answer)
        assert bpe.decode(continuation).endswith(answer)
    context, continuation = answer_ids(bpe, 'Tom said, "Hi.', '"')
    assert bpe.decode(continuation) == '."'  # merged across the boundary: scored as written


def test_score_tasks_matches_a_direct_computation_one_item_at_a_time(bpe):
    model = GPT(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=32,
                            d_vocab=300, init_std=0.3)).eval()
    items = [TaskItem("Once upon a", " time", " dog", "ngram", "hand"),
             TaskItem('Tom said, "Hi.', '"', None, "closing_quote", "hand"),
             TaskItem("", "Once upon", None, "story_start", "hand")]
    scores = score_tasks(model, bpe, items, batch_size=2)
    for item, score in zip(items, scores):
        context, continuation = answer_ids(bpe, item.prompt, item.answer)
        seq = torch.tensor([[0] + context + continuation])
        with torch.no_grad():
            logprobs = model(seq)[0].log_softmax(-1)
        at = 1 + len(context)
        expected = sum(logprobs[at - 1 + j, t].item() for j, t in enumerate(continuation))
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.rank == int((logprobs[at - 1] > logprobs[at - 1, continuation[0]]).sum())
    wrong_ids = answer_ids(bpe, "Once upon a", " dog")
    with torch.no_grad():
        row = model(torch.tensor([[0] + wrong_ids[0]]))[0, -1]
    assert scores[0].logit_diff == pytest.approx(float(row[answer_ids(bpe, "Once upon a", " time")[1][0]]
                                                      - row[wrong_ids[1][0]]), abs=1e-4)


def test_summaries_and_bootstrap_intervals():
    items = [TaskItem("abc", "d", "x", "ngram", "hand")] * 3 + [TaskItem("abc", "x", None, "pronouns", "h")]
    table = summarize(score_tasks(NextLetter(), Letters(), items))
    assert list(table) == ["ngram", "pronouns"]
    assert table["ngram"]["top1"] == 1.0 and table["pronouns"]["top1"] == 0.0
    assert table["ngram"]["logit_diff_positive"] == 1.0 and table["pronouns"]["mean_logit_diff"] is None
    low, high = bootstrap_interval([0.0, 1.0] * 50, seed=1)
    assert low < 0.5 < high and (low, high) == bootstrap_interval([0.0, 1.0] * 50, seed=1)


def test_the_shipped_suites_load_and_a_missing_one_says_what_to_pass(tmp_path):
    items = load_suite(kind="storyworld")
    assert len({i.capability for i in items}) == 10
    with pytest.raises(FileNotFoundError, match="pass a folder"):
        load_suite(tmp_path / "nowhere")


def test_an_answer_longer_than_the_context_is_refused_or_filtered():
    too_long = TaskItem("", "abcdefghijk", None, "story_start", "hand")
    with pytest.raises(AnswerTooLong, match="n_ctx=8"):
        score_tasks(NextLetter(), Letters(), [too_long])
    assert not fits(too_long, Letters(), 8) and fits(TaskItem("", "abc", None, "story_start", "h"), Letters(), 8)
