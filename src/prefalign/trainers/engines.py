"""What the trainers tell the sharded engines that ``accelerate launch --config_file`` selects.

``make_accelerator`` leaves DeepSpeed and FSDP to the launcher (``recipes/accelerate/``). Our loops keep their
own batching (:class:`~prefalign.trainers.common.BatchPlan`, micro-batches with ``no_sync``, one optimizer step
per global batch), which FSDP follows as it follows DDP. DeepSpeed instead owns the accumulation and the
clipping: its engine clips and steps the optimizer at an accumulation boundary and divides each loss by its
``gradient_accumulation_steps``. accelerate 1.16 hands the engine ``sync_gradients`` as that boundary at every
``accelerator.backward`` (``DeepSpeedEngineWrapper.backward``: ``set_gradient_accumulation_boundary``, then
``engine.step()`` when True), and ``sync_gradients`` stays True outside ``accelerator.accumulate``: left alone,
every micro-batch would be an optimizer step. So, under DeepSpeed:

- :func:`prefalign.trainers.common.accumulate_and_step` sets ``sync_gradients`` False for all but the last
  micro-batch of an optimizer step, so the engine steps once per global batch;
- :func:`configure_deepspeed` writes the micro-batch size, the number of micro-batches per process per optimizer
  step and the clipping norm into the DeepSpeed config before ``accelerator.prepare`` (the recipes leave them
  ``auto``);
- :func:`engine_loss_scale` undoes the engine's division by that number, since our micro-batch losses are
  already shares of the global loss; a step with another number of micro-batches is refused (the division
  would be wrong), except for an engine configured for one micro-batch per step (PPO), which divides by 1.

PPO with a critic trains two models, and one Accelerator carries one DeepSpeed engine (its ``backward``, clipping
norm and ``save_state`` go to that engine). :func:`engine_accelerators` therefore follows accelerate's "multiple
models all being trained" recipe (its ``deepspeed_multiple_model`` guide and ``test_ds_multiple_model.py``): the
shared AcceleratorState holds a dict of :class:`~accelerate.utils.DeepSpeedPlugin`, one per trained model (a copy
of the launcher's config, or a file named for that model), and every model after the first gets a second
``Accelerator()`` over the same state; :func:`prepare_engine` selects the model's plugin
(``state.select_deepspeed_plugin(name)``), fills its ``auto`` fields and prepares it. PPO's number of micro-batches
per optimizer step varies (length-grouped micro-batches), so its engines are configured for one micro-batch per
step and :func:`prefalign.trainers.common.accumulate_and_step` marks the accumulation boundary itself (accelerate
passes ``sync_gradients`` to ``engine.set_gradient_accumulation_boundary``). Critic-free PPO trains one model and
needs none of this. None of the DeepSpeed paths can run on this project's CPU machines (the wiring is tested with
stand-ins: ``tests/trainers/test_engines_multi.py``); ``benchmarks/gpu_smoke.sh`` exercises them on a GPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
    division by its accumulation steps (1 outside DeepSpeed, and for an engine configured for one micro-batch per
    step, whose boundaries :func:`~prefalign.trainers.common.accumulate_and_step` marks: any count goes)."""
    if not is_deepspeed(accelerator):
        return 1.0
    expected = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]
    if expected == 1:
        return 1.0
    if micro_batches != expected:
        raise ValueError(
            f"DeepSpeed was configured for {expected} micro-batches per optimizer step, this step has {micro_batches}: "
            "make the global batch a multiple of micro_batch_size x processes"
        )
    return float(micro_batches)


def _plugin_copy(plugin: Any, config_file: str | None) -> Any:
    from accelerate.utils import DeepSpeedPlugin

    if config_file is not None:
        return DeepSpeedPlugin(hf_ds_config=config_file)
    return DeepSpeedPlugin(hf_ds_config=copy.deepcopy(plugin.deepspeed_config), zero3_init_flag=plugin.zero3_init_flag)


def engine_accelerators(
    accelerator: Accelerator,
    names: Sequence[str],
    config_files: dict[str, str | None] | None = None,
    *,
    new_accelerator: Callable[[], Accelerator] | None = None,
    new_plugin: Callable[[Any, str | None], Any] | None = None,
) -> dict[str, Accelerator]:
    """The Accelerator that prepares, backwards, clips and saves each trained model in ``names`` (call before any
    ``prepare``).

    Outside DeepSpeed every name shares ``accelerator``. Under DeepSpeed the state's plugins become a dict with one
    plugin per name: the launcher's own for ``names[0]``, for the others a copy of its config (same ZeRO stage,
    offload and precision) or ``DeepSpeedPlugin(hf_ds_config=config_files[name])`` where a file is named; the
    first name keeps ``accelerator``, each other gets ``Accelerator()`` over the shared state (``new_accelerator``
    and ``new_plugin`` replace those two constructors, for tests).
    """
    new_accelerator = new_accelerator or Accelerator
    new_plugin = new_plugin or _plugin_copy
    files = {k: v for k, v in (config_files or {}).items() if v is not None}
    if not is_deepspeed(accelerator):
        if files:
            field = ", ".join(sorted(files))
            raise ValueError(f"a DeepSpeed config for {field} was given, but this run is not launched under DeepSpeed")
        return dict.fromkeys(names, accelerator)
    if len(names) == 1 and not files:  # one engine: the launcher's plugin as it is
        return {names[0]: accelerator}
    for name, file in files.items():
        if not Path(file).is_file():
            raise FileNotFoundError(f"the DeepSpeed config given for the {name}, {file!r}, is not a file")
    state = accelerator.state
    plugins = state.deepspeed_plugins
    if isinstance(plugins, dict):
        missing = [n for n in names if n not in plugins]
        if missing:
            raise ValueError(
                f"the Accelerator's DeepSpeed plugins are named {sorted(plugins)}; this run needs one per trained "
                f"model, named {list(names)} (missing {missing})"
            )
    else:
        if names[0] in files:
            raise ValueError(
                f"the DeepSpeed config of {names[0]} is the launcher's (accelerate launch --config_file); "
                f"a separate file can be named for {list(names[1:])} only"
            )
        plugins = {names[0]: plugins}
        for name in names[1:]:
            plugin = new_plugin(plugins[names[0]], files.get(name))
            plugin.set_mixed_precision(state.mixed_precision)
            plugins[name] = plugin
        state.deepspeed_plugins = plugins
    out = {names[0]: accelerator}
    for name in names[1:]:
        out[name] = new_accelerator()
    return out


def select_engine(accelerator: Accelerator, name: str) -> None:
    """Make ``name``'s DeepSpeed plugin the active one (where the state holds several); e.g. the launcher's again
    after the other models were prepared, so later readers of ``state.deepspeed_plugin`` see the first model's."""
    if is_deepspeed(accelerator) and isinstance(accelerator.state.deepspeed_plugins, dict):
        if name not in accelerator.state.deepspeed_plugins:
            raise ValueError(
                f"no DeepSpeed plugin named {name!r} (the state has {sorted(accelerator.state.deepspeed_plugins)})"
            )
        accelerator.state.select_deepspeed_plugin(name)


def prepare_engine(
    accelerator: Accelerator, name: str, micro_batch_size: int, max_grad_norm: float | None, *objects: Any
) -> tuple:
    """``accelerator.prepare(*objects)`` for the trained model ``name`` (with its optimizer). Under DeepSpeed its
    plugin is selected first (when the state holds several) and its ``auto`` fields filled: ``micro_batch_size``,
    one micro-batch per engine step (``accumulate_and_step`` marks the real boundary) and its clipping norm."""
    if is_deepspeed(accelerator):
        select_engine(accelerator, name)
        configure_deepspeed(accelerator, micro_batch_size, 1, max_grad_norm)
    return accelerator.prepare(*objects)
