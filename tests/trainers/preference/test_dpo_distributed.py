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


def _uneven_micro_batch_counts(path: str) -> bool:
    """Whether, in some step, the two processes' shares cut into different numbers of micro-batches."""
    from prefalign.config import from_dict
    from prefalign.models.load import load_tokenizer
    from prefalign.trainers.common import BatchPlan, shard
    from prefalign.trainers.preference.batches import SHARED_PROMPT, encode_rankings, length_sorted_groups
    from prefalign.trainers.preference.dpo import load_training_records
    from prefalign.trainers.preference.dpo_config import DPOConfig

    config = from_dict(
        DPOConfig,
        {"model": {"name_or_path": "tiny-random"}, "data": {"source": path, "eval_size": 3, "max_length": 96}},
    )
    train_records, _, _ = load_training_records(config)
    train, _ = encode_rankings(load_tokenizer(config.model), train_records, 96, None)
    plan = BatchPlan(len(train), 8, config.run.seed, config.batch.epochs, None)
    counts = [
        [
            len(length_sorted_groups(train, shard(plan.step_indices(step), rank, 2), 4, 160, SHARED_PROMPT))
            for rank in (0, 1)
        ]
        for step in range(plan.total_steps)
    ]
    return any(a != b for a, b in counts)


COMMON = [
    "--model.name_or_path",
    "tiny-random",
    "--data.max_length",
    "96",
    "--optim.learning_rate",
    "3e-3",
    "--optim.warmup_ratio",
    "0",
    "--run.progress",
    "False",
    "--run.tensorboard",
    "False",
]


def test_dpo_two_processes_match_one(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [
        {
            "prompt": f"question {i}: " + "tell me " * (i % 4),
            "chosen": "yes indeed " * (1 + i % 3),
            "rejected": "0123 " * (1 + i % 5),
        }
        for i in range(28)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "dpo",
        *COMMON,
        "--data.source",
        str(data),
        "--data.eval_size",
        "4",
        "--batch.global_batch_size",
        "8",
        "--batch.micro_batch_size",
        "2",
        "--batch.epochs",
        "2",
    ]
    assert main([*args, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", *args, "--run.output_dir", str(tmp_path / "p2"))
    assert _max_diff(_weights(tmp_path / "p1" / "model"), _weights(tmp_path / "p2" / "model")) < 1e-5
    assert _losses(tmp_path / "p1") == pytest.approx(_losses(tmp_path / "p2"), abs=1e-5)
    r1, r2 = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("p1", "p2"))
    assert r1["eval_examples"] == r2["eval_examples"] == 4
    assert r1["eval/rewards/margin"] == pytest.approx(r2["eval/rewards/margin"], abs=1e-5)


def test_dpo_token_capped_micro_batches_may_differ_in_number_between_processes(tmp_path):
    """A token cap splits each process's share by its own lengths, so the processes run different numbers
    of micro-batches (and, with 3 held out, of evaluation batches); the run must neither hang nor change."""
    data = tmp_path / "pairs.jsonl"
    rows = [
        {
            "prompt": f"question {i}: " + "tell me more about it " * (3 * (i % 2)),
            "chosen": "yes indeed " * (1 + i % 3),
            "rejected": "0123 " * (1 + i % 5),
        }
        for i in range(19)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "dpo",
        *COMMON,
        "--data.source",
        str(data),
        "--data.eval_size",
        "3",
        "--batch.global_batch_size",
        "8",
        "--batch.micro_batch_size",
        "4",
        "--max_tokens_per_micro_batch",
        "160",
        "--eval_micro_batch_size",
        "1",
    ]
    assert _uneven_micro_batch_counts(str(data)), "the data must give the two processes different micro-batch counts"
    assert main([*args, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", *args, "--run.output_dir", str(tmp_path / "p2"), timeout=240)
    assert _max_diff(_weights(tmp_path / "p1" / "model"), _weights(tmp_path / "p2" / "model")) < 1e-5
    assert _losses(tmp_path / "p1") == pytest.approx(_losses(tmp_path / "p2"), abs=1e-5)
    r1, r2 = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("p1", "p2"))
    assert r1["eval/rewards/margin"] == pytest.approx(r2["eval/rewards/margin"], abs=1e-5)


def test_dpo_iter_two_processes_match_one(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"write {i}"}) + "\n" for i in range(12)))
    args = [
        "dpo-iter",
        *COMMON,
        "--data.source",
        str(data),
        "--rounds",
        "2",
        "--sampling.num_samples",
        "4",
        "--sampling.max_new_tokens",
        "6",
        "--generation_micro_batch_size",
        "8",
        "--batch.global_batch_size",
        "4",
        "--batch.micro_batch_size",
        "2",
        "--final_reward",
        "False",
    ]
    assert main([*args, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", *args, "--run.output_dir", str(tmp_path / "p2"))
    for r in ("round-01", "round-02"):
        assert (tmp_path / "p1" / r / "pairs.jsonl").read_text() == (tmp_path / "p2" / r / "pairs.jsonl").read_text()
    # two rounds of Adam at lr 3e-3 amplify float-summation differences a little
    assert (
        _max_diff(_weights(tmp_path / "p1" / "round-02" / "model"), _weights(tmp_path / "p2" / "round-02" / "model"))
        < 1e-4
    )
    assert _losses(tmp_path / "p1" / "round-02") == pytest.approx(_losses(tmp_path / "p2" / "round-02"), abs=1e-4)
