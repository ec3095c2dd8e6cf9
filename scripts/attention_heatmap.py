"""
Attention heat-maps for one prompt (seed 004, §9): which earlier tokens each token reads, for one head, all heads of
a layer, or every head of every layer in one figure, with each head classified as positional, long-range or diffuse.

    python scripts/attention_heatmap.py --init_from out/demo-hindi --prompt "एक दिन एक छोटी चिड़िया"
    python scripts/attention_heatmap.py --init_from out/demo-hindi --prompt "एक दिन एक छोटी चिड़िया" --layer 1
    python scripts/attention_heatmap.py --init_from out/demo-english --prompt "Tom gave Sara the ball. Sara" \
        --layer 3 --head 5 --out out/attention-english.png

The weights come from regional_tinystories.attention (recomputed from the model's own projections, QK-norm and
RoPE), the classification too: diffuse (near-uniform rows), positional (at least half the attention on the token
itself or the one before), long-range (peaked further back; attention sinks on the first token among them). The
prompt is encoded as sample.py does, [bos] + prompt. Rows are the attending tokens, columns the tokens attended to.

Written: the PNG (--out) and, beside it, <out>.heads.csv with every head's kind and statistics (also printed).
Tick labels are the tokens' text; Devanagari and Bengali need a font with the script (Debian/Ubuntu:
apt-get install fonts-noto-core, which has Noto Sans Devanagari and Noto Sans Bengali; conda-forge has them as
font-ttf-noto). Without one, the labels would be boxes: the script warns and labels tokens by id instead.
matplotlib draws the letters but does not join conjuncts.
"""
import argparse
import os
import sys
import unicodedata

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from regional_tinystories import checkpoint  # noqa: E402
from regional_tinystories import tokenizer as tk  # noqa: E402
from regional_tinystories.attention import HEAD_KINDS, attention_weights, classify_heads  # noqa: E402
from regional_tinystories.checkpoint import load_model  # noqa: E402
from regional_tinystories.files import atomic_write  # noqa: E402
from regional_tinystories.metrics import markdown_table, write_csv  # noqa: E402

# matplotlib takes each glyph from the first of these fonts that has it
LABEL_FONTS = ("DejaVu Sans", "Noto Sans Devanagari", "Noto Sans Bengali", "Lohit Devanagari", "Lohit Bengali")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init_from", required=True,
                   help="run folder (its ckpt_best.pt), .pt file or hf:OWNER/REPO/FILE.pt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--layer", default="all", help="0-based (negative counts from the last layer), or all")
    p.add_argument("--head", default="all", help="0-based, or all")
    p.add_argument("--out", default="out/attention.png", help="the PNG; the heads' table goes beside it")
    return p.parse_args(argv)


def pick(value, count, what, ckpt_path):
    """The indices chosen by --layer / --head: all of them, or one (a negative layer counts from the last)."""
    if value == "all":
        return list(range(count))
    lowest = -count if what == "layer" else 0
    try:
        index = int(value)
    except ValueError:
        index = None
    if index is None or not lowest <= index < count:
        per_layer = " per layer" if what == "head" else ""
        sys.exit(f"error: --{what} {value}: {ckpt_path} has {count} {what}s{per_layer} (0 to {count - 1}, or all)")
    return [index % count]


def token_labels(tok, ids):
    """Readable text of each token; byte pieces that are part of a character show as their piece name."""
    labels = []
    for i in ids:
        text = tok.decode([i]) if i not in (tok.bos_id, tok.eos_id) else tok.id_to_piece(i)
        if not text.strip() or "\ufffd" in text:
            text = tok.id_to_piece(i)
        labels.append(text.replace("\n", "⏎"))
    return labels


def label_fonts(labels):
    """(installed fonts to draw the labels with, characters none of them has). Devanagari and Bengali fonts that
    matplotlib's font cache misses (it is built once, maybe before they were installed) are added first."""
    known = {f.fname for f in font_manager.fontManager.ttflist}
    for path in font_manager.findSystemFonts():
        if ("Devanagari" in path or "Bengali" in path) and path not in known:
            font_manager.fontManager.addfont(path)
    paths = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    fonts = [name for name in LABEL_FONTS if name in paths]
    covered = set()
    for name in fonts:
        covered |= set(FT2Font(paths[name]).get_charmap())
    needed = {ch for label in labels for ch in label if not ch.isspace() and unicodedata.category(ch)[0] in "LMNPS"}
    return fonts, sorted(ch for ch in needed if ord(ch) not in covered)


def draw(ax, weights, labels, fonts, title, ticks):
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=1)
    n = len(labels)
    if ticks:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7, family=fonts)
        ax.set_yticks(range(n), labels, fontsize=7, family=fonts)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return image


def plot(weights, heads, layers, head_ids, labels, fonts, title, png):
    """One heat-map per chosen (layer, head): a single one with tick labels, or a grid of layers x heads."""
    kinds = {(h["layer"], h["head"]): h["kind"] for h in heads}
    n = len(labels)
    if len(layers) == len(head_ids) == 1:
        size = min(4 + 0.28 * n, 24)
        fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=120)
        image = draw(ax, weights[layers[0], head_ids[0]], labels, fonts, f"{title}\nlayer {layers[0]}, head "
                     f"{head_ids[0]}: {kinds[(layers[0], head_ids[0])]}", ticks=True)
        ax.set_xlabel("attended-to token")
        ax.set_ylabel("attending token")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    else:
        cell = 2.2 if n <= 24 else 3.0
        fig, axes = plt.subplots(len(layers), len(head_ids), figsize=(cell * len(head_ids) + 1, cell * len(layers) + 1),
                                 dpi=110, squeeze=False)
        for row, layer in enumerate(layers):
            for col, head in enumerate(head_ids):
                image = draw(axes[row][col], weights[layer, head], labels, fonts,
                             f"L{layer} H{head}: {kinds[(layer, head)]}", ticks=False)
        fig.suptitle(f"{title}\nrows: layers, columns: heads; each panel: attending token (down) x attended-to "
                     f"token (across), {n} tokens", fontsize=9)
        fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02, label="attention weight")
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        model, tok, ckpt = load_model(args.init_from)
    except (checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    layers = pick(args.layer, model.config.n_layer, "layer", ckpt["path"])
    head_ids = pick(args.head, model.config.n_head, "head", ckpt["path"])
    ids = ([tok.bos_id] + tok.encode(unicodedata.normalize("NFC", args.prompt)))[:model.config.block_size]
    if len(ids) < 2:
        sys.exit("error: --prompt is empty: the heads need at least one token after <bos> to be classified")
    weights = attention_weights(model, torch.tensor([ids]))
    heads = classify_heads(weights)
    labels = token_labels(tok, ids)
    fonts, missing = label_fonts(labels)
    if missing:
        print(f"warning: no installed font has {''.join(missing[:10])!r} (install one with the script, e.g. "
              "apt-get install fonts-noto-core); labelling the tokens by id instead", file=sys.stderr)
        labels = [str(i) for i in ids]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(weights.numpy(), heads, layers, head_ids, labels, fonts, ckpt["path"], args.out)
    chosen = [h for h in heads if h["layer"] in layers and h["head"] in head_ids]
    table_path = os.path.splitext(args.out)[0] + ".heads.csv"
    write_csv(table_path, [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in chosen])
    if len(chosen) == 1:
        row_weights = weights[layers[0], head_ids[0]]
        for i, (label, row) in enumerate(zip(labels, row_weights.tolist())):
            top = max(range(i + 1), key=lambda j: row[j])
            print(f"{i:3d} {label!r:>16} attends most to {top:3d} {labels[top]!r} ({row[top]:.2f})")
    print(markdown_table(["layer", "head", "kind", "diagonal", "distance", "entropy", "first token"],
                         [(h["layer"], h["head"], h["kind"], f"{h['diagonal']:.2f}", f"{h['distance']:.2f}",
                           f"{h['entropy']:.2f}", f"{h['first_token']:.2f}") for h in chosen]))
    counts = {kind: sum(h["kind"] == kind for h in chosen) for kind in HEAD_KINDS}
    print(", ".join(f"{n} {kind}" for kind, n in counts.items()) + f" of {len(chosen)} heads")
    print(f"wrote {args.out} and {table_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
