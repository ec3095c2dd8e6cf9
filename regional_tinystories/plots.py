"""
Loss curves from train.py's log.jsonl, as PNG.
"""
import json

import matplotlib

from regional_tinystories.files import atomic_write

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path):
    train, val = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run: the rest of the log is still good
            if rec.get("type") == "train":
                train.append((rec["tokens"], rec["loss"]))
            elif rec.get("type") == "eval":
                val.append((rec["tokens"], rec["val_loss"]))
    return train, val


def plot_loss_curves(runs, out_png, title="loss"):
    """runs: [(label, path to log.jsonl)]. Train loss thin, validation loss with markers, against tokens seen."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, (label, log_path) in enumerate(runs):
        train, val = read_log(log_path)
        color = f"C{i % 10}"
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.45, linewidth=1, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=color, marker="o", markersize=3, linewidth=1.8, label=f"{label} val")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_write(out_png, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return out_png
