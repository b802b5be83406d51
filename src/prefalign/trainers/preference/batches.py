"""Preference data as training batches, and the policy's sequence log-probs over them.

Used by :mod:`prefalign.trainers.preference.dpo` (DPO, RRHF, PRO) and :mod:`prefalign.trainers.preference.iterative`.

Data. A record (a :class:`~prefalign.data.schema.PreferencePair`, or a
:class:`~prefalign.data.schema.RankedResponses` list for RRHF / PRO) becomes an
:class:`EncodedRanking`: K tokenised sequences that share one rendered prompt, best first. A pair is
a ranking of two (chosen, rejected). An empty response makes the whole record unusable: it is
counted in a :class:`SkipReport` under its reason and left out, never scored as zero.

Batches. Every response of every example in a micro-batch goes through the model in **one**
forward pass, in one of three layouts:

- ``shared_prompt`` (:func:`collate_shared_prompt`): one row per example holding the
  prompt once and then its K responses; a block attention mask lets each response see the prompt
  and itself only, and its position ids continue the prompt's, so every log-prob equals that of the
  response's own ``prompt + response`` sequence while the prompt's tokens are computed once instead
  of K times (on the HH-RLHF harmless pairs at 256 tokens: 186 instead of 281 tokens per pair). It
  needs a model that takes a custom 4D mask (sdpa or eager attention);
- ``packed`` (the default where ``shared_prompt`` applies; :func:`packed_groups`): the shared-prompt layout
  with several examples one after another in a row, packed first-fit-decreasing into rows no longer
  than the step's longest example, each example masked off from the others and with its own
  positions, so a short example fills a row's padding instead of costing a padded row of its own
  (``benchmarks/dpo_step.py``, HH-RLHF pairs at 256 tokens, 8-pair steps: 11.5% padded positions
  against 19.4% unpacked);
- ``row_per_response`` (:func:`collate_rankings`): a (K*B, T) batch, rows ``k*B + b`` = response k
  of example b (for K = 2: the B chosen rows, then the B rejected rows, the layout of
  :func:`~prefalign.data.collate.collate_pairs`).

T is the micro-batch's own longest row. Within an optimizer step a process sorts its examples by
length and cuts them into micro-batches (:func:`length_sorted_groups`), so rows of similar length
are padded together; since each loss term is divided by the global number of examples, the split
does not change the gradient.

Log-probabilities. :func:`response_logps` returns sum_t log pi(y_t | x, y_<t) over each row's
response tokens. It projects onto the vocabulary only the hidden states that predict a response
token (no prompt or padding position reaches the (N, V) logits), a saving of the LM head's and the
log-softmax's work on those positions; the result equals
:func:`prefalign.models.logprobs.sequence_logprobs` in both layouts (tests check it). Models that transform
their logits after the head (Gemma-2 soft-capping, Cohere's logit scale) fall back to that function.

The objectives over these log-probs are in :mod:`prefalign.trainers.preference.objectives`; where
the records come from, in :mod:`prefalign.trainers.preference.data`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prefalign.data.collate import collate_encoded
from prefalign.data.schema import PreferencePair, RankedResponses
from prefalign.data.token_cache import cached, fingerprint
from prefalign.data.tokenize import (
    Encoded,
    TruncatedAway,
    encode_prompt,
    encode_response,
    join_truncated,
)

# batch layouts, see the module docstring
SHARED_PROMPT, PACKED, ROW_PER_RESPONSE = "shared_prompt", "packed", "row_per_response"

# ----------------------------------------------------------------------------- encoding


@dataclass
class EncodedRanking:
    """K tokenised responses to one prompt, best first; ``scores`` (K,) in the same order."""

    sequences: list[Encoded]
    scores: list[float]
    source_index: int  # position of the record in the list it was encoded from

    @property
    def max_length(self) -> int:
        return max(len(s.input_ids) for s in self.sequences)

    @property
    def shared_length(self) -> int:
        """Tokens of the shared-prompt row: the prompt once, then every response."""
        return self.sequences[0].prompt_length + sum(s.response_length for s in self.sequences)

    def width(self, layout: str) -> int:
        return self.shared_length if layout in (SHARED_PROMPT, PACKED) else self.max_length

    def rows(self, layout: str) -> int:
        return 1 if layout in (SHARED_PROMPT, PACKED) else len(self.sequences)

    @property
    def truncated(self) -> bool:
        return any(s.truncated for s in self.sequences)


@dataclass
class SkipReport:
    """Records left out before training, by reason, with the first few kept verbatim."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    truncated: int = 0

    def add(self, reason: str, index: int) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"record {index}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self, kept: int, what: str = "records") -> str:
        text = f"{kept} {what} encoded ({self.truncated} truncated)"
        if self.counts:
            text += ", skipped " + "; ".join(f"{n} x {reason}" for reason, n in self.counts.most_common())
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"by_reason": dict(self.counts), "truncated": self.truncated, "examples": list(self.examples)}


def _as_ranking(record: PreferencePair | RankedResponses) -> tuple[list, list[str], list[float], list[bool]]:
    """(prompt, responses best first, scores, add_eos per response)."""
    if isinstance(record, PreferencePair):
        meta = record.metadata
        scores = [float(meta.get("score_chosen", 1.0)), float(meta.get("score_rejected", 0.0))]
        # a sampled response cut at max_new_tokens (iterative DPO) is trained without an EOS it never produced
        add_eos = [not meta.get("chosen_truncated", False), not meta.get("rejected_truncated", False)]
        return record.prompt, [record.chosen, record.rejected], scores, add_eos
    k = len(record.responses)
    scores = [float(s) for s in record.scores] if record.scores is not None else [float(k - 1 - i) for i in range(k)]
    return record.prompt, list(record.responses), scores, [True] * k


def encode_ranking(
    tokenizer, record: PreferencePair | RankedResponses, index: int, max_length: int, max_prompt_length: int | None
) -> EncodedRanking:
    """Tokenise one record; raises TruncatedAway naming the empty response."""
    prompt, responses, scores, add_eos = _as_ranking(record)
    names = (
        ["chosen", "rejected"]
        if len(responses) == 2 and isinstance(record, PreferencePair)
        else [f"response {i}" for i in range(len(responses))]
    )
    for name, text in zip(names, responses):
        if not text.strip():
            raise TruncatedAway(f"empty {name} response")
    prompt_ids = encode_prompt(tokenizer, prompt)
    sequences = []
    for name, text, eos in zip(names, responses, add_eos):
        try:
            sequences.append(
                join_truncated(prompt_ids, encode_response(tokenizer, text, add_eos=eos), max_length, max_prompt_length)
            )
        except TruncatedAway:
            raise TruncatedAway(f"{name} response truncated away") from None
    return EncodedRanking(sequences, scores, index)


def encode_rankings(
    tokenizer,
    records: Sequence[PreferencePair | RankedResponses],
    max_length: int,
    max_prompt_length: int | None = None,
) -> tuple[list[EncodedRanking], SkipReport]:
    """Encode every record (through the tokenisation cache); unusable ones are counted in the report and left out."""
    if not records:
        return _encode_rankings(tokenizer, records, max_length, max_prompt_length)
    key = fingerprint(tokenizer, records, "rankings", max_length=max_length, max_prompt_length=max_prompt_length)
    value, _ = cached(key, lambda: _encode_rankings(tokenizer, records, max_length, max_prompt_length))
    return value


def _encode_rankings(
    tokenizer,
    records: Sequence[PreferencePair | RankedResponses],
    max_length: int,
    max_prompt_length: int | None = None,
) -> tuple[list[EncodedRanking], SkipReport]:
    report, out = SkipReport(), []
    for i, record in enumerate(records):
        try:
            enc = encode_ranking(tokenizer, record, i, max_length, max_prompt_length)
        except TruncatedAway as exc:
            report.add(str(exc), i)
            continue
        report.truncated += int(enc.truncated)
        out.append(enc)
    sizes = {len(e.sequences) for e in out}
    if len(sizes) > 1:
        raise ValueError(
            f"rankings of different sizes {sorted(sizes)} cannot share batches; give every prompt the same number of "
            "responses"
        )
    return out, report


# ----------------------------------------------------------------------------- batches


def collate_rankings(batch: Sequence[EncodedRanking], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Row per response: ``input_ids`` / ``attention_mask`` / ``response_mask`` (K*B, T), ``scores`` and ``lengths``
    (B, K)."""
    k = len(batch[0].sequences)
    out = collate_encoded([r.sequences[j] for j in range(k) for r in batch], pad_token_id)
    out["token_mask"] = out["attention_mask"]  # (K*B, T) real tokens
    out["scores"] = torch.tensor([r.scores for r in batch], dtype=torch.float32)  # (B, K)
    out["lengths"] = torch.tensor(
        [[s.response_length for s in r.sequences] for r in batch], dtype=torch.float32
    )  # (B, K)
    return out


def collate_shared_prompt(
    batch: Sequence[EncodedRanking], pad_token_id: int, rows: Sequence[Sequence[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Shared prompt: ``prompt + response_0 + ... + response_{K-1}`` of each example, right-padded.

    Response k's tokens attend to the prompt and to response k's earlier tokens only, and their
    positions continue the prompt's (P, P+1, ...), so each response sees exactly the context of its
    own ``prompt + response`` sequence while the prompt is computed once. ``rows`` (the packed layout):
    the positions in ``batch`` of the examples placed one after another in each row (None: a row per
    example); an example sees nothing of the others in its row, and its positions start at 0.
    Returned: ``input_ids``, ``position_ids``, ``token_mask`` (R, T); ``attention_mask`` (R, 1, T, T)
    bool (True = attend; every position also attends to itself, so padding stays finite);
    ``predictors`` / ``targets`` / ``owners`` (M,): for each response token, the flat (r * T + t)
    index of the position whose output predicts it, the token, and its response's index b * K + k
    (b: the example's position in ``batch``); ``scores``, ``lengths`` (B, K).
    """
    rows = [[b] for b in range(len(batch))] if rows is None else rows
    k = len(batch[0].sequences)
    width = max(sum(batch[b].shared_length for b in row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 prompt, k + 1 response k, -1 padding
    example = torch.full((len(rows), width), -1, dtype=torch.long)  # the example (position in batch) of each token
    predictors, targets, owners = [], [], []
    for r, row_examples in enumerate(rows):
        row: list[int] = []
        for b in row_examples:
            ranking, offset = batch[b], len(row)
            prompt_length = ranking.sequences[0].prompt_length
            row += ranking.sequences[0].input_ids[:prompt_length]
            pos, seg = list(range(prompt_length)), [0] * prompt_length
            for j, seq in enumerate(ranking.sequences):
                response, start = seq.input_ids[seq.prompt_length :], len(row)
                last_prompt = offset + prompt_length - 1
                predictors += [r * width + (last_prompt if m == 0 else start + m - 1) for m in range(len(response))]
                targets += response
                owners += [b * k + j] * len(response)
                row += response
                pos += range(prompt_length, prompt_length + len(response))
                seg += [j + 1] * len(response)
            positions[r, offset : len(row)] = torch.tensor(pos)
            segment[r, offset : len(row)] = torch.tensor(seg)
            example[r, offset : len(row)] = b
        ids[r, : len(row)] = torch.tensor(row)
    real = segment >= 0  # (R, T)
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]  # (T, T) [i, j]: j at or before i
    same = example[:, None, :] == example[:, :, None]  # (R, T, T) the same example
    visible = same & ((segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None]))  # its prompt or own
    allowed = (causal & visible & real[:, None, :] & real[:, :, None]) | torch.eye(width, dtype=torch.bool)
    return {
        "input_ids": ids,
        "position_ids": positions,
        "token_mask": real.long(),
        "attention_mask": allowed[:, None],
        "predictors": torch.tensor(predictors, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "owners": torch.tensor(owners, dtype=torch.long),
        "scores": torch.tensor([r.scores for r in batch], dtype=torch.float32),
        "lengths": torch.tensor([[s.response_length for s in r.sequences] for r in batch], dtype=torch.float32),
    }


class MicroBatch(list):
    """The example indices of one forward pass, in batch order; ``rows`` (packed layout): for each row, the
    positions in this list of the examples that share it."""

    def __init__(self, indices: Sequence[int], rows: list[list[int]] | None = None):
        super().__init__(indices)
        self.rows = rows


def collate_group(
    layout: str, examples: Sequence[EncodedRanking], group: Sequence[int], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """The batch of the examples ``group`` (a micro-batch of :func:`length_sorted_groups`) in ``layout``."""
    batch = [examples[i] for i in group]
    if layout == ROW_PER_RESPONSE:
        return collate_rankings(batch, pad_token_id)
    return collate_shared_prompt(batch, pad_token_id, getattr(group, "rows", None) if layout == PACKED else None)


def pack_rows(widths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the positions of ``widths`` grouped into rows of at most ``capacity`` tokens (a wider
    item alone), each row's items longest first; rows fullest first. Ties keep the given order."""
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(widths)), key=lambda i: -widths[i]):
        for r, used in enumerate(fill):
            if used + widths[i] <= capacity:
                rows[r].append(i)
                fill[r] += widths[i]
                break
        else:
            rows.append([i])
            fill.append(widths[i])
    order = sorted(range(len(rows)), key=lambda r: -fill[r])
    return [rows[r] for r in order]


def packed_groups(
    examples: Sequence[EncodedRanking], indices: Sequence[int], max_rows: int, max_tokens: int | None = None
) -> list[MicroBatch]:
    """Micro-batches of the packed layout: the examples packed into rows no longer than the longest of them
    (:func:`pack_rows`), the rows cut into as few forward passes of at most ``max_rows`` rows (and, when
    ``max_tokens`` is set, at most that many padded positions) as fit, of balanced size."""
    if not indices:
        return []
    widths = [examples[i].shared_length for i in indices]
    capacity = max(widths)
    rows = pack_rows(widths, capacity)
    per_forward = max(1, min(max_rows, max_tokens // capacity)) if max_tokens is not None else max(1, max_rows)
    forwards = -(-len(rows) // per_forward)
    base, extra = divmod(len(rows), forwards)
    groups, first = [], 0
    for f in range(forwards):
        chunk = rows[first : first + base + (f < extra)]
        first += len(chunk)
        flat = [indices[p] for row in chunk for p in row]
        positions = iter(range(len(flat)))  # the rows' examples are consecutive in flat
        groups.append(MicroBatch(flat, [[next(positions) for _ in row] for row in chunk]))
    return groups


def length_sorted_groups(
    examples: Sequence[EncodedRanking],
    indices: Sequence[int],
    max_examples: int,
    max_tokens: int | None = None,
    layout: str = ROW_PER_RESPONSE,
) -> list[list[int]]:
    """Cut ``indices`` into micro-batches of similar length, longest first.

    A micro-batch holds at most ``max_examples`` rankings and, when ``max_tokens`` is set, at most
    that many padded positions (rows x longest row, for the batch ``layout``); a single longer
    ranking still forms its own micro-batch. Ties keep the given order, so the grouping is deterministic.
    In the packed layout ``max_examples`` bounds the rows of a forward pass instead, and several short
    examples may share a row (:func:`packed_groups`).
    """
    if layout == PACKED:
        return packed_groups(examples, indices, max_examples, max_tokens)
    order = sorted(indices, key=lambda i: -examples[i].width(layout))
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            width = examples[group[0]].width(layout)  # sorted: the first is the longest
            padded = examples[i].rows(layout) * (len(group) + 1) * width
            if len(group) < max_examples and (max_tokens is None or padded <= max_tokens):
                group.append(i)
                continue
        groups.append([i])
    return groups
