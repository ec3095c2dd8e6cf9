"""
Inference precision, set once when sample.py, serve.py, eval_bpb.py or bench_sample.py has loaded a model:

  dtype bfloat16 / float16   the weights are cast once (not autocast at every step). The RoPE table stays complex64:
                             the rotation is computed in fp32 anyway, and casting it to a real dtype would drop its
                             imaginary part. Norms are cast too: F.rms_norm and F.layer_norm normalise in fp32
                             internally, so only their weight multiply is in bf16.
  quantize int8              the linear layers, the head included, replaced by torch.ao dynamic quantization: int8
                             weights with one scale per output row, activations quantized per call with one scale
                             per tensor (fbgemm, CPU only). The embedding the head is tied to stays in fp32: a lookup
                             costs nothing, and the head gets an int8 copy of the same matrix. The MLP's output
                             projections stay fp32: their input (after SwiGLU / GELU) has outliers that one
                             activation scale per tensor resolves badly; quantized, they alone flip greedy's top-1
                             token at 7% of positions instead of 2% (measured on the quickstart model, README).

  float32 / bfloat16 on a CPU: each linear layer's weight is stored in whichever memory order (row- or column-major)
                             its one-row product runs faster in, timed once per weight shape when the model loads.
                             Decoding is a matrix-vector product per layer, and MKL's runs faster from one order or
                             the other depending on the shape (1.33x at batch 1: README, Performance); the values are
                             the same up to the order of a sum.

  QUANTIZE_CHOICES   the values of the quantize setting
  inference_dtype    the dtype a model will run in, or a ConfigError for a combination that cannot run
  prepare            the model cast or quantized for that (in place; returned for convenience)
"""
import functools
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from regional_tinystories import runtime
from regional_tinystories.config import ConfigError

QUANTIZE_CHOICES = ("none", "int8")


def inference_dtype(requested, quantize, device):
    """runtime.pick_dtype's choice, except that int8 runs in float32 (the kernels take fp32 activations) and only on
    the CPU. ConfigError (one line) for a device or dtype that int8 cannot run with, or an unknown quantize value."""
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize={quantize!r} is not one of {', '.join(map(repr, QUANTIZE_CHOICES))}")
    if quantize == "none":
        return runtime.pick_dtype(requested, device)
    if device != "cpu":
        raise ConfigError(f"quantize={quantize}: the int8 kernels (torch.ao dynamic quantization) run on the CPU only, "
                          f"not on device {device}; use dtype=bfloat16 or float16 there")
    if requested not in ("auto", "float32"):
        raise ConfigError(f"quantize={quantize} computes in float32 between its int8 matrix products, so dtype must be "
                          f"'auto' or 'float32', not {requested!r}")
    return "float32"


def prepare(model, dtype="float32", quantize="none"):
    """The model in eval mode with its weights in `dtype`, or its linear layers quantized to int8; on the CPU, unquantized
    weights in their faster memory order (lay_out_for_decoding)."""
    model.eval()
    if quantize == "int8":
        quantize_int8(model)
    elif dtype != "float32":
        for child in model.children():  # not model.to(): the RoPE table, a buffer of the GPT itself, stays complex64
            child.to(getattr(torch, dtype))
    if quantize == "none" and next(model.parameters()).device.type == "cpu":
        lay_out_for_decoding(model)
    return model


def lay_out_for_decoding(model):
    """Store every linear weight in the memory order (row- or column-major) its one-row product is faster in.
    A tied head and embedding share one tensor, so the embedding's row lookup reads it in the same order."""
    for module in model.modules():
        weight = module.weight.data if type(module) is nn.Linear else None
        if weight is not None and column_major_is_faster(tuple(weight.shape), weight.dtype, torch.get_num_threads()):
            module.weight.data = weight.t().contiguous().t()
    return model


@functools.lru_cache(maxsize=None)
def column_major_is_faster(shape, dtype, threads, cache_bytes=48 << 20):
    """Time F.linear(one row, W) over enough copies of W to leave the CPU's caches, as a decoding step meets its
    weights, in both memory orders; the best of three passes each."""
    copies = max(1, cache_bytes // (shape[0] * shape[1] * dtype.itemsize))
    row_major = torch.ones(copies, *shape, dtype=dtype)
    column_major = torch.ones(copies, shape[1], shape[0], dtype=dtype).transpose(1, 2)
    x = torch.ones(1, shape[1], dtype=dtype)

    def best_pass(weights):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for weight in weights:
                F.linear(x, weight)
            times.append(time.perf_counter() - start)
        return min(times)
    return best_pass(column_major) < best_pass(row_major)


def quantize_int8(model):
    """Every nn.Linear but the MLP output projections -> a dynamically quantized one (int8 weights, per output
    channel), in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    layers = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and not name.endswith("mlp.c_proj")}
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore")
        quantize_dynamic(model, layers, inplace=True)
    return model
