"""Batches of tokenised sequences as padded tensors.

All training batches are right-padded: ``input_ids`` (B, T), ``attention_mask`` (B, T) and
``response_mask`` (B, T), where T is the longest sequence in the batch (not a global maximum, so
no compute is spent on padding beyond the batch's own). Prompt batches for generation are
left-padded, so that every row's next token is at the same position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefalign.data.tokenize import Encoded, EncodedPair


def pad_sequences(seqs: Sequence[Sequence[int]], pad_value: int, side: str = "right") -> torch.Tensor:
    """(B, T) tensor with T the longest sequence; ``side`` is "right" or "left"."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    length = max(len(s) for s in seqs)
    out = torch.full((len(seqs), length), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        elif len(s):
            out[i, length - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def collate_encoded(examples: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``response_mask`` (all (B, T))."""
    return {
        "input_ids": pad_sequences([e.input_ids for e in examples], pad_token_id),
        "attention_mask": pad_sequences([[1] * len(e.input_ids) for e in examples], 0),
        "response_mask": pad_sequences([e.response_mask for e in examples], 0),
    }


def collate_pairs(pairs: Sequence[EncodedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One (2B, T) batch: rows 0..B-1 are the chosen sequences, rows B..2B-1 the rejected ones.

    Chosen and rejected go through the model in one forward pass.
    """
    return collate_encoded([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)


def collate_prompts(prompts: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt ``input_ids`` and ``attention_mask`` for batched generation."""
    return {
        "input_ids": pad_sequences(prompts, pad_token_id, side="left"),
        "attention_mask": pad_sequences([[1] * len(p) for p in prompts], 0, side="left"),
    }
