"""Training the language model: next-token prediction on random windows of the shards.

One function, `train_lm`, does the whole job on the course's training skeleton
(`tinycourse.training.TrainingLoop`), so it can be killed at any moment:

    out_dir/checkpoint.pt    model, optimizer, step and RNG states, every checkpoint_every
                             steps, written atomically; a rerun resumes from it
    out_dir/metrics.jsonl    one line per step: step, tokens, train_loss (on text), lr,
                             tokens_per_s, val_loss on evaluation steps, and repeat_loss
                             (on the repeat windows, `train.repeat_share`) when there are any
    out_dir/samples.jsonl    a few stories sampled at each evaluation
    out_dir/snapshots/       the weights at steps 0, 16, 32, 64, ... and the last
                             (`lm.snapshots`), for drawing heads and abilities across training
    out_dir/model.safetensors + config.json   the final model (see `model.load_model`)
    out_dir/summary.json     final losses, throughput, the val tokens' unigram entropy

Batch `step` is a pure function of `(seed, step)` (`WindowSampler`) and the learning rate
a pure function of `step`, so a resumed run replays exactly what an uninterrupted one
would have done: on CPU the final weights are bitwise identical.

The same function runs data-parallel under `torchrun --nproc_per_node K` (it reads
WORLD_SIZE/RANK/LOCAL_RANK from the environment; NCCL on CUDA, gloo on CPU). Each rank
draws its own windows; gradients are averaged by DistributedDataParallel; only rank 0
writes files.

Precision: `dtype="auto"` trains with bf16 autocast on a CUDA GPU that supports it (half
the memory traffic, tensor cores) and in plain fp32 on any CPU. A CPU only gains from
bf16 if it has native bf16 instructions (AVX512-BF16 or AMX; benchmarks/bench_train.py
measures it), while CPUs without them emulate bf16 and slow down. fp32 also gives the
same numbers on every laptop, so on CPU bf16 is opt-in: `dtype="bfloat16"`, best with
`compile=True`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..artifacts import atomic_write_json
from ..config import ConfigError, ModelConfig, TrainConfig
from ..corpus.repeats import RepeatWindows, repeat_alphabet
from ..corpus.shards import Shards, WindowSampler, token_counts
from ..training import METRICS, SUMMARY, TrainingDiverged, TrainingLoop
from .model import GPT, count_parameters, generate, save_model
from .snapshots import save_snapshot, snapshot_steps

SAMPLES = "samples.jsonl"
N_SAMPLES = 3  # stories sampled at each evaluation
# Past this many passes over the training tokens a small GPT memorises them (the `small`
# model on the 2 MiB TinyStories sample: validation loss bottoms out near 12 passes).
MANY_PASSES = 16


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup from lr/warmup_steps
    to lr, then a cosine down to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - 1 - cfg.warmup_steps))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying biases and norm gains toward
    zero would only fight their job of shifting and scaling."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # the fused kernel does the whole update in a few launches: worth it on a GPU
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `cfg.dtype` on `device`; None means plain fp32."""
    if cfg.dtype == "bfloat16":
        return torch.bfloat16
    if cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def enable_tf32() -> None:
    """Let fp32 matmuls use TF32 tensor cores (10-bit mantissa products, fp32 sums): several
    times faster on Ampere and later, and precise enough for training."""
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # torch >= 2.9
    except AttributeError:
        torch.backends.cuda.matmul.allow_tf32 = True  # older torch; never mix the two APIs


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats. logits (batch, pos, d_vocab), targets (batch, pos)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def lm_row_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's mean next-token cross-entropy in nats, (batch,); their mean is `lm_loss`
    (every row has as many positions). logits (batch, pos, d_vocab), targets (batch, pos)."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return per_token.view(targets.shape).mean(1)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies: the loss of a model that ignores context.
    A trained LM should land well below it (the tiny preset aims for half)."""
    counts = token_counts(tokens, vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def train_lm(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    shards: Shards,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    decode: Callable[[list[int]], str] | None = None,
    start_id: int | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train a `GPT(model_cfg)` on `shards`, writing into `out_dir`; return the summary.

    Resumes from `out_dir/checkpoint.pt` if there is one (refusing one written with other
    configs); returns the stored summary if the run already finished. `decode` turns
    sampled ids into text for samples.jsonl; samples start from `start_id` (default: the
    shards' start token, which also ends a story). `stop_after=k` ends the call after
    step k as if the process were killed there (only scheduled checkpoints exist), for
    testing resumption.
    """
    out_dir = Path(out_dir)
    rank, local_rank, world_size, owns_group = _init_distributed()
    try:
        device = _pick_device(device, local_rank)
        return _train(model_cfg, train_cfg, shards, out_dir, device, progress, decode,
                      shards.start_id if start_id is None else start_id, stop_after,
                      rank, world_size)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(model_cfg: ModelConfig, cfg: TrainConfig, shards: Shards, out_dir: Path,
           device: torch.device, progress: bool, decode: Callable[[list[int]], str] | None,
           start_id: int, stop_after: int | None, rank: int, world_size: int) -> dict:
    is_main = rank == 0
    _check_run(model_cfg, cfg, shards, world_size, warn=is_main)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        enable_tf32()
    fingerprint = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(cfg),
                   "world_size": world_size}
    loop = TrainingLoop(out_dir, fingerprint, total_steps=cfg.max_steps,
                        checkpoint_every=cfg.checkpoint_every, metrics=[out_dir / METRICS],
                        other_logs=[out_dir / SAMPLES], desc="lm", progress=progress,
                        stop_after=stop_after, writes=is_main, diverged=TrainingDiverged)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    raw = GPT(model_cfg).to(device)
    optimizer = make_optimizer(raw, cfg, device)
    state = loop.resume()
    if state is not None:
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if loop.start >= cfg.max_steps and (out_dir / SUMMARY).exists():
            return json.loads((out_dir / SUMMARY).read_text())

    compiled = torch.compile(raw) if cfg.compile else raw
    model = compiled
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(compiled, device_ids=device_ids)
    amp = autocast_dtype(cfg, device)
    per_rank = cfg.batch_size // world_size
    sampler = WindowSampler(shards.tokens("train"), per_rank, model_cfg.n_ctx, seed=cfg.seed,
                            rank=rank, world_size=world_size)
    n_repeats = round(cfg.repeat_share * per_rank)  # rows of each batch that are repeats
    repeats = RepeatWindows(repeat_alphabet(shards.tokens("train"), exclude=[start_id]),
                            model_cfg.n_ctx + 1, seed=cfg.seed, rank=rank) if n_repeats else None
    # fixed windows, the same whatever the number of ranks: rank r takes batches r, r+K, ...
    val_sampler = WindowSampler(shards.tokens("val"), cfg.batch_size // cfg.grad_accum,
                                model_cfg.n_ctx, seed=cfg.seed)

    def evaluate() -> float:
        return _val_loss(compiled, val_sampler, cfg.eval_batches, amp, device, rank, world_size)

    tokens_per_step = cfg.batch_size * model_cfg.n_ctx
    keep = set(snapshot_steps(cfg.max_steps))
    if is_main and loop.start == 0:
        save_snapshot(raw, out_dir, 0, 0)
    recent_losses: deque[float] = deque(maxlen=10)
    val_loss = None
    begun = time.perf_counter()
    for step in loop.steps():
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sampler.batch(step)  # (per_rank, n_ctx + 1)
        if repeats is not None:
            batch[:n_repeats] = repeats.batch(step, n_repeats)
        batch = batch.to(device, non_blocking=True)
        step_loss, row_losses = _forward_backward(model, batch, cfg.grad_accum, amp, device,
                                                  world_size)
        loop.stop_if_diverged(step_loss, step, lr,
                              hint="Lower train.lr or raise train.warmup_steps.")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = loop.end_step()

        done = step + 1
        # the loss on text, comparable with val_loss; repeat windows reported on their own
        train_loss = row_losses[n_repeats:].mean().item()
        recent_losses.append(train_loss)
        record = {"step": done, "tokens": done * tokens_per_step, "train_loss": train_loss,
                  "lr": lr, "tokens_per_s": tokens_per_step / dt}
        if n_repeats:
            record["repeat_loss"] = row_losses[:n_repeats].mean().item()
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            val_loss = record["val_loss"] = evaluate()
            if is_main:
                _write_samples(raw, out_dir / SAMPLES, done, start_id, model_cfg.n_ctx,
                               cfg.seed + done, decode)
        loop.record([record])
        if is_main and done in keep:
            save_snapshot(raw, out_dir, done, done * tokens_per_step)
        loop.checkpoint_if_due(done, lambda: {"model": raw.state_dict(),
                                              "optimizer": optimizer.state_dict()})
        loop.bar.set_postfix(loss=f"{train_loss:.3f}",
                             val=f"{val_loss:.3f}" if val_loss is not None else "-",
                             tok_s=f"{record['tokens_per_s']:,.0f}")

    if loop.finished and val_loss is None:  # killed between the last checkpoint and the summary
        val_loss = evaluate()
    if not recent_losses and is_main:
        recent_losses.extend(_last_train_losses(out_dir / METRICS, 10))
    steps = loop.start + loop.steps_run
    summary = {
        "finished": loop.finished,
        "steps": steps,
        "tokens": steps * tokens_per_step,
        # the mean of the last 10 steps: one step's loss is noisy
        "train_loss": sum(recent_losses) / len(recent_losses) if recent_losses else None,
        "val_loss": val_loss,
        "unigram_entropy": unigram_entropy(shards.tokens("val"), model_cfg.d_vocab),
        "tokens_per_s": loop.steps_run * tokens_per_step / loop.train_time if loop.train_time else None,
        "wall_time_s": time.perf_counter() - begun,
        "parameters": count_parameters(raw).total,
        "device": str(device),
        "dtype": str(amp or torch.float32).removeprefix("torch."),
        "world_size": world_size,
        "config_hash": loop.config_hash,
        "snapshot_steps": sorted(s for s in keep if s <= steps),
    }
    if loop.finished and is_main:
        save_model(raw, out_dir)
        atomic_write_json(out_dir / SUMMARY, summary)
    return summary


def _check_run(model_cfg: ModelConfig, cfg: TrainConfig, shards: Shards, world_size: int,
               warn: bool) -> None:
    """Refuse what cannot work, and warn about a run that will memorise its data."""
    if model_cfg.d_vocab < shards.vocab_size:
        raise ConfigError(
            f"model.d_vocab={model_cfg.d_vocab} is smaller than the shards' vocabulary "
            f"({shards.vocab_size}); use CourseConfig.resolved_model"
        )
    if cfg.batch_size % (cfg.grad_accum * world_size):
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} must split evenly into grad_accum="
            f"{cfg.grad_accum} micro-batches on each of {world_size} processes"
        )
    n_train = len(shards.tokens("train"))
    passes = cfg.max_steps * cfg.batch_size * model_cfg.n_ctx / max(n_train, 1)
    if passes > MANY_PASSES and warn:
        # A small file (the 2 MiB sample, say) under a preset sized for 100K stories: the
        # model memorises it and validation loss climbs after a few passes.
        fitting_steps = max(1, int(cfg.max_steps * (MANY_PASSES // 2) / passes))
        warnings.warn(
            f"train.max_steps={cfg.max_steps} x batch {cfg.batch_size} x n_ctx {model_cfg.n_ctx} "
            f"is {passes:.0f} passes over the {n_train:,} training tokens: expect the model to "
            f"memorise them and validation loss to rise. Use more text or fewer steps, e.g. "
            f"--set train.max_steps={fitting_steps} (about {MANY_PASSES // 2} passes)", stacklevel=4)


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def _forward_backward(model: torch.nn.Module, batch: torch.Tensor, grad_accum: int,
                      amp: torch.dtype | None, device: torch.device,
                      world_size: int) -> tuple[float, torch.Tensor]:
    """Gradients of one step's batch (batch, n_ctx + 1) in `grad_accum` micro-batches;
    returns the step's mean loss and each row's mean loss (batch,), the same on every rank
    (the trainer reports text rows and repeat rows apart)."""
    rows = []
    for micro, chunk in enumerate(batch.chunk(grad_accum)):
        # DDP averages gradients on every backward; only the last micro-batch needs it
        last = micro == grad_accum - 1
        sync = nullcontext() if last or world_size == 1 else model.no_sync()
        with sync:
            with _autocast(device, amp):
                per_row = lm_row_losses(model(chunk[:, :-1]), chunk[:, 1:])
            # the mean over all of the step's tokens: every micro-batch has as many rows
            (per_row.mean() / grad_accum).backward()
        rows.append(per_row.detach())
    row_losses = torch.cat(rows)
    if world_size > 1:  # every rank must see a divergence at the same step
        dist.all_reduce(row_losses)
        row_losses /= world_size
    return row_losses.mean().item(), row_losses.cpu()


@torch.no_grad()
def _val_loss(model: torch.nn.Module, sampler: WindowSampler, n_batches: int,
              amp: torch.dtype | None, device: torch.device, rank: int, world_size: int) -> float:
    """Mean loss over the first `n_batches` validation batches, split across ranks."""
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, batches
    for i in range(rank, n_batches, world_size):
        batch = sampler.batch(i).to(device)
        with _autocast(device, amp):
            total[0] += lm_loss(model(batch[:, :-1]), batch[:, 1:]).double()
        total[1] += 1
    if world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def _write_samples(model: GPT, path: Path, step: int, start_id: int, n_ctx: int, seed: int,
                   decode: Callable[[list[int]], str] | None) -> None:
    """N_SAMPLES stories sampled from `start_id`, appended to samples.jsonl."""
    rows = generate(model, [[start_id]] * N_SAMPLES, n_ctx, seed=seed, stop_id=start_id)
    lines = []
    for ids in rows:
        record = {"step": step, "tokens": ids}
        if decode is not None:
            body = ids[1:-1] if ids[-1] == start_id and len(ids) > 1 else ids[1:]
            record["text"] = decode(body)
        lines.append(json.dumps(record) + "\n")
    with open(path, "a") as f:
        f.writelines(lines)


def _last_train_losses(path: Path, n: int) -> list[float]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()[-n:]]
    return [r["train_loss"] for r in records]


# --- processes and devices ------------------------------------------------------------

def _init_distributed() -> tuple[int, int, int, bool]:
    """(rank, local_rank, world_size, whether we created the process group)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 0, 1, False
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(), owns


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


__all__ = ["train_lm", "TrainingDiverged", "lr_at", "make_optimizer", "autocast_dtype",
           "enable_tf32", "lm_loss", "lm_row_losses", "unigram_entropy"]
