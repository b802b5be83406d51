"""Reward-model trainer on a tiny random model: it learns a separable preference; CLI smoke run."""

import json

from prefalign.cli import main
from prefalign.config import from_dict
from prefalign.data.schema import PreferencePair, user_prompt
from prefalign.trainers.reward_model import RewardModelConfig, run_reward_model


def _pairs(n, offset=0):
    # chosen answers politely with "yes"; rejected says "no!!"; a learnable, unambiguous preference
    return [PreferencePair(user_prompt(f"question {i + offset}"), f"yes {i % 3}", f"no!! {i % 3}") for i in range(n)]


def _config(tmp_path, **batch):
    return from_dict(
        RewardModelConfig,
        {
            "model": {"name_or_path": "tiny-random"},
            "data": {"max_length": 64},
            "batch": {"global_batch_size": 8, "micro_batch_size": 4, "epochs": 4.0, **batch},
            "optim": {"learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_ratio": 0.0},
            "run": {"output_dir": str(tmp_path / "rm"), "progress": False, "tensorboard": False},
        },
    )


def test_reward_model_learns_a_separable_preference(tmp_path):
    results = run_reward_model(_config(tmp_path), (_pairs(32), _pairs(16, offset=100)))
    assert results["eval/accuracy"] == 1.0
    assert results["eval/margin"] > results["initial_eval/margin"] + 0.5
    assert results["eval/loss"] < results["initial_eval/loss"]
    rows = [json.loads(x) for x in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "accuracy", "margin", "lr", "grad_norm"} <= set(rows[0])


def test_rm_command_on_real_hh_rlhf(tmp_path, capsys):
    code = main(
        [
            "rm",
            "--model.name_or_path",
            "tiny-random",
            "--data.num_examples",
            "40",
            "--data.eval_size",
            "8",
            "--data.max_length",
            "64",
            "--batch.global_batch_size",
            "8",
            "--batch.micro_batch_size",
            "8",
            "--run.output_dir",
            str(tmp_path / "cli"),
            "--run.progress",
            "False",
            "--run.tensorboard",
            "False",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert results["eval_pairs"] == 8 and 0.0 <= results["eval/accuracy"] <= 1.0
    assert "dropped" in capsys.readouterr().err  # the drop report of the real file is printed


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "rm",
            "--model.name_or_path",
            "tiny-random",
            "--data.source",
            str(tmp_path / "nope.jsonl"),
            "--run.output_dir",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "nope.jsonl" in capsys.readouterr().err
