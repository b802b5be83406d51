"""Tokens per second of the built-in generation engine against Hugging Face ``generate``, in one run.

    .venv/bin/python benchmarks/generate.py [--batch 8 32] [--new-tokens 64] [--threads 2] [--repeats 2]

Model: SmolLM2-135M-Instruct in fp32. Prompts: the first B of the 40 HH-RLHF prompts the PPO benchmark
uses (``data.num_prompts=40``, seed 0), whole (no truncation), one sample each. Every row generates
exactly ``--new-tokens`` tokens (no stop at EOS), so both engines do the same work. For each batch
size, one untimed warm-up call of each engine first (a short generation: it loads or builds the compiled
kernels, allocates the caches and starts the thread pool, none of which a steady run pays), then the two
engines run alternately ``--repeats`` times, sampling at temperature 0.7 (interleaved, so a
change in the machine's load hits both alike), then once each greedily: the greedy tokens are compared.
Throughput = B x new tokens / wall seconds of the ``generate`` call (prefill included). The report gives
the 1-minute load average before and after each batch size: above the thread count, other work shared
the cores and the absolute figures (less so the interleaved ratio) are low.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.rollout.generate import SamplingConfig, generate
from prefalign.trainers.ppo.config import PromptDataConfig
from prefalign.trainers.ppo.setup import encode_prompts, load_prompt_sets


def timed(model, tokenizer, prompts, sampling, batch, engine, seed) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    rollout = generate(model, tokenizer, prompts, sampling, batch, generator_seed=seed, engine=engine)
    return time.perf_counter() - start, rollout.sequences


def measure(model, tokenizer, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict:
    batch = len(prompts)
    sampled = SamplingConfig(temperature=0.7, max_new_tokens=new_tokens, stop_at_eos=False)
    seconds: dict[str, list[float]] = {"builtin": [], "hf": []}
    warm_up = SamplingConfig(temperature=0.7, max_new_tokens=min(new_tokens, 4), stop_at_eos=False)
    for engine in ("builtin", "hf"):
        timed(model, tokenizer, prompts, warm_up, batch, engine, None)
    for repeat in range(repeats):
        for engine in ("builtin", "hf") if repeat % 2 == 0 else ("hf", "builtin"):
            seconds[engine].append(timed(model, tokenizer, prompts, sampled, batch, engine, repeat)[0])
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens, stop_at_eos=False)
    ours_s, ours = timed(model, tokenizer, prompts, greedy, batch, "builtin", None)
    hf_s, theirs = timed(model, tokenizer, prompts, greedy, batch, "hf", None)
    tokens = batch * new_tokens
    ours_rate = tokens / (sum(seconds["builtin"]) / repeats)
    hf_rate = tokens / (sum(seconds["hf"]) / repeats)
    return {
        "batch": batch,
        "prompt_tokens": [len(p) for p in prompts],
        "builtin_tok_per_s": ours_rate,
        "hf_generate_tok_per_s": hf_rate,
        "ratio": ours_rate / hf_rate,
        "seconds": seconds,
        "greedy_tok_per_s": {"builtin": tokens / ours_s, "hf": tokens / hf_s},
        "greedy_identical": bool(torch.equal(ours, theirs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_cfg = ModelConfig()
    model, tokenizer = load_causal_lm(model_cfg).eval(), load_tokenizer(model_cfg)
    prompts, _ = load_prompt_sets(PromptDataConfig(num_prompts=40, validation_prompts=0))
    ids = encode_prompts(tokenizer, prompts, 10**9)
    if max(args.batch) > len(ids):
        raise SystemExit(f"--batch at most {len(ids)} (the benchmark's prompts)")
    rows = []
    for batch in args.batch:
        load_before = os.getloadavg()[0]
        row = measure(model, tokenizer, ids[:batch], args.new_tokens, args.repeats)
        row["load_average"] = [load_before, os.getloadavg()[0]]
        rows.append(row)
        print(
            f"batch {batch}: built-in {row['builtin_tok_per_s']:.1f} tok/s, HF generate "
            f"{row['hf_generate_tok_per_s']:.1f} tok/s, ratio {row['ratio']:.2f}x, "
            f"greedy identical: {row['greedy_identical']}, load average {row['load_average'][0]:.2f} -> "
            f"{row['load_average'][1]:.2f}",
            flush=True,
        )
    report = {"threads": torch.get_num_threads(), "new_tokens": args.new_tokens, "repeats": args.repeats, "rows": rows}
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    if not all(r["greedy_identical"] for r in rows):
        raise SystemExit("greedy outputs differ between the engines")


if __name__ == "__main__":
    main()
