"""IFEval prompts (Zhou et al., 2023, arXiv:2311.07911; google-research ``instruction_following_eval``).

Upstream format, one JSON object a line in ``ifeval/input_data.jsonl`` (541 rows)::

    {"key": 1000, "prompt": "...", "instruction_id_list": ["punctuation:no_comma", ...],
     "kwargs": [{}, {"num_highlights": 3}, ...]}

Each row becomes a :class:`~prefalign.data.schema.Prompt` with one user message and metadata
``task="ifeval"``, ``key``, ``instruction_ids`` and ``instruction_kwargs`` (``None``-valued
arguments dropped: the Hugging Face copy lists every argument with ``None`` for unused ones).
Response files (``input_response_data_*.jsonl``, ``{"prompt", "response"}``) are read by
:func:`load_ifeval_responses` and paired with prompts by :func:`match_responses`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport, iter_rows, read_records
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.paths import data_path

INPUT_FILE = ("ifeval", "input_data.jsonl")


def _require(row: dict[str, Any], name: str, kind: type) -> Any:
    if name not in row:
        raise DataError(f"missing field {name!r}", field=name)
    value = row[name]
    if not isinstance(value, kind):
        raise DataError(f"expected {kind.__name__}, got {type(value).__name__}", field=name)
    return value


def parse_ifeval_row(row: dict[str, Any]) -> Prompt:
    """One ``input_data.jsonl`` row -> Prompt; raises :class:`DataError` naming the field."""
    key = _require(row, "key", int)
    text = _require(row, "prompt", str)
    if not text.strip():
        raise DataError("empty prompt", field="prompt")
    ids = _require(row, "instruction_id_list", list)
    kwargs = _require(row, "kwargs", list)
    if not ids:
        raise DataError("no instructions", field="instruction_id_list")
    if not all(isinstance(i, str) and ":" in i for i in ids):
        raise DataError("instruction ids must be strings like 'group:name'", field="instruction_id_list")
    if len(kwargs) != len(ids):
        raise DataError(f"{len(kwargs)} kwargs for {len(ids)} instructions", field="kwargs")
    if not all(isinstance(k, dict) for k in kwargs):
        raise DataError("every kwargs entry must be a JSON object", field="kwargs")
    clean = [{name: value for name, value in k.items() if value is not None} for k in kwargs]
    metadata = {"task": "ifeval", "key": key, "instruction_ids": list(ids), "instruction_kwargs": clean}
    return Prompt(messages=user_prompt(text), metadata=metadata)


def load_ifeval(
    path: str | Path | None = None, *, strict: bool = False, report: DropReport | None = None, limit: int | None = None
) -> list[Prompt]:
    """The IFEval prompts in file order (``limit``: the first ``limit`` of them)."""
    path = Path(path) if path is not None else data_path(*INPUT_FILE)
    prompts = read_records(
        iter_rows(path, strict=strict, report=report), parse_ifeval_row, source=str(path), strict=strict, report=report
    )
    return prompts[:limit] if limit is not None else prompts


def load_ifeval_responses(path: str | Path) -> list[tuple[str, str]]:
    """``(prompt, response)`` pairs of a response file, in file order; malformed rows raise."""
    path = Path(path)

    def parse(row: dict[str, Any]) -> tuple[str, str]:
        return _require(row, "prompt", str), _require(row, "response", str)

    return read_records(iter_rows(path, strict=True), parse, source=str(path), strict=True)


def match_responses(
    prompts: list[Prompt], pairs: list[tuple[str, str]], *, position_fallback: bool = False
) -> tuple[list[str], list[int]]:
    """Responses for ``prompts`` matched on the exact prompt text, as upstream does.

    A prompt without an exact match gets the response on the same line when ``position_fallback``
    is set (the published GPT-4 response file predates one prompt edit: key 2785 asks for "at
    least 3 placeholders" where the response file's prompt says "at least one"); otherwise an
    empty response, which follows no instruction. Returns the responses and the indices of the
    prompts that had no exact match.
    """
    by_text = {p: r for p, r in pairs}
    responses, unmatched = [], []
    for index, prompt in enumerate(prompts):
        text = prompt.messages[-1].content
        if text in by_text:
            responses.append(by_text[text])
            continue
        unmatched.append(index)
        responses.append(pairs[index][1] if position_fallback and index < len(pairs) else "")
    return responses, unmatched
