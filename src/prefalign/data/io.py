"""Reading raw rows from files, with line numbers, and the drop report for malformed rows.

Formats by suffix: ``.jsonl`` / ``.jsonl.gz`` (one JSON object a line; line numbers are the
file's), ``.json`` / ``.json.gz`` (a list of objects, or ``{"data": [...]}``; "line" is the
1-based index in the list), ``.parquet`` (1-based row index).

A row adapter raises :class:`~prefalign.data.schema.DataError` for a malformed row;
:func:`read_records` either stops at the first one (``strict=True``), naming file, line and
field, or counts it in a :class:`DropReport` and goes on.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefalign.data.schema import DataError

T = TypeVar("T")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_rows(path: str | Path, *, strict: bool = False, report: DropReport | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, row)`` for every row of a file. Undecodable lines are dropped or raised."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
        return
    if name.endswith((".jsonl", ".jsonl.gz")):
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    err = DataError(
                        f"undecodable JSON ({exc.msg} at column {exc.colno})", source=str(path), line=lineno
                    )
                    if strict or report is None:
                        raise err from None
                    report.add(err)
        return
    if name.endswith((".json", ".json.gz")):
        with _open_text(path) as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise DataError(f"undecodable JSON ({exc.msg})", source=str(path), line=exc.lineno) from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError("expected a JSON list of rows (or {'data': [...]})", source=str(path))
        yield from enumerate(data, start=1)
        return
    raise DataError(
        f"unknown data file format {path.suffix!r}; use .jsonl, .jsonl.gz, .json or .parquet", source=str(path)
    )


@dataclass
class DropReport:
    """Counts of dropped rows by reason, with the first few errors kept verbatim."""

    source: str = ""
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5
    skipped: Counter = field(default_factory=Counter)

    def add(self, err: DataError) -> None:
        self.dropped[err.reason.split(" (")[0]] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

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
            "examples": list(self.examples),
        }


def read_records(
    rows: Iterable[tuple[int, Any]],
    parse_row: Callable[[Any], T | list[T] | None],
    *,
    source: str,
    strict: bool = False,
    report: DropReport | None = None,
) -> list[T]:
    """Apply ``parse_row`` to each ``(line, row)``; a ``DataError`` is raised (strict) or counted.

    ``parse_row`` may return one record, a list of records (a row that yields several pairs), or
    ``None`` for a row deliberately skipped by a filter (not counted as malformed; the adapter
    may say why with :meth:`DropReport.skip`).
    """
    report = report if report is not None else DropReport(source=source)
    report.source = report.source or source
    out: list[T] = []
    for line, row in rows:
        try:
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}")
            parsed = parse_row(row)
        except DataError as err:
            err = DataError(err.reason, source=source, line=line, field=err.field)
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
