"""Atomic checkpoints that a run resumes from exactly.

A checkpoint is a folder ``<output_dir>/checkpoints/step-00000012/`` holding

- ``<name>.safetensors`` for every model (policy, critic, reference, ...), full state dicts;
- ``state.pt``: optimizers, schedulers, step, trainer-specific state (e.g. value-normalisation
  statistics, KL controller, round number) and the config;
- ``rng-<rank>.pt``: every process's Python, NumPy and torch RNG states.

It is written into a hidden temporary folder and renamed into place, then ``latest`` (a text file
with the folder's name) is replaced atomically, so a run killed at any moment leaves either the
previous checkpoint or the new one, never a half-written one. Older checkpoints beyond
``keep`` are deleted after the new one is in place.
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
from safetensors.torch import load_model, save_model

from prefalign.atomic import write_text_atomic


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_optimization(
    optimizers: dict[str, Any], schedulers: dict[str, Any], state: dict[str, Any], keep_new_settings: bool
) -> None:
    """Load optimizer and scheduler states from a checkpoint's ``state``.

    With ``keep_new_settings`` (a resume whose settings changed, ``run.allow_changes``) the optimizers keep
    the hyper-parameters they were built with (learning rate, betas, eps, weight decay) and the schedulers
    their new base rates: the checkpoint gives only the moment estimates and the step count, so the new
    settings apply from the resumed step on instead of being silently replaced by the old ones.
    """
    fresh = {
        key: [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for key, o in optimizers.items()
    }
    fresh_lrs = {key: list(s.base_lrs) for key, s in schedulers.items()}
    for key, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][key])
    for key, sched in schedulers.items():
        sched.load_state_dict(state["schedulers"][key])
    if not keep_new_settings:
        return
    for key, opt in optimizers.items():
        for group, settings in zip(opt.param_groups, fresh[key]):
            group.update(settings)
    for key, sched in schedulers.items():
        sched.base_lrs = fresh_lrs[key]
        groups = optimizers[key].param_groups if key in optimizers else []
        for group, base, factor in zip(groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)


class Checkpointer:
    def __init__(self, output_dir: str | Path, accelerator: Accelerator, keep: int = 2):
        self.root = Path(output_dir) / "checkpoints"
        self.accelerator = accelerator
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.exists():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / "state.pt").exists():
            raise FileNotFoundError(f"{pointer} names {path.name}, which is missing or incomplete")
        return path

    def save(self, step: int, models: dict[str, torch.nn.Module], state: dict[str, Any]) -> Path:
        """Write a checkpoint for ``step``; all processes must call it."""
        acc = self.accelerator
        name = f"step-{step:08d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt")
        if acc.is_main_process:
            for key, model in models.items():
                save_model(acc.unwrap_model(model), str(tmp / f"{key}.safetensors"))
            torch.save(state, tmp / "state.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_text_atomic(self.root / "latest", name)
            self._prune(keep_name=name)
        acc.wait_for_everyone()
        return final

    def _prune(self, keep_name: str) -> None:
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        for old in steps[: max(0, len(steps) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path, models: dict[str, torch.nn.Module]) -> dict[str, Any]:
        """Restore models and this process's RNG; returns the saved ``state`` dict."""
        acc = self.accelerator
        for key, model in models.items():
            file = path / f"{key}.safetensors"
            if not file.exists():
                raise FileNotFoundError(f"checkpoint {path} has no {file.name}")
            load_model(acc.unwrap_model(model), str(file))
        rng_file = path / f"rng-{acc.process_index}.pt"
        if not rng_file.exists():
            raise FileNotFoundError(
                f"checkpoint {path} has no {rng_file.name}: was it written with another process count?"
            )
        set_rng_state(torch.load(rng_file, weights_only=False))
        return torch.load(path / "state.pt", weights_only=False)
