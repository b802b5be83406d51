"""GSM8K and IFEval loaders: hand-written rows in the upstream formats, errors naming file, line and
field, and the real files (skipped when the data folder is absent)."""

import json

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError
from prefalign.data.sources.gsm8k import load_gsm8k, parse_gsm8k_row, reference_answer
from prefalign.data.sources.ifeval import load_ifeval, load_ifeval_responses, match_responses, parse_ifeval_row


def _write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_reference_answer():
    assert reference_answer("work <<2*3=6>>6\n#### 70,000") == "70000"
    assert reference_answer("x\n#### -3") == "-3"
    assert reference_answer("x\n#### 2.50") == "2.5"
    with pytest.raises(DataError, match="no '####'"):
        reference_answer("no marker 5")
    with pytest.raises(DataError, match="not a single number"):
        reference_answer("#### five")


def test_gsm8k_rows_and_errors(tmp_path):
    good = {"question": "How many?", "answer": "2+2=<<2+2=4>>4\n#### 4"}
    path = _write_rows(
        tmp_path / "test.jsonl", [good, {"question": "Q", "answer": "no marker"}, "{bad json", {"answer": "#### 1"}]
    )
    report = DropReport()
    prompts = load_gsm8k("test", path=path, report=report)
    assert len(prompts) == 1 and report.total_dropped == 3
    p = prompts[0]
    assert p.messages[0].role == "user" and p.messages[0].content == "How many?"
    assert p.metadata == {
        "task": "gsm8k",
        "reference": "4",
        "solution": good["answer"],
        "split": "test",
        "id": "gsm8k/test/0",
    }
    with pytest.raises(DataError, match=r"test.jsonl, line 2, field 'answer'"):
        load_gsm8k("test", path=path, strict=True)
    with pytest.raises(ValueError, match="unknown GSM8K split"):
        load_gsm8k("dev")
    with pytest.raises(DataError, match="field 'question'"):
        parse_gsm8k_row({"question": "  ", "answer": "#### 1"})


def test_ifeval_rows_and_errors(tmp_path):
    good = {
        "key": 7,
        "prompt": "Write without commas.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{}, {"num_words": 5, "relation": "at least", "keyword": None}],
    }
    bad = {**good, "kwargs": [{}]}
    path = _write_rows(tmp_path / "input_data.jsonl", [good, bad])
    prompts = load_ifeval(path)
    assert len(prompts) == 1
    assert prompts[0].metadata == {
        "task": "ifeval",
        "key": 7,
        "instruction_ids": good["instruction_id_list"],
        "instruction_kwargs": [{}, {"num_words": 5, "relation": "at least"}],
    }
    with pytest.raises(DataError, match=r"input_data.jsonl, line 2, field 'kwargs': 1 kwargs for 2 instructions"):
        load_ifeval(path, strict=True)
    with pytest.raises(DataError, match="field 'key'"):
        parse_ifeval_row({**good, "key": "7"})
    with pytest.raises(DataError, match="field 'instruction_id_list'"):
        parse_ifeval_row({**good, "instruction_id_list": ["nocolon", "x:y"]})


def test_ifeval_response_matching(tmp_path):
    prompts = load_ifeval(
        _write_rows(
            tmp_path / "in.jsonl",
            [
                {"key": 1, "prompt": "A", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
                {"key": 2, "prompt": "B edited", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
            ],
        )
    )
    pairs = load_ifeval_responses(
        _write_rows(tmp_path / "resp.jsonl", [{"prompt": "A", "response": "ra"}, {"prompt": "B", "response": "rb"}])
    )
    assert match_responses(prompts, pairs) == (["ra", ""], [1])
    assert match_responses(prompts, pairs, position_fallback=True) == (["ra", "rb"], [1])
    with pytest.raises(DataError, match="field 'response'"):
        load_ifeval_responses(_write_rows(tmp_path / "bad.jsonl", [{"prompt": "A"}]))


def test_real_files():
    try:
        splits = {s: load_gsm8k(s, strict=True) for s in ("train", "test", "test_socratic")}
        ifeval = load_ifeval(strict=True)
    except FileNotFoundError as exc:
        pytest.skip(f"data not available: {exc}")
    assert {s: len(p) for s, p in splits.items()} == {"train": 7473, "test": 1319, "test_socratic": 1319}
    assert splits["test"][0].metadata["reference"] == "18"
    assert len(ifeval) == 541 and ifeval[0].metadata["key"] == 1000
    ids = {i for p in ifeval for i in p.metadata["instruction_ids"]}
    assert len(ids) == 25
