"""
Attention weights of the GPT in model.py, and what kind of head each one is.

The model attends with F.scaled_dot_product_attention, which never returns the weights. attention_weights runs the
model once with a forward pre-hook on every layer's attention module, capturing what the module is given (its input
and the RoPE table), and recomputes softmax(q k^T / sqrt(d)) under the causal mask from the module's own
projections, its QK-norm and model.apply_rope: the one place outside model.py that does this maths.

classify_heads sorts the heads the way the original Regional-TinyStories' attention analysis does, from the
matrices alone (row 0, which can only attend to itself, is left out of every statistic):
  diffuse     attention spread out: the mean entropy of a row is at least 0.75 of the most it could be (checked
              first: in a short row even uniform attention puts much weight near the diagonal)
  positional  otherwise, at least half the attention on the diagonal band (the token itself or the one before it)
  long-range  otherwise: peaked on a few tokens further back (a head attending to the first token, an "attention
              sink", is one of these; its first_token share says so)
"""
import math

import torch

from regional_tinystories.model import apply_rope

POSITIONAL_MIN_DIAGONAL = 0.5
DIFFUSE_MIN_ENTROPY = 0.75
HEAD_KINDS = ("positional", "long-range", "diffuse")


@torch.no_grad()
def attention_weights(model, idx):
    """(n_layer, n_head, T, T) attention probabilities of every head for the token ids idx (1, T); row t holds how
    token t spreads its attention over tokens 0..t."""
    captured = {}
    hooks = [block.attn.register_forward_pre_hook(
        lambda module, args, layer=layer: captured.__setitem__(layer, (args[0], args[1])))
        for layer, block in enumerate(model.blocks)]  # Block calls attn(ln_1(x), rope, cache, attn_mask)
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    layers = []
    for layer, block in enumerate(model.blocks):
        attn, (x, rope) = block.attn, captured[layer]
        B, T, C = x.shape
        q, k, _ = attn.c_attn(x).split(C, dim=2)
        q, k = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k))  # (B, H, T, D)
        if attn.q_norm is not None:
            q, k = attn.q_norm(q), attn.k_norm(k)
        if attn.use_rope:  # the model's RoPE table is (T, D/2, 2), cos and sin: what apply_rope takes
            q, k = apply_rope(q, rope[..., 0], rope[..., 1]), apply_rope(k, rope[..., 0], rope[..., 1])
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=idx.device), diagonal=1)
        layers.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)[0])
    return torch.stack(layers)


def head_statistics(weights):
    """{diagonal, distance, entropy, first_token} of one head's (T, T) weights, means over rows 1..T-1:
      diagonal     share of attention on the token itself or the one before it
      distance     mean distance back (t - j), divided by t: 0 attends to itself, 1 to the first token
      entropy      entropy of the row divided by log(t + 1), its largest possible value: 1 is uniform
      first_token  share of attention on token 0"""
    T = weights.size(0)
    if T < 2:
        raise ValueError("a head needs at least 2 tokens to be classified")
    rows = weights[1:].double()
    t = torch.arange(1, T, dtype=torch.float64)
    j = torch.arange(T, dtype=torch.float64)
    diagonal = rows[torch.arange(T - 1), torch.arange(1, T)] + rows[torch.arange(T - 1), torch.arange(T - 1)]
    distance = ((t[:, None] - j[None, :]).clamp(min=0) * rows).sum(1) / t
    entropy = -(rows * rows.clamp(min=1e-12).log()).sum(1) / (t + 1).log()
    return {"diagonal": float(diagonal.mean()), "distance": float(distance.mean()),
            "entropy": float(entropy.mean()), "first_token": float(rows[:, 0].mean())}


def classify_head(statistics):
    if statistics["entropy"] >= DIFFUSE_MIN_ENTROPY:
        return "diffuse"
    if statistics["diagonal"] >= POSITIONAL_MIN_DIAGONAL:
        return "positional"
    return "long-range"


def classify_heads(weights):
    """[{layer, head, kind, diagonal, distance, entropy, first_token}] for (n_layer, n_head, T, T) weights."""
    heads = []
    for layer in range(weights.size(0)):
        for head in range(weights.size(1)):
            statistics = head_statistics(weights[layer, head])
            heads.append({"layer": layer, "head": head, "kind": classify_head(statistics), **statistics})
    return heads
