"""Atomic file writes: a reader sees the old file or the whole new one, never half of either.

Every report, metrics rewrite, pair file and config the library writes goes through
:func:`atomic_write`: the content is written to a temporary file in the destination's folder,
flushed to disk, given the usual permissions and moved onto the destination with ``os.replace``
(atomic on POSIX and Windows within one file system). A failure while writing removes the
temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)``, then move the result onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) written atomically and flushed to disk."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def write_json_atomic(path: str | Path, data: Any, **dumps: Any) -> Path:
    """``data`` as indented JSON written atomically; values JSON does not know (tensors, numpy
    scalars) are written as floats unless ``dumps`` (passed to :func:`json.dumps`) says otherwise."""
    return write_text_atomic(path, json.dumps(data, **{"indent": 2, "default": float, **dumps}) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict], **dumps: Any) -> Path:
    """One JSON object per line, written atomically."""
    return write_text_atomic(path, "".join(json.dumps(row, **dumps) + "\n" for row in rows))
