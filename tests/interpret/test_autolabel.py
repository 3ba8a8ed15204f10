import json
import math

import numpy as np
import pytest
import torch

from tinycourse.config import EvalConfig, FeaturesConfig, ModelConfig, SAEConfig
from tinycourse.corpus.storyworld import generate_stories
from tinycourse.evaluate.groundtruth import (
    SparseScores,
    auroc,
    binary_targets,
    ground_truth_recovery,
    split_stories,
    story_activations,
)
from tinycourse.interpret.autolabel import (
    auto_label,
    direction_codes,
    explain,
    latent_variables,
    principal_components,
    scan_halves,
    score,
)
from tinycourse.lm.model import GPT
from tinycourse.sae.model import SparseAutoencoder

N_CTX, D, V = 16, 32, 64
EMBED = "blocks.0.hook_resid_pre"  # with the position embedding zeroed: exactly W_E[token]
CFG = FeaturesConfig(label_tokens=0, batch_size=4)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model():
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX, d_vocab=V,
                      init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture
def shards(tmp_path, random_shards):
    """Random 'stories' of 5-20 tokens (ids 1..63), each after a start token (id 0)."""
    return random_shards(tmp_path / "shards", train_tokens=200, val_tokens=2400, vocab=V)


def planted(model, token: int, d_sae: int = 6) -> SparseAutoencoder:
    """A ReLU SAE at EMBED whose latent 0 fires exactly on `token` (a constant activation)
    and whose other latents never fire; the model's position embedding is zeroed."""
    with torch.no_grad():
        model.pos_embed.weight.zero_()
        sae = SparseAutoencoder(SAEConfig(kind="relu", hook_in=EMBED, d_sae=d_sae), d_in=D).eval()
        sae.W_enc.zero_(), sae.b_dec.zero_()
        sae.b_enc.fill_(-1.0)
        w = model.W_E[token] / model.W_E[token].norm()
        others = torch.cat([model.W_E[:token], model.W_E[token + 1 :]]) @ w
        assert others.max() < model.W_E[token].norm()  # random embeddings: far from parallel
        sae.W_enc[:, 0] = w
        sae.b_enc[0] = -(model.W_E[token].norm() + others.max()) / 2
    return sae


def topk_sae(hook="blocks.1.hook_resid_pre", d_sae=48, k=4):
    return SparseAutoencoder(SAEConfig(kind="topk", hook_in=hook, d_sae=d_sae, k=k), d_in=D).eval()


# --- the reference: every latent by hand ------------------------------------------------------

def brute_force_auroc(score, labels):
    pos, neg = score[labels], score[~labels]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def reference(acts_b, ids_b, acts_s, ids_s, vocab, min_count):
    """Per latent: (token set, detection, simulation r) by loops over tokens and prefixes."""
    out = []
    acts_b, acts_s = acts_b.astype(np.float64), acts_s.astype(np.float64)
    for j in range(acts_b.shape[1]):
        a_b, a_s = acts_b[:, j], acts_s[:, j]
        fired = a_b > 0
        if not fired.any():
            out.append((None, None, None))
            continue
        count = {t: int((ids_b == t).sum()) for t in range(vocab)}
        hits = {t: int(fired[ids_b == t].sum()) for t in range(vocab)}
        candidates = [t for t in range(vocab) if count[t] >= min_count and hits[t] > 0]
        candidates.sort(key=lambda t: (-hits[t] / count[t], -count[t], t))
        best, size = -1.0, 0
        for k in range(1, len(candidates) + 1):
            tp, said = sum(hits[t] for t in candidates[:k]), sum(count[t] for t in candidates[:k])
            f1 = 2 * tp / (said + int(fired.sum()))
            if f1 > best:
                best, size = f1, k
        chosen = candidates[:size]
        y = a_s > 0
        detection = brute_force_auroc(np.isin(ids_s, chosen).astype(float), y) if 0 < y.sum() < len(y) else None
        table = np.array([a_b[ids_b == t].mean() if count[t] else 0.0 for t in range(vocab)])
        p = table[ids_s]
        r = None if not y.any() else (0.0 if p.std() == 0 else float(np.corrcoef(p, a_s)[0, 1]))
        out.append((chosen, detection, r))
    return out


def token_driven(n, ids, seed):
    """(n, 10) activations driven by the token: latent j fires with a per-token chance and
    a per-token size, plus noise; latent 3 never fires, latent 7 fires on one token only."""
    g = np.random.default_rng(seed)
    chance = g.random((10, 12)) ** 3
    size = g.random((10, 12)) * 3
    acts = np.where(g.random((n, 10)) < chance[:, ids].T, size[:, ids].T + g.random((n, 10)), 0.0)
    acts[:, 3] = 0
    acts[:, 7] = np.where(ids == 5, 2.0, 0.0)
    return acts.astype(np.float32)


def sparse(acts):
    return SparseScores.from_dense(torch.from_numpy(acts))


@pytest.mark.parametrize("seed", [0, 1])
def test_explanations_and_scores_match_the_brute_force_reference(seed):
    g = np.random.default_rng(seed + 10)
    ids_b, ids_s = g.integers(0, 12, 500), g.integers(0, 12, 450)
    acts_b, acts_s = token_driven(500, ids_b, seed), token_driven(450, ids_s, seed + 100)
    expl = explain(sparse(acts_b), torch.from_numpy(ids_b), 12, min_count=3)
    detection, r = score(expl, sparse(acts_s), torch.from_numpy(ids_s))
    want = reference(acts_b, ids_b, acts_s, ids_s, 12, min_count=3)
    for j, (tokens, d, s) in enumerate(want):
        assert expl.sets()[j] == (tokens or []), j
        assert (None if math.isnan(detection[j]) else pytest.approx(float(detection[j]), abs=1e-12)) == d, j
        assert (None if math.isnan(r[j]) else pytest.approx(float(r[j]), abs=1e-9)) == s, j
    assert expl.sets()[7] == [5] and detection[7] == 1.0 and r[7] == pytest.approx(1.0)


def test_detection_is_the_rank_auroc_of_the_yes_no_prediction():
    """The shortcut (1 + TPR - FPR) / 2 is what groundtruth.auroc gives on a 0/1 score."""
    g = np.random.default_rng(3)
    ids_b, ids_s = g.integers(0, 12, 500), g.integers(0, 12, 450)
    acts_b, acts_s = token_driven(500, ids_b, 3), token_driven(450, ids_s, 4)
    expl = explain(sparse(acts_b), torch.from_numpy(ids_b), 12, min_count=3)
    detection, _ = score(expl, sparse(acts_s), torch.from_numpy(ids_s))
    for j, tokens in enumerate(expl.sets()):
        fires = torch.from_numpy(acts_s[:, j] > 0)
        if 0 < fires.sum() < len(fires):
            in_set = torch.from_numpy(np.isin(ids_s, tokens)).double()[:, None]
            assert float(auroc(in_set, fires)[0]) == pytest.approx(float(detection[j]), abs=1e-12)


def test_latent_chunks_give_the_same_explanations_and_scores():
    g = np.random.default_rng(5)
    ids_b, ids_s = g.integers(0, 12, 500), g.integers(0, 12, 450)
    acts_b, acts_s = token_driven(500, ids_b, 5), token_driven(450, ids_s, 6)
    results = []
    for chunk in (1, 3, 4096):
        expl = explain(sparse(acts_b), torch.from_numpy(ids_b), 12, min_count=2, latent_chunk=chunk)
        results.append((expl, *score(expl, sparse(acts_s), torch.from_numpy(ids_s), latent_chunk=chunk)))
    for expl, detection, r in results[1:]:
        assert expl.sets() == results[0][0].sets()
        assert torch.equal(expl.table_keys, results[0][0].table_keys)
        assert torch.allclose(expl.table_values, results[0][0].table_values)
        assert torch.allclose(detection, results[0][1], equal_nan=True)
        assert torch.allclose(r, results[0][2], equal_nan=True)


def test_a_latent_is_scored_only_on_the_score_half():
    """Latent 0 fires on token 5 only in the build half; in the score half it fires on
    other tokens: its label {5} is scored as worse than chance there, not as perfect."""
    g = np.random.default_rng(0)
    ids_b, ids_s = g.integers(0, 12, 600), g.integers(0, 12, 600)
    acts_b = np.where(ids_b == 5, 1.0, 0.0)[:, None].astype(np.float32)
    acts_s = np.where(ids_s == 6, 1.0, 0.0)[:, None].astype(np.float32)
    expl = explain(sparse(acts_b), torch.from_numpy(ids_b), 12)
    assert expl.sets() == [[5]]
    detection, r = score(expl, sparse(acts_s), torch.from_numpy(ids_s))
    assert float(detection[0]) < 0.5 and float(r[0]) < 0
    detection, r = score(expl, sparse(np.zeros_like(acts_s)), torch.from_numpy(ids_s))
    assert math.isnan(detection[0]) and math.isnan(r[0])  # never fires there: not scored


# --- the pass and the entry point -------------------------------------------------------------

def test_the_halves_are_alternate_whole_windows_without_start_tokens(model, shards):
    model.pos_embed.weight.data.zero_()
    halves = scan_halves(model, topk_sae(EMBED), shards, 0, batch_size=3, progress=False)
    tokens = np.asarray(shards.tokens("val"))
    n_windows = len(tokens) // N_CTX
    windows = {}
    for half, parity in (("build", 0), ("score", 1)):
        h = halves[half]
        w = h.positions.numpy() // N_CTX
        assert (w % 2 == parity).all()
        windows[half] = set(w.tolist())
        assert torch.equal(h.ids, torch.from_numpy(tokens[h.positions.numpy()].astype(np.int64)))
        assert (h.ids != shards.start_id).all()
        assert torch.allclose(h.x.float(), model.W_E[h.ids].detach(), atol=1e-2)  # rows line up
        assert h.codes.n_rows == len(h.ids)
    assert not windows["build"] & windows["score"]
    assert len(halves["build"].ids) + len(halves["score"].ids) == int((tokens[: n_windows * N_CTX] != 0).sum())
    part = scan_halves(model, topk_sae(EMBED), shards, 70, progress=False)  # rounded up to 5 windows
    assert max(int(part["score"].positions.max()), int(part["build"].positions.max())) // N_CTX == 4


def test_a_planted_token_latent_gets_its_token_and_perfect_scores(model, shards):
    t = 17
    sae = planted(model, t)
    out = auto_label(model, sae, shards, CFG, token_text=lambda i: f"tok{i}", progress=False)
    first = out["latents"][0]
    assert first["tokens"] == [t] and first["label"] == "'tok17'"
    assert first["detection_auroc"] == 1.0 and first["simulation_r"] == pytest.approx(1.0, abs=1e-6)
    for dead in out["latents"][1:]:
        assert dead["label"] is None and dead["detection_auroc"] is None and dead["simulation_r"] is None
    assert out["summary"]["sae"]["n"] == 1 and out["summary"]["sae"]["detection_auroc_mean"] == 1.0
    assert out["n_build_tokens"] > 0 and out["n_score_tokens"] > 0


def test_the_output_has_the_documented_shape_and_finite_baselines(model, shards):
    sae = topk_sae()
    out = auto_label(model, sae, shards, CFG, progress=False)
    assert json.loads(json.dumps(out)) == out
    assert set(out) == {"method", "n_build_tokens", "n_score_tokens", "latents", "summary"}
    assert [row["latent"] for row in out["latents"]] == list(range(48))
    assert set(out["latents"][0]) == {"latent", "label", "tokens", "detection_auroc", "simulation_r"}
    assert set(out["summary"]) == {"sae", "random", "pca"}
    for method, s in out["summary"].items():
        assert s["n"] > 0, method
        assert 0 <= s["detection_auroc_mean"] <= 1 and 0 <= s["detection_auroc_median"] <= 1
        assert -1 <= s["simulation_r_mean"] <= 1 and -1 <= s["simulation_r_median"] <= 1
    assert out["summary"]["pca"]["n"] <= D and out["summary"]["random"]["n"] <= D
    again = auto_label(model, sae, shards, CFG, progress=False, latent_chunk=5)
    assert again == out  # chunking the latents changes nothing, end to end


def test_direction_codes_fire_on_the_sae_share_of_build_tokens():
    g = torch.Generator().manual_seed(0)
    x = {"build": torch.randn(1000, 8, generator=g), "score": torch.randn(700, 8, generator=g)}
    codes = direction_codes(x, torch.eye(8), 0.05)
    for half, c in codes.items():
        assert c.n_cols == 16
        dense = np.zeros((c.n_rows, 16))
        dense[c.rows.numpy(), c.cols.numpy()] = c.values.numpy()
        proj = (x[half] - x["build"].mean(0)).numpy()
        proj = np.concatenate([proj, -proj], 1)
        build = (x["build"] - x["build"].mean(0)).numpy()
        threshold = -np.sort(-np.concatenate([build, -build], 1), 0)[50]  # the 51st largest
        np.testing.assert_allclose(dense, np.maximum(proj - threshold, 0), atol=1e-5)
        if half == "build":
            assert ((dense > 0).sum(0) == 50).all()


def test_principal_components_are_the_covariance_eigenvectors():
    x = torch.randn(500, 6) * torch.tensor([5.0, 4, 3, 2, 1, 0.5])
    rows = principal_components(x.half())
    assert torch.allclose(rows @ rows.T, torch.eye(6, dtype=torch.float64), atol=1e-8)
    _, vectors = np.linalg.eigh(np.cov(x.half().float().numpy().T))
    np.testing.assert_allclose(np.abs(rows.numpy() @ vectors[:, ::-1]), np.eye(6), atol=1e-4)


def test_bad_inputs_are_refused_in_one_line(model, shards):
    with pytest.raises(ValueError, match="no hook for"):
        auto_label(model, topk_sae("blocks.7.hook_resid_pre"), shards, CFG, progress=False)
    with pytest.raises(ValueError, match="move one"):
        auto_label(model, topk_sae().to("meta"), shards, CFG, progress=False)
    with pytest.raises(ValueError, match="label_tokens"):
        auto_label(model, topk_sae(), shards, FeaturesConfig(label_tokens=N_CTX), progress=False)


# --- ground truth -------------------------------------------------------------------------------

class CharTokenizer:
    """One token per character (ids 1..63), start token 0: offsets are trivially right."""

    start_id, vocab_size = 0, 64

    def encode(self, text):
        return [1 + ord(c) % 63 for c in text]

    def offsets(self, text):
        return [(i, i + 1) for i in range(len(text))]


def test_latent_variables_agree_with_ground_truth_recovery_and_a_brute_force_transpose(model):
    sae = topk_sae(d_sae=24)
    n, seed, first = 12, 0, 500
    got = latent_variables(model, sae, CharTokenizer(), n, seed, first, progress=False)
    truth = ground_truth_recovery(model, sae, CharTokenizer(), EvalConfig(ground_truth_stories=n),
                                  data_seed=seed, first_index=first)
    assert got["skipped"] == truth["skipped"] and len(got["variables"]) == len(truth["rows"]) > 0
    for row in truth["rows"]:  # per variable: the same latent and the same held-out AUROC
        mine = got["variables"][row["variable"]]
        assert mine["latent"] == row["sae"]["latent"]
        assert mine["auroc"] == pytest.approx(row["sae"]["auroc"], abs=1e-6)
        assert mine["selection_auroc"] == pytest.approx(row["sae"]["selection_auroc"], abs=1e-6)
    # per latent, by hand: the best variable on the selection stories, its AUROC on the report ones
    stories = list(generate_stories(n, seed=seed, start=first))
    acts, y = {}, {}
    for half, chosen in zip(("selection", "report"), split_stories(n)):
        x, labels = story_activations(model, sae.cfg.hook_in, CharTokenizer(), [stories[i] for i in chosen])
        acts[half], y[half] = sae.encode(x).detach(), binary_targets(labels)
    names = list(got["variables"])
    for j in (0, 5, 11):
        row = got["latents"][j]
        if not (acts["selection"][:, j] > 0).any():
            assert row["variable"] is None and row["auroc"] is None
            continue
        values = [brute_force_auroc(acts["selection"][:, j].numpy(), y["selection"][v]) for v in names]
        best = names[int(np.argmax(values))]
        assert row["variable"] == best
        assert row["auroc"] == pytest.approx(brute_force_auroc(acts["report"][:, j].numpy(), y["report"][best]),
                                             abs=1e-6)
    assert [row["latent"] for row in got["latents"]] == list(range(24))


def test_latent_variables_refuses_an_sae_on_another_device(model):
    with pytest.raises(ValueError):
        latent_variables(model, topk_sae().to("meta"), CharTokenizer(), 2, 0, 0, progress=False)
