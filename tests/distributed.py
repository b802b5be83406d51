"""Launching a command in several CPU processes through ``accelerate launch``.

On a machine without GPUs, ``accelerate launch --cpu`` starts ONE process (it expects mpirun to
start the others); ``--multi_gpu --num_processes N`` goes through ``torch.distributed.run`` and,
with no GPU present, the Accelerator comes up as MULTI_CPU over gloo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def accelerate_cmd(num_processes: int, *args: str, mixed_precision: str = "no") -> list[str]:
    launcher = Path(sys.executable).with_name("accelerate")
    return [
        str(launcher),
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(29500 + os.getpid() % 1000),
        *args,
    ]


def _run_in_own_session(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` with 1 OpenMP thread and no GPU; a timeout kills the whole process group."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # A session of its own, so that a timeout kills the launcher's worker processes too (they would
    # otherwise live on, orphaned, and slow every later test).
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def run_accelerate(
    num_processes: int, *args: str, timeout: int = 300, mixed_precision: str = "no"
) -> subprocess.CompletedProcess:
    proc = _run_in_own_session(accelerate_cmd(num_processes, *args, mixed_precision=mixed_precision), timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def run_torchrun(script: Path, *args: str, port: int, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with 2 processes on ``script`` (for what accelerate cannot set up on a
    CPU, e.g. FSDP2 shards made by hand); ``port`` + this process's id picks the rendezvous port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(port + os.getpid() % 1000), str(script), *args]  # fmt: skip
    proc = _run_in_own_session(cmd, timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc
