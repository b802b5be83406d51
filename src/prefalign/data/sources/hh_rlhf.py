r"""Anthropic HH-RLHF (Bai et al., 2022): dialogue preference data of Xu et al. (2024, Table 2) and Ivison et al.
(2024, Table 1).

A row is ``{"chosen": str, "rejected": str}``, each a whole dialogue
``"\n\nHuman: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant: ..."``. The two dialogues
share every turn but the last Assistant one. We parse both into turns (Human -> ``user``,
Assistant -> ``assistant``): the shared history becomes the prompt (ending with a user turn) and
the two last Assistant turns become ``chosen`` and ``rejected``.

Quirks of the real files and what we do (figures measured on the 2,000-pair harmless-base
sample; tests/data/test_hh_rlhf.py re-derives them):

- a final Assistant turn that is empty (``"...\n\nAssistant: "``; 4 rows, all in ``chosen``):
  dropped, reason "empty final assistant turn";
- the same speaker twice in a row (``"\n\nAssistant: a\n\nAssistant: b"``; 8 rows): the turns are
  merged into one, joined by a blank line, since the marker only restarts the same speaker's text.
  In 5 of these rows only one side repeats the speaker in its last turn, so cutting at the last
  marker would give the two sides different histories; merged, they agree.
  ``merge_repeated_turns=False`` drops such rows instead (reason "same speaker twice in a row").
  When the second part itself starts with the "Human:" artefact below, the merged turn contains
  "\n\nHuman:" as text (1 row of the sample);
- chosen and rejected disagreeing before their last Assistant turn (none left in the sample once
  repeated turns are merged): dropped, reason "chosen and rejected differ before the last
  assistant turn";
- chosen identical to rejected: dropped, reason "chosen identical to rejected";
- empty turns elsewhere: dropped, reason "empty turn";
- ``"Human:"`` inside an Assistant turn without the blank line before it (an artefact of the
  collection, in 37 rows of the sample): kept as text, as upstream loaders (Rafailov et al.'s DPO
  code, HALOs) do;
- every turn's surrounding whitespace is stripped.

Departure from the DPO reference code, which cuts the dialogue at the last ``"\n\nAssistant:"``
string: we compare the parsed turns, so rows whose histories differ are dropped rather than
silently given the chosen dialogue's history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message, PreferencePair, SFTExample
from prefalign.data.sources.jsonl import load_records, require_text
from prefalign.paths import data_path

SPEAKERS = {"Human": "user", "Assistant": "assistant"}
_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")


def parse_hh_dialogue(text: str, *, field: str = "text", merge_repeated_turns: bool = True) -> list[Message]:
    """The turns of one HH dialogue string, in order.

    Raises DataError (naming ``field``) for text before the first turn, no turns at all, an empty
    turn, or (with ``merge_repeated_turns=False``) the same speaker twice in a row.
    """
    parts = _TURN.split(text)
    if len(parts) < 3:
        raise DataError("no Human/Assistant turns", field=field)
    if parts[0].strip():
        raise DataError("text before the first turn", field=field)
    messages: list[Message] = []
    for k, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2]), start=1):
        content = content.strip()
        if not content:
            last = k == len(parts) // 2
            reason = (
                "empty final assistant turn" if last and speaker == "Assistant" else f"empty turn (turn {k}, {speaker})"
            )
            raise DataError(reason, field=field)
        role = SPEAKERS[speaker]
        if messages and messages[-1].role == role:
            if not merge_repeated_turns:
                raise DataError(f"same speaker twice in a row (turn {k}, {speaker})", field=field)
            messages[-1] = Message(role, f"{messages[-1].content}\n\n{content}")
        else:
            messages.append(Message(role, content))
    return messages


def _split_response(messages: list[Message], field: str) -> tuple[list[Message], str]:
    """(history, last assistant turn)."""
    if messages[-1].role != "assistant":
        raise DataError("dialogue does not end with an assistant turn", field=field)
    if len(messages) < 2:
        raise DataError("no user turn before the response", field=field)
    return messages[:-1], messages[-1].content


def _first_difference(a: list[Message], b: list[Message]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b), start=1) if x != y), min(len(a), len(b)) + 1)


def hh_row_to_pair(row: Mapping[str, Any], *, merge_repeated_turns: bool = True) -> PreferencePair:
    """One HH-RLHF row as a PreferencePair (prompt = shared history, responses = last turns)."""
    chosen_text, rejected_text = require_text(row, "chosen"), require_text(row, "rejected")
    if chosen_text == rejected_text:
        raise DataError("chosen identical to rejected", field="rejected")
    chosen = parse_hh_dialogue(chosen_text, field="chosen", merge_repeated_turns=merge_repeated_turns)
    rejected = parse_hh_dialogue(rejected_text, field="rejected", merge_repeated_turns=merge_repeated_turns)
    prompt, chosen_response = _split_response(chosen, "chosen")
    rejected_prompt, rejected_response = _split_response(rejected, "rejected")
    if prompt != rejected_prompt:
        turn = _first_difference(prompt, rejected_prompt)
        raise DataError(f"chosen and rejected differ before the last assistant turn (turn {turn})", field="rejected")
    if chosen_response == rejected_response:
        raise DataError("chosen identical to rejected", field="rejected")
    return PreferencePair(prompt, chosen_response, rejected_response, {"source": "hh-rlhf"})


def load_hh_rlhf(
    path: str | Path | None = None,
    *,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
    merge_repeated_turns: bool = True,
) -> list[PreferencePair]:
    """HH-RLHF pairs from a ``.jsonl[.gz]`` file (default: the harmless-base sample in the data folder).

    Malformed rows are dropped and counted in ``report`` (or raised with ``strict=True``);
    ``limit`` keeps a deterministic subset of that many pairs chosen by ``seed``.
    """
    path = Path(path) if path is not None else data_path("hh-rlhf", "harmless-base.jsonl.gz")
    return load_records(
        path,
        lambda row: hh_row_to_pair(row, merge_repeated_turns=merge_repeated_turns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
    )


def hh_sft_examples(pairs: Iterable[PreferencePair]) -> list[SFTExample]:
    """The chosen responses as SFT examples: SFT on the preference data (Xu et al. 2024, Table 2)."""
    return [SFTExample(list(p.prompt), p.chosen, {**p.metadata, "from": "chosen"}) for p in pairs]
