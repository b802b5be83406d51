"""UltraFeedback (Cui et al., 2023): raw per-completion ratings and the binarized pairs.

**Raw form** (``openbmb/UltraFeedback``): ``instruction, completions[{model, response,
annotations{aspect: {"Rating": "4", ...}}, overall_score}]`` with the aspects helpfulness, honesty,
instruction_following and truthfulness; a Rating is a string "1".."5" or "N/A" (an aspect value
may also be a list of such dicts; their ratings are pooled). Each completion is scored by

- ``score="overall"``: its ``overall_score`` (GPT-4's critique score), or
- ``score="fine_grained"``: the mean of its aspect ratings, "N/A" left out;

Ivison et al. (2024, Table 1) compare the two ("UltraF. overall" vs "fine-grained").

Pairing rule (``pairing``):

- ``"best_vs_random"`` (the UltraFeedback / Zephyr binarization, Tunstall et al. 2023): the
  best-scored completion is chosen and the rejected one is drawn uniformly from the completions
  scored strictly lower. The draw depends only on ``seed`` and the instruction text
  (:func:`prefalign.data.sampling.seeded_index`), not on the row's position;
- ``"best_vs_worst"``: the best against the lowest scored.

Among equal best (or worst) scores the earliest completion wins. Completions with an empty
response or no rating at all are left out of the row. A row whose remaining completions all tie,
or that keeps fewer than two, is skipped and counted ("all completions tied", "fewer than two
scored completions"). A ranked form for RRHF / PRO (:func:`ultrafeedback_row_to_ranked`) orders
all scored completions best first (stable among ties).

**Binarized form** (``HuggingFaceH4/ultrafeedback_binarized``): ``prompt, chosen[messages],
rejected[messages], score_chosen, score_rejected``. Tied scores are skipped and counted; a chosen
score below the rejected one is malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.sampling import seeded_index
from prefalign.data.schema import DataError, PreferencePair, RankedResponses, user_prompt
from prefalign.data.sources.jsonl import SkipRow, load_records, require, require_number, require_text, row_to_pair
from prefalign.paths import data_path

ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
SCORES = ("overall", "fine_grained")
PAIRINGS = ("best_vs_random", "best_vs_worst")


@dataclass(frozen=True)
class ScoredCompletion:
    index: int  # position in the row's ``completions``
    response: str
    score: float
    model: str | None


def _ratings(value: Any, field: str) -> list[float]:
    """The numeric ratings of one aspect annotation ("N/A" gives none)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, Mapping) or "Rating" not in item:
            raise DataError("expected an annotation with a 'Rating'", field=field)
        rating = item["Rating"]
        if isinstance(rating, str) and rating.strip().upper() == "N/A":
            continue
        try:
            out.append(float(rating))
        except (TypeError, ValueError):
            raise DataError(f"unreadable rating {rating!r}", field=f"{field}.Rating") from None
    return out


def fine_grained_score(completion: Mapping[str, Any], field: str) -> float | None:
    """Mean of the aspect ratings, "N/A" left out; ``None`` when no aspect is rated."""
    if "annotations" not in completion:
        raise DataError("missing field", field=f"{field}.annotations")
    annotations = completion["annotations"]
    if not isinstance(annotations, Mapping):
        raise DataError("expected an annotations object", field=f"{field}.annotations")
    ratings = [r for a in ASPECTS if a in annotations for r in _ratings(annotations[a], f"{field}.annotations.{a}")]
    return sum(ratings) / len(ratings) if ratings else None


def _completion_score(completion: Mapping[str, Any], field: str, score: str) -> float | None:
    if score == "fine_grained":
        return fine_grained_score(completion, field)
    try:
        return require_number(completion, "overall_score")
    except DataError as err:
        raise DataError(err.reason, field=f"{field}.{err.field}") from None


def scored_completions(row: Mapping[str, Any], score: str = "overall") -> list[ScoredCompletion]:
    """The row's completions that have a response and a score, in their original order."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")
    completions = require(row, "completions")
    if not isinstance(completions, list):
        raise DataError("expected a list of completions", field="completions")
    out = []
    for i, completion in enumerate(completions):
        field = f"completions[{i}]"
        if not isinstance(completion, Mapping):
            raise DataError("expected a completion object", field=field)
        response = completion.get("response")
        if not isinstance(response, str):
            raise DataError(f"expected a string (got {type(response).__name__})", field=f"{field}.response")
        value = _completion_score(completion, field, score)
        if response.strip() and value is not None:
            model = completion.get("model") if isinstance(completion.get("model"), str) else None
            out.append(ScoredCompletion(i, response, value, model))
    if len(out) < 2:
        raise SkipRow("fewer than two scored completions")
    if len({c.score for c in out}) == 1:
        raise SkipRow("all completions tied")
    return out


def _pick_pair(
    completions: list[ScoredCompletion], pairing: str, seed: int, key: str
) -> tuple[ScoredCompletion, ScoredCompletion]:
    best = max(completions, key=lambda c: c.score)  # max keeps the earliest among ties
    if pairing == "best_vs_worst":
        return best, min(completions, key=lambda c: c.score)
    lower = [c for c in completions if c.score < best.score]
    return best, lower[seeded_index(seed, key, len(lower))]


def ultrafeedback_row_to_pair(
    row: Mapping[str, Any], *, score: str = "overall", pairing: str = "best_vs_random", seed: int = 0
) -> PreferencePair:
    """One raw UltraFeedback row as a pair (see the module docstring for the rule)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
    instruction = require_text(row, "instruction")
    chosen, rejected = _pick_pair(scored_completions(row, score), pairing, seed, instruction)
    if chosen.response.strip() == rejected.response.strip():
        raise DataError("chosen identical to rejected", field=f"completions[{rejected.index}].response")
    metadata = {
        "source": "ultrafeedback",
        "score": score,
        "pairing": pairing,
        "score_chosen": chosen.score,
        "score_rejected": rejected.score,
        "model_chosen": chosen.model,
        "model_rejected": rejected.model,
    }
    return PreferencePair(user_prompt(instruction), chosen.response, rejected.response, metadata)


def ultrafeedback_row_to_ranked(row: Mapping[str, Any], *, score: str = "overall") -> RankedResponses:
    """All scored completions of a raw row, best first (for RRHF / PRO)."""
    instruction = require_text(row, "instruction")
    ranked = sorted(scored_completions(row, score), key=lambda c: -c.score)
    metadata = {"source": "ultrafeedback", "score": score, "models": [c.model for c in ranked]}
    return RankedResponses(user_prompt(instruction), [c.response for c in ranked], [c.score for c in ranked], metadata)


def binarized_row_to_pair(row: Mapping[str, Any]) -> PreferencePair:
    """One ``ultrafeedback_binarized`` row (prompt, chosen / rejected conversations, two scores)."""
    pair = row_to_pair(row)
    score_chosen, score_rejected = require_number(row, "score_chosen"), require_number(row, "score_rejected")
    if score_chosen < score_rejected:
        raise DataError(f"chosen scored below rejected ({score_chosen} < {score_rejected})", field="score_chosen")
    if score_chosen == score_rejected:
        raise SkipRow("tied scores")
    pair.metadata.update(source="ultrafeedback-binarized", score_chosen=score_chosen, score_rejected=score_rejected)
    if isinstance(row.get("prompt_id"), str):
        pair.metadata["prompt_id"] = row["prompt_id"]
    return pair


def _path(path: str | Path | None, *default: str) -> Path:
    return Path(path) if path is not None else data_path(*default)


def load_ultrafeedback(
    path: str | Path | None = None,
    *,
    score: str = "overall",
    pairing: str = "best_vs_random",
    seed: int = 0,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[PreferencePair]:
    """Pairs from a raw UltraFeedback file (default ``ultrafeedback/ultrafeedback.jsonl`` in the data folder)."""
    if pairing not in PAIRINGS or score not in SCORES:
        raise ValueError(f"pairing must be one of {PAIRINGS} and score one of {SCORES}")
    parse = lambda row: ultrafeedback_row_to_pair(row, score=score, pairing=pairing, seed=seed)  # noqa: E731
    path = _path(path, "ultrafeedback", "ultrafeedback.jsonl")
    return load_records(path, parse, strict=strict, report=report, limit=limit, seed=seed)


def load_ultrafeedback_ranked(
    path: str | Path | None = None,
    *,
    score: str = "overall",
    seed: int = 0,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[RankedResponses]:
    """Rankings of all completions per instruction, from a raw UltraFeedback file."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")
    path = _path(path, "ultrafeedback", "ultrafeedback.jsonl")
    parse = lambda row: ultrafeedback_row_to_ranked(row, score=score)  # noqa: E731
    return load_records(path, parse, strict=strict, report=report, limit=limit, seed=seed)


def load_ultrafeedback_binarized(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[PreferencePair]:
    """Pairs from a binarized file (default ``ultrafeedback-binarized/train_prefs.parquet``)."""
    path = _path(path, "ultrafeedback-binarized", "train_prefs.parquet")
    return load_records(path, binarized_row_to_pair, strict=strict, report=report, limit=limit, seed=seed)
