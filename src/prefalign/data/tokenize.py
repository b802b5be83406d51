"""Rendering records through the tokenizer's chat template, with response masks and truncation.

Every sequence is ``prompt_ids + response_ids`` where

- ``prompt_ids`` is the chat template applied to the prompt messages with the generation prompt
  (for ChatML: ``...<|im_start|>assistant\\n``), tokenised without extra special tokens;
- ``response_ids`` is the response text tokenised on its own, followed by the tokenizer's EOS
  token. Generation stops at that same EOS, so training and sampling see the same boundary.

Truncation policy (``max_length`` tokens in all):

1. If the prompt is longer than ``max_prompt_length``, its **start** is cut (the turns nearest the
   response are kept).
2. If prompt + response still exceed ``max_length``, the response's **end** is cut; it then has no
   EOS, and the example is flagged ``truncated``.
3. If nothing of the response is left, :class:`TruncatedAway` is raised: callers report and skip
   the row rather than train on an empty response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from prefalign.data.schema import Message, messages_to_dicts


class TruncatedAway(ValueError):
    """The response did not survive truncation (or was empty to begin with)."""


@dataclass
class Encoded:
    """One tokenised sequence. ``response_mask[i]`` is 1 for response tokens (EOS included)."""

    input_ids: list[int]
    response_mask: list[int]
    prompt_length: int
    truncated: bool

    @property
    def response_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """Token ids of the prompt rendered by the chat template, ending with the assistant header."""
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; set one before training")
    text = tokenizer.apply_chat_template(messages_to_dicts(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer: PreTrainedTokenizerBase, text: str, add_eos: bool = True) -> list[int]:
    """Token ids of a response, followed by EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id] if add_eos else ids


def join_truncated(
    prompt_ids: list[int], response_ids: list[int], max_length: int, max_prompt_length: int | None = None
) -> Encoded:
    """Apply the truncation policy of the module docstring to already-tokenised parts."""
    if max_prompt_length is None:
        max_prompt_length = max_length // 2
    if max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
    truncated = False
    if len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length :]
        truncated = True
    room = max_length - len(prompt_ids)
    if len(response_ids) > room:
        response_ids = response_ids[:room]
        truncated = True
    if not response_ids:
        raise TruncatedAway("the response is empty after truncation")
    return Encoded(
        input_ids=prompt_ids + response_ids,
        response_mask=[0] * len(prompt_ids) + [1] * len(response_ids),
        prompt_length=len(prompt_ids),
        truncated=truncated,
    )


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Sequence[Message],
    response: str,
    max_length: int,
    max_prompt_length: int | None = None,
) -> Encoded:
    """Prompt + response (+EOS) under the truncation policy. Raises TruncatedAway for empty text."""
    if not response.strip():
        raise TruncatedAway("the response is empty")
    return join_truncated(
        encode_prompt(tokenizer, prompt), encode_response(tokenizer, response), max_length, max_prompt_length
    )


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated


def encode_pair(
    tokenizer,
    prompt: Sequence[Message],
    chosen: str,
    rejected: str,
    max_length: int,
    max_prompt_length: int | None = None,
) -> EncodedPair:
    """Both responses share one rendered (and identically truncated) prompt."""
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise TruncatedAway(f"the {name} response is empty")
    prompt_ids = encode_prompt(tokenizer, prompt)
    return EncodedPair(
        chosen=join_truncated(prompt_ids, encode_response(tokenizer, chosen), max_length, max_prompt_length),
        rejected=join_truncated(prompt_ids, encode_response(tokenizer, rejected), max_length, max_prompt_length),
    )
