"""
Generate unique story prompts for one language and write them as sharded JSONL.

Each prompt asks for a children's story that uses one noun, one verb and one adjective and ends
with a given tone; the words come from prompting/prompt_gen/<language>/*.tsv. Every
(noun, verb, adjective, ending) combination is used at most once: we number all combinations
0..N-1 and sample numbers without replacement, so there are no collisions and no retry loop.

    python prompting/generate_prompts.py --language hindi --template 2+ --num_prompts 100000 \
        --shards 8 --out data/prompts/hindi

Output: <out>/<language>-<template>-000.jsonl ... one record a line:
    {"ID", "language", "noun", "verb", "adjective", "ending", "template", "prompt"}
The ID names the word indices ("hindi-2+-12-40-7-3"), so it is stable for the same word lists and
unique across templates. The same --seed gives the same prompts whatever --shards is.
--out must be a folder of its own: one that is, holds or lies inside the word lists' folder is refused.
"""
import argparse
import glob
import itertools
import os
import random
import sys

from tqdm import tqdm

from regional_tinystories.cli import rename_deprecated_options, underscored
from regional_tinystories.errors import InputError
from regional_tinystories.files import paths_overlap, write_jsonl_atomic
from regional_tinystories.languages import PROMPT_GEN_DIR, load_language, read_word_list
from regional_tinystories.templates import (
    BUILTIN_TEMPLATES,
    fill_story_template,
    load_template_file,
)

WORD_KINDS = ("nouns", "verbs", "adjectives", "endings")
# The spellings of earlier releases, accepted for one more with a deprecation note.
RENAMED_OPTIONS = underscored("--template-file", "--num-prompts", "--ending-language", "--words-dir")


def combination(number, sizes):
    """The index tuple that number (0..prod(sizes)-1) stands for, like digits in a mixed-radix number."""
    indices = []
    for size in reversed(sizes):
        number, index = divmod(number, size)
        indices.append(index)
    return tuple(reversed(indices))


def sample_combinations(sizes, num_prompts, seed):
    """An iterator of num_prompts distinct index tuples, reproducible from seed.

    Raises ValueError at once (not when iterated) if more prompts are asked for than exist.
    """
    total = 1
    for size in sizes:
        total *= size
    if num_prompts > total:
        shape = " x ".join(f"{size} {kind}" for size, kind in zip(sizes, WORD_KINDS))
        raise ValueError(f"asked for {num_prompts} prompts but the word lists allow only {total} "
                         f"unique combinations ({shape})")
    # random.sample on a range draws without replacement and never materialises the range; the
    # tuples are decoded lazily so millions of prompts cost one int each until written.
    numbers = random.Random(seed).sample(range(total), num_prompts)
    return (combination(number, sizes) for number in numbers)


def prompt_records(language, template_name, template_text, word_lists, picks, ending_language):
    for noun_i, verb_i, adjective_i, ending_i in picks:
        noun = word_lists["nouns"][noun_i][0]
        verb = word_lists["verbs"][verb_i][0]
        adjective = word_lists["adjectives"][adjective_i][0]
        native_ending, english_ending = word_lists["endings"][ending_i]
        ending = english_ending if ending_language == "english" else native_ending
        yield {
            "ID": f"{language.key}-{template_name}-{noun_i}-{verb_i}-{adjective_i}-{ending_i}",
            "language": language.key,
            "noun": noun,
            "verb": verb,
            "adjective": adjective,
            "ending": ending,
            "template": template_name,
            "prompt": fill_story_template(template_text, language, noun, verb, adjective, ending),
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", required=True, help="lowercase key, a folder under prompting/prompt_gen/")
    parser.add_argument("--template", default="2+", choices=sorted(BUILTIN_TEMPLATES),
                        help="built-in complexity level (default: 2+)")
    parser.add_argument("--template_file", help="your own template (uses $noun, $verb, ...); overrides --template")
    parser.add_argument("--num_prompts", type=int, required=True)
    parser.add_argument("--shards", type=int, default=1, help="number of output files (default: 1)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--ending_language", choices=("english", "native"), default="english",
                        help="write the ending/tone in English (default) or in the story's language")
    parser.add_argument("--words_dir", help="folder with nouns/verbs/adjectives/endings.tsv "
                                            "(default: prompting/prompt_gen/<language>)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(rename_deprecated_options(sys.argv[1:] if argv is None else list(argv), RENAMED_OPTIONS))

    try:
        language = load_language(args.language)
        if args.template_file:
            template_name, template_text = load_template_file(args.template_file)
        else:
            template_name, template_text = args.template, BUILTIN_TEMPLATES[args.template]
        words_dir = args.words_dir or os.path.join(PROMPT_GEN_DIR, language.key)
        if paths_overlap(args.out, words_dir):  # checked before any file is touched
            raise InputError(f"--out {args.out} overlaps the word lists' folder {words_dir}; "
                             "write the prompts to a folder of their own")
        word_lists = {kind: read_word_list(os.path.join(words_dir, f"{kind}.tsv")) for kind in WORD_KINDS}
        if args.num_prompts < 1 or not 1 <= args.shards <= args.num_prompts:
            raise ValueError(f"need --num_prompts >= 1 and --shards between 1 and --num_prompts "
                             f"(got {args.num_prompts} prompts, {args.shards} shards)")
        picks = sample_combinations([len(word_lists[kind]) for kind in WORD_KINDS], args.num_prompts, args.seed)
        shard_paths = [os.path.join(args.out, f"{language.key}-{template_name}-{shard:03d}.jsonl")
                       for shard in range(args.shards)]
        # Leftover shards of an earlier run with more shards would hold the same prompts again.
        pattern = os.path.join(glob.escape(args.out), f"{language.key}-{template_name}-*.jsonl")
        leftovers = sorted(set(glob.glob(pattern)) - set(shard_paths))
        if leftovers:
            raise ValueError(f"{args.out} holds shards this run would not overwrite (first: {leftovers[0]}); "
                             "remove them or choose another --out")
    except ValueError as e:  # InputError is a ValueError too
        sys.exit(f"error: {e}")

    progress = tqdm(prompt_records(language, template_name, template_text, word_lists, picks, args.ending_language),
                    total=args.num_prompts, desc="prompts", unit="prompt", disable=None)
    records = iter(progress)
    written = 0
    try:
        os.makedirs(args.out, exist_ok=True)
        for shard, path in enumerate(shard_paths):
            # Contiguous, nearly equal slices of the sampled order.
            count = args.num_prompts * (shard + 1) // args.shards - args.num_prompts * shard // args.shards
            write_jsonl_atomic(path, itertools.islice(records, count))
            written += 1
    except OSError as e:  # a read-only or full disk: each shard is whole or absent, never half written
        where = f"{e.filename}: " if e.filename else ""
        sys.exit(f"error: cannot write the prompts to {args.out}: {where}{e.strerror or e} ({written} of "
                 f"{args.shards} shards written; the same command writes them all again)")
    finally:
        progress.close()
    print(f"wrote {args.num_prompts} prompts ({language.name}, template {template_name}) to {args.shards} "
          f"shard(s) in {args.out}")


if __name__ == "__main__":
    main()
