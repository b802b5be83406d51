"""Metric logging: a JSONL file, TensorBoard event files and a rich progress bar.

Only the main process writes. ``metrics.jsonl`` gets one JSON object per logged step
(``{"step": ..., "epoch": ..., "<name>": value, ...}``), flushed at once, so a killed run keeps
every line it logged. On resume, lines past the resumed step are dropped first, so the file reads
as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prefalign.atomic import write_jsonl_atomic

console = Console(stderr=True)


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
    ):
        self.is_main = is_main
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        self.progress = None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(Path(output_dir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
            )
        if progress:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
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
        if self.progress is not None:
            info = "  ".join(f"{k}={row[k]:.4g}" for k in show if isinstance(row.get(k), (int, float)))
            self.progress.update(self.task, completed=step, info=info)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
