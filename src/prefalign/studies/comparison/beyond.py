"""Study rows beyond the two papers: critic-free PPO (GRPO, RLOO) and PPO on a reward-model ensemble.

==============  ===================================================================================
method          what changes from ``ppo_ema`` (the Table 3 row with all three of Xu et al.'s factors)
==============  ===================================================================================
``ppo_grpo``    ``ppo.advantage_estimator grpo`` (Shao et al. 2024): no critic; ``ppo.group_size``
                responses per prompt, the rollout batch unchanged (so fewer prompts per step)
``ppo_rloo``    ``ppo.advantage_estimator rloo`` (Ahmadian et al. 2024), the same groups
``ppo_uwo``     reward = the seed's reward-model ensemble combined by UWO (Coste et al. 2024: mean
                minus ``ppo.uwo_lambda`` times the variance over members); preference testbed only
``ppo_wco``     the same ensemble combined by WCO (the minimum over members); preference testbed only
==============  ===================================================================================

Departure: the critic-free rows keep the row's advantage whitening (so the four rows differ from
``ppo_ema`` in the estimator alone); GRPO's group normalisation comes first, then the batch whitening
is a no-op for it (see ``ppo.advantage_normalization``).

The ensemble of a seed (``seed-k/reward_ensemble``, beside ``seed-k/reward_model``) has
``ppo.ensemble_members`` members: the seed's own reward model (member 0, which also initialises the
critic, as for every preference-testbed PPO row) and ``ensemble_members - 1`` more trained exactly
alike with seeds ``seed + 1000 * i`` (head initialisation and data order; Coste et al. train the
members of an ensemble from different seeds). It is trained in the study's first phase. The
evaluation's learned-reward score ("rm") stays the seed's single reward model, so the
over-optimisation plot compares every row against one proxy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefalign.rewards.ensemble import write_ensemble_manifest

#: study method -> critic-free advantage estimator
CRITIC_FREE_ROWS = {"ppo_grpo": "grpo", "ppo_rloo": "rloo"}
#: study method -> ensemble combination
ENSEMBLE_ROWS = {"ppo_uwo": "uwo", "ppo_wco": "wco"}
#: methods that run only in some testbeds (the others run in every testbed)
ONLY_IN = {"ppo_uwo": ("preference",), "ppo_wco": ("preference",)}
#: the rows of the ensemble over-optimisation plot: without the ensemble, then with it
ENSEMBLE_PLOT = ("ppo_ema", "ppo_uwo", "ppo_wco")


def runs_in(method: str, testbed: str) -> bool:
    return testbed in ONLY_IN.get(method, (testbed,))


def ensemble_dir(reward_model_dir: str | Path) -> Path:
    """The seed's ensemble folder beside its reward model: ``.../reward_model/model`` -> ``.../reward_ensemble``."""
    return Path(reward_model_dir).parent.parent / "reward_ensemble"


def adapt_ppo_config(method: str, config: Any, stage: Any, reward_model_dir: str | None) -> Any:
    """The PPO config of ``method`` from its Table 3 row's config (unchanged for the papers' rows); a new row runs in
    its own folder beside the row's (``.../ppo/<method>``)."""
    if method not in CRITIC_FREE_ROWS and method not in ENSEMBLE_ROWS:
        return config
    run = dataclasses.replace(config.run, output_dir=str(Path(config.run.output_dir).parent / method))
    config = dataclasses.replace(config, run=run)
    if method in CRITIC_FREE_ROWS:
        # no critic, so nothing to normalise: the stage's value normalisation (the full preset's) is for critics
        ppo = dataclasses.replace(config.ppo, advantage_estimator=CRITIC_FREE_ROWS[method], value_normalization=False)
        sampling = dataclasses.replace(config.sampling, num_samples=stage.group_size)
        return dataclasses.replace(config, ppo=ppo, sampling=sampling)
    if reward_model_dir is None:
        raise ValueError(f"{method} runs in the preference testbed only (it needs the seed's reward models)")
    folder = ensemble_dir(reward_model_dir)
    if not (folder / "ensemble.json").is_file():
        raise FileNotFoundError(f"{method} needs the seed's reward-model ensemble in {folder} (the study trains it)")
    model = dataclasses.replace(config.reward.model, name_or_path=str(folder))
    reward = dataclasses.replace(
        config.reward, model=model, ensemble=ENSEMBLE_ROWS[method], uwo_lambda=stage.uwo_lambda
    )
    return dataclasses.replace(config, reward=reward)


def train_reward_ensemble(
    world, stage, members: int, reward_model_dir: str, seed: int, progress: bool, threads: int | None
) -> dict[str, Any]:
    """Members 1..members-1 of the seed's ensemble (member 0: its reward model), and the folder's manifest."""
    from prefalign.studies.comparison.methods import train_reward_model

    out = ensemble_dir(reward_model_dir)
    summaries, paths = [], [str(Path("..") / Path(reward_model_dir).parent.name / Path(reward_model_dir).name)]
    for i in range(1, members):
        _, summary = train_reward_model(world, stage, out / f"member-{i}", seed + 1000 * i, progress, threads)
        summaries.append(summary)
        paths.append(f"member-{i}/model")
    write_ensemble_manifest(out, paths, {"seeds": [seed] + [seed + 1000 * i for i in range(1, members)]})
    return {"members": members, "extra_members": summaries}
