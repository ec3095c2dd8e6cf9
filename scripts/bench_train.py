"""
CPU training throughput of train.py on the ~10M-parameter benchmark model (configs/bench-10m.py): the same
steps in float32 and in bfloat16 autocast, with torch.compile off and on, measured in one run.

    python scripts/bench_train.py [--steps=20] [--modes=fp32,bf16,fp32+compile,bf16+compile]

Prints tokens/s per mode and its ratio to fp32, the final training loss (bf16 target: within 2% of fp32),
and achieved FLOP/s against a matmul peak measured in the same run. Target on a CPU with native bf16
(AVX-512 BF16 / AMX): bf16 >= 2.5x fp32 tokens/s. Without native bf16, PyTorch emulates bf16 matmuls and
they are far slower than fp32; the script says so and train.py's dtype=auto keeps such CPUs on fp32.
"""
import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from regional_tinystories import runtime
from regional_tinystories.model import GPT, ModelConfig

MODES = {"fp32": ("float32", False), "bf16": ("bfloat16", False),
         "fp32+compile": ("float32", True), "bf16+compile": ("bfloat16", True)}
WARMUP_STEPS = 3  # first steps pay for allocation and compilation; they are not timed


def run_mode(data_root, out_dir, steps, dtype, compile_):
    cmd = [sys.executable, os.path.join(ROOT, "training-inference", "train.py"), "configs/bench-10m.py",
           f"--data_root={data_root}", "--dataset=bench", f"--out_dir={out_dir}", f"--max_iters={steps}",
           "--eval_interval=100000", "--eval_iters=1", "--log_interval=1", "--warmup_iters=5", "--device=cpu",
           f"--dtype={dtype}", f"--compile={compile_}", "--learning_rate=1e-3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"))
    if proc.returncode:
        sys.exit(f"error: train.py failed for {dtype} compile={compile_}: {proc.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        steps_log = [r for r in map(json.loads, f) if r["type"] == "train"]
    timed = steps_log[WARMUP_STEPS:]
    tokens_per_s = sum(r["tokens_per_s"] for r in timed) / len(timed)
    return tokens_per_s, steps_log[-1]["loss"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--modes", default="fp32,bf16,fp32+compile")
    args = p.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            sys.exit(f"error: unknown mode {m!r}; choose from {', '.join(MODES)}")
    peaks = {d: runtime.measure_matmul_flops("cpu", d, seconds=1.0) for d in ("float32", "bfloat16")}
    print(f"CPU matmul peak (1024x1024, measured now): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s; native bf16 instructions: {runtime.cpu_supports_bf16()}")
    if not runtime.cpu_supports_bf16():
        print("note: this CPU has no AVX-512 BF16 / AMX, so bf16 is emulated and slower than fp32; "
              "train.py's dtype=auto uses fp32 here")
    with tempfile.TemporaryDirectory() as tmp:
        data_root = os.path.join(tmp, "data")
        prep = subprocess.run([sys.executable, os.path.join(ROOT, "training-inference", "data", "prepare.py"),
                               "--input=data/demo/english.jsonl", f"--out_dir={data_root}", "--name=bench",
                               "--tokenizer=sp-bpe:4096", "--val_fraction=0.1"], capture_output=True, text=True, cwd=ROOT)
        if prep.returncode:
            sys.exit(f"error: prepare.py failed: {prep.stderr.strip()}")
        cfg = runpy.run_path(os.path.join(ROOT, "configs", "bench-10m.py"))
        with open(os.path.join(data_root, "bench", "meta.json")) as f:
            vocab = json.load(f)["vocab_size"]
        model = GPT(ModelConfig(vocab_size=vocab, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                                n_head=cfg["n_head"], n_embd=cfg["n_embd"], recipe=cfg["recipe"]))
        flops_per_token = model.flops_per_token()
        print(f"model: {model.num_params() / 1e6:.1f}M parameters, batch {cfg['batch_size']} x {cfg['block_size']} "
              f"tokens, {args.steps} steps ({WARMUP_STEPS} untimed)")
        print(f"{'mode':<14} {'tokens/s':>9} {'x fp32':>7} {'final loss':>10} {'GFLOP/s':>8} {'% of peak':>9}")
        base = None
        for m in modes:
            dtype, compile_ = MODES[m]
            tps, loss = run_mode(data_root, os.path.join(tmp, m), args.steps, dtype, compile_)
            base = base or (tps, loss)
            achieved = flops_per_token * tps
            print(f"{m:<14} {tps:>9,.0f} {tps / base[0]:>6.2f}x {loss:>10.4f} {achieved / 1e9:>8.1f} "
                  f"{achieved / peaks[dtype]:>8.0%}   (loss {100 * (loss / base[1] - 1):+.2f}% vs {modes[0]})")


if __name__ == "__main__":
    main()
