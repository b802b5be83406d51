"""What the trainers tell the sharded engines that ``accelerate launch --config_file`` selects.

``make_accelerator`` leaves DeepSpeed and FSDP to the launcher (``recipes/accelerate/``). Our loops keep their
own batching (:class:`~prefalign.trainers.common.BatchPlan`, micro-batches with ``no_sync``, one optimizer step
per global batch), which FSDP follows as it follows DDP. DeepSpeed instead owns the accumulation and the
clipping: its engine steps the optimizer itself at every ``gradient_accumulation_steps``-th backward and divides
each loss by that number. So, under DeepSpeed:

- :func:`configure_deepspeed` writes the micro-batch size, the number of micro-batches per process per optimizer
  step and the clipping norm into the DeepSpeed config before ``accelerator.prepare`` (the recipes leave them
  ``auto``);
- :func:`engine_loss_scale` undoes the engine's division by that number, since our micro-batch losses are
  already shares of the global loss; a step with another number of micro-batches is refused, because the engine
  would then step in the middle of a global batch.

PPO trains two models (policy and critic) in one Accelerator, which accelerate's DeepSpeed integration does not
allow (one engine per Accelerator); :func:`refuse_deepspeed_for_two_models` says so up front. PPO runs sharded
under FSDP2 (``recipes/accelerate/fsdp2.yaml``). None of the DeepSpeed paths can run on this project's CPU
machines; ``benchmarks/gpu_smoke.sh`` exercises them on a GPU.
"""

from __future__ import annotations

import math

from accelerate import Accelerator
from accelerate.utils import DistributedType


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def micro_batches_per_step(global_batch_size: int, micro_batch_size: int, num_processes: int) -> int:
    """Micro-batches each process runs per optimizer step."""
    return math.ceil(global_batch_size / num_processes / micro_batch_size)


def configure_deepspeed(
    accelerator: Accelerator, micro_batch_size: int, accumulation: int, max_grad_norm: float | None
) -> None:
    """Give DeepSpeed our micro-batch size, accumulation and clipping (call before ``accelerator.prepare``)."""
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = accumulation
    config["train_batch_size"] = micro_batch_size * accumulation * accelerator.num_processes
    config["gradient_clipping"] = 0.0 if max_grad_norm is None else float(max_grad_norm)
    accelerator.gradient_accumulation_steps = accumulation


def engine_loss_scale(accelerator: Accelerator, micro_batches: int) -> float:
    """The factor a micro-batch loss is multiplied by before ``accelerator.backward`` to undo the engine's own
    division by its accumulation steps (1 outside DeepSpeed)."""
    if not is_deepspeed(accelerator):
        return 1.0
    expected = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]
    if micro_batches != expected:
        raise ValueError(
            f"DeepSpeed was configured for {expected} micro-batches per optimizer step, this step has {micro_batches}: "
            "make the global batch a multiple of micro_batch_size x processes"
        )
    return float(micro_batches)


def refuse_deepspeed_for_two_models(accelerator: Accelerator, what: str) -> None:
    if is_deepspeed(accelerator):
        raise ValueError(
            f"{what} trains two models (policy and critic); accelerate's DeepSpeed integration takes one trained "
            "model per Accelerator. Launch it with recipes/accelerate/fsdp2.yaml (or ddp.yaml) instead"
        )
