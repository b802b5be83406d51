"""The quickstart job: SFT, then a reward model, on the embedded SmolLM2 and real HH-RLHF pairs.

Small by default so it finishes in minutes on a laptop CPU: SFT on the chosen responses of a few
HH-RLHF harmless pairs, then a Bradley-Terry reward model initialised from the SFT model, scored on
held-out pairs before and after training. Both stages are the ordinary ``prefalign sft`` and
``prefalign rm`` trainers; the figures are printed as a table and written to ``results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from prefalign.atomic import write_json_atomic
from prefalign.data.config import DataConfig
from prefalign.models.load import SMOLLM2, ModelConfig
from prefalign.trainers.common import BatchConfig, OptimConfig, RunConfig
from prefalign.trainers.logging import console
from prefalign.trainers.reward_model import RewardModelConfig, run_reward_model
from prefalign.trainers.sft import SFTConfig, run_sft


@dataclass
class QuickstartConfig:
    model: str = SMOLLM2
    """Starting model (embedded name, folder or hub id)."""
    output_dir: str = "runs/quickstart"
    """Folder for both stages' outputs and the summary."""
    sft_examples: int = 24
    """HH-RLHF harmless pairs whose chosen responses are used for SFT (plus 1/4 held out)."""
    rm_train_pairs: int = 48
    """Pairs for reward-model training."""
    rm_eval_pairs: int = 48
    """Held-out pairs for reward-model accuracy."""
    max_length: int = 192
    """Maximum tokens of prompt + response."""
    micro_batch_size: int = 4
    """Sequences per forward pass."""
    sft_learning_rate: float = 1e-5
    """SFT peak learning rate."""
    rm_learning_rate: float = 1e-5
    """Reward-model peak learning rate."""
    seed: int = 0
    """Seed of data subsets, order and initialisation."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where HH-RLHF lives (data.path / data.data_dir); sizes come from the fields above."""


def _data(cfg: QuickstartConfig, num_examples: int, eval_size: float) -> DataConfig:
    base = cfg.data
    return DataConfig(
        source=base.source,
        path=base.path,
        data_dir=base.data_dir,
        num_examples=num_examples,
        eval_size=eval_size,
        max_length=cfg.max_length,
        strict=base.strict,
        seed=cfg.seed,
    )


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    sft_eval = max(cfg.sft_examples // 4, 1)
    sft = SFTConfig(
        model=ModelConfig(name_or_path=cfg.model),
        data=_data(cfg, cfg.sft_examples + sft_eval, sft_eval),
        batch=BatchConfig(global_batch_size=8, micro_batch_size=cfg.micro_batch_size, epochs=1.0),
        optim=OptimConfig(learning_rate=cfg.sft_learning_rate, warmup_ratio=0.1),
        run=RunConfig(output_dir=str(out / "sft"), seed=cfg.seed, overwrite=True),  # a demo: each run re-trains
    )
    console.rule("stage 1: SFT on the chosen responses")
    sft_results = run_sft(sft)
    rm = RewardModelConfig(
        model=ModelConfig(name_or_path=sft_results["model_dir"]),
        data=_data(cfg, cfg.rm_train_pairs + cfg.rm_eval_pairs, cfg.rm_eval_pairs),
        batch=BatchConfig(global_batch_size=16, micro_batch_size=cfg.micro_batch_size, epochs=1.0),
        optim=OptimConfig(
            learning_rate=cfg.rm_learning_rate, min_learning_rate=cfg.rm_learning_rate / 10, warmup_ratio=0.1
        ),
        run=RunConfig(output_dir=str(out / "rm"), seed=cfg.seed, overwrite=True),
    )
    console.rule("stage 2: reward model (Bradley-Terry) from the SFT model")
    rm_results = run_reward_model(rm)
    summary = {"sft": sft_results, "reward_model": rm_results}
    table = Table(title="quickstart: SmolLM2 on HH-RLHF harmless")
    for col in ("stage", "metric", "value"):
        table.add_column(col)
    table.add_row("SFT", "held-out response loss", f"{sft_results.get('eval/loss', float('nan')):.4f}")
    table.add_row("SFT", "seconds", f"{sft_results['seconds']:.0f}")
    table.add_row(
        "RM", "held-out accuracy before training", f"{rm_results.get('initial_eval/accuracy', float('nan')):.3f}"
    )
    table.add_row("RM", "held-out accuracy after training", f"{rm_results.get('eval/accuracy', float('nan')):.3f}")
    table.add_row("RM", "held-out mean margin", f"{rm_results.get('eval/margin', float('nan')):.3f}")
    table.add_row("RM", "seconds", f"{rm_results['seconds']:.0f}")
    console.print(table)
    write_json_atomic(out / "results.json", summary)
    return summary
