"""The adapters-off reference on an FSDP2-sharded LoRA policy, 2 CPU processes over gloo.

torch 2.13 runs ``fully_shard`` on CPU (accelerate's FSDP plugin needs a GPU, so the shards are made by hand as in
``tests/trainers/test_gather_distributed.py``). peft's ``disable_adapter()`` toggles the adapters' ``requires_grad``
on the sharded (DTensor) parameters; the reference's log-probs must still be the base model's, the policy's
its own, and a backward afterwards must still reach the adapters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_adapters_off_reference_on_fsdp2_shards(tmp_path):
    from tests.distributed import run_torchrun

    run_torchrun(Path(__file__).resolve(), str(tmp_path), port=27500, timeout=240)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert seen["sharded"], "the adapters should be DTensor shards"
        assert seen["off_vs_base"] < 1e-5 and seen["on_vs_base"] > 1e-3
        assert seen["adapters_trainable_after"] and seen["adapters_got_grads"]


def _worker(out: Path) -> None:
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from prefalign.models.load import ModelConfig, load_causal_lm
    from prefalign.models.logprobs import token_logprobs
    from prefalign.models.reference import AdaptersOffReference

    acc = Accelerator(cpu=True)
    policy = load_causal_lm(ModelConfig(name_or_path="tiny-random", lora=True, lora_r=4, lora_alpha=8), seed=0)
    base = load_causal_lm(ModelConfig(name_or_path="tiny-random"), seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained adapters, so that on and off differ
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    mesh = init_device_mesh("cpu", (acc.num_processes,))
    for layer in policy.get_base_model().model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(policy, mesh=mesh)
    reference = AdaptersOffReference(policy, checked=True)
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(2))
    mask, response = torch.ones_like(ids), torch.zeros_like(ids)
    response[:, 5:] = 1
    with torch.no_grad():
        off = token_logprobs(reference.model, ids, mask, response, response_only=True)
        on = token_logprobs(policy, ids, mask, response, response_only=True)
        ref = token_logprobs(base, ids, mask, response, response_only=True)
    lora = [p for n, p in policy.named_parameters() if "lora_" in n]
    seen = {
        "sharded": all(type(p).__name__ == "DTensor" for p in lora),
        "off_vs_base": float((off - ref).abs().max()),
        "on_vs_base": float((on - ref).abs().max()),
        "adapters_trainable_after": all(p.requires_grad for p in lora),
    }
    token_logprobs(policy, ids, mask, response, response_only=True).sum().backward()
    seen["adapters_got_grads"] = all(p.grad is not None for p in lora)
    (out / f"rank-{acc.process_index}.json").write_text(json.dumps(seen))
    dist.barrier()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    _worker(Path(sys.argv[1]))
