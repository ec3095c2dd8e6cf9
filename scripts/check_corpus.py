"""
Quality gates for a story corpus in make_requests.py's record format (the bundled demo corpus, or any generated
one): per language, the share of letters in the language's script, near-copies (pairs of stories with ROUGE-2 F1
over a threshold), whether each story uses its prompt's noun, verb and adjective (inflected forms count, see
regional_tinystories.metrics.word_stem), story length, and distinct-2 over the corpus.

    python scripts/check_corpus.py data/demo/                      # every language found, gates checked
    python scripts/check_corpus.py data/stories/hindi --out_dir out/corpus-report

Prints a Markdown table (also written to OUT_DIR/corpus_report.md with a JSON copy) and one line per failing
story; exits 1 when a gate fails.
"""
import argparse
import os
import sys
from collections import defaultdict

from regional_tinystories import metrics
from regional_tinystories.errors import InputError
from regional_tinystories.files import input_files, read_input_records, write_json_atomic, write_text_atomic
from regional_tinystories.languages import load_language, script_share


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", nargs="+", help="corpus files (.jsonl/.json, also .gz) or folders of them")
    p.add_argument("--min_script_share", type=float, default=0.95, help="gate: least share of letters in the script")
    p.add_argument("--max_rouge2", type=float, default=0.5, help="gate: no two stories with a higher ROUGE-2 F1")
    p.add_argument("--min_words", type=int, default=100)
    p.add_argument("--max_words", type=int, default=250)
    p.add_argument("--out_dir", default="", help="also write corpus_report.md and corpus_report.json here")
    return p.parse_args(argv)


def read_corpus(paths):
    by_language = defaultdict(list)
    for path in input_files(paths, recursive=True):
        for location, record in read_input_records(path):
            for field in ("ID", "language", "story", "noun", "verb", "adjective"):
                if not isinstance(record.get(field), str):
                    raise InputError(f"{location}: record has no text field {field!r}")
            by_language[record["language"]].append(record)
    return by_language


def check_language(language_key, records, args):
    """(table row, [problem lines]) for one language's records."""
    language = load_language(language_key)
    problems = []
    shares, lengths = [], []
    missing_words = 0
    for r in records:
        share = script_share(r["story"], language)
        n_words = len(metrics.words(r["story"]))
        shares.append(share)
        lengths.append(n_words)
        if share < args.min_script_share:
            problems.append(f"{r['ID']}: only {share:.2f} of its letters are in {language.script} script")
        if not args.min_words <= n_words <= args.max_words:
            problems.append(f"{r['ID']}: {n_words} words (gate: {args.min_words}-{args.max_words})")
        absent = [r[f] for f in ("noun", "verb", "adjective") if not metrics.uses_word(r["story"], r[f], language_key)]
        if absent:
            missing_words += 1
            problems.append(f"{r['ID']}: does not use {', '.join(absent)}")
    stories = [r["story"] for r in records]
    pairs = metrics.near_duplicate_pairs(stories, args.max_rouge2)
    problems += [f"{records[i]['ID']} ~ {records[j]['ID']}: ROUGE-2 F1 {f:.2f} (gate: <= {args.max_rouge2})"
                 for i, j, f in pairs]
    row = {"language": language_key, "stories": len(records), "words_mean": sum(lengths) / len(lengths),
           "words_min": min(lengths), "words_max": max(lengths), "script_share_min": min(shares),
           "all_prompt_words_share": 1 - missing_words / len(records), "near_copy_pairs": len(pairs),
           "distinct_2": metrics.distinct_n(stories, 2), "passed": not problems}
    return row, problems


def main(argv=None):
    args = parse_args(argv)
    try:
        by_language = read_corpus(args.input)
    except (InputError, ValueError) as e:
        sys.exit(f"error: {e}")
    rows, problems = [], []
    for key in sorted(by_language):
        try:
            row, found = check_language(key, by_language[key], args)
        except ValueError as e:  # an unknown language key
            sys.exit(f"error: {e}")
        rows.append(row)
        problems += found
    table = metrics.markdown_table(
        ["language", "stories", "words (mean, min–max)", "script share (min)", "uses all prompt words",
         f"pairs with ROUGE-2 > {args.max_rouge2}", "distinct-2", "gates"],
        [[r["language"], f"{r['stories']:,}", f"{r['words_mean']:.0f} ({r['words_min']}–{r['words_max']})",
          f"{r['script_share_min']:.3f}", f"{r['all_prompt_words_share']:.1%}", r["near_copy_pairs"],
          f"{r['distinct_2']:.3f}", "pass" if r["passed"] else "FAIL"] for r in rows])
    print(table)
    for line in problems:
        print(f"gate failed: {line}", file=sys.stderr)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        write_text_atomic(os.path.join(args.out_dir, "corpus_report.md"), table)
        write_json_atomic(os.path.join(args.out_dir, "corpus_report.json"), {"languages": rows, "problems": problems})
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
