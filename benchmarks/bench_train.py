"""Training throughput of our GPT against a minimal hook-free nanoGPT-style reference.

    python benchmarks/bench_train.py                      # tiny + small (+ replication on CUDA)
    python benchmarks/bench_train.py --steps 10 --presets tiny

For each preset's model, both implementations run the same training step (same AdamW,
loss, clipping, batch) in two modes, eager fp32 and `torch.compile` + bf16 autocast, on
synthetic random tokens. Timed steps alternate between the two models so that drift in
the machine's speed hits both alike; the table shows the median.

Model FLOP utilisation (MFU) = achieved FLOP/s / peak FLOP/s, with FLOPs per token from
`tinycourse.lm.model.flops_per_token` (6 x non-embedding parameters + 12 x n_layers x n_ctx x
d_model, the PaLM / nanoGPT estimate) and the peak measured here with one large matmul
in the mode's dtype (so it is this machine's practical peak, not a datasheet number).
The hook points must cost nothing: ours should be within 5% of the reference.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from tinycourse.config import ModelConfig, TrainConfig, preset
from tinycourse.lm.model import GPT, count_parameters, flops_per_token
from tinycourse.lm.train import enable_tf32, lm_loss, make_optimizer


# --- the reference: nanoGPT's model, reduced to what our config describes -------------

class RefAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)
        self.c_proj = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.n_heads * self.d_head, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class RefBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = RefAttention(cfg)
        self.c_fc, self.c_proj = nn.Linear(cfg.d_model, cfg.d_mlp), nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = nn.GELU() if cfg.act == "gelu" else nn.ReLU()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self.act(self.c_fc(self.ln_2(x))))


class RefGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.norm == "layernorm", "the reference only has LayerNorm"
        self.wte, self.wpe = nn.Embedding(cfg.d_vocab, cfg.d_model), nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.h = nn.ModuleList(RefBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tied_embeddings:
            self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=cfg.init_std)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# --- measuring ---------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, reps: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, the best of `reps`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm up the kernel choice
    best = math.inf
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Runner:
    """One model in one mode: its optimizer and a `step(batch)` that returns seconds."""

    def __init__(self, model: nn.Module, train_cfg: TrainConfig, compiled: bool,
                 amp: torch.dtype | None, device: torch.device):
        self.model, self.device, self.amp = model.to(device), device, amp
        self.opt = make_optimizer(self.model, train_cfg, device)
        self.grad_clip = train_cfg.grad_clip
        self.forward = torch.compile(self.model) if compiled else self.model

    def step(self, batch: torch.Tensor) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss = lm_loss(self.forward(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        return time.perf_counter() - t0


def bench_pair(cfg: ModelConfig, train_cfg: TrainConfig, batch_size: int, compiled: bool,
               amp: torch.dtype | None, device: torch.device, warmup: int,
               steps: int) -> dict[str, list[float] | str]:
    """Step times of ours and the reference, timed alternately in ABBA order: on a shared
    machine whose speed drifts, neighbouring steps see the same conditions, and neither
    model always goes first. A string instead of times says why a model could not run."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.d_vocab, (batch_size, cfg.n_ctx + 1), generator=gen).to(device)
               for _ in range(4)]
    runners: dict[str, Runner] = {}
    times: dict[str, list[float] | str] = {}
    for name, make in (("ours", GPT), ("reference", RefGPT)):
        torch.manual_seed(0)
        try:
            runners[name] = Runner(make(cfg), train_cfg, compiled, amp, device)
            for i in range(warmup):  # compiles here, in compiled mode
                runners[name].step(batches[i % len(batches)])
            times[name] = []
        except Exception as error:  # noqa: BLE001 - report the failure in the table
            first_line = (str(error).splitlines() or [""])[0][:60]
            times[name] = f"failed: {type(error).__name__}: {first_line}"
    for i in range(steps):
        order = list(runners) if i % 2 == 0 else list(runners)[::-1]
        for name in order:
            if isinstance(times[name], list):
                times[name].append(runners[name].step(batches[i % len(batches)]))
    return times


# roneneldan/TinyStories train split with the replication preset's 10K BPE: ~2.12M stories,
# ~470M tokens (the preset's estimate; the 2 MiB sample encodes at ~4 bytes a token)
TINYSTORIES_TRAIN_TOKENS = 470_000_000


def paired_ratio(reference: list[float], ours: list[float]) -> float:
    """Median over steps of reference time / our time at the same step."""
    return statistics.median(r / o for r, o in zip(reference, ours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--presets", default="tiny,small,replication" if cuda else "tiny,small")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = the preset's")
    parser.add_argument("--modes", default="eager-fp32,compiled-bf16")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0 = torch's default); 1 is steadier on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        enable_tf32()  # as train_lm does
    n = 8192 if cuda else 2048
    peaks = {"fp32": 0.0, "bf16": 0.0}

    def measure_peaks() -> None:  # the best seen during the run: speed drifts on shared machines
        for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[key] = max(peaks[key], matmul_peak(dtype, device, n))

    modes = {
        "eager-fp32": (False, None, "fp32"),
        "compiled-bf16": (True, torch.bfloat16, "bf16"),
        "eager-bf16": (False, torch.bfloat16, "bf16"),
        "compiled-fp32": (True, None, "fp32"),
    }
    rows = []
    measure_peaks()
    for preset_name in args.presets.split(","):
        course = preset(preset_name)
        cfg = course.resolved_model
        batch_size = args.batch_size or course.train.batch_size
        for mode in args.modes.split(","):
            compiled, amp, peak_key = modes[mode]
            times = bench_pair(cfg, course.train, batch_size, compiled, amp, device, args.warmup,
                               args.steps)
            rows.append((preset_name, mode, peak_key, cfg, batch_size, times))
        measure_peaks()

    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name() if cuda else cpu
    print(f"device: {device} ({name}), torch {torch.__version__}")
    print(f"matmul peak ({n}^3, best seen during the run): fp32 {peaks['fp32'] / 1e9:,.1f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:,.1f} GFLOP/s")
    print(f"median of {args.steps} timed steps after {args.warmup} warmup steps, synthetic tokens\n")
    header = (f"{'preset':<12}{'mode':<15}{'model':<11}{'batch':>6}{'ms/step':>10}{'tokens/s':>11}"
              f"{'MFU':>7}{'vs ref':>8}")
    print(header)
    print("-" * len(header))
    for preset_name, mode, peak_key, cfg, batch_size, times in rows:
        tokens = batch_size * cfg.n_ctx
        for model_name, t in times.items():
            prefix = f"{preset_name:<12}{mode:<15}{model_name:<11}{batch_size:>6}"
            if not isinstance(t, list):
                print(f"{prefix}  {t}")
                continue
            median = statistics.median(t)
            mfu = flops_per_token(cfg) * tokens / median / peaks[peak_key]
            ratio = ""
            if model_name == "ours" and isinstance(times["reference"], list):
                ratio = f"{paired_ratio(times['reference'], t):7.3f}x"
            print(f"{prefix}{1000 * median:>10.1f}{tokens / median:>11,.0f}{100 * mfu:>6.1f}%{ratio:>8}")
    print()
    for preset_name in dict.fromkeys(row[0] for row in rows):
        cfg = preset(preset_name).resolved_model
        count = count_parameters(GPT(cfg))
        print(f"{preset_name}: n_layers={cfg.n_layers} d_model={cfg.d_model} n_heads={cfg.n_heads} "
              f"d_head={cfg.d_head} d_mlp={cfg.d_mlp} n_ctx={cfg.n_ctx} d_vocab={cfg.d_vocab}; "
              f"{count.total / 1e6:.2f}M parameters ({count.non_embedding / 1e6:.2f}M non-embedding), "
              f"{flops_per_token(cfg) / 1e6:.1f} MFLOP per token")
    for preset_name, mode, _, cfg, batch_size, times in rows:
        if isinstance(times.get("ours"), list):
            hours = TINYSTORIES_TRAIN_TOKENS / (batch_size * cfg.n_ctx / statistics.median(times["ours"])) / 3600
            print(f"one epoch of TinyStories ({TINYSTORIES_TRAIN_TOKENS / 1e6:.0f}M tokens), "
                  f"{preset_name} {mode}: {hours:.2f} h at this speed")
    print("\nvs ref = median over steps of (reference step time / ours), steps timed in ABBA order;"
          "\nabove 1: ours is faster; 0.95 is the floor.")


if __name__ == "__main__":
    main()
