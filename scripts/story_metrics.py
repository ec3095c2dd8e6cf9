"""
Automatic story-quality metrics, no API needed: diversity, memorisation, script purity, length, endings, fluency proxy.

    python scripts/story_metrics.py --samples out/samples-hindi.jsonl --language hindi --out_dir out/metrics-hindi
    python scripts/story_metrics.py --samples out/a.jsonl out/b.jsonl data/demo/hindi.jsonl --language hindi \
        --init_from out/demo-hindi --corpus data/demo/hindi.jsonl --memorisation_stories 50

--samples are sample.py's JSON/JSONL files (any file of records with a "story" works: give the training corpus too
for a reference row). Records are grouped by their "model" field (the file name when there is none), one row each.
Every metric is computed on what the model wrote, the story minus its prompt, so shared prompts do not count.

  distinct-1/2/3     distinct word n-grams / all word n-grams, pooled over the stories
  max ROUGE-2        per story, the highest ROUGE-2 F1 against any other story of the same model, then the mean
                     (seed 004, Figure 6); near 1 means the model writes the same story again and again. Over at
                     most --max_pairwise_stories stories (a seeded random subset), as the cost grows quadratically.
  script purity      mean share of a story's letters that are in the language's script (regional_tinystories/languages.py)
  words, tokens      mean length of a story in words, and in tokens where sample.py recorded them
  ends with eos      share of samples that stopped at <eos> rather than at the length limit
  lexicon hit rate   share of words found in the language's Hunspell (or aspell) dictionary, an offline fluency
                     proxy; Debian packages hunspell-hi, hunspell-bn, aspell-mr, hunspell-en-us; --dictionary
                     overrides with a .dic (Hunspell), aspell:CODE, or a .txt word list
  memorisation       with --init_from and --corpus: prompt the model with the first 40% of the words of
                     --memorisation_stories training stories and report the ROUGE-2 precision of its completion
                     against the remaining 60% (seed 004, Figure 5); near 1 means it recites the training data.
                     Stories whose first 40% does not fit the model's context are left out for that model.
                     chrF and BLEU of the completions against the true endings are reported beside it.
  chrF, BLEU         with --references: each story against the reference with the same key (ID, plus
                     sample_index) in the --references files, field --reference_field; sacrebleu's corpus chrF
                     (character n-grams: the one that works for Indic scripts) and BLEU (its 'intl' tokenizer).
                     For a translation: the translated records against human references, or a round trip
                     (A -> B -> A) against the original: --samples the back-translations, --references the first
                     translation's output with --reference_field source.
  BERTScore F1       with --references and --bertscore_model DIR: a local multilingual encoder that knows the
                     language (never downloaded, never an English BERT, which cuts Indic text into unknown pieces)

ROUGE uses the rouge-score library with a word tokenizer that keeps Devanagari and Bengali words (its default
tokenizer drops all non-ASCII text and scores every Indic story 0).
Written to --out_dir: story_metrics.md (also printed), story_metrics.csv, story_metrics.json (read by
results_table.py), max_rouge2.png, and memorisation.png when memorisation was measured.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regional_tinystories import checkpoint, runtime
from regional_tinystories import metrics
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.cli import rename_deprecated_options
from regional_tinystories.corpus import CorpusError, read_texts
from regional_tinystories.errors import one_line
from regional_tinystories.files import DataError, read_input_records, record_key
from regional_tinystories.languages import (
    available_languages,
    load_language,
    script_share,
)
from regional_tinystories.sampling import SamplingConfig, generate_stories

PROMPT_FRACTION = 0.4  # the seed's memorisation test prompts with the first 40% of a training story


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", nargs="+", required=True, help="sample.py .json/.jsonl files (or corpus files)")
    p.add_argument("--language", required=True, help=f"language of the stories: {', '.join(available_languages())}")
    p.add_argument("--dictionary", help="lexicon: path/to/xx.dic (Hunspell), aspell:CODE or a .txt word list "
                                        "(default: the language's Debian dictionary)")
    p.add_argument("--max_pairwise_stories", type=int, default=200,
                   help="max ROUGE-2 between stories uses at most this many stories per model")
    p.add_argument("--init_from", nargs="*", default=[], help="run folder(s) or .pt file(s) for the memorisation test")
    p.add_argument("--corpus", help="training corpus (.jsonl/.json/.txt) the memorisation prompts come from")
    p.add_argument("--text_field", default="story", help="record field holding the text in --corpus")
    p.add_argument("--references", nargs="+", default=[],
                   help="JSON/JSONL files of reference texts, matched to the samples by ID (and sample_index)")
    p.add_argument("--reference_field", default="story", help="field of the reference records holding the text")
    p.add_argument("--bertscore_model", help="with --references: also BERTScore F1 with this local multilingual "
                                             "encoder (a Hugging Face model folder, e.g. a downloaded MuRIL or XLM-R)")
    p.add_argument("--bertscore_layer", type=int, default=-1, help="hidden layer BERTScore uses (default: the last)")
    p.add_argument("--memorisation_stories", type=int, default=50)
    p.add_argument("--memorisation_pool", type=int, default=10_000,
                   help="the memorisation stories are drawn from the first this many documents of --corpus")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="memorisation completions; 0 = greedy")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out_dir", default="out/story_metrics")
    args = p.parse_args(rename_deprecated_options(sys.argv[1:] if argv is None else list(argv),
                                                  {"--checkpoint": "--init_from"}))
    if args.init_from and not args.corpus:
        p.error("--init_from is for the memorisation test, which also needs --corpus")
    if args.bertscore_model and not args.references:
        p.error("--bertscore_model compares stories with --references; give those too")
    if args.memorisation_stories < 1 or args.max_pairwise_stories < 2:
        p.error("--memorisation_stories must be at least 1 and --max_pairwise_stories at least 2")
    return args


def read_samples(paths):
    """{model: {"completions": [...], "keys": [ID#sample_index or None], "finish": [finish_reason, ...],
    "n_tokens": [...]}}; the last two hold only what the records recorded."""
    groups = {}
    for path in paths:
        for location, record in read_input_records(path):
            if not isinstance(record.get("story"), str):
                raise DataError(f"{location}: record has no 'story' text")
            model = record.get("model") or os.path.splitext(os.path.basename(path))[0]
            group = groups.setdefault(model, {"completions": [], "keys": [], "finish": [], "n_tokens": []})
            group["keys"].append(record_key(record) if "ID" in record else None)
            group["completions"].append(metrics.completion_of(
                {**record, "story": unicodedata.normalize("NFC", record["story"]),
                 "prompt": unicodedata.normalize("NFC", record.get("prompt") or "")}))
            if "finish_reason" in record:
                group["finish"].append(record["finish_reason"])
            if "n_tokens" in record:
                group["n_tokens"].append(record["n_tokens"])
    if not groups:
        raise DataError(f"{', '.join(paths)}: no stories in it")
    return groups


def load_lexicon(args):
    """The language's dictionary, or None with a warning when it is not installed (unless asked for explicitly)."""
    source, package = (args.dictionary, None) if args.dictionary else metrics.default_dictionary(args.language)
    if source is None:
        print(f"warning: no default dictionary for {args.language}; give --dictionary; lexicon hit rate left out",
              file=sys.stderr)
        return None
    try:
        return metrics.Lexicon(source)
    except metrics.LexiconError as e:
        if args.dictionary:
            raise
        print(f"warning: {e}; install it with apt-get install {package}; lexicon hit rate left out", file=sys.stderr)
        return None


def diversity_sample(completions, limit, seed):
    if len(completions) <= limit:
        return completions
    return random.Random(seed).sample(completions, limit)


def story_row(model, group, args, lexicon):
    completions = group["completions"]
    pairwise = diversity_sample(completions, args.max_pairwise_stories, args.seed)
    max_rouge2 = metrics.max_rouge2_to_others(pairwise)
    row = {"model": model, "language": args.language, "stories": len(completions),
           **{f"distinct_{n}": metrics.distinct_n(completions, n) for n in (1, 2, 3)},
           "max_rouge2_mean": float(np.mean(max_rouge2)), "max_rouge2_stories": len(pairwise),
           # a story with no letters at all (an immediate <eos>) says nothing about the script
           "script_purity": float(np.mean([script_share(c, args.language) for c in completions
                                           if any(ch.isalpha() for ch in c)] or [np.nan])),
           "mean_words": float(np.mean([len(metrics.words(c)) for c in completions])),
           "mean_tokens": float(np.mean(group["n_tokens"])) if group["n_tokens"] else None,
           "eos_share": float(np.mean([f == "eos" for f in group["finish"]])) if group["finish"] else None,
           "lexicon_hit_rate": metrics.lexicon_hit_rate(completions, lexicon) if lexicon else None,
           "memorisation_rouge2_precision": None, "memorisation_stories": None,
           "memorisation_chrf": None, "memorisation_bleu": None}
    return row, max_rouge2


def read_references(paths, field):
    """{key: reference text} from the --references files."""
    references = {}
    for path in paths:
        for location, record in read_input_records(path):
            if "ID" not in record or not isinstance(record.get(field), str):
                raise DataError(f"{location}: reference record has no 'ID' or no {field!r} text")
            references[record_key(record)] = unicodedata.normalize("NFC", record[field])
    if not references:
        raise DataError(f"{', '.join(paths)}: no references in it")
    return references


def against_references(group, references, args):
    """{reference_pairs, chrf, bleu, bertscore_f1} of a model's stories that have a reference with their key."""
    pairs = [(references[key], text) for key, text in zip(group["keys"], group["completions"]) if key in references]
    if not pairs:
        return {"reference_pairs": 0, "chrf": None, "bleu": None, "bertscore_f1": None}
    refs, texts = zip(*pairs)
    bertscore = None
    if args.bertscore_model:
        try:
            bertscore = metrics.bertscore_f1(refs, texts, args.bertscore_model, args.bertscore_layer)
        except Exception as e:  # not found, not an encoder, no such layer
            raise DataError(f"--bertscore_model {args.bertscore_model}: {one_line(e)}") from None
    return {"reference_pairs": len(pairs), "chrf": metrics.chrf(refs, texts), "bleu": metrics.bleu(refs, texts),
            "bertscore_f1": bertscore}


def memorisation_prompts(args):
    """(prompts, held-back endings) from --memorisation_stories training stories with at least 20 words."""
    pool = []
    for text in read_texts(args.corpus, args.text_field):
        text = unicodedata.normalize("NFC", text).strip()
        if len(text.split()) >= 20:
            pool.append(text)
        if len(pool) >= args.memorisation_pool:
            break
    if not pool:
        raise CorpusError(f"{args.corpus}: no story of 20 words or more")
    chosen = random.Random(args.seed).sample(pool, min(args.memorisation_stories, len(pool)))
    return zip(*(metrics.split_at_word_fraction(t, PROMPT_FRACTION) for t in chosen))


def memorisation(source, prompts, endings, args):
    """(checkpoint path, the completions, the true endings they are compared with)."""
    device = runtime.pick_device(args.device)
    model, tok, ckpt = load_model(source, device)
    # sample.py keeps only the end of a prompt longer than the context, and the completion could not be told apart
    # from the prompt: such stories are left out for this model
    fits = [(p, e) for p, e in zip(prompts, endings) if 1 + len(tok.encode(p)) < model.config.block_size]
    if not fits:
        raise CorpusError(f"{args.corpus}: the first {PROMPT_FRACTION:.0%} of no chosen story fits the "
                          f"{model.config.block_size}-token context of {ckpt['path']}")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    records = generate_stories(model, tok, [p for p, _ in fits], sampling, device=device, model_name=ckpt["path"])
    return ckpt["path"], [metrics.completion_of(r) for r in records], [ending for _, ending in fits]


def histogram(values_by_model, xlabel, title, png):
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bins = np.linspace(0, 1, 21)
    for i, (model, values) in enumerate(values_by_model.items()):
        ax.hist(values, bins=bins, alpha=0.5, color=f"C{i % 10}", label=f"{model} (mean {np.mean(values):.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("stories")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if values_by_model:  # no model with two stories or more: an empty plot, and no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def report(rows, language):
    fmt, pct = metrics.fmt, (lambda x: metrics.fmt(None if x is None else 100 * x, 1))
    md = f"## Story metrics ({language})\n\nComputed on what the model wrote (story minus prompt).\n\n"
    md += metrics.markdown_table(
        ["model", "stories", "distinct-1", "distinct-2", "distinct-3", "max ROUGE-2 (mean)", "script purity %",
         "words", "tokens", "ends with eos %", "lexicon hit %", "memorisation ROUGE-2 P"],
        [(f"`{r['model']}`", fmt(r["stories"]), fmt(r["distinct_1"]), fmt(r["distinct_2"]), fmt(r["distinct_3"]),
          fmt(r["max_rouge2_mean"]), pct(r["script_purity"]), fmt(r["mean_words"], 1), fmt(r["mean_tokens"], 1),
          pct(r["eos_share"]), pct(r["lexicon_hit_rate"]), fmt(r["memorisation_rouge2_precision"]))
         for r in rows])
    if any(r["chrf"] is not None or r["memorisation_chrf"] is not None for r in rows):
        md += ("\n## Against references\n\nsacrebleu's corpus chrF and BLEU (0-100): the stories against --references "
               "(matched by ID and sample_index), and memorisation completions against the true endings.\n\n")
        md += metrics.markdown_table(
            ["model", "reference pairs", "chrF", "BLEU", "BERTScore F1", "memorisation chrF", "memorisation BLEU"],
            [(f"`{r['model']}`", fmt(r["reference_pairs"]), fmt(r["chrf"], 1), fmt(r["bleu"], 1),
              fmt(r["bertscore_f1"]), fmt(r["memorisation_chrf"], 1), fmt(r["memorisation_bleu"], 1)) for r in rows])
    return md


def main(argv=None):
    args = parse_args(argv)
    try:
        load_language(args.language)
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        groups = read_samples(args.samples)
        lexicon = load_lexicon(args)
        references = read_references(args.references, args.reference_field) if args.references else None
        rows, max_rouge2 = [], {}
        for model, group in groups.items():
            row, max_rouge2[model] = story_row(model, group, args, lexicon)
            rows.append({**row, **(against_references(group, references, args) if references else
                                   {"reference_pairs": None, "chrf": None, "bleu": None, "bertscore_f1": None})})
        memorised = {}
        if args.init_from:
            prompts, endings = memorisation_prompts(args)
            for source in args.init_from:
                path, completions, true_endings = memorisation(source, prompts, endings, args)
                memorised[path] = [metrics.rouge2(ending, completion).precision
                                   for completion, ending in zip(completions, true_endings)]
                row = next((r for r in rows if r["model"] == path), None)
                if row is None:  # a checkpoint with no samples given: a row with its memorisation result only
                    row = {k: None for k in rows[0]} | {"model": path, "language": args.language, "stories": 0}
                    rows.append(row)
                row["memorisation_rouge2_precision"] = float(np.mean(memorised[path]))
                row["memorisation_stories"] = len(memorised[path])
                row["memorisation_chrf"] = metrics.chrf(true_endings, completions)
                row["memorisation_bleu"] = metrics.bleu(true_endings, completions)
    except (DataError, CorpusError, metrics.LexiconError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")

    os.makedirs(args.out_dir, exist_ok=True)
    md = report(rows, args.language)
    with open(os.path.join(args.out_dir, "story_metrics.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(args.out_dir, "story_metrics.json"), "w", encoding="utf-8") as f:
        json.dump([metrics.without_nan(r) for r in rows], f, indent=2, ensure_ascii=False)
    metrics.write_csv(os.path.join(args.out_dir, "story_metrics.csv"), rows)
    histogram({m: v for m, v in max_rouge2.items() if len(v) > 1}, "max ROUGE-2 F1 against the model's other stories",
              "Diversity: similarity to the closest other story", os.path.join(args.out_dir, "max_rouge2.png"))
    if memorised:
        histogram(memorised, "ROUGE-2 precision of the completion against the true ending",
                  f"Memorisation: completing training stories from their first {PROMPT_FRACTION:.0%}",
                  os.path.join(args.out_dir, "memorisation.png"))
    print(md)
    print(f"wrote {args.out_dir}/story_metrics.md, .csv, .json, max_rouge2.png"
          + (", memorisation.png" if memorised else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
