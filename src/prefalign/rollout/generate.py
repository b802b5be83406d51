"""Batched sampling from a causal LM with the KV cache, and the :class:`Rollout` record.

``generate(model, tokenizer, prompt_ids, sampling, micro_batch_size)`` samples
``sampling.num_samples`` responses for each prompt, ``micro_batch_size`` rows at a time, stops every
row at its first EOS, and returns the sequences **right-padded** as ``prompt + response``, the layout
every other part of prefalign uses (log-probs aligned with ``input_ids``, scores read at the last
real token).

Two engines: the built-in one (:mod:`prefalign.rollout.engine`: prefill once per prompt, static KV
cache, its own decode loop; Llama-architecture models) and Hugging Face ``generate`` (left-padded
prompt batches, KV cache on; every other model). ``engine="auto"`` picks the built-in one where it
supports the model. Greedy outputs are the same token for token (tested); the built-in engine also
records each response token's log-probability (``Rollout.logprobs``).

Conventions:

* Row ``i`` of the result comes from prompt ``prompt_index[i] = i // num_samples``: the samples of a
  prompt are adjacent (``repeat_interleave`` order), N = P * num_samples.
* ``response_mask`` is 1 on the generated tokens up to **and including** the first EOS. The padding
  Hugging Face writes after a row has finished (the pad id, which may equal the EOS id, as in
  SmolLM2) is not part of the response. A row that reached ``max_new_tokens`` without EOS is
  *truncated*: ``ended_with_eos`` is False and its response is every generated token.
* EOS is ``tokenizer.eos_token_id`` (the token :func:`prefalign.data.tokenize.encode_response`
  appends), so sampling and training see the same boundary.
* ``temperature = 0`` means greedy decoding; ``top_k = 0`` and ``top_p = 1`` switch those filters
  off. Every sampling setting is passed to ``generate`` explicitly, so a model's own
  ``generation_config`` (a repetition penalty, say) cannot change the distribution behind the
  sampled tokens.
* ``sampling.stop_at_eos = False`` generates exactly ``max_new_tokens`` tokens per row, an EOS being an
  ordinary token (throughput measurements at a fixed length); ``ended_with_eos`` is then False.
* ``generator_seed`` makes the call reproducible without touching the caller's RNG stream (the
  global torch RNG is forked and seeded); ``None`` samples from the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefalign.data.collate import collate_prompts, pad_sequences
from prefalign.rollout import engine as builtin_engine


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    """Softmax temperature for sampling (0: greedy decoding). Xu et al.: 1.0; Ivison et al.: 0.7."""
    top_k: int = 0
    """Sample only among the k most likely tokens (0: no top-k filter). Xu et al.: 200."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens with this much probability (1.0: off)."""
    max_new_tokens: int = 128
    """Generate at most this many tokens per response; a response that reaches it without EOS is truncated."""
    num_samples: int = 1
    """Responses sampled per prompt."""
    stop_at_eos: bool = True
    """End a response at its first EOS (False: always generate max_new_tokens tokens; for fixed-length benchmarks)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"sampling.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.num_samples < 1:
            raise ValueError("sampling.max_new_tokens and sampling.num_samples must be positive")


@dataclass
class Rollout:
    """Sampled responses to a batch of prompts (OpenRLHF ``Experience`` style: shapes beside fields).

    N = number of rows (prompts x samples), T = longest prompt + response in the batch.
    """

    sequences: torch.Tensor  # (N, T) long: prompt ids then response ids, right-padded with the pad id
    attention_mask: torch.Tensor  # (N, T) long: 1 on prompt and response tokens, 0 on right padding
    response_mask: torch.Tensor  # (N, T) long: 1 on generated tokens up to and including EOS
    ended_with_eos: torch.Tensor  # (N,) bool: the response stopped at EOS (False: cut at max_new_tokens)
    prompt_index: torch.Tensor  # (N,) long: the prompt (0..P-1) this row was sampled for
    prompt_lengths: torch.Tensor  # (N,) long: number of prompt tokens (the response starts there)
    response_lengths: torch.Tensor  # (N,) long: number of response tokens, EOS included
    response_texts: list[str]  # N decoded responses, EOS and special tokens removed
    logprobs: torch.Tensor | None = None  # (N, T) float32 log pi(token) of the sampler (full softmax at the
    # sampling temperature; 1 for greedy) on the response tokens, 0 elsewhere; None if the engine kept none

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[key] = value.to(device)
        return Rollout(**moved)

    def select(self, rows: Sequence[int] | torch.Tensor) -> Rollout:
        """The rows ``rows`` (in that order), trimmed to their own longest sequence."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.sequences.device)
        width = int(self.attention_mask[index].sum(dim=1).max().item()) if len(index) else 0
        return Rollout(
            sequences=self.sequences[index, :width],
            attention_mask=self.attention_mask[index, :width],
            response_mask=self.response_mask[index, :width],
            ended_with_eos=self.ended_with_eos[index],
            prompt_index=self.prompt_index[index],
            prompt_lengths=self.prompt_lengths[index],
            response_lengths=self.response_lengths[index],
            response_texts=[self.response_texts[i] for i in index.tolist()],
            logprobs=None if self.logprobs is None else self.logprobs[index, :width],
        )

    @property
    def truncated(self) -> torch.Tensor:
        """(N,) bool: the response was cut at ``max_new_tokens`` without EOS."""
        return ~self.ended_with_eos


def build_rollout(
    prompt_rows: Sequence[Sequence[int]],
    response_rows: Sequence[Sequence[int]],
    ended_with_eos: Sequence[bool],
    prompt_index: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    response_logprobs: Sequence[Sequence[float]] | None = None,
) -> Rollout:
    """Assemble a right-padded :class:`Rollout` from per-row prompt and response token lists (and, when
    given, each response token's log-probability, placed at the token's position)."""
    if not (len(prompt_rows) == len(response_rows) == len(ended_with_eos) == len(prompt_index)):
        raise ValueError("build_rollout: every per-row argument must have the same length")
    if any(len(r) == 0 for r in response_rows):
        raise ValueError("build_rollout: a response has no tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    full = [list(p) + list(r) for p, r in zip(prompt_rows, response_rows)]
    masks = [[0] * len(p) + [1] * len(r) for p, r in zip(prompt_rows, response_rows)]
    eos = tokenizer.eos_token_id
    texts = [
        tokenizer.decode(list(r)[:-1] if ended and list(r)[-1] == eos else list(r), skip_special_tokens=True)
        for r, ended in zip(response_rows, ended_with_eos)
    ]
    logprobs = None
    if response_logprobs is not None:
        if [len(r) for r in response_logprobs] != [len(r) for r in response_rows]:
            raise ValueError("build_rollout: response_logprobs must have one value per response token")
        width = max(len(s) for s in full)
        logprobs = torch.zeros(len(full), width, dtype=torch.float32)
        for i, (p, lp) in enumerate(zip(prompt_rows, response_logprobs)):
            logprobs[i, len(p) : len(p) + len(lp)] = torch.as_tensor(list(lp), dtype=torch.float32)
    return Rollout(
        sequences=pad_sequences(full, pad),
        attention_mask=pad_sequences([[1] * len(s) for s in full], 0),
        response_mask=pad_sequences(masks, 0),
        ended_with_eos=torch.tensor(list(ended_with_eos), dtype=torch.bool),
        prompt_index=torch.tensor(list(prompt_index), dtype=torch.long),
        prompt_lengths=torch.tensor([len(p) for p in prompt_rows], dtype=torch.long),
        response_lengths=torch.tensor([len(r) for r in response_rows], dtype=torch.long),
        response_texts=texts,
        logprobs=logprobs,
    )


def _sampling_kwargs(sampling: SamplingConfig, tokenizer: PreTrainedTokenizerBase) -> dict:
    greedy = sampling.temperature == 0
    kwargs = {
        "do_sample": not greedy,
        "max_new_tokens": sampling.max_new_tokens,
        "min_new_tokens": 0,
        "eos_token_id": tokenizer.eos_token_id if sampling.stop_at_eos else None,  # an explicit None: no stop
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "repetition_penalty": 1.0,
        "num_beams": 1,
        "use_cache": True,
    }
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    return kwargs


def _split_generated(new_tokens: torch.Tensor, eos_id: int | None) -> tuple[list[list[int]], list[bool]]:
    """Cut each row of (n, L) generated ids after its first EOS (None: keep all L); returns rows and ended flags."""
    if eos_id is None:
        return new_tokens.tolist(), [False] * new_tokens.shape[0]
    is_eos = new_tokens == eos_id  # (n, L)
    has_eos = is_eos.any(dim=1)  # (n,)
    first = is_eos.long().argmax(dim=1)  # (n,) first EOS position (0 when none)
    lengths = torch.where(has_eos, first + 1, torch.full_like(first, new_tokens.shape[1]))  # (n,)
    rows = [new_tokens[i, : int(n)].tolist() for i, n in enumerate(lengths.tolist())]
    return rows, has_eos.tolist()


@torch.no_grad()
def _generate_chunk(
    model, prompts: list[list[int]], kwargs: dict, pad_id: int, eos_id: int | None, device
) -> tuple[list[list[int]], list[bool], None]:
    batch = collate_prompts(prompts, pad_id)  # left-padded (n, Tp)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)  # (n, Tp + L)
    return *_split_generated(out[:, input_ids.shape[1] :].cpu(), eos_id), None


def _builtin_chunk(
    model, prompts: list[list[int]], sampling: SamplingConfig, pad_id: int, eos_id: int | None, device
) -> tuple[list[list[int]], list[bool], list[list[float]]]:
    tokens, logprobs = builtin_engine.generate_chunk(
        model,
        prompts,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    rows, ended = _split_generated(tokens, eos_id)
    return rows, ended, [logprobs[i, : len(r)].tolist() for i, r in enumerate(rows)]


ENGINES = ("auto", "builtin", "hf")


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    sampling: SamplingConfig,
    micro_batch_size: int,
    generator_seed: int | None = None,
    engine: str = "auto",
) -> Rollout:
    """Sample ``num_samples`` responses per prompt, ``micro_batch_size`` rows per engine call.

    prompt_ids: P token-id lists (e.g. from :func:`prefalign.data.tokenize.encode_prompt`).
    engine: "builtin" (:mod:`prefalign.rollout.engine`; a model it does not support is an
    error), "hf" (Hugging Face ``generate``) or "auto" (built-in where supported, else "hf").
    Returns a :class:`Rollout` of N = P * num_samples rows on the CPU (see the module docstring);
    its ``logprobs`` are set by the built-in engine, None with "hf".
    The model is put in eval mode for sampling and its previous mode restored afterwards.
    """
    if engine not in ENGINES:
        raise ValueError(f"generation engine must be one of {ENGINES}, got {engine!r}")
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("generate needs at least one prompt, and every prompt needs a token")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; generation could not stop")
    builtin = engine == "builtin" or (engine == "auto" and builtin_engine.supports(model))
    if builtin and not builtin_engine.supports(model):
        raise ValueError(
            f"the built-in generation engine supports model types {builtin_engine.SUPPORTED_MODEL_TYPES}, "
            f"not {getattr(getattr(model, 'config', None), 'model_type', type(model).__name__)!r}; use 'hf' or 'auto'"
        )
    rows = [list(p) for p in prompt_ids for _ in range(sampling.num_samples)]
    prompt_index = [i for i in range(len(prompt_ids)) for _ in range(sampling.num_samples)]
    kwargs = _sampling_kwargs(sampling, tokenizer)
    pad_id = kwargs["pad_token_id"]
    eos_id = tokenizer.eos_token_id if sampling.stop_at_eos else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    responses: list[list[int]] = []
    ended: list[bool] = []
    logprobs: list[list[float]] | None = [] if builtin else None
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=generator_seed is not None):
            if generator_seed is not None:
                torch.manual_seed(generator_seed)
            for start in range(0, len(rows), micro_batch_size):
                chunk = rows[start : start + micro_batch_size]
                if builtin:
                    out = _builtin_chunk(model, chunk, sampling, pad_id, eos_id, device)
                else:
                    out = _generate_chunk(model, chunk, kwargs, pad_id, eos_id, device)
                responses.extend(out[0])
                ended.extend(out[1])
                if logprobs is not None:
                    logprobs.extend(out[2])
    finally:
        model.train(was_training)
    return build_rollout(rows, responses, ended, prompt_index, tokenizer, logprobs)
