"""A PPO run stopped or killed part-way resumes to exactly the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefalign.config import merge
from prefalign.trainers.logging import read_metrics
from prefalign.trainers.ppo.trainer import run_ppo
from tests.trainers.ppo.helpers import checkpoint_tensors, tiny_config, without_timings

#: every piece of state a resume has to restore: running statistics, the adaptive KL coefficient, the
#: moving reference, the auxiliary SFT sampling, per-minibatch recomputation, several inner epochs
STATEFUL = {
    "ppo": {
        "value_normalization": True,
        "reference_ema": True,
        "ema_rate": 0.2,
        "recompute_old": True,
        "ppo_epochs": 2,
        "sft_coef": 0.1,
        "sft_batch_size": 2,
    },
    "reward": {"normalize": True, "clip": 3.0},
    "kl": {"adaptive": True, "coef": 0.05, "target": 0.5, "horizon": 100.0},
    "batch": {"steps": 4},
    "run": {"eval_every": 1},
}


def _sft_file(tmp_path: Path) -> str:
    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"Say {w}.", "response": f"{w} {w}."} for w in ("yes", "no", "maybe", "soon", "later", "never")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _assert_same_runs(a: Path, b: Path) -> None:
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    for model in ("policy", "critic", "reference"):
        for name, tensor in ta[model].items():
            assert torch.equal(tensor, tb[model][name]), f"{model}.{name}"
    assert without_timings(read_metrics(a / "metrics.jsonl")) == without_timings(read_metrics(b / "metrics.jsonl"))
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert ra["best_eval_reward"] == rb["best_eval_reward"] and ra["best_step"] == rb["best_step"]
    assert ra["steps"] == rb["steps"] == 4 and ra["finished"] and rb["finished"]


#: the Xu preset's additions: EMA value statistics (saved in the checkpoint) and top-k log-probs
XU_STYLE = {"ppo": {"value_normalization_beta": 0.9, "logprobs_top_k": True}, "sampling": {"top_k": 20}}


@pytest.mark.parametrize("extra", [{}, XU_STYLE], ids=["cumulative-statistics", "ema-statistics-top-k"])
def test_stop_then_resume_equals_an_uninterrupted_run(tmp_path, extra):
    overrides = merge(STATEFUL, merge(extra, {"ppo": {"sft_data": _sft_file(tmp_path)}}))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_ppo(tiny_config(whole, overrides))
    first = run_ppo(tiny_config(parts, {**overrides, "stop_after": 2}))
    assert first["steps"] == 2 and not first["finished"]
    assert (parts / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    run_ppo(tiny_config(parts, {**overrides, "run": {**overrides["run"], "resume": True}}))
    _assert_same_runs(whole, parts)


KILL_OVERRIDES = {
    "batch": {"steps": 4},
    "run": {"save_every": 1, "eval_every": 1},
    "ppo": {"value_normalization": True, "reference_ema": True},
    "kl": {"adaptive": True, "target": 0.5},
}


def _cli(out: Path) -> list[str]:
    """The command line of ``tiny_config(out, KILL_OVERRIDES)``."""
    return [
        sys.executable,
        "-m",
        "prefalign.cli",
        "ppo",
        "--preset",
        "tiny",
        "--run.output_dir",
        str(out),
        "--run.threads",
        "1",
        "--run.tensorboard",
        "False",
        "--run.progress",
        "False",
        "--batch.steps",
        "4",
        "--run.save_every",
        "1",
        "--run.eval_every",
        "1",
        "--ppo.value_normalization",
        "True",
        "--ppo.reference_ema",
        "True",
        "--kl.adaptive",
        "True",
        "--kl.target",
        "0.5",
    ]


@pytest.mark.slow
def test_a_killed_process_resumes_exactly(tmp_path):
    """SIGKILL a CLI run as soon as its first checkpoint exists, resume it, compare with a run never killed."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(
        _cli(killed), env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists(), proc.stderr.read().decode()[-2000:]
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    resume = {**KILL_OVERRIDES, "run": {**KILL_OVERRIDES["run"], "resume": True}}
    run_ppo(tiny_config(killed, resume))
    run_ppo(tiny_config(whole, KILL_OVERRIDES))
    _assert_same_runs(whole, killed)


def test_resume_with_allowed_changes_uses_the_new_optimizer_settings(tmp_path):
    """A resume whose settings changed is refused, and with run.allow_changes the new actor learning rate and
    schedule are the ones in use from the resumed step on (not the checkpoint's), as for the offline trainers."""
    constant = {"schedule": "constant", "warmup_ratio": 0.0}
    first = tiny_config(
        tmp_path, {"batch": {"steps": 2}, "run": {"save_every": 1}, "actor_optim": {**constant, "learning_rate": 1e-3}}
    )
    run_ppo(first)
    changed = {"batch": {"steps": 4}, "actor_optim": {**constant, "learning_rate": 5e-3}}
    with pytest.raises(ValueError, match=r"actor_optim.learning_rate: 0.001 -> 0.005"):
        run_ppo(tiny_config(tmp_path, merge(changed, {"run": {"resume": True}})))
    results = run_ppo(tiny_config(tmp_path, merge(changed, {"run": {"resume": True, "allow_changes": True}})))
    rows = read_metrics(Path(first.run.output_dir) / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and results["steps"] == 4
    assert [r["lr/actor"] for r in rows] == pytest.approx([1e-3, 1e-3, 5e-3, 5e-3])
