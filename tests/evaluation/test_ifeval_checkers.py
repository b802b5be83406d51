"""Unit tests of the 25 IFEval checkers, the text measurements and the language identifier.

Expected values follow google-research instruction_following_eval/instructions.py semantics."""

import pytest

from prefalign.evaluation.ifeval import INSTRUCTIONS, RULESETS, InstructionError, check_instruction, detect_language
from prefalign.evaluation.ifeval.text import compare, count_capital_words, count_sentences, count_words, word_tokens


def ok(instruction_id, response, **kwargs):
    return check_instruction(instruction_id, response, kwargs)


def test_all_25_instruction_types_are_registered():
    assert len(INSTRUCTIONS) == 25
    assert {i.split(":")[0] for i in INSTRUCTIONS} == {
        "keywords",
        "language",
        "length_constraints",
        "detectable_content",
        "detectable_format",
        "combination",
        "startend",
        "change_case",
        "punctuation",
    }


def test_relations():
    assert compare(4, "less than", 5) and not compare(5, "less than", 5)
    assert compare(5, "at least", 5) and not compare(4, "at least", 5)
    with pytest.raises(ValueError, match="at most"):
        compare(1, "at most", 2)


def test_count_words_is_backslash_w_runs():
    assert count_words("Hello, world! It's 2024.") == 5  # Hello world It s 2024
    assert count_words("") == 0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("One. Two! Three? Four", 4),
        ("Line one\nline two without stop", 1),  # line breaks do not end sentences (Punkt)
        ("Mr. Smith went home. He slept.", 2),  # title abbreviation
        ("See e.g. the appendix. Done.", 2),
        ("It cost 3.5 dollars. Cheap.", 2),
        ("J. Smith wrote it. Then he left.", 2),  # initial before a name: no break
        ("We met in o. Let's go.", 2),  # initial before a common word: break
        ("Items: 1. apples and more.", 1),  # number before lower case: no break
        ('He said "stop." Then left.', 2),
        ("Wait... what happened?", 1),  # ellipsis before lower case
        ("", 0),
    ],
)
def test_count_sentences(text, expected):
    assert count_sentences(text) == expected


def test_word_tokens_and_capital_words():
    assert word_tokens("DON'T stop (NOW), ok?") == ["DO", "N'T", "stop", "(", "NOW", ")", ",", "ok", "?"]
    assert count_capital_words("The NASA-led MISSION, I think, WORKED.") == 3  # MISSION I WORKED; NASA-led is not upper
    assert count_capital_words("NASA's STATE-OF-THE-ART probe") == 2


@pytest.mark.parametrize(
    "text,code",
    [
        ("This is a short English sentence about the weather and the sea.", "en"),
        ("Der Hund ist nicht hier und das ist gut so.", "de"),
        ("Это тест, и он работает как надо.", "ru"),
        ("Това е тест и той работи като часовник.", "bg"),
        ("यह एक परीक्षण है और यह काम करता है।", "hi"),
        ("हे एक चाचणी आहे आणि ते काम करते.", "mr"),
        ("यो एक परीक्षण हो र यो काम गर्छ।", "ne"),
        ("هذا اختبار في النظام من أجل التحقق", "ar"),
        ("این یک آزمایش است که در سیستم انجام می شود", "fa"),
        ("یہ ایک ٹیسٹ ہے اور یہ کام کرتا ہے", "ur"),
        ("Đây là một bài kiểm tra và nó hoạt động tốt.", "vi"),
        ("Hii ni jaribio na inafanya kazi vizuri sana.", "sw"),
        ("Tämä on testi ja se toimii hyvin.", "fi"),
        ("Isto é um teste e funciona muito bem.", "pt"),
        ("Questo è un test e funziona bene.", "it"),
        ("이것은 테스트입니다", "ko"),
        ("ಇದು ಒಂದು ಪರೀಕ್ಷೆ", "kn"),
        ("ਇਹ ਇੱਕ ਟੈਸਟ ਹੈ", "pa"),
        ("આ એક પરીક્ષણ છે", "gu"),
        ("இது ஒரு சோதனை", "ta"),
        ("ఇది ఒక పరీక్ష", "te"),
        ("นี่คือการทดสอบ", "th"),
        ("এটি একটি পরীক্ষা", "bn"),
    ],
)
def test_detect_language(text, code):
    assert detect_language(text) == code


def test_undetectable_text_counts_as_followed():
    assert detect_language("12345 !!") is None
    assert detect_language("YES") is None  # fewer than three Latin words
    assert ok("language:response_language", "12345", language="fr")


def test_keywords():
    assert ok("keywords:existence", "I love Python and RUST.", keywords=["python", "rust"])
    assert not ok("keywords:existence", "I love Python.", keywords=["python", "rust"])
    assert ok("keywords:frequency", "cat cat Cat", keyword="cat", frequency=3, relation="at least")
    assert not ok("keywords:frequency", "cat cat Cat", keyword="cat", frequency=3, relation="less than")
    assert ok("keywords:forbidden_words", "The freedom is fine", forbidden_words=["free"])  # whole words only
    assert not ok("keywords:forbidden_words", "It is FREE.", forbidden_words=["free", "gift"])
    assert ok("keywords:letter_frequency", "Banana", letter="a", let_frequency=3, let_relation="at least")
    assert ok("keywords:letter_frequency", "Banana", letter="A", let_frequency=4, let_relation="less than")
    assert not ok("keywords:letter_frequency", "Banana", letter="n", let_frequency=2, let_relation="less than")


def test_language_and_case():
    assert ok("language:response_language", "Der Hund ist nicht hier und das ist gut.", language="de")
    assert not ok("language:response_language", "The dog is not here and that is good.", language="de")
    assert ok("change_case:english_lowercase", "all lower case text in english is fine here.")
    assert not ok("change_case:english_lowercase", "One capital letter in the text.")
    assert not ok("change_case:english_lowercase", "der hund ist nicht hier und das ist gut.")  # not English
    assert ok("change_case:english_capital", "ALL OF THIS IS IN CAPITALS AND IN ENGLISH.")
    assert not ok("change_case:english_capital", "ALL OF THIS is not.")
    assert ok("change_case:capital_word_frequency", "WE ARE HERE now", capital_frequency=3, capital_relation="at least")
    assert not ok(
        "change_case:capital_word_frequency", "WE ARE HERE now", capital_frequency=3, capital_relation="less than"
    )


def test_length_constraints():
    assert ok("length_constraints:number_words", "one two three", num_words=3, relation="at least")
    assert not ok("length_constraints:number_words", "one two three", num_words=3, relation="less than")
    assert ok("length_constraints:number_sentences", "A. B. C.", num_sentences=4, relation="less than")
    assert ok("length_constraints:number_paragraphs", "p1 *** p2 *** p3", num_paragraphs=3)
    assert ok("length_constraints:number_paragraphs", "*** p1 *** p2 ***", num_paragraphs=2)  # empty ends not counted
    assert not ok("length_constraints:number_paragraphs", "p1 *** *** p2", num_paragraphs=2)  # empty middle part
    text = "Intro here.\n\nBananas are yellow.\n\nEnd."
    args = {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "Bananas"}
    assert ok("length_constraints:nth_paragraph_first_word", text, **args)
    assert ok("length_constraints:nth_paragraph_first_word", text.replace("Bananas", '"bananas,'), **args)
    assert not ok("length_constraints:nth_paragraph_first_word", text, **{**args, "num_paragraphs": 2})
    assert not ok("length_constraints:nth_paragraph_first_word", text, **{**args, "first_word": "apples"})


def test_detectable_content_and_format():
    assert ok("detectable_content:number_placeholders", "Dear [name], at [address]", num_placeholders=2)
    assert not ok("detectable_content:number_placeholders", "Dear [name]", num_placeholders=2)
    assert ok("detectable_content:postscript", "Body\n\nP.S. see you", postscript_marker="P.S.")
    assert ok("detectable_content:postscript", "Body\np. p. s. later", postscript_marker="P.P.S")
    assert not ok("detectable_content:postscript", "Body only", postscript_marker="P.S.")
    assert ok("detectable_format:number_bullet_lists", "* a\n* b\n- c", num_bullets=3)
    assert not ok("detectable_format:number_bullet_lists", "* a\n**bold** line\n- c", num_bullets=3)
    assert ok("detectable_format:constrained_response", "Well... My answer is maybe.")
    assert not ok("detectable_format:constrained_response", "My answer is probably.")
    assert ok("detectable_format:json_format", '```json\n{"a": 1}\n```')
    assert not ok("detectable_format:json_format", "{'a': 1}")
    assert ok("detectable_format:title", "<<My Poem>>\nroses")
    assert not ok("detectable_format:title", "<<   >> and <<broken\n>>")
    assert ok(
        "detectable_format:multiple_sections", "SECTION 1\na\nSECTION 2\nb", section_spliter="SECTION", num_sections=2
    )
    assert not ok("detectable_format:multiple_sections", "SECTION 1\na", section_spliter="SECTION", num_sections=2)


def test_highlights_differ_between_rule_sets():
    text = "*one* and **two** and ** ** and *\n*"
    assert check_instruction("detectable_format:number_highlighted_sections", text, {"num_highlights": 2})
    assert not check_instruction(
        "detectable_format:number_highlighted_sections", text, {"num_highlights": 2}, ruleset="release-2023"
    )
    assert set(RULESETS) == {"current", "release-2023"}


def test_combination_startend_punctuation():
    assert ok("combination:two_responses", "first answer\n******\nsecond answer")
    assert not ok("combination:two_responses", "same\n******\nsame")
    assert not ok("combination:two_responses", "a ****** ****** b")
    assert ok("combination:repeat_prompt", "  write a poem. Here it is", prompt_to_repeat="Write a poem.")
    assert not ok("combination:repeat_prompt", "Sure! Write a poem.", prompt_to_repeat="Write a poem.")
    assert ok("startend:end_checker", 'Text. Any other questions?"  ', end_phrase="any other questions?")
    assert not ok("startend:end_checker", "Any other questions? Bye", end_phrase="Any other questions?")
    assert ok("startend:quotation", ' "quoted" ')
    assert not ok("startend:quotation", '"')
    assert ok("punctuation:no_comma", "No commas here.")
    assert not ok("punctuation:no_comma", "One, two")


def test_blank_response_follows_nothing():
    assert not ok("punctuation:no_comma", "   ")


def test_malformed_instructions_raise_with_the_instruction_named():
    with pytest.raises(InstructionError, match="unknown IFEval instruction 'format:nope'"):
        ok("format:nope", "text")
    with pytest.raises(InstructionError, match="missing \\['relation'\\]"):
        ok("length_constraints:number_words", "text", num_words=3)
    with pytest.raises(InstructionError, match="unexpected \\['extra'\\]"):
        ok("punctuation:no_comma", "text", extra=1)
    with pytest.raises(InstructionError, match="at most"):
        ok("length_constraints:number_words", "text", num_words=3, relation="at most")
    with pytest.raises(InstructionError, match="unknown IFEval rule set"):
        check_instruction("punctuation:no_comma", "x", {}, ruleset="2099")
    # None-valued arguments (the Hugging Face copy of the data) are ignored
    assert check_instruction("punctuation:no_comma", "x", {"num_words": None})
