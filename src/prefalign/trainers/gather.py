"""Full parameters for generation under sharded engines, gathered once per generate call.

Sampling calls the policy once per new token. Under DeepSpeed ZeRO-3 or FSDP every forward pass would
all-gather each layer's shards and free them again, so a 256-token response costs 256 all-gathers of the
whole model; the peers measured a 10x slower rollout that way (TRL #1483). Worse, processes whose responses
end early stop calling the model while the others go on, and a collective inside the forward pass then
waits forever. :func:`parameters_for_generation` gathers the parameters once, lets the generation run with
no collective in its forward passes, and frees them afterwards:

- DeepSpeed ZeRO-3: ``deepspeed.zero.GatheredParameters`` over all parameters, with the engine's
  per-module fetch / release hooks taken off while generating and put back after (TRL's approach);
- FSDP2 (``fully_shard``): every FSDP module unsharded once, with ``reshard_after_forward`` off so the
  forward passes keep the full parameters, then resharded and the setting restored;
- FSDP1: ``summon_full_params`` (no write-back);
- DDP, one process, ZeRO-1/2: nothing to gather; the unwrapped model.

The same holds for held-out evaluation, where each process scores its own share of the examples (one more
micro-batch on some processes): :func:`prefalign.trainers.common.held_out_sums` and DPO's evaluation use it too.

The price is the memory of one full copy of the policy on each GPU during generation (for a 7B policy
in bf16, 14 GB; see ``docs/memory_plan.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType


def _zero3(accelerator: Accelerator, model: torch.nn.Module | None = None) -> bool:
    """Whether ``model`` (a DeepSpeed engine) is partitioned by ZeRO-3: the engine's own stage, since with one plugin
    per trained model (PPO's policy and critic) the active plugin may be another model's; else the active plugin's."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return False
    stage = getattr(model, "zero_optimization_stage", None)
    if callable(stage):
        return stage() == 3
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _zero3_offload(engine):
    """The object holding a ZeRO-3 engine's parameter fetch / release hooks."""
    optimizer = engine.optimizer
    if optimizer is None:
        raise RuntimeError("a ZeRO-3 engine without an optimizer has no parameter hooks to suspend")
    return getattr(optimizer, "parameter_offload", optimizer)


@contextmanager
def _zero3_gathered(engine) -> Iterator[None]:
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(engine.parameters())):
        offload = _zero3_offload(engine)
        for param in offload.module.parameters(recurse=True):
            param.ds_active_sub_modules.clear()
        for hook in [*offload.forward_hooks, *offload.backward_hooks]:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            offload._register_hooks_recursively(offload.module)


def fsdp2_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` that ``fully_shard`` turned into FSDP modules (FSDP2), outermost first."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def _fsdp2_unsharded(modules: list[torch.nn.Module], reshard_after_forward: bool) -> Iterator[None]:
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(reshard_after_forward, recurse=False)


@contextmanager
def parameters_for_generation(accelerator: Accelerator, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with parameters_for_generation(acc, policy) as unwrapped: generate(unwrapped, ...)``: the unwrapped
    model with its full parameters in place for the whole block (see the module docstring).

    Gathering is a collective: every process must enter the block, also one with nothing to generate."""
    unwrapped = accelerator.unwrap_model(model)
    if _zero3(accelerator, model):
        with _zero3_gathered(model):
            yield unwrapped
        return
    fsdp2 = fsdp2_modules(unwrapped)
    if fsdp2:
        plugin = getattr(accelerator.state, "fsdp_plugin", None)
        with _fsdp2_unsharded(fsdp2, bool(getattr(plugin, "reshard_after_forward", True))):
            yield unwrapped
        return
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            yield unwrapped
        return
    yield unwrapped
