"""``prefalign rm --ensemble_size K``: K reward models trained alike into one ensemble folder.

Coste et al. (ICLR 2024, "Reward Model Ensembles Help Mitigate Overoptimization", section 4) train
the members of an ensemble on the same data from different seeds. Member i here is an ordinary
``prefalign rm`` run with ``run.seed = seed + i``, which changes both the initialisation of its
scalar head and the order of its training pairs (the batch plan is seeded by the run seed); the data
split (``data.seed``) is the same for every member, so their held-out accuracies compare.

Layout of ``run.output_dir``:

    member-0/ ... member-{K-1}/   each a full reward-model run folder (config.yaml, metrics.jsonl,
                                  checkpoints, model/)
    ensemble.json                 {"members": ["member-0/model", ...], "seeds": [...]}, written last
    results.json                  every member's results and their mean held-out accuracy

The folder is what the commands that read a reward take as the reward model (``reward.model`` of
``prefalign ppo``, ``dpo-iter``, ``eval-rm``), with ``ensemble`` choosing the combination
(:mod:`prefalign.rewards.ensemble`). The pairs are loaded once and given to every member; ``run.resume``
and ``run.overwrite`` apply to each member's folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import PartialState

from prefalign.atomic import write_json_atomic
from prefalign.data.config import load_pairs
from prefalign.data.schema import PreferencePair
from prefalign.rewards.ensemble import write_ensemble_manifest
from prefalign.trainers.logging import console


def member_config(config: Any, index: int) -> Any:
    """Member ``index`` of the ensemble: its own folder and seed, ensemble_size 1."""
    run = dataclasses.replace(
        config.run, output_dir=str(Path(config.run.output_dir) / f"member-{index}"), seed=config.run.seed + index
    )
    return dataclasses.replace(config, run=run, ensemble_size=1)


def run_reward_ensemble(
    config: Any,
    run_member: Callable[..., dict[str, Any]],
    pairs: tuple[list[PreferencePair], list[PreferencePair]] | None = None,
) -> dict[str, Any]:
    """Train ``config.ensemble_size`` members with ``run_member(member_config, pairs)`` (the reward-model trainer) and
    write the ensemble folder; returns (and writes) the summary."""
    out = Path(config.run.output_dir)
    if pairs is None:
        train, held_out, _ = load_pairs(config.data)
        pairs = (train, held_out)
    members, results = [], []
    for index in range(config.ensemble_size):
        member = member_config(config, index)
        console.print(f"reward-model ensemble: member {index + 1} of {config.ensemble_size} (seed {member.run.seed})")
        results.append(run_member(member, pairs))
        members.append(f"member-{index}/model")
    accuracies = [r["eval/accuracy"] for r in results if "eval/accuracy" in r]
    summary = {
        "ensemble_size": config.ensemble_size,
        "seeds": [config.run.seed + i for i in range(config.ensemble_size)],
        "members": results,
        "eval/accuracy_mean": sum(accuracies) / len(accuracies) if accuracies else None,
        "model_dir": str(out),
    }
    if PartialState().is_main_process:
        write_json_atomic(out / "results.json", summary)
        write_ensemble_manifest(out, members, {"seeds": summary["seeds"]})  # last: the folder is complete
    PartialState().wait_for_everyone()
    return summary
