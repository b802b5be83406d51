"""Start-up and wind-down shared by the offline trainers (SFT, reward model, DPO family).

:class:`TrainingSession` bundles the accelerator, checkpointer and metric logger of one run, and
does the bookkeeping around the loop: writing ``config.yaml``, resuming from the latest checkpoint
(models, optimizer, scheduler, RNG, step and trainer state), periodic saves, and writing the final
model and ``results.json`` atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from prefalign.atomic import write_json_atomic
from prefalign.config import save_yaml
from prefalign.trainers.checkpoint import Checkpointer
from prefalign.trainers.common import (
    OptimConfig,
    RunConfig,
    build_optimizer,
    build_scheduler,
    make_accelerator,
    set_seed,
)
from prefalign.trainers.logging import MetricLogger, console


@dataclass
class TrainingSession:
    run: RunConfig
    config: Any
    accelerator: Accelerator = field(init=False)
    checkpointer: Checkpointer = field(init=False)
    logger: MetricLogger | None = field(init=False, default=None)
    start_step: int = field(init=False, default=0)
    started: float = field(init=False, default_factory=time.time)
    trained: tuple[dict, dict, dict] = field(
        init=False, default_factory=lambda: ({}, {}, {})
    )  # models, optimizers, schedulers to checkpoint

    def __post_init__(self) -> None:
        self.accelerator = make_accelerator(self.run)
        set_seed(self.run.seed + self.accelerator.process_index)
        self.output_dir = Path(self.run.output_dir)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(self.config, self.output_dir / "config.yaml")
        self.checkpointer = Checkpointer(self.output_dir, self.accelerator, keep=self.run.keep_checkpoints)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def print(self, message: str) -> None:
        if self.is_main:
            console.print(message)

    def resume(
        self, models: dict[str, torch.nn.Module], optimizers: dict[str, Any], schedulers: dict[str, Any]
    ) -> dict[str, Any]:
        """Restore the latest checkpoint if ``run.resume``; returns the trainer state ({} if fresh)."""
        if not self.run.resume:
            return {}
        path = self.checkpointer.latest()
        if path is None:
            self.print(f"[yellow]resume: no checkpoint in {self.checkpointer.root}; starting fresh")
            return {}
        state = self.checkpointer.load(path, models)
        for key, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        self.start_step = int(state["step"])
        self.print(f"resumed from {path} at step {self.start_step}")
        return state.get("trainer", {})

    def prepare_training(
        self, name: str, model: torch.nn.Module, optim: OptimConfig, total_steps: int
    ) -> tuple[Any, Any, Any, dict]:
        """AdamW and its schedule for one trained model, through ``accelerator.prepare``, then the resume.

        Returns (model, optimizer, scheduler, trainer state of the restored checkpoint or {}); the three
        are kept under ``name`` for :meth:`save`.
        """
        optimizer = build_optimizer(model.parameters(), optim)
        scheduler = build_scheduler(optimizer, optim, total_steps)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.trained = ({name: model}, {name: optimizer}, {name: scheduler})
        state = self.resume(*self.trained)
        return model, optimizer, scheduler, state

    def start_logging(self, total_steps: int, description: str) -> MetricLogger:
        self.logger = MetricLogger(
            self.output_dir,
            is_main=self.is_main,
            total_steps=total_steps,
            description=description,
            tensorboard=self.run.tensorboard,
            progress=self.run.progress,
            resume_step=self.start_step,
        )
        return self.logger

    def save(
        self,
        step: int,
        models: dict[str, torch.nn.Module] | None = None,
        optimizers: dict[str, Any] | None = None,
        schedulers: dict[str, Any] | None = None,
        trainer_state: dict[str, Any] | None = None,
    ) -> Path:
        """A checkpoint of ``models`` / ``optimizers`` / ``schedulers`` (default: those of :meth:`prepare_training`)."""
        if models is None:
            models, optimizers, schedulers = self.trained
        state = {
            "step": step,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "trainer": trainer_state or {},
        }
        return self.checkpointer.save(step, models, state)

    def due(self, step: int, every: int, total: int) -> bool:
        """True at every ``every``-th step (``every`` 0: never before the last)."""
        return every > 0 and step % every == 0 and step < total

    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        if self.logger is not None:
            self.logger.close()
        results = {**results, "seconds": round(time.time() - self.started, 2)}
        if self.is_main:
            write_json_atomic(self.output_dir / "results.json", results)
        self.accelerator.wait_for_everyone()
        return results
