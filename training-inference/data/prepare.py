"""
Tokenize a story corpus into memmapped train.bin / val.bin (+ meta.json) for train.py.

    python training-inference/data/prepare.py --input=data/demo/hindi.jsonl --name=demo-hindi --tokenizer=sp-bpe:4096
    python training-inference/data/prepare.py --input=hf:roneneldan/TinyStories --text_field=text --tokenizer=tiktoken:gpt2

Every document becomes [bos] + ids + [eos], concatenated. With --format=instruct (TinyStories-Instruct) each story is
preceded by an instruction block built from its record (Words: / Ending: / Features: / Sentence: / Summary: /
Story:, see regional_tinystories/instruct.py), and {split}.mask.bin marks the story tokens for train.py's
loss_on=story. The split is decided per document by a seeded hash of
its text, so it is deterministic, needs no shuffle in memory, and does not change when the corpus is reordered.
Text is NFC-normalised; empty and duplicate documents are dropped and counted. meta.json records the tokenizer
spec, dtype and the document / token / UTF-8 byte counts per split (train.py reports bits-per-byte from them).
Output: <out_dir>/<name>/{train.bin, val.bin, meta.json, tokenizer file}. The whole folder is built beside it as
<out_dir>/.<name>.tmp-PID and put in place by renames at the very end, so a run that fails or is killed midway
never leaves a new tokenizer beside old .bin files: the old dataset stays whole until the new one is complete.
meta.json records a hash of the tokenizer file and the largest token id, which train.py, sample.py and
decode_data.py check.
"""
import argparse
import hashlib
import itertools
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import unicodedata

import numpy as np
from tqdm import tqdm

from regional_tinystories import instruct
from regional_tinystories import tokenizer as tk
from regional_tinystories.corpus import list_files, read_records, read_texts, require_records
from regional_tinystories.dataset import DatasetError, load_meta
from regional_tinystories.errors import InputError
from regional_tinystories.files import paths_overlap, write_json_atomic

BATCH_BYTES = 1 << 20  # documents are sent to workers in ~1 MB batches: big enough to amortise pickling


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="file (.jsonl/.json/.txt), folder of shards, or hf:NAME[:CONFIG]")
    p.add_argument("--name", help="dataset name: output goes to <out_dir>/<name> (default: from the input name)")
    p.add_argument("--out_dir", default="data", help="parent folder of the dataset folder")
    p.add_argument("--tokenizer", default="sp-bpe:8192",
                   help="sp-bpe:N, sp-unigram:N, bpe:N, tiktoken:NAME, hf:HUB_ID_OR_DIR, sarvam, sutra, "
                        "or from:DATA_DIR to reuse a prepared dataset's tokenizer")
    p.add_argument("--format", default="plain", choices=["plain", "instruct"],
                   help="plain: the story alone; instruct: an instruction block from the record, then the story")
    p.add_argument("--instruct_order", default=",".join(instruct.FIELDS),
                   help="instruct: the order of the block's fields")
    p.add_argument("--instruct_shares", default="",
                   help="instruct: share of documents that show each field, e.g. words:1,ending:0.8,sentence:0.3 "
                        f"(default {','.join(f'{k}:{v}' for k, v in instruct.DEFAULT_SHARES.items())})")
    p.add_argument("--language", default="",
                   help="instruct: the language whose labels the blocks use (default: each record's 'language' field)")
    p.add_argument("--text_field", default="story", help="record field holding the text (story, text, 'Translated Story', ...)")
    p.add_argument("--txt_mode", default="paragraph", choices=["paragraph", "line"],
                   help=".txt documents: separated by blank lines, or one per line")
    p.add_argument("--hf_split", default="train", help="split to read from a Hugging Face dataset")
    p.add_argument("--val_fraction", type=float, default=0.05,
                   help="share of documents held out for validation; 1.0 builds an evaluation-only dataset "
                        "(needs a tokenizer that is not trained here, e.g. from:DATA_DIR)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="tokenizer processes (1 = in this process)")
    p.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"])
    p.add_argument("--tokenizer_train_docs", type=int, default=200_000,
                   help="at most this many training documents are used to train a corpus tokenizer")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction <= 1:
        p.error(f"--val_fraction must be in (0, 1], got {args.val_fraction}")
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    try:
        args.instruct = instruct.InstructFormat(*instruct.parse_settings(args.instruct_order, args.instruct_shares)) \
            if args.format == "instruct" else None
    except InputError as e:
        p.error(str(e))
    return args


def default_name(source):
    base = source[3:].replace("/", "-").replace(":", "-") if source.startswith("hf:") else \
        os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    return base or "dataset"


def clean(raw, seed, val_fraction):
    """(text, utf-8 bytes, digest, split) for one document, or None when it is empty. A pure function of the
    text, so workers can run it: NFC, strip, a content digest for dedupe, and the seeded-hash split."""
    text = raw if unicodedata.is_normalized("NFC", raw) else unicodedata.normalize("NFC", raw)
    text = text.strip()
    if not text:
        return None
    data = text.encode("utf-8")
    digest = hashlib.blake2b(data, digest_size=16).digest()
    u = int.from_bytes(hashlib.blake2b(seed + digest, digest_size=8).digest(), "little") / 2**64
    return text, len(data), digest, ("val" if u < val_fraction else "train")


def raw_documents(source, args, languages):
    """The corpus's raw documents: texts, or for the instruct format (record fields, text, language) triples; the
    languages of the instruct labels used are collected in `languages`."""
    if args.instruct is None:
        yield from read_texts(source, args.text_field, args.txt_mode, args.hf_split)
        return
    for record, raw in read_records(source, args.text_field, args.hf_split):
        language = args.language or record.get("language") or "english"
        languages.add(language)
        spec_fields = {key: record[key] for key in ("noun", "verb", "adjective", "ending", "features", "summary")
                       if key in record}
        yield spec_fields, raw, language


def raw_batches(documents, stats):
    """Group raw documents into batches of about BATCH_BYTES characters, counting records read."""
    batch, size = [], 0
    for document in documents:
        raw = document if isinstance(document, str) else document[1]
        stats["read"] += 1
        batch.append(document)
        size += len(raw)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_worker_tokenizer = None
_worker_instruct = None


def init_worker(spec, base_dir, instruct_format):
    global _worker_tokenizer, _worker_instruct
    if mp.current_process().name != "MainProcess":
        # Ctrl-C and SIGTERM are the main process's to handle: it stops the pool, and a worker killed on the way
        # out must not print a traceback of its own (forked workers inherit the main process's handlers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core; no nested thread pools
    _worker_tokenizer = tk.load_tokenizer(spec, base_dir)
    _worker_instruct = instruct_format


def instruction_block(document, story, seed, digest):
    """The instruct block of one document (cleaned like its story), with the fields its own RNG shows."""
    spec_fields, _, language = document
    rng = instruct.document_rng(seed, digest)
    spec = _worker_instruct.shown_fields(instruct.record_spec(spec_fields, story, language, rng), rng)
    return unicodedata.normalize("NFC", _worker_instruct.render(spec, language))


def encode_batch(job):
    """Clean, split and tokenize one batch (in a worker). Returns ({split: (framed tokens, story mask or None,
    digests, tokens per document, bytes per document, story tokens, story bytes)}, number of empty documents);
    the main process drops duplicates. Dedupe and the split go by the story alone, so the plain and instruct
    datasets of a corpus hold out the same stories."""
    documents, seed, val_fraction, dtype = job
    tok = _worker_tokenizer
    docs = {"train": [], "val": []}
    empty = 0
    for document in documents:
        cleaned = clean(document if isinstance(document, str) else document[1], seed, val_fraction)
        if cleaned is None:
            empty += 1
        else:
            text, n_bytes, digest, split = cleaned
            block = "" if isinstance(document, str) else instruction_block(document, text, seed, digest)
            docs[split].append((text, n_bytes, digest, block))
    out = {}
    for split, split_docs in docs.items():
        if not split_docs:
            continue
        stories = tok.encode_batch([d[0] for d in split_docs])
        blocks = tok.encode_batch([d[3] for d in split_docs]) if _worker_instruct else [[] for _ in split_docs]
        lengths = [len(b) + len(x) + 2 for b, x in zip(blocks, stories)]
        framed = np.fromiter(itertools.chain.from_iterable(part for b, x in zip(blocks, stories)
                                                           for part in ((tok.bos_id,), b, x, (tok.eos_id,))),
                             dtype=dtype, count=sum(lengths))
        mask = None
        if _worker_instruct:  # 1 on the story and its <eos>: the tokens loss_on=story trains on
            mask = np.fromiter(itertools.chain.from_iterable(itertools.chain(itertools.repeat(0, len(b) + 1),
                                                                             itertools.repeat(1, len(x) + 1))
                                                             for b, x in zip(blocks, stories)),
                               dtype=np.uint8, count=sum(lengths))
        story_bytes = [d[1] for d in split_docs]
        out[split] = (framed, mask, [d[2] for d in split_docs], lengths,
                      [n + len(d[3].encode("utf-8")) for n, d in zip(story_bytes, split_docs)],
                      [len(x) + 1 for x in stories], story_bytes)
    return out, empty


def drop_duplicates(framed, mask, digests, lengths, n_bytes, story_tokens, story_bytes, seen):
    """Remove documents whose digest was seen before (in this batch or an earlier one) from a framed batch.
    Returns (framed, mask, documents kept, and the sums over them of bytes, story tokens and story bytes)."""
    keep = np.ones(len(digests), dtype=bool)
    for i, digest in enumerate(digests):
        if digest in seen:
            keep[i] = False
        else:
            seen.add(digest)
    if not keep.all():  # rare: cut the duplicates' tokens out
        token_keep = np.repeat(keep, lengths)
        framed = framed[token_keep]
        mask = None if mask is None else mask[token_keep]
    return (framed, mask, int(keep.sum()), int(np.dot(keep, n_bytes)), int(np.dot(keep, story_tokens)),
            int(np.dot(keep, story_bytes)))


def check_not_empty(source, stats, counts, val_fraction):
    if counts["train"]["documents"] + counts["val"]["documents"] == 0:
        raise InputError(f"{source}: empty corpus ({stats['read']} records read, {stats['empty']} empty, "
                         f"{stats['duplicate']} duplicates)")
    for split in ("train", "val") if val_fraction < 1 else ("val",):  # 1.0: an evaluation-only dataset
        if counts[split]["documents"] == 0:
            raise InputError(f"{source}: the {split} split is empty ({sum(c['documents'] for c in counts.values())} "
                              f"documents with --val_fraction={val_fraction}); change --val_fraction")


def choose_dtype(requested, vocab_size, tok_name):
    if requested == "auto":
        return "uint16" if vocab_size <= 2**16 else "uint32"
    if requested == "uint16" and vocab_size > 2**16:
        raise InputError(f"tokenizer {tok_name}: vocabulary of {vocab_size} ids does not fit --dtype=uint16 "
                          f"(max 65536); use --dtype=uint32 or auto")
    return requested


def reuse_tokenizer(dataset_dir, out_dir):
    """--tokenizer=from:DIR: the tokenizer of an already prepared dataset (e.g. to share one across datasets)."""
    tok = tk.load_dataset_tokenizer(load_meta(dataset_dir), dataset_dir)
    for name, data in tok.files().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    return tok


def build_tokenizer(spec, source, args, out_dir):
    if not tk.needs_training(spec):
        return tk.load_tokenizer(spec)
    if args.val_fraction >= 1:
        raise InputError(f"--val_fraction=1.0 leaves no documents to train {tk.describe(spec)} on; reuse the "
                         f"tokenizer of the model's dataset with --tokenizer=from:DATA_DIR")
    print(f"training {tk.describe(spec)} on up to {args.tokenizer_train_docs:,} training documents of {source}")
    seed = str(args.seed).encode()
    cleaned = (clean(raw, seed, args.val_fraction)
               for raw in read_texts(source, args.text_field, args.txt_mode, args.hf_split))
    train_texts = (c[0] for c in cleaned if c is not None and c[3] == "train")
    first = next(train_texts, None)
    if first is None:
        raise InputError(f"{source}: empty corpus, no non-empty training documents")
    texts = itertools.islice(itertools.chain([first], train_texts), args.tokenizer_train_docs)
    return tk.train_tokenizer(spec, texts, out_dir, seed=args.seed)


def recover_interrupted_swap(final_dir):
    """A kill between the two renames of swap_in leaves the previous dataset as .<name>.old-PID and no final
    folder: put it back. Leftover temp folders of killed runs are removed."""
    parent, name = os.path.split(final_dir)
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        path = os.path.join(parent, entry)
        if entry.startswith(f".{name}.old-") and not os.path.exists(final_dir):
            os.replace(path, final_dir)
            print(f"restored {final_dir} from an interrupted earlier run", file=sys.stderr)
        elif entry.startswith((f".{name}.tmp-", f".{name}.old-")):
            shutil.rmtree(path, ignore_errors=True)


def swap_in(build_dir, final_dir):
    """Put the finished dataset folder in place of the old one (if any) by renames."""
    if os.path.exists(final_dir):
        old = os.path.join(os.path.dirname(final_dir), f".{os.path.basename(final_dir)}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(build_dir, final_dir)  # a kill before this line: recover_interrupted_swap restores `old`
        shutil.rmtree(old)
    else:
        os.replace(build_dir, final_dir)


def check_paths(source, final_dir, args_format="plain"):
    """Before touching any file: the input exists, and the dataset folder neither is nor holds nor sits in it."""
    if source.startswith("hf:"):
        return
    list_files(source)  # a missing or unsupported local input fails here, before any work
    if args_format == "instruct":
        require_records(source)
    if paths_overlap(source, final_dir):
        raise InputError(f"--input {source} and the dataset folder {final_dir} overlap; writing there would "
                         f"replace the corpus; choose another --name or --out_dir")


def prepare(args):
    t0 = time.time()
    name = args.name or default_name(args.input)
    final_dir = os.path.join(args.out_dir, name)
    source = args.input
    check_paths(source, final_dir, args.format)
    os.makedirs(args.out_dir, exist_ok=True)
    recover_interrupted_swap(final_dir)
    out_dir = os.path.join(args.out_dir, f".{name}.tmp-{os.getpid()}")
    os.makedirs(out_dir)
    try:
        meta = build_dataset(args, name, source, out_dir)
        swap_in(out_dir, final_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # a failed or interrupted run leaves nothing behind
    print_statistics(meta, final_dir, time.time() - t0)
    return meta


def build_dataset(args, name, source, out_dir):
    """Tokenizer, train.bin, val.bin and meta.json, all written into out_dir (the temporary folder)."""
    if args.tokenizer.startswith("from:"):
        tok = reuse_tokenizer(args.tokenizer[len("from:"):], out_dir)
    else:
        tok = build_tokenizer(tk.parse_name(args.tokenizer), source, args, out_dir)
    dtype = choose_dtype(args.dtype, tok.vocab_size, tk.describe(tok.spec))
    print(f"tokenizer {tk.describe(tok.spec)}: vocab {tok.vocab_size}, bos {tok.bos_id}, eos {tok.eos_id}, dtype {dtype}")

    stats = {"read": 0, "empty": 0, "duplicate": 0}
    counts = {s: {"documents": 0, "tokens": 0, "bytes": 0} for s in ("train", "val")}
    if args.instruct:  # what loss_on=story trains on, for its bits per byte
        for c in counts.values():
            c.update(story_tokens=0, story_bytes=0)
    files = {s: open(os.path.join(out_dir, f"{s}.bin"), "wb") for s in ("train", "val")}
    if args.instruct:
        files.update({f"{s}.mask": open(os.path.join(out_dir, f"{s}.mask.bin"), "wb") for s in ("train", "val")})
    seed = str(args.seed).encode()
    languages = set()
    jobs = ((documents, seed, args.val_fraction, dtype)
            for documents in raw_batches(raw_documents(source, args, languages), stats))
    pool = None
    if args.workers > 1:  # fork where it is safe (Linux): workers start without re-importing anything
        context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
        pool = context.Pool(args.workers, init_worker, (tok.spec, out_dir, args.instruct))
    else:
        init_worker(tok.spec, out_dir, args.instruct)
    seen = set()
    max_id = -1
    bar = tqdm(unit=" docs", desc=f"tokenizing {name}", disable=None)
    try:
        results = pool.imap(encode_batch, jobs) if pool else map(encode_batch, jobs)
        for per_split, empty in results:
            stats["empty"] += empty
            for split, (framed, mask, digests, *sizes) in per_split.items():
                framed, mask, kept, kept_bytes, story_tokens, story_bytes = drop_duplicates(
                    framed, mask, digests, *sizes, seen)
                stats["duplicate"] += len(digests) - kept
                framed.tofile(files[split])
                if len(framed):
                    max_id = max(max_id, int(framed.max()))
                c = counts[split]
                c["documents"] += kept
                c["tokens"] += len(framed)
                c["bytes"] += kept_bytes
                if mask is not None:
                    mask.tofile(files[f"{split}.mask"])
                    c["story_tokens"] += story_tokens
                    c["story_bytes"] += story_bytes
                bar.update(len(digests))
        bar.close()
        check_not_empty(source, stats, counts, args.val_fraction)
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    finally:
        bar.close()
        for f in files.values():
            f.close()
        if pool:
            pool.terminate()
    meta = {
        "dataset": name, "source": source, "text_field": args.text_field, "format": args.format,
        "tokenizer": tok.spec, "tokenizer_name": tk.describe(tok.spec), "tokenizer_sha256": tk.files_sha256(tok),
        "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "dtype": dtype, "max_id": max_id,
        "splits": counts, "val_fraction": args.val_fraction, "seed": args.seed,
        "dropped": {"empty": stats["empty"], "duplicate": stats["duplicate"]}, "records_read": stats["read"],
    }
    if args.instruct:
        labels = {language: instruct.labels_for(language) for language in sorted(languages)}
        meta["instruct"] = instruct.InstructFormat(args.instruct.order, args.instruct.shares, labels).to_meta()
    write_json_atomic(os.path.join(out_dir, "meta.json"), meta)
    return meta


def print_statistics(meta, out_dir, elapsed):
    text_bytes = sum(c["bytes"] for c in meta["splits"].values())
    print(f"\nwrote {out_dir}/ (train.bin, val.bin, meta.json) in {elapsed:.1f}s, "
          f"{text_bytes / 1e6 / max(elapsed, 1e-9):.2f} MB/s of text")
    print(f"{'split':<6} {'documents':>10} {'tokens':>12} {'MB':>8} {'tok/doc':>8} {'bytes/tok':>9}")
    for split, c in meta["splits"].items():
        print(f"{split:<6} {c['documents']:>10,} {c['tokens']:>12,} {c['bytes'] / 1e6:>8.2f} "
              f"{c['tokens'] / max(c['documents'], 1):>8.1f} {c['bytes'] / max(c['tokens'], 1):>9.2f}")
    d = meta["dropped"]
    print(f"dropped: {d['empty']} empty, {d['duplicate']} duplicate (of {meta['records_read']} records read)")


def exit_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a preempted VM's SIGTERM cleans up like Ctrl-C


def main(argv=None):
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        prepare(args)
    except (InputError, DatasetError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted; the dataset folder was left as it was before this run")
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
