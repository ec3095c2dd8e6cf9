"""
Device and precision choices shared by train.py, sample.py and the benchmarks: which device and dtype, autocast,
the peak FLOP/s for MFU, RNG states for exact resume, and the rank of this process under torchrun.
"""
import contextlib
import functools
import os
import time

import torch

# bf16 dense peak (FLOP/s) of common GPUs, for the MFU estimate; other devices are measured with a matmul
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                  "L4": 121e12, "4090": 165e12, "3090": 71e12, "T4": 65e12, "V100": 125e12}


def device_problem(requested):
    """Why `requested` cannot be used here (one line), or None: 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'."""
    if requested in ("auto", "cpu"):
        return None
    if requested == "mps":
        available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        return None if available else "device='mps': Metal (mps) is not available here"
    kind, _, index = requested.partition(":")
    if kind != "cuda" or not (requested == "cuda" or index.isdigit()):
        return f"device={requested!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
    count = torch.cuda.device_count()
    if count == 0:
        return f"device={requested!r}: no CUDA device is available here"
    if index and int(index) >= count:
        return f"device={requested!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


def pick_device(requested="auto"):
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, as on macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def cpu_supports_bf16():
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX). Without them PyTorch emulates bf16,
    far slower than fp32, so the bf16 paths are only benchmarked where this holds."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_is_faster():
    """True when bf16 matrix products beat fp32 ones on this CPU. With AMX tiles they do; without native bf16 they
    are emulated and far slower. AVX-512 BF16 without AMX goes either way, so it is timed once per process (~0.1 s):
    PyTorch's bf16 products ran at 0.57x the fp32 rate on a Xeon with it and at 4.2x on an AMD EPYC with it
    (scripts/bench_train.py's peaks; README, Performance)."""
    if "amx_bf16" in cpu_flags():
        return True
    if not cpu_supports_bf16():
        return False
    return bf16_matmul_speedup() >= 1.2  # a margin: training also pays for casts that a bare product does not


@functools.lru_cache(maxsize=None)
def bf16_matmul_speedup(n=512, rounds=5):
    """bf16 over fp32 matmul rate on this CPU: an n x n product timed in both dtypes in turn, the best of `rounds`."""
    best = {}
    for _ in range(rounds):
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.ones(n, n, dtype=dtype), torch.ones(n, n, dtype=dtype)
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            best[dtype] = min(best.get(dtype, float("inf")), time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_bf16_kind():
    """'AMX', 'AVX-512 BF16 (no AMX), products faster/slower than fp32' or 'none (emulated)': printed with every
    benchmark table."""
    if "amx_bf16" in cpu_flags():
        return "AMX"
    if not cpu_supports_bf16():
        return "none (emulated)"
    return f"AVX-512 BF16 (no AMX), products {'faster' if cpu_bf16_is_faster() else 'slower'} than fp32"


def cpu_name():
    """The CPU's model name, for benchmark tables ("which machine is this figure from")."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("model name")), "")
    except OSError:
        line = ""
    return line.split(":", 1)[1].strip() if ":" in line else "unknown CPU"


def pick_dtype(requested, device):
    """'auto' -> bfloat16 where the hardware makes it faster (GPUs with bf16, CPUs with AMX or a fast AVX-512 BF16:
    cpu_bf16_is_faster), float16 on older GPUs, else float32."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu":
        return "bfloat16" if cpu_bf16_is_faster() else "float32"
    return "float32"


def autocast(device, dtype):
    """Autocast context for the forward pass (a no-op for float32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    device_type = "cuda" if device.startswith("cuda") else device
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def measure_matmul_flops(device="cpu", dtype="float32", n=1024, seconds=0.3):
    """Achieved FLOP/s of a square matrix product under the same autocast as training: the practical peak that
    MFU is measured against on a CPU (where no spec-sheet peak applies)."""
    # a private generator: measuring must not move the global RNG that dropout draws from (exact resume)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g)
    b = torch.randn(n, n, device=device, generator=g)
    with autocast(device, dtype):  # F.linear, as the model's layers: on CPU it takes the oneDNN path
        torch.nn.functional.linear(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.nn.functional.linear(a, b)
            reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def peak_flops(device, dtype):
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops if dtype != "float32" else flops / 2
    return measure_matmul_flops(device if device != "mps" else "cpu", dtype if device == "cpu" else "float32")


def seed_everything(seed):
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    """Torch RNG states (dropout draws from them). Training uses no numpy / python randomness."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def world_info():
    """(rank, local_rank, world_size) under torchrun, else (0, 0, 1)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    return 0, 0, 1


def start_ranks(device, local_rank, world_size):
    """Under torchrun (world_size > 1): join the process group (NCCL on GPUs, gloo on CPUs) and give each rank its
    GPU, or its share of the CPU threads. Returns the rank's device."""
    if world_size == 1:
        return device
    import torch.distributed as dist
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    return device


def wrap_for_training(model, compile_, world_size, local_rank, device):
    """The model the training loop calls: torch.compile'd if asked, inside DDP under torchrun. (Checkpoints save the
    unwrapped model.)"""
    if compile_:
        model = torch.compile(model)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[local_rank] if device.startswith("cuda") else None)
    return model
