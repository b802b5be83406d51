"""Settings of ``prefalign dpo`` (:mod:`prefalign.trainers.preference.dpo`) and its presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefalign.data.config import DataConfig
from prefalign.models.load import (
    ModelConfig,
)
from prefalign.trainers.common import (
    BatchConfig,
    OptimConfig,
    RunConfig,
)
from prefalign.trainers.preference.objectives import (
    OBJECTIVES,
    PROConfig,
    RRHFConfig,
)


@dataclass
class SFTFirstConfig:
    enabled: bool = False
    """Fine-tune on the training pairs' chosen responses (PKU-SafeRLHF: its safe responses, "SFT (Safe)") before DPO
    (Xu et al. Table 2); the pairs are taken after the dual-safe / dual-unsafe filters."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-5, warmup_ratio=0.03))
    """Optimizer and schedule of the SFT stage."""
    batch: BatchConfig = field(
        default_factory=lambda: BatchConfig(global_batch_size=64, micro_batch_size=8, epochs=1.0)
    )
    """Batch sizes and length of the SFT stage."""


@dataclass
class DPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The starting policy (usually an SFT model); also the reference."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=512))
    """Preference pairs (DPO) or rankings (RRHF, PRO), and the held-out part."""
    loss: str = "dpo"
    """Objective: dpo, rrhf or pro."""
    beta: float = 0.1
    """DPO's beta (strength of the implicit KL to the reference); also scales the reported implicit rewards."""
    label_smoothing: float = 0.0
    """Conservative DPO: probability that a preference label is flipped (0: the paper's loss)."""
    reference: str = "cached"
    """Reference log-probs: cached (computed once before training) or on_the_fly (every micro-batch)."""
    rrhf: RRHFConfig = field(default_factory=RRHFConfig)
    """RRHF settings (--loss rrhf)."""
    pro: PROConfig = field(default_factory=PROConfig)
    """PRO settings (--loss pro)."""
    drop_dual_safe: bool = False
    """PKU-SafeRLHF: leave out pairs whose two responses are both safe (Xu et al. Table 13)."""
    drop_dual_unsafe: bool = False
    """PKU-SafeRLHF: leave out pairs whose two responses are both unsafe (Xu et al. Table 2)."""
    sft_first: SFTFirstConfig = field(default_factory=SFTFirstConfig)
    """SFT on the preference data before DPO."""
    share_prompt: bool = True
    """Compute each prompt once for all its responses (one row per example with a block attention mask); False, or a
    model without sdpa/eager attention: one padded row per response."""
    pack_examples: bool = True
    """With share_prompt: put several short examples one after another in a row (each masked off from the others),
    rows no longer than the step's longest example, so fewer padded positions are computed; batch.micro_batch_size
    then bounds the rows of a forward pass. False: one row per example."""
    max_tokens_per_micro_batch: int | None = None
    """Also cap a micro-batch at this many padded tokens (None: only batch.micro_batch_size examples)."""
    eval_micro_batch_size: int = 16
    """Examples per forward pass for the reference pass and evaluation (no gradients)."""
    stop_after_steps: int | None = None
    """Save a checkpoint and exit after this optimizer step (a pre-empted job); rerun with --run.resume True to
    continue."""
    batch: BatchConfig = field(
        default_factory=lambda: BatchConfig(global_batch_size=64, micro_batch_size=4, epochs=2.0)
    )
    """Batch sizes (examples, i.e. pairs or rankings) and training length."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-6, warmup_ratio=0.1))
    """Optimizer and learning-rate schedule."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/dpo"))
    """Output folder, seed, checkpoints, logging."""

    def __post_init__(self) -> None:
        if self.loss not in OBJECTIVES:
            raise ValueError(f"loss must be one of {sorted(OBJECTIVES)}, got {self.loss!r}")
        if self.reference not in ("cached", "on_the_fly"):
            raise ValueError(f"reference must be cached or on_the_fly, got {self.reference!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.eval_micro_batch_size < 1:
            raise ValueError("eval_micro_batch_size must be positive")


PRESETS: dict[str, dict[str, Any]] = {
    # Xu et al. (2024, Sec. 4 and App.): DPO lr 1e-6, beta 0.1; 2 epochs on dialogue (HH-RLHF, SafeRLHF), 1 on code.
    "xu-dialogue": {"loss": "dpo", "beta": 0.1, "optim": {"learning_rate": 1e-6}, "batch": {"epochs": 2.0}},
    "xu-code": {"loss": "dpo", "beta": 0.1, "optim": {"learning_rate": 1e-6}, "batch": {"epochs": 1.0}},
    # Xu et al. Table 2, last rows: SFT on the safe responses, then DPO without the dual-unsafe pairs.
    "xu-safe": {
        "loss": "dpo",
        "beta": 0.1,
        "optim": {"learning_rate": 1e-6},
        "batch": {"epochs": 2.0},
        "data": {"source": "safe-rlhf"},
        "drop_dual_unsafe": True,
        "sft_first": {"enabled": True},
    },
    # Ivison et al. (2024, App. F; the Tulu 2 DPO recipe): lr 5e-7, 3 epochs, 10% linear warm-up then linear
    # decay, beta 0.1. Ours: global batch 128 and sequences up to 2048 tokens, those of the sft ivison preset (App. F
    # as we read it gives neither). Sources per setting: docs/presets.md.
    "ivison": {
        "loss": "dpo",
        "beta": 0.1,
        "optim": {"learning_rate": 5e-7, "warmup_ratio": 0.1, "schedule": "linear"},
        "batch": {"epochs": 3.0, "global_batch_size": 128},
        "data": {"max_length": 2048},
    },
    # The reward-free ranking baselines of Xu et al. Table 4, at the DPO preset's learning rate and length (the
    # RRHF and PRO papers tune larger models; their rates are not reproduced here). Loss settings: --rrhf.*, --pro.*.
    "rrhf": {"loss": "rrhf", "optim": {"learning_rate": 1e-6}},
    "pro": {"loss": "pro", "optim": {"learning_rate": 1e-6}},
}
