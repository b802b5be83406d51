"""Loop parts every trainer shares, as plain functions and small classes (no Trainer subclass).

- configuration pieces: :class:`OptimConfig`, :class:`BatchConfig`, :class:`RunConfig`;
- :func:`build_optimizer` (AdamW) and :func:`build_scheduler` (warm-up, then linear or cosine decay
  to a floor);
- :class:`BatchPlan`: a deterministic order of examples per epoch, cut into global batches, each
  split across processes and then into micro-batches for gradient accumulation;
- :func:`accumulate_and_step`: backward over micro-batches, one optimizer step;
- :func:`held_out_sums`: held-out statistics summed over micro-batches and processes;
- checkpointing and logging live in :mod:`prefalign.trainers.checkpoint` and
  :mod:`prefalign.trainers.logging`.

Distributed runs go through ``accelerate`` (``accelerate launch`` with any number of processes).
A global batch is split across processes by rank and each loss is normalised by the *global*
number of terms it averages over, so a run's result does not depend on the number of processes or
micro-batches (tests check this).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator

from prefalign.trainers.early_stop import EarlyStopConfig


@dataclass
class OptimConfig:
    learning_rate: float = 1e-5
    """Peak learning rate."""
    min_learning_rate: float = 0.0
    """Floor the schedule decays to (Ivison et al.'s reward model: 1e-6)."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming up linearly from 0."""
    schedule: str = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping)."""

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"optim.schedule must be linear, cosine or constant, got {self.schedule!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0 or self.min_learning_rate > self.learning_rate:
            raise ValueError("optim: need 0 <= min_learning_rate <= learning_rate and learning_rate > 0")


@dataclass
class BatchConfig:
    global_batch_size: int = 64
    """Examples per optimizer step, summed over processes and micro-batches."""
    micro_batch_size: int = 8
    """Examples per forward pass on one process (what fits in memory)."""
    epochs: float = 1.0
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = None
    """Number of optimizer steps; set, it replaces epochs (the data repeats in new orders as needed)."""

    def __post_init__(self) -> None:
        if self.global_batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("batch sizes must be positive")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


@dataclass
class RunConfig:
    output_dir: str = "runs/run"
    """Folder for checkpoints, logs and the final model."""
    seed: int = 0
    """Seed for data order, initialisation and sampling."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir (refused if settings differ, see allow_changes)."""
    overwrite: bool = False
    """Start a new run in an output_dir that holds another run, removing that run's files first."""
    allow_changes: bool = False
    """Resume even though settings differ from the saved config.yaml; the new values apply from the resumed step."""
    save_every: int = 0
    """Save a checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the newest)."""
    log_every: int = 1
    """Write metrics every N optimizer steps."""
    eval_every: int = 0
    """Evaluate on held-out data every N optimizer steps (0: only at the end)."""
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    """Stop when the held-out objective has plateaued (prefalign.trainers.early_stop; off by default)."""
    mixed_precision: str | None = None
    """Autocast: no, bf16 or fp16 (fp16 needs a GPU). None: the launcher's setting (`accelerate launch
    --mixed_precision`, or the accelerate config file's), else no."""
    tensorboard: bool = True
    """Write TensorBoard event files (False drops tensorboard from report_to)."""
    report_to: str = "tensorboard"
    """Experiment trackers, comma-separated: tensorboard, and any of accelerate's (wandb, mlflow, comet_ml, aim,
    clearml, dvclive, swanlab, trackio), or none. metrics.jsonl is always written."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    progress: bool = True
    """Show progress: a bar on a terminal, a plain line every progress_every steps in a log file."""
    progress_every: int = 0
    """Steps between progress lines when stderr is not a terminal (0: about 20 lines a run)."""

    def __post_init__(self) -> None:
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError(f"run.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.resume and self.overwrite:
            raise ValueError("run.resume and run.overwrite exclude each other")
        self.trackers()  # fail early on an unknown or missing tracker

    def trackers(self) -> list[str]:
        """The trackers of report_to (tensorboard dropped when tensorboard is False), checked to be installed."""
        from prefalign.trainers.logging import check_trackers

        names = [t.strip().lower() for t in self.report_to.split(",") if t.strip()]
        names = [] if names == ["none"] else names
        if not self.tensorboard:
            names = [t for t in names if t != "tensorboard"]
        return check_trackers(names)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def launcher_precision() -> str:
    """The mixed precision ``accelerate launch`` passes on (its flag, else its config file's), or ``no``."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()


def make_accelerator(run: RunConfig) -> Accelerator:
    """The run's Accelerator. The launcher's settings (``accelerate launch`` flags and config file: mixed
    precision, DeepSpeed, FSDP, which reach the process as ``ACCELERATE_*`` variables) are left to accelerate;
    ``run.mixed_precision`` overrides the precision only when given."""
    if run.threads:
        torch.set_num_threads(run.threads)
    mixed = run.mixed_precision or launcher_precision()
    if mixed == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed precision fp16 needs a GPU; use bf16 or no on a CPU")
    _release_precision_setting(mixed)
    kwargs: dict = {"cpu": not torch.cuda.is_available()}
    if run.mixed_precision is not None:
        kwargs["mixed_precision"] = run.mixed_precision
    others = [t for t in run.trackers() if t != "tensorboard"]  # TensorBoard is written by MetricLogger
    if others:
        from accelerate.utils import ProjectConfiguration

        logging_dir = os.path.join(run.output_dir, "trackers")
        kwargs["log_with"] = others
        kwargs["project_config"] = ProjectConfiguration(project_dir=run.output_dir, logging_dir=logging_dir)
    return Accelerator(**kwargs)


def _release_precision_setting(mixed: str) -> None:
    """Let one process run several trainers with different precisions (a study, a notebook).

    accelerate keeps the mixed-precision choice in a process-wide singleton and refuses a second
    Accelerator with another one; the process group itself (PartialState) is kept.
    """
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    # on CPU the fused kernel (one vectorised pass per tensor) is about 3x faster than the default per-tensor
    # loop of small ops, the same update to rounding (1e-8); a tiny model's PPO step takes 8 optimizer steps
    fused = all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64, torch.bfloat16) for p in params)
    return torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    floor = cfg.min_learning_rate / cfg.learning_rate
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))


@dataclass
class BatchPlan:
    """Which examples make up each optimizer step, deterministic in (seed, epoch).

    Epoch ``e`` visits the examples in ``randperm(n, seed + e)``; consecutive slices of
    ``global_batch_size`` make the steps (a last partial slice is dropped, so every step has the
    same size). Process ``rank`` of ``world`` takes ``indices[rank::world]`` of each step.
    """

    num_examples: int
    global_batch_size: int
    seed: int
    epochs: float = 1.0
    max_steps: int | None = None
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.num_examples < self.global_batch_size:
            raise ValueError(
                f"{self.num_examples} examples are fewer than one global batch of {self.global_batch_size}"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.global_batch_size

    @property
    def total_steps(self) -> int:
        if self.max_steps:
            return self.max_steps
        return max(1, int(self.steps_per_epoch * self.epochs))

    def epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_examples))
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_examples, generator=g).tolist()

    def step_indices(self, step: int) -> list[int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[within * self.global_batch_size : (within + 1) * self.global_batch_size]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """This process's share of a global batch."""
    if len(indices) % world:
        raise ValueError(f"a global batch of {len(indices)} does not split over {world} processes")
    return list(indices[rank::world])


def micro_batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def global_sum(value: float | torch.Tensor, accelerator: Accelerator) -> float:
    """Sum of a number over all processes (the global normaliser of a loss)."""
    t = torch.as_tensor(float(value), dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return float(t.item())


@torch.no_grad()
def held_out_sums(
    accelerator: Accelerator,
    model: torch.nn.Module,
    items: Sequence,
    micro: int,
    collate: Callable[[Sequence], dict[str, torch.Tensor]],
    sums: Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, float]],
    keys: Sequence[str],
) -> dict[str, float]:
    """Sums of held-out statistics over all processes: each process takes every n-th item, runs
    ``sums(model, batch)`` (a dict with ``keys``) on micro-batches of ``collate``-d items in eval mode,
    and the totals are summed across processes in one reduction (key ``"count"``: the number of items).

    The forward passes go through the *unwrapped* model: a DistributedDataParallel wrapper
    broadcasts buffers at every forward, a collective that would hang when the processes run
    different numbers of micro-batches. ``keys`` are given up front so that a process left without
    items still joins the final reduction."""
    from prefalign.trainers.gather import parameters_for_generation

    mine = list(items)[accelerator.process_index :: accelerator.num_processes]
    totals = dict.fromkeys(keys, 0.0)
    totals["count"] = float(len(mine))
    # ZeRO-3 / FSDP: the parameters gathered once, so processes may run different numbers of forward passes
    with parameters_for_generation(accelerator, model) as model:
        was_training = model.training
        model.eval()
        try:
            for chunk in micro_batches(mine, micro):
                batch = {k: v.to(accelerator.device) for k, v in collate(chunk).items()}
                for key, value in sums(model, batch).items():
                    totals[key] += float(value)
        finally:
            model.train(was_training)
    names = sorted(totals)
    summed = torch.tensor([totals[k] for k in names], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        summed = accelerator.reduce(summed, reduction="sum")
    return dict(zip(names, summed.tolist()))


def accumulate_and_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Sequence,
    loss_fn: Callable[[object], torch.Tensor],
    max_grad_norm: float | None,
) -> float | None:
    """Backward each micro-batch's loss, then one clipped optimizer step; returns the grad norm.

    ``loss_fn(batch)`` must return this micro-batch's share of the *global* loss (its sum of terms
    divided by the global count), so the accumulated gradient equals the full-batch gradient. DDP
    averages gradients over processes; the loss is scaled by the process count to undo that. Under DeepSpeed the
    last micro-batch is marked as the accumulation boundary, where the engine clips and steps.
    """
    from prefalign.trainers.engines import engine_loss_scale, is_deepspeed

    scale = accelerator.num_processes * engine_loss_scale(accelerator, len(batches))
    deepspeed = is_deepspeed(accelerator)
    try:
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            context = accelerator.no_sync(model) if not last else _null()
            with context:
                with accelerator.autocast():
                    loss = loss_fn(batch) * scale
                if deepspeed:  # the engine steps at the boundary marked here (accelerate hands it sync_gradients)
                    accelerator.sync_gradients = last
                accelerator.backward(loss)
    finally:
        if deepspeed:
            accelerator.sync_gradients = True
    grad_norm = None
    if max_grad_norm is not None:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)  # DeepSpeed: its own clipping's norm
        grad_norm = None if norm is None else float(norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def check_finite(name: str, value: torch.Tensor | float, step: int) -> None:
    """Stop the run with a clear message on a non-finite loss or reward (before any save)."""
    t = torch.as_tensor(value)
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            f"non-finite {name} at step {step} ({t.flatten()[:4].tolist()}); stopping before any checkpoint is "
            f"written. Lower the learning rate, enable gradient clipping or check the reward source."
        )


def local_rank_info(accelerator: Accelerator) -> tuple[int, int]:
    return accelerator.process_index, accelerator.num_processes


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
