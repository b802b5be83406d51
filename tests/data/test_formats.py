"""Every data format and source (prefalign.data.formats), TRL's formats, bad rows and the evaluation split."""

from __future__ import annotations

import csv
import json
import re

import pytest

from prefalign.data.config import DataConfig, load_pairs, load_prompt_records, load_sft
from prefalign.data.io import DropReport
from prefalign.data.schema import DataError
from prefalign.data.sources import load_preference_data, load_prompt_data, load_sft_data

PAIRS = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


@pytest.fixture
def sources(tmp_path):
    """The same six pairs as JSONL, JSON, CSV, Parquet, Arrow, a save_to_disk Dataset and a DatasetDict."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    out["jsonl"] = tmp_path / "pairs.jsonl"
    out["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    out["json"] = tmp_path / "pairs.json"
    out["json"].write_text(json.dumps(PAIRS))
    out["csv"] = _write_csv(tmp_path / "pairs.csv", PAIRS)
    out["parquet"] = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS), out["parquet"])
    _dataset(PAIRS).save_to_disk(str(tmp_path / "disk"))
    out["disk"] = tmp_path / "disk"
    out["arrow"] = next((tmp_path / "disk").glob("*.arrow"))
    dd = datasets.DatasetDict({"train": _dataset(PAIRS[:4]), "test": _dataset(PAIRS[4:])})
    dd.save_to_disk(str(tmp_path / "dict"))
    out["dict"] = tmp_path / "dict"
    return out


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "arrow", "disk"])
def test_every_format_gives_the_same_pairs(sources, kind):
    pairs, report = load_preference_data(str(sources[kind]))
    assert [(p.prompt[-1].content, p.chosen, p.rejected) for p in pairs] == [
        (r["prompt"], r["chosen"], r["rejected"]) for r in PAIRS
    ]
    assert report.kept == 6 and report.total_dropped == 0


def test_a_dataset_dict_folder_is_read_by_split_and_gives_its_own_evaluation_split(sources):
    pairs, _ = load_preference_data(str(sources["dict"]), split="test")
    assert [p.chosen for p in pairs] == ["good 4", "good 5"]
    with pytest.raises(ValueError, match=r"split 'validation' not found; splits: train, test"):
        load_preference_data(str(sources["dict"]), split="validation")
    train, held_out, _ = load_pairs(DataConfig(source=str(sources["dict"]), eval_split="test"))
    assert [p.chosen for p in train] == [f"good {i}" for i in range(4)]
    assert [p.chosen for p in held_out] == ["good 4", "good 5"]


def test_a_separate_evaluation_file_replaces_the_random_hold_out(sources, tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + "{broken\n")
    train, held_out, report = load_pairs(DataConfig(source=str(sources["csv"]), eval_source=str(held), eval_size=0.5))
    assert len(train) == 6 and [p.chosen for p in held_out] == ["a"]
    assert report.kept == 7 and report.total_dropped == 1
    assert report.rows[0]["source"] == str(held) and report.rows[0]["line"] == 2


def test_hub_ids_are_not_tried_when_the_users_environment_is_offline(monkeypatch):
    """No hub is reachable here: the offline refusal is checked for real, the online path with a stand-in
    for ``datasets.load_dataset`` (it checks the id and split we pass and that its rows are parsed)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'someone/prefs' is neither a data set name .* HF_HUB_OFFLINE"):
        load_preference_data("someone/prefs")
    import datasets

    calls = []

    def fake_load_dataset(name, split=None):
        calls.append((name, split))
        return _dataset(PAIRS[:2])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs, report = load_preference_data("someone/prefs", split="test_prefs")
    assert calls == [("someone/prefs", "test_prefs")]
    assert [p.chosen for p in pairs] == ["good 0", "good 1"] and report.kept == 2

    def failing(name, split=None):
        raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(ValueError, match=r"^could not load 'someone/prefs' \(split 'train'\) from the hub: .*Hub$"):
        load_preference_data("someone/prefs", split="train")


def test_trl_sft_formats_are_recognised(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": [{"role": "user", "content": "3+3?"}], "completion": [{"role": "assistant", "content": "6"}]},
        {"prompt": "ours", "response": "also works"},
    ]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, report = load_sft_data(str(path))
    assert [(e.prompt[-1].content, e.response) for e in examples] == [
        ("hi", "hello"),
        ("2+2?", "4"),
        ("3+3?", "6"),
        ("ours", "also works"),
    ]
    assert report.total_dropped == 0


def test_trl_preference_and_prompt_formats_are_recognised(tmp_path):
    conv = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}],
    }
    (tmp_path / "implicit.jsonl").write_text(json.dumps(conv) + "\n")
    pairs, _ = load_preference_data(str(tmp_path / "implicit.jsonl"))
    assert (pairs[0].prompt[-1].content, pairs[0].chosen, pairs[0].rejected) == ("q", "yes", "no")
    rows = [{"prompt": "plain"}, {"prompt": [{"role": "user", "content": "chat"}]}]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, _ = load_prompt_data(str(tmp_path / "prompts.jsonl"))
    assert [p.messages[-1].content for p in prompts] == ["plain", "chat"]
    train, held, _ = load_prompt_records(DataConfig(source=str(tmp_path / "prompts.jsonl"), eval_size=0))
    assert len(train) == 2 and held == []


def test_every_bad_row_is_reported_with_file_line_and_field_and_the_rest_kept(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"prompt": f"p{i}", "response": f"r{i}"}).encode() for i in range(3)]
    bad_utf8 = b'{"prompt": "caf\xff", "response": "ok"}'
    lines = [good[0], bad_utf8, good[1], b'{"prompt": "x"}', b'{"prompt": "y", "response": ', good[2]]
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = DropReport()
    examples, report = load_sft_data(str(path))
    assert [e.response for e in examples] == ["r0", "r1", "r2"]
    assert report.total_dropped == 3
    by_line = {row["line"]: row for row in report.rows}
    assert by_line[2]["field"] == "prompt" and by_line[2]["reason"].startswith("not valid UTF-8 (byte 0xff")
    assert by_line[4]["field"] == "response" and by_line[4]["reason"] == "missing field"
    assert by_line[5]["reason"].startswith("undecodable JSON")
    assert all(row["source"] == str(path) for row in report.rows)
    assert f"{path}, line 2, field 'prompt': not valid UTF-8" in report.details()
    report.write(tmp_path / "dropped.jsonl")
    written = [json.loads(x) for x in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert [r["line"] for r in written] == [2, 4, 5]
    with pytest.raises(DataError, match=r"mixed\.jsonl, line 2, field 'prompt': not valid UTF-8"):
        load_sft_data(str(path), strict=True)


def test_csv_rows_are_named_by_their_file_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b'prompt,response\n"multi\nline prompt",fine\nbad\xfe,oops\nonly prompt,\nx,y,extra\nlast,one\n')
    examples, report = load_sft_data(str(path))
    assert [e.response for e in examples] == ["fine", "one"]
    assert {r["line"]: (r["field"], r["reason"].split(" (")[0]) for r in report.rows} == {
        4: ("prompt", "not valid UTF-8"),
        5: ("response", "empty text"),
        6: (None, "3 cells for 2 header columns"),
    }


def test_table_formats_name_the_row_index(sources, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "holes.parquet"
    pq.write_table(pa.Table.from_pylist([PAIRS[0], {**PAIRS[1], "chosen": None}]), path)
    pairs, report = load_preference_data(str(path))
    assert len(pairs) == 1 and report.rows == [
        {"source": str(path), "row": 2, "field": "chosen", "reason": "missing field (value is null)"}
    ]


def test_the_columns_example_in_help_parses(tmp_path):
    from prefalign.cli import parse_config

    doc = DataConfig.__doc__ or ""
    import inspect

    source = inspect.getsource(DataConfig)
    example = re.search(r"e\.g\. --data\.columns ([a-z ]+)\n?\s*\(", source)
    assert example is not None, doc
    words = example.group(1).split()
    config, _ = parse_config("rm", ["--data.columns", *words])
    assert (
        config.data.columns
        == dict(zip(words[::2], words[1::2]))
        == {
            "prompt": "question",
            "chosen": "good",
            "rejected": "bad",
        }
    )
    rows = [{"question": "q", "good": "g", "bad": "b"}]
    (tmp_path / "mine.jsonl").write_text(json.dumps(rows[0]) + "\n")
    cfg = DataConfig(source=str(tmp_path / "mine.jsonl"), columns=config.data.columns, eval_size=0)
    train, _, _ = load_pairs(cfg)
    assert train[0].chosen == "g"
    options, _ = parse_config("rm", ["--data.options", "drop_dual_safe", "True", "score", "fine_grained"])
    assert options.data.options == {"drop_dual_safe": True, "score": "fine_grained"}  # no longer YAML-only
    with pytest.raises(ValueError, match=r"data.columns: unknown field\(s\) \['answer'\]"):
        DataConfig(columns={"answer": "x"})


def test_sft_through_a_data_config_with_an_eval_file(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) + "\n" for i in range(4))
    )
    (tmp_path / "eval.csv").write_text("prompt,completion\nq,a\n")
    train, held, report = load_sft(
        DataConfig(source=str(tmp_path / "train.jsonl"), eval_source=str(tmp_path / "eval.csv"))
    )
    assert len(train) == 4 and [e.response for e in held] == ["a"] and report.kept == 5
