"""Bring your own data: any format of :mod:`prefalign.data.formats`, ``datasets.Dataset`` objects or lists of dicts.

TRL's data formats are recognised without a mapping (each "standard" with strings or
"conversational" with lists of ``{"role", "content"}`` messages):

- SFT: ``{"messages"}``, ``{"prompt", "completion"}`` and our own ``{"prompt", "response"}``;
- preference: ``{"prompt", "chosen", "rejected"}`` and the implicit-prompt ``{"chosen", "rejected"}``
  (conversations that carry their prompt);
- prompt-only: ``{"prompt"}`` (also ``{"messages"}`` ending with a user turn).

Anything else takes a column mapping says which of the user's columns holds each canonical field, e.g.
``{"prompt": "question", "chosen": "good", "rejected": "bad"}``. Accepted shapes:

- ``prompt``: a string (one user turn, optionally after a ``system`` column) or a list of
  ``{"role", "content"}`` messages ending with a user turn;
- ``chosen`` / ``rejected`` / ``response``: a string, or a list of messages whose last one is the
  assistant's response. A list longer than one message carries its own prompt (the binarized
  UltraFeedback and TRL "conversational" forms); if a ``prompt`` column is present as well the two
  must agree (compared turn by turn, surrounding whitespace ignored);
- ``messages`` (SFT only): a whole conversation whose last turn is the response;
- ``completion`` (SFT): TRL's name for the response, used when there is no ``response`` column.

Columns named in ``metadata_columns`` are copied into each record's ``metadata``; every record also
gets ``metadata["line"]``, the 1-based line (or row) it came from.

This module also holds the row helpers the other adapters share (``require_text``,
``parse_messages``, ``load_records`` ...), so each adapter stays a small function of a row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message, PreferencePair, Prompt, SFTExample
from prefalign.data.sources.reading import (
    SkipRow,
    apply_limit,
    describe_source,
    load_records,
    parse_with_lines,
    source_rows,
)

T = TypeVar("T")

PAIR_COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system"}
SFT_COLUMNS = {"prompt": "prompt", "response": "response", "system": "system"}
PROMPT_COLUMNS = {"prompt": "prompt", "system": "system"}


__all__ = [
    "SkipRow",
    "apply_limit",
    "describe_source",
    "load_pairs",
    "load_prompts",
    "load_records",
    "load_sft_examples",
    "parse_with_lines",
    "source_rows",
]

# ----------------------------------------------------------------------------- row helpers


def require(row: Mapping[str, Any], field: str) -> Any:
    """``row[field]``, or a DataError naming the field when it is absent or null."""
    if field not in row:
        raise DataError("missing field", field=field)
    if row[field] is None:
        raise DataError("missing field (value is null)", field=field)
    return row[field]


def require_text(row: Mapping[str, Any], field: str) -> str:
    """A non-empty string field; surrounding whitespace is kept."""
    value = require(row, field)
    if not isinstance(value, str):
        raise DataError(f"expected a string (got {type(value).__name__})", field=field)
    if not value.strip():
        raise DataError("empty text", field=field)
    return value


def require_number(row: Mapping[str, Any], field: str) -> float:
    """A finite number (int or float, not bool)."""
    value = require(row, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"expected a number (got {type(value).__name__})", field=field)
    if not math.isfinite(value):
        raise DataError(f"expected a finite number (got {value})", field=field)
    return float(value)


def require_bool(row: Mapping[str, Any], field: str) -> bool:
    """A boolean; the integers 0 and 1 are accepted too."""
    value = require(row, field)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DataError(f"expected true or false (got {value!r})", field=field)


def parse_messages(value: Any, field: str) -> list[Message]:
    """A list of ``{"role", "content"}`` dicts as Messages; every turn must have text."""
    if not isinstance(value, list):
        raise DataError(f"expected a string or a list of messages (got {type(value).__name__})", field=field)
    if not value:
        raise DataError("expected a non-empty list of messages", field=field)
    out = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise DataError(f"expected a message object (got {type(item).__name__})", field=where)
        try:
            message = Message(require(item, "role"), require(item, "content"))
        except DataError as err:
            raise DataError(err.reason, field=f"{where}.{err.field}") from None
        if not message.content.strip():
            raise DataError("empty turn", field=f"{where}.content")
        out.append(message)
    return out


def same_turns(a: Sequence[Message], b: Sequence[Message]) -> bool:
    """Equal roles and texts, surrounding whitespace ignored."""
    return len(a) == len(b) and all(x.role == y.role and x.content.strip() == y.content.strip() for x, y in zip(a, b))


def prompt_messages(value: Any, field: str, system: str | None = None) -> list[Message]:
    """A prompt given as a string (one user turn) or as messages ending with a user turn."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError("empty text", field=field)
        messages = [Message("user", value)]
    else:
        messages = parse_messages(value, field)
    if messages[-1].role != "user":
        raise DataError("prompt must end with a user turn", field=field)
    if system and messages[0].role != "system":
        messages = [Message("system", system), *messages]
    return messages


def response_and_history(value: Any, field: str) -> tuple[str, list[Message]]:
    """A response as a string, or as messages whose last (assistant) turn is the response."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError("empty text", field=field)
        return value, []
    messages = parse_messages(value, field)
    if messages[-1].role != "assistant":
        raise DataError("last message must be the assistant's response", field=field)
    return messages[-1].content, messages[:-1]


# ----------------------------------------------------------------------------- generic adapters


def _columns(defaults: dict[str, str], columns: Mapping[str, str] | None) -> dict[str, str]:
    unknown = set(columns or {}) - set(defaults) - {"messages"}
    if unknown:
        raise ValueError(f"unknown canonical fields {sorted(unknown)}; expected some of {sorted(defaults)}")
    return {**defaults, **(columns or {})}


def _optional_prompt(row: Mapping[str, Any], cols: dict[str, str]) -> list[Message] | None:
    if cols["prompt"] not in row or row[cols["prompt"]] is None:
        return None
    system = row.get(cols["system"]) if isinstance(row.get(cols["system"]), str) else None
    return prompt_messages(row[cols["prompt"]], cols["prompt"], system)


def _settle_prompt(given: list[Message] | None, history: list[Message], field: str, prompt_field: str) -> list[Message]:
    """The prompt from the prompt column, the conversation's history, or both when they agree.

    A ``system`` turn added from the system column may be missing from the conversation.
    """
    without_system = given[1:] if given and given[0].role == "system" else given
    if history and given is not None and not (same_turns(history, given) or same_turns(history, without_system)):
        raise DataError("prompt differs from the conversation", field=field)
    if history:
        if history[-1].role != "user":
            raise DataError("the turn before the response must be a user turn", field=field)
        return history
    if given is None:
        raise DataError("missing field", field=prompt_field)
    return given


def _metadata(row: Mapping[str, Any], metadata_columns: Sequence[str]) -> dict[str, Any]:
    return {name: row[name] for name in metadata_columns if name in row}


def row_to_pair(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, metadata_columns: Sequence[str] = ()
) -> PreferencePair:
    """One preference pair from a row, through the column mapping."""
    cols = _columns(PAIR_COLUMNS, columns)
    given = _optional_prompt(row, cols)
    chosen, chosen_history = response_and_history(require(row, cols["chosen"]), cols["chosen"])
    rejected, rejected_history = response_and_history(require(row, cols["rejected"]), cols["rejected"])
    prompt = _settle_prompt(given, chosen_history, cols["chosen"], cols["prompt"])
    if rejected_history and not same_turns(
        _settle_prompt(given, rejected_history, cols["rejected"], cols["prompt"]), prompt
    ):
        raise DataError("chosen and rejected conversations have different prompts", field=cols["rejected"])
    if chosen.strip() == rejected.strip():
        raise DataError("chosen identical to rejected", field=cols["rejected"])
    return PreferencePair(prompt, chosen, rejected, _metadata(row, metadata_columns))


def _trl_sft_columns(row: Mapping[str, Any], cols: dict[str, str]) -> dict[str, str]:
    """TRL's SFT forms, when the user mapped neither prompt nor response: ``completion`` names the
    response where there is no ``response`` column; a lone ``messages`` column is a whole conversation."""
    if cols["response"] not in row and "completion" in row:
        return {**cols, "response": "completion"}
    if cols["response"] not in row and cols["prompt"] not in row and "messages" in row:
        return {**cols, "messages": "messages"}
    return cols


def row_to_sft(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, metadata_columns: Sequence[str] = ()
) -> SFTExample:
    """One SFT example from a row: ``prompt`` + ``response`` columns, or a whole ``messages`` column."""
    cols = _columns(SFT_COLUMNS, columns)
    if "messages" not in cols and not (columns and ("response" in columns or "prompt" in columns)):
        cols = _trl_sft_columns(row, cols)
    if "messages" in cols:
        response, history = response_and_history(require(row, cols["messages"]), cols["messages"])
        prompt = _settle_prompt(None, history, cols["messages"], cols["messages"])
    else:
        response, history = response_and_history(require(row, cols["response"]), cols["response"])
        prompt = _settle_prompt(_optional_prompt(row, cols), history, cols["response"], cols["prompt"])
    return SFTExample(prompt, response, _metadata(row, metadata_columns))


def row_to_prompt(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, metadata_columns: Sequence[str] = ()
) -> Prompt:
    """One prompt (for rollouts or evaluation) from a row."""
    cols = _columns(PROMPT_COLUMNS, columns)
    if not columns and cols["prompt"] not in row and "messages" in row:
        cols = {**cols, "prompt": "messages"}
    messages = _optional_prompt(row, cols)
    if messages is None:
        raise DataError("missing field", field=cols["prompt"])
    return Prompt(messages, _metadata(row, metadata_columns))


def load_pairs(
    source: Any,
    *,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
) -> list[PreferencePair]:
    """Preference pairs from a file, a ``datasets.Dataset`` or a list of dicts."""
    cols = _columns(PAIR_COLUMNS, columns)
    return load_records(
        source,
        lambda row: row_to_pair(row, cols, metadata_columns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
        split=split,
    )


def load_sft_examples(
    source: Any,
    *,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
) -> list[SFTExample]:
    """SFT examples from a file, a ``datasets.Dataset`` or a list of dicts."""
    _columns(SFT_COLUMNS, columns)  # unknown fields fail before any row is read
    return load_records(
        source,
        lambda row: row_to_sft(row, columns, metadata_columns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
        split=split,
    )


def load_prompts(
    source: Any,
    *,
    columns: Mapping[str, str] | None = None,
    metadata_columns: Sequence[str] = (),
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
    split: str | None = None,
) -> list[Prompt]:
    """Prompts from a file, a ``datasets.Dataset`` or a list of dicts."""
    _columns(PROMPT_COLUMNS, columns)  # unknown fields fail before any row is read
    return load_records(
        source,
        lambda row: row_to_prompt(row, columns, metadata_columns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
        split=split,
    )
