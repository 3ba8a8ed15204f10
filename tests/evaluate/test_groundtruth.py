import json

import numpy as np
import pytest
import torch

from tinycourse.config import EvalConfig, ModelConfig, SAEConfig
from tinycourse.corpus.storyworld import PLACES, generate_stories
from tinycourse.evaluate.groundtruth import (
    SparseScores,
    auroc,
    best_f1,
    best_latent,
    binary_targets,
    context_windows,
    ground_truth_recovery,
    story_activations,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

N_CTX = 16
HOOK = "blocks.1.hook_resid_pre"


# tiny matrices: one thread beats two fighting over a busy CPU (see conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


class CharTokenizer:
    """One token per character (ids 1..63), start token 0: offsets are trivially right."""

    start_id, vocab_size = 0, 64

    def encode(self, text):
        return [1 + ord(c) % 63 for c in text]

    def offsets(self, text):
        return [(i, i + 1) for i in range(len(text))]


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX, d_vocab=64)
    return GPT(cfg).eval()


def brute_force_auroc(score, labels):
    pos, neg = score[labels], score[~labels]
    wins = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
    return float(wins.mean())


# --- AUROC and F1 -----------------------------------------------------------------------------

def test_a_latent_equal_to_the_label_has_auroc_one_and_is_found():
    labels = torch.rand(2000) < 0.2
    latents = torch.relu(torch.randn(2000, 50)) * (torch.rand(2000, 50) < 0.1)  # sparse, >= 0
    latents[:, 17] = labels.float() * (1 + torch.rand(2000))
    a = auroc(latents, labels)
    assert a[17] == 1.0 and a.argmax() == 17
    best = best_latent(latents, labels, both_signs=False)
    assert best["latent"] == 17 and best["auroc"] == 1.0 and best["f1"] == 1.0
    # a score that is high exactly off the variable is found with both signs, sign -1
    flipped = torch.randn(2000, 5)
    flipped[:, 3] = (~labels).float()
    best = best_latent(flipped, labels, both_signs=True)
    assert (best["latent"], best["sign"], best["auroc"], best["f1"]) == (3, -1, 1.0, 1.0)
    assert best_latent(flipped, labels, both_signs=False)["auroc"] < 0.6


def test_auroc_of_random_scores_is_one_half():
    labels = torch.rand(4000) < 0.5
    a = auroc(torch.randn(4000, 40), labels)
    # the AUROC of an uninformative score has sd ~ 1 / sqrt(12 * 1000) ~ 0.009 here
    assert (a - 0.5).abs().max() < 0.05
    assert abs(float(a.mean()) - 0.5) < 0.01
    assert auroc(torch.full((4000, 1), 3.0), labels)[0] == 0.5  # a constant: all ties


def test_auroc_matches_the_pairwise_definition_with_ties_and_signs():
    labels = torch.rand(300) < 0.3
    scores = torch.randint(-3, 4, (300, 8)).float()  # many ties, zeros between signs
    scores[:, 5] = 0.0
    scores[:, 6] = torch.rand(300)  # no zeros at all
    want = torch.tensor([brute_force_auroc(scores[:, j], labels) for j in range(8)],
                        dtype=torch.float64)
    torch.testing.assert_close(auroc(scores, labels), want)
    # the same from sparse row blocks, ranks reused for a second label set
    sparse = SparseScores.concat(list(scores.split(70)))
    torch.testing.assert_close(auroc(sparse, labels), want)
    other = torch.rand(300) < 0.5
    want_other = [brute_force_auroc(scores[:, j], other) for j in range(8)]
    torch.testing.assert_close(auroc(sparse, other), torch.tensor(want_other, dtype=torch.float64))
    torch.testing.assert_close(sparse.column(2), scores[:, 2])


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc(torch.randn(10, 2), torch.ones(10, dtype=torch.bool))


def test_best_f1_picks_the_best_threshold():
    score = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1, 0.0])
    labels = torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool)
    f1, threshold = best_f1(score, labels)
    # >= 0.8: P=1, R=2/3 -> 0.8;  >= 0.6: P=3/4, R=1 -> 6/7, the best
    assert f1 == pytest.approx(6 / 7) and threshold == pytest.approx(0.6)
    # a tie cannot be split: with all scores equal the only rule is "everything"
    f1, _ = best_f1(torch.zeros(6), labels)
    assert f1 == pytest.approx(2 * 3 / (6 + 3))


# --- variables and windows -------------------------------------------------------------------------

def test_binary_targets_follow_the_documented_definitions():
    labels = {
        "in_quote": ["1", "1", None, None, None],
        "speaker": ["Lily", "Dad", None, None, None],
        "pronoun_referent": [None, None, "Tom", "Lily+Tom", "Spot"],
        "name_repeat": [None, None, None, None, "Lily"],
        "place": ["beach", "beach", "park", None, None],
        "section": ["opening", "opening", "middle", "middle", "ending"],
    }
    t = binary_targets(labels)
    assert t["in_quote"].tolist() == [1, 1, 0, 0, 0]
    assert t["speaker=female"].tolist() == [1, 0, 0, 0, 0]  # Lily
    assert t["speaker=male"].tolist() == [0, 1, 0, 0, 0]  # Dad
    assert t["pronoun"].tolist() == [0, 0, 1, 1, 1]
    assert t["pronoun=male"].tolist() == [0, 0, 1, 0, 1]  # Tom, and Spot the dog is "he"
    assert t["pronoun=plural"].tolist() == [0, 0, 0, 1, 0]
    assert t["name_repeat"].tolist() == [0, 0, 0, 0, 1]
    assert t["place"].tolist() == [1, 1, 1, 0, 0]
    assert t["place=beach"].tolist() == [1, 1, 0, 0, 0]
    assert t["section=middle"].tolist() == [0, 0, 1, 1, 0]
    assert {f"place={p}" for p in PLACES} <= set(t)
    assert all(v.dtype == bool and len(v) == 5 for v in t.values())


@pytest.mark.parametrize("n", [1, 5, 16, 17, 40, 123])
def test_context_windows_read_every_token_once_with_enough_context(n):
    read = []
    for start, first in context_windows(n, N_CTX):
        assert start <= first and start + N_CTX <= max(n, N_CTX) + N_CTX // 2
        positions = range(first, min(start + N_CTX, n))
        assert all(p - start >= N_CTX // 2 or start == 0 for p in positions)
        read += positions
    assert read == list(range(n))


def test_story_activations_line_up_with_a_direct_run(model):
    story = next(generate_stories(1, seed=3, start=100))
    tok = CharTokenizer()
    acts, labels = story_activations(model, HOOK, tok, [story], batch_size=4)
    ids = [0] + tok.encode(story.text)
    assert len(acts) == len(ids) - 1 == len(story.text)
    assert all(len(v) == len(acts) for v in labels.values())
    assert labels["section"][0] == "opening"
    # token t (row t - 1) is read from the first window that gives it n_ctx / 2 of context
    for t in (1, N_CTX - 1, N_CTX, 50, len(ids) - 1):
        start = 0 if t < N_CTX else (t - N_CTX) // (N_CTX // 2) * (N_CTX // 2) + N_CTX // 2
        _, cache = model.run_with_cache(torch.tensor([ids[start : start + N_CTX]]), names=HOOK)
        torch.testing.assert_close(acts[t - 1], cache[HOOK][0, t - start], rtol=1e-5, atol=1e-5)


# --- the entry point ------------------------------------------------------------------------------------

def test_ground_truth_recovery_shape_on_a_tiny_model(model):
    sae = SparseAutoencoder(SAEConfig(kind="topk", hook_in=HOOK, d_sae=64, k=4), d_in=32)
    cfg = EvalConfig(ground_truth_stories=6, batch_size=16)
    result = ground_truth_recovery(model, sae, CharTokenizer(), cfg, data_seed=0, first_index=10**6)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    stories = list(generate_stories(6, seed=0, start=10**6))
    assert result["n_tokens"] == sum(len(s.text) for s in stories)
    assert result["n_stories"] == 6 and result["coefficients"] == 4  # topk: L0 = k
    variables = [row["variable"] for row in result["rows"]]
    assert {"in_quote", "section=opening", "pronoun"} <= set(variables)
    assert set(variables).isdisjoint(result["skipped"])
    for row in result["rows"]:
        assert 10 <= row["positives"] <= result["n_tokens"] - 10
        assert set(row["sae"]) == {"auroc", "f1", "latent"}
        assert 0 <= row["sae"]["latent"] < 64 and 0 <= row["pca"]["latent"] < 4
        assert 0 <= row["random"]["latent"] < 64
        for kind in ("sae", "pca", "random"):
            assert 0 <= row[kind]["auroc"] <= 1 and 0 <= row[kind]["f1"] <= 1
        assert row["pca"]["auroc"] >= 0.5 and row["random"]["auroc"] >= 0.5  # both signs
    for kind in ("sae", "pca", "random"):
        assert result["mean"][kind] == pytest.approx(np.mean([r[kind]["auroc"] for r in result["rows"]]))


def test_a_mismatched_device_is_refused_and_the_model_stays_where_it_was(model):
    sae = SparseAutoencoder(SAEConfig(kind="topk", hook_in=HOOK, d_sae=64, k=4), d_in=32)
    story = next(generate_stories(1, seed=3, start=100))
    with pytest.raises(ValueError, match=r"model\.to\('meta'\)"):
        story_activations(model, HOOK, CharTokenizer(), [story], device="meta")
    with pytest.raises(ValueError, match="device=None"):
        ground_truth_recovery(model, sae, CharTokenizer(), EvalConfig(ground_truth_stories=1),
                              data_seed=0, first_index=0, device="meta")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
