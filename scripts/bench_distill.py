"""
Does knowledge distillation help a small student at this scale? Measured on real Hindi prose (Premchand's
Sevasadan, ../shared/data/hindi-ltrc-classical/miscellaneous_seva.txt), with train.py and distill.py as a user
runs them:

  (a) a teacher (4 layers x 128) trained with train.py,
  (b) a student (2 layers x 64) trained from scratch with train.py,
  (c) the same student distilled from (a) with distill.py: the same seed, batches, steps and learning-rate schedule,
  (d) the same as (c), reading the teacher's top-k probabilities from a teacher cache built once (timed apart).

    python scripts/bench_distill.py [--teacher_iters=300] [--student_iters=300] [--threads=1] [--out_dir=DIR]

Prints a markdown table: parameters, validation loss, validation bits per byte (the final evaluation, on the same
batches for every model), training tokens/s and wall time per run. Whether (c) beats (b) is the finding; the script
reports it either way.
"""
import argparse
import json
import os
import sys
import tempfile
import time

from regional_tinystories.cli import run_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "..", "shared", "data", "hindi-ltrc-classical", "miscellaneous_seva.txt")
COMMON = ["--dataset=sevasadan", "--block_size=128", "--batch_size=16", "--optimizer=adamw",  # the README's figures
          "--learning_rate=2e-3", "--min_lr=2e-4",
          "--warmup_iters=50", "--eval_iters=20", "--log_interval=20", "--dropout=0.0", "--device=cpu",
          "--dtype=float32", "--seed=1337"]
TEACHER = ["--n_layer=4", "--n_head=4", "--n_embd=128"]
STUDENT = ["--n_layer=2", "--n_head=2", "--n_embd=64"]


def run(script, args, env):
    """Run a stage script; return its wall time."""
    start = time.time()
    run_stage(script, args, env)
    return time.time() - start


def result_of(out_dir, seconds):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        log = [json.loads(line) for line in f]
    train = [r for r in log if r["type"] == "train"][1:]  # the first interval pays for warm-up
    last_eval = [r for r in log if r["type"] == "eval"][-1]
    with open(os.path.join(out_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {"params": summary["params"], "val_loss": last_eval["val_loss"], "val_bpb": last_eval["val_bpb"],
            "tokens_per_s": sum(r["tokens_per_s"] for r in train) / len(train), "seconds": seconds,
            "kd": train[-1].get("kd")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher_iters", type=int, default=300)
    p.add_argument("--student_iters", type=int, default=300)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--teacher_topk", type=int, default=32)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (runs go one after another; on a shared 2-core machine one thread is "
                        "faster than two, which spin against each other)")
    p.add_argument("--out_dir", default="", help="keep the dataset and runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    if not os.path.isfile(SOURCE):
        sys.exit(f"error: {SOURCE}: not found (the reference data lives in ../shared/data)")
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out_dir or tmp
        data_root = os.path.join(out, "data")
        run_stage("training-inference/data/prepare.py", [f"--input={SOURCE}", "--name=sevasadan", f"--out_dir={data_root}",
                                                   "--tokenizer=sp-bpe:2048", "--val_fraction=0.05", "--workers=2"], env)
        with open(os.path.join(data_root, "sevasadan", "meta.json"), encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        print(f"data: {SOURCE}: train {splits['train']['tokens']:,} tokens, val {splits['val']['tokens']:,} tokens "
              f"(sp-bpe:2048)")
        base = [*COMMON, f"--data_root={data_root}"]
        kd = [f"--alpha={args.alpha}", f"--temperature={args.temperature}"]
        student = [*base, *STUDENT, f"--max_iters={args.student_iters}", f"--eval_interval={args.student_iters}"]
        runs = {}
        teacher_dir = os.path.join(out, "teacher")
        seconds = run("training-inference/train.py", [*base, *TEACHER, f"--max_iters={args.teacher_iters}",
                                                      f"--eval_interval={args.teacher_iters}",
                                                      f"--out_dir={teacher_dir}"], env)
        runs["(a) teacher, train.py"] = result_of(teacher_dir, seconds)
        for name, script, extra in (
                ("(b) student from scratch, train.py", "training-inference/train.py", []),
                ("(c) student distilled, live teacher", "training-inference/distill.py",
                 [*kd, f"--teacher={teacher_dir}"])):
            run_dir = os.path.join(out, name[:3].strip("()"))
            runs[name] = result_of(run_dir, run(script, [*student, *extra, f"--out_dir={run_dir}"], env))
        cache = [*kd, f"--teacher={teacher_dir}", f"--teacher_cache={os.path.join(out, 'cache')}",
                 f"--teacher_topk={args.teacher_topk}"]
        build_seconds = run("training-inference/distill.py", [*student, *cache, "--max_iters=0",
                                                              f"--out_dir={os.path.join(out, 'cache-build')}"], env)
        runs[f"(d) student distilled, teacher cache (top-{args.teacher_topk})"] = \
            result_of(os.path.join(out, "d"), run("training-inference/distill.py",
                                                  [*student, *cache, f"--out_dir={os.path.join(out, 'd')}"], env))

    tokens = args.student_iters * 16 * 128
    print(f"\nstudents: {args.student_iters} steps x 16 x 128 = {tokens:,} tokens each; teacher: "
          f"{args.teacher_iters} steps; alpha {args.alpha}, T {args.temperature}; {args.threads} thread(s)\n")
    print("| run | params | val loss | val bpb | tokens/s | wall s |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['params'] / 1e6:.2f}M | {r['val_loss']:.4f} | {r['val_bpb']:.4f} | "
              f"{r['tokens_per_s']:,.0f} | {r['seconds']:.0f} |")
    print(f"\nteacher cache build (top-{args.teacher_topk} probabilities of every train window, one teacher pass, process "
          f"start included): {build_seconds:.0f} s")
    scratch = runs["(b) student from scratch, train.py"]["val_bpb"]
    distilled = runs["(c) student distilled, live teacher"]["val_bpb"]
    verdict = "helps" if distilled < scratch else "does not help"
    print(f"distillation {verdict} here: val bpb {scratch:.4f} (scratch) -> {distilled:.4f} (distilled), "
          f"{100 * (distilled - scratch) / scratch:+.2f}%")


if __name__ == "__main__":
    main()
