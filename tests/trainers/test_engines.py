"""The accelerate launch configs in recipes/accelerate/ and what the trainers tell DeepSpeed (on a CPU: no engine)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from accelerate.utils.deepspeed import HfDeepSpeedConfig

from prefalign.trainers.engines import (
    configure_deepspeed,
    engine_loss_scale,
    micro_batches_per_step,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"
EXPECTED = {  # config -> (distributed type, ZeRO-3, offload)
    "ddp": (DistributedType.MULTI_GPU, None, None),
    "zero2": (DistributedType.DEEPSPEED, False, False),
    "zero3": (DistributedType.DEEPSPEED, True, False),
    "zero3_offload": (DistributedType.DEEPSPEED, True, True),
    "fsdp2": (DistributedType.FSDP, None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_launch_config_loads_with_accelerate(name):
    config = load_config_from_file(str(RECIPES / f"{name}.yaml"))
    kind, zero3, offload = EXPECTED[name]
    assert config.distributed_type == kind and config.mixed_precision == "bf16"
    if kind == DistributedType.DEEPSPEED:
        file = config.deepspeed_config["deepspeed_config_file"]
        assert file == f"recipes/accelerate/ds_{name}.json"  # relative to the repository root, as the README says
        ds = HfDeepSpeedConfig(str(RECIPES.parents[1] / file))
        assert ds.is_zero3() == zero3 and ds.is_offload() == offload
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            assert ds.config[key] == "auto", f"{key} is filled in by prefalign.trainers.engines"
    if kind == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


def test_every_config_is_documented_with_its_commands():
    readme = (RECIPES.parents[1] / "README.md").read_text()
    for name in EXPECTED:
        assert f"recipes/accelerate/{name}.yaml" in readme, name


def _fake_accelerator(kind: DistributedType, ds_config: dict | None = None):
    plugin = SimpleNamespace(deepspeed_config=ds_config if ds_config is not None else {})
    return SimpleNamespace(
        distributed_type=kind,
        state=SimpleNamespace(deepspeed_plugin=plugin),
        num_processes=4,
        gradient_accumulation_steps=1,
    )


def test_deepspeed_is_told_the_micro_batching_and_its_loss_division_is_undone():
    ds = {"gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto"}
    acc = _fake_accelerator(DistributedType.DEEPSPEED, ds)
    per_step = micro_batches_per_step(global_batch_size=64, micro_batch_size=4, num_processes=4)
    assert per_step == 4
    configure_deepspeed(acc, 4, per_step, max_grad_norm=1.0)
    assert ds == {
        "gradient_accumulation_steps": 4,
        "train_micro_batch_size_per_gpu": 4,
        "train_batch_size": 64,
        "gradient_clipping": 1.0,
    }
    assert acc.gradient_accumulation_steps == 4
    assert engine_loss_scale(acc, 4) == 4.0
    with pytest.raises(ValueError, match="configured for 4 micro-batches per optimizer step, this step has 3"):
        engine_loss_scale(acc, 3)
    configure_deepspeed(acc, 4, per_step, max_grad_norm=None)
    assert ds["gradient_clipping"] == 0.0


def test_other_engines_are_left_alone():
    acc = _fake_accelerator(DistributedType.MULTI_GPU)
    configure_deepspeed(acc, 4, 4, 1.0)
    assert acc.state.deepspeed_plugin.deepspeed_config == {} and engine_loss_scale(acc, 7) == 1.0
