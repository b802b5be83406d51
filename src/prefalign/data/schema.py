"""Canonical records shared by every data source, trainer and evaluation task.

Every adapter in :mod:`prefalign.data.sources` turns raw rows into these records, and nothing
downstream ever sees a source's own format.

- :class:`Message`: one turn, ``role`` in ``{"system", "user", "assistant"}``.
- :class:`SFTExample`: prompt messages and the assistant response to imitate.
- :class:`PreferencePair`: prompt messages, a chosen and a rejected assistant response.
- :class:`RankedResponses`: prompt messages and several responses ordered best first (RRHF, PRO).
- :class:`Prompt`: prompt messages plus task metadata (unit tests, reference answer, ...), used for
  rollouts and evaluation.

Responses are plain strings (the text of the final assistant turn); the prompt carries all earlier
turns, so a multi-turn dialogue becomes ``prompt=[user, assistant, user]`` and ``response=...``.
``metadata`` is a free dict for what a source knows beyond the text: per-response safety labels
(``chosen_safe``, ``rejected_safe``), aspect scores, the source file and line, a task id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A malformed data row. The message names the source file, line (1-based) and field.

    ``unit`` says what ``line`` counts: ``"line"`` (a file line) or ``"row"`` (a row index of a table).
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ):
        self.reason = reason
        self.source = source
        self.line = line
        self.field = field
        self.unit = unit
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"{unit} {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise DataError(f"unknown role {self.role!r}; expected one of {ROLES}", field="role")
        if not isinstance(self.content, str):
            raise DataError(f"content must be a string, got {type(self.content).__name__}", field="content")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    @staticmethod
    def from_dict(row: dict[str, Any]) -> Message:
        return Message(role=row["role"], content=row["content"])


Conversation = list[Message]


def messages_to_dicts(messages: Iterable[Message]) -> list[dict[str, str]]:
    """The list-of-dicts form that ``tokenizer.apply_chat_template`` takes."""
    return [m.to_dict() for m in messages]


def user_prompt(text: str, system: str | None = None) -> list[Message]:
    """A one-turn prompt: optional system message, then the user's text."""
    out = [Message("system", system)] if system else []
    out.append(Message("user", text))
    return out


def _check_prompt(prompt: list[Message], what: str) -> None:
    if not prompt:
        raise DataError(f"{what} has an empty prompt", field="prompt")
    if prompt[-1].role == "assistant":
        raise DataError(f"{what} prompt ends with an assistant turn; the response must be separate", field="prompt")


@dataclass
class SFTExample:
    prompt: list[Message]
    response: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_prompt(self.prompt, "SFT example")


@dataclass
class PreferencePair:
    prompt: list[Message]
    chosen: str
    rejected: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_prompt(self.prompt, "preference pair")

    def as_ranked(self) -> RankedResponses:
        """A pair is a ranked list of two (best first)."""
        scores = [self.metadata.get("score_chosen", 1.0), self.metadata.get("score_rejected", 0.0)]
        return RankedResponses(
            self.prompt, [self.chosen, self.rejected], [float(s) for s in scores], dict(self.metadata)
        )


@dataclass
class RankedResponses:
    """Responses to one prompt ordered best first; ``scores`` (same order) are optional."""

    prompt: list[Message]
    responses: list[str]
    scores: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_prompt(self.prompt, "ranked responses")
        if len(self.responses) < 2:
            raise DataError("a ranking needs at least two responses", field="responses")
        if self.scores is not None and len(self.scores) != len(self.responses):
            raise DataError("scores and responses differ in length", field="scores")


@dataclass
class Prompt:
    """A prompt to sample from, with what a task needs to score the answer.

    ``metadata`` keys in use: ``task`` (task name), ``reference`` (reference answer),
    ``tests`` (unit tests), ``entry_point``, ``unsafe`` (a request that should be refused).
    """

    messages: list[Message]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_prompt(self.messages, "prompt")
