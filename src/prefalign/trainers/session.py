"""Start-up and wind-down shared by the offline trainers (SFT, reward model, DPO family).

:class:`TrainingSession` bundles the accelerator, checkpointer and metric logger of one run, and
does the bookkeeping around the loop: checking the run folder (:mod:`prefalign.trainers.run_folder`:
a used folder needs ``run.overwrite``, a resume with changed settings ``run.allow_changes``),
writing ``config.yaml``, the data report (``dropped.jsonl``), resuming from the latest checkpoint
(models, optimizer, scheduler, RNG, step and trainer state), periodic saves, and writing
``results.json`` and the saved model's card (``README.md``) atomically.

With ``run.allow_changes`` a resumed run uses its new settings from the resumed step on: the
optimizer's hyper-parameters and the learning-rate schedule are those of the new config (the
checkpoint gives the moment estimates and the step count), everything read from the config each
step (e.g. DPO's beta) follows it anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from prefalign.atomic import write_json_atomic
from prefalign.config import to_dict
from prefalign.data.io import DropReport
from prefalign.models.load import check_model_name
from prefalign.trainers.checkpoint import Checkpointer, save_hf_model
from prefalign.trainers.common import (
    BatchConfig,
    OptimConfig,
    RunConfig,
    build_optimizer,
    build_scheduler,
    make_accelerator,
    set_seed,
)
from prefalign.trainers.engines import configure_deepspeed, micro_batches_per_step
from prefalign.trainers.logging import MetricLogger, console, start_trackers
from prefalign.trainers.model_card import write_model_card
from prefalign.trainers.run_folder import prepare_run_folder


def publish_drop_report(report: DropReport, output_dir: Path) -> None:
    """Print the data summary and the first dropped rows; write every dropped row to ``dropped.jsonl`` (call it
    on the main process)."""
    console.print(report.summary(), markup=False, highlight=False)
    if report.total_dropped:
        console.print(report.details(), markup=False, highlight=False)
        console.print(f"  every dropped row: {output_dir / 'dropped.jsonl'}", markup=False)
    report.write(output_dir / "dropped.jsonl")


def drop_counts(report: DropReport) -> dict[str, Any]:
    """The data report's counts as they go into ``results.json``."""
    counts: dict[str, Any] = {
        "kept_rows": report.kept,
        "dropped_rows": report.total_dropped,
        "dropped_by_reason": dict(report.dropped),
    }
    if report.skipped:
        counts["skipped_rows_by_reason"] = dict(report.skipped)
    return counts


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
    data_report: DropReport | None = field(init=False, default=None)
    changes: list = field(init=False, default_factory=list)  # (field, old, new) allowed on resume

    def __post_init__(self) -> None:
        model = getattr(self.config, "model", None)
        if isinstance(getattr(model, "name_or_path", None), str):
            check_model_name(model.name_or_path)  # before the run folder is touched
        self.accelerator = make_accelerator(self.run)
        set_seed(self.run.seed + self.accelerator.process_index)
        self.output_dir = Path(self.run.output_dir)
        self.checkpointer = Checkpointer(
            self.output_dir, self.accelerator, keep=self.run.keep_checkpoints, seed=self.run.seed
        )
        self.changes = prepare_run_folder(self.accelerator, self.run, self.config).changes
        for name, old, new in self.changes if self.is_main else []:
            line = f"resume with a changed setting (run.allow_changes): {name}: {old!r} -> {new!r}"
            console.print(line, style="yellow", markup=False, highlight=False)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def print(self, message: str) -> None:
        if self.is_main:
            console.print(message)

    def record_data(self, report: DropReport) -> None:
        """Print the data summary and the first dropped rows; write every dropped row to ``dropped.jsonl``."""
        self.data_report = report
        if self.is_main:
            publish_drop_report(report, self.output_dir)

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
        state = self.checkpointer.load(path, models, optimizers, schedulers, keep_new_settings=bool(self.changes))
        self.start_step = int(state["step"])
        self.print(f"resumed from {path} at step {self.start_step}")
        return state.get("trainer", {})

    def prepare_training(
        self,
        name: str,
        model: torch.nn.Module,
        optim: OptimConfig,
        total_steps: int,
        batch: BatchConfig | None = None,
    ) -> tuple[Any, Any, Any, dict]:
        """AdamW and its schedule for one trained model, through ``accelerator.prepare``, then the resume.

        Returns (model, optimizer, scheduler, trainer state of the restored checkpoint or {}); the three
        are kept under ``name`` for :meth:`save`. ``batch`` tells DeepSpeed (when launched with it) the
        micro-batching of each optimizer step (:mod:`prefalign.trainers.engines`).
        """
        if batch is not None:
            per_step = micro_batches_per_step(
                batch.global_batch_size, batch.micro_batch_size, self.accelerator.num_processes
            )
            configure_deepspeed(self.accelerator, batch.micro_batch_size, per_step, optim.max_grad_norm)
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
            tensorboard="tensorboard" in self.run.trackers(),
            progress=self.run.progress,
            resume_step=self.start_step,
            progress_every=self.run.progress_every,
            accelerator=self.accelerator,
        )
        start_trackers(self.accelerator, to_dict(self.config), self.output_dir.name)
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
        state = {"step": step, "trainer": trainer_state or {}}
        return self.checkpointer.save(step, models, state, schedulers=schedulers, optimizers=optimizers)

    def save_model(self, model: torch.nn.Module, tokenizer: Any, path: Path) -> None:
        """The trained model as a plain HF folder for users (gathered first under ZeRO-3 / FSDP); all processes
        call it."""
        save_hf_model(self.accelerator, model, tokenizer, path)

    def due(self, step: int, every: int, total: int) -> bool:
        """True at every ``every``-th step (``every`` 0: never before the last)."""
        return every > 0 and step % every == 0 and step < total

    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        """Close the logs; write ``results.json`` (with the data report's counts) and the model card."""
        if self.logger is not None:
            self.logger.close()
        results = {**results, "seconds": round(time.time() - self.started, 2)}
        if self.data_report is not None:
            results.update(drop_counts(self.data_report))
        if self.is_main:
            write_json_atomic(self.output_dir / "results.json", results)
            model_dir = results.get("model_dir")
            if model_dir and Path(model_dir).is_dir():
                write_model_card(Path(model_dir), self.config, results)
        self.accelerator.wait_for_everyone()
        return results
