"""Atomic checkpoints through ``accelerate``'s ``save_state`` / ``load_state``, resumable on another process count.

A checkpoint is a folder ``<output_dir>/checkpoints/step-00000012/`` holding

- ``accelerate/`` (and ``accelerate-<name>/`` for each further Accelerator, e.g. PPO's critic engine under
  DeepSpeed): what ``Accelerator.save_state`` writes for the models and optimizers that went through
  ``accelerator.prepare``: under DDP (or one process) full state dicts (``model.safetensors``,
  ``model_1.safetensors``, ... in the order of preparation, saved *unwrapped*, without DDP's ``module.``
  prefix, so a checkpoint made on one process loads on two and back), ``optimizer*.bin``; under DeepSpeed
  the engine's ZeRO shards (``pytorch_model/``); under FSDP the sharded (DCP) or full state dicts that the
  FSDP plugin's ``state_dict_type`` asks for; plus each process's RNG states (``random_states_<rank>.pkl``);
- ``<name>.safetensors`` for every model that was *not* prepared (e.g. PPO's reference), a full state dict
  written by the main process;
- ``state.pt``: step, scheduler states, trainer-specific state (value-normalisation statistics, KL
  controller, round number, ...), the config, and the layout the checkpoint was written with (process
  count, distributed type, the names of the prepared models in order).

It is written into a hidden temporary folder and renamed into place, then ``latest`` (a text file with the
folder's name) is replaced atomically, so a run killed at any moment leaves either the previous checkpoint or
the new one, never a half-written one. Older checkpoints beyond ``keep`` are deleted after the new one is in
place. The plain HF model folder for users (``<output_dir>/model``) is written separately, by
:func:`save_hf_model`.

Resuming on a different number of processes (DDP, or one process) is supported; what is and is not bit-exact:

- exact: model weights, optimizer moments and step counts, scheduler, step, trainer state, and the *data
  order*: the trainers' :class:`~prefalign.trainers.common.BatchPlan` depends only on (seed, global step), and
  each global batch is the same set of examples whatever the process count (each process takes
  ``indices[rank::world]``);
- not bit-exact: the losses and updates of the resumed steps are the same sums over the same examples, but
  split differently over processes, so gradients are reduced in a different order (equal to rounding,
  about 1e-7 relative in float32; the 1- and 2-process tests allow 1e-5);
- not the same draws: per-process random streams cannot be carried over to a different number of processes.
  With the same count, every process gets back its own RNG state (exact); with another count, every process
  is re-seeded from (run seed, step, rank), so the resumed run is deterministic (a second resume from the
  same checkpoint on the same count draws the same numbers) but draws differ from a run that never
  changed its process count. PPO seeds its sampling per (seed, step, rank) anyway, so its responses after a
  change of count are different samples from the same prompts.
- DeepSpeed ZeRO checkpoints are partitioned by the data-parallel size and are refused on another process
  count (convert them with DeepSpeed's ``ds_to_universal`` first); FSDP's sharded state dicts go through
  ``torch.distributed.checkpoint``, which re-shards on load. Neither can be tested on this project's CPU
  machines (accelerate turns DeepSpeed and FSDP on only with GPUs); DDP and one process are tested both ways.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_model, save_model

from prefalign.atomic import write_text_atomic

STATE_DIR = "accelerate"


def checkpoint_format(accelerator: Accelerator) -> str:
    """How the prepared models' states are stored: ``full`` (one process or DDP), ``deepspeed`` or ``fsdp``."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    if kind == DistributedType.FSDP:
        return "fsdp"
    return "full"


def reseed_for(seed: int, step: int, rank: int) -> int:
    """The seed every process takes when a run resumes on another process count (deterministic)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 29) % 2**32


def _capture_settings(optimizers: dict[str, Any], schedulers: dict[str, Any]) -> tuple[dict, dict]:
    groups = {
        key: [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for key, o in optimizers.items()
    }
    return groups, {key: list(s.base_lrs) for key, s in schedulers.items()}


def _apply_settings(optimizers: dict[str, Any], schedulers: dict[str, Any], fresh: tuple[dict, dict]) -> None:
    """Give the optimizers and schedulers back the settings they were built with (a resume with changed settings:
    the checkpoint gives only the moment estimates and the step count)."""
    groups, lrs = fresh
    for key, opt in optimizers.items():
        for group, settings in zip(opt.param_groups, groups[key]):
            group.update(settings)
    for key, sched in schedulers.items():
        sched.base_lrs = lrs[key]
        params = optimizers[key].param_groups if key in optimizers else []
        for group, base, factor in zip(params, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)


class Checkpointer:
    """Save and restore a run's checkpoints under ``<output_dir>/checkpoints`` (see the module docstring)."""

    def __init__(
        self,
        output_dir: str | Path,
        accelerator: Accelerator,
        keep: int = 2,
        seed: int = 0,
        companions: dict[str, Accelerator] | None = None,
    ):
        """``companions``: further Accelerators that prepared models of the run (under DeepSpeed one per trained
        model: :func:`prefalign.trainers.engines.engine_accelerators`); each saves its engine's state into
        ``accelerate-<name>/`` beside ``accelerate/``."""
        self.root = Path(output_dir) / "checkpoints"
        self.accelerator = accelerator
        self.companions = dict(companions or {})
        self.keep = max(1, keep)
        self.seed = seed

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.exists():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / "state.pt").exists():
            raise FileNotFoundError(f"{pointer} names {path.name}, which is missing or incomplete")
        return path

    def _zero_stages(self) -> dict[str, int]:
        """Each prepared engine's ZeRO stage by state folder (DeepSpeed only; empty otherwise)."""
        if checkpoint_format(self.accelerator) != "deepspeed":
            return {}
        stages = {}
        for folder, accelerator in self._state_folders().items():
            config = getattr(accelerator, "deepspeed_config", None) or {}
            stages[folder] = config.get("zero_optimization", {}).get("stage")
        return stages

    def _state_folders(self) -> dict[str, Accelerator]:
        """Where each Accelerator's save_state goes inside a checkpoint: the run's, then the companions'."""
        return {STATE_DIR: self.accelerator} | {f"{STATE_DIR}-{k}": c for k, c in self.companions.items()}

    def _prepared_names(self, models: dict[str, torch.nn.Module], accelerator: Accelerator | None = None) -> list[str]:
        """The names of ``models`` in an accelerator's order of preparation (its ``_models``; default the run's)."""
        unwrap = self.accelerator.unwrap_model
        by_id = {id(unwrap(m)): k for k, m in models.items()}
        names = [by_id.get(id(unwrap(m))) for m in (accelerator or self.accelerator)._models]
        if None in names:
            raise ValueError(
                "a model prepared by this run's accelerator is missing from the checkpoint's models "
                f"({sorted(models)}); save_state would write it under an index nobody can name"
            )
        return names

    def save(
        self,
        step: int,
        models: dict[str, torch.nn.Module],
        state: dict[str, Any],
        schedulers: dict[str, Any] | None = None,
        optimizers: dict[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint for ``step``; all processes must call it.

        ``optimizers`` that went through ``accelerator.prepare`` are saved by ``save_state``; any other
        optimizer's state dict goes into ``state.pt``, as do the ``schedulers``' states.
        """
        acc = self.accelerator
        name = f"step-{step:08d}"
        final, tmp = self.root / name, self.root / f".{name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        prepared = self._prepared_names(models)
        companions = {name: self._prepared_names(models, c) for name, c in self.companions.items()}
        for folder, accelerator in self._state_folders().items():
            handle = accelerator.register_save_state_pre_hook(self._unwrapped_weights)
            try:
                accelerator.save_state(str(tmp / folder))
            finally:
                handle.remove()
        held = [o for a in (acc, *self.companions.values()) for o in a._optimizers]
        own = {k: o for k, o in (optimizers or {}).items() if not any(o is p for p in held)}
        everywhere = set(prepared).union(*companions.values())
        if acc.is_main_process:
            for key, model in models.items():
                if key not in everywhere:
                    save_model(acc.unwrap_model(model), str(tmp / f"{key}.safetensors"))
            layout = {
                "num_processes": acc.num_processes,
                "format": checkpoint_format(acc),
                "prepared_models": prepared,
                "companions": companions,
                "zero_stages": self._zero_stages(),
            }
            extra = {
                "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
                "optimizers": {k: o.state_dict() for k, o in own.items()},
            }
            torch.save({**state, **extra, "layout": layout}, tmp / "state.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_text_atomic(self.root / "latest", name)
            self._prune(keep_name=name)
        acc.wait_for_everyone()
        return final

    def _unwrapped_weights(self, models: list, weights: list, output_dir: str) -> None:
        """save_state's pre-hook: full state dicts without DDP's ``module.`` prefix (loadable on any count)."""
        for i, model in enumerate(models[: len(weights)]):
            weights[i] = self.accelerator.unwrap_model(model).state_dict()

    def _unwrapped_models(self, models: list, input_dir: str) -> None:
        """load_state's pre-hook: load the full state dicts into the unwrapped models."""
        for i, model in enumerate(models):
            models[i] = self.accelerator.unwrap_model(model)

    def _prune(self, keep_name: str) -> None:
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        for old in steps[: max(0, len(steps) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def _check_layout(self, path: Path, layout: dict[str, Any], models: dict[str, torch.nn.Module]) -> None:
        acc = self.accelerator
        if layout["format"] != checkpoint_format(acc):
            raise ValueError(
                f"checkpoint {path} holds {layout['format']} states but this run is {checkpoint_format(acc)} "
                f"({acc.distributed_type}); resume it with the accelerate config it was written with"
            )
        prepared = self._prepared_names(models)
        if prepared != layout["prepared_models"]:
            raise ValueError(
                f"checkpoint {path} saved prepared models {layout['prepared_models']}, this run has {prepared}"
            )
        companions = {name: self._prepared_names(models, c) for name, c in self.companions.items()}
        if companions != layout.get("companions", {}):
            raise ValueError(
                f"checkpoint {path} saved models of separate engines {layout.get('companions', {})}, this run has "
                f"{companions}: resume it with the accelerate config it was written with"
            )
        if layout["format"] == "deepspeed" and layout["num_processes"] != acc.num_processes:
            raise ValueError(
                f"checkpoint {path} holds DeepSpeed ZeRO shards for {layout['num_processes']} processes, this run has "
                f"{acc.num_processes}: convert it with DeepSpeed's ds_to_universal first, or resume on "
                f"{layout['num_processes']} processes"
            )
        saved, now = layout.get("zero_stages", {}), self._zero_stages()
        if saved and saved != now:
            raise ValueError(
                f"checkpoint {path} holds DeepSpeed states of ZeRO stages {saved}, this run has {now}: resume with the "
                "DeepSpeed configs it was written with (the launcher's and critic_deepspeed_config)"
            )

    def load(
        self,
        path: Path,
        models: dict[str, torch.nn.Module],
        optimizers: dict[str, Any] | None = None,
        schedulers: dict[str, Any] | None = None,
        keep_new_settings: bool = False,
    ) -> dict[str, Any]:
        """Restore models, optimizers, schedulers and RNG; returns the saved ``state`` dict.

        With ``keep_new_settings`` (a resume whose settings changed, ``run.allow_changes``) the optimizers keep
        the hyper-parameters they were built with (learning rate, betas, eps, weight decay) and the schedulers
        their new base rates: the checkpoint gives only the moment estimates and the step count, so the new
        settings apply from the resumed step on instead of being silently replaced by the old ones.
        """
        acc = self.accelerator
        optimizers, schedulers = optimizers or {}, schedulers or {}
        state = torch.load(path / "state.pt", weights_only=False)
        if "layout" not in state:
            raise ValueError(f"checkpoint {path} was written by an older prefalign (no accelerate state); start afresh")
        self._check_layout(path, state["layout"], models)
        fresh = _capture_settings(optimizers, schedulers)
        for folder, accelerator in self._state_folders().items():
            handle = accelerator.register_load_state_pre_hook(self._unwrapped_models)
            try:
                accelerator.load_state(str(path / folder))
            finally:
                handle.remove()
        everywhere = set(state["layout"]["prepared_models"]).union(*state["layout"].get("companions", {}).values())
        for key, model in models.items():
            if key in everywhere:
                continue
            file = path / f"{key}.safetensors"
            if not file.exists():
                raise FileNotFoundError(f"checkpoint {path} has no {file.name}")
            target = acc.unwrap_model(model)
            device = next(iter(target.parameters()), torch.empty(0)).device
            load_model(target, str(file), device=str(device))
        for key, opt in optimizers.items():
            if key in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][key])
        for key, sched in schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        if keep_new_settings:
            _apply_settings(optimizers, schedulers, fresh)
        if state["layout"]["num_processes"] != acc.num_processes:
            seed = reseed_for(self.seed, int(state["step"]), acc.process_index)
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        return state


def checkpoint_model_files(path: str | Path) -> dict[str, Path]:
    """The safetensors file of every model in a checkpoint written with full state dicts (one process or DDP)."""
    path = Path(path)
    layout = torch.load(path / "state.pt", weights_only=False)["layout"]
    if layout["format"] != "full":
        raise ValueError(f"checkpoint {path} holds {layout['format']} shards, not one file per model")
    files = {p.stem: p for p in path.glob("*.safetensors")}
    for i, name in enumerate(layout["prepared_models"]):
        files[name] = path / STATE_DIR / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
    return files


def save_hf_model(accelerator: Accelerator, model: torch.nn.Module, tokenizer, path: str | Path) -> None:
    """The trained model as a plain HF folder for users (atomic); all processes must call it.

    Under ZeRO-3 or FSDP the full state dict is gathered first (a collective), then the main process writes it.
    """
    from prefalign.models.load import save_model as save_hf_folder

    sharded = checkpoint_format(accelerator) != "full"
    state_dict = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        save_hf_folder(accelerator.unwrap_model(model), tokenizer, path, state_dict=state_dict)
    accelerator.wait_for_everyone()
