"""One case of ``benchmarks/gpu_smoke.sh``: a few PPO or DPO steps through the real CLI, inside ``accelerate launch``.

Runs ``prefalign ppo`` or ``prefalign dpo`` in this process on the embedded SmolLM2-135M (PPO: the tiny preset's
synthetic prompts and programmatic reward, critic from the policy; DPO: 64 synthetic preference pairs), then
prints one JSON line from the main process:

- ``engine``: accelerate's distributed type (DEEPSPEED, FSDP, NO, ...) and, for PPO, the rollout engine;
- ``seconds``: wall time of the run (model loading included), ``seconds_per_step`` the trainer's own per-step
  time where it logs one (PPO: ``time/generate + time/score + time/update``; DPO: ``perf/step_seconds``), the
  first step left out as warm-up;
- ``samples_per_s``: PPO rollout samples (DPO pairs) per second of those steps;
- ``peak_gpu_gib``: ``torch.cuda.max_memory_allocated`` of this process (the vLLM engine's own pool, taken at
  start-up by ``gpu_memory_utilization``, is on top for ``--engine vllm``: ``peak_gpu_reserved_gib`` from
  ``nvidia-smi`` is printed by the shell script).

Usage (the shell script's): ``accelerate launch --config_file CFG --num_processes 1 benchmarks/gpu_smoke.py ppo
--out DIR --steps 4 [--engine vllm]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

MODEL = "smollm2-135m-instruct"


def write_pairs(path: Path, count: int = 64) -> Path:
    topics = ["tea", "rain", "maps", "bread", "chess", "rivers", "owls", "glass"]
    rows = [
        {
            "prompt": f"Say something kind about {topics[i % len(topics)]} (#{i}).",
            "chosen": f"{topics[i % len(topics)].capitalize()} can make a day better.",
            "rejected": "No.",
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ppo_args(out: Path, steps: int, engine: str, critic_deepspeed_config: str | None = None) -> list[str]:
    """PPO with a critic (GAE); ``critic_deepspeed_config``: the critic's own DeepSpeed config (under DeepSpeed)."""
    args = [
        "ppo", "--preset", "tiny", "--policy.name_or_path", MODEL, "--critic_init", "policy",
        "--batch.steps", str(steps), "--batch.rollout_batch_size", "32", "--batch.micro_batch_size", "8",
        "--sampling.max_new_tokens", "48", "--rollout.engine", engine, "--run.eval_every", "0",
        "--run.output_dir", str(out),
    ]  # fmt: skip
    if critic_deepspeed_config is not None:
        args += ["--critic_deepspeed_config", critic_deepspeed_config]
    return args


def run_ppo_cli(cli, run: Path, steps: int, engine: str, critic_config: str | None, resume_check: bool) -> int:
    """The PPO run; with ``resume_check`` it stops after half the steps (a checkpoint: under DeepSpeed one
    save_state per engine) and resumes to the end, as a job that hit its time limit would."""
    args = ppo_args(run, steps, engine, critic_config)
    if not resume_check or steps < 2:
        return cli(args)
    code = cli([*args, "--stop_after", str(steps // 2)])
    return code if code != 0 else cli([*args, "--run.resume", "True"])


def dpo_args(out: Path, steps: int, data: Path) -> list[str]:
    return [
        "dpo", "--model.name_or_path", MODEL, "--data.source", str(data), "--data.eval_size", "0",
        "--data.max_length", "128", "--batch.global_batch_size", "8", "--batch.micro_batch_size", "4",
        "--batch.max_steps", str(steps), "--optim.warmup_ratio", "0.0", "--run.output_dir", str(out),
    ]  # fmt: skip


def step_seconds(rows: list[dict], trainer: str) -> list[float]:
    """Per-step seconds from metrics.jsonl, the first (warm-up) step left out when there are more."""
    if trainer == "ppo":
        times = [r["time/generate"] + r["time/score"] + r["time/update"] for r in rows if "time/update" in r]
    else:
        times = [r["perf/step_seconds"] for r in rows if "perf/step_seconds" in r]
    return times[1:] if len(times) > 1 else times


def main(argv: list[str] | None = None) -> dict:
    from accelerate import PartialState

    from prefalign.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trainer", choices=["ppo", "dpo"])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engine", choices=["builtin", "vllm"], default="builtin")
    parser.add_argument("--critic-deepspeed-config", help="PPO: the critic's own DeepSpeed JSON config")
    parser.add_argument("--resume-check", action="store_true", help="PPO: stop half way, then resume")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = args.out / "run"
    started = time.perf_counter()
    if args.trainer == "ppo":
        code = run_ppo_cli(cli, run, args.steps, args.engine, args.critic_deepspeed_config, args.resume_check)
        per_step_samples = 32
    else:
        code = cli(dpo_args(run, args.steps, write_pairs(args.out / "pairs.jsonl")))
        per_step_samples = 8
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(code)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = step_seconds(rows, args.trainer)
    state = PartialState()
    report = {
        "trainer": args.trainer,
        "engine": str(state.distributed_type).split(".")[-1] + (f"+{args.engine}" if args.trainer == "ppo" else ""),
        "steps": len(rows),
        "resumed": bool(args.resume_check and args.trainer == "ppo"),
        "seconds": round(seconds, 1),
        "seconds_per_step": round(statistics.median(times), 3) if times else None,
        "samples_per_s": round(per_step_samples / statistics.median(times), 2) if times else None,
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }
    if args.trainer == "ppo" and args.engine == "vllm":
        last = rows[-1]
        report["mismatch_mean"] = last.get("rollout/mismatch_mean")
        report["mismatch_max"] = last.get("rollout/mismatch_max")
    if state.is_main_process:
        print("GPU_SMOKE " + json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
