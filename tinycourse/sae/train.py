"""Training sparse autoencoders and transcoders on a stream of activations.

`train_sae` trains one; `train_sweep` trains several (different k, l1_coeff, widths...)
in one pass over the data, each batch read once and fed to every SAE, since reading
activations usually costs more than an SAE step. Both run on the course's training
skeleton (`tinycourse.training.TrainingLoop`), so they can be killed at any moment:

    out_dir/checkpoint.pt    every SAE's weights, optimizer and dead-latent counters, the
                             step and RNG states, every checkpoint_every steps (atomic);
                             a rerun with the same configs resumes from it
    <sae folder>/metrics.jsonl   one line per step: step, tokens, loss, mse, sparsity,
                                 auxk (the loss terms, see `sae.sae_loss`; in normalised
                                 units), fve (fraction of variance explained on the
                                 batch), l0 (mean active latents per token), dead_fraction
                                 (share of latents silent for dead_after_tokens tokens or
                                 more), lr, coeff (the sparsity coefficient), tokens_per_s
    <sae folder>/sae.safetensors + cfg.json   the final SAE, scale folded (`sae.load_sae`)
    <sae folder>/summary.json    final metrics on fresh batches, in eval mode

The SAE folder is out_dir itself for `train_sae` and out_dir/<name> for `train_sweep`,
whose checkpoint holds the whole sweep: resuming needs the same list of configs.

The source is anything with
    d_in, d_out                                   widths of hook_in and hook_out
    batches(batch_size, seed, start_batch=0)      an endless iterator of (x_in, x_out), raw
                                                  activations (x_out is x_in for an SAE),
                                                  batch i a pure function of (batch_size,
                                                  seed, i): so a resumed run reads exactly
                                                  what an uninterrupted one would have read
Given that, and a learning rate and penalty that are pure functions of the step, a
resumed run on CPU ends bitwise identical to an uninterrupted one.

A multi-hook source (`sae.transcoders.MultiHookStream`: one LM forward feeds every hook)
has instead
    hooks, widths                                 the hook names, {hook: width}
    batches(batch_size, seed, start_batch=0)      the same, yielding {hook: (B, width)}, the
                                                  same token rows at every hook
and each member reads its own hook_in and hook_out from every batch: members of one run
may then read different hooks (e.g. a transcoder per MLP), with their own scales. A
member's weights and metrics do not depend on who else trains beside it: with the same
batches it ends bitwise equal to training alone (tests/sae/test_transcoders.py).

Recipe (Anthropic's April 2024 update unless said otherwise): Adam with betas (0.9, 0.999)
and no weight decay; linear warm-up over lr_warmup_steps, constant, then linear decay to 0
over the last lr_decay_frac of the steps; gradient norm clipped at 1; the sparsity
coefficient (relu's l1_coeff, and jumprelu's l0_coeff as Gemma Scope does) ramps up
linearly over the first l1_warmup_frac of the steps. Gao et al. use the same betas with
eps 6.25e-10, chosen for their normalised loss, whose gradients are ~d_in times smaller
than ours; with our summed MSE the default eps is already negligible.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_write_json
from ..config import ConfigError, SAEConfig, config_hash
from ..training import METRICS, SUMMARY, TrainingDiverged, TrainingLoop
from . import fast
from .model import UNIT_NORM_KINDS, SparseAutoencoder, sae_loss, save_sae

GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.999)
INIT_SAMPLES = 4096  # activations b_dec is initialised from
EVAL_BATCHES = 8  # fresh batches the summary's metrics are measured on
# what a run's members must share: the stream's batches and the checkpoint schedule ...
STREAM_FIELDS = ("batch_size", "n_tokens", "seed", "checkpoint_every")
# ... and, on a plain (x_in, x_out) source, which hands every member the same pair, the hooks
SHARED_FIELDS = ("hook_in", "hook_out", *STREAM_FIELDS)


class SAETrainingDiverged(TrainingDiverged):
    """An SAE's loss stopped being finite; the last checkpoint on disk is still good."""


def n_steps(cfg: SAEConfig) -> int:
    return cfg.n_tokens // cfg.batch_size


def lr_at(step: int, cfg: SAEConfig) -> float:
    """Learning rate of step `step` (0-based): linear warm-up, constant, linear decay to 0
    over the last lr_decay_frac of the steps (where they overlap, the smaller wins)."""
    total, decay = n_steps(cfg), int(cfg.lr_decay_frac * n_steps(cfg))
    factor = 1.0
    if cfg.lr_warmup_steps:
        factor = min(factor, (step + 1) / cfg.lr_warmup_steps)
    if decay:
        factor = min(factor, (total - step) / decay)
    return cfg.lr * factor


def penalty_at(step: int, cfg: SAEConfig) -> float:
    """Sparsity coefficient of step `step`: relu's l1_coeff or jumprelu's l0_coeff, ramped
    up linearly over the first l1_warmup_frac of the steps; 0 for topk and batchtopk."""
    base = {"relu": cfg.l1_coeff, "jumprelu": cfg.l0_coeff}.get(cfg.kind, 0.0)
    warmup = cfg.l1_warmup_frac * n_steps(cfg)
    return base * min(1.0, (step + 1) / warmup) if warmup >= 1 else base


def default_name(cfg: SAEConfig) -> str:
    """A sweep member's folder name: kind, width and its sparsity knob."""
    knob = {"relu": f"l1-{cfg.l1_coeff:g}", "jumprelu": f"l0-{cfg.l0_coeff:g}"}
    knob = knob.get(cfg.kind, f"k{cfg.k}")
    return f"{cfg.kind}_d{cfg.d_sae}_{knob}"


def train_sae(cfg: SAEConfig, source, out_dir: str | os.PathLike, *,
              device: str | torch.device | None = None, progress: bool = True,
              input_scale: float = 1.0, output_scale: float | None = None,
              stop_after: int | None = None) -> dict:
    """Train one SAE or transcoder on `source`, writing into `out_dir`; return its summary.

    `input_scale` multiplies x_in (and, for an SAE, x_out) so that E||x||^2 = d_in;
    `output_scale` multiplies a transcoder's x_out (None: input_scale). Resumes from
    out_dir/checkpoint.pt (refusing one written with another config); returns the stored
    summary if the run already finished. `stop_after=n` ends the call after step n
    as if the process were killed there, for testing resumption.
    """
    return _train([cfg], [Path(out_dir)], Path(out_dir), source, device=device,
                  progress=progress, input_scale=input_scale, output_scale=output_scale,
                  stop_after=stop_after)[0]


def train_sweep(cfgs: list[SAEConfig], source, out_dir: str | os.PathLike, *,
                names: list[str] | None = None, device: str | torch.device | None = None,
                progress: bool = True, input_scale: float | Sequence[float] = 1.0,
                output_scale: float | Sequence[float | None] | None = None,
                stop_after: int | None = None, desc: str | None = None) -> list[dict]:
    """Train every config in `cfgs` on one pass over `source` (each batch read once), each
    into out_dir/<name> (`names`, default `default_name`). They must share batch size,
    token budget and seed (the data) and checkpoint_every, and on a plain source their
    hooks; on a multi-hook source each reads its own (see the module docstring).
    Anything else may differ. `input_scale` and `output_scale` are one value for all, or
    one per config. Resumption is for the whole sweep: the checkpoint in out_dir holds
    every SAE. Returns the summaries."""
    names = list(names) if names is not None else [default_name(cfg) for cfg in cfgs]
    if len(names) != len(cfgs) or len(set(names)) != len(names):
        raise ConfigError(f"a sweep needs one distinct name per config, got {names}; "
                          f"pass names=[...]")
    out_dir = Path(out_dir)
    return _train(list(cfgs), [out_dir / name for name in names], out_dir, source,
                  device=device, progress=progress, input_scale=input_scale,
                  output_scale=output_scale, stop_after=stop_after, desc=desc)


def _per_member(value, n: int, what: str) -> list:
    """One value for all members, or one per member."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"{what} has {len(value)} values for {n} configs: give one, or one per config")
        return list(value)
    return [value] * n


@dataclasses.dataclass
class _Member:
    """One SAE of a run and everything that changes while it trains."""
    cfg: SAEConfig
    folder: Path
    sae: SparseAutoencoder
    optimizer: torch.optim.Adam
    since_fired: torch.Tensor  # (d_sae,) int64: tokens since each latent last fired
    step_fn: object  # forward + loss, compiled or not
    recent: list = dataclasses.field(default_factory=list)  # last steps' metrics

    name: str = ""  # the folder relative to the run's out_dir (`member_name`)

    def dead(self) -> torch.Tensor:
        return self.since_fired >= self.cfg.dead_after_tokens


def member_name(folder: Path, out_dir: Path) -> str:
    """A member's name: its folder relative to `out_dir` (`layer_0`, `attention/layer_0`), so
    two members whose folders share a last part stay apart; a folder outside it, its name."""
    try:
        return Path(folder).resolve().relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        return Path(folder).name


def _train(cfgs: list[SAEConfig], folders: list[Path], out_dir: Path, source, *, device,
           progress: bool, input_scale: float | Sequence[float],
           output_scale: float | Sequence[float | None] | None,
           stop_after: int | None, desc: str | None = None) -> list[dict]:
    cfg0 = cfgs[0]  # what the members share: data, batch size, schedule
    in_scales = _per_member(input_scale, len(cfgs), "input_scale")
    dims, out_scales = _check_run(cfgs, source, in_scales,
                                  _per_member(output_scale, len(cfgs), "output_scale"))
    total, batch_size = n_steps(cfg0), cfg0.batch_size
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # what the weights depend on; a checkpoint resumes only under the same. Members that
    # share widths and scales (every sweep on a plain source) record them once, as before
    # members could differ, so older checkpoints still resume
    per_member = {"d_in": [d for d, _ in dims], "d_out": [d for _, d in dims],
                  "input_scale": in_scales, "output_scale": out_scales}
    names = [member_name(f, out_dir) for f in folders]
    fingerprint = {"names": names,
                   "members": {n: {"sae": dataclasses.asdict(c)} for c, n in zip(cfgs, names)},
                   **{key: values[0] if len(set(values)) == 1 else values
                      for key, values in per_member.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    members = [_new_member(cfg, folder, d_in, d_out, device, s_in, s_out)
               for cfg, folder, (d_in, d_out), s_in, s_out
               in zip(cfgs, folders, dims, in_scales, out_scales)]
    for member, name in zip(members, names):
        member.name = name
    scales = list(zip(in_scales, out_scales))
    loop = TrainingLoop(out_dir, fingerprint, total_steps=total,
                        checkpoint_every=cfg0.checkpoint_every,
                        metrics=[m.folder / METRICS for m in members],
                        desc=desc or (f"sae x{len(members)}" if len(members) > 1 else "sae"),
                        progress=progress, stop_after=stop_after, diverged=SAETrainingDiverged)

    state = loop.resume()
    if state is not None:
        for member, saved in zip(members, state["members"]):
            member.sae.load_state_dict(saved["model"])
            member.optimizer.load_state_dict(saved["optimizer"])
            member.since_fired.copy_(saved["since_fired"])
        if loop.start >= total and all((m.folder / SUMMARY).exists() for m in members):
            return [json.loads((m.folder / SUMMARY).read_text()) for m in members]
    else:
        # b_dec starts from the data (cfg.b_dec_init: geometric median, mean or 0),
        # measured once on a sample of its own: the checkpoint keeps it, so resuming never
        # redoes it
        init = next(iter(source.batches(INIT_SAMPLES, seed=cfg0.seed + 1)))
        for member, (_, targets) in zip(members, _member_inputs(init, cfgs, scales, device)):
            member.sae.init_b_dec(targets)

    batches = source.batches(batch_size, seed=cfg0.seed, start_batch=loop.start)
    for step in loop.steps():
        inputs = _member_inputs(next(batches), cfgs, scales, device)  # read once, fed to every SAE
        stats = [_forward_backward(member, step, x_in, target)
                 for member, (x_in, target) in zip(members, inputs)]
        rows = [dict(zip(_STAT_NAMES, row)) for row in torch.stack(stats).tolist()]  # one sync
        for member, row in zip(members, rows):  # before any SAE steps: all stay as they were
            loop.stop_if_diverged(row["loss"], step, lr_at(step, member.cfg),
                                  who=f"SAE {member.name!r}: ",
                                  hint="Lower sae.lr or the sparsity coefficient, or check "
                                       "the inputs for NaNs.")
        for member in members:
            _optimizer_step(member, step)
        dt = loop.end_step()

        done = step + 1
        records = [{"step": done, "tokens": done * batch_size, **row,
                    "lr": lr_at(step, member.cfg), "coeff": penalty_at(step, member.cfg),
                    "tokens_per_s": batch_size / dt} for member, row in zip(members, rows)]
        loop.record(records)
        for member, record in zip(members, records):
            member.recent = (member.recent + [record])[-10:]
        loop.checkpoint_if_due(done, lambda: {"members": [
            {"model": m.sae.state_dict(), "optimizer": m.optimizer.state_dict(),
             "since_fired": m.since_fired} for m in members]})
        loop.bar.set_postfix(mse=f"{rows[0]['mse']:.3g}", fve=f"{rows[0]['fve']:.3f}",
                             l0=f"{rows[0]['l0']:.1f}", dead=f"{rows[0]['dead_fraction']:.2f}")

    steps = loop.start + loop.steps_run
    evaluation = _evaluate(members, source, device, scales) if loop.finished else None
    summaries = []
    for i, member in enumerate(members):
        summary = {
            "name": member.name,
            "kind": member.cfg.kind,
            "finished": loop.finished,
            "steps": steps,
            "tokens": steps * batch_size,
            **(evaluation[i] if evaluation else {}),  # mse, fve, l0 in eval mode
            "dead_fraction": float(member.dead().float().mean()),
            # the last steps' training metrics (batchtopk: batch-level top-k, not the threshold)
            **{f"train_{key}": float(np.mean([r[key] for r in member.recent]))
               for key in ("mse", "fve", "l0") if member.recent},
            # tokens of data per second, each feeding every SAE of the sweep
            "tokens_per_s": (loop.steps_run * batch_size / loop.train_time
                             if loop.train_time else None),
            "sweep_size": len(members),
            "device": str(device),
            "dtype": member.cfg.dtype,
            "config_hash": config_hash(member.cfg),
        }
        if loop.finished:
            save_sae(member.sae, member.folder, training_tokens=total * batch_size)
            atomic_write_json(member.folder / SUMMARY, summary)
        summaries.append(summary)
    return summaries


def _is_multi_hook(source) -> bool:
    return hasattr(source, "widths")


def _check_run(cfgs: list[SAEConfig], source, in_scales: list[float],
               out_scales: list[float | None]) -> tuple[list[tuple[int, int]], list[float]]:
    """Refuse what cannot work, with a message; return each member's (d_in, d_out) and
    output scale."""
    cfg0, multi = cfgs[0], _is_multi_hook(source)
    for cfg in cfgs[1:]:
        for name in STREAM_FIELDS if multi else SHARED_FIELDS:
            if getattr(cfg, name) != getattr(cfg0, name):
                raise ConfigError(f"a sweep reads one stream of data: sae.{name} must be the "
                                  f"same for every config ({getattr(cfg0, name)!r} vs "
                                  f"{getattr(cfg, name)!r})")
    if n_steps(cfg0) < 1:
        raise ConfigError(f"sae.n_tokens={cfg0.n_tokens} is less than one batch "
                          f"({cfg0.batch_size})")
    dims, scales = [], []
    for cfg, s_in, s_out in zip(cfgs, in_scales, out_scales):
        if multi:
            for hook in (cfg.hook_in, cfg.hook_out or cfg.hook_in):
                if hook not in source.widths:
                    raise ConfigError(f"sae reads {hook!r}, which the source does not stream "
                                      f"({', '.join(source.widths)}): add it to the source's hooks")
            d_in, d_out = int(source.widths[cfg.hook_in]), int(source.widths[cfg.hook_out or cfg.hook_in])
        else:
            d_in, d_out = int(source.d_in), int(source.d_out)
        dims.append((d_in, d_out))
        if cfg.is_transcoder:
            scales.append(s_in if s_out is None else s_out)
            continue
        if d_out != d_in:
            raise ConfigError(f"the source's d_out ({d_out}) differs from d_in ({d_in}) but "
                              f"sae.hook_out is empty: set it to train a transcoder")
        if s_out not in (None, s_in):
            raise ConfigError("an SAE's target is its input: output_scale must be input_scale")
        scales.append(s_in)
    return dims, scales


def _member_inputs(batch, cfgs: list[SAEConfig], scales: list[tuple[float, float]],
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A source's batch -> each member's (x_in (B, d_in), target (B, d_out)), float32 on
    `device`, scaled: from a multi-hook batch {hook: (B, width)} by the member's hooks,
    from a plain (x_in, x_out) the same pair for all. Each (activation, scale) is moved
    and multiplied once, however many members read it."""
    if isinstance(batch, dict):
        pairs = [((c.hook_in, batch[c.hook_in]), (c.hook_out or c.hook_in, batch[c.hook_out or c.hook_in]))
                 for c in cfgs]
    else:
        pairs = [(("in", batch[0]), ("out", batch[1]))] * len(cfgs)
    done: dict = {}

    def scaled(key: str, x: torch.Tensor, scale: float) -> torch.Tensor:
        if (key, scale) not in done:
            done[key, scale] = x.to(device, torch.float32, non_blocking=True) * scale
        return done[key, scale]

    return [(scaled(*a, s_in), scaled(*b, s_out)) for (a, b), (s_in, s_out) in zip(pairs, scales)]


def _new_member(cfg: SAEConfig, folder: Path, d_in: int, d_out: int, device: torch.device,
                input_scale: float, output_scale: float) -> _Member:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the same initial weights whatever else the sweep holds
    sae = SparseAutoencoder(cfg, d_in, d_out).to(device)
    sae.input_scale.fill_(input_scale)
    sae.output_scale.fill_(output_scale)
    # plain Adam, no weight decay: the recipes of Anthropic (April 2024) and Gao et al.
    # Fused: one kernel a parameter instead of a dozen foreach passes
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=ADAM_BETAS,
                                 fused=True if device.type in ("cuda", "cpu") else None)
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    return _Member(cfg, folder, sae, optimizer, since_fired, _make_step_fn(sae, device, cfg))


# --- one step ------------------------------------------------------------------------------

_STAT_NAMES = ("loss", "mse", "sparsity", "auxk", "fve", "l0", "dead_fraction")


def _make_step_fn(sae: SparseAutoencoder, device: torch.device, cfg: SAEConfig):
    """forward (`fast.forward`), loss (AuxK aside, see `_forward_backward`) and the step's
    statistics of one SAE, under bf16 autocast if asked, compiled if asked. The statistics
    are computed here, not after, so that compiled they fuse into the kernels that make
    the latents: on a CPU an eager count of firing latents over (batch, d_sae) costs about
    as much as the encoder's matmul."""

    def step_fn(x_in, target, coeff):
        bf16 = cfg.dtype == "bfloat16"
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            out = fast.forward(sae, x_in)
            loss = sae_loss(sae, target, out, penalty_coeff=coeff)
        latents = out.latents.detach()
        # latents are >= 0, so sign() is the firing indicator; summed in fp32, counts are exact
        fires = latents.sign().sum(0, dtype=torch.float32)  # (d_sae,)
        sse = (target - out.reconstruction.detach().float()).pow(2).sum()
        sst = (target - target.mean(0)).pow(2).sum()
        stats = torch.stack([loss.total.detach(), loss.mse.detach(), loss.sparsity.detach(),
                             loss.auxk.detach(), 1 - sse / sst, fires.sum() / len(x_in)])
        # outputs only where needed (a compiled graph materialises each one); none but the
        # loss carries a gradient, or the backward would take one back for it
        return (loss.total, stats.float(), fires, latents if sae.kind == "batchtopk" else None,
                out.reconstruction.detach())

    if not cfg.compile:
        return step_fn
    # Each SAE of a sweep is its own compiled graph (dynamo guards on the module), and
    # dynamo keeps 8 per function by default: beyond that, members quietly run eagerly.
    compiled = torch.compile(step_fn)

    def compiled_or_eager(*args):
        nonlocal compiled
        if compiled is None:
            return step_fn(*args)
        try:
            return compiled(*args)
        except Exception as err:  # e.g. no C++ compiler for inductor on this CPU
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:300]}); "
                          f"training this SAE eagerly instead", RuntimeWarning, stacklevel=2)
            compiled = None
            return step_fn(*args)

    return compiled_or_eager


def _forward_backward(member: _Member, step: int, x_in: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
    """Loss and gradients of one SAE on one batch; returns its stats (a tensor, so the
    caller syncs once for every SAE of the sweep)."""
    sae, cfg = member.sae, member.cfg
    coeff = torch.tensor(penalty_at(step, cfg), device=x_in.device)  # a tensor: no recompiles
    total, stats, fires, latents, reconstruction = member.step_fn(x_in, target, coeff)
    # AuxK runs eagerly, outside the compiled graph: it reads the dead latents alone, and
    # their number changes from step to step, which a compiled graph would recompile for
    auxk = fast.auxk_term(sae, x_in, member.dead(), reconstruction, target)
    if auxk is not None:
        total = total + cfg.aux_coeff * auxk
        with torch.no_grad():
            stats[_STAT_NAMES.index("loss")] += cfg.aux_coeff * auxk
            stats[_STAT_NAMES.index("auxk")] = auxk
    total.backward()
    with torch.no_grad():
        # update the dead counters now: their use (AuxK) is over for this step
        member.since_fired.copy_(torch.where(fires > 0, 0, member.since_fired + len(x_in)))
        if sae.kind == "batchtopk":
            sae.update_inference_threshold(latents)
        return torch.cat([stats, member.dead().float().mean()[None]])


def _optimizer_step(member: _Member, step: int) -> None:
    sae, optimizer = member.sae, member.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, member.cfg)
    unit_norm = sae.kind in UNIT_NORM_KINDS
    if unit_norm:
        sae.remove_parallel_decoder_grad()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if unit_norm:
        sae.normalize_decoder()


@torch.no_grad()
def _evaluate(members: list[_Member], source, device: torch.device,
              scales: list[tuple[float, float]]) -> list[dict]:
    """MSE, FVE and L0 of every SAE in eval mode (batchtopk: its threshold) on
    EVAL_BATCHES batches of a stream with another seed, pooled over the batches."""
    cfg0 = members[0].cfg
    sums = torch.zeros(len(members), 4, dtype=torch.float64)  # sse, sst, active, tokens
    batches = source.batches(cfg0.batch_size, seed=cfg0.seed + 2)
    for _ in range(EVAL_BATCHES):
        inputs = _member_inputs(next(batches), [m.cfg for m in members], scales, device)
        for i, (member, (x_in, target)) in enumerate(zip(members, inputs)):
            sst = (target - target.mean(0)).pow(2).sum()
            member.sae.eval()
            out = member.sae(x_in)
            member.sae.train()
            sums[i] += torch.stack([(target - out.reconstruction).pow(2).sum(), sst,
                                    (out.latents > 0).sum(), x_in.new_tensor(len(x_in))]).double().cpu()
    return [{"mse": float(s[0] / s[3]), "fve": float(1 - s[0] / s[1]), "l0": float(s[2] / s[3])}
            for s in sums]


__all__ = ["train_sae", "train_sweep", "SAETrainingDiverged", "lr_at", "penalty_at", "default_name"]
