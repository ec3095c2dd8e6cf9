"""
Inference precision, set once when sample.py, serve.py, eval_bpb.py or bench_sample.py has loaded a model:

  dtype bfloat16 / float16   the weights are cast once (not autocast at every step). The RoPE table stays complex64:
                             the rotation is computed in fp32 anyway, and casting it to a real dtype would drop its
                             imaginary part. Norms are cast too: F.rms_norm and F.layer_norm normalise in fp32
                             internally, so only their weight multiply is in bf16.
  quantize int8              every nn.Linear, the head included, replaced by torch.ao dynamic quantization: int8
                             weights with one scale per output row, activations quantized per call (fbgemm, CPU
                             only). The embedding the head is tied to stays in fp32: a lookup costs nothing, and the
                             head gets an int8 copy of the same matrix.

  QUANTIZE_CHOICES   the values of the quantize setting
  inference_dtype    the dtype a model will run in, or a ConfigError for a combination that cannot run
  prepare            the model cast or quantized for that (in place; returned for convenience)
"""
import warnings

import torch
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
    """The model in eval mode with its weights in `dtype`, or its linear layers quantized to int8."""
    model.eval()
    if quantize == "int8":
        quantize_int8(model)
    elif dtype != "float32":
        for child in model.children():  # not model.to(): the RoPE table, a buffer of the GPT itself, stays complex64
            child.to(getattr(torch, dtype))
    return model


def quantize_int8(model):
    """Every nn.Linear -> a dynamically quantized one (int8 weights, per output channel), in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return model
