"""Text measurements used by the IFEval checkers: words, sentences, word tokens, relations.

IFEval (Zhou et al., 2023, arXiv:2311.07911; google-research ``instruction_following_eval``)
counts words with the regular expression ``\\w+`` (nltk's ``RegexpTokenizer``), sentences with
nltk's pre-trained English Punkt model, and capitalised words over ``nltk.word_tokenize``.
nltk is not a dependency of prefalign, so this module re-implements those counts:

- :func:`count_words` is exact (the same ``\\w+`` expression; note that Python's ``\\w`` splits
  Indic words at combining vowel signs, as the original does).
- :func:`count_sentences` approximates Punkt: a token ending in ``?`` or ``!`` ends a sentence;
  a word ending in ``.`` ends one; a number ending in ``.`` ends one unless the next token starts
  in lower case; an abbreviation, a single-letter initial or an ellipsis ends one only when the
  next token is a capitalised common word (Punkt's orthographic heuristic: a word also seen in
  lower case, such as "The" or "Let's", starts a sentence; a name such as "Smith" does not).
  Line breaks alone never end a sentence, as in Punkt. Departure: Punkt's learnt abbreviation
  list and orthographic statistics are replaced by the short lists below.
- :func:`word_tokens` approximates the Penn Treebank tokenizer behind ``word_tokenize``: it splits
  off brackets, ``; @ # $ % & ? ! , :`` and ``"`` and the clitics ``'s 'm 'd 'll 're 've n't``;
  hyphenated words stay one token ("Hyphenated words will count as one word", upstream comment).
"""

from __future__ import annotations

import re

#: Comparison relations of IFEval: "less than" means count < threshold, "at least" count >= threshold.
RELATIONS = ("less than", "at least")

_WORD = re.compile(r"\w+")
_TRAILING_CLOSERS = "\"')]}*\u201d\u2019"
# Abbreviations after which "." ends a sentence only before a capitalised common word.
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "rev",
        "gen",
        "col",
        "capt",
        "lt",
        "sgt",
        "sen",
        "rep",
        "gov",
        "hon",
        "etc",
        "e.g",
        "i.e",
        "vs",
        "cf",
        "inc",
        "ltd",
        "co",
        "corp",
        "jr",
        "sr",
        "u.s",
        "u.k",
        "u.n",
        "a.m",
        "p.m",
        "ph.d",
        "approx",
        "dept",
        "fig",
        "vol",
        "pp",
        "ed",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mt",
        "ft",
        "ave",
        "blvd",
        "d.c",
    }
)
# Capitalised, these usually start a sentence (stand-in for Punkt's learnt orthographic context).
_COMMON_STARTERS = frozenset(
    """a an and as at after all also any but by each every first for from he her here his how i if in
    it its let let's many more most my no not now of on once one our she so some such that the their
    then there these they this those to today we what when where which while who why with yes you your
    finally however please next second third another both""".split()
)
_NUMBER_TOKEN = re.compile(r"^[-+$]?\d[\d,.]*$")
_INITIAL = re.compile(r"^[^\W\d_]$")
_SPLIT_PUNCT = re.compile(r"(\.\.\.|--|[\[\](){}<>;@#$%&?!,\"]|:(?!\d))")
_CLITIC = re.compile(r"^(.+?)('s|'m|'d|'ll|'re|'ve|n't)$", re.IGNORECASE)


def compare(count: int, relation: str, threshold: int) -> bool:
    """``count < threshold`` for "less than", ``count >= threshold`` for "at least"."""
    if relation == "less than":
        return count < threshold
    if relation == "at least":
        return count >= threshold
    raise ValueError(f"unknown relation {relation!r}; IFEval supports {RELATIONS}")


def count_words(text: str) -> int:
    """Number of ``\\w+`` runs, exactly as IFEval's ``count_words``."""
    return len(_WORD.findall(text))


def _is_sentence_break(token: str, next_token: str) -> bool:
    core = token.rstrip(_TRAILING_CLOSERS)
    if not core:
        return False
    if core[-1] in "?!":
        return True
    if core[-1] != ".":
        return False
    following = next_token.lstrip(_TRAILING_CLOSERS + "\"'(\u201c\u2018*#")
    starts_sentence = following[:1].isupper() and following.rstrip(".,;:!?\"')*").lower() in _COMMON_STARTERS
    word = core[:-1].lower().lstrip("\"'(\u201c\u2018*")
    if core.endswith("..") or word in _ABBREVIATIONS or word.split("-")[-1] in _ABBREVIATIONS or _INITIAL.match(word):
        return starts_sentence
    if _NUMBER_TOKEN.match(word):
        return not following[:1].islower()
    return True


def count_sentences(text: str) -> int:
    """Approximate Punkt sentence count (see the module docstring for the rules)."""
    tokens = text.split()
    if not tokens:
        return 0
    breaks = sum(_is_sentence_break(tok, nxt) for tok, nxt in zip(tokens, tokens[1:]))
    return breaks + 1


def _split_token(token: str) -> list[str]:
    parts: list[str] = []
    for piece in _SPLIT_PUNCT.split(token):
        if not piece:
            continue
        match = _CLITIC.match(piece)
        parts.extend(match.groups() if match else (piece,))
    return parts


def word_tokens(text: str) -> list[str]:
    """Treebank-like word tokens (punctuation and clitics split off; hyphenated words kept)."""
    tokens: list[str] = []
    for raw in text.split():
        tokens.extend(_split_token(raw))
    return tokens


def count_capital_words(text: str) -> int:
    """Tokens whose cased characters are all upper case (``str.isupper``), as IFEval counts them."""
    return sum(1 for tok in word_tokens(text) if tok.isupper())
