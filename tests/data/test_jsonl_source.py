"""The generic adapter (bring your own data) and the drop report (prefalign.data.sources.jsonl, data.io)."""

from __future__ import annotations

import json

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message
from prefalign.data.sources.jsonl import (
    SkipRow,
    load_pairs,
    load_prompts,
    load_records,
    load_sft_examples,
    row_to_pair,
    row_to_sft,
)

MAPPING = {"prompt": "question", "chosen": "good", "rejected": "bad"}


def test_bad_line_in_jsonl_is_counted_and_named(write_jsonl):
    path = write_jsonl(
        [
            {"question": "What is 2+2?", "good": "4", "bad": "5"},
            '{"question": "broken", "good": ',
            {"question": "Capital of France?", "good": "Paris", "bad": "Rome"},
        ],
        name="mine.jsonl",
    )
    report = DropReport()
    pairs = load_pairs(path, columns=MAPPING, report=report)
    assert [p.chosen for p in pairs] == ["4", "Paris"]
    assert [p.metadata["line"] for p in pairs] == [1, 3]
    assert report.kept == 2 and report.dropped == {"undecodable JSON": 1}
    assert "mine.jsonl, line 2" in report.examples[0]
    assert "kept 2 rows, dropped 1 (1 x undecodable JSON)" in report.summary()
    with pytest.raises(DataError, match=r"mine\.jsonl, line 2: undecodable JSON"):
        load_pairs(path, columns=MAPPING, strict=True)


def test_missing_column_names_file_line_and_the_users_field(write_jsonl):
    path = write_jsonl([{"question": "q", "good": "a", "bad": "b"}, {"question": "q", "good": "a"}], name="pairs.jsonl")
    report = DropReport()
    assert len(load_pairs(path, columns=MAPPING, report=report)) == 1
    assert report.dropped == {"missing field": 1}
    with pytest.raises(DataError) as info:
        load_pairs(path, columns=MAPPING, strict=True)
    message = str(info.value)
    assert "pairs.jsonl" in message and "line 2" in message and "'bad'" in message
    assert (info.value.line, info.value.field) == (2, "bad")


def test_malformed_values_are_dropped_with_reasons(write_jsonl):
    rows = [
        {"question": "q1", "good": "same", "bad": "same"},
        {"question": "q2", "good": "", "bad": "b"},
        {"question": "q3", "good": 3, "bad": "b"},
        ["not", "an", "object"],
        {"question": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}], "good": "a", "bad": "b"},
        {"question": "q6", "good": "fine", "bad": "worse"},
    ]
    report = DropReport()
    pairs = load_pairs(write_jsonl(rows), columns=MAPPING, report=report)
    assert [p.metadata["line"] for p in pairs] == [6]
    assert report.dropped == {
        "chosen identical to rejected": 1,
        "empty text": 1,
        "expected a string or a list of messages": 1,
        "expected a JSON object, got list": 1,
        "unknown role 'robot'; expected one of": 1,
    }
    assert any("field 'question[1].role'" in e for e in report.examples)


def test_prompt_as_messages_and_system_column():
    row = {
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Joke?"},
        ],
        "chosen": "Why did the chicken...",
        "rejected": "No.",
    }
    pair = row_to_pair(row)
    assert [m.role for m in pair.prompt] == ["user", "assistant", "user"]
    with_system = row_to_pair({"prompt": "Joke?", "system": "Be brief.", "chosen": "a", "rejected": "b"})
    assert with_system.prompt == [Message("system", "Be brief."), Message("user", "Joke?")]
    with pytest.raises(DataError, match="prompt must end with a user turn") as info:
        row_to_pair({**row, "prompt": row["prompt"][:2]})
    assert info.value.field == "prompt"


def test_conversational_chosen_and_rejected():
    convo = lambda answer: [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": answer}]  # noqa: E731
    pair = row_to_pair({"chosen": convo("Blue."), "rejected": convo("Seven.")})
    assert pair.prompt == [Message("user", "Name a colour.")] and (pair.chosen, pair.rejected) == ("Blue.", "Seven.")
    agreeing = row_to_pair({"prompt": "Name a colour. ", "chosen": convo("Blue."), "rejected": convo("Seven.")})
    assert agreeing.prompt == pair.prompt
    with pytest.raises(DataError, match="prompt differs from the conversation"):
        row_to_pair({"prompt": "Something else", "chosen": convo("Blue."), "rejected": convo("Seven.")})
    with_system = row_to_pair(
        {"prompt": "Name a colour.", "system": "Be brief.", "chosen": convo("Blue."), "rejected": "Seven."}
    )
    assert with_system.prompt == pair.prompt
    longer = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *convo("Blue.")]
    with pytest.raises(DataError, match="prompt differs from the conversation"):
        row_to_pair({"prompt": [longer[0], longer[1], longer[2]], "chosen": longer[1:], "rejected": "Seven."})
    other = [{"role": "user", "content": "Name a number."}, {"role": "assistant", "content": "Seven."}]
    with pytest.raises(DataError, match="different prompts") as info:
        row_to_pair({"chosen": convo("Blue."), "rejected": other})
    assert info.value.field == "rejected"
    with pytest.raises(DataError, match="last message must be the assistant's response"):
        row_to_pair({"chosen": convo("Blue.")[:1], "rejected": convo("Seven.")})
    with pytest.raises(DataError, match="missing field") as info:
        row_to_pair({"chosen": "Blue.", "rejected": "Seven."})
    assert info.value.field == "prompt"


def test_sft_from_prompt_response_and_from_messages(write_jsonl):
    rows = [
        {"instruction": "Say hi", "output": "Hi!", "id": 7},
        {"instruction": "Say bye", "output": "   "},
    ]
    report = DropReport()
    examples = load_sft_examples(
        write_jsonl(rows),
        columns={"prompt": "instruction", "response": "output"},
        metadata_columns=["id"],
        report=report,
    )
    assert len(examples) == 1 and examples[0].response == "Hi!" and examples[0].metadata == {"id": 7, "line": 1}
    assert report.dropped == {"empty text": 1}
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    example = row_to_sft({"messages": messages}, {"messages": "messages"})
    assert [m.role for m in example.prompt] == ["system", "user"] and example.response == "Hello"
    with pytest.raises(DataError, match="empty turn") as info:
        row_to_sft({"messages": [*messages[:2], {"role": "assistant", "content": ""}]}, {"messages": "messages"})
    assert info.value.field == "messages[2].content"


def test_prompts_with_metadata_columns(write_jsonl):
    rows = [{"text": "Write a haiku.", "task": "poetry"}, {"task": "none"}]
    report = DropReport()
    prompts = load_prompts(write_jsonl(rows), columns={"prompt": "text"}, metadata_columns=["task"], report=report)
    assert len(prompts) == 1 and prompts[0].metadata == {"task": "poetry", "line": 1}
    assert prompts[0].messages == [Message("user", "Write a haiku.")]
    assert report.dropped == {"missing field": 1}


def test_parquet_json_and_dataset_sources(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": f"question {i}", "a": f"good {i}", "b": f"bad {i}"} for i in range(4)]
    columns = {"prompt": "q", "chosen": "a", "rejected": "b"}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    (tmp_path / "pairs.json").write_text(json.dumps({"data": rows}))
    from_parquet = load_pairs(tmp_path / "pairs.parquet", columns=columns)
    from_json = load_pairs(tmp_path / "pairs.json", columns=columns)
    from_dataset = load_pairs(datasets.Dataset.from_list(rows), columns=columns)
    from_list = load_pairs(rows, columns=columns)
    for pairs in (from_json, from_dataset, from_list):
        assert [(p.prompt, p.chosen, p.rejected, p.metadata) for p in pairs] == [
            (p.prompt, p.chosen, p.rejected, p.metadata) for p in from_parquet
        ]
    assert [p.metadata["line"] for p in from_parquet] == [1, 2, 3, 4]


def test_limit_down_samples_deterministically_and_is_reported():
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(50)]
    report = DropReport()
    first = load_pairs(rows, limit=10, seed=3, report=report)
    again = load_pairs(rows, limit=10, seed=3)
    assert [p.metadata["line"] for p in first] == [p.metadata["line"] for p in again]
    assert len(first) == report.kept == 10 and report.skipped == {"left out by down-sampling": 40}


def test_unknown_mapping_key_and_single_dict_are_user_errors():
    with pytest.raises(ValueError, match="unknown canonical fields"):
        load_pairs([], columns={"question": "q"})
    with pytest.raises(TypeError):
        load_pairs({"prompt": "p", "chosen": "a", "rejected": "b"})


def test_skip_row_is_counted_not_raised_even_in_strict_mode():
    def parse(row):
        if row["keep"]:
            return row_to_pair(row)
        raise SkipRow("filtered out")

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "keep": k} for k in (True, False, False)]
    report = DropReport()
    assert len(load_records(rows, parse, strict=True, report=report)) == 1
    assert report.skipped == {"filtered out": 2} and report.total_dropped == 0
    assert report.summary().endswith("kept 1 rows, dropped 0, skipped 2 (2 x filtered out)")
    assert report.to_dict()["skipped"] == {"filtered out": 2}
