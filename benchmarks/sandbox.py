"""Throughput of the code sandbox: programs per second on this machine.

Two workloads: a trivial program (``def f(x): return x + 1`` with one assert: the fixed cost of an
isolated interpreter) and the MBPP canonical solutions against their own tests (the real data,
read from the shared data folder). Each is run with every worker count given, with bubblewrap (the
outer wall, where it works here) and without it, and a small table is printed::

    python benchmarks/sandbox.py --workers 1 2 4 --programs 200 --bubblewrap on off
"""

from __future__ import annotations

import argparse
import os
import time

from prefalign.data.sources.code import load_mbpp
from prefalign.rewards.code import AssertTests, prompt_suite
from prefalign.rewards.sandbox import Sandbox, SandboxConfig


def trivial_items(count: int) -> list[tuple[str, AssertTests]]:
    return [("def f(x):\n    return x + 1\n", AssertTests(("assert f(1) == 2",)))] * count


def mbpp_items(count: int) -> list[tuple[str, AssertTests]]:
    prompts = load_mbpp("all")
    return [
        (p.metadata["canonical_solution"], prompt_suite(p)) for p in (prompts * (count // len(prompts) + 1))[:count]
    ]


def measure(sandbox: Sandbox, items: list) -> tuple[float, int, float]:
    """(programs per second, programs passed, mean seconds per program inside the sandbox)."""
    start = time.perf_counter()
    results = sandbox.run_many(items)
    wall = time.perf_counter() - start
    return len(items) / wall, sum(r.passed for r in results), sum(r.elapsed for r in results) / len(results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1], help="worker counts to try")
    parser.add_argument("--programs", type=int, default=200, help="programs per workload and worker count")
    parser.add_argument("--workloads", nargs="+", default=["trivial", "mbpp"], choices=["trivial", "mbpp"])
    parser.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds per program")
    parser.add_argument("--bubblewrap", nargs="+", default=["on", "off"], choices=["on", "off"], help="walls to try")
    args = parser.parse_args(argv)
    makers = {"trivial": trivial_items, "mbpp": mbpp_items}
    workloads = {name: makers[name](args.programs) for name in args.workloads}
    walls = {wall: wall == "on" for wall in args.bubblewrap}
    for wall, on in walls.items():
        isolation = Sandbox(SandboxConfig(bubblewrap=on)).isolation()
        if on and not isolation["bubblewrap"]:
            print(f"bubblewrap unavailable, its rows are skipped: {isolation['bubblewrap_unavailable']}")
        print(f"isolation (bubblewrap {wall}): {isolation}")
    print(f"cpu cores: {os.cpu_count()}, programs per row: {args.programs}")
    print(f"{'workload':<10} {'bwrap':>5} {'workers':>7} {'programs/s':>11} {'passed':>7} {'ms/program':>11}")
    for name, items in workloads.items():
        for wall, on in walls.items():
            for workers in args.workers:
                sandbox = Sandbox(SandboxConfig(max_workers=workers, timeout=args.timeout, bubblewrap=on))
                if on and not sandbox.isolation()["bubblewrap"]:
                    continue
                rate, passed, per_program = measure(sandbox, items)
                row = f"{name:<10} {wall:>5} {workers:>7} {rate:>11.1f} {passed:>4}/{len(items):<3}"
                print(f"{row} {per_program * 1000:>10.1f}")


if __name__ == "__main__":
    main()
