"""
Compare tokenizers on one or more corpora: compression, vocabulary use, Rényi entropy and MorphScore.

    python scripts/compare_tokenizers.py --corpus data/demo/hindi.jsonl --corpus data/demo/english.jsonl \
        --tokenizers sp-bpe:4096,sp-unigram:4096,bpe:4096 --out_dir out/tokenizers-demo
    python scripts/compare_tokenizers.py --corpus hindi=../shared/data/hindi-ltrc-classical/miscellaneous_seva.txt \
        --tokenizers sp:4096,sp:8192,bpe:8192,tiktoken:gpt2,hf:path/to/tokenizer_dir
    python scripts/compare_tokenizers.py --data_dir data/demo-hindi --data_dir hindi=data/demo-hindi-bpe

A corpus is named LANGUAGE=PATH, or just PATH when its name says the language (data/demo/hindi.jsonl). Tokenizers
trained on the corpus (sp-bpe:N, sp-unigram:N, bpe:N; sp:N means sp-bpe:N) learn from the corpus minus a held-out
share of its documents, and every tokenizer is measured on the held-out documents, so compression is not flattered
by the training text. A prepared dataset (--data_dir, from prepare.py) is measured with its own tokenizer on its
--split .bin file as stored.

Written to --out_dir as tokenizers.md (also printed), tokenizers.csv and tokenizers.png, per corpus and tokenizer:
  fertility          tokens per word (words: runs of letters, combining marks and digits; punctuation is no word)
  chars, bytes       per token
  fallback           share of tokens that are byte-fallback or <unk> pieces: text the vocabulary did not cover
  vocab used         distinct token ids seen / vocabulary size
  Rényi entropy      of the token distribution, bos/eos excluded, for alpha 0.5, 1 (Shannon), 2 and 2.5, in bits,
                     and divided by log2 |V|: raw values grow with the vocabulary, so they mislead across tokenizers
  MorphScore         on <morph_dir>/<language>.csv (word,stem,suffix) when there is one. The seed's rule: tokenize
                     each word alone, in the form it has in running text (' ' + word: SentencePiece adds its '▁'
                     marker anyway, and byte-level BPE learned its merges on space-prefixed words), and drop pieces
                     that decode to whitespace only; a word left as one token is not scored; a scored word counts 1
                     when a token boundary falls exactly len(stem) characters into the word (a boundary inside a
                     character never does). MorphScore = mean over the scored words. Words scored and the share of
                     words split at all are reported beside it, because the rule rewards over-splitting.
                     A row whose word is not stem + suffix stops the run with its file:line, unless
                     --skip_inconsistent, which leaves such rows out and reports how many (the original
                     Regional-TinyStories' lists: 42, 92 and 85 of 1001, 810 and 803 rows in Hindi, Marathi, Bangla).
"""
import argparse
import functools
import os
import random
import sys
import unicodedata

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regional_tinystories import PROJECT_ROOT, metrics
from regional_tinystories import tokenizer as tk
from regional_tinystories.corpus import CorpusError, read_texts
from regional_tinystories.dataset import DatasetError, check_split, load_meta


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", action="append", default=[], metavar="[LANGUAGE=]PATH",
                   help="text to measure on: .jsonl/.json/.txt file or folder; repeat for more corpora")
    p.add_argument("--data_dir", action="append", default=[], metavar="[LANGUAGE=]DIR",
                   help="a prepared dataset folder (meta.json + .bin), measured with its own tokenizer; repeatable")
    p.add_argument("--tokenizers", default="sp-bpe:4096,sp-unigram:4096,bpe:4096",
                   help="comma-separated: sp:N (= sp-bpe:N), sp-bpe:N, sp-unigram:N, bpe:N, tiktoken:NAME, "
                        "hf:ID_OR_DIR")
    p.add_argument("--text_field", default="story", help="record field holding the text in .jsonl/.json corpora")
    p.add_argument("--txt_mode", default="paragraph", choices=["paragraph", "line"],
                   help=".txt documents: separated by blank lines, or one per line")
    p.add_argument("--max_chars", type=int, default=5_000_000, help="read at most this many characters per corpus")
    p.add_argument("--heldout_fraction", type=float, default=0.1,
                   help="documents held out from tokenizer training and measured on (0: measure on all)")
    p.add_argument("--split", default="val", help="which .bin of a --data_dir to measure")
    p.add_argument("--morph_dir", default=os.path.join(PROJECT_ROOT, "data", "morph"),
                   help="folder of <language>.csv morpheme lists for MorphScore")
    p.add_argument("--morph_file", action="append", default=[], metavar="LANGUAGE=PATH",
                   help="the morpheme list of one language, instead of <morph_dir>/<language>.csv; repeatable")
    p.add_argument("--skip_inconsistent", action="store_true",
                   help="leave out (and count) morpheme-list rows whose word is not stem + suffix, instead of "
                        "stopping at the first (the original Regional-TinyStories' lists have 42-92 such rows)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out_dir", default="out/compare_tokenizers")
    args = p.parse_args(argv)
    if not 0 <= args.heldout_fraction < 1:
        p.error(f"--heldout_fraction must be in [0, 1), got {args.heldout_fraction}")
    if not args.corpus and not args.data_dir:
        p.error("give at least one --corpus or --data_dir")
    if any("=" not in value for value in args.morph_file):
        p.error("--morph_file is LANGUAGE=PATH, e.g. hindi=hindi_morph_data.csv")
    args.morph_files = dict(value.split("=", 1) for value in args.morph_file)
    return args


def labelled(value, what):
    """'hindi=path' or 'path/with/hindi/in/it' -> (language, path)."""
    language, sep, path = value.partition("=")
    if sep and os.sep not in language:
        return language.lower(), path
    language = metrics.language_in(os.path.basename(os.path.normpath(value)))
    if language is None:
        raise CorpusError(f"{value}: cannot tell the language of this {what} from its name; write LANGUAGE={value}")
    return language, value


def tokenizer_names(arg):
    """The --tokenizers list, with sp:N read as sp-bpe:N."""
    names = [n.strip() for n in arg.split(",") if n.strip()]
    return ["sp-bpe:" + n[3:] if n.startswith("sp:") else n for n in names]


def read_corpus(path, args):
    """NFC-normalised, non-empty documents of a corpus, up to --max_chars characters."""
    texts, n_chars = [], 0
    for raw in read_texts(path, args.text_field, args.txt_mode):
        text = unicodedata.normalize("NFC", raw).strip()  # as prepare.py does before tokenizing
        if text:
            texts.append(text)
            n_chars += len(text)
            if n_chars >= args.max_chars:
                break
    if len(texts) < 2:
        raise CorpusError(f"{path}: {len(texts)} non-empty documents; need at least 2 to train and measure")
    return texts


def split_heldout(texts, fraction, seed):
    """(training documents, held-out documents), chosen by a seeded coin per document."""
    if fraction == 0:
        return texts, texts
    rng = random.Random(seed)
    heldout = [rng.random() < fraction for _ in texts]
    if not any(heldout):
        heldout[-1] = True
    if all(heldout):
        heldout[0] = False
    return [t for t, h in zip(texts, heldout) if not h], [t for t, h in zip(texts, heldout) if h]


@functools.cache
def morph_entries(path, skip_inconsistent):
    """(entries, number of rows skipped) of a morpheme list, read once however many tokenizers are scored on it."""
    skipped = [] if skip_inconsistent else None
    entries = metrics.read_morph_list(path, skipped)
    if skipped:
        print(f"MorphScore: skipped {len(skipped)} rows of {path} whose word is not stem + suffix (first: "
              f"{skipped[0]})", file=sys.stderr)
    return entries, len(skipped or ())


def morph_stats(tok, language, args):
    path = args.morph_files.get(language) or os.path.join(args.morph_dir, f"{language}.csv")
    if not os.path.isfile(path):
        if language in args.morph_files:
            raise ValueError(f"--morph_file {language}={path}: no such file")
        return {"morph_score": None, "n_scored": None, "n_words": None, "split_share": None, "morph_skipped": None}
    entries, skipped = morph_entries(path, args.skip_inconsistent)
    return {**metrics.morph_score(tok, entries), "morph_skipped": skipped}


def measure_corpus(language, path, names, args):
    texts = read_corpus(path, args)
    train_texts, measured = split_heldout(texts, args.heldout_fraction, args.seed)
    corpus = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    print(f"{language} / {corpus}: {len(texts):,} documents, {sum(map(len, texts)):,} characters; "
          f"measuring on {len(measured):,} held-out documents", file=sys.stderr)
    rows = []
    for name in names:
        spec = tk.parse_name(name)
        if tk.needs_training(spec):
            tok = tk.train_tokenizer(spec, train_texts, os.path.join(args.out_dir, "tokenizers",
                                                                     f"{language}-{corpus}-{name.replace(':', '-')}"))
        else:
            tok = tk.load_tokenizer(spec)
        stats = metrics.tokenization_stats(tok, measured, tok.encode_batch(measured))
        rows.append({"language": language, "corpus": corpus, "tokenizer": name, **stats,
                     **morph_stats(tok, language, args)})
    return rows


def documents_in_bin(data, bos, eos):
    """Token ids of each document of a prepare.py .bin, whose documents are framed [bos] ids [eos].
    With tiktoken bos == eos, so framing tokens come in pairs."""
    if bos == eos:
        marks = np.flatnonzero(data == bos)
        starts, ends = marks[0::2], marks[1::2]
    else:
        starts, ends = np.flatnonzero(data == bos), np.flatnonzero(data == eos)
    return [data[s + 1:e] for s, e in zip(starts, ends)]


def measure_dataset(language, data_dir, args):
    meta = load_meta(data_dir)
    problems = check_split(data_dir, meta, args.split, full=False)
    if problems:
        raise DatasetError(str(problems[0]))
    tok = tk.load_dataset_tokenizer(meta, data_dir)
    data = np.memmap(os.path.join(data_dir, f"{args.split}.bin"), dtype=meta["dtype"], mode="r")
    documents = documents_in_bin(data, meta["bos_id"], meta["eos_id"])
    texts = [tok.decode(ids) for ids in documents]  # for word and character counts; the ids are used as stored
    print(f"{language} / {data_dir}: {len(documents):,} documents in {args.split}.bin, "
          f"tokenizer {meta['tokenizer_name']}", file=sys.stderr)
    stats = metrics.tokenization_stats(tok, texts, documents)
    return [{"language": language, "corpus": f"{meta.get('dataset', os.path.basename(data_dir))} ({args.split}.bin)",
             "tokenizer": meta["tokenizer_name"], **stats, **morph_stats(tok, language, args)}]


def percent(x):
    return metrics.fmt(None if x is None else 100 * x, 1)


def report(rows):
    """The Markdown report: three tables, one row per corpus and tokenizer."""
    key = [(r["language"], r["corpus"], f"`{r['tokenizer']}`") for r in rows]
    alphas = metrics.RENYI_ALPHAS
    md = "## Compression and vocabulary use\n\n" + metrics.markdown_table(
        ["language", "corpus", "tokenizer", "vocab", "tokens per word", "chars per token", "bytes per token",
         "fallback %", "vocab used %"],
        [(*k, metrics.fmt(r["vocab_size"]), metrics.fmt(r["fertility"], 2), metrics.fmt(r["chars_per_token"], 2),
          metrics.fmt(r["bytes_per_token"], 2), percent(r["fallback_share"]), percent(r["vocab_used_share"]))
         for k, r in zip(key, rows)])
    md += ("\n## Rényi entropy of the token distribution\n\nBits; in brackets divided by log2 of the vocabulary "
           "size, the only form comparable across vocabulary sizes. bos/eos excluded.\n\n")
    md += metrics.markdown_table(
        ["language", "corpus", "tokenizer"] + [f"α={a:g}" + (" (Shannon)" if a == 1 else "") for a in alphas],
        [(*k, *(f"{r[f'renyi_{a:g}']:.2f} ({r[f'renyi_{a:g}_norm']:.3f})" for a in alphas))
         for k, r in zip(key, rows)])
    md += ("\n## MorphScore\n\nShare of words split exactly at the stem/suffix boundary, among the words the "
           "tokenizer splits at all (the seed's rule). Read it with the share of words split: the rule rewards "
           "over-splitting.\n\n")
    md += metrics.markdown_table(
        ["language", "corpus", "tokenizer", "MorphScore", "words scored", "words split %"],
        [(*k, metrics.fmt(r["morph_score"]),
          metrics.fmt(r["n_scored"]) + (f" / {r['n_words']}" if r["n_words"] else "")
          + (f" ({r['morph_skipped']} rows skipped)" if r["morph_skipped"] else ""), percent(r["split_share"]))
         for k, r in zip(key, rows)])
    return md


def plot(rows, png):
    """Grouped bars: one group per corpus, one bar per tokenizer, for four headline metrics."""
    def group(r):
        return r["language"] if r["corpus"] == r["language"] else f"{r['language']}\n{r['corpus']}"
    groups = list(dict.fromkeys(map(group, rows)))
    names = list(dict.fromkeys(r["tokenizer"] for r in rows))
    panels = [("fertility", "tokens per word"), ("bytes_per_token", "bytes per token"),
              ("renyi_2.5_norm", "Rényi entropy α=2.5 / log2 |V|"), ("morph_score", "MorphScore")]
    fig, axes = plt.subplots(2, 2, figsize=(3 + 1.2 * len(groups) * max(1, len(names) / 3), 7), dpi=120)
    width = 0.8 / len(names)
    for ax, (field, title) in zip(axes.flat, panels):
        for i, name in enumerate(names):
            values = [next((r[field] for r in rows if group(r) == g and r["tokenizer"] == name
                            and r[field] is not None), np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, values, width, label=name,
                   color=f"C{i % 10}")
        ax.set_xticks(np.arange(len(groups)), groups, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(names), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(png)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        names = tokenizer_names(args.tokenizers)
        for name in names:
            tk.parse_name(name)  # an unknown name stops here, before any training
        rows = []
        for value in args.corpus:
            rows += measure_corpus(*labelled(value, "corpus"), names, args)
        for value in args.data_dir:
            rows += measure_dataset(*labelled(value, "dataset folder"), args)
    except (CorpusError, DatasetError, tk.TokenizerError, ValueError) as e:
        sys.exit(f"error: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    md = report(rows)
    with open(os.path.join(args.out_dir, "tokenizers.md"), "w", encoding="utf-8") as f:
        f.write(md)
    metrics.write_csv(os.path.join(args.out_dir, "tokenizers.csv"), rows)
    plot(rows, os.path.join(args.out_dir, "tokenizers.png"))
    print(md)
    print(f"wrote {args.out_dir}/tokenizers.md, tokenizers.csv, tokenizers.png", file=sys.stderr)


if __name__ == "__main__":
    main()
