"""HelpSteer (Wang et al., 2023): single responses rated on five aspects, paired within a prompt.

Upstream row: ``prompt, response, helpfulness, correctness, coherence, complexity, verbosity``,
each rating an integer 0..4. Following Ivison et al. (2024), who include HelpSteer among the
preference data sets of their Table 1, a response's score is the mean of the aspects except
verbosity (helpfulness, correctness, coherence, complexity): more verbose is not better.

Pairs are formed within a prompt (rows grouped by identical prompt text, in order of first
appearance): the highest-scored response is chosen and the lowest-scored rejected, the earliest
row winning among equal scores, so each prompt gives at most one pair. Prompts with a single
response and prompts whose responses all tie are skipped and counted in the report (their unit is
prompts; the loaders make ``report.kept`` count pairs, not rows). The ranked form (:func:`rated_to_ranked`) keeps every
response of a prompt, best first, for RRHF / PRO.

Malformed rows: a missing or empty ``prompt`` / ``response``, a missing rating or one that is not
a number in 0..4. Two rows with the same prompt and response but different scores that end up as
chosen and rejected give "chosen identical to rejected" (naming the rejected row's line).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, PreferencePair, RankedResponses, user_prompt
from prefalign.data.sources.jsonl import apply_limit, load_records, require_number, require_text
from prefalign.paths import data_path

SCORED_ASPECTS = ("helpfulness", "correctness", "coherence", "complexity")
ASPECTS = (*SCORED_ASPECTS, "verbosity")
RATING_RANGE = (0.0, 4.0)


@dataclass
class RatedResponse:
    """One HelpSteer row: a response with its aspect ratings and their score."""

    prompt: str
    response: str
    aspects: dict[str, float]
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


def _rating(row: Mapping[str, Any], aspect: str) -> float:
    value = require_number(row, aspect)
    if not RATING_RANGE[0] <= value <= RATING_RANGE[1]:
        raise DataError(f"rating outside {RATING_RANGE[0]:g}..{RATING_RANGE[1]:g} (got {value:g})", field=aspect)
    return value


def helpsteer_row(row: Mapping[str, Any]) -> RatedResponse:
    """Validate one row and score it (mean of the aspects except verbosity)."""
    prompt, response = require_text(row, "prompt"), require_text(row, "response")
    aspects = {aspect: _rating(row, aspect) for aspect in ASPECTS}
    score = sum(aspects[a] for a in SCORED_ASPECTS) / len(SCORED_ASPECTS)
    return RatedResponse(prompt, response, aspects, score, {"source": "helpsteer"})


def group_by_prompt(rated: Iterable[RatedResponse]) -> dict[str, list[RatedResponse]]:
    """Responses per prompt text, prompts in order of first appearance, rows in file order."""
    groups: dict[str, list[RatedResponse]] = {}
    for item in rated:
        groups.setdefault(item.prompt, []).append(item)
    return groups


def _usable(group: list[RatedResponse], report: DropReport) -> bool:
    if len(group) < 2:
        report.skip("prompts with a single response")
        return False
    if len({r.score for r in group}) == 1:
        report.skip("prompts whose responses all tie")
        return False
    return True


def _pair(group: list[RatedResponse], source: str) -> PreferencePair:
    chosen = max(group, key=lambda r: r.score)  # max / min keep the earliest among ties
    rejected = min(group, key=lambda r: r.score)
    if chosen.response.strip() == rejected.response.strip():
        raise DataError(
            "chosen identical to rejected", source=source, line=rejected.metadata.get("line"), field="response"
        )
    metadata = {
        "source": "helpsteer",
        "score_chosen": chosen.score,
        "score_rejected": rejected.score,
        "aspects_chosen": dict(chosen.aspects),
        "aspects_rejected": dict(rejected.aspects),
        "lines": (chosen.metadata.get("line"), rejected.metadata.get("line")),
        "responses_for_prompt": len(group),
    }
    return PreferencePair(user_prompt(chosen.prompt), chosen.response, rejected.response, metadata)


def rated_to_pairs(rated: Iterable[RatedResponse], *, report: DropReport, strict: bool = False) -> list[PreferencePair]:
    """Highest- vs lowest-scored response of every prompt; skipped prompts are counted in ``report``."""
    pairs = []
    for group in group_by_prompt(rated).values():
        if not _usable(group, report):
            continue
        try:
            pairs.append(_pair(group, report.source))
        except DataError as err:
            if strict:
                raise
            report.add(err)
    return pairs


def rated_to_ranked(rated: Iterable[RatedResponse], *, report: DropReport) -> list[RankedResponses]:
    """Every response of a prompt, best first (stable among ties); skipped prompts are counted."""
    out = []
    for group in group_by_prompt(rated).values():
        if not _usable(group, report):
            continue
        ranked = sorted(group, key=lambda r: -r.score)
        metadata = {
            "source": "helpsteer",
            "aspects": [r.aspects for r in ranked],
            "lines": [r.metadata.get("line") for r in ranked],
        }
        responses, scores = [r.response for r in ranked], [r.score for r in ranked]
        out.append(RankedResponses(user_prompt(ranked[0].prompt), responses, scores, metadata))
    return out


def _load_grouped(path: str | Path | None, strict: bool, report: DropReport | None, build) -> tuple[list, DropReport]:
    """Read the rated rows, then ``build`` records from them; ``report.kept`` counts the records."""
    path = Path(path) if path is not None else data_path("helpsteer", "train.jsonl.gz")
    report = report if report is not None else DropReport(source=str(path))
    kept_before = report.kept
    records = build(load_records(path, helpsteer_row, strict=strict, report=report), report)
    report.kept = kept_before + len(records)
    return records, report


def load_helpsteer(
    path: str | Path | None = None,
    *,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[PreferencePair]:
    """HelpSteer pairs from a JSON/JSONL/Parquet file (default ``helpsteer/train.jsonl.gz`` in the data folder)."""
    pairs, report = _load_grouped(
        path, strict, report, lambda rated, rep: rated_to_pairs(rated, report=rep, strict=strict)
    )
    return apply_limit(pairs, limit, seed, report)


def load_helpsteer_ranked(
    path: str | Path | None = None,
    *,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[RankedResponses]:
    """HelpSteer rankings (all responses of a prompt, best first)."""
    ranked, report = _load_grouped(path, strict, report, lambda rated, rep: rated_to_ranked(rated, report=rep))
    return apply_limit(ranked, limit, seed, report)
