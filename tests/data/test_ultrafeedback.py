"""UltraFeedback adapters on hand-written rows in the upstream formats (raw and binarized)."""

from __future__ import annotations

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message
from prefalign.data.sources.ultrafeedback import (
    binarized_row_to_pair,
    fine_grained_score,
    load_ultrafeedback,
    load_ultrafeedback_binarized,
    load_ultrafeedback_ranked,
    ultrafeedback_row_to_pair,
    ultrafeedback_row_to_ranked,
)


def completion(model: str, response: str, overall: float, ratings: tuple[str, str, str, str]) -> dict:
    """One completion as in openbmb/UltraFeedback (ratings: helpfulness, honesty, instruction_following,
    truthfulness)."""
    helpfulness, honesty, following, truthfulness = ratings
    return {
        "annotations": {
            "helpfulness": {
                "Rating": helpfulness,
                "Rationale": "Clear and relevant.",
                "Rationale For Rating": "Accurate.",
                "Type": ["1", "2"],
            },
            "honesty": {"Rating": honesty, "Rationale": "Confident and correct."},
            "instruction_following": {"Rating": following, "Rationale": "Follows the task."},
            "truthfulness": {
                "Rating": truthfulness,
                "Rationale": "No hallucination.",
                "Rationale For Rating": "Truthful.",
                "Type": ["0"],
            },
        },
        "critique": "The answer is mostly good.",
        "custom_system_prompt": "You are a helpful assistant.",
        "fine-grained_score": 0.0,  # upstream field, recomputed by the adapter from the ratings
        "model": model,
        "overall_score": overall,
        "principle": "helpfulness",
        "response": response,
    }


def raw_row(instruction: str, completions: list[dict]) -> dict:
    return {
        "source": "evol_instruct",
        "instruction": instruction,
        "models": [c["model"] for c in completions],
        "completions": completions,
        "correct_answers": ["None"],
        "incorrect_answers": ["None"],
    }


# overall: c1 and c3 tie at the top (c1 comes first); fine-grained: c0 is best, c2 worst.
ROW = raw_row(
    "Explain photosynthesis in one paragraph.",
    [
        completion("gpt-4", "Plants turn light, water and CO2 into sugar and oxygen.", 7.5, ("5", "5", "5", "5")),
        completion(
            "wizardlm-70b",
            "Photosynthesis converts light energy into chemical energy in chloroplasts.",
            8.5,
            ("4", "N/A", "4", "4"),
        ),
        completion("falcon-40b-instruct", "It is when plants eat sunlight.", 6.0, ("2", "3", "2", "3")),
        completion(
            "ultralm-13b", "Light reactions make ATP; the Calvin cycle fixes carbon.", 8.5, ("3", "3", "3", "3")
        ),
    ],
)
RESPONSES = [c["response"] for c in ROW["completions"]]


def test_fine_grained_score_ignores_not_applicable():
    assert fine_grained_score(ROW["completions"][1], "c") == 4.0
    as_lists = {
        **ROW["completions"][2],
        "annotations": {k: [v] for k, v in ROW["completions"][2]["annotations"].items()},
    }
    assert fine_grained_score(as_lists, "c") == 2.5
    all_na = completion("m", "r", 5.0, ("N/A", "N/A", "N/A", "N/A"))
    assert fine_grained_score(all_na, "c") is None


def test_overall_best_vs_random_draws_only_lower_scored():
    rejected = set()
    for seed in range(40):
        pair = ultrafeedback_row_to_pair(ROW, score="overall", seed=seed)
        assert pair.chosen == RESPONSES[1] and pair.metadata["score_chosen"] == 8.5
        rejected.add(pair.rejected)
        assert pair.metadata["score_rejected"] < pair.metadata["score_chosen"]
    assert rejected == {RESPONSES[0], RESPONSES[2]}  # the tied c3 is never the rejected one
    assert ultrafeedback_row_to_pair(ROW, seed=5).rejected == ultrafeedback_row_to_pair(ROW, seed=5).rejected


def test_fine_grained_and_best_vs_worst():
    pair = ultrafeedback_row_to_pair(ROW, score="fine_grained", pairing="best_vs_worst")
    assert (pair.chosen, pair.rejected) == (RESPONSES[0], RESPONSES[2])
    assert (pair.metadata["score_chosen"], pair.metadata["score_rejected"]) == (5.0, 2.5)
    assert (pair.metadata["model_chosen"], pair.metadata["model_rejected"]) == ("gpt-4", "falcon-40b-instruct")
    assert pair.prompt == [Message("user", ROW["instruction"])]
    assert ultrafeedback_row_to_pair(ROW, pairing="best_vs_worst").chosen == RESPONSES[1]
    with pytest.raises(ValueError, match="unknown pairing"):
        ultrafeedback_row_to_pair(ROW, pairing="all_pairs")


def test_ranked_orders_best_first_and_is_stable():
    ranked = ultrafeedback_row_to_ranked(ROW)
    assert ranked.responses == [RESPONSES[1], RESPONSES[3], RESPONSES[0], RESPONSES[2]]
    assert ranked.scores == [8.5, 8.5, 7.5, 6.0]
    fine = ultrafeedback_row_to_ranked(ROW, score="fine_grained")
    assert fine.scores == [5.0, 4.0, 3.0, 2.5] and fine.metadata["models"][0] == "gpt-4"


TIED = raw_row("Say hello.", [completion(m, f"Hello from {m}", 7.0, ("4", "4", "4", "4")) for m in ("a", "b", "c")])
ONE_USABLE = raw_row(
    "Say bye.", [completion("a", "Bye!", 6.0, ("4", "4", "4", "4")), completion("b", "", 9.0, ("5", "5", "5", "5"))]
)


def _bad_rating_row():
    bad = raw_row(
        "Count to three.",
        [completion("a", "1 2 3", 8.0, ("5", "5", "5", "5")), completion("b", "1 2", 4.0, ("four", "2", "2", "2"))],
    )
    return bad


def test_loader_skips_ties_counts_malformed_and_strict_names_the_field(write_jsonl):
    no_scores = raw_row(
        "Name a fruit.", [completion("a", "Apple", 7.0, ("4",) * 4), completion("b", "Stone", 3.0, ("1",) * 4)]
    )
    del no_scores["completions"][0]["overall_score"]
    rows = [ROW, TIED, ONE_USABLE, _bad_rating_row(), no_scores, "{broken"]
    path = write_jsonl(rows, name="ultrafeedback.jsonl")
    report = DropReport()
    pairs = load_ultrafeedback(path, score="fine_grained", report=report)
    assert [p.metadata["line"] for p in pairs] == [1, 5]  # line 5 has ratings, so fine-grained works
    assert report.skipped == {"all completions tied": 1, "fewer than two scored completions": 1}
    assert report.dropped == {"unreadable rating 'four'": 1, "undecodable JSON": 1}
    overall = DropReport()
    assert len(load_ultrafeedback(path, score="overall", report=overall)) == 2  # line 4 is fine by overall score
    assert overall.dropped == {"missing field": 1, "undecodable JSON": 1}
    with pytest.raises(DataError) as info:
        load_ultrafeedback(path, score="fine_grained", strict=True)
    assert (
        str(info.value)
        == f"{path}, line 4, field 'completions[1].annotations.helpfulness.Rating': unreadable rating 'four'"
    )
    with pytest.raises(DataError) as info:
        load_ultrafeedback(path, score="overall", strict=True)
    assert (info.value.line, info.value.field) == (5, "completions[0].overall_score")


def test_random_choice_does_not_depend_on_row_position(write_jsonl):
    other = raw_row(
        "Write a limerick.",
        [completion(m, f"Limerick by {m}", s, ("3",) * 4) for m, s in (("a", 9.0), ("b", 5.0), ("c", 4.0), ("d", 3.0))],
    )
    forward = load_ultrafeedback(write_jsonl([ROW, other], name="f.jsonl"), seed=11)
    backward = load_ultrafeedback(write_jsonl([other, ROW], name="b.jsonl"), seed=11)
    assert {(p.chosen, p.rejected) for p in forward} == {(p.chosen, p.rejected) for p in backward}


def test_malformed_completion_structure():
    for row, field in (
        ({**ROW, "completions": "none"}, "completions"),
        ({**ROW, "completions": [ROW["completions"][0], "x"]}, "completions[1]"),
        (
            {**ROW, "completions": [{**ROW["completions"][0], "response": None}, ROW["completions"][1]]},
            "completions[0].response",
        ),
        ({k: v for k, v in ROW.items() if k != "instruction"}, "instruction"),
    ):
        with pytest.raises(DataError) as info:
            ultrafeedback_row_to_pair(row)
        assert info.value.field == field
    same = raw_row(
        "Repeat.", [completion("a", "Same text", 9.0, ("5",) * 4), completion("b", "Same text", 2.0, ("1",) * 4)]
    )
    with pytest.raises(DataError, match="chosen identical to rejected"):
        ultrafeedback_row_to_pair(same)


def test_ranked_loader(write_jsonl):
    report = DropReport()
    ranked = load_ultrafeedback_ranked(write_jsonl([ROW, TIED]), report=report)
    assert len(ranked) == 1 and len(ranked[0].responses) == 4
    assert report.skipped == {"all completions tied": 1}


# ----------------------------------------------------------------------------- binarized


def binarized_row(prompt: str, chosen: str, rejected: str, score_chosen: float, score_rejected: float) -> dict:
    """One row as in HuggingFaceH4/ultrafeedback_binarized (train_prefs)."""
    chosen_messages = [{"content": prompt, "role": "user"}, {"content": chosen, "role": "assistant"}]
    return {
        "prompt": prompt,
        "prompt_id": "4ad0c07b9e9d4fa7d9c1f2c5e3c8a1b0f6d2e7a9c3b5d8e1f0a2b4c6d8e0f1a3",
        "chosen": chosen_messages,
        "rejected": [{"content": prompt, "role": "user"}, {"content": rejected, "role": "assistant"}],
        "messages": chosen_messages,
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
    }


def test_binarized_pair():
    pair = binarized_row_to_pair(binarized_row("What is 7*6?", "42", "36", 9.0, 3.5))
    assert pair.prompt == [Message("user", "What is 7*6?")] and (pair.chosen, pair.rejected) == ("42", "36")
    assert (pair.metadata["score_chosen"], pair.metadata["score_rejected"]) == (9.0, 3.5)
    assert pair.metadata["prompt_id"].startswith("4ad0") and pair.as_ranked().scores == [9.0, 3.5]


def test_binarized_loader_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    mismatch = binarized_row("Capital of Peru?", "Lima", "Cusco", 8.0, 4.0)
    mismatch["rejected"][0]["content"] = "Capital of Chile?"
    rows = [
        binarized_row("What is 7*6?", "42", "36", 9.0, 3.5),
        binarized_row("Spell cat.", "c-a-t", "k-a-t", 5.0, 5.0),
        binarized_row("2+2?", "5", "4", 2.0, 8.0),
        mismatch,
    ]
    path = tmp_path / "train_prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = DropReport()
    pairs = load_ultrafeedback_binarized(path, report=report)
    assert [p.metadata["line"] for p in pairs] == [1]
    assert report.skipped == {"tied scores": 1}
    assert report.dropped == {"chosen scored below rejected": 1, "prompt differs from the conversation": 1}
    assert any("row 4, field 'rejected'" in e for e in report.examples)
    with pytest.raises(DataError) as info:
        load_ultrafeedback_binarized(path, strict=True)
    assert str(info.value) == f"{path}, row 3, field 'score_chosen': chosen scored below rejected (2.0 < 8.0)"
