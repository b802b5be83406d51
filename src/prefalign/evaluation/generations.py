"""Responses to a task's prompts, sampled from a model or read from a file, and the JSONL format
that lets generation and scoring run apart.

A generations file holds one task's responses, one JSON object a line::

    {"prompt_index": 0, "id": "HumanEval/0", "sample": 0, "prompt": "...", "response": "...", "truncated": false}

Only ``response`` and one of ``prompt_index`` (0-based, into the task's prompts in their fixed
order) or ``id`` (the prompt's ``metadata["id"]``, ``["task_id"]`` or ``["key"]``) are required.
When ``prompt`` is given it must equal the text of the task prompt's last message, which catches a
file made for other task options; ``truncated`` (the response hit the token limit) is reported
when every line has it; other fields (the ``result`` the runner writes, say) are ignored. A prompt
may have several lines (several samples); every prompt must have at least one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.atomic import write_text_atomic
from prefalign.data.io import iter_rows
from prefalign.data.schema import DataError, Prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.rollout.generate import SamplingConfig, generate

ID_KEYS = ("id", "task_id", "key")


@dataclass
class Generations:
    """Responses to one task's prompts: row ``i`` answers ``prompts[prompt_index[i]]``; the rows of a
    prompt are adjacent and in sample order."""

    prompt_index: list[int]
    responses: list[str]
    truncated: list[bool] | None = None  # None: not known (a file without the field)

    def __post_init__(self) -> None:
        if len(self.prompt_index) != len(self.responses):
            raise ValueError(f"{len(self.prompt_index)} prompt indices but {len(self.responses)} responses")
        if self.truncated is not None and len(self.truncated) != len(self.responses):
            raise ValueError(f"{len(self.truncated)} truncation flags but {len(self.responses)} responses")

    def __len__(self) -> int:
        return len(self.responses)

    def by_prompt(self, num_prompts: int) -> list[list[int]]:
        """For each prompt, the rows answering it (in order)."""
        rows: list[list[int]] = [[] for _ in range(num_prompts)]
        for row, index in enumerate(self.prompt_index):
            rows[index].append(row)
        return rows


def prompt_id(prompt: Prompt) -> str | None:
    """The prompt's identifier as a string (``metadata`` ``id``, ``task_id`` or ``key``), or None."""
    for key in ID_KEYS:
        value = prompt.metadata.get(key)
        if value is not None:
            return str(value)
    return None


def sample_responses(
    model, tokenizer, prompts: Sequence[Prompt], sampling: SamplingConfig, micro_batch_size: int, seed: int | None
) -> Generations:
    """``sampling.num_samples`` responses to every prompt (chat template, batched KV-cache generation)."""
    prompt_ids = [encode_prompt(tokenizer, p.messages) for p in prompts]
    rollout = generate(model, tokenizer, prompt_ids, sampling, micro_batch_size, generator_seed=seed)
    return Generations(rollout.prompt_index.tolist(), list(rollout.response_texts), rollout.truncated.tolist())


def _row_index(
    row: dict[str, Any], prompts: Sequence[Prompt], ids: dict[str, int | None], where: dict[str, Any]
) -> int:
    """The prompt a generations row answers, from ``prompt_index`` or ``id`` (they must agree)."""
    index = None
    if "prompt_index" in row:
        value = row["prompt_index"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"must be an integer, got {value!r}", field="prompt_index", **where)
        if not 0 <= value < len(prompts):
            raise DataError(
                f"{value} is out of range: the task has {len(prompts)} prompts (is the limit the one used to "
                f"generate?)",
                field="prompt_index",
                **where,
            )
        index = value
    if "id" in row:
        key = str(row["id"])
        if key not in ids:
            raise DataError(f"no task prompt has id {row['id']!r}", field="id", **where)
        if ids[key] is None:  # several prompts share the id: prompt_index must pick one of them
            if index is None:
                raise DataError(f"id {row['id']!r} names several task prompts; give prompt_index", field="id", **where)
            if prompt_id(prompts[index]) != key:
                raise DataError(f"prompt {index} does not have id {row['id']!r}", field="id", **where)
        elif index is not None and index != ids[key]:
            raise DataError(
                f"id {row['id']!r} is prompt {ids[key]}, but prompt_index says {index}", field="id", **where
            )
        else:
            index = ids[key]
    if index is None:
        raise DataError("a line needs 'prompt_index' or 'id'", **where)
    return index


def read_generations(path: str | Path, prompts: Sequence[Prompt]) -> Generations:
    """Responses for ``prompts`` from a generations file; a malformed line raises :class:`DataError`
    naming the file and the line, and a prompt without a response raises naming the prompts."""
    path = Path(path)
    ids: dict[str, int | None] = {}
    for i, prompt in enumerate(prompts):
        key = prompt_id(prompt)
        if key is not None:
            ids[key] = None if key in ids else i
    rows: list[tuple[int, str, bool | None]] = []
    for line, row in iter_rows(path, strict=True):
        where = {"source": str(path), "line": line}
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", **where)
        if not isinstance(row.get("response"), str):
            raise DataError(
                f"missing or not a string (got {type(row.get('response')).__name__})", field="response", **where
            )
        index = _row_index(row, prompts, ids, where)
        if "prompt" in row and row["prompt"] != prompts[index].messages[-1].content:
            raise DataError(
                f"differs from the text of task prompt {index} (made with other task options?)", field="prompt", **where
            )
        truncated = row.get("truncated")
        if truncated is not None and not isinstance(truncated, bool):
            raise DataError(f"must be true or false, got {truncated!r}", field="truncated", **where)
        rows.append((index, row["response"], truncated))
    missing = sorted(set(range(len(prompts))) - {index for index, _, _ in rows})
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(
            f"no response for {len(missing)} of the task's {len(prompts)} prompts (prompt_index {shown}); "
            "set the limit used to generate",
            source=str(path),
        )
    rows.sort(key=lambda r: r[0])  # stable: the samples of a prompt keep their file order
    flags = [t for _, _, t in rows]
    return Generations([r[0] for r in rows], [r[1] for r in rows], None if None in flags else [bool(t) for t in flags])


def write_generations(
    path: str | Path,
    prompts: Sequence[Prompt],
    generations: Generations,
    results: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write a generations file atomically (with each response's task ``result``, if given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = [0] * len(prompts)
    lines = []
    for row, (index, response) in enumerate(zip(generations.prompt_index, generations.responses)):
        record: dict[str, Any] = {"prompt_index": index}
        if (key := prompt_id(prompts[index])) is not None:
            record["id"] = key
        record.update(sample=sample[index], prompt=prompts[index].messages[-1].content, response=response)
        sample[index] += 1
        if generations.truncated is not None:
            record["truncated"] = generations.truncated[row]
        if results is not None:
            record["result"] = results[row]
        lines.append(json.dumps(record, ensure_ascii=False, default=str))
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_model_outputs(path: str | Path, prompts: Sequence[Prompt]) -> Generations:
    """Responses from an AlpacaEval model-outputs file (``[{"instruction", "output", ...}]``), matched to
    ``prompts`` by instruction text (``metadata["instruction"]``, else the last message); one per prompt."""
    from prefalign.data.sources.benchmarks import read_alpaca_outputs

    path = Path(path)
    by_instruction: dict[str, str] = {}
    for row in read_alpaca_outputs(path):
        by_instruction.setdefault(row["instruction"], row["output"])
    responses, missing = [], []
    for index, prompt in enumerate(prompts):
        instruction = prompt.metadata.get("instruction", prompt.messages[-1].content)
        if instruction not in by_instruction:
            missing.append(index)
        responses.append(by_instruction.get(instruction, ""))
    if missing:
        raise DataError(
            f"no output for {len(missing)} of the task's instructions (first: prompt {missing[0]})", source=str(path)
        )
    return Generations(list(range(len(prompts))), responses, None)


def read_responses_file(path: str | Path, prompts: Sequence[Prompt]) -> Generations:
    """A generations JSONL (:func:`read_generations`) or, for a ``.json`` list, AlpacaEval model outputs."""
    name = Path(path).name.lower()
    if name.endswith((".json", ".json.gz")):
        return read_model_outputs(path, prompts)
    return read_generations(path, prompts)
