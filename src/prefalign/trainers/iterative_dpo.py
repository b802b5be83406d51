"""Iterative DPO ("DPO-Iter", Xu et al. 2024, sections 4.3 and 6): sample, label, pair, train, repeat.

Round r = 1..R, starting from the model M_{r-1} (M_0 = ``model``):

1. sample: k = ``sampling.num_samples`` responses per prompt from M_{r-1};
2. label: score every response with the reward source (a learned reward model, a programmatic
   reward, the unit tests of a code prompt, or a weighted sum; :mod:`prefalign.rewards`);
3. pair: per prompt, best vs worst (``pairing=best_worst``) or best vs every lower-scored sample
   (``best_vs_rest``). On code (``pass_threshold`` set), when no sample of a prompt passes, the
   data set's correct solution (``Prompt.metadata["canonical_solution"]``, see ``canonical_keys``)
   is the chosen response and the worst sample(s) the rejected one(s) (Xu et al. section 6);
4. train: DPO (:func:`prefalign.trainers.dpo.run_dpo`) on the round's pairs with M_{r-1} as both
   the starting policy and the reference; the result M_r is the next round's reference.

Files, all written atomically: ``round-XX/samples.jsonl`` (every response with its reward),
``round-XX/pairs.jsonl`` (the round's pairs), the round's DPO run in ``round-XX/`` (checkpoints,
``metrics.jsonl``, ``model/``), and ``rounds.jsonl`` (one summary line per finished round).

Resume (``run.resume``): finished rounds are skipped (their ``model/`` is the next reference); a
round whose pairs file exists re-uses it instead of sampling again; the round's DPO run resumes
from its own latest checkpoint (policy, optimizer, scheduler, RNG, step and the cached reference
log-probs of M_{r-1}). Sampling is seeded by (seed, round, chunk of prompts), so a resampled round
gives the same pairs, whatever the number of processes.

Departures and choices: each round is a fresh DPO run (new optimizer and schedule); a sample that
is empty is never paired (counted as skipped); a prompt whose samples all tie gets no pair
(counted); a sample cut at ``max_new_tokens`` is trained without the EOS it never produced; the
pairs file holds text, so a sample is re-tokenised for training (a decode / encode round trip can
differ from the sampled tokens in rare cases).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from prefalign.data.config import DataConfig
from prefalign.data.io import DropReport
from prefalign.data.schema import PreferencePair, Prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.models.load import ModelConfig, load_causal_lm, load_reward_model, load_tokenizer
from prefalign.rewards.base import RewardFunction, SumOfRewards
from prefalign.rollout.generate import SamplingConfig, generate
from prefalign.trainers.common import BatchConfig, OptimConfig, RunConfig, make_accelerator
from prefalign.trainers.dpo import DPOConfig, run_dpo
from prefalign.trainers.logging import console
from prefalign.atomic import write_jsonl_atomic
from prefalign.trainers.preference_data import read_pairs, write_pairs

REWARD_KINDS = ("model", "task", "code", "sum")
PAIRING_RULES = ("best_worst", "best_vs_rest")


@dataclass
class IterRewardConfig:
    kind: str = "task"
    """Reward source: model (a learned reward model), task (a programmatic reward by name), code (the prompt's unit tests), or sum (model + task)."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="runs/reward-model"))
    """The reward model folder (written by `prefalign rm`), for kind model or sum."""
    task: str = "char_fraction:abcdefghijklmnopqrstuvwxyz"
    """Programmatic reward NAME[:ARGUMENT] from prefalign.rewards.registry, for kind task or sum."""
    model_weight: float = 1.0
    """Weight of the reward model's score in a sum."""
    task_weight: float = 1.0
    """Weight of the programmatic reward in a sum."""
    code_pass_reward: float = 10.0
    """Kind code: the reward of a program that passes every test (Xu et al.: 10); a failing one gets 0."""
    micro_batch_size: int = 8
    """Sequences per reward-model forward pass."""

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward.kind must be one of {REWARD_KINDS}, got {self.kind!r}")


@dataclass
class IterativeDPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The starting policy M_0 (usually an SFT model), also round 1's reference."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=512, eval_size=0.0))
    """Prompts: a code set (humaneval, mbpp with options.split, apps, code-contests: tests and canonical solutions), a preference set's distinct prompts, or a file with a prompt column. eval_size: share of each round's pairs held out for DPO's evaluation."""
    reward: IterRewardConfig = field(default_factory=IterRewardConfig)
    """The reward source that labels the samples."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, num_samples=4, max_new_tokens=128))
    """Sampling of each round; num_samples is k, the responses per prompt."""
    rounds: int = 3
    """Number of sample-label-train rounds."""
    pairing: str = "best_worst"
    """Pairs per prompt: best_worst (highest vs lowest reward) or best_vs_rest (highest vs each lower-rewarded sample)."""
    pass_threshold: float | None = None
    """Code: a sample passes when its reward is at least this; if none of a prompt's samples passes, its canonical solution is the chosen response (None: never)."""
    canonical_keys: list[str] = field(default_factory=lambda: ["canonical_solution", "reference_solution"])
    """Prompt.metadata keys searched, in order, for the data set's correct solution."""
    generation_micro_batch_size: int = 16
    """Sequences per generate call (a chunk of prompts times k)."""
    beta: float = 0.1
    """DPO beta of every round."""
    label_smoothing: float = 0.0
    """Conservative DPO label smoothing of every round."""
    reference: str = "cached"
    """Reference log-probs of each round: cached (computed once by M_{r-1}) or on_the_fly."""
    share_prompt: bool = True
    """Compute each prompt once for both responses of a pair (see prefalign dpo --help)."""
    max_tokens_per_micro_batch: int | None = None
    """Also cap a training micro-batch at this many padded tokens."""
    batch: BatchConfig = field(default_factory=lambda: BatchConfig(global_batch_size=64, micro_batch_size=4, epochs=1.0))
    """Batch sizes (pairs) and length of each round's DPO training."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-6, warmup_ratio=0.1))
    """Optimizer and schedule of each round (a fresh optimizer per round)."""
    final_reward: bool = True
    """After the last round, sample once more from the final model and report its mean reward."""
    stop_after_steps: int | None = None
    """Save and exit after this many DPO steps, counted over all rounds (a pre-empted job); continue with --run.resume True."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/dpo-iter"))
    """Output folder, seed, checkpoints, logging (each round's DPO run lives in round-XX/)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.pairing not in PAIRING_RULES:
            raise ValueError(f"pairing must be one of {PAIRING_RULES}, got {self.pairing!r}")
        if self.sampling.num_samples < 2 and self.pass_threshold is None:
            raise ValueError("sampling.num_samples (k) must be at least 2 to form pairs")
        if self.sampling.temperature == 0 and self.sampling.num_samples > 1:
            raise ValueError("greedy sampling (temperature 0) gives k identical responses; use temperature > 0")

    def round_dpo_config(self, round_index: int, model: ModelConfig, stop_after: int | None) -> DPOConfig:
        run = dataclasses.replace(self.run, output_dir=str(round_dir(self.run.output_dir, round_index)))
        return DPOConfig(model=model, data=self.data, loss="dpo", beta=self.beta, label_smoothing=self.label_smoothing,
                         reference=self.reference, share_prompt=self.share_prompt,
                         max_tokens_per_micro_batch=self.max_tokens_per_micro_batch,
                         batch=self.batch, optim=self.optim, run=run, stop_after_steps=stop_after)


PRESETS: dict[str, dict[str, Any]] = {
    # Xu et al. (2024): DPO lr 1e-6 and beta 0.1 each round; sampling temperature 1.0 (top-k 200 as in their PPO).
    "xu": {"beta": 0.1, "optim": {"learning_rate": 1e-6}, "sampling": {"temperature": 1.0, "top_k": 200},
           "pairing": "best_worst"},
    # Xu et al. section 6 (code): unit-test reward 10 for a passing program; a prompt without a passing sample is
    # paired with its canonical solution.
    "xu-code": {"beta": 0.1, "optim": {"learning_rate": 1e-6}, "sampling": {"temperature": 1.0, "top_k": 200},
                "data": {"source": "mbpp", "options": {"split": "train"}, "max_length": 1024},
                "reward": {"kind": "code", "code_pass_reward": 10.0}, "pass_threshold": 10.0, "pairing": "best_worst"},
    # A smoke run on the tiny random model with a programmatic reward (seconds); as recipes/dpo_iter_tiny.yaml.
    "tiny": {"model": {"name_or_path": "tiny-random"}, "data": {"num_examples": 16, "max_length": 256, "max_prompt_length": 192},
             "reward": {"kind": "task", "task": "char_fraction:abcdefghijklmnopqrstuvwxyz"},
             "sampling": {"temperature": 1.0, "num_samples": 4, "max_new_tokens": 12}, "rounds": 2,
             "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 4.0},
             "optim": {"learning_rate": 1e-2, "warmup_ratio": 0.0},
             "run": {"output_dir": "runs/dpo_iter_tiny", "tensorboard": False, "progress": False, "threads": 1}},
}


def round_dir(output_dir: str | Path, round_index: int) -> Path:
    return Path(output_dir) / f"round-{round_index:02d}"


def build_reward(cfg: IterRewardConfig, device: torch.device | str = "cpu") -> RewardFunction:
    """The reward source of ``cfg`` as one RewardFunction (a reward model is loaded onto ``device``)."""
    if cfg.kind == "code":
        from prefalign.rewards.code import CodeExecutionReward

        return CodeExecutionReward(pass_reward=cfg.code_pass_reward, fail_reward=0.0)
    parts, weights = [], []
    if cfg.kind in ("model", "sum"):
        from prefalign.models.load import disable_dropout
        from prefalign.rewards.learned import LearnedReward

        model = load_reward_model(cfg.model).to(device)
        disable_dropout(model)
        max_length = getattr(model.config, "max_position_embeddings", None)  # e.g. 512 for a MiniLM reward model
        parts.append(LearnedReward(model, load_tokenizer(cfg.model), cfg.micro_batch_size, max_length=max_length))
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
    from prefalign.data.sources import load_prompt_data

    kwargs = dict(data.options)
    if data.path is not None:
        kwargs["path"] = data.path
    name = data.source.strip().lower().replace("_", "-")
    with _with_data_dir(data):
        if name in CODE_SOURCES:
            from prefalign.data.sampling import downsample
            from prefalign.data.sources import code

            loader = {"humaneval": code.load_humaneval, "mbpp": code.load_mbpp, "apps": code.load_apps,
                      "code-contests": code.load_code_contests}[name]
            report = DropReport(source=name)
            prompts = loader(strict=data.strict, report=report, **kwargs)
            return (downsample(prompts, data.num_examples, data.seed) if data.num_examples else prompts), report
        if data.columns:
            kwargs["columns"] = dict(data.columns)
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
    return [ids[max(0, len(ids) - budget):] for ids in (encode_prompt(tokenizer, p.messages) for p in prompts)]


def sample_and_score(policy, tokenizer, prompts: Sequence[Prompt], config: IterativeDPOConfig, round_index: int,
                     reward_fn: RewardFunction, accelerator) -> list[Sample]:
    """k samples per prompt and their rewards; each process takes every world-th chunk, then all gather."""
    k = config.sampling.num_samples
    per_chunk = max(1, config.generation_micro_batch_size // k)
    ids = prompt_token_ids(tokenizer, prompts, config.data)
    mine: list[Sample] = []
    for chunk, start in enumerate(range(0, len(prompts), per_chunk)):
        if chunk % accelerator.num_processes != accelerator.process_index:
            continue
        index = list(range(start, min(start + per_chunk, len(prompts))))
        rollout = generate(policy, tokenizer, [ids[i] for i in index], config.sampling, micro_batch_size=len(index) * k,
                           generator_seed=chunk_seed(config.run.seed, round_index, chunk))
        rows = [index[int(j)] for j in rollout.prompt_index]
        rewards = reward_fn([prompts[i] for i in rows], rollout.response_texts).tolist()
        for n, (i, text, ended, reward) in enumerate(zip(rows, rollout.response_texts, rollout.ended_with_eos.tolist(), rewards)):
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


def _pair(prompt: Prompt, index: int, round_index: int, chosen: tuple[str, float, bool, str], rejected: Sample) -> PreferencePair:
    text, score, truncated, source = chosen
    keep = {k: v for k, v in prompt.metadata.items() if isinstance(v, (str, int, float, bool)) and k in ("task", "task_id", "source", "line")}
    metadata = {**keep, "round": round_index, "prompt_index": index, "score_chosen": score, "score_rejected": rejected.reward,
                "chosen_truncated": truncated, "rejected_truncated": not rejected.ended_with_eos, "chosen_source": source}
    return PreferencePair(list(prompt.messages), text, rejected.response, metadata)


def form_pairs(prompts: Sequence[Prompt], samples: Sequence[Sample], config: IterativeDPOConfig, round_index: int,
               skipped: dict[str, int]) -> list[PreferencePair]:
    """Stage 3: the round's pairs by ``config.pairing``, with the canonical-solution fallback; skips counted by reason."""
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
            rejected = [s for s in (group[1:] if config.pairing == "best_vs_rest" else group[-1:]) if s.reward < best.reward]
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


def sampling_summary(round_index: int, prompts: Sequence[Prompt], samples: Sequence[Sample], pairs: Sequence[PreferencePair],
                     skipped: dict[str, int]) -> dict[str, Any]:
    best: dict[int, float] = {}
    for s in samples:
        best[s.prompt_index] = max(best.get(s.prompt_index, s.reward), s.reward)
    return {"round": round_index, "prompts": len(prompts), "samples": len(samples),
            "reward/mean": _mean([s.reward for s in samples]), "reward/best_mean": _mean(list(best.values())),
            "ended_with_eos": _mean([float(s.ended_with_eos) for s in samples]), "pairs": len(pairs),
            "pairs_from_canonical": sum(p.metadata["chosen_source"] == "canonical" for p in pairs), "skipped": dict(skipped)}


def sample_round(config: IterativeDPOConfig, model_cfg: ModelConfig, prompts: Sequence[Prompt], round_index: int,
                 reward_fn: RewardFunction, accelerator) -> list[Sample]:
    """Stages 1-2 with the round's starting model (loaded here and released on return)."""
    policy = load_causal_lm(model_cfg, seed=config.run.seed).to(accelerator.device)
    return sample_and_score(policy, load_tokenizer(model_cfg), prompts, config, round_index, reward_fn, accelerator)


def round_pairs(config: IterativeDPOConfig, model_cfg: ModelConfig, prompts: Sequence[Prompt], round_index: int,
                reward_fn: RewardFunction, accelerator) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The round's pairs and sampling summary: read back on resume, else sampled, labelled, paired and saved."""
    from prefalign.trainers.session import write_json_atomic

    folder = round_dir(config.run.output_dir, round_index)
    pairs_file, summary_file = folder / "pairs.jsonl", folder / "sampling.json"
    if config.run.resume and summary_file.exists() and pairs_file.exists():
        return read_pairs(pairs_file), json.loads(summary_file.read_text())
    samples = sample_round(config, model_cfg, prompts, round_index, reward_fn, accelerator)
    skipped: dict[str, int] = {}
    pairs = form_pairs(prompts, samples, config, round_index, skipped)
    summary = sampling_summary(round_index, prompts, samples, pairs, skipped)
    if accelerator.is_main_process:
        write_jsonl_atomic(folder / "samples.jsonl", [dataclasses.asdict(s) for s in samples])
        write_pairs(pairs_file, pairs)
        write_json_atomic(summary_file, summary)  # written last: marks the round's data as complete
    accelerator.wait_for_everyone()
    return pairs, summary


def _split(pairs: list[PreferencePair], config: IterativeDPOConfig, round_index: int) -> tuple[list, list]:
    from prefalign.data.sampling import train_test_split

    size = config.data.eval_size
    train, held_out = (pairs, []) if size == 0 else train_test_split(pairs, int(size) if size >= 1 else size, seed=config.data.seed)
    if len(train) < config.batch.global_batch_size:
        raise ValueError(f"round {round_index} gave {len(train)} training pairs, fewer than one global batch "
                         f"({config.batch.global_batch_size}); use more prompts, a larger k or a smaller batch")
    return train, held_out


def _finished_round(folder: Path) -> dict[str, Any] | None:
    marker = folder / "round.json"
    if marker.exists() and (folder / "model" / "config.json").exists():
        return json.loads(marker.read_text())
    return None


def run_iterative_dpo(config: IterativeDPOConfig, prompts: Sequence[Prompt] | None = None,
                      reward_fn: RewardFunction | None = None) -> dict[str, Any]:
    """Run the rounds; ``prompts`` / ``reward_fn`` override ``config.data`` / ``config.reward``.

    Returns (and writes to ``<output_dir>/results.json``) ``completed``, the per-round summaries
    (sampling rewards, pair counts and skips, the DPO results), ``model_dir`` and ``reward/final_mean``.
    """
    from prefalign.config import save_yaml
    from prefalign.trainers.session import write_json_atomic

    acc = make_accelerator(config.run)
    out = Path(config.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config, out / "config.yaml")
    if prompts is None:
        prompts, report = load_prompts(config.data)
        if acc.is_main_process:
            console.print(report.summary())
    reward_fn = reward_fn if reward_fn is not None else build_reward(config.reward, acc.device)
    model_cfg, history, steps_done = config.model, [], 0
    for r in range(1, config.rounds + 1):
        folder = round_dir(out, r)
        finished = _finished_round(folder) if config.run.resume else None
        if finished is None:
            remaining = None if config.stop_after_steps is None else config.stop_after_steps - steps_done
            if remaining is not None and remaining <= 0:
                return {"completed": False, "stopped_before_round": r, "rounds": history}
            pairs, summary = round_pairs(config, model_cfg, prompts, r, reward_fn, acc)
            result = run_dpo(config.round_dpo_config(r, model_cfg, remaining), records=_split(pairs, config, r))
            if not result["completed"]:
                return {"completed": False, "stopped_in_round": r, "rounds": history}
            finished = {**summary, "dpo": result}
            if acc.is_main_process:
                write_json_atomic(folder / "round.json", finished)
                write_jsonl_atomic(out / "rounds.jsonl", history + [finished])
                console.print(f"round {r}: mean sample reward {summary['reward/mean']:.4f}, {summary['pairs']} pairs, "
                              f"held-out accuracy {result.get('eval/rewards/accuracy', float('nan')):.3f}")
        history.append(finished)
        steps_done += int(finished["dpo"]["steps"])
        model_cfg = dataclasses.replace(config.model, name_or_path=str(folder / "model"), tokenizer=None)
    results: dict[str, Any] = {"completed": True, "rounds": history, "model_dir": model_cfg.name_or_path}
    if config.final_reward:
        samples = sample_round(config, model_cfg, prompts, config.rounds + 1, reward_fn, acc)
        results["reward/final_mean"] = _mean([s.reward for s in samples])
        results["reward/initial_mean"] = history[0]["reward/mean"]
    if acc.is_main_process:
        write_json_atomic(out / "results.json", results)
    acc.wait_for_everyone()
    return results
