"""
Tokenize a story corpus into memmapped train.bin / val.bin (+ meta.json) for train.py.

    python training-inference/data/prepare.py --input=data/demo/hindi.jsonl --name=demo-hindi --tokenizer=sp-bpe:4096
    python training-inference/data/prepare.py --input=hf:roneneldan/TinyStories --text_field=text --tokenizer=tiktoken:gpt2

Every document becomes [bos] + ids + [eos], concatenated. The split is decided per document by a seeded hash of
its text, so it is deterministic, needs no shuffle in memory, and does not change when the corpus is reordered.
Text is NFC-normalised; empty and duplicate documents are dropped and counted. meta.json records the tokenizer
spec, dtype and the document / token / UTF-8 byte counts per split (train.py reports bits-per-byte from them).
Output: <out_dir>/<name>/{train.bin, val.bin, meta.json, tokenizer file}. Files appear atomically at the end.
"""
import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
import unicodedata

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # training-inference/
import tokenizer as tk  # noqa: E402
from utils.corpus import CorpusError, local_size, read_texts  # noqa: E402
from utils.dataset import DatasetError, load_meta  # noqa: E402

BATCH_BYTES = 1 << 20  # documents are sent to workers in ~1 MB batches: big enough to amortise pickling


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="file (.jsonl/.json/.txt), folder of shards, or hf:NAME[:CONFIG]")
    p.add_argument("--name", help="dataset name: output goes to <out_dir>/<name> (default: from the input name)")
    p.add_argument("--out_dir", default="data", help="parent folder of the dataset folder")
    p.add_argument("--tokenizer", default="sp-bpe:8192",
                   help="sp-bpe:N, sp-unigram:N, bpe:N, tiktoken:NAME, hf:HUB_ID_OR_DIR, sarvam, sutra, "
                        "or from:DATA_DIR to reuse a prepared dataset's tokenizer")
    p.add_argument("--text_field", default="story", help="record field holding the text (story, text, 'Translated Story', ...)")
    p.add_argument("--txt_mode", default="paragraph", choices=["paragraph", "line"],
                   help=".txt documents: separated by blank lines, or one per line")
    p.add_argument("--hf_split", default="train", help="split to read from a Hugging Face dataset")
    p.add_argument("--val_fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="tokenizer processes (1 = in this process)")
    p.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"])
    p.add_argument("--tokenizer_train_docs", type=int, default=200_000,
                   help="at most this many training documents are used to train a corpus tokenizer")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        p.error(f"--val_fraction must be between 0 and 1, got {args.val_fraction}")
    return args


def default_name(source):
    base = source[3:].replace("/", "-").replace(":", "-") if source.startswith("hf:") else \
        os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    return base or "dataset"


def clean_documents(source, args, stats):
    """Yield (split, text) for every kept document; count what was dropped into stats."""
    seen = set()
    seed = str(args.seed).encode()
    for raw in read_texts(source, args.text_field, args.txt_mode, args.hf_split):
        stats["read"] += 1
        stats["input_bytes"] += len(raw.encode("utf-8"))
        text = unicodedata.normalize("NFC", raw).strip()
        if not text:
            stats["empty"] += 1
            continue
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            stats["duplicate"] += 1
            continue
        seen.add(digest)
        u = int.from_bytes(hashlib.blake2b(seed + digest, digest_size=8).digest(), "little") / 2**64
        yield ("val" if u < args.val_fraction else "train"), text


def batches(documents):
    """Group (split, text) documents into (split, [texts]) batches of about BATCH_BYTES each."""
    pending = {"train": [], "val": []}
    size = {"train": 0, "val": 0}
    for split, text in documents:
        pending[split].append(text)
        size[split] += len(text)
        if size[split] >= BATCH_BYTES:
            yield split, pending[split]
            pending[split], size[split] = [], 0
    for split in ("train", "val"):
        if pending[split]:
            yield split, pending[split]


_worker_tokenizer = None


def init_worker(spec, base_dir):
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core; no nested thread pools
    _worker_tokenizer = tk.load_tokenizer(spec, base_dir)


def encode_batch(job):
    """(split, texts) -> (split, framed token array, n_documents, n_utf8_bytes). Runs in a worker process."""
    split, texts, dtype = job
    tok = _worker_tokenizer
    ids = tok.encode_batch(texts)
    framed = np.empty(sum(len(x) for x in ids) + 2 * len(ids), dtype=dtype)
    pos = 0
    for x in ids:
        framed[pos] = tok.bos_id
        framed[pos + 1:pos + 1 + len(x)] = x
        pos += len(x) + 2
        framed[pos - 1] = tok.eos_id
    return split, framed, len(texts), sum(len(t.encode("utf-8")) for t in texts)


def choose_dtype(requested, vocab_size, tok_name):
    if requested == "auto":
        return "uint16" if vocab_size <= 2**16 else "uint32"
    if requested == "uint16" and vocab_size > 2**16:
        raise CorpusError(f"tokenizer {tok_name}: vocabulary of {vocab_size} ids does not fit --dtype=uint16 "
                          f"(max 65536); use --dtype=uint32 or auto")
    return requested


def reuse_tokenizer(dataset_dir, out_dir):
    """--tokenizer=from:DIR: the tokenizer of an already prepared dataset (e.g. to share one across datasets)."""
    spec = load_meta(dataset_dir)["tokenizer"]
    tok = tk.load_tokenizer(spec, dataset_dir)
    for name, data in tok.files().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    return tok


def build_tokenizer(spec, source, args, out_dir):
    if not tk.needs_training(spec):
        return tk.load_tokenizer(spec)
    print(f"training {tk.describe(spec)} on up to {args.tokenizer_train_docs:,} training documents of {source}")
    stats = {"read": 0, "input_bytes": 0, "empty": 0, "duplicate": 0}
    train_texts = (text for split, text in clean_documents(source, args, stats) if split == "train")
    first = next(train_texts, None)
    if first is None:
        raise CorpusError(f"{source}: empty corpus, no training documents ({stats['read']} records read, "
                          f"{stats['empty']} empty, {stats['duplicate']} duplicates)")
    texts = itertools.islice(itertools.chain([first], train_texts), args.tokenizer_train_docs)
    return tk.train_tokenizer(spec, texts, out_dir)


def prepare(args):
    t0 = time.time()
    name = args.name or default_name(args.input)
    out_dir = os.path.join(args.out_dir, name)
    source = args.input
    local_size(source)  # checks that a local input exists before any work
    os.makedirs(out_dir, exist_ok=True)
    if args.tokenizer.startswith("from:"):
        tok = reuse_tokenizer(args.tokenizer[len("from:"):], out_dir)
    else:
        tok = build_tokenizer(tk.parse_name(args.tokenizer), source, args, out_dir)
    dtype = choose_dtype(args.dtype, tok.vocab_size, tk.describe(tok.spec))
    print(f"tokenizer {tk.describe(tok.spec)}: vocab {tok.vocab_size}, bos {tok.bos_id}, eos {tok.eos_id}, dtype {dtype}")

    stats = {"read": 0, "input_bytes": 0, "empty": 0, "duplicate": 0}
    counts = {s: {"documents": 0, "tokens": 0, "bytes": 0} for s in ("train", "val")}
    paths = {s: os.path.join(out_dir, f"{s}.bin") for s in ("train", "val")}
    files = {s: open(paths[s] + ".tmp", "wb") for s in ("train", "val")}
    jobs = ((split, texts, dtype) for split, texts in batches(clean_documents(source, args, stats)))
    pool = mp.get_context("spawn").Pool(args.workers, init_worker, (tok.spec, out_dir)) if args.workers > 1 else None
    if pool is None:
        init_worker(tok.spec, out_dir)
    bar = tqdm(unit=" docs", desc=f"tokenizing {name}", disable=None)
    try:
        results = pool.imap(encode_batch, jobs) if pool else map(encode_batch, jobs)
        for split, framed, n_docs, n_bytes in results:
            framed.tofile(files[split])
            c = counts[split]
            c["documents"] += n_docs
            c["tokens"] += len(framed)
            c["bytes"] += n_bytes
            bar.update(n_docs)
    finally:
        bar.close()
        for f in files.values():
            f.close()
        if pool:
            pool.terminate()

    if stats["read"] == 0 or counts["train"]["documents"] + counts["val"]["documents"] == 0:
        raise CorpusError(f"{source}: empty corpus ({stats['read']} records read, {stats['empty']} empty, "
                          f"{stats['duplicate']} duplicates)")
    for split in ("train", "val"):
        if counts[split]["documents"] == 0:
            raise CorpusError(f"{source}: the {split} split is empty ({sum(c['documents'] for c in counts.values())} "
                              f"documents with --val_fraction={args.val_fraction}); change --val_fraction")
    for split in ("train", "val"):
        os.replace(paths[split] + ".tmp", paths[split])

    elapsed = time.time() - t0
    meta = {
        "dataset": name, "source": source, "text_field": args.text_field,
        "tokenizer": tok.spec, "tokenizer_name": tk.describe(tok.spec),
        "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "dtype": dtype,
        "splits": counts, "val_fraction": args.val_fraction, "seed": args.seed,
        "dropped": {"empty": stats["empty"], "duplicate": stats["duplicate"]}, "records_read": stats["read"],
    }
    tmp = os.path.join(out_dir, "meta.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
    os.replace(tmp, os.path.join(out_dir, "meta.json"))
    print_statistics(meta, out_dir, elapsed, stats["input_bytes"])
    return meta


def print_statistics(meta, out_dir, elapsed, input_bytes):
    print(f"\nwrote {out_dir}/ (train.bin, val.bin, meta.json) in {elapsed:.1f}s, "
          f"{input_bytes / 1e6 / max(elapsed, 1e-9):.2f} MB/s of input text")
    print(f"{'split':<6} {'documents':>10} {'tokens':>12} {'MB':>8} {'tok/doc':>8} {'bytes/tok':>9}")
    for split, c in meta["splits"].items():
        print(f"{split:<6} {c['documents']:>10,} {c['tokens']:>12,} {c['bytes'] / 1e6:>8.2f} "
              f"{c['tokens'] / c['documents']:>8.1f} {c['bytes'] / c['tokens']:>9.2f}")
    d = meta["dropped"]
    print(f"dropped: {d['empty']} empty, {d['duplicate']} duplicate (of {meta['records_read']} records read)")


def main(argv=None):
    args = parse_args(argv)
    try:
        prepare(args)
    except (CorpusError, DatasetError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
