"""
Inference precision, set once when sample.py, serve.py, eval_bpb.py or bench_sample.py has loaded a model:

  dtype bfloat16 / float16   the weights are cast once (not autocast at every step). The RoPE table (cos, sin) stays
                             fp32: the rotation is computed in fp32 anyway, from angles bf16 would round. Norms are
                             cast too: F.rms_norm and F.layer_norm normalise in fp32 internally, so only their weight
                             multiply is in bf16.
  quantize int8              every linear layer, the head included, replaced by an Int8Linear: int8 weights with one
                             scale per output row, multiplied by PyTorch's weight-only int8 kernel with the activations
                             in bf16 for the product only. The embedding the head is tied to stays in fp32: a lookup
                             costs nothing, and the head gets an int8 copy of the same matrix. Activations are not
                             quantized, so no layer needs to stay fp32 for the outliers of its input.

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

import torch
import torch.nn.functional as F
from torch import nn

from regional_tinystories import runtime
from regional_tinystories.config import ConfigError

QUANTIZE_CHOICES = ("none", "int8")


def inference_dtype(requested, quantize, device):
    """runtime.pick_dtype's choice, except on a CPU, where 'auto' is float32: decoding is one matrix-vector product
    per layer, and bf16 weights decoded at 0.77-0.90x fp32 at batch 1 even on CPUs whose bf16 matrix products beat
    fp32 (README, Performance). int8 runs in float32 (bf16 only inside its products) and only on the CPU.
    ConfigError (one line) for a device or dtype that int8 cannot run with, or an unknown quantize value."""
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize={quantize!r} is not one of {', '.join(map(repr, QUANTIZE_CHOICES))}")
    if quantize == "none":
        return "float32" if device == "cpu" and requested == "auto" else runtime.pick_dtype(requested, device)
    if device != "cpu":
        raise ConfigError(f"quantize={quantize}: the int8 kernel (aten._weight_int8pack_mm) runs on the CPU only, "
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
        for child in model.children():  # not model.to(): the RoPE table, a buffer of the GPT itself, stays fp32
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


class Int8Linear(nn.Module):
    """A linear layer with int8 weights, one scale per output row (symmetric, max |w| = 127 steps), multiplied by
    PyTorch's weight-only int8 kernel (aten._weight_int8pack_mm): the weights stay int8 in memory, a quarter of fp32's
    bytes to read at every decoding step, and the activations go into the product and come out of it in bf16, the one
    dtype the kernel takes beside int8 (its fp32 path is several times slower than fp32's own F.linear on a CPU
    without bf16). Everything between the products (norms, residual stream, attention) stays fp32."""

    def __init__(self, linear):
        super().__init__()
        weight = linear.weight.detach().float().contiguous()  # the kernel takes row-major weights only
        # a scale bf16 holds exactly, as the kernel takes it; a weight that rounds past 127 steps of it is clamped
        scale = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.bfloat16).tiny).bfloat16()
        self.register_buffer("weight", (weight / scale.float()[:, None]).round_().clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = linear.bias

    def forward(self, x):
        rows = x.reshape(-1, x.size(-1)).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scale).to(x.dtype).view(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def quantize_int8(model):
    """Every nn.Linear -> an Int8Linear, in place. The head gets an int8 copy of the embedding it is tied to; the
    embedding itself stays fp32 (a lookup reads one row). The kernel reads its input in groups of 8 on AVX2 and 16 on
    AVX-512 (other widths give wrong products for more than one row, or crash the process), so a layer whose input
    width is not a multiple of 16 stays fp32."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear and child.in_features % 16 == 0:
                setattr(parent, name, Int8Linear(child))
    return model
