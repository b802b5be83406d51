"""Iterative DPO ("DPO-Iter", Xu et al. 2024, sections 4.3 and 6): sample, label, pair, train, repeat.

Round r = 1..R, starting from the model M_{r-1} (M_0 = ``model``):

1. sample: k = ``sampling.num_samples`` responses per prompt from M_{r-1};
2. label: score every response with the reward source (a learned reward model, a programmatic
   reward, the unit tests of a code prompt, or a weighted sum; :mod:`prefalign.rewards`);
3. pair: per prompt, best vs worst (``pairing=best_worst``) or best vs every lower-scored sample
   (``best_vs_rest``). On code (``pass_threshold`` set), when no sample of a prompt passes, the
   data set's correct solution (``Prompt.metadata["canonical_solution"]``, see ``canonical_keys``)
   is the chosen response and the worst sample(s) the rejected one(s) (Xu et al. section 6);
4. train: DPO (:func:`prefalign.trainers.preference.dpo.run_dpo`) on the round's pairs with M_{r-1} as both
   the starting policy and the reference; the result M_r is the next round's reference.

Validation and early stopping (``validation_prompts`` > 0): the last prompts are held out of every round;
the starting model and each round's M_r sample one response per validation prompt, scored by the same reward,
with their KL to the starting model (``eval/objective`` = reward - beta x KL,
:mod:`prefalign.trainers.preference.validation`). With ``run.early_stop.patience`` > 0 the rounds stop once
that series has plateaued (:mod:`prefalign.trainers.early_stop`), and the last round's model is the result.

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
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefalign.atomic import write_jsonl_atomic
from prefalign.data.schema import PreferencePair, Prompt
from prefalign.models.load import (
    ModelConfig,
    load_causal_lm,
    load_tokenizer,
)
from prefalign.rewards.base import RewardFunction
from prefalign.trainers.common import (
    make_accelerator,
)
from prefalign.trainers.early_stop import PlateauWatch
from prefalign.trainers.logging import console
from prefalign.trainers.preference.data import read_pairs, write_pairs
from prefalign.trainers.preference.dpo import run_dpo
from prefalign.trainers.preference.iterative_config import (  # noqa: F401  (re-exported: the command's settings)
    PAIRING_RULES,
    PRESETS,
    REWARD_KINDS,
    IterativeDPOConfig,
    IterRewardConfig,
    round_dir,
)
from prefalign.trainers.preference.labelling import (  # noqa: F401  (re-exported: the round's pieces)
    CODE_SOURCES,
    Sample,
    _mean,
    build_reward,
    canonical_solution,
    form_pairs,
    load_prompts,
    sample_and_score,
    sampling_summary,
)
from prefalign.trainers.preference.validation import validation_objective
from prefalign.trainers.session import drop_counts, publish_drop_report


def sample_round(
    config: IterativeDPOConfig,
    model_cfg: ModelConfig,
    prompts: Sequence[Prompt],
    round_index: int,
    reward_fn: RewardFunction,
    accelerator,
) -> list[Sample]:
    """Stages 1-2 with the round's starting model (loaded here and released on return)."""
    policy = load_causal_lm(model_cfg, seed=config.run.seed).to(accelerator.device)
    return sample_and_score(policy, load_tokenizer(model_cfg), prompts, config, round_index, reward_fn, accelerator)


def round_pairs(
    config: IterativeDPOConfig,
    model_cfg: ModelConfig,
    prompts: Sequence[Prompt],
    round_index: int,
    reward_fn: RewardFunction,
    accelerator,
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The round's pairs and sampling summary: read back on resume, else sampled, labelled, paired and saved."""
    from prefalign.atomic import write_json_atomic

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


def split_validation(prompts: Sequence[Prompt], count: int) -> tuple[list[Prompt], list[Prompt]]:
    """(the rounds' prompts, the last ``count`` held out for validation)."""
    prompts = list(prompts)
    if count and count >= len(prompts):
        raise ValueError(f"validation_prompts={count} leaves no prompt to train on ({len(prompts)} prompts)")
    return (prompts[:-count], prompts[-count:]) if count else (prompts, [])


def starting_validation(config: IterativeDPOConfig, validation: Sequence[Prompt], reward_fn, acc) -> dict[str, float]:
    """The starting model's validation metrics, kept in ``validation-start.json`` (read back on resume)."""
    from prefalign.atomic import write_json_atomic

    path = Path(config.run.output_dir) / "validation-start.json"
    if config.run.resume and path.exists():
        return json.loads(path.read_text())
    metrics = validation_objective(config, config.model, validation, 0, reward_fn, acc.device)
    if acc.is_main_process:
        write_json_atomic(path, metrics)
    return metrics


def _split(pairs: list[PreferencePair], config: IterativeDPOConfig, round_index: int) -> tuple[list, list]:
    from prefalign.data.sampling import train_test_split

    size = config.data.eval_size
    train, held_out = (
        (pairs, []) if size == 0 else train_test_split(pairs, int(size) if size >= 1 else size, seed=config.data.seed)
    )
    if len(train) < config.batch.global_batch_size:
        raise ValueError(
            f"round {round_index} gave {len(train)} training pairs, fewer than one global batch "
            f"({config.batch.global_batch_size}); use more prompts, a larger k or a smaller batch"
        )
    return train, held_out


def _finished_round(folder: Path) -> dict[str, Any] | None:
    marker = folder / "round.json"
    if marker.exists() and (folder / "model" / "config.json").exists():
        return json.loads(marker.read_text())
    return None


def run_iterative_dpo(
    config: IterativeDPOConfig, prompts: Sequence[Prompt] | None = None, reward_fn: RewardFunction | None = None
) -> dict[str, Any]:
    """Run the rounds; ``prompts`` / ``reward_fn`` override ``config.data`` / ``config.reward``.

    Returns (and writes to ``<output_dir>/results.json``) ``completed``, the per-round summaries
    (sampling rewards, pair counts and skips, the DPO results), ``model_dir`` and ``reward/final_mean``.
    """
    from prefalign.atomic import write_json_atomic
    from prefalign.config import save_yaml

    acc = make_accelerator(config.run)
    out = Path(config.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config, out / "config.yaml")
    report = None
    if prompts is None:
        prompts, report = load_prompts(config.data)
        if acc.is_main_process:
            publish_drop_report(report, out)  # the prompt rows dropped, each with file, line and field
    reward_fn = reward_fn if reward_fn is not None else build_reward(config.reward, acc.device)
    prompts, validation = split_validation(prompts, config.validation_prompts)
    watch = PlateauWatch(config.run.early_stop, "eval/objective", higher_is_better=True)
    if validation:
        watch.update_from(starting_validation(config, validation, reward_fn, acc), 0)
    model_cfg, history, steps_done, plateaued = config.model, [], 0, False
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
            if validation:
                trained = dataclasses.replace(config.model, name_or_path=str(folder / "model"), tokenizer=None)
                finished |= validation_objective(config, trained, validation, r, reward_fn, acc.device)
            if acc.is_main_process:
                write_json_atomic(folder / "round.json", finished)
                write_jsonl_atomic(out / "rounds.jsonl", history + [finished])
                console.print(
                    f"round {r}: mean sample reward {summary['reward/mean']:.4f}, {summary['pairs']} pairs, "
                    f"held-out accuracy {result.get('eval/rewards/accuracy', float('nan')):.3f}"
                    + (f", validation objective {finished['eval/objective']:.4f}" if validation else "")
                )
        history.append(finished)
        steps_done += int(finished["dpo"]["steps"])
        model_cfg = dataclasses.replace(config.model, name_or_path=str(folder / "model"), tokenizer=None)
        plateaued = watch.update_from(finished, r) and r < config.rounds
        if plateaued:
            if acc.is_main_process:
                console.print(f"eval/objective plateaued (run.early_stop): stopping after round {r} of {config.rounds}")
            break
    results: dict[str, Any] = {
        "completed": True,
        "rounds": history,
        "planned_rounds": config.rounds,
        "model_dir": model_cfg.name_or_path,
    }
    if validation:
        results["early_stop"] = watch.summary(plateaued) | {"validation": watch.points}
    if report is not None:
        results.update(drop_counts(report))
    if config.final_reward:
        samples = sample_round(config, model_cfg, prompts, len(history) + 1, reward_fn, acc)
        results["reward/final_mean"] = _mean([s.reward for s in samples])
        results["reward/initial_mean"] = history[0]["reward/mean"]
    if acc.is_main_process:
        write_json_atomic(out / "results.json", results)
    acc.wait_for_everyone()
    return results
