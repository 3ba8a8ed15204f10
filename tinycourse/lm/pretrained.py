"""The public TinyStories models (Eldan and Li, 2023), loaded into our hooked GPT.

    model, tokenizer = load_pretrained("TinyStories-33M")        # or a local folder
    generate_text(model, tokenizer, "Once upon a time", 40, start_id=tokenizer.start_id)

so a learner can read a well-trained model with the same tools as the one they trained:
the same hook names, `run_with_cache`, `generate`, `to_transformer_lens`.

The TinyStories models are GPT-Neo models (`model_type: gpt_neo`). What GPT-Neo does
differently from GPT-2, read from transformers' `models/gpt_neo/modeling_gpt_neo.py` and
`configuration_gpt_neo.py` (5.24), becomes options of our `ModelConfig`:

- no attention scaling: `GPTNeoSelfAttention._attn` takes `query @ key.T` as the scores
  and never divides by sqrt(d_head) (its flash path passes `softmax_scale=1.0`):
  `attn_scale=False`;
- local layers: `attention_types` `[[["global", "local"], n]]` expands to one type per
  layer (`attention_layers`); a local layer's mask is `tril(ones) ^ tril(ones, -window_size)`,
  so query i sees key j when i - window_size < j <= i: `attention_layers`, `window`;
- `q_proj`, `k_proj`, `v_proj` have no bias, `out_proj`, `c_fc` and `c_proj` do:
  `qkv_bias=False`;
- `activation_function: "gelu_new"`, GELU's tanh approximation: `act="gelu_tanh"`;
- LayerNorm with `layer_norm_epsilon`: `norm_eps`; `intermediate_size: null` means
  4 * hidden_size; `lm_head` is tied to `wte` (`tie_word_embeddings`, default true).

Positions: the TinyStories configs declare 2048 (`max_position_embeddings`), but the
models were trained on 512-token sequences, so `load_pretrained` keeps the first 512
learned positions (`n_ctx=512`), as TransformerLens does (its `loading_from_pretrained.py`,
TransformerLens issue 492). Pass `n_ctx=None` to keep all of them.

The tokenizer is GPT-Neo's (GPT-2's) byte-level BPE, read from the model's
`tokenizer.json` with the `tokenizers` library into our `BPETokenizer`, so it offers
`encode`, `decode`, `pieces`, `vocab_size` and `start_id`: `<|endoftext|>`, id 50256,
which begins every TinyStories story (the configs' bos_token_id).

The hub needs `huggingface_hub` (`pip install -e ".[pretrained]"`, which also brings
transformers for the tests that compare against it); a local folder needs neither.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import safetensors.torch
import torch
from tokenizers import Tokenizer

from ..config import ModelConfig
from ..corpus.sources import PretrainedError  # defined with the corpus, which reads pretrained tokenizers
from ..corpus.tokenizer import START_TOKEN, BPETokenizer
from .model import GPT

# The TinyStories GPT-Neo models on the hub (huggingface.co/roneneldan, 14 models).
HUB_MODELS = (
    "roneneldan/TinyStories-1M", "roneneldan/TinyStories-3M", "roneneldan/TinyStories-8M",
    "roneneldan/TinyStories-28M", "roneneldan/TinyStories-33M",
    "roneneldan/TinyStories-1Layer-21M", "roneneldan/TinyStories-2Layers-33M",
    "roneneldan/TinyStories-Instruct-1M", "roneneldan/TinyStories-Instruct-3M",
    "roneneldan/TinyStories-Instruct-8M", "roneneldan/TinyStories-Instruct-28M",
    "roneneldan/TinyStories-Instruct-33M", "roneneldan/TinyStories-Instruct-2Layers-33M",
    # sic, "Instuct": the hub's own spelling of this one. Checked against TransformerLens
    # 3.9's supported_models.py (which tests that its names exist on the hub) and the
    # model lists of other projects that load it; the correctly spelt name is an alias.
    "roneneldan/TinyStories-Instuct-1Layer-21M",
)
# "TinyStories-33M" -> "roneneldan/TinyStories-33M"
ALIASES = {name.split("/")[1]: name for name in HUB_MODELS}
ALIASES["TinyStories-Instruct-1Layer-21M"] = "roneneldan/TinyStories-Instuct-1Layer-21M"

TINYSTORIES_N_CTX = 512  # the sequence length the TinyStories models were trained on
WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the first one found is read
HUB_TIMEOUT_S = 3.0  # to decide that the hub is unreachable, instead of retrying for minutes


class Pretrained(NamedTuple):
    """What `load_pretrained` returns: unpack it (`model, tokenizer = ...`) or use names."""

    model: GPT  # in eval mode
    tokenizer: BPETokenizer  # encode / decode / start_id, like the course's own tokenizers


def load_pretrained(name_or_dir: str | os.PathLike, device: str | torch.device = "cpu", *,
                    n_ctx: int | None = TINYSTORIES_N_CTX) -> Pretrained:
    """A GPT-Neo model (a TinyStories one) as our GPT in eval mode, with its tokenizer.

    `name_or_dir` is a local Hugging Face folder (config.json, model.safetensors or
    pytorch_model.bin, tokenizer.json), a hub name (`roneneldan/TinyStories-33M`) or its
    short alias (`TinyStories-33M`, see `ALIASES`). A hub name is read from the local
    Hugging Face cache when it is there, else downloaded; without a network this fails
    at once, with the commands that fetch it where there is one. `n_ctx` is how many
    learned positions to keep (None: all the config declares).
    """
    folder = _local_folder(name_or_dir)
    hf_config = json.loads((folder / "config.json").read_text())
    cfg = gptneo_model_config(hf_config, n_ctx=n_ctx)
    state = gptneo_state_dict(_read_weights(folder), cfg)
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the global RNG
        model = GPT(cfg)
    model.load_state_dict(state)  # strict: every weight is filled
    return Pretrained(model.to(device).eval(), _read_tokenizer(folder, cfg))


# --- the config and the weights -------------------------------------------------------------

def gptneo_model_config(hf_config: dict, n_ctx: int | None = None) -> ModelConfig:
    """A Hugging Face GPT-Neo config.json (as a dict) -> our ModelConfig.

    `n_ctx` caps the learned positions kept (None: `max_position_embeddings`). Refuses
    (PretrainedError) a config that is not GPT-Neo or asks for what our GPT cannot do.
    """
    model_type = hf_config.get("model_type")
    if model_type != "gpt_neo":
        raise PretrainedError(
            f"model_type={model_type!r}: load_pretrained reads Hugging Face GPT-Neo models "
            f"(model_type 'gpt_neo'), such as the TinyStories ones; a folder that save_model "
            f"or train_lm wrote loads with load_model")
    missing = [key for key in ("hidden_size", "num_heads", "num_layers", "vocab_size",
                               "max_position_embeddings") if key not in hf_config]
    if "attention_layers" not in hf_config and "attention_types" not in hf_config:
        missing.append("attention_types")
    if missing:
        raise PretrainedError(f"the GPT-Neo config lacks {', '.join(missing)}")
    d_model, n_heads = hf_config["hidden_size"], hf_config["num_heads"]
    if d_model % n_heads:
        raise PretrainedError(f"hidden_size={d_model} is not divisible by num_heads={n_heads}")
    # attention_types [[["global", "local"], 2]] -> attention_layers global, local, global, local
    layers = hf_config.get("attention_layers") or [
        kind for kinds, repeat in hf_config["attention_types"]
        for _ in range(repeat) for kind in kinds]
    if len(layers) != hf_config["num_layers"] or not set(layers) <= {"global", "local"}:
        raise PretrainedError(f"attention layers {layers} do not give global or local for each "
                              f"of num_layers={hf_config['num_layers']}")
    acts = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
            "relu": "relu"}  # transformers' ACT2FN names -> ours
    act = hf_config.get("activation_function", "gelu_new")
    if act not in acts:
        raise PretrainedError(f"activation_function={act!r}: ours are {', '.join(acts)}")
    positions = hf_config["max_position_embeddings"]
    return ModelConfig(
        n_layers=hf_config["num_layers"], d_model=d_model, n_heads=n_heads,
        d_head=d_model // n_heads, d_mlp=hf_config.get("intermediate_size") or 4 * d_model,
        n_ctx=positions if n_ctx is None else min(n_ctx, positions),
        d_vocab=hf_config["vocab_size"], norm="layernorm", act=acts[act],
        tied_embeddings=hf_config.get("tie_word_embeddings", True),
        init_std=hf_config.get("initializer_range", ModelConfig.init_std),
        norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
        qkv_bias=False, attn_scale=False, attention_layers=tuple(layers),
        window=hf_config.get("window_size", 256),
    )


def gptneo_state_dict(hf_state: dict[str, torch.Tensor],
                      cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A GPTNeoForCausalLM state dict -> ours, for a GPT built from `cfg` (see
    `gptneo_model_config`). Shapes are kept: both sides' Linear weights are (out, in).

    q_proj, k_proj, v_proj (d_model, d_model) stack into our qkv (3 * d_model, d_model):
    their rows run (head, d_head), as ours do within each of q, k and v. The position
    embedding keeps its first `cfg.n_ctx` rows. Old checkpoints also hold each layer's
    mask buffers (`attn.attention.bias`, `masked_bias`): they are rebuilt, not read.
    """
    # GPTNeoForCausalLM prefixes "transformer."; a bare GPTNeoModel does not
    hf = {name.removeprefix("transformer."): t for name, t in hf_state.items()}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise PretrainedError(f"the weights have no {name!r}: not a GPTNeoForCausalLM "
                                  f"checkpoint matching its config.json")
        used.add(name)
        return hf[name]

    out = {"embed.weight": take("wte.weight"), "pos_embed.weight": take("wpe.weight")[: cfg.n_ctx]}
    for i in range(cfg.n_layers):
        h, ours = f"h.{i}.", f"blocks.{i}."
        attn = h + "attn.attention."
        for hf_norm, our_norm in (("ln_1", "ln1"), ("ln_2", "ln2")):
            for p in ("weight", "bias"):
                out[ours + f"{our_norm}.{p}"] = take(h + f"{hf_norm}.{p}")
        out[ours + "attn.qkv.weight"] = torch.cat([take(attn + f"{x}_proj.weight") for x in "qkv"])
        out[ours + "attn.out.weight"] = take(attn + "out_proj.weight")
        out[ours + "attn.out.bias"] = take(attn + "out_proj.bias")
        for hf_fc, our_fc in (("c_fc", "fc_in"), ("c_proj", "fc_out")):
            for p in ("weight", "bias"):
                out[ours + f"mlp.{our_fc}.{p}"] = take(h + f"mlp.{hf_fc}.{p}")
    out["ln_final.weight"], out["ln_final.bias"] = take("ln_f.weight"), take("ln_f.bias")
    if cfg.tied_embeddings:
        # safetensors files leave a tied lm_head out; older .bin files repeat it
        if "lm_head.weight" in hf and not torch.equal(take("lm_head.weight"), out["embed.weight"]):
            raise PretrainedError("the config ties lm_head to wte but the weights differ")
        out["unembed.weight"] = out["embed.weight"]
    else:
        out["unembed.weight"] = take("lm_head.weight")
    buffers = {name for name in hf
               if name.endswith((".attn.attention.bias", ".attn.attention.masked_bias"))}
    unread = sorted(set(hf) - used - buffers)
    if unread:
        raise PretrainedError(f"weights this config does not use: {', '.join(unread[:5])}"
                              f"{' ...' if len(unread) > 5 else ''}")
    return out


# --- files: a local folder, or the hub -------------------------------------------------------

def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHTS:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                return safetensors.torch.load_file(path)
            # weights_only: a pickle that holds anything but tensors is refused, not run
            return torch.load(path, map_location="cpu", weights_only=True)
    raise PretrainedError(f"no {' or '.join(WEIGHTS)} in {folder} (sharded checkpoints are "
                          f"not read: TinyStories models are one file)")


def _read_tokenizer(folder: Path, cfg: ModelConfig) -> BPETokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise PretrainedError(
            f"no tokenizer.json in {folder}: the TinyStories models use GPT-Neo's, copy it "
            f"from EleutherAI/gpt-neo-125M (or another TinyStories model) into the folder")
    base = Tokenizer.from_file(str(path))
    if base.token_to_id(START_TOKEN) is None:
        raise PretrainedError(f"{path} has no {START_TOKEN} token, which starts every story")
    tokenizer = BPETokenizer(base, cfg.d_vocab)
    if tokenizer.vocab_size > cfg.d_vocab:
        raise PretrainedError(f"{path} has {tokenizer.vocab_size} tokens but the model "
                              f"only {cfg.d_vocab} embeddings")
    return tokenizer


def _local_folder(name_or_dir: str | os.PathLike) -> Path:
    """The folder holding the model: `name_or_dir` itself, or the hub's copy of it."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PretrainedError(f"{path} has no config.json: pass a Hugging Face model folder")
        return path
    repo = ALIASES.get(str(name_or_dir), str(name_or_dir))
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        raise PretrainedError(f"{str(name_or_dir)!r} is neither a folder here nor a hub name: "
                              f"pass a folder, a hub name (owner/model) or a TinyStories alias "
                              f"such as TinyStories-33M (see tinycourse.lm.pretrained.ALIASES)")
    return _from_hub(repo, name_or_dir)


def _from_hub(repo: str, asked: str | os.PathLike) -> Path:
    """The local snapshot of hub model `repo`: from the cache, else downloaded."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise PretrainedError(f"{asked}: no such folder here, and huggingface_hub (needed "
                              f"to download it) is not installed: pip install -e "
                              f'".[pretrained]"') from None
    files = ["config.json", "tokenizer.json", *WEIGHTS]
    try:  # already downloaded: no network needed, and no time spent
        folder = Path(snapshot_download(repo, allow_patterns=files, local_files_only=True))
        if _complete(folder):
            return folder
    except LocalEntryNotFoundError:
        pass
    reason = _hub_unreachable()
    if reason is not None:
        short = repo.split("/")[1]
        raise PretrainedError(
            f"{asked}: no such folder here, and the Hugging Face hub cannot be reached "
            f"({reason}). Where there is internet, run `hf download {repo} --local-dir "
            f"models/{short}` (`huggingface-cli download` before huggingface_hub 1.0), copy "
            f"models/{short} here and call load_pretrained(\"models/{short}\")")
    try:
        # safetensors when the repo has it, else the .bin: never both (hundreds of MB each)
        folder = Path(snapshot_download(repo, allow_patterns=["config.json", "tokenizer.json",
                                                              WEIGHTS[0]]))
        if not (folder / WEIGHTS[0]).is_file():
            hf_hub_download(repo, WEIGHTS[1])
    except Exception as error:  # noqa: BLE001 - its HTTP errors differ across versions
        raise PretrainedError(f"{asked}: no such folder here, and downloading {repo} from the "
                              f"hub failed ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return folder


def cached_pretrained() -> list[str]:
    """The `HUB_MODELS` whose files are already in the local Hugging Face cache, found
    without the network (nothing is downloaded); [] without huggingface_hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return []
    found = []
    for repo in HUB_MODELS:
        try:
            folder = Path(snapshot_download(repo, allow_patterns=["config.json", "tokenizer.json", *WEIGHTS],
                                            local_files_only=True))
        except Exception:  # noqa: BLE001 - "not cached" is a different class across versions
            continue
        if _complete(folder):
            found.append(repo)
    return found


def _complete(folder: Path) -> bool:
    return ((folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
            and any((folder / name).is_file() for name in WEIGHTS))


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (offline mode, or no connection in a few seconds), or
    None when it can. huggingface_hub itself would retry for minutes."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
            "1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=HUB_TIMEOUT_S).close()
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None


__all__ = ["ALIASES", "HUB_MODELS", "Pretrained", "PretrainedError", "cached_pretrained", "gptneo_model_config",
           "gptneo_state_dict", "load_pretrained"]
