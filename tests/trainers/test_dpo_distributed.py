"""`prefalign dpo` and `prefalign dpo-iter` in two CPU processes (accelerate launch, gloo) match one process."""

import json

import pytest
from safetensors.torch import load_file

from prefalign.cli import main

from tests.distributed import run_accelerate

pytestmark = [pytest.mark.distributed, pytest.mark.usefixtures("one_thread")]




def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _losses(path):
    return [json.loads(x)["loss"] for x in (path / "metrics.jsonl").read_text().splitlines()]


COMMON = ["--model.name_or_path", "tiny-random", "--data.max_length", "96", "--optim.learning_rate", "3e-3",
          "--optim.warmup_ratio", "0", "--run.progress", "False", "--run.tensorboard", "False"]


def test_dpo_two_processes_match_one(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"question {i}: " + "tell me " * (i % 4), "chosen": "yes indeed " * (1 + i % 3), "rejected": "0123 " * (1 + i % 5)}
            for i in range(28)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["dpo", *COMMON, "--data.source", str(data), "--data.eval_size", "4", "--batch.global_batch_size", "8",
            "--batch.micro_batch_size", "2", "--batch.epochs", "2"]
    assert main([*args, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", *args, "--run.output_dir", str(tmp_path / "p2"))
    assert _max_diff(_weights(tmp_path / "p1" / "model"), _weights(tmp_path / "p2" / "model")) < 1e-5
    assert _losses(tmp_path / "p1") == pytest.approx(_losses(tmp_path / "p2"), abs=1e-5)
    r1, r2 = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("p1", "p2"))
    assert r1["eval_examples"] == r2["eval_examples"] == 4
    assert r1["eval/rewards/margin"] == pytest.approx(r2["eval/rewards/margin"], abs=1e-5)


def test_dpo_iter_two_processes_match_one(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"write {i}"}) + "\n" for i in range(12)))
    args = ["dpo-iter", *COMMON, "--data.source", str(data), "--rounds", "2", "--sampling.num_samples", "4",
            "--sampling.max_new_tokens", "6", "--generation_micro_batch_size", "8", "--batch.global_batch_size", "4",
            "--batch.micro_batch_size", "2", "--final_reward", "False"]
    assert main([*args, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", *args, "--run.output_dir", str(tmp_path / "p2"))
    for r in ("round-01", "round-02"):
        assert (tmp_path / "p1" / r / "pairs.jsonl").read_text() == (tmp_path / "p2" / r / "pairs.jsonl").read_text()
    # two rounds of Adam at lr 3e-3 amplify float-summation differences a little
    assert _max_diff(_weights(tmp_path / "p1" / "round-02" / "model"), _weights(tmp_path / "p2" / "round-02" / "model")) < 1e-4
    assert _losses(tmp_path / "p1" / "round-02") == pytest.approx(_losses(tmp_path / "p2" / "round-02"), abs=1e-4)
