"""
CPU training speed, every contender in this one process and measured step by step in turn (A B C, B C A, C A B, ...:
the order rotates), so that the ratios hold while other jobs share the cores.

    python scripts/bench_train.py                                  # 6L/6H/384, block 256, batch 16, vocab 8192
    python scripts/bench_train.py --steps=50 --compile             # + torch.compile contenders
    python scripts/bench_train.py --nanogpt=/path/to/nanoGPT      # + nanoGPT's own model.py, side by side
    python scripts/bench_train.py --threads=1                      # one torch thread (a machine others share)

Contenders: the baseline is nanoGPT's recipe as this project writes it (classic GPT-2 blocks, float32, eager,
F.cross_entropy, AdamW without the fused kernel, as nanoGPT uses on a CPU); then the classic recipe with train.py's
loss (model.cross_entropy) and fused AdamW; the modern recipe (RoPE, RMSNorm, SwiGLU) in float32 with both, the same
with optimizer="muon" (train.py's make_optimizer: Muon on the blocks' matrices, its extra cost per step is the
Newton-Schulz iterations), and in bfloat16 autocast where the CPU has native bf16 (AVX-512 BF16 or AMX; elsewhere
bf16 is emulated and far slower, so it is left out unless --bf16 is given; the line above the table says which kind
this CPU has, and whether its bf16 products beat fp32: AMX always, AVX-512 BF16 alone on some CPUs and not others).
All see the same batches from the same initial seed.
Printed: tokens/s (median over steps), the per-step ratio to the baseline (median, min–max), achieved GFLOP/s (6N +
attention FLOPs per token) against the matmul peak of the contender's own dtype measured between the steps (fp32,
and bf16 on native bf16 tensors, not autocast), and each contender's loss after the last step next to the
baseline's.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # large CPU tensors on 2 MB pages, as train.py sets them

import torch
import torch.nn.functional as F

from regional_tinystories import runtime
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.training import make_optimizer


def matmul_peak(dtype, n=1024, seconds=1.0):
    """FLOP/s of an n x n matmul on tensors of that dtype (not autocast: its casts would be measured too)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def nanogpt_model(path, args, vocab):
    """nanoGPT's GPT from its own model.py (not part of this project: fetched and run beside it)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", os.path.join(path, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.GPTConfig(block_size=args.block_size, vocab_size=vocab, n_layer=args.n_layer, n_head=args.n_head,
                              n_embd=args.n_embd, dropout=0.0, bias=False)
    return module.GPT(config)


class NanoGPTRecipe(GPT):
    """The classic recipe with nanoGPT's loss, F.cross_entropy, whose slow CPU backward this project's GPT replaces."""

    def loss(self, logits, targets):
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


class Contender:
    def __init__(self, name, model, dtype="float32", fused=False, compile_=False, optimizer="adamw"):
        self.name, self.dtype = name, dtype
        self.model = torch.compile(model) if compile_ else model
        self.raw = model
        if optimizer == "adamw":
            decay = [p for p in model.parameters() if p.dim() >= 2]
            rest = [p for p in model.parameters() if p.dim() < 2]
            self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                                {"params": rest, "weight_decay": 0}],
                                               lr=1e-3, betas=(0.9, 0.95), fused=fused)
        else:  # as train.py makes it, with train.py's defaults
            self.optimizer = make_optimizer(model, SimpleNamespace(
                optimizer=optimizer, learning_rate=1e-3, muon_lr=0.02, muon_momentum=0.95, weight_decay=0.1,
                beta1=0.9, beta2=0.95), "cpu")
        self.seconds, self.loss = [], None

    def step(self, x, y):
        start = time.perf_counter()
        with runtime.autocast("cpu", self.dtype):
            # as train.py calls it; nanoGPT's own model.py has no return_logits
            _, loss = self.model(x, y, return_logits=False) if isinstance(self.raw, GPT) else self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.raw.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss = loss.item()
        return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps of every contender (after 3 untimed)")
    p.add_argument("--n_layer", type=int, default=6)
    p.add_argument("--n_head", type=int, default=6)
    p.add_argument("--n_embd", type=int, default=384)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--compile", action="store_true", help="add torch.compile contenders")
    p.add_argument("--bf16", action="store_true", help="add bf16 contenders even without native bf16 (slow)")
    p.add_argument("--nanogpt", default="", help="a nanoGPT checkout: its model.py joins as a contender")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice, one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native_bf16 = runtime.cpu_supports_bf16()
    print(f"CPU: {runtime.cpu_name()}, {torch.get_num_threads()} threads; bf16: {runtime.cpu_bf16_kind()}")
    peak_dtypes = ("float32", "bfloat16") if native_bf16 or args.bf16 else ("float32",)

    def build(recipe, model_class=GPT):
        torch.manual_seed(0)
        return model_class(ModelConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                               n_head=args.n_head, n_embd=args.n_embd, recipe=recipe))
    contenders = [Contender("nanoGPT recipe (classic, fp32, eager)", build("classic", NanoGPTRecipe))]
    if args.nanogpt:
        torch.manual_seed(0)
        contenders.append(Contender("nanoGPT's own model.py (fp32)", nanogpt_model(args.nanogpt, args, args.vocab_size)))
    contenders.append(Contender("classic fp32, model.cross_entropy, fused AdamW", build("classic"), fused=True))
    contenders.append(Contender("modern fp32, fused AdamW", build("modern"), fused=True))
    contenders.append(Contender("modern fp32, Muon + fused AdamW", build("modern"), optimizer="muon"))
    if native_bf16 or args.bf16:
        contenders.append(Contender("modern bf16 autocast", build("modern"), "bfloat16", fused=True))
    if args.compile:
        contenders.append(Contender("modern fp32 + compile", build("modern"), fused=True, compile_=True))
        if native_bf16 or args.bf16:
            contenders.append(Contender("modern bf16 + compile", build("modern"), "bfloat16", True, True))
    flops = {c.name: (build("modern") if "modern" in c.name else build("classic")).flops_per_token() for c in contenders}
    tokens = args.batch_size * args.block_size
    generator = torch.Generator().manual_seed(1)
    print(f"model {args.n_layer}L/{args.n_head}H/{args.n_embd}, block {args.block_size}, batch {args.batch_size}, vocab "
          f"{args.vocab_size}: {contenders[0].raw.num_params() / 1e6:.1f}M parameters; {args.steps} timed steps each")
    step_peaks = {dtype: [] for dtype in peak_dtypes}
    for step in range(3 + args.steps):
        x = torch.randint(0, args.vocab_size, (args.batch_size, args.block_size + 1), generator=generator)
        x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
        # interleaved: every contender takes this step before the next step begins, in an order that rotates from
        # step to step, so that none always runs right after the peak probe or right before it
        for c in contenders[step % len(contenders):] + contenders[:step % len(contenders)]:
            seconds = c.step(x, y)
            if step >= 3:
                c.seconds.append(seconds)
        if step >= 3:  # the peaks too are measured between the steps, not once at the start
            for dtype in peak_dtypes:
                step_peaks[dtype].append(matmul_peak(getattr(torch, dtype), seconds=0.2))
        print(f"\rstep {step + 1}/{3 + args.steps}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    base = contenders[0]
    peaks = {dtype: statistics.median(values) for dtype, values in step_peaks.items()}
    print("(peaks: 1024x1024 matmul on tensors of the dtype, between steps: " + ", ".join(
        f"{dtype} median {peaks[dtype] / 1e9:.0f} GFLOP/s, range {min(v) / 1e9:.0f}–{max(v) / 1e9:.0f}"
        for dtype, v in step_peaks.items()) + ")")
    print(f"\n| contender | tokens/s | × baseline (median, min–max per step) | GFLOP/s | % of its dtype's peak "
          f"| loss after {3 + args.steps} steps |\n|---|---|---|---|---|---|")
    for c in contenders:
        ratios = [b / s for b, s in zip(base.seconds, c.seconds)]
        tps = tokens / statistics.median(c.seconds)
        achieved = flops[c.name] * tps
        print(f"| {c.name} | {tps:,.0f} | {statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
              f"{achieved / 1e9:.0f} | {achieved / peaks[c.dtype]:.0%} | {c.loss:.4f} ({100 * (c.loss / base.loss - 1):+.2f}%) |")


if __name__ == "__main__":
    main()
