"""SFT end to end on a tiny random model: learning, resume, micro-batching and 2-process invariance."""

import json

import pytest
import torch
from safetensors.torch import load_file

from prefalign.cli import main
from prefalign.config import from_dict
from prefalign.data.schema import SFTExample, user_prompt
from prefalign.trainers.sft import SFTConfig, run_sft
from tests.distributed import run_accelerate


def _examples(n):
    return [SFTExample(user_prompt(f"say {i % 5}"), f"number {i % 5} ok") for i in range(n)]


def _config(tmp_path, name, **overrides):
    base = {
        "model": {"name_or_path": "tiny-random"},
        "data": {"max_length": 64},
        "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 1.0},
        "optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "progress": False, "tensorboard": False},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return from_dict(SFTConfig, base)


def _weights(path):
    return load_file(str(path / "model" / "model.safetensors"))


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_sft_learns_the_responses(tmp_path):
    cfg = _config(tmp_path, "learn", batch={"epochs": 6.0})
    results = run_sft(cfg, (_examples(32), _examples(8)))
    rows = [json.loads(line) for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    assert rows[-1]["loss"] < 0.75 * rows[0]["loss"]
    assert results["eval/loss"] < rows[0]["loss"]
    assert (tmp_path / "learn" / "model" / "config.json").exists()
    assert (tmp_path / "learn" / "config.yaml").exists()


def test_micro_batching_does_not_change_the_update(tmp_path):
    one = run_sft(_config(tmp_path, "one"), (_examples(16), []))
    four = run_sft(_config(tmp_path, "four", batch={"micro_batch_size": 2}), (_examples(16), []))
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "four")) < 1e-5
    assert one["steps"] == four["steps"] == 2


def test_resume_continues_exactly(tmp_path, monkeypatch):
    from prefalign.trainers.logging import MetricLogger

    run_sft(_config(tmp_path, "full", batch={"epochs": 2.0}), (_examples(32), []))
    original_log = MetricLogger.log

    def killed_at_step_5(self, step, metrics, **kw):
        if step == 5:  # step 5's update is done but neither logged nor saved: the run dies here
            raise KeyboardInterrupt
        return original_log(self, step, metrics, **kw)

    monkeypatch.setattr(MetricLogger, "log", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_sft(_config(tmp_path, "part", batch={"epochs": 2.0}, run={"save_every": 2}), (_examples(32), []))
    monkeypatch.setattr(MetricLogger, "log", original_log)
    run_sft(
        _config(tmp_path, "part", batch={"epochs": 2.0}, run={"save_every": 2, "resume": True}), (_examples(32), [])
    )
    assert _max_diff(_weights(tmp_path / "full"), _weights(tmp_path / "part")) < 1e-6
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))
    full_losses = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(x)["loss"] for x in lines] == pytest.approx(full_losses, rel=1e-6)


def _one_and_two_processes(tmp_path, examples: int, eval_size: int) -> None:
    """`prefalign sft` on tiny data, in one process (``p1``) and in two gloo processes (``p2``)."""
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"say {i % 5}", "response": f"number {i % 5} ok"}) + "\n" for i in range(examples)
        )
    )
    common = [
        "--model.name_or_path",
        "tiny-random",
        "--data.source",
        str(data),
        "--data.eval_size",
        str(eval_size),
        "--data.max_length",
        "64",
        "--batch.global_batch_size",
        "8",
        "--batch.micro_batch_size",
        "2",
        "--optim.learning_rate",
        "3e-3",
        "--run.progress",
        "False",
        "--run.tensorboard",
        "False",
    ]
    assert main(["sft", *common, "--run.output_dir", str(tmp_path / "p1")]) == 0
    run_accelerate(2, "-m", "prefalign.cli", "sft", *common, "--run.output_dir", str(tmp_path / "p2"), timeout=240)


@pytest.mark.distributed
def test_two_processes_match_one(tmp_path):
    _one_and_two_processes(tmp_path, examples=24, eval_size=0)
    assert _max_diff(_weights(tmp_path / "p1"), _weights(tmp_path / "p2")) < 1e-5
    m1 = [json.loads(x)["loss"] for x in (tmp_path / "p1" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x)["loss"] for x in (tmp_path / "p2" / "metrics.jsonl").read_text().splitlines()]
    assert m1 == pytest.approx(m2, rel=1e-5)


@pytest.mark.distributed
def test_a_process_without_held_out_examples_still_joins_the_evaluation(tmp_path):
    """One held-out example on two processes: the second has none and must not hang or skew the mean."""
    _one_and_two_processes(tmp_path, examples=9, eval_size=1)
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("p1", "p2"))
    assert one["eval/loss"] == pytest.approx(two["eval/loss"], rel=1e-5)


def test_non_finite_loss_stops_before_saving(tmp_path, monkeypatch):
    import prefalign.trainers.sft as sft

    monkeypatch.setattr(sft, "response_nll_sum", lambda model, batch: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        run_sft(_config(tmp_path, "nan", run={"save_every": 1}), (_examples(16), []))
    assert not (tmp_path / "nan" / "checkpoints").exists()
