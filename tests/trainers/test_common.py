import math

import pytest
import torch

from prefalign.trainers.checkpoint import Checkpointer
from prefalign.trainers.common import BatchPlan, OptimConfig, lr_factor, micro_batches, shard


def test_linear_schedule_with_warmup_and_floor():
    cfg = OptimConfig(learning_rate=1e-5, min_learning_rate=1e-6, warmup_ratio=0.1)
    total = 20
    factors = [lr_factor(s, total, cfg) for s in range(total)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)  # 2 warm-up steps
    assert factors[2] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(1.0 - 0.9 * (17 / 18))
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert lr_factor(10_000, total, cfg) == pytest.approx(0.1)  # floor = min / peak


def test_cosine_and_constant():
    cos = OptimConfig(learning_rate=1.0, schedule="cosine", warmup_ratio=0.0)
    assert lr_factor(0, 10, cos) == pytest.approx(1.0)
    assert lr_factor(5, 10, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    const = OptimConfig(learning_rate=1.0, schedule="constant", warmup_ratio=0.5)
    assert [lr_factor(s, 4, const) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_batch_plan_is_deterministic_and_covers_each_epoch():
    plan = BatchPlan(num_examples=10, global_batch_size=4, seed=3, epochs=2)
    assert plan.steps_per_epoch == 2 and plan.total_steps == 4
    again = BatchPlan(num_examples=10, global_batch_size=4, seed=3, epochs=2)
    assert [plan.step_indices(s) for s in range(4)] == [again.step_indices(s) for s in range(4)]
    epoch0 = plan.step_indices(0) + plan.step_indices(1)
    assert len(set(epoch0)) == 8
    assert plan.step_indices(2) + plan.step_indices(3) != epoch0  # a new order each epoch
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchPlan(num_examples=3, global_batch_size=4, seed=0)
    assert BatchPlan(num_examples=100, global_batch_size=4, seed=0, max_steps=7).total_steps == 7


def test_shard_and_micro_batches():
    assert shard([0, 1, 2, 3, 4, 5], 1, 2) == [1, 3, 5]
    with pytest.raises(ValueError):
        shard([0, 1, 2], 0, 2)
    assert [list(m) for m in micro_batches([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]


def test_checkpoint_is_atomic_and_pruned(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(tmp_path, acc, keep=2)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        ckpt.save(step, {"m": model}, {"step": step})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000002", "step-00000003"]  # no temporary folder left
    with torch.no_grad():
        model.weight.zero_()
    state = ckpt.load(ckpt.latest(), {"m": model})
    assert state["step"] == 3 and torch.all(model.weight == 3)
    (tmp_path / "checkpoints" / "latest").write_text("step-00000099")
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        ckpt.latest()


def test_trainers_with_different_precisions_run_in_one_process(tmp_path):
    from prefalign.trainers.common import RunConfig, make_accelerator

    assert make_accelerator(RunConfig(output_dir=str(tmp_path), mixed_precision="bf16")).mixed_precision == "bf16"
    assert make_accelerator(RunConfig(output_dir=str(tmp_path), mixed_precision="no")).mixed_precision == "no"
