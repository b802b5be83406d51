"""Checkpoints across process counts (accelerate save_state / load_state) and the launcher's settings.

A tiny SFT run of 4 steps saves at steps 2 and 4; rewinding the folder to step 2 and resuming on another
process count must give the uninterrupted run's weights (to float32 rounding: the same global batches,
reduced in another order), and resuming on the same count (two processes) exactly the same weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prefalign.cli import main
from prefalign.trainers.common import RunConfig, make_accelerator

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"say {i % 5}", "response": f"number {i % 5} ok"} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def _flags(tmp_path: Path, out: Path, resume: bool = False) -> list[str]:
    flags = {
        "--model.name_or_path": "tiny-random",
        "--data.source": str(_data(tmp_path)),
        "--data.eval_size": "0",
        "--data.max_length": "64",
        "--batch.global_batch_size": "8",
        "--batch.micro_batch_size": "2",
        "--batch.max_steps": "4",
        "--optim.learning_rate": "3e-3",
        "--run.save_every": "2",
        "--run.keep_checkpoints": "3",
        "--run.progress": "False",
        "--run.tensorboard": "False",
        "--run.output_dir": str(out),
        "--run.resume": str(resume),
    }
    return ["sft", *[x for pair in flags.items() for x in pair]]


def _one_process(tmp_path: Path, out: Path, resume: bool = False) -> None:
    assert main(_flags(tmp_path, out, resume)) == 0


def _two_processes(tmp_path: Path, out: Path, resume: bool = False) -> None:
    from tests.distributed import run_accelerate

    run_accelerate(2, "-m", "prefalign.cli", *_flags(tmp_path, out, resume), timeout=300)


def _rewind(out: Path, step: int) -> None:
    """The run folder as a run killed right after its step-``step`` checkpoint would have left it."""
    root = out / "checkpoints"
    for path in root.glob("step-*"):
        if int(path.name.split("-")[1]) > step:
            shutil.rmtree(path)
    (root / "latest").write_text(f"step-{step:08d}")
    shutil.rmtree(out / "model")
    (out / "results.json").unlink()


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_a_one_process_checkpoint_resumes_on_two(tmp_path):
    run = tmp_path / "run"
    _one_process(tmp_path, run)
    whole = shutil.copytree(run, tmp_path / "whole")
    _rewind(run, 2)
    _two_processes(tmp_path, run, resume=True)
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert _max_diff(_weights(whole), _weights(run)) < 1e-5
    assert _losses(run) == pytest.approx(_losses(whole), rel=1e-5)
    assert _losses(run)[:2] == _losses(whole)[:2]  # the steps before the checkpoint are kept as written


def test_a_two_process_checkpoint_resumes_on_one_and_exactly_on_two(tmp_path):
    run = tmp_path / "run"
    _two_processes(tmp_path, run)
    latest = run / "checkpoints" / "step-00000004" / "accelerate"
    assert (latest / "random_states_0.pkl").exists() and (latest / "random_states_1.pkl").exists()
    whole = shutil.copytree(run, tmp_path / "whole")
    _rewind(run, 2)
    _one_process(tmp_path, run, resume=True)
    assert _max_diff(_weights(whole), _weights(run)) < 1e-5
    assert _losses(run) == pytest.approx(_losses(whole), rel=1e-5)
    _rewind(run, 2)
    _two_processes(tmp_path, run, resume=True)
    for name, tensor in _weights(whole).items():  # same process count: bit for bit
        assert torch.equal(tensor, _weights(run)[name]), name
    assert _losses(run) == _losses(whole)


def test_the_launchers_mixed_precision_is_honoured(tmp_path):
    """``accelerate launch --mixed_precision bf16``: the accelerator reports bf16 unless our flag says otherwise."""
    from tests.distributed import run_accelerate

    run_accelerate(2, str(Path(__file__).resolve()), str(tmp_path), timeout=120, mixed_precision="bf16")
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"precision-{rank}.json").read_text())
        assert seen == {"launcher": "bf16", "overridden": "no", "num_processes": 2}


def _report_precision(out: Path) -> None:
    launcher = make_accelerator(RunConfig(output_dir=str(out), tensorboard=False))
    seen = {"launcher": launcher.mixed_precision, "num_processes": launcher.num_processes}
    rank = launcher.process_index
    seen["overridden"] = make_accelerator(RunConfig(output_dir=str(out), mixed_precision="no")).mixed_precision
    (out / f"precision-{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    _report_precision(Path(sys.argv[1]))
