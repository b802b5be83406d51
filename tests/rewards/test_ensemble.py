"""Reward-model ensembles: the combinations against their formulas, training K members into one folder with
`prefalign rm`, loading that folder (token and text paths, one tokenisation), bad folders, and every reader of a
reward (PPO, DPO-Iter labelling, eval-rm) taking the folder with its combination."""

from __future__ import annotations

import json

import pytest
import torch

from prefalign.cli import main
from prefalign.config import ConfigError, from_dict
from prefalign.data.schema import Prompt, user_prompt
from prefalign.models.load import ModelConfig, load_reward_model, load_tokenizer, save_model
from prefalign.rewards.ensemble import (
    EnsembleReward,
    combine_member_scores,
    ensemble_members,
    load_learned_reward,
    write_ensemble_manifest,
)
from prefalign.rewards.learned import LearnedReward
from prefalign.trainers.reward_model import RewardModelConfig


def test_combinations_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, generator=g, dtype=torch.float64)
    lam = 0.7
    for b in range(5):
        column = [scores[i, b].item() for i in range(3)]
        mean = sum(column) / 3
        var = sum((x - mean) ** 2 for x in column) / 3  # over members, divided by K (Coste et al.)
        assert combine_member_scores(scores, "mean")[b].item() == pytest.approx(mean)
        assert combine_member_scores(scores, "wco")[b].item() == pytest.approx(min(column))
        assert combine_member_scores(scores, "uwo", lam)[b].item() == pytest.approx(mean - lam * var)
        unbiased = sum((x - mean) ** 2 for x in column) / 2
        assert combine_member_scores(scores, "uwo", lam, unbiased=True)[b].item() == pytest.approx(
            mean - lam * unbiased
        )
    agree = torch.full((4, 2), 1.5)  # members that agree: every rule gives their score
    for rule in ("mean", "wco", "uwo"):
        assert torch.equal(combine_member_scores(agree, rule, 2.0), torch.full((2,), 1.5))
    with pytest.raises(ValueError, match="ensemble rule must be one of"):
        combine_member_scores(scores, "max")


def _ensemble_folder(tmp_path, seeds=(1, 2, 3)):
    folder = tmp_path / "ensemble"
    tokenizer = load_tokenizer(ModelConfig("tiny-random"))
    for i, seed in enumerate(seeds):
        save_model(
            load_reward_model(ModelConfig("tiny-random"), seed=seed), tokenizer, folder / f"member-{i}" / "model"
        )
    write_ensemble_manifest(folder, [f"member-{i}/model" for i in range(len(seeds))])
    return folder


def _texts():
    prompts = [Prompt(user_prompt(f"question {i}")) for i in range(5)]
    return prompts, ["yes", "no!!", "a longer answer here", "ok", "maybe so"]


def test_loading_an_ensemble_folder_scores_every_member_on_one_encoding(tmp_path):
    folder = _ensemble_folder(tmp_path)
    ensemble = load_learned_reward(ModelConfig(str(folder)), "cpu", 2, rule="uwo", uwo_lambda=0.3)
    assert isinstance(ensemble, EnsembleReward) and len(ensemble.members) == 3 and ensemble.shared
    prompts, responses = _texts()
    alone = torch.stack(
        [load_learned_reward(ModelConfig(str(p)), "cpu", 4)(prompts, responses) for p in ensemble_members(folder)]
    )  # (K, B): each member on its own
    members = ensemble.member_scores(prompts, responses)
    assert torch.allclose(members, alone, atol=1e-5)
    assert not torch.allclose(members[0], members[1])  # different seeds, different heads
    assert torch.allclose(ensemble(prompts, responses), combine_member_scores(alone, "uwo", 0.3), atol=1e-5)
    # the token path (PPO's) gives the same as the text path
    first = ensemble.members[0]
    rows = [first.encode(p, r) for p, r in zip(prompts, responses)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    assert torch.allclose(ensemble.score_tokens(ids, mask), ensemble(prompts, responses), atol=1e-5)
    # a plain folder still loads as one model
    assert isinstance(load_learned_reward(ModelConfig(str(ensemble_members(folder)[0])), "cpu", 2), LearnedReward)


def test_a_bad_ensemble_folder_gives_a_clear_error(tmp_path):
    folder = _ensemble_folder(tmp_path, seeds=(1,))
    manifest = folder / "ensemble.json"
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match=r"ensemble\.json: not a readable ensemble manifest"):
        load_learned_reward(ModelConfig(str(folder)), "cpu", 2)
    manifest.write_text(json.dumps({"members": []}))
    with pytest.raises(ValueError, match="non-empty list of member folders"):
        load_learned_reward(ModelConfig(str(folder)), "cpu", 2)
    manifest.write_text(json.dumps({"members": ["member-0/model", "member-7/model"]}))
    with pytest.raises(ValueError, match=r"member 'member-7/model' is not a model folder"):
        load_learned_reward(ModelConfig(str(folder)), "cpu", 2)


@pytest.mark.slow
def test_rm_command_trains_members_with_their_own_seeds_into_one_ensemble_folder(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"question {i}", "chosen": f"yes {i % 3}", "rejected": f"no!! {i % 3}"} for i in range(24)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    args = ["rm", "--model.name_or_path", "tiny-random", "--data.source", str(pairs), "--data.eval_size", "8"]
    args += ["--data.max_length", "64", "--batch.global_batch_size", "8", "--batch.micro_batch_size", "8"]
    args += ["--run.output_dir", str(out), "--run.progress", "False", "--run.tensorboard", "False"]
    assert main([*args, "--ensemble_size", "2", "--run.seed", "5"]) == 0
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest == {"members": ["member-0/model", "member-1/model"], "seeds": [5, 6]}
    results = json.loads((out / "results.json").read_text())
    assert all((out / f"member-{i}" / name).exists() for i in range(2) for name in ("config.yaml", "metrics.jsonl"))
    assert results["ensemble_size"] == 2 and len(results["members"]) == 2
    ensemble = load_learned_reward(ModelConfig(str(out)), "cpu", 4, rule="wco")
    prompts, responses = _texts()
    members = ensemble.member_scores(prompts, responses)
    assert not torch.allclose(members[0], members[1])
    assert torch.equal(ensemble(prompts, responses), members.min(dim=0).values)
    with pytest.raises(ConfigError, match="ensemble_size must be >= 1"):
        from_dict(RewardModelConfig, {"ensemble_size": 0})


def test_ppo_dpo_iter_and_eval_rm_read_the_folder_with_their_combination(tmp_path):
    from tests.trainers.ppo.helpers import tiny_config

    from prefalign.evaluation.reward_model_eval import RewardModelEvalConfig, build_scorer
    from prefalign.trainers.ppo.setup import _critic_source
    from prefalign.trainers.ppo.setup import build_scorer as ppo_scorer
    from prefalign.trainers.preference.iterative_config import IterRewardConfig
    from prefalign.trainers.preference.labelling import build_reward

    folder = _ensemble_folder(tmp_path)
    prompts, responses = _texts()
    members = load_learned_reward(ModelConfig(str(folder)), "cpu", 4).member_scores(prompts, responses)
    wco, uwo = members.min(dim=0).values, combine_member_scores(members, "uwo", 2.0)

    reward = {"kind": "model", "model": {"name_or_path": str(folder)}, "ensemble": "wco"}
    config = tiny_config(tmp_path / "ppo", {"reward": reward, "critic_init": "reward"})
    scorer = ppo_scorer(config, load_tokenizer(config.policy), torch.device("cpu"))
    ((_, learned, token_path),) = scorer.parts
    assert isinstance(learned, EnsembleReward) and token_path  # same tokenizer as the policy: one token pass
    assert torch.allclose(learned(prompts, responses), wco, atol=1e-5)
    assert _critic_source(config).name_or_path == str(folder / "member-0" / "model")

    labeller = build_reward(
        IterRewardConfig(kind="model", model=ModelConfig(str(folder)), ensemble="uwo", uwo_lambda=2.0)
    )
    assert torch.allclose(labeller(prompts, responses), uwo, atol=1e-5)

    eval_config = RewardModelEvalConfig(reward_model=ModelConfig(str(folder)), ensemble="wco", device="cpu")
    assert torch.allclose(build_scorer(eval_config)(prompts, responses), wco, atol=1e-5)
    with pytest.raises(ValueError, match=r"reward\.ensemble must be one of"):
        from_dict(IterRewardConfig, {"ensemble": "max"})
