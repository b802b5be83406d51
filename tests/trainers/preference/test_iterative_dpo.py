"""Iterative DPO: pairing rules, the canonical-solution fallback, rounds on a tiny model, exact resume."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from prefalign.config import from_dict
from prefalign.data.schema import Prompt, user_prompt
from prefalign.trainers.preference.iterative import (
    IterativeDPOConfig,
    Sample,
    form_pairs,
    read_pairs,
    run_iterative_dpo,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, name="iter", **overrides):
    base = {
        "model": {"name_or_path": "tiny-random"},
        "data": {"max_length": 64},
        "reward": {"kind": "task", "task": "char_fraction:abcdefghijklmnopqrstuvwxyz"},
        "sampling": {"temperature": 1.0, "num_samples": 4, "max_new_tokens": 8},
        "rounds": 2,
        "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 4.0},
        "optim": {"learning_rate": 1e-2, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "progress": False, "tensorboard": False},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return from_dict(IterativeDPOConfig, base)


def _prompts(n=16):
    return [Prompt(user_prompt(f"write {i}")) for i in range(n)]


def _samples(prompt_index, rewards, texts=None, ended=None):
    texts = texts or [f"response {prompt_index}-{j}" for j in range(len(rewards))]
    ended = ended or [True] * len(rewards)
    return [Sample(prompt_index, j, t, e, float(r)) for j, (t, r, e) in enumerate(zip(texts, rewards, ended))]


# ----------------------------------------------------------------------------- pairing


def test_best_vs_worst_and_best_vs_rest(tmp_path):
    prompts = _prompts(2)
    samples = _samples(0, [0.1, 0.9, 0.5, 0.2]) + _samples(1, [0.3, 0.3, 0.7, 0.0], ended=[True, True, False, True])
    skipped = {}
    pairs = form_pairs(prompts, samples, _config(tmp_path), 1, skipped)
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("response 0-1", "response 0-0"),
        ("response 1-2", "response 1-3"),
    ]
    assert pairs[1].metadata["chosen_truncated"] is True and pairs[1].metadata["rejected_truncated"] is False
    assert pairs[0].metadata["score_chosen"] == pytest.approx(0.9) and pairs[0].metadata[
        "score_rejected"
    ] == pytest.approx(0.1)
    assert skipped == {}
    rest = form_pairs(prompts, samples, _config(tmp_path, pairing="best_vs_rest"), 1, {})
    assert [p.rejected for p in rest[:3]] == ["response 0-2", "response 0-3", "response 0-0"]
    assert len(rest) == 6


def test_ties_and_empty_samples_are_never_paired(tmp_path):
    prompts = _prompts(3)
    samples = (
        _samples(0, [0.5, 0.5, 0.5, 0.5])
        + _samples(1, [0.9, 0.1, 0.0, 0.2], texts=["good", "bad", "  ", ""])
        + _samples(2, [0.4, 0.0, 0.0, 0.0], texts=["only", "", "", ""])
    )
    skipped = {}
    pairs = form_pairs(prompts, samples, _config(tmp_path), 1, skipped)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad")]
    assert skipped == {"all samples tie": 1, "empty sample": 5, "fewer than two non-empty samples": 1}


def test_canonical_solution_is_chosen_when_no_sample_passes(tmp_path):
    prompts = [
        Prompt(user_prompt("add"), {"canonical_solution": "def add(a, b):\n    return a + b", "task_id": "t0"}),
        Prompt(user_prompt("sub"), {"canonical_solution": "def sub(a, b):\n    return a - b"}),
        Prompt(user_prompt("mul")),
    ]
    samples = (
        _samples(0, [0.0, 0.0, 0.0, 0.0]) + _samples(1, [10.0, 0.0, 0.0, 10.0]) + _samples(2, [0.0, 0.0, 0.0, 0.0])
    )
    skipped = {}
    pairs = form_pairs(prompts, samples, _config(tmp_path, pass_threshold=10.0), 1, skipped)
    assert pairs[0].chosen.startswith("def add") and pairs[0].rejected == "response 0-3"
    assert pairs[0].metadata["chosen_source"] == "canonical" and pairs[0].metadata["task_id"] == "t0"
    assert (
        pairs[1].chosen == "response 1-0" and pairs[1].metadata["chosen_source"] == "sample"
    )  # one passed: no fallback
    assert len(pairs) == 2 and skipped == {"all samples tie": 1}  # no canonical solution for "mul"
    every = form_pairs(prompts[:1], samples[:4], _config(tmp_path, pass_threshold=10.0, pairing="best_vs_rest"), 1, {})
    assert len(every) == 4 and {p.chosen for p in every} == {prompts[0].metadata["canonical_solution"]}


# ----------------------------------------------------------------------------- rounds


def test_rounds_raise_the_reward_and_chain_the_reference(tmp_path):
    # 32 prompts x 8 samples at lr 3e-2: the reward rose by 0.36-0.82 over run seeds 0-5 (16 x 4 at 1e-2: -0.01 to
    # 0.18 with either sampler, too little signal for a test)
    config = _config(tmp_path, sampling={"num_samples": 8}, optim={"learning_rate": 3e-2})
    results = run_iterative_dpo(config, prompts=_prompts(32))
    out = tmp_path / "iter"
    assert results["completed"] and len(results["rounds"]) == 2
    for r in (1, 2):
        folder = out / f"round-{r:02d}"
        pairs = read_pairs(folder / "pairs.jsonl")
        assert len(pairs) == results["rounds"][r - 1]["pairs"] > 0
        assert all(p.metadata["round"] == r for p in pairs)
        assert len((folder / "samples.jsonl").read_text().splitlines()) == 32 * 8
        first = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
        assert first["loss"] == pytest.approx(math.log(2.0), abs=1e-5)  # each round starts at its own reference
    assert (
        "round-01/model" in (out / "round-02" / "config.yaml").read_text()
    )  # round 2's policy and reference = round 1's result
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 2
    assert results["reward/final_mean"] > results["reward/initial_mean"] + 0.1


def test_a_run_interrupted_in_round_two_resumes_exactly(tmp_path, monkeypatch):
    from prefalign.trainers.logging import MetricLogger

    run_iterative_dpo(_config(tmp_path, "full", final_reward=False), prompts=_prompts())
    original_log = MetricLogger.log
    calls = {"n": 0}

    def killed_in_round_two(self, step, metrics, **kw):
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # round 1 has 8 steps; die after round 2's third update, before it is logged
            raise KeyboardInterrupt
        return original_log(self, step, metrics, **kw)

    monkeypatch.setattr(MetricLogger, "log", killed_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run_iterative_dpo(_config(tmp_path, "part", final_reward=False, run={"save_every": 2}), prompts=_prompts())
    monkeypatch.setattr(MetricLogger, "log", original_log)
    round_one_pairs = (tmp_path / "part" / "round-01" / "pairs.jsonl").read_text()
    results = run_iterative_dpo(
        _config(tmp_path, "part", final_reward=False, run={"save_every": 2, "resume": True}), prompts=_prompts()
    )
    assert results["completed"]
    assert (tmp_path / "part" / "round-01" / "pairs.jsonl").read_text() == round_one_pairs
    for name in ("round-01/model", "round-02/model"):
        a = load_file(str(tmp_path / "full" / name / "model.safetensors"))
        b = load_file(str(tmp_path / "part" / name / "model.safetensors"))
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    rows = [json.loads(x) for x in (tmp_path / "part" / "round-02" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_stop_after_steps_counts_over_rounds(tmp_path):
    stopped = run_iterative_dpo(_config(tmp_path, final_reward=False, stop_after_steps=10), prompts=_prompts())
    assert (
        stopped == {"completed": False, "stopped_in_round": 2, "rounds": stopped["rounds"]}
        and len(stopped["rounds"]) == 1
    )
    checkpoint = (tmp_path / "iter" / "round-02" / "checkpoints" / "latest").read_text()
    assert checkpoint == "step-00000002"
    done = run_iterative_dpo(_config(tmp_path, final_reward=False, run={"resume": True}), prompts=_prompts())
    assert done["completed"] and [r["dpo"]["steps"] for r in done["rounds"]] == [8, 8]


def test_code_reward_with_canonical_fallback_end_to_end(tmp_path):
    """Unit-test reward (10 for passing); the tiny random model never passes, so every chosen response is canonical."""
    from prefalign.rewards.code import AssertTests
    from prefalign.trainers.preference.iterative import build_reward

    tests = AssertTests(("assert add(2, 3) == 5",)).to_dict()
    solution = "def add(a, b):\n    return a + b\n"
    prompts = [
        Prompt(
            user_prompt(f"Write add ({i})."), {"hidden_tests": tests, "tests": tests, "canonical_solution": solution}
        )
        for i in range(8)
    ]
    reward = build_reward(from_dict(IterativeDPOConfig, {"reward": {"kind": "code"}}).reward)
    assert reward(prompts[:2], [solution, "def add(a, b): return a - b"]).tolist() == [10.0, 0.0]
    cfg = _config(
        tmp_path,
        "code",
        reward={"kind": "code"},
        pass_threshold=10.0,
        rounds=1,
        final_reward=False,
        sampling={"num_samples": 2},
        batch={"epochs": 1.0},
    )
    results = run_iterative_dpo(cfg, prompts=prompts)
    summary = results["rounds"][0]
    assert summary["reward/mean"] == 0.0 and summary["pairs"] == summary["pairs_from_canonical"] == 8
    pairs = read_pairs(tmp_path / "code" / "round-01" / "pairs.jsonl")
    assert all(p.chosen == solution and p.metadata["score_chosen"] == 10.0 for p in pairs)


def test_learned_and_summed_rewards_score_text():
    from prefalign.models.load import ModelConfig
    from prefalign.rewards.base import SumOfRewards
    from prefalign.trainers.preference.iterative import IterRewardConfig, build_reward

    cfg = IterRewardConfig(
        kind="sum", model=ModelConfig(name_or_path="tiny-random"), task="char_fraction:ab", task_weight=2.0
    )
    reward = build_reward(cfg)
    assert isinstance(reward, SumOfRewards)
    scores = reward(_prompts(3), ["ab", "xyz", "a"])
    learned = build_reward(IterRewardConfig(kind="model", model=ModelConfig(name_or_path="tiny-random")))(
        _prompts(3), ["ab", "xyz", "a"]
    )
    assert torch.allclose(scores, learned + 2.0 * torch.tensor([1.0, 0.0, 1.0]), atol=1e-6)


def test_code_problems_load_with_tests_and_a_passing_canonical_solution():
    from prefalign.data.config import DataConfig
    from prefalign.trainers.preference.iterative import IterRewardConfig, build_reward, canonical_solution, load_prompts

    prompts, report = load_prompts(DataConfig(source="mbpp", options={"split": "train"}, num_examples=3))
    assert len(prompts) == 3 and report.kept == 374
    solutions = [canonical_solution(p, ["canonical_solution"]) for p in prompts]
    assert build_reward(IterRewardConfig(kind="code"))(prompts, solutions).tolist() == [10.0, 10.0, 10.0]


def test_pair_files_round_trip_and_malformed_lines_name_file_line_and_field(tmp_path):
    from prefalign.data.schema import DataError, PreferencePair, user_prompt
    from prefalign.trainers.preference.data import write_pairs

    pairs = [
        PreferencePair(user_prompt("q1"), "good", "bad", {"round": 1}),
        PreferencePair(user_prompt("q2"), "a", "b", {}),
    ]
    path = write_pairs(tmp_path / "pairs.jsonl", pairs)
    assert read_pairs(path) == pairs

    good = path.read_text().splitlines()[0]
    for bad_line, expected in [
        ("{not json", r"pairs.jsonl, line 2: not JSON"),
        ('{"prompt": [], "chosen": "x"}', r"line 2, field 'rejected': missing"),
        ('{"prompt": [{"role": "user"}], "chosen": "x", "rejected": "y"}', r"line 2, field 'prompt.content'"),
        ("[1, 2]", r"line 2: expected a JSON object"),
    ]:
        path.write_text(good + "\n" + bad_line + "\n")
        with pytest.raises(DataError, match=expected):
            read_pairs(path)


def test_dropped_prompt_rows_are_reported_in_the_run_folder(tmp_path):
    """A prompt file with bad rows: every valid prompt is used, every dropped row is in dropped.jsonl with its
    line and field, and results.json counts them (as the other trainers do)."""
    data = tmp_path / "prompts.jsonl"
    good = [json.dumps({"prompt": f"write {i}"}).encode() for i in range(16)]
    data.write_bytes(b"\n".join([*good[:5], b'{"prompt": "\xff"}', *good[5:], b'{"text": "no prompt"}']) + b"\n")
    config = _config(tmp_path, data={"source": str(data)}, rounds=1, final_reward=False)
    results = run_iterative_dpo(config)
    dropped = [json.loads(line) for line in (tmp_path / "iter" / "dropped.jsonl").read_text().splitlines()]
    assert [(row["line"], row["field"]) for row in dropped] == [(6, "prompt"), (18, "prompt")]
    assert all(row["source"] == str(data) for row in dropped)
    assert results["kept_rows"] == 16 and results["dropped_rows"] == 2
    assert results["rounds"][0]["prompts"] == 16


def test_validation_prompts_are_held_out_and_the_rounds_stop_on_a_flat_validation_objective(tmp_path):
    flat = {"patience": 2, "rel_tol": 0.0, "abs_tol": 1e9}  # every change counts as flat: stop after round 2
    config = _config(tmp_path, rounds=5, validation_prompts=4, run={"early_stop": flat})
    results = run_iterative_dpo(config, prompts=_prompts(20))
    out = tmp_path / "iter"
    assert len(results["rounds"]) == 2 and results["planned_rounds"] == 5 and results["completed"]
    assert results["early_stop"]["stopped_early"] and results["early_stop"]["objective"] == "eval/objective"
    steps = [s for s, _ in results["early_stop"]["validation"]]
    assert steps == [0, 1, 2] and not (out / "round-03").exists()
    assert results["model_dir"].endswith("round-02/model")
    start = json.loads((out / "validation-start.json").read_text())
    assert start["eval/kl"] == 0.0 and start["eval/objective"] == start["eval/reward"]  # its own reference
    assert results["early_stop"]["validation"][0][1] == pytest.approx(start["eval/objective"])
    for r in (1, 2):
        row = json.loads((out / f"round-{r:02d}" / "round.json").read_text())
        assert 0.0 <= row["eval/reward"] <= 1.0 and row["eval/kl"] != 0.0  # trained at lr 1e-2: it has moved
        assert row["eval/objective"] == pytest.approx(row["eval/reward"] - config.beta * row["eval/kl"])
        assert results["early_stop"]["validation"][r][1] == pytest.approx(row["eval/objective"])
        sampled = {
            json.loads(x)["prompt_index"] for x in (out / f"round-{r:02d}" / "samples.jsonl").read_text().splitlines()
        }
        assert sampled == set(range(16))  # the last 4 prompts are never sampled for pairs


def test_early_stopping_without_validation_prompts_is_refused(tmp_path):
    with pytest.raises(ValueError, match="validation_prompts > 0"):
        _config(tmp_path, run={"early_stop": {"patience": 2}})
