"""A dependency-free language identifier for IFEval's ``language:response_language`` and the
``change_case:english_*`` checks, which upstream run ``langdetect.detect`` (a character n-gram
naive Bayes model over 55 languages).

Method, in two stages:

1. **Script.** Letters are counted per Unicode script; the script with most letters wins. Scripts
   used by one language of IFEval's list decide it at once (Bengali -> ``bn``, Gurmukhi -> ``pa``,
   Gujarati -> ``gu``, Tamil -> ``ta``, Telugu -> ``te``, Kannada -> ``kn``, Malayalam -> ``ml``,
   Thai -> ``th``, Hangul -> ``ko``, Kana -> ``ja``, Han -> ``zh``, Greek -> ``el``, Hebrew -> ``he``).
2. **Stop words** within a shared script (Latin, Cyrillic, Arabic, Devanagari): the language whose
   list of frequent function words has most hits in the text wins, plus letters that only one
   language of the script uses (Russian ы э ё, Ukrainian і ї є ґ, Urdu ٹ ڈ ڑ ں ے ہ ھ, Arabic ة ى ك ي);
   Vietnamese is recognised by its tone-marked letters.

Limits (documented departures from langdetect): only the languages listed in
:data:`STOP_WORDS` and the single-language scripts above can be returned; text with no letters, or
Latin text without a single listed stop word, is "undetectable" (``None``), which the checkers
count as followed, as upstream does when langdetect raises; so is Latin text of fewer than three
words (langdetect guesses on such text, often wrongly). Closely related languages outside the
lists (Catalan, Galician, Serbian, Macedonian, Malay, ...) are reported as their nearest listed
neighbour. Code-mixed text is attributed to the script with most letters.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

# Unicode blocks -> script name (ranges inclusive).
_SCRIPT_RANGES = (
    (0x0041, 0x024F, "Latin"),
    (0x1E00, 0x1EFF, "Latin"),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x3130, 0x318F, "Hangul"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0x3040, 0x30FF, "Kana"),
    (0x4E00, 0x9FFF, "Han"),
)
_SINGLE_LANGUAGE_SCRIPTS = {
    "Greek": "el",
    "Armenian": "hy",
    "Hebrew": "he",
    "Bengali": "bn",
    "Gurmukhi": "pa",
    "Gujarati": "gu",
    "Oriya": "or",
    "Tamil": "ta",
    "Telugu": "te",
    "Kannada": "kn",
    "Malayalam": "ml",
    "Thai": "th",
    "Georgian": "ka",
    "Hangul": "ko",
    "Kana": "ja",
    "Han": "zh",
}

STOP_WORDS: dict[str, dict[str, frozenset[str]]] = {
    "Latin": {
        "en": frozenset(
            "the and of to is in that it for you with as are this be on was have not or by at from an your can will they we i my but if their which there what all has would about more so do how our".split()
        ),
        "de": frozenset(
            "der die und das ist nicht ein eine zu den mit sich auf für von dem des auch es im sie ich wir sind wird werden oder aber wie bei als nach noch dass kann einen einer zum zur über haben hat".split()
        ),
        "fr": frozenset(
            "le la les de des et est un une du en que qui pour dans ce il pas sur au avec ne se plus par sont vous nous mais ou cette son sa aux être je elle leur".split()
        ),
        "es": frozenset(
            "el la los las de del y que en un una es por con no para se lo su al como más pero sus le ya o este esta son muy también fue ha está yo".split()
        ),
        "pt": frozenset(
            "o a os as de do da dos das e que em um uma é para com não no na por se mais como mas ao seu sua ou são também você foi está nos nas pelo pela isso muito ele ela".split()
        ),
        "it": frozenset(
            "il lo la i gli le di del della e è che un una per non in con si da al alla sono come ma anche più questo questa nel nella dei delle ha essere ci mi ti".split()
        ),
        "nl": frozenset(
            "de het een en van is dat op te in zijn voor niet met die er aan ook als bij maar om je ik wat wordt naar hij zij we".split()
        ),
        "sw": frozenset(
            "na ya wa kwa ni za la katika hii kama au lakini pia kuwa yake hiyo sana wake huu watu hivyo baada kwamba hata kila ili cha vya zaidi yako wewe mimi sisi hapa".split()
        ),
        "fi": frozenset(
            "ja on ei että se oli ovat mutta kun niin tai hän myös kuin jos tämä ole olla sen mitä voi ne vain sitä joka jotka kanssa siitä nyt minä sinä me te".split()
        ),
        "pl": frozenset(
            "i w nie na się z że do to jest jak o po ale co dla od tak za są czy przez już jego jej ten ta być może oraz tylko".split()
        ),
        "tr": frozenset(
            "ve bir bu da de için ile çok ne o gibi daha olarak var ama en mi şey ben sen biz değil kadar sonra her olan veya".split()
        ),
        "id": frozenset(
            "yang dan di itu dengan untuk tidak ini dari dalam akan pada juga saya ke karena ada bisa kami mereka atau oleh sudah kita anda".split()
        ),
        "sv": frozenset(
            "och att det som en är på för med av till den inte har de ett om jag men var så vi kan eller från".split()
        ),
        "ro": frozenset(
            "și în de la cu pe că nu este un o care mai din pentru se sunt sau ce au fost ca lui acest această".split()
        ),
        "vi": frozenset("và của là có được các những trong cho không một với người này để khi đã cũng như từ".split()),
    },
    "Cyrillic": {
        "ru": frozenset(
            "и в не на что с по это как он к но из у за от так же для то все его она был быть мы вы или ты я они было если также бы уже".split()
        ),
        "bg": frozenset(
            "и в не на че с по това като той за от да се е са ще но или към със при които който която след много също още тя".split()
        ),
        "uk": frozenset(
            "і в не на що з та це як до у за від для але є його вона він ми ви або які був також ще щоб".split()
        ),
    },
    "Arabic": {
        "ar": frozenset(
            "في من على إلى أن التي الذي عن مع هذا هذه كان لا ما هو هي قد كل بين ذلك أو ثم لم عند حتى".split()
        ),
        "fa": frozenset(
            "و در به از که این را با است برای آن یک خود تا می ها بر هم نیز شود کرد شده بود اما باید ما شما".split()
        ),
        "ur": frozenset(
            "ہے ہیں کے کی کا میں اور سے کو پر یہ ایک نہیں بھی تھا تھے لیے کہ ہو وہ جو کر گیا اس آپ".split()
        ),
    },
    "Devanagari": {
        "hi": frozenset(
            "है हैं के की का को में से और यह एक पर था थे लिए भी नहीं कि हो जो करने गया साथ अपने तो होता किया इस".split()
        ),
        "mr": frozenset(
            "आहे आहेत आणि या व हे ही मध्ये करून केले होते होता त्या त्यांच्या नाही पण तर म्हणून असे आपल्या साठी ते तो ती".split()
        ),
        "ne": frozenset("छ छन् हो र को मा ले पनि गर्न गरेको थियो भएको यो त्यो हुन्छ लागि तथा सबै नै भने गर्ने हुने छैन".split()),
    },
}
# Letters used by only one language of a shared script: each occurrence counts as one hit.
_DISTINCT_LETTERS = {
    "ru": frozenset("ыэё"),
    "uk": frozenset("іїєґ"),
    "bg": frozenset("ѝ"),
    "ur": frozenset("ٹڈڑںےہھ"),
    "ar": frozenset("ةىكي"),
}
_MIN_LATIN_WORDS = 3  # fewer Latin-script words than this: too little evidence to tell
_VIETNAMESE_LETTERS = frozenset("ăâđêôơư") | frozenset(chr(c) for c in range(0x1EA0, 0x1EFA))


def _script_of(char: str) -> str | None:
    code = ord(char)
    for low, high, script in _SCRIPT_RANGES:
        if low <= code <= high:
            return script if (script != "Latin" or char.isalpha()) else None
    return None


def script_counts(text: str) -> Counter:
    """Number of letters (and combining marks) of each script in ``text``."""
    counts: Counter = Counter()
    for char in text:
        if char.isalpha() or unicodedata.category(char).startswith("M"):
            script = _script_of(char)
            if script:
                counts[script] += 1
    return counts


def _words(text: str) -> list[str]:
    out = []
    for raw in text.lower().split():
        word = "".join(c for c in raw if unicodedata.category(c)[0] not in "PSN")
        if word:
            out.append(word)
    return out


def _stop_word_scores(text: str, script: str) -> Counter:
    words = _words(text)
    scores: Counter = Counter()
    for language, stop_words in STOP_WORDS[script].items():
        scores[language] = sum(1 for w in words if w in stop_words)
        distinct = _DISTINCT_LETTERS.get(language)
        if distinct:
            scores[language] += sum(1 for c in text.lower() if c in distinct)
    return scores


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the language of ``text``, or ``None`` when it cannot be told."""
    counts = script_counts(text)
    if not counts:
        return None
    script, n_letters = counts.most_common(1)[0]
    if script in _SINGLE_LANGUAGE_SCRIPTS:
        return _SINGLE_LANGUAGE_SCRIPTS[script]
    if script == "Latin":
        if len(_words(text)) < _MIN_LATIN_WORDS:
            return None
        n_vietnamese = sum(1 for c in text.lower() if c in _VIETNAMESE_LETTERS)
        if n_vietnamese >= max(2, 0.03 * n_letters):
            return "vi"
    scores = _stop_word_scores(text, script)
    language, best = scores.most_common(1)[0]
    return language if best > 0 else None
