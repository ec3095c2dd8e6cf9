"""
Synonym augmentation (TinyStories-Syn): a copy of a story corpus in which some stories have some of their words
replaced by synonyms, shuffled, in the same record format, so a model trained on it meets a wider vocabulary.

    python scripts/augment_synonyms.py --input=data/demo/hindi.jsonl.gz --out=out/syn/hindi.jsonl \
        --judge_copy=out/syn/hindi.judge.jsonl

A word is replaceable when, as a whole word, it is a key of prompting/prompt_gen/<language>/synonyms.tsv (format:
regional_tinystories/synonyms.py). Words are cut by the tokenizer of regional_tinystories.metrics.words, which keeps
Indic vowel signs, viramas, nukta and zero-width joiners inside their word, so a key never matches part of a word
(बिस्कुट is replaced, बिस्कुटों is not). Keys are surface forms with synonyms in the same grammatical form, so a
whole-word swap never leaves a broken form; an inflected form the table has no row for is left alone (there is
no suffix rule). Matching is on the lowercased word, and the replacement takes the original's capitals (Cat ->
Kitty, CAT -> KITTY).

A seeded RNG picks round(story_share x records) stories, and in each of them round(word_share x its replaceable
words) words (at least one), each replaced by a synonym drawn from its row. Every record is written, in a seeded
shuffle, with its ID and all its fields, the story replaced, and "synonyms": [[original, replacement], ...] in
text order ([] for a story left as it was). --judge_copy writes the same records with every replacement marked
⟨like this⟩ in the story, for the judge's synonyms rubric.
"""
import argparse
import gzip
import json
import os
import random
import sys
import unicodedata

from regional_tinystories.errors import InputError
from regional_tinystories.files import atomic_write, input_files, paths_overlap, read_input_records
from regional_tinystories.languages import LANGUAGE_KEY, PROMPT_GEN_DIR
from regional_tinystories.metrics import WORD_PATTERN
from regional_tinystories.synonyms import load_synonyms

OUTPUT_EXTENSIONS = (".jsonl", ".jsonl.gz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="corpus: a .jsonl/.json file (also .gz) or a folder of them")
    p.add_argument("--out", required=True, help="the augmented corpus, .jsonl or .jsonl.gz")
    p.add_argument("--language", default="", help="the language of every record (default: each record's "
                   "'language' field)")
    p.add_argument("--word_share", type=float, default=0.3, help="share of a chosen story's replaceable words replaced")
    p.add_argument("--story_share", type=float, default=0.5, help="share of the stories that get synonyms")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--judge_copy", default="", help="also write the records with replacements marked ⟨ ⟩ here")
    p.add_argument("--synonyms_dir", default=PROMPT_GEN_DIR, help="folder holding <language>/synonyms.tsv")
    return p.parse_args(argv)


def check_settings(args):
    if args.language and not LANGUAGE_KEY.fullmatch(args.language):
        raise InputError(f"--language={args.language}: not a language key such as 'hindi'")
    for name in ("word_share", "story_share"):
        if not 0 <= getattr(args, name) <= 1:
            raise InputError(f"--{name}={getattr(args, name)}: must be between 0 and 1")
    outputs = [("--out", args.out)] + ([("--judge_copy", args.judge_copy)] if args.judge_copy else [])
    for option, path in outputs:
        if not path.endswith(OUTPUT_EXTENSIONS):
            raise InputError(f"{option}={path}: must end in {' or '.join(OUTPUT_EXTENSIONS)}")
        if paths_overlap(args.input, path):
            raise InputError(f"{option}={path} overlaps --input={args.input}; write the augmented corpus elsewhere")
    if args.judge_copy and paths_overlap(args.out, args.judge_copy):
        raise InputError(f"--judge_copy={args.judge_copy} is the same file as --out")


def read_records(input_path, language):
    """[(record, its language)] of the corpus, in reading order."""
    records = []
    for path in input_files([input_path]):
        for location, record in read_input_records(path):
            if not isinstance(record.get("story"), str):
                raise InputError(f"{location}: record has no text field 'story'")
            if "synonyms" in record:
                raise InputError(f"{location}: record already has a 'synonyms' field; augment the original corpus")
            record_language = language or record.get("language")
            if not isinstance(record_language, str) or not LANGUAGE_KEY.fullmatch(record_language):
                raise InputError(f"{location}: 'language' is {record_language!r}, not a language key such as "
                                 "'hindi'; name the corpus's language with --language")
            records.append((record, record_language))
    if not records:
        raise InputError(f"{input_path}: no records")
    return records


def lookup_form(word):
    return unicodedata.normalize("NFC", word).lower()


def with_capitals_of(original, synonym):
    """synonym written with original's capitalisation pattern: all capitals, a capital first letter, or none
    (scripts without case have none)."""
    if len(original) > 1 and original.isupper():
        return synonym.upper()
    if original[:1].isupper():
        return synonym[:1].upper() + synonym[1:]
    return synonym


HYPHENS = "-\u2010\u2011"


def in_hyphenated_compound(story, match):
    """True for half of a hyphen-joined pair (धीरे-धीरे, रंग-बिरंगा, merry-go-round): a fixed expression, whose
    halves are never replaced one at a time."""
    return story[match.start() - 1:match.start()] in tuple(HYPHENS) or story[match.end():match.end() + 1] in tuple(HYPHENS)


def augment(story, table, word_share, rng):
    """(story, story with replacements marked ⟨ ⟩, [[original, replacement], ...], replaceable word count)."""
    replaceable = [match for match in WORD_PATTERN.finditer(story) if lookup_form(match.group()) in table
                   and not in_hyphenated_compound(story, match)]
    count = min(len(replaceable), max(1, round(word_share * len(replaceable)))) if replaceable and word_share else 0
    plain, marked, pairs, end = [], [], [], 0
    for index in sorted(rng.sample(range(len(replaceable)), count)):
        match = replaceable[index]
        original = match.group()
        replacement = with_capitals_of(original, rng.choice(table[lookup_form(original)]))
        before = story[end:match.start()]
        plain += [before, replacement]
        marked += [before, f"⟨{replacement}⟩"]
        pairs.append([original, replacement])
        end = match.end()
    rest = story[end:]
    return "".join(plain + [rest]), "".join(marked + [rest]), pairs, len(replaceable)


def write_records(path, records):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    with atomic_write(path, "wb") as f:
        # mtime=0: the same seed gives the same bytes
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)


def augment_corpus(args):
    check_settings(args)
    records = read_records(args.input, args.language)
    tables = {language: load_synonyms(language, args.synonyms_dir)[0]
              for language in sorted({language for _, language in records})}
    rng = random.Random(args.seed)
    chosen = set(rng.sample(range(len(records)), round(args.story_share * len(records))))
    augmented, judged = [], []
    changed = replaced = replaceable_in_changed = 0
    for index, (record, language) in enumerate(records):
        story, marked, pairs = record["story"], record["story"], []
        if index in chosen:
            story, marked, pairs, replaceable = augment(record["story"], tables[language], args.word_share, rng)
            if pairs:
                changed += 1
                replaced += len(pairs)
                replaceable_in_changed += replaceable
        augmented.append({**record, "story": story, "synonyms": pairs})
        judged.append({**record, "story": marked, "synonyms": pairs})
    order = list(range(len(records)))
    rng.shuffle(order)
    for path, versions in ((args.out, augmented), (args.judge_copy, judged)):
        if path:
            try:
                write_records(path, [versions[i] for i in order])
            except OSError as e:
                raise InputError(f"{path}: cannot be written ({e.strerror})") from None
    share = f" ({replaced / replaceable_in_changed:.1%} of their replaceable words)" if replaceable_in_changed else ""
    judge = f", marked copy in {args.judge_copy}" if args.judge_copy else ""
    return (f"wrote {len(records)} records to {args.out}: {changed} stories changed ({changed / len(records):.1%}), "
            f"{replaced} words replaced{share}{judge}")


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = augment_corpus(args)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(summary)


if __name__ == "__main__":
    main()
