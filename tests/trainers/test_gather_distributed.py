"""Gathering a sharded policy once for generation (``parameters_for_generation``) under FSDP2 on CPU processes.

torch 2.13 runs ``fully_shard`` on CPU over gloo, so the FSDP2 branch is tested here with two processes
started by ``torch.distributed.run`` (accelerate itself turns FSDP on only for GPU-like devices, so its
FSDP plugin cannot be exercised on a CPU). The two processes run *different numbers* of forward passes
inside the block, as sampling does when responses end at different lengths: a collective left in the
forward pass would hang (the test's timeout), and the logits must equal the unsharded model's.
DeepSpeed ZeRO-3's branch needs DeepSpeed and a GPU (``benchmarks/gpu_smoke.sh``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_fsdp2_policy_is_gathered_once_and_resharded_after(tmp_path):
    from tests.distributed import run_torchrun

    run_torchrun(Path(__file__).resolve(), str(tmp_path), port=28500)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"gather-{rank}.json").read_text())
        assert seen["forwards"] == rank + 2
        assert seen["max_logit_diff"] < 1e-5
        assert seen["sharded_rows_before"] == seen["sharded_rows_after"] < seen["full_rows"]
        assert seen["full_rows_inside"] == seen["full_rows"]
        assert seen["trained"], "a training step after the block must still work"


def _worker(out: Path) -> None:
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from prefalign.models.tiny import tiny_model_and_tokenizer
    from prefalign.trainers.gather import parameters_for_generation

    acc = Accelerator(cpu=True)
    rank = acc.process_index
    model, _ = tiny_model_and_tokenizer(seed=0)
    full, _ = tiny_model_and_tokenizer(seed=0)
    mesh = init_device_mesh("cpu", (acc.num_processes,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    weight = model.model.layers[0].mlp.gate_proj.weight
    seen = {"full_rows": full.model.layers[0].mlp.gate_proj.weight.shape[0]}
    seen["sharded_rows_before"] = weight.to_local().shape[0]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    diffs, forwards = [], 0
    with parameters_for_generation(acc, model) as policy, torch.no_grad():
        inside = policy.model.layers[0].mlp.gate_proj.weight
        seen["full_rows_inside"] = inside.shape[0] if type(inside).__name__ != "DTensor" else inside.to_local().shape[0]
        for length in range(2, rank + 4):  # rank 0: 2 forwards, rank 1: 3, like responses of different lengths
            logits = policy(input_ids=ids[:, :length]).logits
            diffs.append(float((logits - full(input_ids=ids[:, :length]).logits).abs().max()))
            forwards += 1
    seen["sharded_rows_after"] = model.model.layers[0].mlp.gate_proj.weight.to_local().shape[0]
    seen["forwards"], seen["max_logit_diff"] = forwards, max(diffs)
    model(input_ids=ids).logits.sum().backward()
    seen["trained"] = all(p.grad is not None for p in model.parameters() if p.requires_grad)
    (out / f"gather-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
