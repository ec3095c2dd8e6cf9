"""
Synonym tables for corpus augmentation (scripts/augment_synonyms.py). Per language, beside the word lists in
prompting/prompt_gen/<language>/:

    synonyms.tsv       word<TAB>synonym|synonym|...   a surface form as it appears in running text, and words that
                                                      can take its place in the same grammatical form
    synonym_skip.txt   word                           frequent words that deliberately get no synonym (function
                                                      words, names, numbers, words with no acceptable synonym)

Lines starting with '#' are comments, blank lines are ignored, text is NFC-normalised as it is read. A key and each
of its synonyms must be one lowercase word as regional_tinystories.metrics.words sees it (no spaces, no hyphens:
one word replaces one word); no key twice, no key among its own synonyms, no key in the skip list. A malformed row
is an InputError naming file:line.

uncovered_words() is the coverage check the files must pass: the 500 most frequent words of the demo corpus that
are not skipped, and every single-word entry of the noun, verb and adjective lists, are keys.
"""
import os
import unicodedata
from collections import Counter

from regional_tinystories.errors import InputError
from regional_tinystories.files import first_bad_utf8, input_files, read_input_records
from regional_tinystories.languages import PROMPT_GEN_DIR, word_list
from regional_tinystories.metrics import words

SYNONYMS_FILE = "synonyms.tsv"
SKIP_FILE = "synonym_skip.txt"
WORD_LIST_KINDS = ("nouns", "verbs", "adjectives")


def _content_lines(path):
    """(line number, NFC text) of the lines of path that are neither blank nor comments."""
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                text = unicodedata.normalize("NFC", line.rstrip("\r\n"))
                if text.strip() and not text.lstrip().startswith("#"):
                    yield line_no, text
    except UnicodeDecodeError:
        line_no, offset = first_bad_utf8(path)
        raise InputError(f"{path}:{line_no}: not UTF-8 text (byte {offset} of the file)") from None


def _word_problem(text, what):
    """Why text cannot be a key or synonym, or None: it must be one lowercase word (a key is looked up lowercased,
    and the replaced word's capitals are put back on the synonym)."""
    if not text:
        return f"empty {what}"
    if words(text) != [text]:
        return f"{what} {text!r} is not a single word (one word replaces one word)"
    if text != text.lower():
        return f"{what} {text!r} is not lowercase"
    return None


def read_synonyms(path):
    """({key: (synonym, ...)}, {key: line number}) of a synonyms.tsv file, in file order."""
    table, first_line = {}, {}
    for line_no, text in _content_lines(path):
        fields = text.split("\t")
        if len(fields) != 2:
            raise InputError(f"{path}:{line_no}: expected 'word<TAB>synonym|synonym|...', got {text.strip()!r}")
        key = fields[0].strip()
        synonyms = [synonym.strip() for synonym in fields[1].split("|")]
        problem = _word_problem(key, "key") or next(
            (p for p in (_word_problem(synonym, "synonym") for synonym in synonyms) if p), None)
        if problem:
            raise InputError(f"{path}:{line_no}: {problem}")
        if key in table:
            raise InputError(f"{path}:{line_no}: duplicate key {key!r} (first on line {first_line[key]})")
        if key in synonyms:
            raise InputError(f"{path}:{line_no}: key {key!r} is listed as its own synonym")
        repeated = next((synonym for synonym in synonyms if synonyms.count(synonym) > 1), None)
        if repeated:
            raise InputError(f"{path}:{line_no}: synonym {repeated!r} is listed twice")
        table[key], first_line[key] = tuple(synonyms), line_no
    if not table:
        raise InputError(f"{path}: no synonym rows")
    return table, first_line


def read_skip_words(path, synonyms_path=None, key_lines=None):
    """The set of words in a synonym_skip.txt file. With key_lines ({key: line} of synonyms_path), a word that is
    also a key is an error: a word gets synonyms or is skipped, not both."""
    skip = set()
    for line_no, text in _content_lines(path):
        word = text.strip()
        problem = _word_problem(word, "word")
        if problem:
            raise InputError(f"{path}:{line_no}: {problem}")
        if key_lines and word in key_lines:
            raise InputError(f"{path}:{line_no}: {word!r} is skipped but is a key of {synonyms_path}:{key_lines[word]}")
        skip.add(word)
    return skip


def synonym_files(language, folder=PROMPT_GEN_DIR):
    """(synonyms.tsv, synonym_skip.txt) paths of a language."""
    return os.path.join(folder, language, SYNONYMS_FILE), os.path.join(folder, language, SKIP_FILE)


def load_synonyms(language, folder=PROMPT_GEN_DIR):
    """(table {key: synonyms}, skip words) of a language, checked against each other. synonyms.tsv must exist;
    synonym_skip.txt is read when it exists (an empty set otherwise)."""
    synonyms_path, skip_path = synonym_files(language, folder)
    if not os.path.isfile(synonyms_path):
        raise InputError(f"{synonyms_path}: no such file: there are no synonyms for {language!r}")
    table, key_lines = read_synonyms(synonyms_path)
    skip = read_skip_words(skip_path, synonyms_path, key_lines) if os.path.isfile(skip_path) else set()
    return table, skip


def uncovered_words(language, corpus, top=500, folder=PROMPT_GEN_DIR):
    """(frequent, listed): the words among the `top` most frequent words of corpus (a file or folder; its stories
    lowercased, skipped words left out) that are not keys, and the single-word noun/verb/adjective list entries
    that are neither keys nor skipped. Both empty when the language's synonym files are complete."""
    table, skip = load_synonyms(language, folder)
    counts = Counter(word for path in input_files([corpus]) for _, record in read_input_records(path)
                     for word in words(record["story"].lower()))
    ranked = [word for word, _ in counts.most_common() if word not in skip]
    frequent = [word for word in ranked[:top] if word not in table]
    entries = [entry.lower() for kind in WORD_LIST_KINDS
               for entry, _ in word_list(language, kind, os.path.join(folder, language))]
    listed = [entry for entry in entries if words(entry) == [entry] and entry not in table and entry not in skip]
    return frequent, listed
