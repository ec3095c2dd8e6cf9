"""
Quality at a fixed CPU time: held-out bits per byte after the same wall-clock training budget, on real text from
../shared/data, with train.py and eval_bpb.py as a user runs them. Two corpora:

  mixed      (the default) Hindi, Marathi, Bengali and English: all of hindi-ltrc-classical, marathi-wikisource,
             marathi-palakneeti-stories (HTML tags removed), bengali-poems and english-simple-bilingual-stories,
             lines packed into documents of about 1,000 characters. More text than a 300 s run reads (under one
             epoch), so the runs are bound by compute, as training on a real corpus is;
  sevasadan  Premchand's Sevasadan alone (hindi-ltrc-classical/miscellaneous_seva.txt, one document a line):
             322k tokens, which a 300 s run reads 4-11 times over; there the runs are bound by data and a faster one
             overfits (its train loss keeps falling while val stalls).

The contenders:
  (a) nanoGPT's recipe: the classic recipe (GPT-2 blocks), fp32, eager, AdamW with nanoGPT's settings for a small
      model (its shakespeare_char config: learning rate 1e-3 to 1e-4, beta2 0.99, 100 warmup steps, weight decay
      0.1; no dropout, nanoGPT's default) on random windows,
  (b) the modern recipe (RoPE, RMSNorm, SwiGLU) with AdamW and this project's quickstart settings (2e-3 to 2e-4,
      50 warmup steps, windows that start at a document),
  (c) the same with optimizer=muon: Muon (muon_lr 0.02; 0.01 and 0.04 were worse) on the blocks' matrices, AdamW
      on the rest at 8e-3 to 8e-4 (of 2e-3, 4e-3, 8e-3 and 1.6e-2 in 150-step runs, 8e-3 and 1.6e-2 came within
      0.5% of each other, far ahead of the others; the lower is kept; these rates were chosen on sevasadan),
  (d) on a CPU whose bf16 products beat fp32 ones (AMX; AVX-512 BF16 on some CPUs), where train.py's dtype=auto
      picks bf16: (c) in bfloat16 autocast, the same recipe at that CPU's speed (float32 master weights; every
      checkpoint is scored in float32). --bf16 adds it on other CPUs too.

    python scripts/bench_quality.py                      # 120 s each, 4 x 128 model, 1 thread, mixed corpus
    python scripts/bench_quality.py --seconds=300 --rounds=2 [--corpus=sevasadan]

Every run has the same model size, batch, block, seed and budget (train.py --max_seconds, which paces the
learning-rate schedule by time); the steps each manages are its speed. Each final checkpoint is then scored by
eval_bpb.py on every token of the same val split. With --rounds=N the runs repeat in alternating order (a b c, c b a,
...) and the median is reported, so that drifting background load does not favour one contender. Prints a markdown
table with steps, tokens/s, epochs (tokens trained / train tokens), val bits per byte and the difference from (a).
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

from regional_tinystories import runtime
from regional_tinystories.cli import run_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
SEVASADAN = os.path.join(SHARED, "hindi-ltrc-classical", "miscellaneous_seva.txt")
MIXED_SOURCES = ["hindi-ltrc-classical", "marathi-wikisource", "marathi-palakneeti-stories", "bengali-poems",
                 "english-simple-bilingual-stories"]  # folders of ../shared/data: their .txt and .jsonl files
DOC_CHARS = 1000
CONTENDERS = {
    "(a) nanoGPT recipe: classic, fp32, AdamW": [
        "--recipe=classic", "--optimizer=adamw", "--learning_rate=1e-3", "--min_lr=1e-4", "--warmup_iters=100",
        "--beta2=0.99", "--doc_aligned=False", "--dtype=float32"],
    "(b) modern, AdamW": [
        "--recipe=modern", "--optimizer=adamw", "--learning_rate=2e-3", "--min_lr=2e-4", "--warmup_iters=50",
        "--doc_aligned=True", "--dtype=float32"],
    "(c) modern, Muon": [  # AdamW's learning_rate is the embedding's (and head's) here: Muon's runs suit a higher one
        "--recipe=modern", "--optimizer=muon", "--muon_lr=0.02", "--learning_rate=8e-3", "--min_lr=8e-4",
        "--warmup_iters=50", "--doc_aligned=True", "--dtype=float32"],
}
BF16_NAME = "(d) modern, Muon, bf16 autocast"  # (c)'s settings with --dtype=bfloat16


def source_texts(folder):
    """The texts of one reference folder: each .txt file whole, each .jsonl record's 'text' (HTML tags removed)."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".txt") and not name.startswith("prompt-"):
            with open(path, encoding="utf-8") as f:
                yield f.read()
        elif name.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield re.sub(r"<[^>]+>", " ", json.loads(line)["text"])


def packed_documents(text):
    """One text's non-empty lines packed, in order, into documents of about DOC_CHARS (the last may be shorter)."""
    lines, size = [], 0
    for line in filter(None, (line.strip() for line in text.splitlines())):
        lines.append(line)
        size += len(line) + 1
        if size >= DOC_CHARS:
            yield "\n".join(lines)
            lines, size = [], 0
    if lines:
        yield "\n".join(lines)


def write_mixed_corpus(path):
    """The mixed corpus as JSONL, every source's texts packed into documents (none spans two texts); returns the
    number of documents."""
    documents = 0
    with open(path, "w", encoding="utf-8") as out:
        for rel in MIXED_SOURCES:
            folder = os.path.join(SHARED, rel)
            if not os.path.isdir(folder):
                sys.exit(f"error: {folder}: not found (the reference data lives in ../shared/data)")
            for text in source_texts(folder):
                for document in packed_documents(text):
                    out.write(json.dumps({"story": document}, ensure_ascii=False) + "\n")
                    documents += 1
    return documents


def train_and_score(name, extra, common, run_dir, eval_dir, env):
    run_stage("training-inference/train.py", [*common, *extra, f"--out_dir={run_dir}"], env)
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    run_stage("scripts/eval_bpb.py", [f"--init_from={os.path.join(run_dir, 'ckpt_last.pt')}", f"--out_dir={eval_dir}"], env)
    with open(os.path.join(eval_dir, "eval_bpb.json"), encoding="utf-8") as f:
        bpb = json.load(f)[0]["bpb"]
    return {"steps": summary["iters"], "tokens": summary["tokens"], "tokens_per_s": summary["tokens"] / summary["seconds"],
            "bpb": bpb}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="mixed", choices=["mixed", "sevasadan"],
                   help="mixed: four languages, more than a run reads; sevasadan: one novel, read many times over")
    p.add_argument("--seconds", type=float, default=120, help="training budget of every run (train.py max_seconds)")
    p.add_argument("--rounds", type=int, default=1, help="runs of every contender, in alternating order")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--tokenizer", default="sp-bpe:4096")
    p.add_argument("--muon_lr", type=float, default=None, help="Muon's learning rate for (c) (default: train.py's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (runs go one after another; on a shared 2-core machine one thread is "
                        "steadier than two, which spin against each other and the other jobs)")
    p.add_argument("--bf16", action="store_true", help="add (d) on a CPU where dtype=auto stays float32 too")
    p.add_argument("--out_dir", default="", help="keep the dataset and runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.corpus == "sevasadan" and not os.path.isfile(SEVASADAN):
        sys.exit(f"error: {SEVASADAN}: not found (the reference data lives in ../shared/data)")
    if args.seconds <= 0 or args.rounds < 1:
        sys.exit("error: --seconds must be positive and --rounds at least 1")
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    contenders = dict(CONTENDERS)
    if args.muon_lr is not None:
        name = next(n for n in contenders if "Muon" in n)
        contenders[name] = [*contenders[name], f"--muon_lr={args.muon_lr}"]
    if runtime.cpu_bf16_is_faster() or args.bf16:  # a later setting overrides an earlier one in train.py's argv
        contenders[BF16_NAME] = [*contenders["(c) modern, Muon"], "--dtype=bfloat16"]
    results = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out_dir or tmp
        os.makedirs(out, exist_ok=True)
        data_root = os.path.join(out, "data")
        if args.corpus == "mixed":
            source = os.path.join(out, "mixed.jsonl")
            documents = write_mixed_corpus(source)
            prepare_args = [f"--input={source}"]
            described = f"{', '.join(MIXED_SOURCES)} (../shared/data), {documents:,} documents"
        else:
            prepare_args = [f"--input={SEVASADAN}", "--txt_mode=line"]
            described = os.path.normpath(SEVASADAN)
        run_stage("training-inference/data/prepare.py", [*prepare_args, f"--name={args.corpus}", f"--out_dir={data_root}",
                                                          f"--tokenizer={args.tokenizer}", "--val_fraction=0.05",
                                                          "--workers=2"], env)
        with open(os.path.join(data_root, args.corpus, "meta.json"), encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        train_tokens = splits["train"]["tokens"]
        print(f"data: {described}: train {train_tokens:,} tokens, val {splits['val']['tokens']:,} tokens, "
              f"{splits['val']['bytes']:,} bytes ({args.tokenizer})")
        common = [f"--dataset={args.corpus}", f"--data_root={data_root}", f"--n_layer={args.n_layer}",
                  f"--n_head={args.n_head}", f"--n_embd={args.n_embd}", f"--block_size={args.block_size}",
                  f"--batch_size={args.batch_size}", f"--max_seconds={args.seconds}", "--max_iters=1000000",
                  "--eval_interval=1000000", "--eval_iters=5", "--log_interval=50", "--dropout=0.0",
                  "--weight_decay=0.1", "--device=cpu", "--seed=1337"]
        started = time.time()
        for round_ in range(args.rounds):
            order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
            for name in order:
                tag = f"{name[1]}{round_}"
                result = train_and_score(name, contenders[name], common, os.path.join(out, tag),
                                         os.path.join(out, f"eval-{tag}"), env)
                results[name].append(result)
                print(f"round {round_ + 1}, {name}: {result['steps']} steps, val bpb {result['bpb']:.4f}",
                      file=sys.stderr, flush=True)

    print(f"\nCPU: {runtime.cpu_name()}, bf16: {runtime.cpu_bf16_kind()}; corpus {args.corpus}; {args.n_layer} layers x "
          f"{args.n_embd}, {args.n_head} heads, block {args.block_size}, batch {args.batch_size}; {args.seconds:g} s "
          f"of training per run, {args.rounds} round(s), {args.threads} thread(s); {time.time() - started:.0f} s in "
          f"all\n")
    print("| run | steps | tokens/s | epochs | val bits per byte | vs (a) |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["bpb"] for r in results[next(iter(results))])
    for name, runs in results.items():
        bpb = statistics.median(r["bpb"] for r in runs)
        spread = f" ({min(r['bpb'] for r in runs):.4f}–{max(r['bpb'] for r in runs):.4f})" if len(runs) > 1 else ""
        print(f"| {name} | {statistics.median(r['steps'] for r in runs):.0f} | "
              f"{statistics.median(r['tokens_per_s'] for r in runs):,.0f} | "
              f"{statistics.median(r['tokens'] for r in runs) / train_tokens:.2f} | {bpb:.4f}{spread} | "
              f"{100 * (bpb - base) / base:+.1f}% |")


if __name__ == "__main__":
    main()
