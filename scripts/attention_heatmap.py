"""
Attention heat-map of one head of one layer for one prompt (seed 004, §9): which earlier tokens each token reads.

    python scripts/attention_heatmap.py --init_from out/demo-hindi --prompt "एक दिन एक छोटी चिड़िया" --layer 1 --head 0
    python scripts/attention_heatmap.py --init_from out/demo-english --prompt "Tom gave Sara the ball. Sara" \
        --layer 3 --head 5 --out out/attention-english.png

The model attends with F.scaled_dot_product_attention, which never returns the attention weights. A forward pre-hook
on the chosen layer's attention module captures its input (and the RoPE tables), and the weights are recomputed
from it with the module's own projections, QK-norm and model.py's apply_rope: softmax(q k^T / sqrt(d)) under the
causal mask. The prompt is encoded as sample.py does, [bos] + prompt. Rows are the attending tokens, columns the
tokens attended to. Indic labels need a font with the script (Debian: fonts-lohit-deva, fonts-lohit-beng-bengali);
matplotlib draws the letters but does not join conjuncts.
"""
import argparse
import math
import os
import sys
import unicodedata

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from regional_tinystories import checkpoint
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.model import apply_rope

# matplotlib takes each glyph from the first of these fonts that has it
LABEL_FONTS = ("DejaVu Sans", "Lohit Devanagari", "Lohit Bengali", "Noto Sans Devanagari", "Noto Sans Bengali")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init_from", required=True,
                   help="run folder (its ckpt_best.pt), .pt file or hf:OWNER/REPO/FILE.pt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--layer", type=int, default=0, help="0-based; negative counts from the last layer")
    p.add_argument("--head", type=int, default=0, help="0-based")
    p.add_argument("--out", default="out/attention.png")
    return p.parse_args(argv)


@torch.no_grad()
def attention_weights(model, idx, layer, head):
    """(T, T) attention probabilities of one head for the token ids idx (1, T)."""
    attn = model.blocks[layer].attn
    seen = {}
    # Block calls attn(ln_1(x), rope, cache): keep what the attention module was given
    handle = attn.register_forward_pre_hook(lambda module, args: seen.update(x=args[0], rope=args[1]))
    try:
        model(idx)
    finally:
        handle.remove()
    x = seen["x"]
    B, T, C = x.shape
    q, k, _ = attn.c_attn(x).split(C, dim=2)
    q, k = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k))  # (B, H, T, D)
    if attn.q_norm is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    if attn.use_rope:
        q, k = apply_rope(q, *seen["rope"]), apply_rope(k, *seen["rope"])
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=idx.device), diagonal=1)
    return torch.softmax(scores.float().masked_fill(future, float("-inf")), dim=-1)[0, head]


def token_labels(tok, ids):
    """Readable text of each token; byte pieces that are part of a character show as their piece name."""
    labels = []
    for i in ids:
        text = tok.decode([i]) if i not in (tok.bos_id, tok.eos_id) else tok.id_to_piece(i)
        if not text.strip() or "\ufffd" in text:
            text = tok.id_to_piece(i)
        labels.append(text.replace("\n", "⏎"))
    return labels


def plot(weights, labels, title, png):
    installed = {f.name for f in font_manager.fontManager.ttflist}
    fonts = [name for name in LABEL_FONTS if name in installed]
    n = len(labels)
    size = min(4 + 0.28 * n, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=120)
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8, family=fonts)
    ax.set_yticks(range(n), labels, fontsize=8, family=fonts)
    ax.set_xlabel("attended-to token")
    ax.set_ylabel("attending token")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        model, tok, ckpt = load_model(args.init_from)
    except (checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not -n_layer <= args.layer < n_layer:
        sys.exit(f"error: --layer {args.layer}: {ckpt['path']} has {n_layer} layers (0 to {n_layer - 1})")
    if not 0 <= args.head < n_head:
        sys.exit(f"error: --head {args.head}: {ckpt['path']} has {n_head} heads per layer (0 to {n_head - 1})")
    layer = args.layer % n_layer
    ids = ([tok.bos_id] + tok.encode(unicodedata.normalize("NFC", args.prompt)))[:model.config.block_size]
    weights = attention_weights(model, torch.tensor([ids]), layer, args.head)
    labels = token_labels(tok, ids)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(weights.numpy(), labels, f"{ckpt['path']}\nlayer {layer}, head {args.head}", args.out)
    for i, (label, row) in enumerate(zip(labels, weights.tolist())):
        top = max(range(i + 1), key=lambda j: row[j])
        print(f"{i:3d} {label!r:>16} attends most to {top:3d} {labels[top]!r} ({row[top]:.2f})")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
