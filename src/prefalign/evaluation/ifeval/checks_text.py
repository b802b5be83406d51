"""IFEval checkers for the words of a response: length, keywords, letter case and language.

Semantics follow google-research ``instruction_following_eval/instructions.py`` (Zhou et al.,
2023); the upstream class is named in each docstring. Departures: sentence counting, word
tokenization and language identification use the dependency-free approximations of
:mod:`.text` and :mod:`.language` instead of nltk and langdetect (their limits are documented
there). Keywords are matched literally (upstream passes them to ``re`` unescaped; no keyword in
the released data contains a regular-expression metacharacter, so results agree).
"""

from __future__ import annotations

import re

from prefalign.evaluation.ifeval.language import detect_language
from prefalign.evaluation.ifeval.text import compare, count_capital_words, count_sentences, count_words

_FIRST_WORD_STOP = frozenset(".,?!'\"")


def check_number_words(response: str, *, num_words: int, relation: str) -> bool:
    """``NumberOfWords``: ``\\w+`` word count compared to ``num_words``."""
    return compare(count_words(response), relation, num_words)


def check_number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    """``NumberOfSentences``: (approximate Punkt) sentence count compared to ``num_sentences``."""
    return compare(count_sentences(response), relation, num_sentences)


def check_number_paragraphs_first_word(
    response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    """``ParagraphFirstWordCheck``: exactly ``num_paragraphs`` non-empty blocks separated by a blank
    line (``\\n\\n``), and block ``nth_paragraph`` (1-based, counted over the raw split as upstream
    does) starts with ``first_word``, case-insensitively and ignoring leading quotes."""
    paragraphs = response.split("\n\n")
    count = sum(1 for p in paragraphs if p.strip())
    if nth_paragraph > count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    found = ""
    for char in word:
        if char in _FIRST_WORD_STOP:
            break
        found += char.lower()
    return count == num_paragraphs and found == first_word.lower()


def check_keywords_existence(response: str, *, keywords: list[str]) -> bool:
    """``KeywordChecker``: every keyword occurs (case-insensitive substring)."""
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


def check_keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    """``KeywordFrequencyChecker``: case-insensitive occurrences of ``keyword`` compared to ``frequency``."""
    occurrences = len(re.findall(re.escape(keyword.strip()), response, flags=re.IGNORECASE))
    return compare(occurrences, relation, frequency)


def check_forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    """``ForbiddenWords``: no forbidden word occurs as a whole word (case-insensitive)."""
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in set(forbidden_words))


def check_letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    """``LetterFrequencyChecker``: case-insensitive count of one character compared to ``let_frequency``."""
    target = letter.strip().lower()
    if len(target) != 1:
        raise ValueError(f"keywords:letter_frequency needs a single character, got {letter!r}")
    return compare(response.lower().count(target), let_relation, let_frequency)


def check_response_language(response: str, *, language: str) -> bool:
    """``ResponseLanguageChecker``: the detected language is ``language``; undetectable text counts
    as followed (upstream's behaviour when langdetect raises)."""
    detected = detect_language(response)
    return detected is None or detected == language


def _is_english(response: str) -> bool:
    detected = detect_language(response)
    return detected is None or detected == "en"


def check_english_capital(response: str) -> bool:
    """``CapitalLettersEnglishChecker``: ``str.isupper()`` and English."""
    return response.isupper() and _is_english(response)


def check_english_lowercase(response: str) -> bool:
    """``LowercaseLettersEnglishChecker``: ``str.islower()`` and English."""
    return response.islower() and _is_english(response)


def check_capital_word_frequency(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    """``CapitalWordFrequencyChecker``: number of all-capital word tokens compared to ``capital_frequency``."""
    return compare(count_capital_words(response), capital_relation, capital_frequency)
