"""Ivison et al.'s ranking of factors on the tiny world (their Tables 1-3), ``full`` preset only.

From one base, **DPO on the standard preference pairs** (the study's ``dpo`` row), one factor changes
per row, every run in the ``preference`` testbed and scored like the main rows (held-out gold reward,
greedy, on the evaluation prompts):

=====================  ==========================================================================
factor                 setting (and what changes)
=====================  ==========================================================================
preference data        DPO on pairs from a **weaker generator**: the tiny world's pair generator
                       with ``ivison.weak_correct_rate`` instead of ``preference_correct_rate``
                       (same prompt distribution, same count, same Bradley-Terry labeller and
                       safety rule); the mean gold reward of each set's chosen responses is reported
algorithm              PPO (the study's ``ppo_ema`` row, its tuned learning rate and KL) on the
                       same data: its reward model is the seed's, trained on the standard pairs
reward-model size      that PPO with a **smaller reward model**: the SFT model cut to its first
                       ``ivison.small_rm_layers`` transformer layers (the head and embeddings kept),
                       then trained on the standard pairs exactly as the study's reward model; PPO's
                       critic starts from it, as in every preference-testbed PPO row
policy prompts         that PPO on **generic prompts** instead of prompts matched to the evaluation
                       distribution: drawn from a distribution that differs from the evaluation's
                       (only ``ivison.generic_operations``, unsafe share ``ivison.generic_unsafe_fraction``;
                       the evaluation has every operation and the world's unsafe share), as many as
                       the matched training prompts
=====================  ==========================================================================

The base and the PPO reference (standard reward model, matched prompts) are the study's own ``dpo``
and ``ppo_ema`` runs of the same seeds, so every delta is paired by seed: ``delta = gold(row) -
gold(reference)`` per seed, summarised with a 95% Student-t interval. "Δ vs base" compares with
DPO on the standard pairs; "Δ vs reference" compares with the factor's own other setting (the base
for data and algorithm, the PPO reference for reward-model size and prompts). The small reward model
is the cheaper of two sizes to build (a larger one would need its own pre-training and SFT).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.studies.comparison.summary import metric_range, summarize

TESTBED = "preference"
#: the PPO row of the algorithm, reward-model and prompt factors
PPO_ROW = "ppo_ema"
VARIANTS = ("weak_data", "small_rm", "generic_prompts")


@dataclass
class IvisonConfig:
    run: bool = False
    """Run the factor block (full preset); needs the dpo and ppo_ema rows and the preference testbed."""
    weak_correct_rate: float = 0.2
    """Share of correct answers of the weaker preference generator (the world's generator: preference_correct_rate)."""
    small_rm_layers: int = 1
    """Transformer layers of the smaller reward model (the first ones of the SFT model; fewer than the world's)."""
    generic_operations: list[str] = field(default_factory=lambda: ["sort", "reverse"])
    """Operations of the generic policy prompts (the evaluation prompts have all four)."""
    generic_unsafe_fraction: float = 0.0
    """Share of unsafe generic policy prompts (the evaluation prompts: the world's unsafe_fraction)."""

    def __post_init__(self) -> None:
        from prefalign.studies.comparison.tiny_world.task import OPERATIONS

        if not 0.0 <= self.weak_correct_rate <= 1.0:
            raise ValueError(f"ivison.weak_correct_rate must lie in [0, 1], got {self.weak_correct_rate}")
        if not 0.0 <= self.generic_unsafe_fraction <= 1.0:
            raise ValueError(f"ivison.generic_unsafe_fraction must lie in [0, 1], got {self.generic_unsafe_fraction}")
        bad = [op for op in self.generic_operations if op not in OPERATIONS]
        if bad or not self.generic_operations:
            raise ValueError(f"ivison.generic_operations {self.generic_operations}: choose from {list(OPERATIONS)}")
        if self.small_rm_layers < 1:
            raise ValueError(f"ivison.small_rm_layers must be at least 1, got {self.small_rm_layers}")


def check(config) -> None:
    """Clear errors for a block that cannot run with the study's settings."""
    missing = [m for m in ("dpo", PPO_ROW) if m not in config.methods]
    if missing:
        raise ValueError(f"ivison.run needs the methods {missing} (its base and its PPO reference)")
    if TESTBED not in config.testbeds:
        raise ValueError(f"ivison.run needs the {TESTBED} testbed")
    layers = config.world.model.num_layers
    if config.ivison.small_rm_layers >= layers:
        raise ValueError(
            f"ivison.small_rm_layers={config.ivison.small_rm_layers} must be below world.model.num_layers={layers}"
        )


def weak_world(world, correct_rate: float):
    """The world with its preference pairs (train and held-out) drawn from the weaker generator."""
    from prefalign.studies.comparison.tiny_world.data import preference_pairs

    data_config = dataclasses.replace(world.config.data, preference_correct_rate=correct_rate)
    data = dataclasses.replace(
        world.data,
        pairs_train=preference_pairs(data_config, data_config.preference_pairs, "preference"),
        pairs_held_out=preference_pairs(data_config, data_config.preference_held_out, "preference-held-out"),
    )
    return dataclasses.replace(world, data=data)


def chosen_gold(pairs) -> float:
    """Mean gold reward of the chosen responses (the data's quality by the gold task)."""
    from prefalign.studies.comparison.tiny_world.task import Problem, score_response

    return sum(score_response(Problem.from_metadata(p.metadata), p.chosen).reward for p in pairs) / len(pairs)


def truncated_model(source: Path, layers: int, output: Path) -> Path:
    """``source`` cut to its first ``layers`` transformer layers, saved (with its tokenizer) in ``output``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(source).save_pretrained(output)
    return output


def generic_prompt_file(config, world, seed_folder: Path) -> Path:
    """As many generic policy prompts as the matched training prompts, as a JSONL prompt file."""
    from prefalign.atomic import write_text_atomic
    from prefalign.studies.comparison.runner import policy_split
    from prefalign.studies.comparison.tiny_world.data import split_rng
    from prefalign.studies.comparison.tiny_world.task import sample_problem

    count = len(policy_split(world, config.tuning.validation_prompts)[0])
    rng, seen = split_rng(world.config.data.seed, "ivison-generic"), []
    for _ in range(1000 * count):
        if len(seen) == count:
            break
        problem = sample_problem(rng, config.ivison.generic_unsafe_fraction)
        if problem.operation in config.ivison.generic_operations and problem.text not in seen:
            seen.append(problem.text)
    if len(seen) < count:
        raise ValueError(
            f"ivison.generic_operations {config.ivison.generic_operations}: fewer than {count} distinct prompts"
        )
    path = seed_folder / "generic_prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(json.dumps({"prompt": text}) for text in seen) + "\n")
    return path


def job_ivison(config, world, seed: int, variant: str) -> dict[str, Any]:
    """One variant of one seed: its training run and its held-out evaluation."""
    from prefalign.studies.comparison.methods import train_offline, train_reward_model
    from prefalign.studies.comparison.online import train_ppo
    from prefalign.studies.comparison.runner import _evaluate, rm_dir, seed_dir, write_prompt_files

    out = seed_dir(config, seed) / "ivison" / variant
    extra: dict[str, Any] = {}
    if variant == "weak_data":
        weak = weak_world(world, config.ivison.weak_correct_rate)
        model_dir, train = train_offline(
            "dpo", weak, config.offline, out, seed, False, config.threads, config.convergence.early_stop()
        )
        extra = {
            "chosen_gold": chosen_gold(weak.data.pairs_train),
            "standard_chosen_gold": chosen_gold(world.data.pairs_train),
        }
    else:
        reward_dir, prompts = rm_dir(config, seed), write_prompt_files(config, world)
        if variant == "small_rm":
            from prefalign.studies.comparison.tiny_world.prepare import count_parameters

            base = truncated_model(world.sft_dir, config.ivison.small_rm_layers, out / "rm_base")
            reward_dir, summary = train_reward_model(
                dataclasses.replace(world, sft_dir=base),
                config.reward_model,
                out / "reward_model",
                seed,
                False,
                config.threads,
            )
            extra = {"reward_model": summary, "parameters": count_parameters(Path(reward_dir))}
            extra["standard_parameters"] = count_parameters(Path(rm_dir(config, seed)))
        elif variant == "generic_prompts":
            prompts = generic_prompt_file(config, world, out)
        else:
            raise ValueError(f"unknown ivison variant {variant!r}; choose from {list(VARIANTS)}")
        model_dir, train = train_ppo(
            PPO_ROW,
            world,
            config.ppo,  # as the study's own run (same checkpoints), so the factor is the only difference
            TESTBED,
            reward_dir,
            prompts,
            out / "ppo",
            seed=seed,
            progress=False,
            threads=config.threads,
            max_new_tokens=config.evaluation.max_new_tokens,
            early_stop=config.convergence.early_stop(),
        )
    metrics = _evaluate(config, world, model_dir, seed)["metrics"]
    return {"gold": float(metrics["gold/score"]), "metrics": metrics, "train": train, **extra}


def keys(config, seeds: list[int]) -> list[tuple]:
    if not config.ivison.run:
        return []
    return [("ivison", seed, variant) for variant in VARIANTS for seed in seeds]


def _delta(golds: list[float], reference: list[float]) -> tuple[list[float], dict[str, float]]:
    low, high = metric_range("gold/score")
    diffs = [a - b for a, b in zip(golds, reference)]
    return diffs, summarize(diffs, (low - high, high - low))


def table(config, per_seed: dict[int, Any], variants: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """The rows of the block (factor, setting, per-seed golds, gold summary, paired deltas) and what tells the two
    data sets and the two reward models apart (measured)."""
    seeds = sorted(per_seed)
    study_gold = lambda m: [float(per_seed[s]["testbeds"][TESTBED]["runs"][m]["metrics"]["gold/score"]) for s in seeds]  # noqa: E731
    own = lambda v, k: [variants[v][s][k] for s in seeds]  # noqa: E731
    accuracy = lambda runs: summarize([float(r.get("eval/accuracy", float("nan"))) for r in runs], (0.0, 1.0))  # noqa: E731
    data = {"standard_chosen_gold": own("weak_data", "standard_chosen_gold")[0]}
    data["weak_chosen_gold"] = own("weak_data", "chosen_gold")[0]
    rms = {"standard_parameters": own("small_rm", "standard_parameters")[0]}
    rms["small_parameters"] = own("small_rm", "parameters")[0]
    rms["standard_accuracy"] = accuracy([per_seed[s]["reward_model"] for s in seeds])
    rms["small_accuracy"] = accuracy(own("small_rm", "reward_model"))
    base, ppo = study_gold("dpo"), study_gold(PPO_ROW)
    iv, layers = config.ivison, config.world.model.num_layers
    standard = f"generator correct {config.world.data.preference_correct_rate:g}"
    rows = [
        ("base", f"DPO, standard pairs ({standard}; chosen gold {data['standard_chosen_gold']:.3f})", base, None),
        (
            "preference data",
            f"DPO, weaker generator (correct {iv.weak_correct_rate:g}; chosen gold {data['weak_chosen_gold']:.3f})",
            own("weak_data", "gold"),
            base,
        ),
        (
            "algorithm",
            f"PPO ({PPO_ROW}) on the same data (RM {layers} layers, {rms['standard_parameters']:,} parameters, "
            f"held-out accuracy {rms['standard_accuracy']['mean']:.3f}; matched prompts)",
            ppo,
            base,
        ),
        (
            "reward-model size",
            f"PPO, RM {iv.small_rm_layers} layer(s), {rms['small_parameters']:,} parameters, held-out accuracy "
            f"{rms['small_accuracy']['mean']:.3f}",
            own("small_rm", "gold"),
            ppo,
        ),
        (
            "policy prompts",
            f"PPO, generic prompts ({'/'.join(iv.generic_operations)} only, unsafe {iv.generic_unsafe_fraction:g}; "
            f"evaluation: every operation, unsafe {config.world.data.unsafe_fraction:g})",
            own("generic_prompts", "gold"),
            ppo,
        ),
    ]
    bounds = metric_range("gold/score")
    out = []
    for factor, setting, golds, reference in rows:
        row = {"factor": factor, "setting": setting, "gold_per_seed": golds, "gold": summarize(golds, bounds)}
        row["delta_vs_base_per_seed"], row["delta_vs_base"] = _delta(golds, base) if factor != "base" else (None, None)
        if reference is not None:
            row["delta_vs_reference_per_seed"], row["delta_vs_reference"] = _delta(golds, reference)
        out.append(row)
    # Ivison et al.'s ranking: the factors ordered by the size of their own effect (|mean delta vs reference|)
    ranked = sorted(out[1:], key=lambda r: -abs(r["delta_vs_reference"]["mean"]))
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    return {"testbed": TESTBED, "seeds": seeds, "rows": out, "data_quality": data, "reward_models": rms}


def run_ivison(config, per_seed: dict[int, Any], clock) -> dict[str, Any] | None:
    """Every variant over the seeds (after the study's own rows, whose dpo / ppo_ema runs are the references)."""
    from prefalign.studies.comparison.runner import job_label, run_jobs

    todo = keys(config, sorted(per_seed))
    if not todo:
        return None
    check(config)
    variants: dict[str, dict[int, dict]] = {}

    def done(key: tuple, result: dict, seconds: float) -> None:
        clock.record(job_label(key), seconds)
        variants.setdefault(key[2], {})[key[1]] = result

    run_jobs(config, todo, done, fn=job_ivison)
    return table(config, per_seed, variants)


def rows(results: dict[str, Any]) -> list[list[str]]:
    """The table of report.md (Ivison et al. Tables 1-3 layout)."""
    from prefalign.studies.comparison.findings import fmt

    block = results.get("ivison")
    if not block:
        return []
    return [
        [
            r["factor"],
            r["setting"],
            fmt(r["gold"]),
            fmt(r.get("delta_vs_base")),
            fmt(r.get("delta_vs_reference")),
            str(r.get("rank", "-")),
        ]
        for r in block["rows"]
    ]


HEADER = [
    "factor",
    "setting",
    "gold",
    "Δ vs base (DPO, standard pairs)",
    "Δ vs the factor's reference",
    "rank by |Δ vs reference|",
]
TITLE = (
    "Ivison et al. Tables 1-3 layout: factors from one base (preference testbed); held-out gold, paired deltas "
    "over seeds with 95% intervals"
)
