"""TinyModel (Noa Nabeshima, 2024), its tokenizer, SAEs and transcoders, as ours.

    model = load_tinymodel("models/tiny_model/tiny_model.pt")        # or "tiny_model" (hub)
    tokenizer = tinymodel_tokenizer("models/gpt-neo-125M/tokenizer.json",
                                    "models/tinymodel/tinymodel-0.1.2.2.post9-py3-none-any.whl")
    generate_text(model, tokenizer, "Once upon a time", 40, start_id=tokenizer.start_id,
                  stop_id=tokenizer.end_id)

TinyModel is a 4-layer TinyStories model trained for interpretability: d_model 768, 16
heads of 48, ReLU MLPs of 3072, 256 learned positions, a 10K vocabulary, and no layer norm
anywhere. Its package (`pip install tinymodel`, matched here against 0.1.2.2.post9) pins
numpy<2 and transformers<5 and downloads a tokenizer from the hub when imported, so it
stays out of this environment: this module reads its files, never imports it.

The model, read from its `lm.py` and `lm_modules.py`. `TinyModel.state_dict()` holds
`embed.weight` (d_vocab, d_model), `pos_embed` (1, 256, d_model), per layer
`torso.{i}.attn.{Q,K,V}.weight` (no biases), `attn.O.weight`/`.bias`,
`mlp.read_in.*` and `mlp.write_out.*`, and `lm_head.weight`/`.bias`. What that is in our
`ModelConfig`:

- `norm="none"`: blocks are x + attn(x), then + mlp(.); no final norm either;
- `act="relu"`, d_mlp = 4 * d_model (read from `read_in`);
- `qkv_bias=False`; Q, K, V rows run (head, d_head) (`einops "b s (h d) -> b h s d"`), as
  ours do within each of q, k, v, so they stack into our `qkv`; head i is head i;
- `attn_scale=True`: `F.scaled_dot_product_attention(is_causal=True)` with its default
  scale 1/sqrt(d_head);
- untied embeddings, and an unembedding WITH a bias (`nn.Linear(d_model, d_vocab)`:
  `unembed_bias=True`, see below);
- `TinyModel.forward` returns log-probabilities, `log_softmax(lm_head(x))`; our GPT returns
  the logits before it, so `model(tokens).log_softmax(-1)` is what TinyModel returns.

The weights do not say how many heads there are: `n_heads=16` (the package's only value)
unless told otherwise.

**The unembedding bias.** It cannot be folded into other weights without a norm (logits =
W_U x + b_U, and b_U is not in W_U's 768-dimensional column space for a 10K vocabulary),
so our GPT takes `ModelConfig(unembed_bias=True)` (state key `unembed.bias`).

The tokenizer, read from `tokenization/tokenization.py`. Its README says GPT-NeoX, but the
code uses GPT-Neo's: `AutoTokenizer.from_pretrained("roneneldan/TinyStories")`, the
TinyStories models' tokenizer, GPT-2's 50257-token BPE, and the table it ships confirms
it: the four tokens it adds, `[BEGIN]`, `[END]`, `[PAD]`, `[UNK]` (in that order), are
ids 50257-50260 there (GPT-NeoX's tokenizer has 50277 tokens), and TinyModel's most
frequent tokens are GPT-2's ids 13 ".", 11 ",", 262 " the". Encoding: clean the text
(`clean_text`), encode with GPT-Neo's BPE, send every id outside the 10K kept to `[UNK]`,
and renumber with `ts_tok_ids_to_neo.pt`: TinyModel id i is GPT-Neo id
`ts_tok_ids_to_neo[i]`. Ids 0-9995 are ordinary tokens, most frequent first; 9996 is
`[BEGIN]` (TinyModel starts every story with it), 9997 `[END]`, 9998 `[PAD]`, 9999
`[UNK]`. That is not `RemapTokenizer`'s layout (`[UNK]` 0, kept tokens 1..K, `[BEGIN]`
K+1), and TinyModel's ids are what its weights and its pre-tokenized dataset use, so
`TinyModelTokenizer` is a `RemapTokenizer` with TinyModel's ids: `tinymodel_tokenizer`.

Its SAEs and transcoders, read from `sparse_mlp.py`: `SparseMLP` is
relu(x @ encoder.W.T + encoder.b) @ decoder.W.T + decoder.b, with no input centring.
`tinymodel_sparse_mlp_state` gives our `SparseAutoencoder` (kind "relu") the same latents
and outputs, placed at our hook names by the tag's kind (`lm.py`'s `sparse_mlp`: "M" reads
the MLP's input, the others what their name says):

    M  transcoder  blocks.L.hook_resid_mid -> blocks.L.hook_mlp_out
    A  SAE         blocks.L.hook_attn_out
    Ra SAE         blocks.L.hook_resid_pre
    Rm SAE         blocks.L.hook_resid_mid
    Mo SAE         blocks.L.hook_mlp_out

The hub (huggingface.co/noanabeshima/tiny_model) holds `tiny_model.pt` (and the 2-layer
`tiny_model_2L_1E.pt`, `tiny_model_2L_3E.pt`) and the SAEs (`mlp_map_test/M0_S-2_R1_P0.pt`
and the rest of `DEFAULT_SPARSE_MLPS`); a local file needs no network.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.torch
import torch
from tokenizers import Tokenizer

from ..config import ModelConfig, SAEConfig
# the tokenizer is a corpus module (so `load_tokenizer` reads a saved one); re-exported here
from ..corpus.tinymodel_tokenizer import TinyModelTokenizer, ascii_fold, clean_text, load_tinymodel_tokenizer
from .model import GPT
from .pretrained import PretrainedError, _hub_unreachable

HUB_REPO = "noanabeshima/tiny_model"
HUB_MODELS = ("tiny_model", "tiny_model_2L_1E", "tiny_model_2L_3E")  # lm.py's get_state_dict
# lm.py's DEFAULT_SPARSE_MLPS: tag -> file on the hub (without .pt)
DEFAULT_SPARSE_MLPS = {
    "M0": "mlp_map_test/M0_S-2_R1_P0", "M1": "mlp_map_test/M1_S-2_R1_P0",
    "M2": "mlp_map_test/M2_S-2_R1_P0", "M3": "mlp_map_test/M3_S-1_B0_P0",
    "A0": "attn/A0_S-2_R1_P0", "A1": "attn/A1_S-1_R1_P0",
    "A2": "attn/A2_S-2_R1_P0", "A3": "attn/A3_S-1_R1_P0",
}
PACKAGE_VERSION = "0.1.2.2.post9"  # the tinymodel wheel this module was read against
WHEEL = f"tinymodel-{PACKAGE_VERSION}-py3-none-any.whl"
TABLE = "tinymodel/tokenization/ts_tok_ids_to_neo.pt"  # TinyModel id -> GPT-Neo id
# the published TinyModel (lm.py's TinyModel defaults)
N_LAYERS, D_MODEL, N_HEADS, N_CTX, D_VOCAB = 4, 768, 16, 256, 10_000

LAYER_KEYS = ("attn.Q.weight", "attn.K.weight", "attn.V.weight", "attn.O.weight", "attn.O.bias",
              "mlp.read_in.weight", "mlp.read_in.bias", "mlp.write_out.weight",
              "mlp.write_out.bias")
OTHER_KEYS = ("embed.weight", "pos_embed", "lm_head.weight", "lm_head.bias")


def _check_keys(state: dict, expected, subject: str, what: str, owner: str, also_missing=()) -> None:
    """One-line errors for `subject` ("the state dict") that is not `what`: the keys it
    lacks, or the weights it has that `owner` ("a TinyModel") has not."""
    missing = [k for k in expected if k not in state] + list(also_missing)
    if missing:
        more = f" ... ({len(missing)} in all)" if len(missing) > 8 else ""
        raise PretrainedError(f"{subject} lacks {', '.join(missing[:8])}{more}: not {what}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PretrainedError(f"{subject} has weights {owner} has not: "
                              f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")


# --- the model ---------------------------------------------------------------------------------

def tinymodel_config(their_state: dict[str, torch.Tensor] | None = None, *,
                     n_heads: int = N_HEADS) -> ModelConfig:
    """Our ModelConfig for a TinyModel: the published one (None), or the shape of
    `their_state` (a `TinyModel.state_dict()`). `n_heads` is not in the weights."""
    if their_state is None:
        n_layers, d_model, n_ctx, d_vocab, d_mlp = N_LAYERS, D_MODEL, N_CTX, D_VOCAB, 4 * D_MODEL
    else:
        n_layers, d_model, n_ctx, d_vocab, d_mlp = _check_state(their_state)
    if d_model % n_heads:
        raise PretrainedError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    return ModelConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
        d_mlp=d_mlp, n_ctx=n_ctx, d_vocab=d_vocab, norm="none", act="relu",
        tied_embeddings=False, qkv_bias=False, attn_scale=True, unembed_bias=True,
    )


def tinymodel_state_dict(their_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `TinyModel.state_dict()` -> ours, for a GPT built by `tinymodel_config`.

    Q, K, V (d_model, d_model) stack into qkv (3 d_model, d_model); `pos_embed`
    (1, n_ctx, d_model) loses its leading 1; the rest is renamed. Refuses (PretrainedError,
    one line) a state dict with missing, extra or misshapen weights.
    """
    n_layers, d_model, n_ctx, _, _ = _check_state(their_state)
    t = their_state
    out = {"embed.weight": t["embed.weight"],
           "pos_embed.weight": t["pos_embed"].reshape(n_ctx, d_model)}
    for i in range(n_layers):
        theirs, ours = f"torso.{i}.", f"blocks.{i}."
        out[ours + "attn.qkv.weight"] = torch.cat([t[theirs + f"attn.{x}.weight"] for x in "QKV"])
        out[ours + "attn.out.weight"] = t[theirs + "attn.O.weight"]
        out[ours + "attn.out.bias"] = t[theirs + "attn.O.bias"]
        for their_fc, our_fc in (("read_in", "fc_in"), ("write_out", "fc_out")):
            for p in ("weight", "bias"):
                out[ours + f"mlp.{our_fc}.{p}"] = t[theirs + f"mlp.{their_fc}.{p}"]
    out["unembed.weight"], out["unembed.bias"] = t["lm_head.weight"], t["lm_head.bias"]
    return out


def load_tinymodel(path_or_name: str | os.PathLike = "tiny_model",
                   device: str | torch.device = "cpu", *, n_heads: int = N_HEADS) -> GPT:
    """A TinyModel as our GPT in eval mode.

    `path_or_name` is a state dict file (`tiny_model.pt`, as the hub has it, or a
    .safetensors of the same keys), a folder holding `tiny_model.pt` (or a single .pt), or
    a hub name: tiny_model, tiny_model_2L_1E, tiny_model_2L_3E (read from the Hugging Face
    cache when there, else downloaded; without a network this fails at once, saying how to
    get the file). `n_heads` is not in the weights: 16 for the published models.
    """
    their_state = _read_state_file(_model_file(path_or_name), "a TinyModel state dict")
    cfg = tinymodel_config(their_state, n_heads=n_heads)
    state = tinymodel_state_dict(their_state)
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the global RNG
        model = GPT(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PretrainedError(f"our GPT does not take TinyModel's weights: missing {missing}, "
                              f"unexpected {unexpected}")
    return model.to(device).eval()


def _check_state(t: dict[str, torch.Tensor]) -> tuple[int, int, int, int, int]:
    """(n_layers, d_model, n_ctx, d_vocab, d_mlp) of a TinyModel state dict, or a one-line
    PretrainedError naming what is missing, extra or misshapen."""
    if not isinstance(t, dict):
        raise PretrainedError(f"a TinyModel state dict is a dict of tensors, not a "
                              f"{type(t).__name__}")
    layers = {int(m.group(1)) for k in t if (m := re.match(r"torso\.(\d+)\.", k))}
    n_layers = max(layers) + 1 if layers else 0
    expected = [*OTHER_KEYS[:2],
                *(f"torso.{i}.{k}" for i in range(n_layers) for k in LAYER_KEYS), *OTHER_KEYS[2:]]
    _check_keys(t, expected, "the state dict", "a TinyModel state dict (TinyModel.state_dict() of its lm.py)",
                "a TinyModel", also_missing=[] if layers else ["torso.0.*"])
    d_vocab, d_model = t["embed.weight"].shape
    n_ctx, d_mlp = t["pos_embed"].shape[-2], t["torso.0.mlp.read_in.weight"].shape[0]
    D = (d_model, d_model)
    shapes = {"embed.weight": (d_vocab, d_model), "pos_embed": (1, n_ctx, d_model),
              "lm_head.weight": (d_vocab, d_model), "lm_head.bias": (d_vocab,)}
    for i in range(n_layers):
        p = f"torso.{i}."
        shapes |= {p + "attn.Q.weight": D, p + "attn.K.weight": D, p + "attn.V.weight": D,
                   p + "attn.O.weight": D, p + "attn.O.bias": (d_model,),
                   p + "mlp.read_in.weight": (d_mlp, d_model), p + "mlp.read_in.bias": (d_mlp,),
                   p + "mlp.write_out.weight": (d_model, d_mlp),
                   p + "mlp.write_out.bias": (d_model,)}
    for key, shape in shapes.items():
        if tuple(t[key].shape) != shape:
            raise PretrainedError(f"{key} has shape {tuple(t[key].shape)}, but a TinyModel of "
                                  f"d_model={d_model}, d_vocab={d_vocab}, {n_ctx} positions and "
                                  f"d_mlp={d_mlp} has {shape}")
    return n_layers, d_model, n_ctx, d_vocab, d_mlp


# --- SAEs and transcoders ---------------------------------------------------------------------

# tag kind -> (hook_in, hook_out) for layer L; hook_out "" is an SAE
SPARSE_MLP_HOOKS = {
    "M": ("blocks.{L}.hook_resid_mid", "blocks.{L}.hook_mlp_out"),
    "A": ("blocks.{L}.hook_attn_out", ""),
    "Ra": ("blocks.{L}.hook_resid_pre", ""),
    "Rm": ("blocks.{L}.hook_resid_mid", ""),
    "Mo": ("blocks.{L}.hook_mlp_out", ""),
}


class SparseMLPState(NamedTuple):
    """What `tinymodel_sparse_mlp_state` returns: build the module with

        sae = SparseAutoencoder(s.cfg, s.d_in, s.d_out); sae.load_state_dict(s.state)

    (`tinycourse.sae.model`; lm comes before sae in the layering, so not built here)."""

    cfg: SAEConfig  # kind "relu", d_sae, hook_in and (transcoders) hook_out
    state: dict[str, torch.Tensor]  # W_enc, b_enc, W_dec, b_dec, input_scale, output_scale
    d_in: int
    d_out: int


def parse_sparse_mlp_tag(tag: str) -> tuple[str, int]:
    """A TinyModel SAE tag or file name -> (kind, layer): "M2", "A0",
    "mlp_map_test/M0_S-2_R1_P0.pt" -> ("M", 0), "Mo3_S-1_R1_P0" -> ("Mo", 3)."""
    match = re.match(r"(Mo|Rm|Ra|M|A)(\d+)(?=[_.N]|$)", Path(str(tag)).name)
    if match is None:
        raise PretrainedError(f"{str(tag)!r} is not a TinyModel SAE tag: they start with M "
                              f"(transcoder), A, Ra, Rm or Mo and the layer, e.g. M2 or "
                              f"mlp_map_test/M2_S-2_R1_P0")
    return match.group(1), int(match.group(2))


def tinymodel_sparse_mlp_state(their_state: dict[str, torch.Tensor], tag: str) -> SparseMLPState:
    """A TinyModel `SparseMLP` state dict (encoder/decoder weight and bias) -> our
    `SparseAutoencoder`'s, with the same latents and outputs on the same inputs.

    `tag` ("M2", or the file name "M2_S-2_R1_P0") says what it reads and writes (see the
    module docstring). An SAE of ours subtracts b_dec from its input and theirs does not,
    so b_enc absorbs it: b_enc = encoder.b + decoder.b @ W_enc. A transcoder ("M") has no
    input centring on either side.
    """
    kind, layer = parse_sparse_mlp_tag(tag)
    keys = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
    _check_keys(their_state, keys, "the SAE state dict", "a TinyModel SparseMLP (sparse_mlp.py)", "a SparseMLP")
    enc_w, enc_b, dec_w, dec_b = (their_state[k] for k in keys)
    d_sae, d_in = enc_w.shape
    d_out = dec_w.shape[0]
    if tuple(enc_b.shape) != (d_sae,) or tuple(dec_w.shape) != (d_out, d_sae) or \
            tuple(dec_b.shape) != (d_out,):
        raise PretrainedError(f"the SAE weights do not fit together: encoder.weight "
                              f"{tuple(enc_w.shape)}, encoder.bias {tuple(enc_b.shape)}, "
                              f"decoder.weight {tuple(dec_w.shape)}, decoder.bias "
                              f"{tuple(dec_b.shape)}")
    hook_in, hook_out = (h.format(L=layer) for h in SPARSE_MLP_HOOKS[kind])
    cfg = SAEConfig(kind="relu", hook_in=hook_in, hook_out=hook_out, d_sae=d_sae)
    W_enc = enc_w.T.contiguous()
    b_enc = enc_b.clone()
    if not cfg.is_transcoder:
        if d_out != d_in:
            raise PretrainedError(f"{tag} is an SAE of {hook_in} but its decoder writes "
                                  f"{d_out} dimensions, not the {d_in} it reads")
        b_enc = (enc_b.double() + dec_b.double() @ enc_w.T.double()).to(enc_b.dtype)
    state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": dec_w.T.contiguous(),
             "b_dec": dec_b.clone(), "input_scale": torch.ones(()),
             "output_scale": torch.ones(())}
    return SparseMLPState(cfg, state, int(d_in), int(d_out))


def tinymodel_sparse_mlp(path_or_tag: str | os.PathLike, tag: str | None = None) -> SparseMLPState:
    """A TinyModel SAE or transcoder from a file (its tag read from the file name unless
    `tag` is given) or from the hub: a default tag (M0-M3, A0-A3, lm.py's
    DEFAULT_SPARSE_MLPS) or a hub path such as mlp_map_test/M0_S-2_R1_P0."""
    path = Path(path_or_tag).expanduser()
    if not path.is_file():
        name = str(path_or_tag).removesuffix(".pt")
        name = DEFAULT_SPARSE_MLPS.get(name, name)
        if "/" not in name or name.startswith((".", "/", "~")):
            raise PretrainedError(f"{str(path_or_tag)!r} is neither a file here nor a TinyModel "
                                  f"SAE on the hub: pass a .pt file, a default tag "
                                  f"({', '.join(DEFAULT_SPARSE_MLPS)}) or a hub path such as "
                                  f"mlp_map_test/M0_S-2_R1_P0")
        path = _hub_file(f"{name}.pt", path_or_tag, "tinymodel_sparse_mlp")
    state = _read_state_file(path, "a TinyModel SparseMLP state dict")
    return tinymodel_sparse_mlp_state(state, tag if tag is not None else path.name)


# --- files: local, or the hub ------------------------------------------------------------------

def _model_file(path_or_name: str | os.PathLike) -> Path:
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "tiny_model.pt").is_file():
            return path / "tiny_model.pt"
        found = sorted(path.glob("*.pt"))
        if len(found) == 1:
            return found[0]
        raise PretrainedError(f"{path} holds {len(found)} .pt files and no tiny_model.pt: pass "
                              f"the state dict file itself")
    name = str(path_or_name).removeprefix(f"{HUB_REPO}/").removesuffix(".pt")
    if name not in HUB_MODELS:
        raise PretrainedError(f"{str(path_or_name)!r} is neither a file or folder here nor a "
                              f"TinyModel on the hub ({', '.join(HUB_MODELS)})")
    return _hub_file(f"{name}.pt", path_or_name, "load_tinymodel")


def _read_state_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(path)
        # weights_only: a pickle that holds anything but tensors is refused, not run
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle and zip errors vary
        raise PretrainedError(f"{path} is not {what} that torch.load reads "
                              f"({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None


def _hub_file(filename: str, asked: str | os.PathLike, call: str) -> Path:
    """`filename` of the TinyModel hub repo: from the Hugging Face cache, else downloaded."""
    local = f"models/tiny_model/{filename}"
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise PretrainedError(f"{asked}: no such file here, and huggingface_hub (needed to "
                              f"download it) is not installed: pip install -e \".[pretrained]\", "
                              f"or download {HUB_REPO}/{filename} elsewhere and call "
                              f"{call}(\"{local}\")") from None
    try:  # already downloaded: no network needed
        return Path(hf_hub_download(HUB_REPO, filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    reason = _hub_unreachable()
    if reason is not None:
        raise PretrainedError(
            f"{asked}: no such file here, and the Hugging Face hub cannot be reached ({reason}). "
            f"Where there is internet, run `hf download {HUB_REPO} {filename} --local-dir "
            f"models/tiny_model` (`huggingface-cli download` before huggingface_hub 1.0), copy "
            f"models/tiny_model here and call {call}(\"{local}\")")
    try:
        return Path(hf_hub_download(HUB_REPO, filename))
    except Exception as error:  # noqa: BLE001 - its HTTP errors differ across versions
        raise PretrainedError(f"{asked}: no such file here, and downloading {HUB_REPO}/{filename} "
                              f"failed ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None


# --- the tokenizer -----------------------------------------------------------------------------

def tinymodel_tokenizer(base_tokenizer_json: str | os.PathLike,
                        ts_to_neo_path: str | os.PathLike | None = None, *,
                        clean: bool = True) -> TinyModelTokenizer:
    """TinyModel's tokenizer: GPT-Neo's `tokenizer.json` (a file, or a folder holding it)
    and TinyModel's table `ts_tok_ids_to_neo.pt` (see `read_ts_to_neo`)."""
    path = Path(base_tokenizer_json).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise PretrainedError(
            f"no tokenizer.json at {path}: TinyModel's base is GPT-Neo's (GPT-2's BPE); where "
            f"there is internet, run `hf download EleutherAI/gpt-neo-125M tokenizer.json "
            f"--local-dir models/gpt-neo-125M` and pass models/gpt-neo-125M/tokenizer.json")
    return TinyModelTokenizer(Tokenizer.from_file(str(path)), read_ts_to_neo(ts_to_neo_path),
                              clean=clean)


def read_ts_to_neo(source: str | os.PathLike | None = None) -> np.ndarray:
    """TinyModel's token table (TinyModel id -> GPT-Neo id, 10000 int64) from
    `ts_tok_ids_to_neo.pt` itself, the tinymodel wheel (.whl), a folder holding the
    unzipped package, or (None) an installed tinymodel package, found without importing it
    (its import downloads from the hub)."""
    get = (f"run `pip download --no-deps tinymodel=={PACKAGE_VERSION} -d models/tinymodel` "
           f"and pass models/tinymodel/{WHEEL}")
    if source is None:
        spec = find_spec("tinymodel")
        if spec is None or not spec.submodule_search_locations:
            raise PretrainedError(f"TinyModel's token table (tokenization/ts_tok_ids_to_neo.pt) "
                                  f"ships in its wheel, and the tinymodel package (best kept "
                                  f"out of this environment) is not installed: {get}")
        source = Path(next(iter(spec.submodule_search_locations)))
    path = Path(source).expanduser()
    if path.is_dir():
        tail = Path(TABLE)
        candidates = [path / tail.name, path / tail.parent.name / tail.name, path / tail]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise PretrainedError(f"no {tail.name} in {path} (nor in tokenization/ or "
                                  f"tinymodel/tokenization/ below it): {get}")
        path = found
    if not path.is_file():
        raise PretrainedError(f"no such file: {path}: {get}")
    try:
        if zipfile.is_zipfile(path) and path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                blob = io.BytesIO(wheel.read(TABLE))
            table = torch.load(blob, map_location="cpu", weights_only=True)
        else:
            table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - zip and pickle errors vary
        first = str(error).splitlines()[0] if str(error) else ""
        raise PretrainedError(f"{path} holds no TinyModel token table "
                              f"({type(error).__name__}: {first}): {get}") from None
    if not isinstance(table, torch.Tensor) or table.ndim != 1:
        raise PretrainedError(f"{path} holds no TinyModel token table (a 1-D tensor): {get}")
    return table.numpy().astype(np.int64)


__all__ = [
    "HUB_REPO", "HUB_MODELS", "DEFAULT_SPARSE_MLPS", "SPARSE_MLP_HOOKS", "SparseMLPState",
    "TinyModelTokenizer", "ascii_fold", "clean_text", "load_tinymodel",
    "load_tinymodel_tokenizer", "parse_sparse_mlp_tag", "read_ts_to_neo", "tinymodel_config",
    "tinymodel_sparse_mlp", "tinymodel_sparse_mlp_state", "tinymodel_state_dict",
    "tinymodel_tokenizer",
]
