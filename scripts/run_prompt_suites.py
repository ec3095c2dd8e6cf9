"""
Run several checkpoints on the prompt suites (context tracking, reasoning, factual knowledge; seed 004 §8.4) and put
their completions side by side.

    python scripts/run_prompt_suites.py --suites data/prompt_suites/hindi.jsonl \
        --init_from out/hindi-64x2 out/hindi-512x6
    python scripts/run_prompt_suites.py --suites data/prompt_suites/english.jsonl --init_from out/a out/b \
        --temperature 0.8 --max_new_tokens 60 --out_dir out/suites-english

A suite file holds records {ID, suite, language, prompt, expected}: a story-like prompt whose natural next word(s)
are `expected`. Completions are greedy by default, so a table can be regenerated exactly. A completion "hits" when
the expected words appear, in order, among its first --hit_words words (lowercased; punctuation ignored): a rough
automatic check to read beside the completions, not a substitute for reading them.
Written to --out_dir: <suite file name>.md (summary of hits per suite and model, then one table per suite with the
completions side by side) and <suite file name>.jsonl (one record per prompt and model).
"""
import argparse
import json
import os
import sys
import unicodedata

from regional_tinystories import checkpoint, runtime
from regional_tinystories import metrics
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.cli import rename_deprecated_options
from regional_tinystories.files import DataError, read_input_records
from regional_tinystories.sampling import SamplingConfig, generate_stories

SUITE_FIELDS = ("ID", "suite", "prompt", "expected")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", nargs="+", required=True, help="prompt suite .jsonl files")
    p.add_argument("--init_from", nargs="+", required=True, help="run folders, .pt files or hf:OWNER/REPO/FILE.pt")
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--hit_words", type=int, default=5, help="the expected words must come within this many words")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto")
    p.add_argument("--out_dir", default="out/prompt_suites")
    return p.parse_args(rename_deprecated_options(sys.argv[1:] if argv is None else list(argv),
                                                  {"--checkpoints": "--init_from"}))


def read_suite(path):
    prompts = []
    for location, record in read_input_records(path):
        missing = [field for field in SUITE_FIELDS if not isinstance(record.get(field), str) or not record[field]]
        if missing:
            raise DataError(f"{location}: prompt record has no text in {', '.join(map(repr, missing))}")
        if any(p["ID"] == record["ID"] for p in prompts):
            raise DataError(f"{location}: ID {record['ID']!r} appears twice")
        prompts.append(record)
    if not prompts:
        raise DataError(f"{path}: no prompts in it")
    return prompts


def is_hit(completion, expected, hit_words):
    """Whether the expected words appear, in order, among the first hit_words words of the completion."""
    tokenize = metrics.WordTokenizer().tokenize
    head, want = tokenize(completion)[:hit_words], tokenize(expected)
    return any(head[i:i + len(want)] == want for i in range(len(head) - len(want) + 1))


def cell(text):
    """Text that fits in one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ⏎ ").strip() or "∅"


def report(title, prompts, models, results, hit_words):
    """results[(prompt ID, model)] = (completion, hit)."""
    suites = list(dict.fromkeys(p["suite"] for p in prompts))
    names = [metrics.run_name(m) for m in models]
    md = (f"# Prompt suites: {title}\n\nHits: the expected words within the first {hit_words} words of the "
          f"completion.\n\n")
    md += metrics.markdown_table(
        ["suite", "prompts"] + [f"`{n}` hits" for n in names],
        [(s, len([p for p in prompts if p["suite"] == s]),
          *(sum(results[p["ID"], m][1] for p in prompts if p["suite"] == s) for m in models)) for s in suites])
    for s in suites:
        md += f"\n## {s}\n\n" + metrics.markdown_table(
            ["ID", "prompt", "expected"] + [f"`{n}`" for n in names],
            [(p["ID"], cell(p["prompt"]), cell(p["expected"]),
              *(("✓ " if results[p["ID"], m][1] else "") + cell(results[p["ID"], m][0]) for m in models))
             for p in prompts if p["suite"] == s])
    return md


def main(argv=None):
    args = parse_args(argv)
    device = runtime.pick_device(args.device)
    try:
        suites = {path: read_suite(path) for path in args.suites}
        models, results = [], {path: {} for path in suites}
        for source in args.init_from:
            model, tok, ckpt = load_model(source, device)
            models.append(ckpt["path"])
            for path, prompts in suites.items():
                sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                          seed=args.seed)
                records = generate_stories(model, tok, [p["prompt"] for p in prompts], sampling, device=device,
                                           model_name=ckpt["path"])
                for p, r in zip(prompts, records):
                    completion = metrics.completion_of(r)
                    expected = unicodedata.normalize("NFC", p["expected"])
                    results[path][p["ID"], ckpt["path"]] = (completion, is_hit(completion, expected, args.hit_words))
    except (DataError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")

    os.makedirs(args.out_dir, exist_ok=True)
    for path, prompts in suites.items():
        name = os.path.splitext(os.path.basename(path))[0]
        md = report(name, prompts, models, results[path], args.hit_words)
        with open(os.path.join(args.out_dir, f"{name}.md"), "w", encoding="utf-8") as f:
            f.write(md)
        with open(os.path.join(args.out_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for p in prompts:
                for m in models:
                    completion, hit = results[path][p["ID"], m]
                    f.write(json.dumps({**p, "model": m, "completion": completion, "hit": hit},
                                       ensure_ascii=False) + "\n")
        print(md)
        print(f"wrote {args.out_dir}/{name}.md and {name}.jsonl", file=sys.stderr)


if __name__ == "__main__":
    main()
