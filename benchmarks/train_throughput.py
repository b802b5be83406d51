"""SFT and reward-model training throughput and peak memory on the embedded SmolLM2-135M.

    .venv/bin/python benchmarks/train_throughput.py [--batch 8] [--length 256] [--steps 3] [--threads 2]

Each optimizer step trains on ``batch`` sequences (SFT) or ``batch`` pairs (RM: 2 x batch sequences
in one forward pass) of exactly ``length`` tokens of real HH-RLHF text (chosen responses, packed
from the file so there is no padding). Reports tokens/s after one warm-up step, and the process's
peak resident memory (ru_maxrss) after each phase.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from prefalign.algorithms.preference import bradley_terry_loss
from prefalign.data.sources import load_preference_data
from prefalign.models.heads import sequence_scores
from prefalign.models.load import SMOLLM2, ModelConfig, load_causal_lm, load_reward_model, load_tokenizer
from prefalign.models.logprobs import token_logprobs


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def real_token_blocks(tokenizer, count: int, length: int) -> torch.Tensor:
    pairs, _ = load_preference_data("hh-rlhf")
    stream: list[int] = []
    for pair in pairs:
        stream.extend(tokenizer(pair.chosen, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        if len(stream) >= count * length:
            break
    return torch.tensor(stream[: count * length]).view(count, length)


def timed_steps(step_fn, steps: int) -> list[float]:
    step_fn()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - start)
    return times


def bench_sft(cfg: ModelConfig, blocks: torch.Tensor, steps: int) -> dict:
    model = load_causal_lm(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    mask = torch.ones_like(blocks)

    def step():
        loss = -token_logprobs(model, blocks, mask, mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = timed_steps(step, steps)
    return {
        "seconds_per_step": sum(times) / len(times),
        "tokens_per_s": blocks.numel() * len(times) / sum(times),
        "peak_rss_gib": peak_rss_gib(),
    }


def bench_rm(cfg: ModelConfig, blocks: torch.Tensor, steps: int) -> dict:
    model = load_reward_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    mask = torch.ones_like(blocks)
    half = blocks.shape[0] // 2

    def step():
        scores = sequence_scores(model, blocks, mask)
        loss = bradley_terry_loss(scores[:half], scores[half:]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = timed_steps(step, steps)
    return {
        "seconds_per_step": sum(times) / len(times),
        "tokens_per_s": blocks.numel() * len(times) / sum(times),
        "peak_rss_gib": peak_rss_gib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--batch", type=int, default=8, help="sequences (SFT) or pairs (RM) per step")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["sft", "rm"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(name_or_path=args.model)
    tok = load_tokenizer(cfg)
    print(
        f"model {args.model}, {args.threads} threads, batch {args.batch} x {args.length} tokens, {args.steps} timed "
        "steps"
    )
    if args.only in (None, "sft"):
        r = bench_sft(cfg, real_token_blocks(tok, args.batch, args.length), args.steps)
        print(
            f"SFT: {r['seconds_per_step']:.2f} s/step, {r['tokens_per_s']:.0f} tokens/s, peak RSS "
            f"{r['peak_rss_gib']:.2f} GiB"
        )
    if args.only in (None, "rm"):
        r = bench_rm(cfg, real_token_blocks(tok, 2 * args.batch, args.length), args.steps)
        print(
            f"RM ({args.batch} pairs = {2 * args.batch} sequences): {r['seconds_per_step']:.2f} s/step, "
            f"{r['tokens_per_s']:.0f} tokens/s, peak RSS {r['peak_rss_gib']:.2f} GiB"
        )


if __name__ == "__main__":
    main()
