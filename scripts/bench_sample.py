"""
CPU generation speed, every contender measured in turn in the same rounds (A B C A B C ...), so that the ratios
hold while other jobs share the cores: this project's KV-cache decoding at batch 1 and 8 (fp32 weights in the
memory order quantize.prepare picks for them, as sample.py runs them, int8 weights as sample.py --quantize=int8
makes them, and bf16 weights cast once where the CPU has native bf16), the full recompute
nanoGPT's sample.py does, and optionally llama2.c's run.c on the same model exported with
`export.py --format=llama2c`.

    python scripts/bench_sample.py                                   # 6L/6H/384, vocab 8192, 256 new tokens
    python scripts/bench_sample.py --compile                         # + the decoding step compiled (sample.py
                                                                     #   --compile)
    python scripts/bench_sample.py --alone                           # + each batch-1 contender timed on its own
    python scripts/bench_sample.py --llama2c_run=/path/to/run_omp    # + llama2.c, built with
        # gcc -Ofast -fopenmp -march=native -o run_omp run.c -lm   (run with OMP_NUM_THREADS = this process's threads)

The weights are random (speed does not depend on what a model learned); eos is never drawn, so every sample
runs the full length. Within a round the contenders take one decoding step each in turn (A B C A B C ...), and each
one's tokens/s comes from its own steps' times. Printed: tokens/s per contender (median over rounds), per-round
ratios to batch-1 fp32 (median, min–max), and what batch 8 gives over batch 1 in each precision.
"""
import argparse
import copy
import os
import re
import statistics
import subprocess
import tempfile
import time

import torch

from regional_tinystories import PROJECT_ROOT, convert, quantize, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.corpus import read_texts
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.sampling import SamplingConfig

PROMPT_TOKENS = 16


def interleaved_decoding(contenders, new_tokens):
    """One round: every contender decodes its sample, one step each in turn (prefill first), so a burst of load from
    other jobs slows all of them alike. Returns {name: tokens/s} from each contender's own step times."""
    steps, seconds = {}, dict.fromkeys(contenders, 0.0)
    for name, (model, batch, use_cache, tokens) in contenders.items():
        idx = torch.randint(3, model.config.vocab_size, (batch, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
        steps[name] = model.generate_tokens(idx, SamplingConfig(max_new_tokens=tokens, temperature=0), use_cache=use_cache)
    for _ in range(new_tokens):
        for name in contenders:
            start = time.perf_counter()
            next(steps[name], None)  # a contender with fewer tokens (the recompute) is done early
            seconds[name] += time.perf_counter() - start
    return {name: batch * tokens / seconds[name] for name, (_, batch, _, tokens) in contenders.items()}


def llama2c_decoding(binary, folder, new_tokens, threads):
    """run.c's own tok/s report (it times the steps after the first), greedy, from a one-word prompt."""
    proc = subprocess.run([binary, os.path.join(folder, "model.bin"), "-z", os.path.join(folder, "tokenizer.bin"),
                           "-t", "0", "-n", str(PROMPT_TOKENS + new_tokens), "-i", "a"], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), timeout=600)
    found = re.search(r"achieved tok/s: ([0-9.]+)", proc.stderr)
    if not found:
        raise SystemExit(f"error: {binary} printed no 'achieved tok/s' ({proc.stderr.strip()[-200:]})")
    return float(found.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n_layer", type=int, default=6)
    p.add_argument("--n_head", type=int, default=6)
    p.add_argument("--n_embd", type=int, default=384)
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--llama2c_run", default="", help="a compiled llama2.c run / run_omp binary")
    p.add_argument("--compile", action="store_true", help="also time fp32 and int8 with the decoding step compiled "
                   "(sample.py --compile); compiling takes a minute or two on 2 cores, before the timed rounds")
    p.add_argument("--alone", action="store_true", help="after the interleaved rounds, time each batch-1 KV-cache "
                   "contender decoding on its own, as a sample.py run does: no other contender's steps evict its "
                   "weights from the caches between its steps (llama2.c always runs in a process of its own)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    native_bf16 = runtime.cpu_supports_bf16()
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=args.vocab_size, block_size=1024, n_layer=args.n_layer, n_head=args.n_head,
                         n_embd=args.n_embd, recipe="modern")
    row_major = GPT(config).eval()  # every weight as nn.Linear stores it
    with torch.no_grad():
        row_major.lm_head.weight[2] = 0  # eos (id 2) scores 0: greedy decoding never picks it
    model = quantize.prepare(copy.deepcopy(row_major))  # as sample.py runs it: weights in their faster memory order
    n, recompute_n = args.new_tokens, min(args.new_tokens, 128)  # (recomputing every window is slow)
    int8 = quantize.prepare(copy.deepcopy(model), quantize="int8")
    contenders = {"fp32, batch 1, KV cache": (model, 1, True, n), "fp32, batch 8, KV cache": (model, 8, True, n),
                  "fp32, batch 1, KV cache, every weight row-major (no quantize.prepare)": (row_major, 1, True, n),
                  "fp32, batch 1, full recompute (nanoGPT's sample.py)": (model, 1, False, recompute_n),
                  "int8 weights, batch 1, KV cache": (int8, 1, True, n), "int8 weights, batch 8, KV cache": (int8, 8, True, n)}
    prepared_weights = [("fp32", model), ("int8 weights", int8)]
    if native_bf16:
        bf16 = quantize.prepare(copy.deepcopy(model), "bfloat16")  # weights cast once, not autocast at every step
        contenders["bf16 weights, batch 1, KV cache"] = (bf16, 1, True, n)
        contenders["bf16 weights, batch 8, KV cache"] = (bf16, 8, True, n)
        prepared_weights.append(("bf16 weights", bf16))
    if args.compile:
        for weights, prepared in prepared_weights:
            compiled = copy.deepcopy(prepared).compile_decoding()
            for batch in (1, 8):
                contenders[f"{weights}, batch {batch}, KV cache, compiled decoding step"] = (compiled, batch, True, n)
    print(f"CPU: {runtime.cpu_name()}, {args.threads} threads; bf16: {runtime.cpu_bf16_kind()}; model {args.n_layer}L/"
          f"{args.n_head}H/{args.n_embd}, vocab {args.vocab_size}: {model.num_params() / 1e6:.1f}M parameters; "
          f"{args.new_tokens} new tokens after {PROMPT_TOKENS}; {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as folder:
        if args.llama2c_run:  # the same weights for run.c, with a SentencePiece tokenizer of the same size
            texts = [t for language in ("hindi", "english", "bangla", "marathi")
                     for t in read_texts(os.path.join(PROJECT_ROOT, "data", "demo", f"{language}.jsonl.gz"))]
            tok = tk.train_tokenizer(tk.parse_name(f"sp-bpe:{args.vocab_size}"), texts, os.path.join(folder, "tok"))
            if tok.vocab_size != args.vocab_size:
                raise SystemExit(f"error: could only train a {tok.vocab_size}-piece tokenizer for llama2.c")
            convert.write_llama2c(row_major, tok, os.path.join(folder, "llama2c"))
            print(f"llama2.c: {args.llama2c_run} {folder}/llama2c/model.bin -z .../tokenizer.bin -t 0 "
                  f"-n {PROMPT_TOKENS + args.new_tokens} (OMP_NUM_THREADS={args.threads})")
        speeds = {name: [] for name in contenders}
        if args.llama2c_run:
            speeds["llama2.c run.c (C, OpenMP), batch 1"] = []
        interleaved_decoding({name: (*c[:3], 8) for name, c in contenders.items()}, 8)  # warm-up, untimed
        for _ in range(args.rounds):
            for name, tokens_per_second in interleaved_decoding(contenders, args.new_tokens).items():
                speeds[name].append(tokens_per_second)
            if args.llama2c_run:
                speeds["llama2.c run.c (C, OpenMP), batch 1"].append(
                    llama2c_decoding(args.llama2c_run, os.path.join(folder, "llama2c"), args.new_tokens, args.threads))
    base = speeds["fp32, batch 1, KV cache"]
    print("\n| contender | tokens/s | × fp32 batch 1 (median, min–max per round) |\n|---|---|---|")
    for name, values in speeds.items():
        ratios = [v / b for v, b in zip(values, base)]
        print(f"| {name} | {statistics.median(values):,.1f} | {statistics.median(ratios):.2f}× "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    if args.alone:
        llama2c = speeds.get("llama2.c run.c (C, OpenMP), batch 1")
        print(f"\n| contender, decoding alone | tokens/s (median, min–max of {args.rounds} runs) |"
              f"{' × llama2.c |' if llama2c else ''}\n|---|---|{'---|' if llama2c else ''}")
        for name, contender in contenders.items():
            if name.startswith(("fp32, batch 1, KV cache", "int8 weights, batch 1", "bf16 weights, batch 1")):
                alone = [interleaved_decoding({name: contender}, args.new_tokens)[name] for _ in range(args.rounds)]
                versus = f" {statistics.median(alone) / statistics.median(llama2c):.2f}× |" if llama2c else ""
                print(f"| {name} | {statistics.median(alone):,.1f} ({min(alone):,.1f}–{max(alone):,.1f}) |{versus}")
    for weights in ("fp32", "int8 weights", "bf16 weights", "fp32, compiled", "int8 weights, compiled"):
        precision, compiled = weights.split(", compiled")[0], ", compiled decoding step" * weights.endswith("compiled")
        if f"{precision}, batch 8, KV cache{compiled}" in speeds:  # what batching buys in each, per round
            ratios = [b8 / b1 for b8, b1 in zip(speeds[f"{precision}, batch 8, KV cache{compiled}"],
                                                speeds[f"{precision}, batch 1, KV cache{compiled}"])]
            print(f"{weights}: batch 8 gives {statistics.median(ratios):.2f}× the tokens/s of batch 1 "
                  f"({min(ratios):.2f}–{max(ratios):.2f} per round)")


if __name__ == "__main__":
    main()
