"""Readers for every data format, each yielding ``(position, row)`` with the row's place in its source.

=================================  ==========================================  ====================
source                             read with                                   position
=================================  ==========================================  ====================
``.jsonl`` / ``.jsonl.gz``         one JSON object a line (our own reader)     file line
``.json`` / ``.json.gz``           a list of objects, or ``{"data": [...]}``   1-based list index
``.csv`` / ``.csv.gz``             Python's ``csv`` (header row first)         file line of the row
``.parquet``                       ``pyarrow``                                 1-based row index
``.arrow``                         ``datasets.Dataset.from_file``              1-based row index
a ``save_to_disk`` folder          ``datasets.load_from_disk`` (+ ``split``)   1-based row index
a hub id (``owner/name``)          ``datasets.load_dataset(id, split=...)``    1-based row index
=================================  ==========================================  ====================

Text files are read as bytes and decoded line by line, so a line that is not valid UTF-8 is a
malformed row like any other (dropped with its line and field, or raised in strict mode) and every
other row of the file is kept. JSONL and CSV are read by our own code rather than through
``datasets`` (departure): its JSON and CSV builders stop at the first bad line and know no line
numbers. A hub id is only tried when the user's environment allows the network
(``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` unset or false); local files and folders never touch it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prefalign.data.schema import DataError

TABLE_SUFFIXES = (".parquet", ".arrow")
TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz")
FORMATS_HELP = ".jsonl, .json, .csv (each optionally .gz), .parquet, .arrow, a save_to_disk folder or a hub id"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def hub_offline(datasets: bool = True) -> bool:
    """True when the user's environment forbids the hub: ``HF_HUB_OFFLINE``, or for data sets also
    ``HF_DATASETS_OFFLINE``."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in names)


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith(TEXT_SUFFIXES + TABLE_SUFFIXES)


def is_disk_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def position_unit(source: Any) -> str:
    """What a row's position counts: ``line`` for JSONL and CSV files, ``row`` for everything else."""
    name = str(source).lower() if isinstance(source, (str, Path)) else ""
    return "line" if name.endswith((".jsonl", ".jsonl.gz", ".csv", ".csv.gz")) else "row"


def _read_bytes(path: Path) -> bytes:
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def _decode(raw: bytes) -> str:
    """UTF-8 with each invalid byte kept as a lone surrogate, so the row holding it can be found and dropped."""
    return raw.decode("utf-8", errors="surrogateescape")


def check_utf8(row: Any, field: str | None = None) -> None:
    """Raise DataError naming the field of the first string holding a byte that was not valid UTF-8."""
    if isinstance(row, str):
        bad = _BAD_BYTE.search(row)
        if bad:
            byte = ord(bad.group()) - 0xDC00
            raise DataError(f"not valid UTF-8 (byte 0x{byte:02x} at character {bad.start() + 1})", field=field)
    elif isinstance(row, Mapping):
        for key, value in row.items():
            check_utf8(value, f"{field}.{key}" if field else str(key))
    elif isinstance(row, list):
        for i, value in enumerate(row):
            check_utf8(value, f"{field}[{i}]" if field else f"[{i}]")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        line = _decode(raw)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad = _BAD_BYTE.search(line)
            reason = "not valid UTF-8" if bad else "undecodable JSON"
            yield lineno, DataError(f"{reason} ({exc.msg} at column {exc.colno})", source=str(path), line=lineno)
            continue
        yield lineno, row


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(_decode(_read_bytes(path)))
    except json.JSONDecodeError as exc:
        raise DataError(f"undecodable JSON ({exc.msg})", source=str(path), line=exc.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError("expected a JSON list of rows (or {'data': [...]})", source=str(path))
    yield from enumerate(data, start=1)


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    reader = csv.reader(io.StringIO(_decode(_read_bytes(path)), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataError(f"unreadable CSV header ({exc})", source=str(path), line=1) from None
    check = [h for h in header if _BAD_BYTE.search(h)]
    if check:
        raise DataError("header is not valid UTF-8", source=str(path), line=1)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, DataError(f"unreadable CSV row ({exc})", source=str(path), line=start)
            start = reader.line_num + 1
            continue
        if cells:
            if len(cells) > len(header):
                yield (
                    start,
                    DataError(f"{len(cells)} cells for {len(header)} header columns", source=str(path), line=start),
                )
            else:
                yield start, dict(zip(header, cells + [None] * (len(header) - len(cells))))
        start = reader.line_num + 1


def _select_split(data: Any, split: str | None, where: str) -> Any:
    from datasets import DatasetDict

    if not isinstance(data, DatasetDict):
        return data
    if split is None or split not in data:
        raise ValueError(f"{where}: split {split!r} not found; splits: {', '.join(data)} (set data.split)")
    return data[split]


def load_hub_dataset(name: str, split: str | None) -> Any:
    """``datasets.load_dataset(name, split=split)``, where the user's environment allows the hub."""
    if hub_offline():
        raise ValueError(
            f"{name!r} is not a local file or folder, and the hub is off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE "
            f"is set): unset it to load {name!r} from the hub, or give a local path ({FORMATS_HELP})"
        )
    import datasets

    try:
        return _select_split(datasets.load_dataset(name, split=split), split, name)
    except ValueError:
        raise
    except Exception as exc:  # network, missing repo, unknown split: one line naming the id
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load {name!r} (split {split!r}) from the hub: {first}") from exc


def _table_rows(path: Path, split: str | None) -> Iterator[tuple[int, Any]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif name.endswith(".arrow"):
        import datasets

        table = datasets.Dataset.from_file(str(path))
    else:
        import datasets

        table = _select_split(datasets.load_from_disk(str(path)), split, str(path))
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table
    yield from enumerate(rows, start=1)


def iter_source(path: str | Path, split: str | None = None) -> Iterator[tuple[int, Any]]:
    """``(position, row)`` for every row; a malformed text line comes as ``(position, DataError)``."""
    text = str(path)
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        if isinstance(text, str) and looks_like_hub_id(text):
            yield from enumerate(load_hub_dataset(text, split), start=1)
            return
        raise FileNotFoundError(f"data file not found: {path}")
    if path.is_dir():
        if not is_disk_dataset(path):
            raise DataError(f"a folder that is not a save_to_disk data set; use {FORMATS_HELP}", source=text)
        yield from _table_rows(path, split)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_rows(path)
    elif name.endswith((".json", ".json.gz")):
        yield from _json_rows(path)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _csv_rows(path)
    elif name.endswith(TABLE_SUFFIXES):
        yield from _table_rows(path, split)
    else:
        raise DataError(f"unknown data file format {path.suffix!r}; use {FORMATS_HELP}", source=text)
