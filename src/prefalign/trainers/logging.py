"""Metric logging: a JSONL file, TensorBoard event files, accelerate's trackers, and progress.

Only the main process writes. ``metrics.jsonl`` gets one JSON object per logged step
(``{"step": ..., "epoch": ..., "<name>": value, ...}``), flushed at once, so a killed run keeps
every line it logged. On resume, lines past the resumed step are dropped first, so the file reads
as one uninterrupted run (TensorBoard events past it are purged the same way).

Trackers (``run.report_to``): TensorBoard is written here (so that a resume can purge it); every
other name (wandb, mlflow, ...) goes to ``accelerate``'s tracker of that name, through
``Accelerator(log_with=...)``, ``init_trackers`` and ``accelerator.log``.

Progress: a rich bar on a terminal; where stderr is a file (a batch job's log) a plain line every
``every`` steps instead, which no terminal width wraps. :func:`phase_progress` shows the same for
long phases outside the step loop (the cached reference log-probs of DPO).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prefalign.atomic import write_jsonl_atomic

console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
ACCELERATE_TRACKERS = ("wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


def check_trackers(names: list[str]) -> list[str]:
    """``names`` if each is tensorboard or an installed accelerate tracker; else a ValueError saying what to do."""
    import accelerate.utils as utils

    for name in names:
        if name == "tensorboard":
            continue
        if name not in ACCELERATE_TRACKERS:
            raise ValueError(
                f"run.report_to: unknown tracker {name!r}; use tensorboard, {', '.join(ACCELERATE_TRACKERS)} or none"
            )
        available = getattr(utils, f"is_{name}_available", None)
        if available is None or not available():
            raise ValueError(f"run.report_to: tracker {name!r} is not installed (pip install {name.replace('_', '-')})")
    return names


def start_trackers(accelerator: Any, config_tree: dict[str, Any], project: str) -> None:
    """``accelerator.init_trackers`` with the run's settings flattened to ``section.field`` scalars (when any
    accelerate tracker is configured)."""
    if not accelerator.log_with:
        return
    flat: dict[str, Any] = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[f"{prefix}{key}"] = value

    walk(config_tree, "")
    accelerator.init_trackers(project or "prefalign", config=flat)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LineProgress:
    """Progress as plain lines (a log file): ``<what>: 40/200 (20%) loss=0.52  0:31 elapsed, 2:04 left``."""

    def __init__(self, description: str, total: int, every: int = 0, completed: int = 0):
        self.description, self.total, self.start_at = description, max(total, 1), completed
        self.every = every if every > 0 else max(1, self.total // 20)
        self.started = time.time()
        self.last = completed

    def update(self, completed: int, info: str = "", force: bool = False) -> None:
        if completed == self.last and not force:
            return
        if not (force or completed % self.every == 0 or completed >= self.total):
            self.last = completed
            return
        self.last = completed
        elapsed = time.time() - self.started
        done = completed - self.start_at
        left = elapsed / done * (self.total - completed) if done > 0 else float("nan")
        eta = _clock(left) if math.isfinite(left) else "?"
        pct = 100 * completed // self.total
        parts = [
            f"{self.description}: {completed}/{self.total} ({pct}%)",
            info,
            f"{_clock(elapsed)} elapsed, {eta} left",
        ]
        console.print("  ".join(p for p in parts if p), markup=False, highlight=False)


def phase_progress(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing progress (bar on a terminal, lines in a file); silent when not ``enabled``."""
    if not enabled or total <= 0:
        yield from items
        return
    if console.is_terminal:
        with Progress(*_columns(), console=console, transient=False) as bar:
            task = bar.add_task(description, total=total, info="")
            for item in items:
                yield item
                bar.advance(task)
        return
    lines = LineProgress(description, total)
    for i, item in enumerate(items, start=1):
        yield item
        lines.update(i)


def _columns() -> tuple:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().mean().item() if value.numel() else float("nan")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricLogger:
    def __init__(
        self,
        output_dir: str | Path,
        *,
        is_main: bool,
        total_steps: int,
        description: str,
        tensorboard: bool = True,
        progress: bool = True,
        resume_step: int = 0,
        progress_every: int = 0,
        accelerator: Any = None,
    ):
        self.is_main = is_main
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        self.progress = None
        self.lines: LineProgress | None = None
        self.accelerator = accelerator if accelerator is not None and accelerator.log_with else None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(Path(output_dir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
            )
        if progress and not console.is_terminal:
            self.lines = LineProgress(description, total_steps, progress_every, completed=resume_step)
        elif progress:
            self.progress = Progress(*_columns(), console=console, transient=False)
            self.task = self.progress.add_task(description, total=total_steps, completed=resume_step, info="")
            self.progress.start()

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step] if step else []
        write_jsonl_atomic(self.path, kept)

    def log(self, step: int, metrics: dict[str, Any], *, show: tuple[str, ...] = ()) -> None:
        if not self.is_main:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.accelerator is not None:
            numbers = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
            self.accelerator.log(numbers, step=step)
        info = "  ".join(f"{k}={row[k]:.4g}" for k in show if isinstance(row.get(k), (int, float)))
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        if self.lines is not None:
            self.lines.update(step, info)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)
        if self.lines is not None:
            self.lines.update(step)

    def close(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()
            self.accelerator = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
