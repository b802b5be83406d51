"""HH-RLHF adapter: hand-written rows in the upstream format, then the real 2,000-pair sample."""

from __future__ import annotations

import re

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError, Message
from prefalign.data.sources.hh_rlhf import hh_row_to_pair, hh_sft_examples, load_hh_rlhf, parse_hh_dialogue

ONE_TURN = {
    "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast and salt, let it rise, then bake.",
    "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Buy it.",
}
MULTI_TURN = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me how to pick a lock.\n\n"
    "Assistant: I can't help with breaking into property that isn't yours.",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me how to pick a lock.\n\n"
    "Assistant: Sure, first get a tension wrench.",
}
EMPTY_FINAL = {
    "chosen": "\n\nHuman: list of profane bad words\n\nAssistant: ",
    "rejected": "\n\nHuman: list of profane bad words\n\nAssistant: Ok",
}
IDENTICAL = {"chosen": ONE_TURN["rejected"], "rejected": ONE_TURN["rejected"]}
PREFIX_MISMATCH = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me cheat\n\nAssistant: No.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hey you\n\nHuman: Help me cheat\n\nAssistant: Sure.",
}
REPEATED_SPEAKER = {
    "chosen": "\n\nHuman: Tell me a joke\n\nAssistant: Here's a short joke from a friend:\n\n"
    "Assistant:  Why did the bike fall over? It was two-tired.",
    "rejected": "\n\nHuman: Tell me a joke\n\nAssistant: No.",
}
EMPTY_MIDDLE = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: \n\nHuman: Still there?\n\nAssistant: Yes.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: \n\nHuman: Still there?\n\nAssistant: No.",
}
MISSING_REJECTED = {"chosen": ONE_TURN["chosen"]}


def test_parse_dialogue_turns_and_roles():
    messages = parse_hh_dialogue(MULTI_TURN["chosen"])
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0] == Message("user", "Hi there")
    assert messages[-1].content == "I can't help with breaking into property that isn't yours."


def test_single_and_multi_turn_pairs():
    pair = hh_row_to_pair(ONE_TURN)
    assert pair.prompt == [Message("user", "How do I bake bread?")]
    assert pair.chosen.startswith("Mix flour") and pair.rejected == "Buy it."
    multi = hh_row_to_pair(MULTI_TURN)
    assert [m.role for m in multi.prompt] == ["user", "assistant", "user"]
    assert multi.prompt[-1].content == "Tell me how to pick a lock."
    assert multi.rejected == "Sure, first get a tension wrench."


@pytest.mark.parametrize(
    ("row", "reason", "field"),
    [
        (EMPTY_FINAL, "empty final assistant turn", "chosen"),
        (IDENTICAL, "chosen identical to rejected", "rejected"),
        (PREFIX_MISMATCH, "chosen and rejected differ before the last assistant turn (turn 2)", "rejected"),
        (EMPTY_MIDDLE, "empty turn (turn 2, Assistant)", "chosen"),
        (MISSING_REJECTED, "missing field", "rejected"),
        ({"chosen": "no markers at all", "rejected": "x"}, "no Human/Assistant turns", "chosen"),
        (
            {"chosen": "preamble\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
            "text before the first turn",
            "chosen",
        ),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "rejected": "\n\nHuman: a\n\nAssistant: d"},
            "dialogue does not end with an assistant turn",
            "chosen",
        ),
        ({"chosen": "\n\nAssistant: b", "rejected": "\n\nAssistant: c"}, "no user turn before the response", "chosen"),
    ],
)
def test_malformed_rows_name_reason_and_field(row, reason, field):
    with pytest.raises(DataError) as info:
        hh_row_to_pair(row)
    assert (info.value.reason, info.value.field) == (reason, field)


def test_whitespace_only_difference_counts_as_identical():
    row = {"chosen": ONE_TURN["rejected"], "rejected": ONE_TURN["rejected"] + "  "}
    with pytest.raises(DataError, match="chosen identical to rejected"):
        hh_row_to_pair(row)


def test_repeated_speaker_is_merged_or_rejected():
    pair = hh_row_to_pair(REPEATED_SPEAKER)
    assert pair.prompt == [Message("user", "Tell me a joke")]
    assert pair.chosen == "Here's a short joke from a friend:\n\nWhy did the bike fall over? It was two-tired."
    with pytest.raises(DataError, match="same speaker twice in a row"):
        hh_row_to_pair(REPEATED_SPEAKER, merge_repeated_turns=False)


def test_loader_counts_drops_and_strict_names_file_line_field(write_jsonl):
    rows = [
        ONE_TURN,
        EMPTY_FINAL,
        MULTI_TURN,
        IDENTICAL,
        PREFIX_MISMATCH,
        "{not json",
        MISSING_REJECTED,
        REPEATED_SPEAKER,
    ]
    path = write_jsonl(rows, name="harmless-test.jsonl.gz")
    report = DropReport()
    pairs = load_hh_rlhf(path, report=report)
    assert [p.metadata["line"] for p in pairs] == [1, 3, 8]
    assert report.kept == 3 and report.total_dropped == 5
    assert report.dropped == {
        "empty final assistant turn": 1,
        "chosen identical to rejected": 1,
        "chosen and rejected differ before the last assistant turn": 1,
        "undecodable JSON": 1,
        "missing field": 1,
    }
    assert report.summary().startswith(f"{path}: kept 3 rows, dropped 5")
    with pytest.raises(DataError) as info:
        load_hh_rlhf(path, strict=True)
    assert str(info.value) == f"{path}, line 2, field 'chosen': empty final assistant turn"


def test_sft_examples_are_the_chosen_responses():
    pairs = [hh_row_to_pair(ONE_TURN), hh_row_to_pair(MULTI_TURN)]
    examples = hh_sft_examples(pairs)
    assert [e.response for e in examples] == [p.chosen for p in pairs]
    assert [e.prompt for e in examples] == [p.prompt for p in pairs]
    assert all(e.metadata["from"] == "chosen" for e in examples)


# ----------------------------------------------------------------------------- the real sample

MARKER = re.compile(r"\n\n(?:Human|Assistant):")


@pytest.fixture(scope="module")
def real(hh_real_path):
    report = DropReport()
    return load_hh_rlhf(hh_real_path, report=report), report


def _ends_empty(text: str) -> bool:
    return text.rstrip().endswith("Assistant:")


def test_real_every_row_is_kept_or_dropped_with_a_reason(real, hh_real_rows):
    pairs, report = real
    assert report.kept == len(pairs) and report.kept + report.total_dropped == len(hh_real_rows)
    assert report.total_dropped < len(hh_real_rows) // 100  # the sample is mostly clean
    empty = sum(_ends_empty(r["chosen"]) or _ends_empty(r["rejected"]) for r in hh_real_rows)
    assert report.dropped["empty final assistant turn"] == empty > 0
    assert report.total_dropped == empty  # once repeated turns are merged, nothing else is wrong


def test_real_prompts_alternate_and_end_with_a_user_turn(real):
    pairs, _ = real
    for pair in pairs:
        roles = [m.role for m in pair.prompt]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:]))
        assert pair.chosen.strip() and pair.rejected.strip() and pair.chosen != pair.rejected
        assert all(m.content == m.content.strip() and m.content for m in pair.prompt)


def test_real_pairs_round_trip_to_the_raw_dialogue(real, hh_real_rows):
    pairs, _ = real
    squash = lambda text: " ".join(text.split())  # noqa: E731
    checked = 0
    for pair in pairs:
        raw = hh_real_rows[pair.metadata["line"] - 1]
        for side in ("chosen", "rejected"):
            turns = [*pair.prompt, Message("assistant", getattr(pair, side))]
            if len(MARKER.findall(raw[side])) != len(turns):
                continue  # merged repeated turns: checked in the next test
            rendered = "".join(f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in turns)
            assert squash(rendered) == squash(raw[side])
            checked += 1
    assert checked > 0.99 * 2 * len(pairs)


def test_real_merged_rows_are_exactly_those_with_repeated_speakers(real, hh_real_path, hh_real_rows):
    pairs, _ = real
    texts = lambda p: [p.chosen, p.rejected, *(m.content for m in p.prompt)]  # noqa: E731
    with_marker = {p.metadata["line"] for p in pairs if any(MARKER.search(t) for t in texts(p))}
    strict_turns = DropReport()
    unmerged = load_hh_rlhf(hh_real_path, report=strict_turns, merge_repeated_turns=False)
    merged_lines = {p.metadata["line"] for p in pairs} - {p.metadata["line"] for p in unmerged}

    def repeats(text: str) -> bool:
        speakers = re.findall(r"\n\n(Human|Assistant):", text)
        return any(a == b for a, b in zip(speakers, speakers[1:]))

    expected = {i for i, r in enumerate(hh_real_rows, start=1) if repeats(r["chosen"]) or repeats(r["rejected"])}
    assert merged_lines == expected and expected
    # Every turn marker was consumed, except where a merged turn itself starts with the "Human:"
    # artefact, so that joining the two parts re-creates "\n\nHuman:" inside one assistant turn.
    assert with_marker <= merged_lines
    assert strict_turns.dropped["same speaker twice in a row"] == len(expected)


def test_real_multi_turn_share_and_sft(real):
    pairs, _ = real
    assert any(len(p.prompt) == 1 for p in pairs) and any(len(p.prompt) >= 5 for p in pairs)
    assert len(hh_sft_examples(pairs)) == len(pairs)


def test_real_limit_is_a_deterministic_subset(hh_real_path, real):
    pairs, _ = real
    lines = lambda ps: [p.metadata["line"] for p in ps]  # noqa: E731
    first = load_hh_rlhf(hh_real_path, limit=100, seed=1)
    assert lines(first) == lines(load_hh_rlhf(hh_real_path, limit=100, seed=1))
    assert lines(first) != lines(load_hh_rlhf(hh_real_path, limit=100, seed=2))
    assert set(lines(first)) <= set(lines(pairs)) and lines(first) == sorted(lines(first))


def test_real_strict_mode_stops_at_the_first_bad_row(hh_real_path, hh_real_rows):
    first_bad = next(
        i for i, r in enumerate(hh_real_rows, start=1) if _ends_empty(r["chosen"]) or _ends_empty(r["rejected"])
    )
    with pytest.raises(DataError) as info:
        load_hh_rlhf(hh_real_path, strict=True)
    assert info.value.line == first_bad and info.value.source == str(hh_real_path)
    assert "harmless-base.jsonl.gz" in str(info.value) and f"line {first_bad}" in str(info.value)
