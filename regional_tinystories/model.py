"""
A decoder-only transformer with two recipes, chosen by config:

  classic: GPT-2 as in nanoGPT: learned positions, LayerNorm, GELU MLP (4x)
  modern:  RoPE, RMSNorm, SwiGLU MLP (~8/3 x, same parameter count), optional QK-norm

Both tie the input embedding to the output head by default, can drop biases, use dropout, and attend through
F.scaled_dot_product_attention (in a training step compiled for a CPU, through causal_attention_in_row_blocks,
which inductor runs faster there). forward() is the plain training pass; generate() decodes with a KV cache,
picking each token with sampling.sample_next under a SamplingConfig.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from regional_tinystories.sampling import sample_next


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    dropout: float = 0.0
    bias: bool = False
    recipe: str = "modern"  # 'classic' or 'modern'
    qk_norm: bool = False  # modern only: RMSNorm on queries and keys, steadier at high learning rates
    tie_weights: bool = True
    rope_theta: float = 10000.0


class RMSNormFunction(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + eps) * weight over the last dimension, in 3 passes over x forward and 6 backward.
    PyTorch's CPU rms_norm is composed of pow, mean, add, rsqrt, mul, mul and type casts, and autograd
    differentiates each: about 15 passes over the activations, where LayerNorm has one fused kernel."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1)).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return (x * rstd).mul_(weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        grad_times_x = (grad * x).flatten(0, -2)  # (N, C)
        rows = rstd.flatten()
        grad_weight = grad_times_x.T @ rows  # sum over rows of grad * x * rstd
        # d/dx of x * rstd * w: rstd * w * grad - x * rstd^3 / C * sum_c(grad * w * x)
        coefficient = (grad_times_x @ weight).mul_(rows.pow(3)).div_(x.size(-1)).view_as(rstd)
        grad_x = (grad * weight).mul_(rstd).addcmul_(x, coefficient, value=-1)
        return grad_x, grad_weight, None


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same weight, same eps: the dtype's machine epsilon), with RMSNormFunction's fused passes for float32
    in eager mode with gradients. Other dtypes (bf16 inference, autocast under QK-norm), torch.compile, which fuses
    the plain form itself, and inference, where a decoding step's one row makes the autograd.Function's own overhead
    the larger cost, take nn.RMSNorm's own path."""

    def forward(self, x):
        if (x.dtype != torch.float32 or self.weight is None or torch.compiler.is_compiling()
                or not torch.is_grad_enabled()):
            return super().forward(x)
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        return RMSNormFunction.apply(x, self.weight, eps)


def make_norm(config):
    if config.recipe == "classic":
        return nn.LayerNorm(config.n_embd, bias=config.bias)
    return RMSNorm(config.n_embd)


def rope_tables(head_dim, length, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    return angles.cos(), angles.sin()


def rope_frequencies(head_dim, length, theta):
    """cos and sin of position * frequency for every position and pair of dimensions: (length, head_dim / 2, 2), the
    real and imaginary parts of e^(i * angle), kept real so that torch.compile (no complex kernels) reads it too."""
    cos, sin = rope_tables(head_dim, length, theta)
    return torch.stack((cos, sin), dim=-1)


def rotate(x, freqs):
    """RoPE as one complex multiplication: each adjacent pair (x[2i], x[2i+1]) of the last dimension is a complex
    number turned by its position's angle. x: (B, T, H, D); freqs: rope_frequencies' (T, D/2, 2), or (B, T, D/2, 2)
    when every row has positions of its own. Same result as apply_rope, in a fraction of the time (one fused
    multiply, no stack)."""
    freqs = freqs.unsqueeze(-3)  # broadcast over heads
    if torch.compiler.is_compiling():  # inductor has no complex kernels, but fuses the written-out form into one
        return RotatePairs.apply(x, freqs)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.view_as_complex(freqs)).flatten(-2).type_as(x)


class RotatePairs(torch.autograd.Function):
    """apply_rope on rope_frequencies' table, with the gradient of a rotation written as the rotation back (sin
    negated): under torch.compile the same one-pass kernel as forward, where autograd's own backward of the strided
    slices and stack becomes a masked scatter that takes several times as long."""

    @staticmethod
    def forward(ctx, x, freqs):
        ctx.save_for_backward(freqs)
        return apply_rope(x, freqs[..., 0], freqs[..., 1])

    @staticmethod
    def backward(ctx, grad):
        freqs, = ctx.saved_tensors
        return apply_rope(grad, freqs[..., 0], -freqs[..., 1]), None


def apply_rope(x, cos, sin):
    """Rotate pairs (x1, x2) of the last dimension by position-dependent angles, written out (the reference for
    rotate(), its compiled form, and what the attention plots use). x: (B, H, T, D); cos, sin: (T, D/2), or any
    shapes that broadcast so."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class KVCache:
    """Preallocated keys and values for every layer, so each decode step writes in place instead of concatenating.
    Buffers are made on first use, in the dtype the layer produces (bf16 under autocast)."""

    def __init__(self, n_layer, max_length):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.max_length = max_length
        self.length = 0  # positions filled so far

    def update(self, layer, k, v):
        if self.k[layer] is None:
            B, H, _, D = k.shape
            # uninitialised is fine: attention only ever reads the filled positions [:end]
            self.k[layer] = k.new_empty(B, H, self.max_length, D)
            self.v[layer] = v.new_empty(B, H, self.max_length, D)
        end = self.length + k.size(2)
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class QueryKeyProduct(torch.autograd.Function):
    """q @ k^T with the keys' gradient computed as grad^T @ q, which comes out in the keys' own (T, D) layout. Autograd
    computes it as (q^T @ grad)^T, a (D, T) layout that the kernel summing the blocks' key gradients and writing them
    back beside the queries' then reads across, at about twice the cost of that kernel in this layout."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q, k):
        ctx.save_for_backward(q, k)
        return q @ k.transpose(-2, -1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # the products run in forward's autocast dtype
    def backward(ctx, grad):
        q, k = ctx.saved_tensors
        return grad @ k, grad.transpose(-2, -1) @ q


def causal_attention_in_row_blocks(q, k, v, blocks=4):
    """Causal softmax(q k^T / sqrt(D)) v written out, in blocks of query rows that each read only the keys at or before
    their last row: 5/8 of the full T x T products for 4 blocks. For torch.compile on a CPU, which fuses the mask,
    softmax and casts around the batched products; there the pair forward + backward takes about half the time of
    scaled_dot_product_attention's CPU flash kernel. As in nanoGPT's written-out attention under autocast, the scores
    come out of the product in its dtype (bf16 under autocast) and the softmax runs in float32. q, k, v: (B, H, T, D)."""
    T = q.size(2)
    if T % blocks:
        blocks = 1
    rows = T // blocks
    causal_mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    outputs = []
    for start in range(0, T, rows):
        end = start + rows
        scores = QueryKeyProduct.apply(q[:, :, start:end], k[:, :, :end]) * (1.0 / math.sqrt(q.size(-1)))
        scores = scores.masked_fill(~causal_mask[start:end, :end], float("-inf"))
        outputs.append(scores.float().softmax(dim=-1).type_as(v) @ v[:, :, :end])
    return torch.cat(outputs, dim=2)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.layer, self.n_head, self.dropout = layer, config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        head_dim = config.n_embd // config.n_head
        self.use_rope = config.recipe == "modern"
        self.q_norm = RMSNorm(head_dim) if config.qk_norm and self.use_rope else None
        self.k_norm = RMSNorm(head_dim) if config.qk_norm and self.use_rope else None

    def forward(self, x, rope=None, cache=None, attn_mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head) for t in (q, k, v))  # (B, T, H, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = rotate(q, rope), rotate(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D) for attention
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        # a single new token may attend to everything cached; a prompt (T > 1) is causal within itself.
        # attn_mask (B, 1, T, S), True = may attend: rows of a batch padded to a common length (serve.py)
        causal = T > 1 and attn_mask is None
        if causal and k.size(2) != T:
            raise ValueError("a multi-token step needs an empty cache (prefill) in this implementation")
        dropout_p = self.dropout if self.training else 0.0
        if causal and dropout_p == 0 and q.device.type == "cpu" and torch.compiler.is_compiling():
            y = causal_attention_in_row_blocks(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * value of h = [gate | value] (the last dimension's two halves). Autograd of the written-out form
    computes the gradients of the two halves apart and then concatenates them, a copy of the MLP's widest
    activation; here they are written into the two halves of one gradient tensor."""

    @staticmethod
    def forward(ctx, h):
        gate, value = h.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(h, activated)
        return activated * value

    @staticmethod
    def backward(ctx, grad):
        h, activated = ctx.saved_tensors
        gate, value = h.chunk(2, dim=-1)
        grad_h = torch.empty_like(h)
        grad_gate, grad_value = grad_h.chunk(2, dim=-1)
        torch.mul(grad, activated, out=grad_value)
        torch.mul(grad, value, out=grad_gate)
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)  # in place: x silu'(gate)
        return grad_h


def swiglu(h):
    # inductor fuses the written-out form (and its backward) itself; without gradients there is nothing to save
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value
    return SwiGLUFunction.apply(h)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.swiglu = config.recipe == "modern"
        if self.swiglu:
            hidden = 32 * math.ceil(8 * config.n_embd / 3 / 32)  # 2/3 of 4x keeps the parameter count of GELU 4x
            self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)  # gate and value in one matmul
        else:
            hidden = 4 * config.n_embd
            self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.swiglu:
            h = swiglu(h)
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.ln_1, self.ln_2 = make_norm(config), make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None, attn_mask=None):
        x = x + self.attn(self.ln_1(x), rope, cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


class CrossEntropyFunction(torch.autograd.Function):
    """F.cross_entropy(logits, targets, ignore_index=-1) for (N, V) float32 logits, with its backward written as
    softmax minus the one-hot targets: exp, one scatter and one multiply. PyTorch's CPU kernel for the log-softmax
    backward ran slower on two threads than on one on a 2-core Xeon (291 against 108 ms for 4096 x 8192, one-off
    timing); this loss's forward and backward took 113 ms against F.cross_entropy's 158 there."""

    @staticmethod
    def forward(ctx, logits, targets):
        log_probs = torch.log_softmax(logits, dim=-1)
        counted = targets != -1
        # ignored rows pick logit 0 and then count 0; any other negative target still fails in gather, as in torch
        picked = targets.masked_fill(~counted, 0)[:, None]
        count = counted.sum()
        ctx.save_for_backward(log_probs, picked, counted, count)
        return -log_probs.gather(1, picked).squeeze(1).masked_fill(~counted, 0).sum() / count

    @staticmethod
    def backward(ctx, grad):
        log_probs, picked, counted, count = ctx.saved_tensors
        grad_logits = log_probs.exp()  # the softmax
        grad_logits.scatter_add_(1, picked, torch.full_like(grad_logits[:, :1], -1.0))
        grad_logits.mul_(counted[:, None] * (grad / count))
        return grad_logits, None


def cross_entropy(logits, targets):
    """Mean next-token loss over the targets that are not -1 (logits (B, T, V) of any dtype, computed in float32)."""
    logits, targets = logits.float().view(-1, logits.size(-1)), targets.reshape(-1)
    # inductor fuses the plain form into fewer passes itself, and GPUs have a fused kernel: the slow one is the CPU's
    if torch.compiler.is_compiling() or logits.device.type != "cpu":
        return F.cross_entropy(logits, targets, ignore_index=-1)
    return CrossEntropyFunction.apply(logits, targets)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.recipe not in ("classic", "modern"):
            raise ValueError(f"recipe must be 'classic' or 'modern', got {config.recipe!r}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.recipe == "classic" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        if config.recipe == "modern":
            freqs = rope_frequencies(config.n_embd // config.n_head, config.block_size, config.rope_theta)
            self.register_buffer("rope_freqs", freqs, persistent=False)
        self.compiled_decode_step = None  # compile_decoding() sets it: generate_tokens' one-token steps then run it
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=False):
        """Parameters, counting a tied head once. non_embedding also leaves out token and position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
            if not self.config.tie_weights:
                n -= self.lm_head.weight.numel()
        return n

    def forward(self, idx, targets=None, cache=None, positions=None, attn_mask=None, return_logits=True):
        """idx (B, T) -> logits (and the loss given targets). Positions count on from the cache's length, unless
        `positions` (B, T) gives each row its own (with `attn_mask` hiding the padding of a batch of unequal rows).
        return_logits=False gives (None, loss), for a training step that needs only the loss: logits that leave a
        torch.compile graph get a zero-filled gradient of their own (B, T, vocab) size in every backward pass."""
        B, T = idx.size()
        if positions is None:
            start = cache.length if cache is not None else 0
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}")
            positions = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)
        else:
            rope = self.rope_freqs[positions]  # (T, D/2, 2), or (B, T, D/2, 2) for rows with positions of their own
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope, cache, attn_mask)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # generation only needs the last position
        logits = self.lm_head(x)
        return logits if return_logits else None, self.loss(logits, targets)

    def loss(self, logits, targets):
        return cross_entropy(logits, targets)

    def compile_decoding(self):
        """torch.compile the one-token decoding step that generate_tokens takes once per new token (the prompt's
        prefill stays eager: it runs once). A step's shapes differ only in the cache length, so dynamic=True compiles
        it once for batch 1 and once for larger batches. On a CPU a step of a small model spends about as long in
        Python and dispatch between its ~100 kernels as in its matrix products; compiled with inductor's C++ wrapper,
        which calls the kernels without Python, that overhead is gone (README, Performance)."""
        self.compiled_decode_step = torch.compile(self.forward, dynamic=True, options={"cpp_wrapper": True})
        return self

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward), as in the PaLM appendix: 6N + 12 L T d."""
        c = self.config
        return 6 * self.num_params(non_embedding=False) + 12 * c.n_layer * c.block_size * c.n_embd

    @torch.no_grad()
    def generate(self, idx, sampling, eos_id=None, use_cache=True, generator=None):
        """Continue every row of idx (B, T) by up to sampling.max_new_tokens; returns (B, T + n). Rows that emit
        eos_id stop (their later positions are filled with eos)."""
        steps = [token[:, None] for token in self.generate_tokens(idx, sampling, eos_id, use_cache, generator)]
        return torch.cat([idx] + steps, dim=1)

    @torch.no_grad()
    def generate_tokens(self, idx, sampling, eos_id=None, use_cache=True, generator=None):
        """
        Yield the next token of every row (a (B,) tensor) for up to sampling.max_new_tokens steps, stopping early
        once all rows have emitted eos_id. use_cache=False recomputes the whole window every step, as nanoGPT's
        sample.py does. When the window is full, the cache is rebuilt from the last half-window (the no-cache path
        crops).
        """
        block = self.config.block_size
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        cache = None
        decode_step = self.compiled_decode_step or self
        for _ in range(sampling.max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -block:])
            elif cache is None or cache.length >= block:
                # (re)fill the cache; once the window is full, keep its last half so decoding can go on
                cache = KVCache(self.config.n_layer, block)
                logits, _ = self(idx if idx.size(1) < block else idx[:, -(block // 2):], cache=cache)
            else:
                logits, _ = decode_step(idx[:, -1:], cache=cache)
            next_token = sample_next(logits[:, -1, :].float(), idx, sampling, generator)
            if eos_id is not None:
                next_token = torch.where(done, torch.full_like(next_token, eos_id), next_token)
                done |= next_token == eos_id
            idx = torch.cat((idx, next_token[:, None]), dim=1)
            yield next_token
            if eos_id is not None and bool(done.all()):
                return

    def model_args(self):
        return asdict(self.config)
