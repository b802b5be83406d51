"""Bring your own data: JSON / JSONL / Parquet files, ``datasets.Dataset`` objects or lists of dicts.

A column mapping says which of the user's columns holds each canonical field, e.g.
``{"prompt": "question", "chosen": "good", "rejected": "bad"}``. Accepted shapes:

- ``prompt``: a string (one user turn, optionally after a ``system`` column) or a list of
  ``{"role", "content"}`` messages ending with a user turn;
- ``chosen`` / ``rejected`` / ``response``: a string, or a list of messages whose last one is the
  assistant's response. A list longer than one message carries its own prompt (the binarized
  UltraFeedback and TRL "conversational" forms); if a ``prompt`` column is present as well the two
  must agree (compared turn by turn, surrounding whitespace ignored);
- ``messages`` (SFT only): a whole conversation whose last turn is the response.

Columns named in ``metadata_columns`` are copied into each record's ``metadata``; every record also
gets ``metadata["line"]``, the 1-based line (or row) it came from.

This module also holds the row helpers the other adapters share (``require_text``,
``parse_messages``, ``load_records`` ...), so each adapter stays a small function of a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefalign.data.io import DropReport, iter_rows, read_records
from prefalign.data.sampling import downsample
from prefalign.data.schema import DataError, Message, PreferencePair, Prompt, SFTExample

T = TypeVar("T")

PAIR_COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system"}
SFT_COLUMNS = {"prompt": "prompt", "response": "response", "system": "system"}
PROMPT_COLUMNS = {"prompt": "prompt", "system": "system"}


# ----------------------------------------------------------------------------- row helpers


class SkipRow(Exception):
    """Raised by a row parser for a well-formed row left out on purpose (tied scores, a filter).

    :func:`load_records` counts it in the report under ``reason`` as skipped, never as malformed,
    and never stops on it in strict mode.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


# ----------------------------------------------------------------------------- reading sources


def describe_source(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    info = getattr(source, "info", None)
    name = getattr(info, "dataset_name", None) if info is not None else None
    return f"<datasets.Dataset {name}>" if name else f"<{type(source).__name__}>"


def source_rows(source: Any, *, strict: bool, report: DropReport) -> Iterator[tuple[int, Any]]:
    """``(line, row)`` pairs from a file path, a ``datasets.Dataset`` or any iterable of dicts."""
    if isinstance(source, (str, Path)):
        return iter_rows(source, strict=strict, report=report)
    if isinstance(source, Mapping):
        raise TypeError("expected a file path, a datasets.Dataset or a list of row dicts, not one dict")
    return enumerate(source, start=1)


def _counting_skips(parse_row: Callable[[Any], Any], report: DropReport) -> Callable[[Any], Any]:
    def parse(row: Any) -> Any:
        try:
            return parse_row(row)
        except SkipRow as skip:
            report.skip(skip.reason)
            return None

    return parse


def parse_with_lines(
    rows: Iterable[tuple[int, Any]], parse_row: Callable[[Any], Any], *, source: str, strict: bool, report: DropReport
) -> list:
    """:func:`read_records`, adding each record's line to its ``metadata`` and counting :class:`SkipRow`."""
    out: list = []
    parse = _counting_skips(parse_row, report)
    for line, row in rows:
        for record in read_records([(line, row)], parse, source=source, strict=strict, report=report):
            if isinstance(getattr(record, "metadata", None), dict):
                record.metadata.setdefault("line", line)
            out.append(record)
    return out


def apply_limit(records: list[T], limit: int | None, seed: int, report: DropReport) -> list[T]:
    """Deterministic down-sampling to ``limit`` records (all when ``None``), counted in the report."""
    if limit is None or limit >= len(records):
        return records
    kept = downsample(records, limit, seed)
    report.skip("left out by down-sampling", len(records) - len(kept))
    report.kept -= len(records) - len(kept)
    return kept


def load_records(
    source: Any,
    parse_row: Callable[[Any], Any],
    *,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list:
    """Read, parse (dropping or raising on malformed rows), then down-sample to ``limit``."""
    name = describe_source(source)
    report = report if report is not None else DropReport()
    report.source = report.source or name
    rows = source_rows(source, strict=strict, report=report)
    records = parse_with_lines(rows, parse_row, source=name, strict=strict, report=report)
    return apply_limit(records, limit, seed, report)


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


def row_to_sft(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, metadata_columns: Sequence[str] = ()
) -> SFTExample:
    """One SFT example from a row: ``prompt`` + ``response`` columns, or a whole ``messages`` column."""
    cols = _columns(SFT_COLUMNS, columns)
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
) -> list[SFTExample]:
    """SFT examples from a file, a ``datasets.Dataset`` or a list of dicts."""
    cols = _columns(SFT_COLUMNS, columns)
    return load_records(
        source,
        lambda row: row_to_sft(row, cols, metadata_columns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
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
) -> list[Prompt]:
    """Prompts from a file, a ``datasets.Dataset`` or a list of dicts."""
    cols = _columns(PROMPT_COLUMNS, columns)
    return load_records(
        source,
        lambda row: row_to_prompt(row, cols, metadata_columns),
        strict=strict,
        report=report,
        limit=limit,
        seed=seed,
    )
