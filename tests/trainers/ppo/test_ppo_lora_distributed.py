"""PPO with a LoRA policy whose reference is its own base with adapters off, on 2 CPU processes (DDP over gloo).

The reference's forward runs on the unwrapped policy with peft's adapters switched off (their ``requires_grad``
toggled and restored); under DDP the update must still reduce the adapters' gradients the same on both processes.
Run as a script (by the test, under accelerate), this file is the worker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

FLAGS = ["--preset", "tiny", "--run.threads", "1", "--batch.steps", "2", "--run.eval_every", "0"]
LORA = ["--policy.lora", "True", "--policy.lora_r", "4", "--policy.lora_alpha", "8"]


def worker(out: Path) -> None:
    from prefalign.cli import main
    from prefalign.config import build_config
    from prefalign.trainers.ppo.trainer import PRESETS, PPOConfig, build_context, make_accelerator, ppo_step

    code = main(["ppo", *FLAGS, *LORA, "--run.output_dir", str(out / "run")])
    if code != 0:
        raise SystemExit(code)
    overrides = {"policy": {"lora": True, "lora_r": 4, "lora_alpha": 8}, "run": {"output_dir": str(out / "steps")}}
    config = build_config(PPOConfig, presets=PRESETS, preset="tiny", overrides=overrides)
    acc = make_accelerator(config.run)
    ctx = build_context(config, acc)
    for step in range(2):
        ppo_step(ctx, step)
    adapters = {k: v for k, v in acc.unwrap_model(ctx.parts.policy).state_dict().items() if "lora_" in k}
    (out / f"rank-{acc.process_index}.json").write_text(
        json.dumps(
            {
                "shares_policy": ctx.parts.reference.shares_policy,
                "world": acc.num_processes,
                "checksum": sum(float(v.double().sum()) for v in adapters.values()),
                "moved": max(float(v.abs().max()) for k, v in adapters.items() if "lora_B" in k),
            }
        )
    )


@pytest.mark.distributed
@pytest.mark.slow
def test_adapters_off_reference_under_two_processes(tmp_path):
    from safetensors.torch import load_file

    from prefalign.trainers.checkpoint import checkpoint_model_files
    from tests.distributed import run_accelerate

    run_accelerate(2, str(Path(__file__).resolve()), str(tmp_path), timeout=400)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["finished"] and results["steps"] == 2
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["shares_policy"] and r["world"] == 2 and r["moved"] > 0 for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"], "the processes' adapters diverged"
    root = tmp_path / "run" / "checkpoints"
    files = checkpoint_model_files(root / (root / "latest").read_text().strip())
    assert "reference" not in files and {"policy", "critic"} <= set(files)
    policy = load_file(str(files["policy"]))
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in policy.items())  # the adapters trained


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    worker(Path(sys.argv[1]))
