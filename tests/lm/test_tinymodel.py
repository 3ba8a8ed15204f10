"""TinyModel into our GPT and SAE, checked against TinyModel's own code.

The reference is the tinymodel package's source (0.1.2.2.post9), read from its wheel:
the copy in /tmp/tm when there is one, else `pip download`ed (the tests skip, saying
why, when that fails). Its modules are loaded by file path under a private package name,
never `import tinymodel`: its __init__ downloads a tokenizer from the hub. Where a module
of theirs fetches something or imports what this environment lacks, the fixture puts in
a stand-in and says so.

The models are random, at a scaled-down shape TinyModel's constructor takes (2 layers,
d_model 64, 4 heads), with weights large enough that attention is far from uniform. The
tokenizer is checked on a stand-in base (a tiny byte-level BPE padded with unreachable
filler tokens to GPT-Neo's layout) and a stand-in table of 10,000 ids, against
tokenization.py's own enc and dec; the table the wheel ships is checked separately.
"""

import dataclasses
import importlib.util
import math
import shutil
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tinycourse.corpus.tokenizer import count_tokens, top_k_ids, unk_rates
from tinycourse.lm import tinymodel
from tinycourse.lm.model import GPT, generate_text
from tinycourse.lm.pretrained import PretrainedError
from tinycourse.lm.tinymodel import (
    SPARSE_MLP_HOOKS,
    TinyModelTokenizer,
    ascii_fold,
    clean_text,
    load_tinymodel,
    load_tinymodel_tokenizer,
    parse_sparse_mlp_tag,
    read_ts_to_neo,
    tinymodel_config,
    tinymodel_sparse_mlp,
    tinymodel_sparse_mlp_state,
    tinymodel_state_dict,
    tinymodel_tokenizer,
)
from tinycourse.sae.model import SparseAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4  # fp32
VERSION = "0.1.2.2.post9"
WHEEL = f"tinymodel-{VERSION}-py3-none-any.whl"
LOCAL_WHEEL = Path("/tmp/tm") / WHEEL
SHAPE = {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 24, "vocab_size": 50}
PRIVATE = "_tinymodel_reference"  # the package name their modules are loaded under


# --- TinyModel's own code, from its wheel ----------------------------------------------------

@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    if LOCAL_WHEEL.is_file():
        return LOCAL_WHEEL
    folder = tmp_path_factory.mktemp("tinymodel_wheel")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"tinymodel=={VERSION}", "-d", str(folder)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        tail = getattr(error, "stderr", b"") or b""
        pytest.skip(f"TinyModel's wheel is not in /tmp/tm and `pip download tinymodel=={VERSION}` "
                    f"failed ({type(error).__name__}: {tail.decode(errors='replace')[-200:]}): "
                    f"the comparisons against its code need it")
    return folder / WHEEL


@pytest.fixture(scope="session")
def tinymodel_src(wheel, tmp_path_factory):
    """The unzipped `tinymodel` package folder (lm.py, lm_modules.py, ...)."""
    folder = tmp_path_factory.mktemp("tinymodel_src")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    return folder / "tinymodel"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name, path):
    package = types.ModuleType(name)
    package.__path__ = [str(path)]
    sys.modules[name] = package
    return package


@pytest.fixture(scope="session")
def ref(tinymodel_src):
    """Their lm_modules, sparse_mlp and lm, loaded by path as _tinymodel_reference.*"""
    pytest.importorskip("einops")  # lm_modules.py computes with it
    _package(PRIVATE, tinymodel_src)
    # Stand-in: lm.py imports enc, dec from tokenization/tokenization.py, which downloads
    # GPT-Neo's tokenizer at import; only TinyModel.generate uses them.
    _package(f"{PRIVATE}.tokenization", tinymodel_src / "tokenization")
    fake = types.ModuleType(f"{PRIVATE}.tokenization.tokenization")
    fake.enc = fake.dec = lambda *a, **k: pytest.fail("TinyModel's tokenizer is not loaded here")
    sys.modules[fake.__name__] = fake
    stub_hub = importlib.util.find_spec("huggingface_hub") is None
    if stub_hub:
        # Stand-in: lm.py and sparse_mlp.py import hf_hub_download (called only by
        # from_pretrained, which the tests never use); core installs lack huggingface_hub
        hub = types.ModuleType("huggingface_hub")
        hub.hf_hub_download = lambda *a, **k: pytest.fail("no hub in tests")
        sys.modules["huggingface_hub"] = hub
    modules = types.SimpleNamespace(
        **{name: _load(f"{PRIVATE}.{name}", tinymodel_src / f"{name}.py")
           for name in ("lm_modules", "sparse_mlp", "lm")})
    yield modules
    for name in [k for k in sys.modules if k == PRIVATE or k.startswith(PRIVATE + ".")]:
        del sys.modules[name]
    if stub_hub:
        sys.modules.pop("huggingface_hub", None)


def their_model(ref, seed=0, **shape):
    """A random TinyModel (their class) at `shape`, every weight and bias random."""
    torch.manual_seed(seed)
    model = ref.lm.TinyModel(**(SHAPE | shape), from_pretrained=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif name in ("embed.weight", "pos_embed"):
                p.copy_(torch.randn_like(p))
            else:  # (out, in): keep activations O(1); Q and K larger, for peaked attention
                gain = 2.0 if name.endswith(("Q.weight", "K.weight")) else 1.0
                p.copy_(gain * torch.randn_like(p) / math.sqrt(p.shape[-1]))
    return model.eval()


def their_logits(model, tokens):
    """TinyModel's logits before its log_softmax."""
    x = model.embed(tokens) + model.pos_embed[:, : tokens.shape[-1]]
    return model.lm_head(model.torso(x))


def rand_tokens(vocab, batch=3, pos=SHAPE["max_seq_len"], seed=1):
    return torch.randint(0, vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def captured(model, modules, tokens):
    """Run their model, keeping what each of `modules` ({name: HookPoint}) outputs."""
    seen, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, out.detach())))
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for h in handles:
            h.remove()
    return seen


def ours_from(model, tmp_path, name="tiny_model.pt"):
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return load_tinymodel(path, n_heads=model.n_heads)


# --- the model ---------------------------------------------------------------------------------

def test_same_log_probs_logits_and_residuals_as_tinymodel(ref, tmp_path):
    theirs = their_model(ref)
    torch.save(theirs.state_dict(), tmp_path / "tiny_model.pt")
    ours = load_tinymodel(tmp_path, n_heads=SHAPE["n_heads"])  # the folder
    assert isinstance(ours, GPT) and not ours.training
    assert ours.unembed.bias is not None
    for x in (rand_tokens(SHAPE["vocab_size"]), rand_tokens(SHAPE["vocab_size"], pos=9, seed=2)):
        with torch.no_grad():
            logits = ours(x)
            expected = their_logits(theirs, x)
            assert expected.std() > 1  # weights that matter, not a near-uniform output
            torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
            # what TinyModel.forward returns: log-probabilities
            torch.testing.assert_close(logits.log_softmax(-1), theirs(x), atol=ATOL, rtol=0)
            for layer in range(SHAPE["n_layers"]):
                torch.testing.assert_close(ours(x, stop_at_layer=layer),
                                           theirs(x, return_idx=layer), atol=ATOL, rtol=0)


def test_a_wrong_mapping_would_show(ref, tmp_path):
    """q and k swapped, no unembedding bias, unscaled scores: each gives other logits."""
    theirs = their_model(ref)
    ours = ours_from(theirs, tmp_path)
    x = rand_tokens(SHAPE["vocab_size"])
    with torch.no_grad():
        expected = their_logits(theirs, x)
    good = ours.state_dict()
    swapped = dict(good)
    for i in range(SHAPE["n_layers"]):
        q, k, v = good[f"blocks.{i}.attn.qkv.weight"].chunk(3)
        swapped[f"blocks.{i}.attn.qkv.weight"] = torch.cat([k, q, v])
    no_bias = dict(good, **{"unembed.bias": torch.zeros_like(good["unembed.bias"])})
    wrongs = {"q<->k": (ours.cfg, swapped), "no unembed bias": (ours.cfg, no_bias),
              "attn_scale=False": (dataclasses.replace(ours.cfg, attn_scale=False), good)}
    for what, (cfg, state) in wrongs.items():
        other = tinymodel.GPT(cfg).eval()
        other.load_state_dict(state)
        with torch.no_grad():
            gap = (other(x) - expected).abs().max()
        assert gap > 1000 * ATOL, (what, gap)


def test_heads_are_their_heads(ref, tmp_path):
    """A head permutation applied to Q, K, V and O alike would leave the logits alone:
    compare each head's queries, keys, values and outputs."""
    theirs = their_model(ref)
    ours = ours_from(theirs, tmp_path)
    x = rand_tokens(SHAPE["vocab_size"])
    layer = 1
    attn = theirs.torso[layer].attn
    seen = captured(theirs, {"q": attn.qs, "k": attn.ks, "v": attn.vs, "z": attn.head_writeouts}, x)
    names = {w: f"blocks.{layer}.attn.hook_{w}" for w in "qkvz"}
    _, cache = ours.run_with_cache(x, names=list(names.values()))
    for w, name in names.items():
        # theirs (batch, head, pos, d_head), ours (batch, pos, head, d_head)
        torch.testing.assert_close(cache[name].transpose(1, 2), seen[w], atol=ATOL, rtol=0)


def test_the_real_shape_maps(ref):
    """TinyModel's published shape, random weights (its own init): every key and shape fits."""
    theirs = ref.lm.TinyModel(from_pretrained=False).eval()
    state = theirs.state_dict()
    cfg = tinymodel_config(state)
    assert cfg == tinymodel_config()
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_ctx,
            cfg.d_vocab) == (4, 768, 16, 48, 3072, 256, 10_000)
    assert (cfg.norm, cfg.act, cfg.qkv_bias, cfg.attn_scale, cfg.tied_embeddings) == (
        "none", "relu", False, True, False)
    ours = tinymodel.GPT(cfg).eval()
    ours.load_state_dict(tinymodel_state_dict(state))  # strict
    x = rand_tokens(10_000, batch=1, pos=8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).log_softmax(-1), theirs(x), atol=ATOL, rtol=0)


def test_our_gpt_has_the_unembed_bias_option(ref, tmp_path):
    theirs = their_model(ref)
    ours = ours_from(theirs, tmp_path)
    assert type(ours) is GPT and ours.cfg.unembed_bias and ours.unembed.bias is not None
    x = rand_tokens(SHAPE["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), their_logits(theirs, x), atol=ATOL, rtol=0)


def test_generates_with_its_tokenizer(ref, tmp_path, standin_base, standin_table):
    theirs = their_model(ref, d_model=16, vocab_size=10_000)
    model = ours_from(theirs, tmp_path)
    tokenizer = TinyModelTokenizer(standin_base, standin_table)
    prompt = "Once upon a time"  # the stand-in keeps only 40 tokens: some of it is [UNK]
    story = generate_text(model, tokenizer, prompt, 6, start_id=tokenizer.start_id,
                          stop_id=tokenizer.end_id, temperature=0)
    assert story.startswith(tokenizer.decode(tokenizer.encode(prompt))) and "[BEGIN]" not in story


# --- bad input ---------------------------------------------------------------------------------

def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_extra_or_misshapen_weights_are_named(ref):
    state = their_model(ref).state_dict()
    broken = {k: v for k, v in state.items()
              if k not in ("torso.1.attn.K.weight", "lm_head.bias")}
    with pytest.raises(PretrainedError) as error:
        tinymodel_state_dict(broken)
    assert "lacks torso.1.attn.K.weight, lm_head.bias" in one_line(error)
    with pytest.raises(PretrainedError, match=r"lacks pos_embed, .*torso\.0\.\*") as error:
        tinymodel_state_dict({"embed.weight": state["embed.weight"]})
    one_line(error)
    with pytest.raises(PretrainedError, match="has weights a TinyModel has not: torso.0.ln.w"):
        tinymodel_state_dict({**state, "torso.0.ln.w": torch.ones(3)})
    with pytest.raises(PretrainedError, match=r"torso.1.attn.V.weight has shape \(64, 32\)"):
        tinymodel_state_dict({**state, "torso.1.attn.V.weight": torch.ones(64, 32)})
    with pytest.raises(PretrainedError, match="not a list"):
        tinymodel_state_dict([1, 2])


def test_bad_files_and_names(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(PretrainedError, match="not a TinyModel state dict that torch.load") as e:
        load_tinymodel(tmp_path / "junk.pt")
    one_line(e)
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(PretrainedError, match="2 .pt files and no tiny_model.pt"):
        load_tinymodel(tmp_path)
    with pytest.raises(PretrainedError, match="neither a file or folder here nor a TinyModel"):
        load_tinymodel("tiny_model_9L")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so a file downloaded on this machine cannot answer."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_hub_fails_at_once_naming_the_local_file(empty_hub_cache):
    start = time.monotonic()  # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE") as error:
        load_tinymodel("tiny_model")
    assert time.monotonic() - start < 2
    message = one_line(error)
    assert "cannot be reached" in message
    assert ("hf download noanabeshima/tiny_model tiny_model.pt --local-dir models/tiny_model"
            in message)
    assert 'load_tinymodel("models/tiny_model/tiny_model.pt")' in message
    with pytest.raises(PretrainedError) as error:
        tinymodel_sparse_mlp("M2")
    message = one_line(error)
    assert ("hf download noanabeshima/tiny_model mlp_map_test/M2_S-2_R1_P0.pt --local-dir "
            "models/tiny_model") in message
    assert 'tinymodel_sparse_mlp("models/tiny_model/mlp_map_test/M2_S-2_R1_P0.pt")' in message


def test_a_model_in_the_hub_cache_loads_offline(ref, empty_hub_cache):
    """huggingface_hub's cache layout: refs/main names the snapshot folder."""
    theirs = their_model(ref)
    repo = empty_hub_cache / "models--noanabeshima--tiny_model"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.save(theirs.state_dict(), repo / "snapshots" / commit / "tiny_model.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    ours = load_tinymodel("tiny_model", n_heads=SHAPE["n_heads"])
    x = rand_tokens(SHAPE["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), their_logits(theirs, x), atol=ATOL, rtol=0)


# --- SAEs and transcoders ----------------------------------------------------------------------

def their_sparse_mlp(ref, d_model=SHAPE["d_model"], n_features=96, seed=0):
    torch.manual_seed(seed)
    sparse = ref.sparse_mlp.SparseMLP(d_model=d_model, n_features=n_features)
    with torch.no_grad():
        for name, p in sparse.named_parameters():
            scale = 1 / math.sqrt(p.shape[-1]) if name.endswith("weight") else 1.0
            p.copy_(scale * torch.randn_like(p))  # a large decoder bias: the centring shows
    return sparse


def ours_sae(their_sparse, tag):
    cfg, state, d_in, d_out = tinymodel_sparse_mlp_state(their_sparse.state_dict(), tag)
    sae = SparseAutoencoder(cfg, d_in, d_out).eval()
    sae.load_state_dict(state)  # strict
    return sae


@pytest.mark.parametrize("tag", ["M2", "A0", "Ra1", "Rm3", "Mo0", "mlp_map_test/M1_S-2_R1_P0"])
def test_sparse_mlp_same_latents_and_outputs(ref, tag):
    sparse = their_sparse_mlp(ref)
    sae = ours_sae(sparse, tag)
    kind, layer = parse_sparse_mlp_tag(tag)
    assert sae.cfg.kind == "relu" and sae.d_sae == 96 and sae.is_transcoder == (kind == "M")
    assert (sae.cfg.hook_in, sae.cfg.hook_out) == tuple(
        h.format(L=layer) for h in SPARSE_MLP_HOOKS[kind])
    x = 2 * torch.randn(50, SHAPE["d_model"])
    with torch.no_grad():
        latents, expected = sparse.get_acts(x), sparse(x)
        assert 0.1 < (latents > 0).float().mean() < 0.9
        torch.testing.assert_close(sae.encode(x), latents, atol=1e-5, rtol=0)
        out = sae(x)
        torch.testing.assert_close(out.latents, latents, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.reconstruction, expected, atol=1e-5, rtol=0)
        # any leading shape, as their get_acts takes (batch, pos, d_model)
        torch.testing.assert_close(sae.encode(x.view(5, 10, -1)), latents.view(5, 10, -1),
                                   atol=1e-5, rtol=0)


def test_sparse_mlps_read_what_theirs_read(ref, tmp_path):
    """Each tag kind's hook_in (and a transcoder's hook_out) carries what TinyModel feeds it."""
    theirs = their_model(ref)
    ours = ours_from(theirs, tmp_path)
    x = rand_tokens(SHAPE["vocab_size"])
    layer = 1
    block = theirs.torso[layer]
    points = {"Ra": block.res_attn, "A": block.attn.attn_out, "Rm": block.res_mlp,
              "M": block.res_mlp, "Mo": block.mlp.mlp_out, "M_out": block.mlp.mlp_out}
    seen = captured(theirs, points, x)
    _, cache = ours.run_with_cache(x)
    for kind, (hook_in, hook_out) in SPARSE_MLP_HOOKS.items():
        torch.testing.assert_close(cache[hook_in.format(L=layer)], seen[kind], atol=ATOL, rtol=0)
        if hook_out:
            torch.testing.assert_close(cache[hook_out.format(L=layer)], seen["M_out"],
                                       atol=ATOL, rtol=0)
    # and through TinyModel's own lm.sparse_mlp, for the kinds its tag parser takes
    for tag in ("M1", "A1", "Mo1_S-1_R1_P0"):
        sparse = their_sparse_mlp(ref)
        sae = ours_sae(sparse, tag)
        with torch.no_grad():
            expected = theirs.sparse_mlp(mlp_tag=tag, mlp=sparse)(x)
            torch.testing.assert_close(sae.encode(cache[sae.cfg.hook_in]), expected,
                                       atol=ATOL, rtol=0)


def test_sparse_mlp_from_a_file_and_bad_input(ref, tmp_path):
    sparse = their_sparse_mlp(ref)
    path = tmp_path / "A2_S-2_R1_P0.pt"
    torch.save(sparse.state_dict(), path)
    got = tinymodel_sparse_mlp(path)
    assert got.cfg.hook_in == "blocks.2.hook_attn_out" and (got.d_in, got.d_out) == (64, 64)
    assert tinymodel_sparse_mlp(path, tag="M0").cfg.hook_out == "blocks.0.hook_mlp_out"
    state = sparse.state_dict()
    with pytest.raises(PretrainedError) as error:
        tinymodel_sparse_mlp_state({k: state[k] for k in ("encoder.weight", "decoder.bias")}, "M0")
    assert "lacks encoder.bias, decoder.weight" in one_line(error)
    with pytest.raises(PretrainedError, match="not a TinyModel SAE tag") as error:
        tinymodel_sparse_mlp_state(state, "X1")
    one_line(error)
    with pytest.raises(PretrainedError, match="neither a file here nor a TinyModel SAE"):
        tinymodel_sparse_mlp("nothing.pt")


# --- the tokenizer -----------------------------------------------------------------------------

TEXTS = ["Once upon a time, there was a little girl named Lily. She liked to play.",
         'Tom said, "Can I have the ball?" Lily said, "Yes!" They were happy.',
         "The dog ran to the park. It saw a big red ball. The end."] * 20
CHECKED = [
    "Once upon a time, there was a little girl named Lily.",
    "The zebra quickly jumped over Xylophone Mountain!",  # rare pieces: [UNK]
    "Tom said,\t\"Can I have the ball?\"  \n\n\nThe end.   ",  # what clean_text changes
    "She liked [END] to play.",  # a special token written in the text
    "",
]
N_KEPT = 40  # stand-in ordinary tokens that occur in TEXTS; the rest of TEXTS's are [UNK]
N_TABLE = 10_000  # tokenization.py hard-codes 10,000 ids (raw_toks)


def standin_base_tokenizer(size):
    """A byte-level BPE trained on TEXTS, padded with unreachable filler tokens to `size`
    ids, the last of them <|endoftext|> (GPT-Neo's has 50257, <|endoftext|> 50256)."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"filler{i}": len(vocab) + i for i in range(size - 1 - len(vocab))})
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == size
    return tok


@pytest.fixture(scope="module")
def standin_base():
    return standin_base_tokenizer(10_300)


@pytest.fixture(scope="module")
def standin_table(standin_base):
    """TinyModel's layout on the stand-in: the N_KEPT most frequent tokens of TEXTS, filler
    tokens up to 9996 ordinary ids, then [BEGIN] [END] [PAD] [UNK] as the base adds them."""
    frequent = top_k_ids(count_tokens(standin_base, TEXTS), N_KEPT)
    fillers = [standin_base.token_to_id(f"filler{i}") for i in range(N_TABLE - 4 - N_KEPT)]
    n = standin_base.get_vocab_size()
    return torch.tensor(frequent + fillers + [n, n + 1, n + 2, n + 3])


@pytest.fixture(scope="module")
def ref_tokenization(tinymodel_src, standin_base, standin_table, tmp_path_factory):
    """Their tokenization.py, loaded by path from a copy beside stand-in tables, with
    AutoTokenizer.from_pretrained (a hub download) answering with the stand-in base."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tinymodel_tokenization")
    shutil.copy(tinymodel_src / "tokenization" / "tokenization.py", folder)
    torch.save(standin_table, folder / "ts_tok_ids_to_neo.pt")
    neo_to_ts = torch.full((standin_base.get_vocab_size() + 4,), N_TABLE - 1)
    neo_to_ts[standin_table] = torch.arange(N_TABLE)
    torch.save(neo_to_ts, folder / "neo_tok_ids_to_ts.pt")
    base = standin_base.to_str()

    def from_pretrained(name, **kwargs):
        assert name == "roneneldan/TinyStories"  # GPT-Neo's tokenizer, as TinyStories has it
        from tokenizers import Tokenizer
        return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(base))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
        if importlib.util.find_spec("unidecode") is None:
            # Stand-in: unidecode is not installed here; the texts compared are ASCII, which
            # it leaves alone
            fake = types.ModuleType("unidecode")
            fake.unidecode = lambda text: text if text.isascii() else pytest.fail(text)
            patch.setitem(sys.modules, "unidecode", fake)
        module = _load(f"{PRIVATE}_tokenization", folder / "tokenization.py")
    yield module
    sys.modules.pop(module.__name__, None)


def test_encode_matches_their_enc(ref_tokenization, standin_base, standin_table):
    ours = TinyModelTokenizer(standin_base, standin_table)
    theirs = ref_tokenization
    assert (ours.start_id, ours.end_id, ours.pad_id, ours.unk_id, ours.vocab_size) == (
        9996, 9997, 9998, 9999, 10_000)
    assert ours.top_k == len(ours.kept_base_ids) == 9996
    for token in ("[BEGIN]", "[END]", "[PAD]", "[UNK]"):  # the same base ids as theirs
        assert ours.base.token_to_id(token) == theirs.neo_tokenizer.convert_tokens_to_ids(token)
    for text in CHECKED[:-1]:
        assert ours.encode(text) == theirs.enc(text)[0].tolist(), text
        assert [ours.start_id] + ours.encode(text) == theirs.enc(text, add_begin=True)[0].tolist()
    assert ours.unk_id in ours.encode(CHECKED[1])
    assert ours.end_id in ours.encode(CHECKED[3])
    assert ours.encode("") == []


def test_a_batch_of_theirs_is_ours_then_end_and_padding(ref_tokenization, standin_base,
                                                         standin_table):
    """enc pads a batch, and writes [END] on the first pad: the longest row has none."""
    ours = TinyModelTokenizer(standin_base, standin_table)
    texts = CHECKED[:3]
    rows = ref_tokenization.enc(texts, add_begin=True)
    width = rows.shape[1]
    for row, ids in zip(rows.tolist(), ours.encode_batch(texts)):
        tail = []
        if len(ids) < width - 1:  # a shorter row: [END] on its first pad
            tail = [ours.end_id] + [ours.pad_id] * (width - 2 - len(ids))
        assert row == [ours.start_id] + ids + tail


def test_decode_matches_their_dec(ref_tokenization, standin_base, standin_table):
    ours = TinyModelTokenizer(standin_base, standin_table)
    for text in CHECKED[:-1]:
        ids = ours.encode(text)
        assert ours.decode(ids) == ref_tokenization.dec(torch.tensor(ids)), text
    special = [ours.unk_id, 3, ours.end_id, 0, ours.pad_id]
    assert ours.decode(special) == ref_tokenization.dec(special)
    assert "[UNK]" in ours.decode(special) and "[END]" in ours.decode(special)
    # [BEGIN] is dropped, as RemapTokenizer drops its own
    assert ours.decode([ours.start_id, 3, 0]) == ref_tokenization.dec([3, 0])
    kept = " the ball."  # no [UNK] in it: decoding gives the text back exactly
    assert ours.unk_id not in ours.encode(kept) and ours.decode(ours.encode(kept)) == kept
    with pytest.raises(ValueError, match="outside TinyModel's 0..9999"):
        ours.decode([10_000])


def test_clean_text_is_theirs(ref_tokenization):
    for text in CHECKED + ["a\t\tb  c \t\n d\n\n\ne  ", "  lead\r\n\r\nx"]:
        assert clean_text(text) == ref_tokenization.clean_text(text), repr(text)
        assert clean_text(clean_text(text)) == clean_text(text)  # idempotent


def test_ascii_fold_does_what_unidecode_does_to_story_punctuation():
    # Unidecode 1.4.0's output for each (see tinymodel.py's _ASCII table)
    expected = {"\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f": "'','\"\",,\"",
                "\u2013\u2014\u2015\u2012": "------", "\u2026": "...", "\u00ab\u00bb": "<<>>",
                "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00e7\u00f1\u00fc\u00f6\u00ef\u00ee"
                "\u00f4\u00fb\u00c9\u00c0": "eeeeaaacnuoiiouEA",
                "\u00df\u00e6\u00c6\u00f8\u00d8\u0153\u0152\u0142\u0141\u0111": "ssaeAEoOoeOElLd",
                "\u00a1\u00bf": "!?", "\u2019s": "'s", "a\u00a0b": "a b"}
    for text, ascii_text in expected.items():
        assert ascii_fold(text) == ascii_text, repr(text)
    assert clean_text("\u201cHi,\u201d she said\u2026") == '"Hi," she said...'


def test_pieces_offsets_and_unk_rates(standin_base, standin_table):
    ours = TinyModelTokenizer(standin_base, standin_table)
    text = CHECKED[1]
    pieces = ours.pieces(text)
    assert len(pieces) == len(ours.encode(text)) == len(ours.offsets(text))
    assert [p == "[UNK]" for p in pieces] == [i == ours.unk_id for i in ours.encode(text)]
    assert "".join(p for p in pieces) != text  # the [UNK]s replace their pieces
    rates = unk_rates(ours, [text, CHECKED[0]])
    assert rates["stories"] == 2 and 0 < rates["unk_token_share"] < 1


def test_save_and_load(standin_base, standin_table, tmp_path):
    ours = TinyModelTokenizer(standin_base, standin_table)
    ours.save(tmp_path)
    assert not (tmp_path / "remap.json").exists()  # load_tokenizer would give RemapTokenizer's ids
    again = load_tinymodel_tokenizer(tmp_path)
    assert isinstance(again, TinyModelTokenizer) and again.hash == ours.hash
    assert again.encode(CHECKED[2]) == ours.encode(CHECKED[2])
    assert (again.start_id, again.unk_id) == (ours.start_id, ours.unk_id)
    # the course's own loader reads it too, with TinyModel's ids (a run's tokenizer folder)
    from tinycourse.corpus.tokenizer import load_tokenizer

    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, TinyModelTokenizer) and loaded.hash == ours.hash
    assert loaded.encode(CHECKED[2]) == ours.encode(CHECKED[2])


def test_the_shipped_table_is_gpt_neos(tinymodel_src, wheel, tmp_path):
    """The wheel's ts_tok_ids_to_neo.pt read from the wheel, the package folder or the file;
    on a 50257-token base its inverse is the neo_tok_ids_to_ts.pt the wheel also ships."""
    table = read_ts_to_neo(wheel)
    assert np.array_equal(table, read_ts_to_neo(tinymodel_src))
    assert np.array_equal(table, read_ts_to_neo(tinymodel_src.parent))
    assert np.array_equal(table, read_ts_to_neo(
        tinymodel_src / "tokenization" / "ts_tok_ids_to_neo.pt"))
    assert table.shape == (10_000,) and table[:3].tolist() == [13, 11, 262]  # GPT-2's . , " the"
    assert table[-4:].tolist() == [50257, 50258, 50259, 50260]
    tok = TinyModelTokenizer(standin_base_tokenizer(50_257), table)
    assert (tok.start_id, tok.end_id, tok.pad_id, tok.unk_id) == (9996, 9997, 9998, 9999)
    shipped = torch.load(tinymodel_src / "tokenization" / "neo_tok_ids_to_ts.pt", weights_only=True)
    assert np.array_equal(tok.lookup, shipped.numpy())


def test_tinymodel_tokenizer_from_files_and_its_errors(standin_base, standin_table, tmp_path,
                                                       monkeypatch):
    standin_base.save(str(tmp_path / "tokenizer.json"))
    torch.save(standin_table, tmp_path / "ts_tok_ids_to_neo.pt")
    tok = tinymodel_tokenizer(tmp_path, tmp_path / "ts_tok_ids_to_neo.pt")  # folder, file
    assert tok.encode(CHECKED[0]) == TinyModelTokenizer(standin_base, standin_table).encode(
        CHECKED[0])
    with pytest.raises(PretrainedError, match="hf download EleutherAI/gpt-neo-125M") as error:
        tinymodel_tokenizer(tmp_path / "nothing")
    one_line(error)
    monkeypatch.setattr(tinymodel, "find_spec", lambda name: None)
    with pytest.raises(PretrainedError, match=f"pip download --no-deps tinymodel=={VERSION}") as e:
        read_ts_to_neo()
    one_line(e)
    with pytest.raises(PretrainedError, match="base ids up to"):
        TinyModelTokenizer(standin_base, standin_table * 2)
    with pytest.raises(PretrainedError, match=r"\[BEGIN\] is base id"):
        TinyModelTokenizer(standin_base, standin_table[:-4])
    with pytest.raises(PretrainedError, match="distinct"):
        TinyModelTokenizer(standin_base, torch.zeros(5, dtype=torch.long))
