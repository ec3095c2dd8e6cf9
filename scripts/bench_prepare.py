"""
Tokenization throughput of prepare.py (MB of UTF-8 text per second) with 1 and 2 worker processes, against the
raw tokenizer's own single-call speed, on >= 20 MB of real text from ../shared/data (Hindi, Marathi, Bengali,
English). Everything is measured in the same run, so the ratios hold on a noisy machine.

    python scripts/bench_prepare.py [--mb=40] [--tokenizer=sp-bpe:8192] [--workers=1,2] [--repeats=3]

Each figure is the best of --repeats interleaved rounds (the machine's noise only ever slows a run down). prepare.py is
timed end to end as a user runs it: process start, reading, NFC, dedupe, tokenizing, writing.
Targets: speed-up from 1 to 2 workers >= 1.7x; prepare.py end to end >= 70% of raw speed x workers.
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

from regional_tinystories import tokenizer as tk
from regional_tinystories.cli import run_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED = os.path.join(ROOT, "..", "shared", "data")
SOURCES = [  # (path, kind): real text of each language, split into story-sized documents
    ("hindi-ltrc-classical/miscellaneous_seva.txt", "txt"),
    ("marathi-wikisource/marathi_wikisource.jsonl", "jsonl"),
    ("marathi-palakneeti-stories/palakneeti_story_articles.jsonl", "jsonl"),
    ("bengali-poems/bengali_poems.jsonl", "jsonl"),
    ("english-simple-bilingual-stories/simple-bilingual-stories-eng-sentences.txt", "txt"),
]
DOC_CHARS = 1500  # about one demo story


def real_documents():
    for rel, kind in SOURCES:
        path = os.path.join(SHARED, rel)
        if not os.path.isfile(path):
            sys.exit(f"error: {path} not found (the benchmark reads the reference data in ../shared/data)")
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f] if kind == "jsonl" else [f.read()]
        for text in texts:
            text = re.sub(r"<[^>]+>", " ", text)  # the Palakneeti articles are HTML
            for i in range(0, len(text), DOC_CHARS):
                chunk = text[i:i + DOC_CHARS].strip()
                if chunk:
                    yield chunk


def build_corpus(path, target_mb):
    """Write >= target_mb of text as JSONL. Real text is repeated with a pass number so no document is a
    duplicate (prepare.py drops duplicates, which would hide the work)."""
    docs = list(real_documents())
    written, n, rep = 0, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target_mb * 1e6:
            for doc in docs:
                text = f"{doc} ({rep})" if rep else doc
                f.write(json.dumps({"story": text}, ensure_ascii=False) + "\n")
                written += len(text.encode("utf-8"))
                n += 1
                if written >= target_mb * 1e6:
                    break
            rep += 1
    return written, n


def raw_speed(tok, texts, total_bytes):
    start = time.perf_counter()
    tok.encode_batch(texts)  # one call, one thread (the wrappers pin their own thread pools to 1)
    return total_bytes / 1e6 / (time.perf_counter() - start)


def prepare_speed(corpus, tok_dir, out_dir, workers, total_bytes):
    start = time.perf_counter()
    proc = run_stage("training-inference/data/prepare.py",
                     [f"--input={corpus}", f"--out_dir={out_dir}", f"--name=w{workers}", f"--tokenizer=from:{tok_dir}",
                      f"--workers={workers}", "--val_fraction=0.01"], env=dict(os.environ, TQDM_DISABLE="1"))
    elapsed = time.perf_counter() - start
    # prepare.py's own figure: from its first read to its last file renamed, without interpreter start-up
    pipeline = float(re.search(r"([0-9.]+) MB/s of text", proc.stdout).group(1))
    return total_bytes / 1e6 / elapsed, elapsed, pipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=40.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokenizer", default="sp-bpe:8192")
    p.add_argument("--workers", default="1,2")
    args = p.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.jsonl")
        total_bytes, n_docs = build_corpus(corpus, args.mb)
        print(f"corpus: {n_docs:,} documents, {total_bytes / 1e6:.1f} MB of UTF-8 text (real text from ../shared/data)")
        with open(corpus, encoding="utf-8") as f:
            texts = [json.loads(line)["story"] for line in f]
        # the tokenizer, trained once by prepare.py on (the train split of) every 20th story; the timed runs reuse it
        # with --tokenizer=from:, as a user shares one tokenizer across datasets
        sample = os.path.join(tmp, "sample.jsonl")
        with open(sample, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"story": t}, ensure_ascii=False) + "\n" for t in texts[::20])
        run_stage("training-inference/data/prepare.py", [f"--input={sample}", f"--out_dir={tmp}", "--name=tok",
                                                         f"--tokenizer={args.tokenizer}", "--val_fraction=0.2"],
                  env=dict(os.environ, TQDM_DISABLE="1"))
        tok_dir = os.path.join(tmp, "tok")
        with open(os.path.join(tok_dir, "meta.json"), encoding="utf-8") as f:
            tok = tk.load_dataset_tokenizer(json.load(f), tok_dir)
        # rounds of every measurement, interleaved, so a slow minute on a shared machine hits all of them alike
        runs = {"raw": [], **{w: [] for w in worker_counts}}
        for _ in range(args.repeats):
            runs["raw"].append(raw_speed(tok, texts, total_bytes))
            for w in worker_counts:
                runs[w].append(prepare_speed(corpus, tok_dir, os.path.join(tmp, "out"), w, total_bytes))
        raw = max(runs["raw"])
        print(f"raw {tk.describe(tok.spec)} encode_batch, one call, one thread: {raw:.2f} MB/s")
        results = {}
        for w in worker_counts:
            speed, elapsed, pipeline = max(runs[w])
            results[w] = speed
            print(f"prepare.py --workers={w}: {speed:.2f} MB/s ({elapsed:.1f}s end to end, process start included, "
                  f"{speed / (raw * w):.0%} of raw x {w}); {pipeline:.2f} MB/s inside prepare.py "
                  f"({pipeline / (raw * w):.0%} of raw x {w})")
        if 1 in results and 2 in results:
            print(f"speed-up 1 -> 2 workers: {results[2] / results[1]:.2f}x (target >= 1.7x)")
            print(f"end to end with 2 workers vs raw x 2: {results[2] / (2 * raw):.0%} (target >= 70%)")


if __name__ == "__main__":
    main()
