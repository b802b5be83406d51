"""Run folders: what a run leaves in ``output_dir``, and the checks before a run starts there.

- A **new run** (``run.resume`` off) into a folder that already holds a run (any of
  :data:`RUN_FILES`) stops with a message, unless ``run.overwrite``: then those files and folders
  are removed first (anything else in the folder is left alone), so the old run's checkpoints,
  metrics and TensorBoard events never mix with the new ones.
- A **resume** compares the settings with the folder's ``config.yaml`` and refuses, naming every
  field that differs, unless ``run.allow_changes``. Settings that do not change what is computed
  (:data:`FREE_FIELDS`: the folder, the resume switches, logging, checkpoint cadence, threads,
  a job's stop-after budget) may differ freely.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RUN_FILES = (
    "config.yaml",
    "checkpoints",
    "metrics.jsonl",
    "results.json",
    "model",
    "tensorboard",
    "dropped.jsonl",
    "trackers",
    "best",
)
"""What a run writes at the top of its folder (``best``: PPO's best-validation policy); a nested run
(e.g. ``sft/`` of DPO's SFT stage) has its own."""

FREE_FIELDS = {
    "run.output_dir",
    "run.resume",
    "run.overwrite",
    "run.allow_changes",
    "run.progress",
    "run.progress_every",
    "run.threads",
    "run.tensorboard",
    "run.report_to",
    "run.log_every",
    "run.save_every",
    "run.keep_checkpoints",
    "run.eval_every",
}
"""Dotted names that may change between a run and its resume."""

FREE_LEAVES = {"stop_after_steps", "stop_after"}
"""Field names (at any depth) that may change on resume: a pre-empted job's budget for this invocation."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """``(field, saved value, new value)`` for every setting that differs, free fields left out.

    A field the saved config does not have (it was written by an older version) counts as unchanged
    when its new value is the field's default (``defaults``: the flattened default config)."""
    old, new, default = flatten(saved), flatten(current), flatten(defaults or {})
    out = []
    for name in sorted(set(old) | set(new)):
        if name in FREE_FIELDS or name.rsplit(".", 1)[-1] in FREE_LEAVES:
            continue
        if name not in old and name in default and _same(default[name], new.get(name)):
            continue
        if not _same(old.get(name), new.get(name)):
            out.append((name, old.get(name, "<absent>"), new.get(name, "<absent>")))
    return out


def run_files(folder: Path) -> list[str]:
    """The run artefacts present in ``folder``."""
    return [name for name in RUN_FILES if (folder / name).exists()] if folder.is_dir() else []


@dataclass
class FolderPlan:
    """What :func:`plan_run_folder` decided: ``clear`` the old run first; ``changes`` allowed on resume."""

    clear: list[str]
    changes: list[tuple[str, Any, Any]]


def plan_run_folder(
    output_dir: str | Path,
    current: Mapping[str, Any],
    run: Any,
    has_checkpoint: bool,
    defaults: Mapping[str, Any] | None = None,
) -> FolderPlan:
    """Check the folder against the run settings (reads only; every process may call it). Raises ValueError."""
    folder = Path(output_dir)
    present = run_files(folder)
    if run.resume and has_checkpoint:
        saved_file = folder / "config.yaml"
        saved = yaml.safe_load(saved_file.read_text()) if saved_file.exists() else None
        changes = config_differences(saved, current, defaults) if isinstance(saved, Mapping) else []
        if changes and not run.allow_changes:
            listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changes)
            raise ValueError(
                f"run.resume: the settings differ from the run in {folder} ({listed}); resume with the saved settings "
                f"(config.yaml there), or add --run.allow_changes True to continue with the new ones"
            )
        return FolderPlan([], changes)
    if present and not run.resume and not run.overwrite:
        raise ValueError(
            f"{folder} already holds a run ({', '.join(present)}); continue it with --run.resume True, replace it "
            f"with --run.overwrite True, or choose another --run.output_dir"
        )
    return FolderPlan(present if run.overwrite or run.resume else [], [])


def clear_run(folder: Path, names: list[str]) -> None:
    """Remove the named run artefacts from ``folder`` (main process only)."""
    for name in names:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def prepare_run_folder(accelerator: Any, run: Any, config: Any) -> FolderPlan:
    """Check ``run.output_dir`` on every process, then (main process) clear an overwritten run and write
    ``config.yaml``; for trainers that do not use :class:`~prefalign.trainers.session.TrainingSession`."""
    from prefalign.config import save_yaml, to_dict
    from prefalign.trainers.checkpoint import Checkpointer

    folder = Path(run.output_dir)
    has_checkpoint = bool(run.resume) and Checkpointer(folder, accelerator).latest() is not None
    try:
        defaults = to_dict(type(config)())
    except (TypeError, ValueError):  # a config class without defaults for every field
        defaults = None
    plan = plan_run_folder(folder, to_dict(config), run, has_checkpoint, defaults)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        clear_run(folder, plan.clear)
        folder.mkdir(parents=True, exist_ok=True)
        save_yaml(config, folder / "config.yaml")
    accelerator.wait_for_everyone()
    return plan
