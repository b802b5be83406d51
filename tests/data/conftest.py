"""Shared fixtures for the data adapter tests: file writers and the real HH-RLHF sample."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from prefalign.paths import default_data_dir


def _dump_lines(rows: Iterable[Any]) -> str:
    """One JSON value a line; a ``str`` row is written verbatim (to plant undecodable lines)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(rows, name="rows.jsonl")`` writes rows to ``tmp_path`` (gzip if the name ends in .gz)."""

    def write(rows: Iterable[Any], name: str = "rows.jsonl") -> Path:
        path = tmp_path / name
        text = _dump_lines(rows)
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def hh_real_path() -> Path:
    """The shared 2,000-pair HH-RLHF harmless-base sample (skipped where the data folder is absent)."""
    path = default_data_dir() / "hh-rlhf" / "harmless-base.jsonl.gz"
    if not path.exists():
        pytest.skip(f"real HH-RLHF sample not found at {path}; set PREFALIGN_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def hh_real_rows(hh_real_path: Path) -> list[dict[str, str]]:
    """The raw rows of the real sample, read with plain ``json`` (independent of the adapter)."""
    with gzip.open(hh_real_path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
