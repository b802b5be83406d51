"""``prefalign ppo-ablation``: the rows of Xu et al. (2024) Table 3 on a task given by config.

The rows are cumulative, each adding one of the paper's three key factors to the previous one:

1. baseline: rollout batch ``small_batch_size`` (the paper: 64), no advantage normalisation, no
   reference EMA;
2. + advantage normalisation;
3. + large batch: rollout batch ``large_batch_size`` (the paper: 512);
4. + reference EMA.

Every other setting (models, reward, data, number of steps, minibatches) comes from ``base``, a
full :class:`~prefalign.trainers.ppo.config.PPOConfig`. Each row is an ordinary PPO run in
``<output_dir>/<row>``; a row whose run already finished is read back instead of re-run, so a killed
ablation continues where it stopped (and ``base.run.resume`` resumes the interrupted row). The
table reports the validation reward of the best checkpoint (the papers' selection rule), the last
validation reward and the last training reward and KL; ``<output_dir>/results.json`` is written
atomically.

Departure: every row trains for the same number of PPO steps, so the large-batch rows see more
samples (the paper does not let us say otherwise).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prefalign.atomic import write_text_atomic
from prefalign.config import from_dict, merge, save_yaml, to_dict
from prefalign.trainers.logging import console
from prefalign.trainers.ppo.config import PRESETS as PPO_PRESETS
from prefalign.trainers.ppo.config import PPOConfig
from prefalign.trainers.ppo.trainer import run_ppo

#: row name -> (advantage normalisation, large batch, reference EMA)
ROWS: dict[str, tuple[bool, bool, bool]] = {
    "baseline": (False, False, False),
    "+advantage-normalization": (True, False, False),
    "+large-batch": (True, True, False),
    "+reference-ema": (True, True, True),
}


@dataclass
class PPOAblationConfig:
    base: PPOConfig = field(default_factory=PPOConfig)
    """The task: models, reward, prompts, steps and every PPO setting the rows do not change."""
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    """Rows to run, in order (baseline, +advantage-normalization, +large-batch, +reference-ema)."""
    small_batch_size: int = 64
    """Rollout batch of the first two rows (Xu et al.: 64)."""
    large_batch_size: int = 512
    """Rollout batch of the large-batch rows (Xu et al.: 512)."""
    output_dir: str = "runs/ppo-ablation"
    """Folder of the rows' runs and of results.json."""

    def __post_init__(self) -> None:
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise ValueError(f"unknown ablation rows {unknown}; choose from {list(ROWS)}")


def row_config(config: PPOAblationConfig, row: str) -> PPOConfig:
    """The base config with the row's key factors and its own output folder."""
    advantage_normalization, large, ema = ROWS[row]
    override = {
        "ppo": {"advantage_normalization": advantage_normalization, "reference_ema": ema},
        "batch": {"rollout_batch_size": config.large_batch_size if large else config.small_batch_size},
        "run": {"output_dir": str(Path(config.output_dir) / row)},
    }
    return from_dict(PPOConfig, merge(to_dict(config.base), override))


def _finished_results(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("finished") else None


def _summary(row: str, cfg: PPOConfig, results: dict[str, Any]) -> dict[str, Any]:
    final = results.get("final", {})
    return {
        "row": row,
        "advantage_normalization": cfg.ppo.advantage_normalization,
        "rollout_batch_size": cfg.batch.rollout_batch_size,
        "reference_ema": cfg.ppo.reference_ema,
        "best_eval_reward": results.get("best_eval_reward"),
        "best_step": results.get("best_step"),
        "final_eval_reward": final.get("eval/reward"),
        "final_train_reward": final.get("reward/mean"),
        "final_kl": final.get("kl/mean"),
        "steps": results.get("steps"),
        "output_dir": results.get("output_dir"),
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


_LABELS = {
    "baseline": "baseline",
    "+advantage-normalization": "+adv. norm",
    "+large-batch": "+large batch",
    "+reference-ema": "+ref. EMA",
}


def ablation_table(rows: list[dict[str, Any]]) -> Table:
    """Rich table of the rows: key factors, validation reward (best and last) and the last KL."""
    table = Table(title="Xu et al. Table 3 rows: validation reward")
    table.add_column("row", no_wrap=True)
    for name in ("adv.norm", "batch", "EMA", "best eval", "last eval", "train", "KL"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            _LABELS[r["row"]],
            "yes" if r["advantage_normalization"] else "no",
            str(r["rollout_batch_size"]),
            "yes" if r["reference_ema"] else "no",
            _fmt(r["best_eval_reward"]),
            _fmt(r["final_eval_reward"]),
            _fmt(r["final_train_reward"]),
            _fmt(r["final_kl"]),
        )
    return table


def run_ppo_ablation(config: PPOAblationConfig) -> dict[str, Any]:
    """Run (or read back) each row, print the table, write ``results.json``; returns the results."""
    out = Path(config.output_dir)
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch, only the first process writes
    if main:
        save_yaml(config, out / "config.yaml")
    summaries = []
    for row in config.rows:
        cfg = row_config(config, row)
        results = _finished_results(Path(cfg.run.output_dir) / "results.json")
        if results is None:
            if main:
                console.print(
                    f"[bold]ablation row {row}[/bold]: rollout batch {cfg.batch.rollout_batch_size}, "
                    f"advantage normalisation {cfg.ppo.advantage_normalization}, reference EMA {cfg.ppo.reference_ema}"
                )
            results = run_ppo(cfg)
        summaries.append(_summary(row, cfg, results))
    results = {"rows": summaries, "metric": "best_eval_reward"}
    if main:
        Console(width=max(Console().width, 100)).print(ablation_table(summaries))  # the command's output, on stdout
        write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    return results


PRESETS: dict[str, dict[str, Any]] = {
    "xu": {"base": PPO_PRESETS["xu"], "small_batch_size": 64, "large_batch_size": 512},
    "tiny": {
        "base": merge(PPO_PRESETS["tiny"], {"batch": {"steps": 3}, "run": {"eval_every": 1}}),
        "small_batch_size": 8,
        "large_batch_size": 32,
        "output_dir": "runs/ppo-ablation-tiny",
    },
}
