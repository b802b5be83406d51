"""PKU-SafeRLHF (Ji et al., 2023; Dai et al., 2023): two responses per prompt with helpfulness and safety labels.

Upstream row: ``prompt, response_0, response_1, is_response_0_safe, is_response_1_safe,
better_response_id, safer_response_id`` (other upstream columns are ignored). Xu et al. (2024,
Sec. 4.3) consolidate the two labels into one preference:

- both responses safe ("dual_safe"): prefer the more helpful one, ``better_response_id``;
- exactly one safe ("mixed"): prefer the safe one, whatever its helpfulness;
- both unsafe ("dual_unsafe"): the paper leaves this case to the filter below. Our choice: prefer
  the less harmful one, ``safer_response_id``, and mark the pair ``both_unsafe=True`` so that
  training code and reports can tell that the "chosen" response is itself unsafe.

Xu et al. (Tables 2 and 13) study dropping the dual-unsafe pairs (which teach DPO to prefer an
unsafe answer) and the dual-safe pairs; ``drop_dual_safe`` / ``drop_dual_unsafe`` do that, and the
dropped pairs are counted in the report as skipped. Their "SFT (Safe)" model is trained on the
safe responses of the data set: :func:`safe_sft_examples`.

Metadata of each pair: ``source``, ``category`` ("dual_safe" / "dual_unsafe" / "mixed"),
``chosen_safe``, ``rejected_safe``, ``both_unsafe``, ``better_response_id``,
``safer_response_id`` and ``chosen_is_better`` (whether the helpfulness label agrees with the
consolidated preference; it does not in the mixed pairs whose safe answer is the less helpful).

Malformed rows (dropped, or raised in strict mode): a missing or empty field, a label that is not
a boolean or an id other than 0/1, identical responses ("chosen identical to rejected"), and a
``safer_response_id`` that contradicts the safety labels (it names the unsafe response of a mixed
pair).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, PreferencePair, SFTExample, user_prompt
from prefalign.data.sources.jsonl import apply_limit, load_records, require, require_bool, require_text
from prefalign.paths import data_path

CATEGORIES = ("dual_safe", "mixed", "dual_unsafe")


def _response_id(row: Mapping[str, Any], field: str) -> int:
    value = require(row, field)
    if isinstance(value, bool) or value not in (0, 1):
        raise DataError(f"expected 0 or 1 (got {value!r})", field=field)
    return int(value)


def _consolidate(safe: tuple[bool, bool], better: int, safer: int) -> tuple[int, str]:
    """(index of the chosen response, category) by the rule of Xu et al. (2024, Sec. 4.3)."""
    if safe[0] and safe[1]:
        return better, "dual_safe"
    if not safe[0] and not safe[1]:
        return safer, "dual_unsafe"
    safe_id = 0 if safe[0] else 1
    if safer != safe_id:
        raise DataError("safer_response_id names the unsafe response of a mixed pair", field="safer_response_id")
    return safe_id, "mixed"


def safe_row_to_pair(row: Mapping[str, Any]) -> PreferencePair:
    """One PKU-SafeRLHF row as a consolidated PreferencePair."""
    prompt = require_text(row, "prompt")
    responses = (require_text(row, "response_0"), require_text(row, "response_1"))
    safe = (require_bool(row, "is_response_0_safe"), require_bool(row, "is_response_1_safe"))
    better = _response_id(row, "better_response_id")
    safer = _response_id(row, "safer_response_id")
    if responses[0].strip() == responses[1].strip():
        raise DataError("chosen identical to rejected", field="response_1")
    chosen, category = _consolidate(safe, better, safer)
    rejected = 1 - chosen
    metadata = {
        "source": "safe-rlhf",
        "category": category,
        "chosen_safe": safe[chosen],
        "rejected_safe": safe[rejected],
        "both_unsafe": category == "dual_unsafe",
        "better_response_id": better,
        "safer_response_id": safer,
        "chosen_is_better": chosen == better,
    }
    return PreferencePair(user_prompt(prompt), responses[chosen], responses[rejected], metadata)


def filter_categories(
    pairs: Iterable[PreferencePair],
    *,
    drop_dual_safe: bool = False,
    drop_dual_unsafe: bool = False,
    report: DropReport | None = None,
) -> list[PreferencePair]:
    """Leave out dual-safe and/or dual-unsafe pairs (Xu et al. 2024, Tables 2 and 13), counting them."""
    dropped = {"dual_safe"} if drop_dual_safe else set()
    dropped |= {"dual_unsafe"} if drop_dual_unsafe else set()
    kept = []
    for pair in pairs:
        category = pair.metadata.get("category")
        if category not in CATEGORIES:
            raise ValueError(f"pair has no safety category (metadata {pair.metadata}); load it with load_safe_rlhf")
        if category in dropped:
            if report is not None:
                report.skip(f"{category} pair filtered out")
                report.kept -= 1
            continue
        kept.append(pair)
    return kept


def load_safe_rlhf(
    path: str | Path | None = None,
    *,
    drop_dual_safe: bool = False,
    drop_dual_unsafe: bool = False,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[PreferencePair]:
    """PKU-SafeRLHF pairs from a JSON/JSONL/Parquet file (default: ``safe-rlhf/train.jsonl`` in the data folder).

    The category filters apply before ``limit`` (a deterministic subset chosen by ``seed``).
    """
    path = Path(path) if path is not None else data_path("safe-rlhf", "train.jsonl")
    report = report if report is not None else DropReport(source=str(path))
    pairs = load_records(path, safe_row_to_pair, strict=strict, report=report)
    pairs = filter_categories(pairs, drop_dual_safe=drop_dual_safe, drop_dual_unsafe=drop_dual_unsafe, report=report)
    return apply_limit(pairs, limit, seed, report)


def safe_sft_examples(pairs: Iterable[PreferencePair], *, deduplicate: bool = True) -> list[SFTExample]:
    """Every response labelled safe, as SFT data: the "SFT (Safe)" model of Xu et al. (2024, Table 2).

    Both responses of a dual-safe pair are exported; ``deduplicate`` drops repeats of the same
    (prompt, response), which the data set holds when a prompt was annotated more than once.
    """
    out, seen = [], set()
    for pair in pairs:
        if "chosen_safe" not in pair.metadata or "rejected_safe" not in pair.metadata:
            raise ValueError("pair lacks the chosen_safe / rejected_safe labels; load it with load_safe_rlhf")
        prompt_key = tuple((m.role, m.content) for m in pair.prompt)
        for side, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            is_safe, key = pair.metadata[f"{side}_safe"], (prompt_key, response)
            if not is_safe or (deduplicate and key in seen):
                continue
            seen.add(key)
            out.append(SFTExample(list(pair.prompt), response, {**pair.metadata, "from": side}))
    return out
