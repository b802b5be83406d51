"""One round of iterative DPO before training: load the prompts, sample k responses each, label them
with the reward source and form the preference pairs (:mod:`prefalign.trainers.preference.iterative`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefalign.data.config import DataConfig
from prefalign.data.io import DropReport
from prefalign.data.schema import PreferencePair, Prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.rewards.base import RewardFunction, SumOfRewards
from prefalign.rollout.generate import generate
from prefalign.trainers.preference.iterative_config import (
    IterativeDPOConfig,
    IterRewardConfig,
)


def build_reward(cfg: IterRewardConfig, device: torch.device | str = "cpu") -> RewardFunction:
    """The reward source of ``cfg`` as one RewardFunction (a reward model is loaded onto ``device``)."""
    if cfg.kind == "code":
        from prefalign.rewards.code import CodeExecutionReward

        return CodeExecutionReward(pass_reward=cfg.code_pass_reward, fail_reward=0.0)
    parts, weights = [], []
    if cfg.kind in ("model", "sum"):  # one reward model, or an ensemble folder combined by cfg.ensemble
        from prefalign.rewards.ensemble import load_learned_reward

        parts.append(
            load_learned_reward(cfg.model, device, cfg.micro_batch_size, rule=cfg.ensemble, uwo_lambda=cfg.uwo_lambda)
        )
        weights.append(cfg.model_weight)
    if cfg.kind in ("task", "sum"):
        from prefalign.rewards.registry import task_reward

        parts.append(task_reward(cfg.task))
        weights.append(cfg.task_weight)
    return parts[0] if len(parts) == 1 and weights[0] == 1.0 else SumOfRewards(parts, weights)


CODE_SOURCES = ("humaneval", "mbpp", "apps", "code-contests")


def load_prompts(data: DataConfig) -> tuple[list[Prompt], DropReport]:
    """The prompts of ``data``: a code set's problems (tests and canonical solution in the metadata),
    a preference set's distinct prompts, or a prompt file."""
    from prefalign.data.config import _with_data_dir
    from prefalign.data.sources import load_prompt_data, source_name

    kwargs = dict(data.options)
    if data.path is not None:
        kwargs["path"] = data.path
    name = data.source.strip().lower().replace("_", "-")
    with _with_data_dir(data):
        if name in CODE_SOURCES:
            from prefalign.data.sampling import downsample
            from prefalign.data.sources import code

            loader = {
                "humaneval": code.load_humaneval,
                "mbpp": code.load_mbpp,
                "apps": code.load_apps,
                "code-contests": code.load_code_contests,
            }[name]
            report = DropReport(source=name)
            prompts = loader(strict=data.strict, report=report, **kwargs)
            return (downsample(prompts, data.num_examples, data.seed) if data.num_examples else prompts), report
        if data.columns:
            kwargs["columns"] = dict(data.columns)
        if source_name(data.source) is None:
            kwargs["split"] = data.split
        return load_prompt_data(data.source, strict=data.strict, limit=data.num_examples, seed=data.seed, **kwargs)


# ----------------------------------------------------------------------------- 1-2. sample and label


@dataclass
class Sample:
    """One sampled response and its reward."""

    prompt_index: int
    sample_index: int
    response: str
    ended_with_eos: bool
    reward: float


def chunk_seed(seed: int, round_index: int, chunk: int) -> int:
    """A sampling seed that depends only on (seed, round, chunk of prompts), not on the process layout."""
    digest = hashlib.blake2b(f"dpo-iter:{seed}:{round_index}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def prompt_token_ids(tokenizer, prompts: Sequence[Prompt], data: DataConfig) -> list[list[int]]:
    """Rendered prompts, their start cut to the training prompt budget (as join_truncated does)."""
    budget = data.max_prompt_length if data.max_prompt_length is not None else data.max_length // 2
    return [ids[max(0, len(ids) - budget) :] for ids in (encode_prompt(tokenizer, p.messages) for p in prompts)]


def sample_and_score(
    policy,
    tokenizer,
    prompts: Sequence[Prompt],
    config: IterativeDPOConfig,
    round_index: int,
    reward_fn: RewardFunction,
    accelerator,
) -> list[Sample]:
    """k samples per prompt and their rewards; each process takes every world-th chunk, then all gather."""
    k = config.sampling.num_samples
    per_chunk = max(1, config.generation_micro_batch_size // k)
    ids = prompt_token_ids(tokenizer, prompts, config.data)
    mine: list[Sample] = []
    for chunk, start in enumerate(range(0, len(prompts), per_chunk)):
        if chunk % accelerator.num_processes != accelerator.process_index:
            continue
        index = list(range(start, min(start + per_chunk, len(prompts))))
        rollout = generate(
            policy,
            tokenizer,
            [ids[i] for i in index],
            config.sampling,
            micro_batch_size=len(index) * k,
            generator_seed=chunk_seed(config.run.seed, round_index, chunk),
        )
        rows = [index[int(j)] for j in rollout.prompt_index]
        rewards = reward_fn([prompts[i] for i in rows], rollout.response_texts).tolist()
        for n, (i, text, ended, reward) in enumerate(
            zip(rows, rollout.response_texts, rollout.ended_with_eos.tolist(), rewards)
        ):
            mine.append(Sample(i, n % k, text, bool(ended), float(reward)))
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        mine = gather_object(mine)
    return sorted(mine, key=lambda s: (s.prompt_index, s.sample_index))


# ----------------------------------------------------------------------------- 3. pair


def canonical_solution(prompt: Prompt, keys: Sequence[str]) -> str | None:
    for key in keys:
        value = prompt.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _pair(
    prompt: Prompt, index: int, round_index: int, chosen: tuple[str, float, bool, str], rejected: Sample
) -> PreferencePair:
    text, score, truncated, source = chosen
    keep = {
        k: v
        for k, v in prompt.metadata.items()
        if isinstance(v, (str, int, float, bool)) and k in ("task", "task_id", "source", "line")
    }
    metadata = {
        **keep,
        "round": round_index,
        "prompt_index": index,
        "score_chosen": score,
        "score_rejected": rejected.reward,
        "chosen_truncated": truncated,
        "rejected_truncated": not rejected.ended_with_eos,
        "chosen_source": source,
    }
    return PreferencePair(list(prompt.messages), text, rejected.response, metadata)


def form_pairs(
    prompts: Sequence[Prompt],
    samples: Sequence[Sample],
    config: IterativeDPOConfig,
    round_index: int,
    skipped: dict[str, int],
) -> list[PreferencePair]:
    """Stage 3: the round's pairs by ``config.pairing``, with the canonical-solution fallback; skips counted by
    reason."""
    by_prompt: dict[int, list[Sample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_index, []).append(s)

    def skip(reason: str, n: int = 1) -> None:
        skipped[reason] = skipped.get(reason, 0) + n

    pairs: list[PreferencePair] = []
    for i, prompt in enumerate(prompts):
        group = [s for s in by_prompt.get(i, []) if s.response.strip()]
        if len(group) < len(by_prompt.get(i, [])):
            skip("empty sample", len(by_prompt[i]) - len(group))
        group.sort(key=lambda s: -s.reward)  # stable: ties keep the sampling order
        canonical = canonical_solution(prompt, config.canonical_keys) if config.pass_threshold is not None else None
        if canonical is not None and (not group or group[0].reward < config.pass_threshold):
            chosen = (canonical, float(config.pass_threshold), False, "canonical")
            rejected = group if config.pairing == "best_vs_rest" else group[-1:]
        elif len(group) < 2:
            skip("fewer than two non-empty samples")
            continue
        else:
            best = group[0]
            chosen = (best.response, best.reward, not best.ended_with_eos, "sample")
            rejected = [
                s for s in (group[1:] if config.pairing == "best_vs_rest" else group[-1:]) if s.reward < best.reward
            ]
        if not rejected:
            skip("all samples tie" if group else "no sample to reject")
            continue
        for r in rejected:
            if r.response == chosen[0]:
                skip("chosen identical to rejected")
                continue
            pairs.append(_pair(prompt, i, round_index, chosen, r))
    return pairs


# ----------------------------------------------------------------------------- the rounds


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def sampling_summary(
    round_index: int,
    prompts: Sequence[Prompt],
    samples: Sequence[Sample],
    pairs: Sequence[PreferencePair],
    skipped: dict[str, int],
) -> dict[str, Any]:
    best: dict[int, float] = {}
    for s in samples:
        best[s.prompt_index] = max(best.get(s.prompt_index, s.reward), s.reward)
    return {
        "round": round_index,
        "prompts": len(prompts),
        "samples": len(samples),
        "reward/mean": _mean([s.reward for s in samples]),
        "reward/best_mean": _mean(list(best.values())),
        "ended_with_eos": _mean([float(s.ended_with_eos) for s in samples]),
        "pairs": len(pairs),
        "pairs_from_canonical": sum(p.metadata["chosen_source"] == "canonical" for p in pairs),
        "skipped": dict(skipped),
    }
