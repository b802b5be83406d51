"""A tokenisation cache keyed by fingerprint, so a second run on the same data does not tokenise again.

The fingerprint is a SHA-256 of everything the token ids depend on: the tokenizer (its full
serialised vocabulary and rules, chat template and special tokens), the truncation settings, what
is encoded (``kind``) and every record's text, in order. Any change gives a new key; nothing is
ever read back for data or settings that differ. Entries are ``<cache_dir>/tokenized/<key>.pkl``
written atomically; a damaged entry is ignored and written again. ``PREFALIGN_TOKEN_CACHE=0``
turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefalign.atomic import atomic_write
from prefalign.paths import cache_dir

T = TypeVar("T")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides the tokenizer's output."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(
        backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()
    )
    for part in (tokenizer.chat_template, tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token):
        h.update(repr(part).encode())
    return h.hexdigest()


def _plain(record: Any) -> Any:
    return asdict(record) if is_dataclass(record) else record


def fingerprint(tokenizer: Any, records: Sequence[Any], kind: str, **settings: Any) -> str:
    """The cache key of encoding ``records`` as ``kind`` with ``tokenizer`` under ``settings``."""
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    h.update(json.dumps({"kind": kind, **settings}, sort_keys=True).encode())
    for record in records:
        h.update(json.dumps(_plain(record), sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_enabled() -> bool:
    return os.environ.get("PREFALIGN_TOKEN_CACHE", "1").lower() not in ("0", "false", "no")


def cached(key: str, compute: Callable[[], T], folder: Path | None = None) -> tuple[T, bool]:
    """``(value, hit)``: the cached value of ``key``, or ``compute()`` stored under it."""
    if not cache_enabled():
        return compute(), False
    path = (folder or cache_dir() / "tokenized") / f"{key}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh), True
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            pass  # damaged or from another version: compute again
    value = compute()

    def write(temporary: str) -> None:
        with open(temporary, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    try:
        atomic_write(path, write)
    except OSError:
        pass  # a read-only cache folder only costs the next run the tokenising
    return value, False


def encode_cached(
    tokenizer: Any,
    records: Sequence[Any],
    kind: str,
    encode: Callable[[], tuple[list, dict[str, int]]],
    **settings: Any,
) -> tuple[list, dict[str, int]]:
    """``encode()`` (which returns ``(encoded, stats)``) through the cache; ``stats["from_cache"]`` says which."""
    if not records:
        encoded, stats = encode()
        return encoded, {**stats, "from_cache": 0}
    (encoded, stats), hit = cached(fingerprint(tokenizer, records, kind, **settings), encode)
    return encoded, {**stats, "from_cache": int(hit)}
