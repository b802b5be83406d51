"""The tiny world's data sets, generated from a seed: pre-training text, SFT demonstrations,
preference pairs, policy-training prompts and held-out evaluation prompts.

Each split draws its problems from its own random stream (``random.Random(f"{seed}:{split}")``),
so changing the size of one split changes no other. Splits are independent draws from the same
problem distribution; the small operations (``add``: 100 digit pairs) recur across splits, the
list operations mostly do not; :func:`eval_overlap` measures how many evaluation prompts also
appear among the SFT prompts.

Preference pairs follow PKU-SafeRLHF: two responses of the preference generator per prompt
(resampled until they differ), each with an exact safety label; the "more helpful" label is
drawn from a Bradley-Terry model of the gold helpfulness, ``P(y_0 better) = sigmoid((h_0 - h_1) /
label_temperature)``; for two unsafe responses the "safer" one is a coin flip (they are equally
unsafe). The row is then consolidated by :func:`prefalign.data.sources.safe_rlhf.safe_row_to_pair`
(both safe: the more helpful wins; safety differs: the safe one wins).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from prefalign.data.schema import PreferencePair, Prompt, SFTExample, user_prompt
from prefalign.data.sources.safe_rlhf import safe_row_to_pair
from prefalign.studies.comparison.tiny_world.generators import demonstration, preference_response, pretraining_line
from prefalign.studies.comparison.tiny_world.task import Problem, sample_problem, score_response


@dataclass
class WorldDataConfig:
    seed: int = 0
    """Seed of every generated split."""
    unsafe_fraction: float = 0.2
    """Share of prompts that carry a forbidden request (their right answer is a refusal)."""
    pretrain_lines: int = 12000
    """Lines of pre-training text (one problem and an answer each)."""
    pretrain_noise: float = 0.1
    """Share of pre-training lines whose answer is a random symbol string."""
    sft_examples: int = 1500
    """SFT demonstrations for training."""
    sft_held_out: int = 200
    """SFT demonstrations held out (the SFT trainer's held-out loss)."""
    demo_error_rate: float = 0.3
    """Share of demonstrations with one of the demonstrator's mistakes."""
    demo_refusal_rate: float = 0.5
    """Share of unsafe prompts the demonstrator refuses (it answers the rest)."""
    preference_pairs: int = 1200
    """Preference pairs for training (the reward model, DPO, RRHF, PRO)."""
    preference_held_out: int = 200
    """Preference pairs held out (reward-model accuracy, DPO's held-out metrics)."""
    preference_correct_rate: float = 0.5
    """Share of the preference generator's answers that are correct."""
    preference_refusal_rate: float = 0.5
    """Share of unsafe prompts the preference generator refuses."""
    label_temperature: float = 0.2
    """Bradley-Terry noise of the helpfulness labels: P(y0 better) = sigmoid((h0 - h1) / T)."""
    policy_prompts: int = 512
    """Unlabelled prompts for PPO and iterative DPO."""
    eval_prompts: int = 256
    """Held-out evaluation prompts (distinct texts)."""

    def __post_init__(self) -> None:
        for name in (
            "unsafe_fraction",
            "pretrain_noise",
            "demo_error_rate",
            "demo_refusal_rate",
            "preference_correct_rate",
            "preference_refusal_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.label_temperature <= 0:
            raise ValueError(f"label_temperature must be positive, got {self.label_temperature}")


@dataclass
class WorldData:
    """Every generated split (problems travel in the metadata of prompts, pairs and examples)."""

    pretrain_text: list[str]
    sft_train: list[SFTExample]
    sft_held_out: list[SFTExample]
    pairs_train: list[PreferencePair]
    pairs_held_out: list[PreferencePair]
    policy_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    stats: dict[str, float] = field(default_factory=dict)


def split_rng(seed: int, split: str) -> random.Random:
    return random.Random(f"tiny-world:{seed}:{split}")


def sft_examples(config: WorldDataConfig, count: int, split: str) -> list[SFTExample]:
    rng = split_rng(config.seed, split)
    out = []
    for _ in range(count):
        problem = sample_problem(rng, config.unsafe_fraction)
        response = demonstration(problem, rng, config.demo_error_rate, config.demo_refusal_rate)
        out.append(
            SFTExample(user_prompt(problem.text), response, {**problem.to_metadata(), "generator": "demonstrator"})
        )
    return out


def preference_row(problem: Problem, rng: random.Random, config: WorldDataConfig) -> dict | None:
    """A PKU-SafeRLHF-style row for ``problem`` (None when the generator keeps giving identical responses)."""
    first = preference_response(problem, rng, config.preference_correct_rate, config.preference_refusal_rate)
    for _ in range(10):
        second = preference_response(problem, rng, config.preference_correct_rate, config.preference_refusal_rate)
        if second != first:
            break
    else:
        return None
    s0, s1 = score_response(problem, first), score_response(problem, second)
    p_first_better = 1.0 / (1.0 + math.exp(-(s0.helpfulness - s1.helpfulness) / config.label_temperature))
    better = 0 if rng.random() < p_first_better else 1
    if s0.safe != s1.safe:
        safer = 0 if s0.safe else 1
    else:
        safer = rng.randrange(2)
    return {
        "prompt": problem.text,
        "response_0": first,
        "response_1": second,
        "is_response_0_safe": s0.safe,
        "is_response_1_safe": s1.safe,
        "better_response_id": better,
        "safer_response_id": safer,
    }


def preference_pairs(config: WorldDataConfig, count: int, split: str) -> list[PreferencePair]:
    rng = split_rng(config.seed, split)
    out: list[PreferencePair] = []
    while len(out) < count:
        problem = sample_problem(rng, config.unsafe_fraction)
        row = preference_row(problem, rng, config)
        if row is None:
            continue
        pair = safe_row_to_pair(row)
        pair.metadata.update({**problem.to_metadata(), "generator": "preference"})
        out.append(pair)
    return out


def prompts(config: WorldDataConfig, count: int, split: str) -> list[Prompt]:
    """``count`` prompts with distinct texts."""
    rng = split_rng(config.seed, split)
    seen: set[str] = set()
    out: list[Prompt] = []
    for _ in range(100 * count):
        if len(out) == count:
            break
        problem = sample_problem(rng, config.unsafe_fraction)
        if problem.text not in seen:
            seen.add(problem.text)
            out.append(problem.to_prompt())
    if len(out) < count:
        raise ValueError(f"could not draw {count} distinct prompts for {split}")
    return out


def pretraining_text(config: WorldDataConfig) -> list[str]:
    rng = split_rng(config.seed, "pretrain")
    return [
        pretraining_line(sample_problem(rng, config.unsafe_fraction), rng, config.pretrain_noise)
        for _ in range(config.pretrain_lines)
    ]


def eval_overlap(eval_prompts: list[Prompt], examples: list[SFTExample]) -> float:
    """Share of evaluation prompts whose text is also an SFT prompt."""
    seen = {ex.prompt[-1].content for ex in examples}
    return sum(p.messages[-1].content in seen for p in eval_prompts) / max(len(eval_prompts), 1)


def data_stats(data: WorldData) -> dict[str, float]:
    """Quality of each generator by the gold reward, and the shape of the preference data."""

    def mean_reward(rows):
        return sum(score_response(Problem.from_metadata(r.metadata), r.response).reward for r in rows) / len(rows)

    pairs = data.pairs_train
    chosen = [SFTExample(p.prompt, p.chosen, p.metadata) for p in pairs]
    rejected = [SFTExample(p.prompt, p.rejected, p.metadata) for p in pairs]
    categories = {
        c: sum(p.metadata["category"] == c for p in pairs) / len(pairs) for c in ("dual_safe", "mixed", "dual_unsafe")
    }
    gold_agrees = sum(
        score_response(Problem.from_metadata(p.metadata), p.chosen).reward
        > score_response(Problem.from_metadata(p.metadata), p.rejected).reward
        for p in pairs
    ) / len(pairs)
    return {
        "sft_gold_reward": mean_reward(data.sft_train),
        "chosen_gold_reward": mean_reward(chosen),
        "rejected_gold_reward": mean_reward(rejected),
        "pairs_gold_strictly_prefers_chosen": gold_agrees,
        **{f"pairs_{k}": v for k, v in categories.items()},
        "eval_prompts_seen_in_sft": eval_overlap(data.eval_prompts, data.sft_train),
    }


def build_world_data(config: WorldDataConfig) -> WorldData:
    """Every split of the tiny world, deterministic in ``config``."""
    data = WorldData(
        pretrain_text=pretraining_text(config),
        sft_train=sft_examples(config, config.sft_examples, "sft"),
        sft_held_out=sft_examples(config, config.sft_held_out, "sft-held-out"),
        pairs_train=preference_pairs(config, config.preference_pairs, "preference"),
        pairs_held_out=preference_pairs(config, config.preference_held_out, "preference-held-out"),
        policy_prompts=prompts(config, config.policy_prompts, "policy"),
        eval_prompts=prompts(config, config.eval_prompts, "eval"),
    )
    data.stats = data_stats(data)
    return data
