"""Tokenisation cache: the SFT examples of the HH-RLHF harmless sample tokenised with the SmolLM2 tokenizer,
first into an empty cache (the baseline: real tokenisation), then again (read from the cache). Prints both
times and their ratio.

    PREFALIGN_CACHE_DIR=$(mktemp -d) python benchmarks/token_cache.py
"""

from __future__ import annotations

import argparse
import time

from prefalign.data.config import DataConfig, load_sft
from prefalign.data.token_cache import cache_enabled
from prefalign.models.load import ModelConfig, load_tokenizer
from prefalign.trainers.sft import encode_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--source", default="hh-rlhf")
    args = parser.parse_args()
    if not cache_enabled():
        raise SystemExit("the tokenisation cache is switched off here; nothing to measure")
    data = DataConfig(source=args.source, eval_size=0)
    train, _, _ = load_sft(data)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=args.model))
    times = []
    for run in ("tokenised", "from cache"):
        started = time.perf_counter()
        _, stats = encode_examples(tokenizer, train, data)
        times.append(time.perf_counter() - started)
        print(f"{run}: {len(train)} examples in {times[-1]:.2f} s (from_cache={stats['from_cache']})")
    print(f"cache speed-up: {times[0] / times[1]:.1f}x")


if __name__ == "__main__":
    main()
