"""HelpSteer adapter on hand-written rows in the upstream format (nvidia/HelpSteer)."""

from __future__ import annotations

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message
from prefalign.data.sources.helpsteer import helpsteer_row, load_helpsteer, load_helpsteer_ranked


def row(
    prompt: str, response: str, helpfulness: int, correctness: int, coherence: int, complexity: int, verbosity: int
) -> dict:
    return {
        "prompt": prompt,
        "response": response,
        "helpfulness": helpfulness,
        "correctness": correctness,
        "coherence": coherence,
        "complexity": complexity,
        "verbosity": verbosity,
    }


SUMMARY = "Summarise the text below in one sentence.\n\nThe mitochondrion is the powerhouse of the cell."
ROWS = [
    row(SUMMARY, "Mitochondria make the cell's energy.", 4, 4, 4, 1, 1),  # score 3.25
    row("Name three primes.", "2, 3 and 5.", 4, 4, 4, 0, 0),  # single-response prompt
    row(SUMMARY, "The cell has parts.", 1, 2, 3, 0, 0),  # score 1.5
    row(SUMMARY, "Mitochondria produce most of the cell's ATP through respiration.", 4, 4, 4, 1, 4),  # 3.25, later
    row("Say hi.", "Hi!", 3, 3, 3, 1, 0),
    row("Say hi.", "Hello there, friend!", 3, 3, 3, 1, 4),  # ties with the line above: verbosity ignored
]


def test_score_is_the_mean_without_verbosity():
    rated = helpsteer_row(ROWS[0])
    assert rated.score == (4 + 4 + 4 + 1) / 4
    assert rated.aspects["verbosity"] == 1
    assert helpsteer_row({**ROWS[0], "verbosity": 4}).score == rated.score


def test_pairs_within_a_prompt_with_counted_skips(write_jsonl):
    report = DropReport()
    pairs = load_helpsteer(write_jsonl(ROWS, name="train.jsonl.gz"), report=report)
    assert len(pairs) == 1 == report.kept
    pair = pairs[0]
    assert pair.prompt == [Message("user", SUMMARY)]
    assert pair.chosen == ROWS[0]["response"]  # earliest of the two 3.25s
    assert pair.rejected == ROWS[2]["response"]
    assert (pair.metadata["score_chosen"], pair.metadata["score_rejected"]) == (3.25, 1.5)
    assert pair.metadata["lines"] == (1, 3) and pair.metadata["responses_for_prompt"] == 3
    assert report.skipped == {"prompts with a single response": 1, "prompts whose responses all tie": 1}


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"helpfulness": 5}, "rating outside 0..4 (got 5)", "helpfulness"),
        ({"coherence": "3"}, "expected a number (got str)", "coherence"),
        ({"verbosity": None}, "missing field (value is null)", "verbosity"),
        ({"response": ""}, "empty text", "response"),
    ],
)
def test_malformed_rows(change, reason, field):
    with pytest.raises(DataError) as info:
        helpsteer_row({**ROWS[0], **change})
    assert (info.value.reason, info.value.field) == (reason, field)


def test_malformed_rows_are_dropped_before_grouping_and_strict_names_them(write_jsonl):
    missing = {k: v for k, v in ROWS[2].items() if k != "complexity"}
    path = write_jsonl([ROWS[0], missing, ROWS[3]], name="helpsteer.jsonl")
    report = DropReport()
    assert load_helpsteer(path, report=report) == []  # the low-scored row was malformed: the rest tie
    assert report.dropped == {"missing field": 1} and report.skipped == {"prompts whose responses all tie": 1}
    with pytest.raises(DataError) as info:
        load_helpsteer(path, strict=True)
    assert str(info.value) == f"{path}, line 2, field 'complexity': missing field"


def test_same_response_with_conflicting_ratings(write_jsonl):
    rows = [row("Q?", "A.", 4, 4, 4, 2, 2), row("Q?", "A.", 1, 1, 1, 0, 2)]
    path = write_jsonl(rows, name="conflict.jsonl")
    report = DropReport()
    assert load_helpsteer(path, report=report) == []
    assert report.dropped == {"chosen identical to rejected": 1}
    with pytest.raises(DataError) as info:
        load_helpsteer(path, strict=True)
    assert str(info.value) == f"{path}, line 2, field 'response': chosen identical to rejected"


def test_ranked_keeps_every_response_best_first(write_jsonl):
    report = DropReport()
    ranked = load_helpsteer_ranked(write_jsonl(ROWS), report=report)
    assert len(ranked) == 1 == report.kept
    assert ranked[0].responses == [ROWS[0]["response"], ROWS[3]["response"], ROWS[2]["response"]]
    assert ranked[0].scores == [3.25, 3.25, 1.5] and ranked[0].metadata["lines"] == [1, 4, 3]


def test_limit(write_jsonl):
    rows = [row(f"Prompt {i}", f"good {i}", 4, 4, 4, 2, 1) for i in range(6)]
    rows += [row(f"Prompt {i}", f"bad {i}", 1, 1, 1, 0, 1) for i in range(6)]
    report = DropReport()
    pairs = load_helpsteer(write_jsonl(rows), limit=4, seed=2, report=report)
    assert len(pairs) == 4 == report.kept and report.skipped == {"left out by down-sampling": 2}
    assert [p.chosen for p in pairs] == [p.chosen for p in load_helpsteer(write_jsonl(rows), limit=4, seed=2)]
