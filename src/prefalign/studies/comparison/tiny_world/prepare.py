"""Pre-training and SFT of the tiny world's model, cached by the hash of their settings.

:func:`prepare_tiny_world` returns a :class:`TinyWorld`: the generated data and two ordinary Hugging
Face folders, ``pretrained/model`` (a language model of the world's plain text, no chat template,
no refusals) and ``sft/model`` (that model fine-tuned on the demonstrations with
:func:`prefalign.trainers.sft.run_sft`). Both live in
``prefalign.paths.cache_dir()/tiny_world/<hash>`` where the hash covers every setting that changes
them (data, model shape, pre-training and SFT settings, and :data:`CACHE_VERSION`), so a second run
with the same settings starts at the comparison. ``world.json`` (settings, data statistics, stage
times) is written last, atomically, and marks the folder complete.

Pre-training is a plain causal-LM loop (the model's own next-token loss on ``<|im_start|> line
<|im_end|>`` sequences, padding ignored) with the shared optimizer and schedule of
:mod:`prefalign.trainers.common`; the project has no pre-training trainer, and this is its only one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefalign.atomic import write_json_atomic
from prefalign.config import save_yaml
from prefalign.data.collate import pad_sequences
from prefalign.data.config import DataConfig
from prefalign.models.load import ModelConfig, save_model
from prefalign.paths import cache_dir
from prefalign.studies.comparison.tiny_world.data import WorldData, WorldDataConfig, build_world_data
from prefalign.studies.comparison.tiny_world.model import TinyModelConfig, build_model, build_tokenizer
from prefalign.trainers.common import BatchConfig, BatchPlan, OptimConfig, RunConfig, build_optimizer, build_scheduler
from prefalign.trainers.logging import MetricLogger, console

#: bump when the generators, tokenizer or training code change what a cached folder holds
CACHE_VERSION = 1


@dataclass
class PretrainConfig:
    steps: int = 300
    """Optimizer steps of pre-training."""
    batch_size: int = 256
    """Lines per step."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            learning_rate=3e-3, warmup_ratio=0.05, schedule="cosine", min_learning_rate=1e-4, weight_decay=0.01
        )
    )
    """Optimizer and schedule."""


@dataclass
class SFTStageConfig:
    epochs: float = 4.0
    """Passes over the demonstrations."""
    batch_size: int = 64
    """Demonstrations per step."""
    learning_rate: float = 1e-3
    """Peak learning rate (linear decay after a 5% warm-up)."""


@dataclass
class TinyWorldConfig:
    data: WorldDataConfig = field(default_factory=WorldDataConfig)
    """The generated data sets."""
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny Llama."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Pre-training on the world's plain text."""
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    """SFT on the demonstrations."""
    seed: int = 0
    """Seed of the model's initialisation and of the pre-training and SFT data order."""


@dataclass
class TinyWorld:
    config: TinyWorldConfig
    data: WorldData
    folder: Path
    pretrained_dir: Path
    sft_dir: Path
    info: dict[str, Any]
    cached: bool

    def model_config(self, which: str = "sft") -> ModelConfig:
        """The ``ModelConfig`` of the SFT (default) or pre-trained model."""
        return ModelConfig(name_or_path=str(self.sft_dir if which == "sft" else self.pretrained_dir))


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in a saved model folder (tied weights counted once)."""
    from safetensors.torch import load_file

    return sum(t.numel() for f in sorted(Path(model_dir).glob("*.safetensors")) for t in load_file(str(f)).values())


def settings_hash(config: TinyWorldConfig) -> str:
    text = json.dumps({"version": CACHE_VERSION, **dataclasses.asdict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretraining_rows(tokenizer, lines: list[str]) -> list[list[int]]:
    """Token ids of ``<|im_start|> line <|im_end|>`` for every line (one batched tokenizer call)."""
    encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in encoded]


def pretraining_batch(tokenizer, lines: list[str] | None = None, rows: list[list[int]] | None = None):
    """(B, T) input ids, attention mask and labels (-100 on padding) of ``<|im_start|> line <|im_end|>``
    (from ``lines``, or from their ``rows`` of :func:`pretraining_rows`)."""
    rows = pretraining_rows(tokenizer, lines or []) if rows is None else rows
    ids = pad_sequences(rows, tokenizer.pad_token_id)
    mask = pad_sequences([[1] * len(r) for r in rows], 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def pretrain(config: TinyWorldConfig, text: list[str], output: Path, progress: bool = True) -> Path:
    """Train the tiny Llama from scratch on ``text``; returns the saved model folder."""
    tokenizer = build_tokenizer()
    model = build_model(config.model, tokenizer, seed=config.seed)
    cfg = config.pretrain
    plan = BatchPlan(len(text), cfg.batch_size, config.seed, epochs=1e9, max_steps=cfg.steps)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
    logger = MetricLogger(
        output, is_main=True, total_steps=cfg.steps, description="pre-training", tensorboard=False, progress=progress
    )
    model.train()
    encoded = pretraining_rows(tokenizer, text)  # once, not 256 tokenizer calls a step
    try:
        for step in range(cfg.steps):
            batch = pretraining_batch(tokenizer, rows=[encoded[i] for i in plan.step_indices(step)])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm or float("inf"))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % 20 == 0 or step + 1 == cfg.steps:
                logger.log(step + 1, {"loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0]}, show=("loss",))
    finally:
        logger.close()
    return save_model(model, tokenizer, output / "model")


def run_sft_stage(
    config: TinyWorldConfig, data: WorldData, pretrained: Path, output: Path, progress: bool = True
) -> Path:
    """SFT of the pre-trained model on the demonstrations, through the ordinary SFT trainer."""
    from prefalign.trainers.sft import SFTConfig, run_sft

    s = config.sft
    sft = SFTConfig(
        model=ModelConfig(name_or_path=str(pretrained)),
        data=DataConfig(max_length=config.model.max_positions, max_prompt_length=config.model.max_positions // 2),
        batch=BatchConfig(global_batch_size=s.batch_size, micro_batch_size=s.batch_size, epochs=s.epochs),
        optim=OptimConfig(learning_rate=s.learning_rate, warmup_ratio=0.05, min_learning_rate=s.learning_rate / 10),
        run=RunConfig(output_dir=str(output), seed=config.seed, tensorboard=False, progress=progress, overwrite=True),
    )
    results = run_sft(sft, examples=(data.sft_train, data.sft_held_out))
    return Path(results["model_dir"])


def prepare_tiny_world(
    config: TinyWorldConfig | None = None, *, root: str | Path | None = None, progress: bool = True
) -> TinyWorld:
    """The tiny world with its pre-trained and SFT models, from the cache or trained now (module docstring)."""
    config = config or TinyWorldConfig()
    started = time.perf_counter()
    data = build_world_data(config.data)
    folder = Path(root) if root is not None else cache_dir() / "tiny_world" / settings_hash(config)
    marker = folder / "world.json"
    pretrained, sft = folder / "pretrained" / "model", folder / "sft" / "model"
    if marker.exists() and (pretrained / "config.json").exists() and (sft / "config.json").exists():
        info = json.loads(marker.read_text())
        return TinyWorld(config, data, folder, pretrained, sft, info, cached=True)
    console.print(f"[bold]tiny world[/bold]: building {folder} (pre-training, then SFT)")
    folder.mkdir(parents=True, exist_ok=True)
    save_yaml(config, folder / "config.yaml")
    data_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    pretrained = pretrain(config, data.pretrain_text, folder / "pretrained", progress)
    t1 = time.perf_counter()
    sft = run_sft_stage(config, data, pretrained, folder / "sft", progress)
    t2 = time.perf_counter()
    info = {
        "settings_hash": settings_hash(config),
        "config": dataclasses.asdict(config),
        "stats": data.stats,
        "seconds": {"data": data_seconds, "pretrain": t1 - t0, "sft": t2 - t1},
    }
    write_json_atomic(marker, info)
    return TinyWorld(config, data, folder, pretrained, sft, info, cached=False)
