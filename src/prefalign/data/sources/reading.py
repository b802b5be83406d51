"""Reading a source into records: rows with their positions, parsed, malformed ones dropped or raised,
filtered ones counted, then a deterministic down-sample (shared by every adapter)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from prefalign.data.formats import position_unit
from prefalign.data.io import DropReport, iter_rows, read_records
from prefalign.data.sampling import downsample

T = TypeVar("T")


class SkipRow(Exception):
    """Raised by a row parser for a well-formed row left out on purpose (tied scores, a filter).

    :func:`load_records` counts it in the report under ``reason`` as skipped, never as malformed,
    and never stops on it in strict mode.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def describe_source(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    info = getattr(source, "info", None)
    name = getattr(info, "dataset_name", None) if info is not None else None
    return f"<datasets.Dataset {name}>" if name else f"<{type(source).__name__}>"


def source_rows(
    source: Any, *, strict: bool, report: DropReport, split: str | None = None
) -> Iterator[tuple[int, Any]]:
    """``(line, row)`` pairs from a path or hub id, a ``datasets.Dataset`` or any iterable of dicts."""
    if isinstance(source, (str, Path)):
        return iter_rows(source, strict=strict, report=report, split=split)
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
    rows: Iterable[tuple[int, Any]],
    parse_row: Callable[[Any], Any],
    *,
    source: str,
    strict: bool,
    report: DropReport,
    unit: str = "line",
) -> list:
    """:func:`read_records`, adding each record's line to its ``metadata`` and counting :class:`SkipRow`."""
    out: list = []
    parse = _counting_skips(parse_row, report)
    for line, row in rows:
        for record in read_records([(line, row)], parse, source=source, strict=strict, report=report, unit=unit):
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
    split: str | None = None,
) -> list:
    """Read, parse (dropping or raising on malformed rows), then down-sample to ``limit``."""
    name = describe_source(source)
    report = report if report is not None else DropReport()
    report.source = report.source or name
    rows = source_rows(source, strict=strict, report=report, split=split)
    unit = position_unit(source)
    records = parse_with_lines(rows, parse_row, source=name, strict=strict, report=report, unit=unit)
    return apply_limit(records, limit, seed, report)
