"""
Languages and their scripts.

Each language is a folder prompting/prompt_gen/<language>/ holding its word lists and a
language.json entry:

    name               "Hindi"                           (used inside prompts)
    script             "Devanagari"                      (used inside prompts)
    unicode_ranges     [["0900", "097F"], ...]           letters of the script, hex code points
    extra_characters   "।॥"                              borrowed characters the language writes
                                                         (Bangla ends sentences with the Devanagari danda)
    sentence_end       ["।", ".", "!", "?"]              what a finished story may end with
    story_traditions   "the Panchatantra, ..."           well-known children's stories, for template 4+
    instruct_labels    {"words": "शब्द", ...}             labels of the instruct format's block (optional;
                                                         English labels for any that are missing)

The word lists are nouns/verbs/adjectives/endings.tsv, one 'word<TAB>english gloss' per line.
Adding a language = adding a folder with its word lists and this file.
The analysis stage imports script_share() from here to measure script purity.
"""
import functools
import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from regional_tinystories.errors import InputError
from regional_tinystories.files import first_bad_utf8

# The word lists live with the prompting stage, beside generate_prompts.py.
PROMPT_GEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prompting", "prompt_gen")

# Zero-width non-joiner / joiner: Indic text needs them to pick the right conjunct
# or half form, so cleaning must never drop them.
ZERO_WIDTH_JOINERS = "\u200c\u200d"
# Quotes a story may close with after its final full stop: ... "Let's go!"
CLOSING_QUOTES = "\"'”’»)"


@dataclass(frozen=True)
class Language:
    key: str  # folder name, lowercase: "hindi"
    name: str
    script: str
    script_chars: frozenset  # every character of unicode_ranges plus extra_characters: O(1) lookups
    sentence_end: tuple
    story_traditions: str
    instruct_labels: dict = field(default_factory=dict, compare=False, hash=False)


# A language key is a folder name, never a path: "../../x" must not read a language.json outside PROMPT_GEN_DIR.
LANGUAGE_KEY = re.compile(r"[a-z0-9_]+")


def available_languages():
    return sorted(name for name in os.listdir(PROMPT_GEN_DIR) if LANGUAGE_KEY.fullmatch(name)
                  and os.path.isfile(os.path.join(PROMPT_GEN_DIR, name, "language.json")))


def load_language(key):
    """The Language for a lowercase key such as "hindi"; ValueError with a one-line reason if unusable."""
    if not isinstance(key, str) or not LANGUAGE_KEY.fullmatch(key):
        raise _unknown_language(key)
    return _load_language_entry(key)


def _unknown_language(key):
    shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
    return ValueError(f"unknown language {shown} (a language is a folder of prompting/prompt_gen/, named in "
                      f"lowercase letters, digits and _; known: {', '.join(available_languages())})")


@functools.cache  # records name their language one by one: read each language.json once
def _load_language_entry(key):
    path = os.path.join(PROMPT_GEN_DIR, key, "language.json")
    if not os.path.isfile(path):
        raise _unknown_language(key)
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
        script_chars = frozenset(chr(code) for first, last in entry["unicode_ranges"]
                                 for code in range(int(first, 16), int(last, 16) + 1))
        return Language(key=key, name=entry["name"], script=entry["script"],
                        script_chars=script_chars | frozenset(entry.get("extra_characters", "")),
                        sentence_end=tuple(entry["sentence_end"]),
                        story_traditions=entry["story_traditions"],
                        instruct_labels=dict(entry.get("instruct_labels", {})))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed language entry ({type(e).__name__}: {e})") from None


def read_word_list(path):
    """[(word, english_gloss)] from a file of 'word<TAB>english gloss' lines; InputError on bad lines."""
    if not os.path.isfile(path):
        raise InputError(f"word list not found: {path}")
    entries, first_seen = [], {}
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = [unicodedata.normalize("NFC", part.strip()) for part in line.rstrip("\n").split("\t")]
                if len(fields) != 2 or not all(fields):
                    raise InputError(f"{path}:{line_no}: expected 'word<TAB>english gloss', got {line.strip()!r}")
                word = fields[0]
                if word in first_seen:
                    # A repeated word would make two "unique" combinations produce the same prompt.
                    raise InputError(f"{path}:{line_no}: duplicate word {word!r} (first on line {first_seen[word]})")
                first_seen[word] = line_no
                entries.append((word, fields[1]))
    except UnicodeDecodeError:
        line_no, offset = first_bad_utf8(path)
        raise InputError(f"{path}:{line_no}: not UTF-8 text (byte {offset} of the file)") from None
    if not entries:
        raise InputError(f"word list is empty: {path}")
    return entries


def word_list(language, kind, words_dir=None):
    """The entries of one of a language's word lists (kind: nouns, verbs, adjectives or endings)."""
    return read_word_list(os.path.join(words_dir or os.path.join(PROMPT_GEN_DIR, language), f"{kind}.tsv"))


def _as_language(language):
    return language if isinstance(language, Language) else load_language(language)


def script_share(text, language):
    """Fraction (0..1) of the letters in text that belong to the language's script.

    Letters include combining marks (Indic vowel signs are marks); digits, punctuation and
    spaces do not count either way. Text without letters scores 0.0.
    """
    language = _as_language(language)
    # Classify each distinct character once: a story has thousands of characters but few distinct ones.
    letter_counts = {ch: n for ch, n in Counter(text).items() if unicodedata.category(ch)[0] in "LM"}
    letters = sum(letter_counts.values())
    if not letters:
        return 0.0
    return sum(n for ch, n in letter_counts.items() if ch in language.script_chars) / letters


def _keep_char(ch, language):
    if ch in ZERO_WIDTH_JOINERS or ch.isspace() or ch in language.script_chars:
        return True
    # Punctuation (includes curly quotes, dashes, ellipsis) and 0-9 are shared by all four
    # languages; letters, symbols and emoji of other scripts are not.
    return unicodedata.category(ch)[0] == "P" or "0" <= ch <= "9"


def clean_text(text, language):
    """NFC-normalised text with stray characters of other scripts removed and spacing tidied."""
    language = _as_language(language)
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    text = text.translate({ord(ch): None for ch in set(text) if not _keep_char(ch, language)})
    # Dropping e.g. an English gloss "(happy)" from a Hindi sentence leaves "()" behind.
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    text = re.sub(r"[^\S\n]+", " ", text)  # runs of spaces and tabs -> one space
    text = re.sub(r" ?\n ?", "\n", text)  # no spaces at the ends of lines
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def ends_like_a_sentence(text, language):
    """True when text ends with the language's sentence-final punctuation (closing quotes allowed after it)."""
    language = _as_language(language)
    return text.rstrip(CLOSING_QUOTES + ZERO_WIDTH_JOINERS + " \t\n").endswith(language.sentence_end)
