"""Throughput and memory of one DPO optimizer step on SmolLM2-135M (fp32, CPU), through the real trainer.

Setting (the peer measurement it is compared with: Hugging Face TRL 1.16 ``DPOTrainer`` on this
machine, 0.185 pairs/s, 49 s per 8-pair step, 46 non-pad tokens/s, peak RSS 8.6 GiB, reference
log-probs on the fly): global batch 8 pairs from the HH-RLHF harmless file, max length 256 tokens,
fp32, ``--threads`` torch threads (2).

The script runs ``prefalign.trainers.preference.dpo.run_dpo`` for ``--steps`` optimizer steps on
``8 * steps`` pairs and reads the trainer's own per-step timings (``perf/step_seconds`` in
``metrics.jsonl``). The first step is a warm-up and is left out of the figures. Reported:

- ``step_s``: median seconds per 8-pair optimizer step (policy forward + backward + AdamW);
- ``pairs_per_s`` and ``tokens_per_s`` from the median step: ``tokens_per_s`` counts the non-pad
  tokens of the chosen and rejected sequences (prompt + response each, the peer's count), and
  ``computed_tokens_per_s`` the tokens actually run through the model (a shared prompt once);
- ``reference_s_per_pair``: with ``--reference cached``, the one-off reference pass over the data,
  per pair (in seconds); ``pairs_per_s_with_reference`` charges it to one epoch (every pair seen
  once), the least favourable case for caching (2-3 epochs in the papers' recipes divide it by 2-3);
- ``peak_rss_gib``: the process's peak resident memory (``ru_maxrss``), everything included;
- ``padding``: the share of padded positions in the step's forward batches;
- ``matmul_peak_gflops``: the machine's fp32 matrix-product peak with the same thread count, timed in this
  script (the best of a few 2048 x 2048 products, before and after the run: the best of both);
- ``model_gflops_per_step`` = 6 x parameters x computed tokens (policy forward + backward, the usual
  6ND count: every parameter, the tied embedding once; the reference is cached so costs nothing here;
  it overstates the vocabulary projection, which runs on response positions only) and
  ``padding_gflops_per_step`` the same count for the padded positions, which are computed but wasted;
- ``fraction_of_peak`` = model FLOP/s of the median step / ``matmul_peak_gflops`` (padding not counted;
  ``fraction_of_peak_with_padding`` counts it).

What the trainer removes, and the flags that put each piece of waste back: the prompt computed
once per pair instead of once per response (``--no-share-prompt``), short pairs packed into the
padding of a row (``--no-pack``: one row per pair), length-sorted micro-batches
(``--micro-batch-size 8``: all 16 sequences in one forward pass, padded to the longest), logits
only at response positions (``--baseline``: every position's logits, prompt and padding included;
implies ``--no-share-prompt``), and the reference computed once (``--reference on_the_fly``).
``--baseline --reference on_the_fly --micro-batch-size 8`` is the TRL-like work measured in the same
harness; its ratio to a default run taken just before or after is a speed-up that depends less on
what else the machine is running than absolute seconds do.

Usage::

    .venv/bin/python benchmarks/dpo_step.py --steps 6 --threads 2 [--reference on_the_fly] [--micro-batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is a warm-up)")
    p.add_argument("--batch-pairs", type=int, default=8, help="pairs per optimizer step")
    p.add_argument(
        "--micro-batch-size", type=int, default=4, help="pairs per forward pass (length-sorted within the step)"
    )
    p.add_argument("--max-length", type=int, default=256, help="maximum tokens of prompt + response")
    p.add_argument("--reference", choices=("cached", "on_the_fly"), default="cached")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=0, help="which pairs (a deterministic subset of the file)")
    p.add_argument(
        "--no-share-prompt", action="store_true", help="one row per response (the prompt computed twice per pair)"
    )
    p.add_argument(
        "--no-pack", action="store_true", help="one row per pair (no short pairs sharing a row): more padding"
    )
    p.add_argument(
        "--baseline", action="store_true", help="compute every position's logits (the wasted work, for comparison)"
    )
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from prefalign.data.config import DataConfig
    from prefalign.models.load import ModelConfig
    from prefalign.trainers.common import BatchConfig, OptimConfig, RunConfig
    from prefalign.trainers.logging import read_metrics
    from prefalign.trainers.preference.dpo import run_dpo
    from prefalign.trainers.preference.dpo_config import DPOConfig

    if args.baseline:
        _use_full_logits()

    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as out:
        config = DPOConfig(
            model=ModelConfig(name_or_path=args.model, dtype="float32"),
            data=DataConfig(
                source="hh-rlhf",
                num_examples=args.batch_pairs * args.steps,
                eval_size=0.0,
                max_length=args.max_length,
                seed=args.seed,
            ),
            reference=args.reference,
            eval_micro_batch_size=args.micro_batch_size * 2,
            share_prompt=not (args.no_share_prompt or args.baseline),
            pack_examples=not args.no_pack,
            batch=BatchConfig(global_batch_size=args.batch_pairs, micro_batch_size=args.micro_batch_size, epochs=1.0),
            optim=OptimConfig(learning_rate=1e-6, warmup_ratio=0.0),
            run=RunConfig(output_dir=out, threads=args.threads, tensorboard=False, progress=False),
        )
        peak = matmul_peak_gflops()
        started = time.perf_counter()
        results = run_dpo(config)
        wall = time.perf_counter() - started
        rows = read_metrics(Path(out) / "metrics.jsonl")
        reference_s = results.get("reference_seconds")
    peak = max(peak, matmul_peak_gflops())
    timed = rows[1:] if len(rows) > 1 else rows
    step_s = statistics.median(r["perf/step_seconds"] for r in timed)
    tokens = statistics.median(r["perf/sequence_tokens_per_second"] * r["perf/step_seconds"] for r in timed)
    computed = statistics.median(r["perf/tokens_per_second"] * r["perf/step_seconds"] for r in timed)
    pairs = args.batch_pairs * args.steps
    figures = {
        "baseline": args.baseline,
        "share_prompt": not (args.no_share_prompt or args.baseline),
        "pack_examples": not (args.no_pack or args.no_share_prompt or args.baseline),
        "reference": args.reference,
        "micro_batch_size": args.micro_batch_size,
        "threads": args.threads,
        "steps_timed": len(timed),
        "step_s": round(step_s, 2),
        "pairs_per_s": round(args.batch_pairs / step_s, 3),
        "tokens_per_step": round(tokens),
        "tokens_per_s": round(tokens / step_s, 1),
        "computed_tokens_per_step": round(computed),
        "computed_tokens_per_s": round(computed / step_s, 1),
        "step_cpu_s": round(statistics.median(r["perf/step_cpu_seconds"] for r in timed), 2),
        "padding": round(statistics.median(r["perf/padding"] for r in timed), 3),
        **flop_figures(
            parameter_count(config.model), computed, statistics.median(r["perf/padding"] for r in timed), step_s, peak
        ),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "final_loss": rows[-1]["loss"],
        "run_wall_s": round(wall, 1),
    }
    if args.reference == "cached" and reference_s is not None:
        figures["reference_s_per_pair"] = round(reference_s / pairs, 3)
        figures["pairs_per_s_with_reference"] = round(
            args.batch_pairs / (step_s + reference_s / pairs * args.batch_pairs), 3
        )
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best fp32 GFLOP/s of ``repeats`` (size x size) @ (size x size) products on the current torch threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def parameter_count(model_config) -> int:
    """Parameters of the model (a tied embedding counted once), from a fresh load of it."""
    from prefalign.models.load import load_causal_lm

    return sum(p.numel() for p in load_causal_lm(model_config).parameters())


def flop_figures(params: int, tokens: float, padding: float, step_s: float, peak_gflops: float) -> dict:
    """6 x params x tokens for the policy's forward + backward; padded positions counted apart."""
    padded = tokens / max(1.0 - padding, 1e-9) - tokens  # positions computed on padding
    model = 6 * params * tokens / 1e9
    wasted = 6 * params * padded / 1e9
    return {
        "parameters": params,
        "matmul_peak_gflops": round(peak_gflops, 1),
        "model_gflops_per_step": round(model, 1),
        "padding_gflops_per_step": round(wasted, 1),
        "model_gflops_per_s": round(model / step_s, 1),
        "fraction_of_peak": round(model / step_s / peak_gflops, 3),
        "fraction_of_peak_with_padding": round((model + wasted) / step_s / peak_gflops, 3),
    }


def _use_full_logits() -> None:
    """Replace the response-only log-probs by log-softmax over every position's logits."""
    import prefalign.trainers.preference.logprobs as pb
    from prefalign.models.heads import _position_ids
    from prefalign.models.logprobs import gather_logprobs

    def full_logits_logps(model, batch):
        ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask), use_cache=False
        ).logits  # (N, T, V)
        logps = gather_logprobs(logits[:, :-1], ids[:, 1:])  # (N, T-1), log-softmax a chunk of rows at a time
        return (logps * response[:, 1:]).sum(dim=1)

    pb.response_logps = full_logits_logps


if __name__ == "__main__":
    main(sys.argv[1:])
