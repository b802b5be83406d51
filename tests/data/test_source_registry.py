"""The registry: load_preference_data / load_sft_data / load_prompt_data / load_ranked_data."""

from __future__ import annotations

import pytest

from prefalign.data.schema import DataError, Message
from prefalign.data.sources import (
    load_preference_data,
    load_prompt_data,
    load_ranked_data,
    load_sft_data,
    prompts_from_pairs,
    source_name,
)

from .test_helpsteer import ROWS as HELPSTEER_ROWS
from .test_safe_rlhf import DUAL_SAFE, DUAL_UNSAFE, MIXED
from .test_ultrafeedback import ROW as ULTRAFEEDBACK_ROW


def test_names_are_normalised():
    assert source_name("HH_RLHF") == "hh-rlhf" and source_name("pku-saferlhf") == "safe-rlhf"
    assert source_name("ultrafeedback_binarized") == "ultrafeedback-binarized"
    assert source_name("my_file.jsonl") is None and source_name(["rows"]) is None


def test_named_set_with_its_default_file(hh_real_path):
    pairs, report = load_preference_data("hh-rlhf", limit=50, seed=0)
    assert len(pairs) == 50 == report.kept and report.source == str(hh_real_path)
    assert "dropped" in report.summary() and report.total_dropped > 0


def test_named_set_from_a_given_path_with_adapter_options(write_jsonl):
    path = write_jsonl([DUAL_SAFE, MIXED, DUAL_UNSAFE], name="safe.jsonl")
    pairs, report = load_preference_data("safe-rlhf", path=path, drop_dual_unsafe=True)
    assert [p.metadata["category"] for p in pairs] == ["dual_safe", "mixed"]
    assert report.skipped == {"dual_unsafe pair filtered out": 1}
    sft, sft_report = load_sft_data("safe-rlhf", path=path)
    assert [e.response for e in sft] == [DUAL_SAFE["response_1"], DUAL_SAFE["response_0"], MIXED["response_1"]]
    assert sft_report.kept == len(sft)


def test_users_file_with_column_mapping(write_jsonl):
    rows = [{"q": "Hi?", "good": "Hello!", "bad": "Go away."}, {"q": "Bye?", "good": "Bye!", "bad": "Bye!"}]
    path = write_jsonl(rows, name="mine.jsonl")
    pairs, report = load_preference_data(str(path), columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert len(pairs) == 1 and pairs[0].prompt == [Message("user", "Hi?")]
    assert report.dropped == {"chosen identical to rejected": 1}
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2, field 'bad': chosen identical to rejected"):
        load_preference_data(path, columns={"prompt": "q", "chosen": "good", "rejected": "bad"}, strict=True)
    sft, _ = load_sft_data(path, columns={"prompt": "q", "response": "good"})
    assert [e.response for e in sft] == ["Hello!", "Bye!"]
    prompts, _ = load_prompt_data(path, columns={"prompt": "q"})
    assert [p.messages[0].content for p in prompts] == ["Hi?", "Bye?"]


def test_unknown_name_that_is_no_file():
    with pytest.raises(ValueError, match="neither a data set name"):
        load_preference_data("no-such-set")


def test_sft_and_prompts_of_a_named_set(hh_real_path):
    pairs, _ = load_preference_data("hh-rlhf")
    sft, report = load_sft_data("hh-rlhf", limit=10, seed=4)
    assert len(sft) == 10 == report.kept
    by_line = {p.metadata["line"]: p for p in pairs}
    assert all(by_line[e.metadata["line"]].chosen == e.response for e in sft)
    prompts, prompt_report = load_prompt_data("hh-rlhf")
    distinct = {tuple((m.role, m.content) for m in p.prompt) for p in pairs}
    assert len(prompts) == len(distinct) == prompt_report.kept
    assert prompt_report.skipped.get("repeated prompt", 0) == len(pairs) - len(distinct)
    assert all(p.messages[-1].role == "user" for p in prompts)


def test_prompts_from_pairs_keeps_first_occurrence(write_jsonl):
    pairs, _ = load_preference_data("safe-rlhf", path=write_jsonl([MIXED, DUAL_SAFE, MIXED]))
    prompts = prompts_from_pairs(pairs)
    assert [p.metadata["line"] for p in prompts] == [1, 2]


def test_ranked_data(write_jsonl):
    ranked, report = load_ranked_data("ultrafeedback", path=write_jsonl([ULTRAFEEDBACK_ROW]), score="fine_grained")
    assert len(ranked) == 1 and ranked[0].scores == [5.0, 4.0, 3.0, 2.5] and report.kept == 1
    ranked, _ = load_ranked_data("helpsteer", path=write_jsonl(HELPSTEER_ROWS, name="hs.jsonl"))
    assert len(ranked[0].responses) == 3
    ranked, _ = load_ranked_data("safe-rlhf", path=write_jsonl([MIXED], name="s.jsonl"))
    assert ranked[0].responses == [MIXED["response_1"], MIXED["response_0"]]
