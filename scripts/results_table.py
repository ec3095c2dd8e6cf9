"""
Collect training runs, judge ratings and automatic metrics into the seed's results tables and plots.

    python scripts/results_table.py --runs out/ --out_dir out/results
    python scripts/results_table.py --runs out/hindi-64x2 out/hindi-512x6 --ratings out/ratings \
        --metrics out/metrics-hindi/story_metrics.json out/bpb/eval_bpb.json --out_dir out/results

--runs: run folders of train.py, or folders searched for them (a run folder holds summary.json, or at least
ckpt_best.pt / ckpt_last.pt when training was cut short). --ratings: the judge's JSONL files
(prompting/make_requests.py evaluate), or the folders they were written to. --metrics: story_metrics.json
(story_metrics.py) and eval_bpb.json (eval_bpb.py) files, or folders searched for them. Ratings and metrics name a
checkpoint path in their "model" field; they belong to the run whose folder name matches the checkpoint's folder
(out/x/ckpt_best.pt -> run "x").

Written to --out_dir:
  results.md           one table per language: hidden size, layers, parameters, tokens seen, val loss, val bits per
                       byte, judge scores (mean ± 95% CI over the rated stories) and automatic metrics; columns with no
                       data are left out
  results.csv          the same rows, every field
  score_vs_params.png  val bits per byte, and the judge's overall score where rated, against parameters
  loss_<language>.png  the loss curves of the language's runs overlaid
The language of a run is the one its dataset name mentions (demo-hindi -> hindi), else "other".
"""
import argparse
import glob
import json
import math
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from regional_tinystories import checkpoint
from regional_tinystories import metrics
from regional_tinystories.files import DataError
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.plots import plot_loss_curves
from regional_tinystories.replies import SCORE_FIELDS

CHECKPOINT_NAMES = ("ckpt_best.pt", "ckpt_last.pt")
SUMMARY_FIELDS = ("dataset", "recipe", "n_embd", "n_layer", "n_head", "params", "tokenizer", "tokens", "best_val_loss",
                  "best_val_bpb")
STORY_METRICS = (("distinct_2", "distinct-2", False), ("max_rouge2_mean", "max ROUGE-2", False),
                 ("script_purity", "script purity %", True), ("lexicon_hit_rate", "lexicon hit %", True),
                 ("eos_share", "ends with eos %", True),
                 ("memorisation_rouge2_precision", "memorisation ROUGE-2 P", False))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run folders, or folders to search for them")
    p.add_argument("--ratings", nargs="*", default=[], help="judge rating .jsonl files or folders of them")
    p.add_argument("--metrics", nargs="*", default=[], help="story_metrics.json / eval_bpb.json files or folders")
    p.add_argument("--out_dir", default="out/results")
    return p.parse_args(argv)


def find_runs(paths):
    runs = []
    for top in paths:
        if not os.path.isdir(top):
            raise DataError(f"{top}: no such run folder")
        for folder, _, files in sorted(os.walk(top)):
            if "summary.json" in files or any(name in files for name in CHECKPOINT_NAMES):
                runs.append(folder)
    if not runs:
        raise DataError(f"{', '.join(paths)}: no run folder (summary.json or {' / '.join(CHECKPOINT_NAMES)}) found")
    return runs


def read_run(folder):
    """A run's architecture and validation results, from summary.json, else from its checkpoint."""
    path = os.path.join(folder, "summary.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                s = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        missing = [field for field in SUMMARY_FIELDS if field not in s]
        if missing:
            raise DataError(f"{path}: no field {missing[0]!r}; is it train.py's summary.json?")
        run = {"dataset": s["dataset"], "recipe": s["recipe"], "n_embd": s["n_embd"], "n_layer": s["n_layer"],
               "n_head": s["n_head"], "params": s["params"], "tokenizer": s["tokenizer"], "tokens": s["tokens"],
               "val_loss": s["best_val_loss"], "val_bpb": s["best_val_bpb"]}
    else:  # training stopped before writing summary.json: the checkpoint has the same facts
        ckpt = checkpoint.load(folder)
        args = ckpt["model_args"]
        with torch.device("meta"):  # counts parameters without allocating them
            params = GPT(ModelConfig(**args)).num_params()
        run = {"dataset": ckpt.get("dataset", ""), "recipe": args["recipe"], "n_embd": args["n_embd"],
               "n_layer": args["n_layer"], "n_head": args["n_head"], "params": params,
               "tokenizer": ckpt.get("meta", {}).get("tokenizer_name", ""), "tokens": ckpt.get("tokens_seen"),
               "val_loss": ckpt.get("val_loss"), "val_bpb": ckpt.get("val_bpb")}
    log = os.path.join(folder, "log.jsonl")
    return {"run": metrics.run_name(folder), "language": metrics.language_in(run["dataset"] or folder) or "other",
            **run, "log": log if os.path.isfile(log) else None}


def files_in(paths, pattern, recursive):
    """Files given directly, plus the files matching pattern inside given folders."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(glob.glob(os.path.join(path, "**", pattern) if recursive else os.path.join(path, pattern),
                                      recursive=recursive))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


def read_ratings(paths):
    """{run: {score field: [scores]}}: the shared rating reader, with each rated model named by its run."""
    by_run = defaultdict(lambda: defaultdict(list))
    if paths:
        for model, fields in metrics.read_ratings(paths)[0].items():
            for field, values in fields.items():
                by_run[metrics.run_name(model)][field] += values
    return by_run


def read_metrics(paths):
    """{run: {field: value}} merged from story_metrics.json and eval_bpb.json rows."""
    merged = defaultdict(dict)
    for path in files_in(paths, "*.json", recursive=True):
        if os.path.basename(path) not in ("story_metrics.json", "eval_bpb.json"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        needed = ("model", "bpb") if os.path.basename(path) == "eval_bpb.json" else ("model",)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in needed) for r in rows):
            raise DataError(f"{path}: expected a list of rows with fields {', '.join(needed)}")
        for row in rows:
            values = {"heldout_bpb": row["bpb"]} if os.path.basename(path) == "eval_bpb.json" else row
            merged[metrics.run_name(row["model"])].update({k: v for k, v in values.items() if v is not None})
    return merged


def collect(args):
    runs = [read_run(folder) for folder in find_runs(args.runs)]
    ratings, story_metrics = read_ratings(args.ratings), read_metrics(args.metrics)
    for run in runs:
        for field in SCORE_FIELDS:
            run[f"{field}_mean"], run[f"{field}_ci95"] = metrics.mean_ci95(ratings[run["run"]][field])
        run["ratings"] = len(ratings[run["run"]]["overall"])
        for field, _, _ in STORY_METRICS:
            run[field] = story_metrics[run["run"]].get(field)
        run["heldout_bpb"] = story_metrics[run["run"]].get("heldout_bpb")
    return sorted(runs, key=lambda r: (r["language"], r["params"], r["run"]))


def mean_ci(run, field):
    """'7.10 ± 0.32'; the mean alone for a single rating; '—' when not rated."""
    mean, half = run[f"{field}_mean"], run[f"{field}_ci95"]
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f}" if math.isnan(half) else f"{mean:.2f} ± {half:.2f}"


def metric_cell(value, percent):
    if value is None:
        return "—"
    return metrics.fmt(100 * value, 1) if percent else metrics.fmt(value)


def language_table(runs):
    fmt = metrics.fmt
    columns = [("run", lambda r: f"`{r['run']}`"), ("recipe", lambda r: r["recipe"]),
               ("hidden", lambda r: fmt(r["n_embd"])), ("layers", lambda r: fmt(r["n_layer"])),
               ("heads", lambda r: fmt(r["n_head"])), ("params (M)", lambda r: fmt(r["params"] / 1e6, 2)),
               ("tokenizer", lambda r: f"`{r['tokenizer']}`"), ("tokens seen", lambda r: fmt(r["tokens"])),
               ("val loss (nats/token)", lambda r: fmt(r["val_loss"])), ("val bpb", lambda r: fmt(r["val_bpb"], 4)),
               ("held-out bpb (eval_bpb)", lambda r: fmt(r["heldout_bpb"], 4)),
               ("ratings", lambda r: fmt(r["ratings"]) if r["ratings"] else "—")]
    columns += [(field.replace("_", " "), lambda r, f=field: mean_ci(r, f)) for field in SCORE_FIELDS]
    columns += [(title, lambda r, f=field, p=percent: metric_cell(r[f], p)) for field, title, percent in STORY_METRICS]
    cells = [[cell(r) for _, cell in columns] for r in runs]
    keep = [i for i in range(len(columns)) if any(row[i] != "—" for row in cells)]  # drop columns with no data
    return metrics.markdown_table([columns[i][0] for i in keep], [[row[i] for i in keep] for row in cells])


def report(runs):
    md = "# Results\n\n"
    for language in dict.fromkeys(r["language"] for r in runs):
        group = [r for r in runs if r["language"] == language]
        md += f"## {language}\n\n" + language_table(group)
        if len({r["tokenizer"] for r in group}) > 1:
            md += ("\nThese runs use different tokenizers: compare them by bits per byte, not by loss per token "
                   "(a longer token carries more text and so costs more nats).\n")
        md += "\n"
    return md + ("Judge scores are mean ± half-width of the 95% confidence interval (Student t) over the rated "
                 "stories; val loss and val bpb are train.py's estimates at the best checkpoint.\n")


def plot_vs_params(runs, png):
    panels = [("val_bpb", "val bits per byte")]
    if any(r["ratings"] for r in runs):
        panels.append(("overall", "judge overall score (mean ± 95% CI)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), dpi=120, squeeze=False)
    for ax, (field, title) in zip(axes[0], panels):
        for i, language in enumerate(dict.fromkeys(r["language"] for r in runs)):
            group = [r for r in runs if r["language"] == language and (r["ratings"] if field == "overall"
                                                                      else r[field] is not None)]
            x = [r["params"] for r in group]
            if field == "overall":
                ax.errorbar(x, [r["overall_mean"] for r in group], yerr=[r["overall_ci95"] for r in group],
                            fmt="o", capsize=3, color=f"C{i % 10}", label=language)
            else:
                ax.plot(x, [r[field] for r in group], "o", color=f"C{i % 10}", label=language)
            for r in group:
                y = r["overall_mean"] if field == "overall" else r[field]
                ax.annotate(r["run"], (r["params"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = collect(args)
    except (DataError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    md = report(runs)
    with open(os.path.join(args.out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(md)
    metrics.write_csv(os.path.join(args.out_dir, "results.csv"), [metrics.without_nan(r) for r in runs])
    plot_vs_params(runs, os.path.join(args.out_dir, "score_vs_params.png"))
    for language in dict.fromkeys(r["language"] for r in runs):
        logs = [(r["run"], r["log"]) for r in runs if r["language"] == language and r["log"]]
        if logs:
            plot_loss_curves(logs, os.path.join(args.out_dir, f"loss_{language}.png"), title=f"{language}: loss")
    print(md)
    print(f"wrote {args.out_dir}/results.md, results.csv, score_vs_params.png, loss_<language>.png", file=sys.stderr)


if __name__ == "__main__":
    main()
