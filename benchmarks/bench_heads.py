"""Head scores: ours batched against TransformerLens's `detect_head` looped over prompts.

    python benchmarks/bench_heads.py                 # tiny and replication shapes, 64 prompts
    python benchmarks/bench_heads.py --prompts 256 --repeats 5

What is compared. ours = `interpret.heads.head_detector_scores`: one batched forward with
the attention patterns cached, then the three detection patterns (previous-token,
duplicate-token, induction) scored for every head at once. theirs = TransformerLens 3.x's
`head_detector.detect_head(model, prompt, name)` for each of the three names, one prompt
at a time, on the same model exported with `lm.transformer_lens.to_transformer_lens`
(each call runs the model on its prompt and loops over heads in Python), then the mean
over prompts, as `detect_head` does for a list. The table checks that both give the same
scores (max |difference|) before it times them.

Models: random-weight GPTs of the `tiny` shape (2 layers x 4 heads, d_model 128, n_ctx
128, vocab 1,024) and of the `replication` shape (4 layers x 16 heads, d_model 768,
n_ctx 256, vocab 10,000); prompts are random tokens of n_ctx - 1 positions (the detector
wants fewer than n_ctx), seeded. Weights do not change the cost.

Timing: wall time of the whole call, median over `--repeats` (after one warm-up call of
each), on this machine's CPU threads (torch's default). speedup = theirs / ours.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from tinycourse.config import ModelConfig
from tinycourse.interpret.heads import DETECTOR_HEADS, head_detector_scores
from tinycourse.lm.model import GPT
from tinycourse.lm.transformer_lens import to_transformer_lens

SHAPES = {
    "tiny": ModelConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=128, d_vocab=1024),
    "replication": ModelConfig(n_layers=4, d_model=768, n_heads=16, d_head=48, d_mlp=3072, n_ctx=256,
                               d_vocab=10_000),
}


def theirs(hooked, prompts: torch.Tensor) -> dict[str, torch.Tensor]:
    from transformer_lens.head_detector import detect_head

    by_text = {f"p{i}": prompts[i:i + 1] for i in range(len(prompts))}
    hooked.to_tokens = lambda seq, **kwargs: by_text[seq] if isinstance(seq, str) else prompts
    return {name: detect_head(hooked, list(by_text), name) for name in DETECTOR_HEADS}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; {args.prompts} prompts, median of {args.repeats}")
    print(f"{'shape':12s} {'heads':>5s} {'prompt':>6s} {'ours s':>8s} {'TL s':>8s} {'speedup':>8s} {'max |diff|':>10s}")
    for name, cfg in SHAPES.items():
        torch.manual_seed(0)
        model = GPT(cfg).eval()
        hooked = to_transformer_lens(model)
        prompts = torch.randint(0, cfg.d_vocab, (args.prompts, cfg.n_ctx - 1),
                                generator=torch.Generator().manual_seed(1))
        ours_scores, their_scores = head_detector_scores(model, prompts), theirs(hooked, prompts)
        gap = max((ours_scores[k] - their_scores[k].float()).abs().max().item() for k in DETECTOR_HEADS)
        t_ours = median_time(lambda: head_detector_scores(model, prompts), args.repeats)
        t_theirs = median_time(lambda: theirs(hooked, prompts), args.repeats)
        print(f"{name:12s} {cfg.n_layers * cfg.n_heads:5d} {cfg.n_ctx - 1:6d} {t_ours:8.3f} {t_theirs:8.3f} "
              f"{t_theirs / t_ours:7.1f}x {gap:10.1e}")


if __name__ == "__main__":
    main()
