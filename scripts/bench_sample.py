"""
CPU generation speed of the ~10M-parameter benchmark model (configs/bench-10m.py, block_size 1024): tokens/s
for 512 new tokens with the KV cache and without it (full recompute every step, as nanoGPT's sample.py does),
at batch 1 and batch 8, in float32 and bfloat16 autocast, all measured in one run.

    python scripts/bench_sample.py [--new_tokens=512] [--threads=N]

Targets: KV cache >= 5x faster than recompute at 512 new tokens; batch 8 >= 4x the tokens/s of batch 1.
The weights are random: speed does not depend on what the model has learned, and no sample stops early.
"""
import argparse
import os
import runpy
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from regional_tinystories import runtime
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.sampling import SamplingConfig

PROMPT_TOKENS = 16


def tokens_per_second(model, batch, new_tokens, use_cache, dtype):
    idx = torch.randint(0, model.config.vocab_size, (batch, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    with runtime.autocast("cpu", dtype):
        model.generate(idx, SamplingConfig(max_new_tokens=8, temperature=0), use_cache=use_cache)  # warm up allocations
        start = time.perf_counter()
        out = model.generate(idx, SamplingConfig(max_new_tokens=new_tokens, temperature=0), use_cache=use_cache)
        elapsed = time.perf_counter() - start
    assert out.shape == (batch, PROMPT_TOKENS + new_tokens)
    return batch * new_tokens / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new_tokens", type=int, default=512)
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip_bf16", action="store_true", help="bf16 is emulated (slow) on CPUs without AVX-512 BF16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = runpy.run_path(os.path.join(ROOT, "configs", "bench-10m.py"))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=args.vocab_size, block_size=1024, n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                            n_embd=cfg["n_embd"], recipe=cfg["recipe"])).eval()
    print(f"model: {model.num_params() / 1e6:.1f}M parameters, {args.new_tokens} new tokens after a "
          f"{PROMPT_TOKENS}-token prompt, {args.threads} thread(s), native bf16: {runtime.cpu_supports_bf16()}")
    runs = [("fp32", "float32", 1, True), ("fp32", "float32", 1, False), ("fp32", "float32", 8, True)]
    if not args.skip_bf16:
        runs += [("bf16", "bfloat16", 1, True), ("bf16", "bfloat16", 8, True)]
    speed = {}
    print(f"{'dtype':<6} {'batch':>5} {'kv cache':>9} {'tokens/s':>10}")
    for name, dtype, batch, cache in runs:
        speed[name, batch, cache] = tps = tokens_per_second(model, batch, args.new_tokens, cache, dtype)
        print(f"{name:<6} {batch:>5} {'yes' if cache else 'no':>9} {tps:>10,.1f}")
    print(f"KV cache vs recompute (fp32, batch 1): {speed['fp32', 1, True] / speed['fp32', 1, False]:.1f}x (target >= 5x)")
    print(f"batch 8 vs batch 1 (fp32, cache): {speed['fp32', 8, True] / speed['fp32', 1, True]:.1f}x (target >= 4x)")
    if not args.skip_bf16:
        for batch in (1, 8):
            print(f"bf16 vs fp32 (batch {batch}, cache): {speed['bf16', batch, True] / speed['fp32', batch, True]:.2f}x")


if __name__ == "__main__":
    main()
