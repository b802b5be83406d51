"""IFEval checkers for the layout of a response: markdown format, placeholders, postscripts,
start/end phrases, combined instructions and punctuation.

Each function takes the response and the instruction's keyword arguments (named as in
``input_data.jsonl``) and returns whether the instruction is followed. The semantics follow the
classes of google-research ``instruction_following_eval/instructions.py`` (Zhou et al., 2023);
the upstream class is named in each docstring.
"""

from __future__ import annotations

import json
import re

_CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def check_number_placeholders(response: str, *, num_placeholders: int) -> bool:
    """``PlaceholderChecker``: at least ``num_placeholders`` non-greedy ``[...]`` spans."""
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def check_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """``BulletListChecker``: exactly ``num_bullets`` lines starting with ``*`` (not ``**``) or ``-``."""
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def check_constrained_response(response: str) -> bool:
    """``ConstrainedResponseChecker``: contains "My answer is yes./no./maybe."."""
    text = response.strip()
    return any(option in text for option in _CONSTRAINED_OPTIONS)


def _count_highlights(response: str, *, count_bold: bool) -> int:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    if not count_bold:
        return len(single)
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double)


def check_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """``HighlightSectionChecker`` (current upstream): at least ``num_highlights`` non-empty
    ``*...*`` spans plus non-empty ``**...**`` spans, each within one line."""
    return _count_highlights(response, count_bold=True) >= num_highlights


def check_number_highlighted_sections_2023(response: str, *, num_highlights: int) -> bool:
    """``HighlightSectionChecker`` as first released (Nov. 2023): only ``*...*`` spans count, so
    ``**bold**`` text is not a highlight (the later version also counts ``**...**`` spans)."""
    return _count_highlights(response, count_bold=False) >= num_highlights


def check_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    """``SectionChecker``: splitting on "<spliter> <number>" gives at least ``num_sections`` parts after the first."""
    pattern = r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?"
    return len(re.split(pattern, response)) - 1 >= num_sections


def check_number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """``ParagraphChecker``: exactly ``num_paragraphs`` parts between ``***`` dividers; an empty
    part is allowed only at either end (it is then not counted)."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for index, part in enumerate(parts):
        if not part.strip():
            if index in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def check_postscript(response: str, *, postscript_marker: str) -> bool:
    """``PostscriptChecker``: a line containing the marker (P.S. / P.P.S tolerate spaces), case-insensitive."""
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


def check_json_format(response: str) -> bool:
    """``JsonFormat``: the response, stripped of a surrounding markdown code fence, parses as JSON."""
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(fence):
            text = text[len(fence) :]
            break
    if text.endswith("```"):
        text = text[:-3]
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


def check_title(response: str) -> bool:
    """``TitleChecker``: a non-blank title in double angular brackets ``<<...>>`` on one line."""
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


def check_two_responses(response: str) -> bool:
    """``TwoResponsesChecker``: two different non-empty responses separated by ``******``."""
    parts = response.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part)
        elif index not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def check_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """``RepeatPromptThenAnswer``: the response starts with the request, case-insensitively."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def check_end_phrase(response: str, *, end_phrase: str) -> bool:
    """``EndChecker``: ends with the phrase (case-insensitive, outer whitespace and ``"`` ignored)."""
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def check_quotation(response: str) -> bool:
    """``QuotationChecker``: the whole response is wrapped in double quotation marks."""
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def check_no_comma(response: str) -> bool:
    """``CommaChecker``: no ASCII comma anywhere."""
    return "," not in response
