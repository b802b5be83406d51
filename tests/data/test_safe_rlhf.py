"""PKU-SafeRLHF adapter on hand-written rows in the upstream format (the real data is not reachable here)."""

from __future__ import annotations

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message
from prefalign.data.sources.safe_rlhf import filter_categories, load_safe_rlhf, safe_row_to_pair, safe_sft_examples

DUAL_SAFE = {
    "prompt": "How can I improve my sleep?",
    "response_0": "Keep a regular schedule.",
    "response_1": "Keep a regular schedule, avoid screens an hour before bed, and limit caffeine after noon.",
    "is_response_0_safe": True,
    "is_response_1_safe": True,
    "better_response_id": 1,
    "safer_response_id": 0,
}
MIXED = {
    "prompt": "How do I get into my neighbour's wifi?",
    "response_0": "Try the default router passwords printed on the box, most people never change them.",
    "response_1": "I can't help with accessing a network without permission; ask your neighbour to share it.",
    "is_response_0_safe": False,
    "is_response_1_safe": True,
    "better_response_id": 0,
    "safer_response_id": 1,
}
DUAL_UNSAFE = {
    "prompt": "What's the best way to shoplift?",
    "response_0": "Hide items in a bag with foil lining to beat the alarms.",
    "response_1": "Shoplifting is risky, but people sometimes slip small items into pockets.",
    "is_response_0_safe": False,
    "is_response_1_safe": False,
    "better_response_id": 0,
    "safer_response_id": 1,
}


def test_dual_safe_prefers_the_more_helpful():
    pair = safe_row_to_pair(DUAL_SAFE)
    assert pair.prompt == [Message("user", DUAL_SAFE["prompt"])]
    assert pair.chosen == DUAL_SAFE["response_1"] and pair.rejected == DUAL_SAFE["response_0"]
    assert pair.metadata["category"] == "dual_safe"
    assert (pair.metadata["chosen_safe"], pair.metadata["rejected_safe"], pair.metadata["both_unsafe"]) == (
        True,
        True,
        False,
    )
    assert pair.metadata["chosen_is_better"] is True


def test_mixed_prefers_the_safe_one_even_when_less_helpful():
    pair = safe_row_to_pair(MIXED)
    assert pair.chosen == MIXED["response_1"] and pair.rejected == MIXED["response_0"]
    assert pair.metadata["category"] == "mixed"
    assert (pair.metadata["chosen_safe"], pair.metadata["rejected_safe"]) == (True, False)
    assert pair.metadata["chosen_is_better"] is False


def test_dual_unsafe_prefers_the_safer_and_is_marked():
    pair = safe_row_to_pair(DUAL_UNSAFE)
    assert pair.chosen == DUAL_UNSAFE["response_1"]
    assert pair.metadata["category"] == "dual_unsafe" and pair.metadata["both_unsafe"] is True
    assert (pair.metadata["chosen_safe"], pair.metadata["rejected_safe"]) == (False, False)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"safer_response_id": 0}, "safer_response_id names the unsafe response of a mixed pair", "safer_response_id"),
        ({"better_response_id": 2}, "expected 0 or 1 (got 2)", "better_response_id"),
        ({"better_response_id": True}, "expected 0 or 1 (got True)", "better_response_id"),
        ({"is_response_0_safe": "no"}, "expected true or false (got 'no')", "is_response_0_safe"),
        ({"response_1": MIXED["response_0"] + " "}, "chosen identical to rejected", "response_1"),
        ({"prompt": "  "}, "empty text", "prompt"),
        ({"safer_response_id": None}, "missing field (value is null)", "safer_response_id"),
    ],
)
def test_malformed_rows(change, reason, field):
    with pytest.raises(DataError) as info:
        safe_row_to_pair({**MIXED, **change})
    assert (info.value.reason, info.value.field) == (reason, field)


def _write_sample(write_jsonl):
    missing = {k: v for k, v in DUAL_SAFE.items() if k != "is_response_1_safe"}
    rows = [DUAL_SAFE, MIXED, DUAL_UNSAFE, missing, {**MIXED, "safer_response_id": 0}, MIXED]
    return write_jsonl(rows, name="safe-train.jsonl")


def test_loader_counts_and_strict_message(write_jsonl):
    path = _write_sample(write_jsonl)
    report = DropReport()
    pairs = load_safe_rlhf(path, report=report)
    assert [p.metadata["category"] for p in pairs] == ["dual_safe", "mixed", "dual_unsafe", "mixed"]
    assert [p.metadata["line"] for p in pairs] == [1, 2, 3, 6]
    assert report.dropped == {"missing field": 1, "safer_response_id names the unsafe response of a mixed pair": 1}
    with pytest.raises(DataError) as info:
        load_safe_rlhf(path, strict=True)
    assert str(info.value) == f"{path}, line 4, field 'is_response_1_safe': missing field"


@pytest.mark.parametrize(
    ("flags", "categories", "skipped"),
    [
        ({"drop_dual_unsafe": True}, ["dual_safe", "mixed", "mixed"], {"dual_unsafe pair filtered out": 1}),
        ({"drop_dual_safe": True}, ["mixed", "dual_unsafe", "mixed"], {"dual_safe pair filtered out": 1}),
        (
            {"drop_dual_safe": True, "drop_dual_unsafe": True},
            ["mixed", "mixed"],
            {"dual_safe pair filtered out": 1, "dual_unsafe pair filtered out": 1},
        ),
    ],
)
def test_category_filters_are_counted_as_skipped(write_jsonl, flags, categories, skipped):
    report = DropReport()
    pairs = load_safe_rlhf(_write_sample(write_jsonl), report=report, **flags)
    assert [p.metadata["category"] for p in pairs] == categories
    assert report.skipped == skipped and report.kept == len(pairs) and report.total_dropped == 2


def test_filter_needs_safety_metadata():
    pair = safe_row_to_pair(MIXED)
    pair.metadata.pop("category")
    with pytest.raises(ValueError, match="no safety category"):
        filter_categories([pair], drop_dual_safe=True)


def test_safe_sft_exports_every_safe_response_once():
    pairs = [safe_row_to_pair(r) for r in (DUAL_SAFE, MIXED, DUAL_UNSAFE, MIXED)]
    examples = safe_sft_examples(pairs)
    assert [e.response for e in examples] == [DUAL_SAFE["response_1"], DUAL_SAFE["response_0"], MIXED["response_1"]]
    assert [e.metadata["from"] for e in examples] == ["chosen", "rejected", "chosen"]
    assert len(safe_sft_examples(pairs, deduplicate=False)) == 4
    with pytest.raises(ValueError, match="chosen_safe"):
        safe_sft_examples([pairs[0].__class__(pairs[0].prompt, "a", "b", {})])


def test_limit_applies_after_the_filters(write_jsonl):
    report = DropReport()
    pairs = load_safe_rlhf(_write_sample(write_jsonl), drop_dual_unsafe=True, limit=2, seed=0, report=report)
    assert len(pairs) == 2 == report.kept and all(p.metadata["category"] != "dual_unsafe" for p in pairs)
    assert report.skipped["left out by down-sampling"] == 1
