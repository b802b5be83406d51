"""Reading raw rows from any supported source, with positions, and the drop report for malformed rows.

The formats and what a row's position means are in :mod:`prefalign.data.formats`.

A row adapter raises :class:`~prefalign.data.schema.DataError` for a malformed row;
:func:`read_records` either stops at the first one (``strict=True``), naming file, line and
field, or records it in a :class:`DropReport` (every dropped row, with its file, line or row
index, field and reason; :meth:`DropReport.write` saves them as ``dropped.jsonl``) and goes on.
A row holding a byte that is not valid UTF-8 is such a malformed row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefalign.atomic import write_jsonl_atomic
from prefalign.data.formats import check_utf8, iter_source
from prefalign.data.schema import DataError

T = TypeVar("T")


def iter_rows(
    path: str | Path, *, strict: bool = False, report: DropReport | None = None, split: str | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, row)`` for every row of a source. Undecodable lines are dropped or raised."""
    for line, row in iter_source(path, split):
        if isinstance(row, DataError):
            if strict or report is None:
                raise row
            report.add(row)
            continue
        yield line, row


@dataclass
class DropReport:
    """Counts of dropped rows by reason, with the first few errors kept verbatim."""

    source: str = ""
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5
    skipped: Counter = field(default_factory=Counter)
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Every dropped row: ``{"source", "line" (or "row"), "field", "reason"}``."""

    def add(self, err: DataError) -> None:
        self.dropped[err.reason.split(" (")[0]] += 1
        self.rows.append({"source": err.source, err.unit: err.line, "field": err.field, "reason": err.reason})
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    def merge(self, other: DropReport) -> None:
        """Add another report's counts and rows (a separate evaluation file)."""
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.skipped.update(other.skipped)
        self.rows.extend(other.rows)
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])
        if other.source and other.source not in self.source.split(" + "):
            self.source = f"{self.source} + {other.source}" if self.source else other.source

    def write(self, path: str | Path) -> Path:
        """Every dropped row as one JSON object a line (atomically; an empty file when none was dropped)."""
        return write_jsonl_atomic(path, self.rows)

    def details(self) -> str:
        """The first few dropped rows, one a line (empty when none was dropped)."""
        if not self.examples:
            return ""
        more = self.total_dropped - len(self.examples)
        lines = [f"  dropped: {e}" for e in self.examples]
        if more > 0:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count rows left out on purpose (a filter, tied scores): not malformed, never raised."""
        self.skipped[reason] += n

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        head = f"{self.source or 'data'}: kept {self.kept} rows, dropped {self.total_dropped}"
        if self.dropped:
            head += f" ({'; '.join(f'{n} x {reason}' for reason, n in self.dropped.most_common())})"
        if self.skipped:
            reasons = "; ".join(f"{n} x {reason}" for reason, n in self.skipped.most_common())
            head += f", skipped {self.total_skipped} ({reasons})"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "skipped": dict(self.skipped),
            "dropped_total": self.total_dropped,
            "examples": list(self.examples),
        }


def read_records(
    rows: Iterable[tuple[int, Any]],
    parse_row: Callable[[Any], T | list[T] | None],
    *,
    source: str,
    strict: bool = False,
    report: DropReport | None = None,
    unit: str = "line",
) -> list[T]:
    """Apply ``parse_row`` to each ``(line, row)``; a ``DataError`` is raised (strict) or counted.

    ``parse_row`` may return one record, a list of records (a row that yields several pairs), or
    ``None`` for a row deliberately skipped by a filter (not counted as malformed; the adapter
    may say why with :meth:`DropReport.skip`). ``unit`` names what ``line`` counts (``line`` or ``row``).
    """
    report = report if report is not None else DropReport(source=source)
    report.source = report.source or source
    out: list[T] = []
    for line, row in rows:
        try:
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}")
            check_utf8(row)
            parsed = parse_row(row)
        except DataError as err:
            err = DataError(err.reason, source=source, line=line, field=err.field, unit=unit)
            if strict:
                raise err from None
            report.add(err)
            continue
        if parsed is None:
            continue
        if isinstance(parsed, list):
            out.extend(parsed)
            report.kept += len(parsed)
        else:
            out.append(parsed)
            report.kept += 1
    return out
