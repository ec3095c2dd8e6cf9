"""
Spectral diagnostics of trained checkpoints' weight matrices with WeightWatcher: a power-law alpha, spectral norm,
stable rank and more for every layer, without any data.

    python scripts/weight_diagnostics.py --init_from out/demo-hindi
    python scripts/weight_diagnostics.py --init_from out/sweep-hindi/L2-H512 out/sweep-hindi/L6-H512 --out_dir out/ww-hindi

For each layer WeightWatcher fits a power law to the eigenvalue spectrum of W^T W (the empirical spectral density):
  alpha            its exponent; WeightWatcher's authors find alpha in [2, 6] for well-trained layers, larger for
                   layers that learned little (a random matrix scores high), below 2 for over-fitted ones
  alpha_weighted   alpha x log10 of the largest eigenvalue
  spectral_norm    the largest eigenvalue of W^T W (the squared largest singular value)
  stable_rank      sum of the eigenvalues / the largest: how many directions carry the weight
  log_norm         log10 of the squared Frobenius norm
  num_pl_spikes    eigenvalues in the power-law tail
With tied embeddings, lm_head is the token embedding (wte) again and is listed once, as wte.

Checkpoints load as every stage loads them (regional_tinystories.checkpoint: weights_only=True, and weights whose
names or shapes disagree with the model are refused in one line), never with strict=False, which would quietly leave
the model at its random initialisation and diagnose that instead.
Written to --out_dir: weight_diagnostics.md (also printed: one summary row per checkpoint), weight_diagnostics.csv
(one row per checkpoint and layer) and weight_diagnostics.png (alpha and spectral norm per layer).
"""
import argparse
import contextlib
import io
import logging
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regional_tinystories import checkpoint, metrics  # noqa: E402
from regional_tinystories import tokenizer as tk  # noqa: E402
from regional_tinystories.checkpoint import load_model  # noqa: E402
from regional_tinystories.cli import add_init_from, resolve_init_from  # noqa: E402
from regional_tinystories.errors import one_line  # noqa: E402
from regional_tinystories.files import atomic_write, write_text_atomic  # noqa: E402

COLUMNS = ("alpha", "alpha_weighted", "spectral_norm", "stable_rank", "log_norm", "num_pl_spikes")
WELL_TRAINED_ALPHA = (2.0, 6.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_init_from(p, "run folders (their ckpt_best.pt) or .pt files")
    p.add_argument("--out_dir", default="out/weight_diagnostics")
    return resolve_init_from(p, p.parse_args(argv))


def layer_metrics(model):
    """[{layer, type, N, M, alpha, ...}] of every matrix WeightWatcher analyses, in model order."""
    import weightwatcher  # slow to import, and chatty: its messages go to a buffer, not the terminal

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        details = weightwatcher.WeightWatcher(model=model).analyze()
    rows = []
    for _, layer in details.iterrows():
        if layer["longname"] == "lm_head" and model.config.tie_weights:
            continue  # the same tensor as wte
        rows.append({"layer": layer["longname"], "type": layer["layer_type"], "N": int(layer["N"]),
                     "M": int(layer["M"]), **{c: float(layer[c]) for c in COLUMNS}})
    return rows


def diagnose(source):
    model, _, ckpt = load_model(source)
    try:
        layers = layer_metrics(model)
    except Exception as e:  # a fit WeightWatcher cannot make: one line, not its traceback
        raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: WeightWatcher failed ({one_line(e)})") from None
    return ckpt["path"], model.num_params(), layers


def summary_row(path, params, layers):
    alphas = np.array([layer["alpha"] for layer in layers])
    low, high = WELL_TRAINED_ALPHA
    return {"checkpoint": path, "params": params, "layers": len(layers), "mean_alpha": float(alphas.mean()),
            "layers_outside_2_6": int(np.sum((alphas < low) | (alphas > high))),
            "mean_log_spectral_norm": float(np.mean([np.log10(layer["spectral_norm"]) for layer in layers])),
            "mean_stable_rank": float(np.mean([layer["stable_rank"] for layer in layers]))}


def report(summaries):
    md = ("## Weight diagnostics (WeightWatcher)\n\nalpha: power-law exponent of each layer's eigenvalue spectrum; "
          f"well-trained layers lie in [{WELL_TRAINED_ALPHA[0]:g}, {WELL_TRAINED_ALPHA[1]:g}].\n\n")
    md += metrics.markdown_table(
        ["checkpoint", "params", "layers", "mean alpha", "layers with alpha outside [2, 6]", "mean log10 spectral norm",
         "mean stable rank"],
        [(f"`{s['checkpoint']}`", metrics.fmt(s["params"]), s["layers"], metrics.fmt(s["mean_alpha"], 2),
          s["layers_outside_2_6"], metrics.fmt(s["mean_log_spectral_norm"], 2), metrics.fmt(s["mean_stable_rank"], 1))
         for s in summaries])
    return md


def plot(results, png):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7, 0.35 * max(len(r[2]) for r in results)), 7), dpi=120,
                                      sharex=True)
    top.axhspan(*WELL_TRAINED_ALPHA, color="green", alpha=0.08, label="alpha in [2, 6]")
    for i, (path, _, layers) in enumerate(results):
        x = range(len(layers))
        label = metrics.run_name(path)
        top.plot(x, [layer["alpha"] for layer in layers], marker="o", color=f"C{i % 10}", label=label)
        bottom.plot(x, [layer["spectral_norm"] for layer in layers], marker="o", color=f"C{i % 10}", label=label)
    longest = max((r[2] for r in results), key=len)
    bottom.set_xticks(range(len(longest)), [layer["layer"] for layer in longest], rotation=90, fontsize=7)
    top.set_ylabel("alpha")
    bottom.set_ylabel("spectral norm")
    bottom.set_yscale("log")
    top.legend(fontsize=7)
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    top.set_title("WeightWatcher layer metrics", fontsize=10)
    fig.tight_layout()
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        results = [diagnose(source) for source in args.init_from]
    except (checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    summaries = [summary_row(*result) for result in results]
    os.makedirs(args.out_dir, exist_ok=True)
    md = report(summaries)
    write_text_atomic(os.path.join(args.out_dir, "weight_diagnostics.md"), md)
    metrics.write_csv(os.path.join(args.out_dir, "weight_diagnostics.csv"),
                      [{"checkpoint": path, **layer} for path, _, layers in results for layer in layers])
    plot(results, os.path.join(args.out_dir, "weight_diagnostics.png"))
    print(md)
    print(f"wrote {args.out_dir}/weight_diagnostics.md, .csv, .png", file=sys.stderr)


if __name__ == "__main__":
    main()
