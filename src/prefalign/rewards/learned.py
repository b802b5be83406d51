"""A learned reward model as a :class:`~prefalign.rewards.base.RewardFunction`.

The score of a response is the reward model's scalar head read at the **last real token** of
``prompt + response`` (:func:`prefalign.models.heads.sequence_scores`, which finds it from the
attention mask), so it does not depend on the padding side or on whether the response ended with
EOS: a response cut off at the length limit is scored at its last generated token.

Two entry points:

- ``score_tokens(input_ids, attention_mask)``: scores token sequences directly. The PPO trainer
  uses it when the reward model shares the policy's tokenizer, so the rollout is scored without
  decoding and re-tokenising (which could change the tokens).
- ``__call__(prompts, responses)``: the text protocol. Each prompt is rendered with the reward
  model's chat template and the response is appended with EOS, exactly as
  :func:`prefalign.data.tokenize.encode_example` builds the reward model's training sequences.
  Departure: a truncated response is scored with an EOS after it on this path; the token path
  scores what was generated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefalign.data.collate import pad_sequences
from prefalign.data.schema import Prompt
from prefalign.data.tokenize import encode_prompt, encode_response
from prefalign.models.heads import sequence_scores

#: distinct prompts whose rendering :class:`LearnedReward` keeps (the cache is emptied when full)
PROMPT_CACHE_SIZE = 100_000


def trimmed_micro_batches(input_ids: torch.Tensor, attention_mask: torch.Tensor, size: int):
    """(ids, mask) micro-batches of ``size`` rows, right-padded columns past the longest row dropped."""
    for start in range(0, input_ids.shape[0], size):
        ids, mask = input_ids[start : start + size], attention_mask[start : start + size]
        width = int(mask.sum(dim=1).max().item())
        if bool(mask[:, width:].any()):
            width = mask.shape[1]  # left-padded rows: keep every column
        yield ids[:, :width], mask[:, :width]


class LearnedReward:
    """Reward-model scores, computed ``micro_batch_size`` sequences at a time, without gradients."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        micro_batch_size: int = 8,
        max_length: int | None = None,
        name: str = "reward_model",
    ):
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.max_length = max_length
        self.name = name
        self.model.requires_grad_(False)
        self.model.eval()
        self._prompt_cache: dict[tuple, list[int]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) float32 scores of (B, T) sequences (either padding side), on the CPU."""
        out = []
        for ids, mask in trimmed_micro_batches(input_ids, attention_mask, self.micro_batch_size):
            out.append(sequence_scores(self.model, ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt rendered by the chat template, remembered per distinct conversation (rendering a template
        costs about a millisecond, and a study scores every prompt many times)."""
        key = tuple((m.role, m.content) for m in prompt.messages)
        ids = self._prompt_cache.get(key)
        if ids is None:
            if len(self._prompt_cache) >= PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            ids = self._prompt_cache[key] = encode_prompt(self.tokenizer, prompt.messages)
        return ids

    def _join(self, prompt_ids: list[int], response_ids: list[int]) -> list[int]:
        ids = prompt_ids + response_ids
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[len(ids) - self.max_length :]  # keep the response and the turns nearest it
        return ids

    def encode(self, prompt: Prompt, response: str) -> list[int]:
        return self._join(self._prompt_ids(prompt), encode_response(self.tokenizer, response))

    def encode_many(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each pair; the responses tokenised in one batched tokenizer call (the same ids)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not responses:
            return []
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {self.tokenizer.name_or_path!r} has no EOS token")
        eos = [self.tokenizer.eos_token_id]
        tokenised = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        return [self._join(self._prompt_ids(p), list(r) + eos) for p, r in zip(prompts, tokenised)]

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        rows = self.encode_many(prompts, responses)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = pad_sequences(rows, pad)
        mask = pad_sequences([[1] * len(r) for r in rows], 0)
        return self.score_tokens(ids, mask)


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when two tokenizers map text to the same ids (same vocabulary, EOS and chat template)."""
    if a is b:
        return True
    return (
        a.eos_token_id == b.eos_token_id
        and a.chat_template == b.chat_template
        and len(a) == len(b)
        and a.get_vocab() == b.get_vocab()
    )
