"""Where a tiny-world DPO step and PPO step of ``prefalign study`` spend their time.

    PYTHONPATH=src .venv/bin/python benchmarks/study_step.py [--out runs/bench-study-step] [--ppo-steps 10]

Runs the study's own DPO job (``train_offline("dpo")``) and PPO baseline job (``train_ppo``, preference
testbed) with the quick preset's settings on the tiny world (built into the cache first if needed;
one reward model, seed 0, trained once into ``--out``) under :mod:`cProfile`, one torch thread.
It prints, per method:

- the median **step** time the trainer logged (DPO ``perf/step_seconds``; PPO the sum of
  ``time/generate``, ``time/score`` and ``time/update``) and PPO's split into those three stages;
- where the whole run's time went, from cProfile's cumulative times of the named functions
  (the rows overlap when one calls another: "step" contains "forward" and "backward");
- **torch kernels vs the rest**: the summed own time of every call into torch's C++ (forwards,
  backward, optimizer arithmetic, tensor creation) against everything else (Python in the
  trainers, transformers' module plumbing, tokenisation, file writes). cProfile adds a cost per
  Python call, so the Python share is an upper bound.

``--components`` instead times each change of the speed work alone, before and after, in this process
(the optimizer step, the pre-training batch). ``--ab OLD/src --rounds 3`` times the DPO and PPO jobs
with an older checkout's sources and with this one's, alternately (so both see the same load), and
prints the medians and ratios. ``--json FILE`` writes the figures (``--compare A.json B.json``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
from pathlib import Path

import torch

#: (label, (file-name fragment, function name)) of the functions whose cumulative time is reported
DPO_ROWS = [
    ("run (whole job)", ("dpo.py", "run_dpo")),
    ("  reference log-prob tables", ("reference.py", "build_reference")),
    ("  training steps", ("dpo.py", "train_step")),
    ("    forward (policy log-probs)", ("logprobs.py", "ranking_logps")),
    ("    backward", ("__init__.py", "backward")),
    ("    optimizer step", ("optimizer.py", "wrapper")),
    ("  held-out evaluations", ("dpo.py", "evaluate")),
    ("  checkpoints and model saving", ("session.py", "save")),
    ("  final model", ("dpo.py", "save_final_model")),
    ("  metric logging", ("logging.py", "log")),
]
PPO_ROWS = [
    ("run (whole job)", ("trainer.py", "run_ppo")),
    ("  set-up (models, prompts)", ("trainer.py", "build_context")),
    ("  steps", ("trainer.py", "ppo_step")),
    ("    1 rollout (generate)", ("trainer.py", "stage_rollout")),
    ("    2 score (policy, ref, critic, RM)", ("trainer.py", "stage_score")),
    ("    5 update (minibatches)", ("update.py", "ppo_update")),
    ("      backward", ("__init__.py", "backward")),
    ("      optimizer step", ("optimizer.py", "wrapper")),
    ("  validation", ("trainer.py", "_maybe_validate")),
    ("  checkpoints", ("trainer.py", "save_checkpoint")),
    ("  metric logging", ("logging.py", "log")),
]


def cumulative(stats: pstats.Stats, fragment: str, name: str) -> float:
    """Cumulative seconds of every function called ``name`` in a file whose path contains ``fragment``."""
    total = 0.0
    for (path, _, func), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and fragment in path:
            total += ct
    return total


def torch_kernel_seconds(stats: pstats.Stats) -> float:
    """Own time of calls into torch's C++ (built-in functions and methods of torch objects)."""
    total = 0.0
    for (path, _, func), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path == "~" and ("torch" in func or "Tensor" in func or "_C." in func or "EngineBase" in func):
            total += tt
    return total


PROFILE = True  # --no-profile: time only (the A/B comparison), so cProfile's cost does not blur the ratios


def profile(fn) -> tuple[float, pstats.Stats | None]:
    profiler = cProfile.Profile() if PROFILE else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    fn()
    if profiler:
        profiler.disable()
    return time.perf_counter() - started, pstats.Stats(profiler) if profiler else None


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def report(label: str, seconds: float, stats: pstats.Stats | None, rows, steps: int, step_seconds: float) -> dict:
    print(f"\n== {label}: {steps} steps, median step {step_seconds * 1000:.1f} ms, whole job {seconds:.2f} s")
    if stats is None:
        return {"seconds": seconds, "steps": steps, "step_seconds": step_seconds, "parts": {}}
    kernels = torch_kernel_seconds(stats)
    print(f"{'where (cumulative, overlapping)':42s} {'s':>8s} {'share':>7s}")
    parts = {}
    for name, (fragment, func) in rows:
        value = cumulative(stats, fragment, func)
        parts[name.strip()] = value
        print(f"{name:42s} {value:8.2f} {value / seconds:7.1%}")
    print(f"{'torch kernels (own time of C++ calls)':42s} {kernels:8.2f} {kernels / seconds:7.1%}")
    print(f"{'everything else (Python, I/O, set-up)':42s} {seconds - kernels:8.2f} {1 - kernels / seconds:7.1%}")
    return {"seconds": seconds, "steps": steps, "step_seconds": step_seconds, "kernels": kernels, "parts": parts}


def bench_dpo(config, world, out: Path) -> dict:
    from prefalign.studies.comparison.methods import train_offline

    run_dir = out / "dpo"
    seconds, stats = profile(lambda: train_offline("dpo", world, config.offline, run_dir, 0, False, 1))
    steps = [r["perf/step_seconds"] for r in metric_rows(run_dir) if "perf/step_seconds" in r]
    return report("DPO (study job, 64 pairs a step)", seconds, stats, DPO_ROWS, len(steps), statistics.median(steps))


def bench_ppo(config, world, out: Path, rm_dir: str, steps: int) -> dict:
    import dataclasses

    from prefalign.studies.comparison.online import train_ppo
    from prefalign.studies.comparison.runner import write_prompt_files

    config = dataclasses.replace(config, output_dir=str(out))
    prompt_file = write_prompt_files(config, world)
    stage = dataclasses.replace(config.ppo, steps=steps)
    run_dir = out / "ppo"
    seconds, stats = profile(
        lambda: train_ppo("ppo_baseline", world, stage, "preference", rm_dir, prompt_file, run_dir, 0, False, 1, 12)
    )
    rows = [r for r in metric_rows(run_dir / "baseline") if "time/generate" in r]
    split = {k: statistics.median(r[k] for r in rows) for k in ("time/generate", "time/score", "time/update")}
    result = report(
        f"PPO baseline (study job, rollout {stage.small_batch_size})",
        seconds,
        stats,
        PPO_ROWS,
        len(rows),
        sum(split.values()),
    )
    print("median per step: " + ", ".join(f"{k[5:]} {v * 1000:.1f} ms" for k, v in split.items()))
    return {**result, "split": split}


def components(world, rounds: int = 10) -> dict:
    """Each change of the issue-19 speed work, alone, as (before, after) milliseconds in this process."""
    from prefalign.models.load import load_causal_lm
    from prefalign.studies.comparison.tiny_world.prepare import pretraining_batch, pretraining_rows

    model = load_causal_lm(world.model_config("sft"))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    out = {}

    def per_call(before, after) -> tuple[float, float]:
        """Median ms per call of ``before`` and ``after``, timed in alternating blocks (both see the same load)."""
        times: tuple[list[float], list[float]] = ([], [])
        before(), after()
        for _ in range(7):
            for fn, out in ((before, times[0]), (after, times[1])):
                started = time.perf_counter()
                for _ in range(rounds):
                    fn()
                out.append((time.perf_counter() - started) / rounds * 1000)
        return statistics.median(times[0]), statistics.median(times[1])

    loop = torch.optim.AdamW(params, lr=1e-6, foreach=False)
    fused = torch.optim.AdamW(params, lr=1e-6, fused=True)
    out["AdamW step (per-tensor loop -> fused)"] = per_call(loop.step, fused.step)
    tokenizer = model_tokenizer(world)
    lines = world.data.pretrain_text[:256]
    rows = pretraining_rows(tokenizer, lines)
    out["pre-training batch (tokenise each step -> once)"] = per_call(
        lambda: pretraining_batch(tokenizer, lines), lambda: pretraining_batch(tokenizer, rows=rows)
    )
    print("\n== changes, one at a time (ms per call, before -> after, ratio)")
    for name, (before, after) in out.items():
        print(f"{name:50s} {before:8.2f} -> {after:8.2f}  {after / before:.2f}")
    return {k: {"before_ms": a, "after_ms": b} for k, (a, b) in out.items()}


def model_tokenizer(world):
    from prefalign.models.load import load_tokenizer

    return load_tokenizer(world.model_config("sft"))


def ab(baseline_src: str, rounds: int, ppo_steps: int, out: str) -> None:
    """The study's DPO and PPO jobs timed with ``baseline_src`` (an older checkout's ``src``) and with this
    checkout's ``src``, alternately, ``rounds`` times each; prints the medians and their ratios."""
    import os
    import subprocess
    import sys
    import tempfile

    here = str(Path(__file__).resolve().parents[1] / "src")
    times: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, src in (("baseline", baseline_src), ("this", here)):
                target = Path(tmp) / f"{name}-{r}.json"
                env = {**os.environ, "PYTHONPATH": src}
                cmd = [sys.executable, __file__, "--no-profile", "--out", f"{out}/{name}", "--json", str(target)]
                cmd += ["--ppo-steps", str(ppo_steps)]
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[name].append(json.loads(target.read_text()))
    print(f"\n== A/B, {rounds} alternating runs each: median (this / baseline)")
    for method in ("dpo", "ppo"):
        for key in ("step_seconds", "seconds"):
            a = statistics.median(t[method][key] for t in times["baseline"])
            b = statistics.median(t[method][key] for t in times["this"])
            what = "median step" if key == "step_seconds" else "whole job"
            print(f"{method} {what}: {a:.3f} s -> {b:.3f} s ({b / a:.2f})")
        if method == "ppo":
            for part in ("time/generate", "time/score", "time/update"):
                a = statistics.median(t["ppo"]["split"][part] for t in times["baseline"])
                b = statistics.median(t["ppo"]["split"][part] for t in times["this"])
                print(f"    {part[5:]}: {a * 1000:.1f} ms -> {b * 1000:.1f} ms ({b / a:.2f})")


def compare(a: Path, b: Path) -> None:
    first, second = json.loads(a.read_text()), json.loads(b.read_text())
    print(f"ratio {b.name} / {a.name} (below 1: faster)")
    for method in first:
        x, y = first[method], second[method]
        print(
            f"{method}: step {y['step_seconds'] / x['step_seconds']:.2f}, whole job {y['seconds'] / x['seconds']:.2f}"
        )
        for key in x["parts"]:
            if key in y["parts"] and x["parts"][key] > 0:
                print(f"    {key}: {y['parts'][key] / x['parts'][key]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-study-step", help="folder of the runs")
    parser.add_argument("--ppo-steps", type=int, default=10, help="PPO steps (the quick preset runs 20)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("A", "B"), help="print B / A of two --json files")
    parser.add_argument("--no-profile", action="store_true", help="time only, without cProfile")
    parser.add_argument("--components", action="store_true", help="instead, time each change alone (before / after)")
    parser.add_argument("--ab", default=None, metavar="SRC", help="A/B: time an older checkout's src against this one")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side in --ab")
    args = parser.parse_args()
    if args.compare:
        compare(Path(args.compare[0]), Path(args.compare[1]))
        return
    if args.ab:
        ab(args.ab, args.rounds, args.ppo_steps, args.out)
        return
    global PROFILE
    PROFILE = not args.no_profile
    from prefalign.studies.comparison.methods import train_reward_model
    from prefalign.studies.comparison.study import StudyConfig
    from prefalign.studies.comparison.tiny_world.prepare import prepare_tiny_world

    torch.set_num_threads(1)
    config = StudyConfig()
    world = prepare_tiny_world(config.world, progress=False)
    if args.components:  # each change alone, no jobs
        results = {"components": components(world)}
    else:
        out = Path(args.out)
        rm = out / "reward_model"
        if not (rm / "model" / "config.json").exists():
            train_reward_model(world, config.reward_model, rm, 0, False, 1)
        results = {
            "dpo": bench_dpo(config, world, out),
            "ppo": bench_ppo(config, world, out, str(rm / "model"), args.ppo_steps),
        }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
