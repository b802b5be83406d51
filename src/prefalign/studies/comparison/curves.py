"""Over-optimisation curves (Gao et al. 2023's picture): gold and learned reward against KL to the SFT model.

For a PPO run, the checkpoints the trainer saved (``run.save_every``, see
:func:`prefalign.studies.comparison.online.ppo_row_config`; at most ``ppo.curve_points`` of them, evenly
spread over the run as it actually ran, which is shorter than its cap when it stopped at a plateau) are
loaded and scored by :func:`~prefalign.studies.comparison.tiny_world.evaluate.curve_point` on the held-out
prompts; for
DPO-Iter, the model of every round. The SFT model is the curve's first point (step 0, KL 0). Once
read, a PPO run's checkpoints are deleted (the final model stays): they are only kept for this.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from prefalign.data.schema import Prompt
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.studies.comparison.tiny_world.evaluate import EvalConfig, curve_point


def _points(
    models: list[tuple[int, Any]], sft_dir: str, prompts: list[Prompt], config: EvalConfig, reward_model
) -> list[dict[str, float]]:
    """``models``: (step, loader) pairs; a loader returns the policy to score at that step."""
    cfg = ModelConfig(name_or_path=sft_dir)
    tokenizer, reference = load_tokenizer(cfg), load_causal_lm(cfg).eval()
    out = []
    for step, load in models:
        policy = load().eval()
        out.append({"step": step, **curve_point(policy, reference, tokenizer, prompts, config, reward_model)})
    return out


def _sft(sft_dir: str):
    return lambda: load_causal_lm(ModelConfig(name_or_path=sft_dir))


def spread(items: list, count: int | None) -> list:
    """``count`` items evenly spread over ``items`` (first and last included), all of them when there are fewer."""
    if count is None or len(items) <= count:
        return list(items)
    if count == 1:
        return [items[-1]]
    picks = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in picks]


def ppo_curve(
    run_dir: Path,
    sft_dir: str,
    prompts: list[Prompt],
    config: EvalConfig,
    reward_model=None,
    rollout_batch_size: int = 1,
    delete_checkpoints: bool = True,
    max_points: int | None = None,
) -> list[dict[str, float]]:
    """Curve points of a PPO run from its saved checkpoints (``samples`` = steps x rollout batch); with
    ``max_points``, that many checkpoints evenly spread over the run, the last one always among them."""
    from safetensors.torch import load_model

    from prefalign.trainers.checkpoint import checkpoint_model_files

    folders = sorted(p for p in (run_dir / "checkpoints").glob("step-*") if (p / "state.pt").exists())
    if not folders:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint to draw the over-optimisation curve from")

    folders = spread(sorted(folders, key=lambda f: int(f.name.split("-")[1])), max_points)

    def loader(folder: Path):
        def load():
            model = load_causal_lm(ModelConfig(name_or_path=sft_dir))
            load_model(model, str(checkpoint_model_files(folder)["policy"]))
            return model

        return load

    models = [(0, _sft(sft_dir))] + [(int(f.name.split("-")[1]), loader(f)) for f in folders]
    with torch.no_grad():
        points = _points(models, sft_dir, prompts, config, reward_model)
    for p in points:
        p["samples"] = p["step"] * rollout_batch_size
    if delete_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return points


def iterative_curve(
    run_dir: Path, sft_dir: str, prompts: list[Prompt], config: EvalConfig, reward_model=None
) -> list[dict[str, float]]:
    """Curve points of DPO-Iter: the SFT model, then each round's model (``step`` = round)."""
    from prefalign.trainers.preference.iterative_config import round_dir

    models = [(0, _sft(sft_dir))]
    r = 1
    while (round_dir(run_dir, r) / "model" / "config.json").exists():
        folder = str(round_dir(run_dir, r) / "model")
        models.append((r, lambda folder=folder: load_causal_lm(ModelConfig(name_or_path=folder))))
        r += 1
    with torch.no_grad():
        return _points(models, sft_dir, prompts, config, reward_model)
