"""
Turn judge ratings (make_requests.py evaluate output, or the original Regional-TinyStories' eval-<model>.json files)
into tables, a stats file and figures.

    python scripts/aggregate_ratings.py ratings/hindi --out results/hindi-ratings

writes
  results/hindi-ratings.md         one row per model, mean ± 95% CI per quality (like Table 1 of the original
                                   paper), with the original's "true overall" (mean of the five sub-scores) beside
                                   the judge's overall; then n, mean, median and SD per model and quality
  results/hindi-ratings.stats.csv  the same statistics, one row per model and quality
  results/hindi-ratings.png        grouped bars with the 95% intervals
  results/hindi-ratings.violin.png the distribution of each quality's scores per model (violins, mean and median marked)
  results/hindi-ratings.hist.png   histograms of each quality's scores per model, one bin per score

The 95% CI is the Student-t interval of the mean (regional_tinystories.metrics, shared with results_table.py); a
model with a single rating shows its score alone. Files named eval-<model>.json hold the original's lists of score
dicts without a model field: the model is the <model> of the file name.
"""
import argparse
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regional_tinystories.files import DataError, atomic_write, write_text_atomic  # noqa: E402
from regional_tinystories.metrics import fmt, markdown_table, mean_ci95, read_ratings, score_summary  # noqa: E402
from regional_tinystories.replies import SCORE_FIELDS  # noqa: E402

FIELDS = (*SCORE_FIELDS, "true_overall")
COLUMN_TITLES = {"context_awareness": "Context awareness", "completeness": "Completeness", "grammar": "Grammar",
                 "fluency": "Fluency", "creativity": "Creativity", "overall": "Overall",
                 "true_overall": "True overall"}


def ratings_table(scores, judges):
    rows = []
    for model in sorted(scores):
        cells = [f"{mean:.2f}" + ("" if math.isnan(ci) else f" ± {ci:.2f}")
                 for mean, ci in (mean_ci95(scores[model][f]) for f in FIELDS)]
        rows.append([model, *cells, str(len(scores[model]["overall"]))])
    table = markdown_table(["Model", *(COLUMN_TITLES[f] for f in FIELDS), "n"], rows)
    return (table + f"\nMean ± 95% CI of the judge's 1–10 scores; judged by {', '.join(sorted(judges))}. True overall "
            "is the mean of the five sub-scores (the original Regional-TinyStories' figure), beside the judge's own "
            "overall.\n")


def stats_rows(scores):
    return [{"model": model, "metric": field, **score_summary(scores[model][field])}
            for model in sorted(scores) for field in FIELDS]


def stats_table(rows):
    return markdown_table(["Model", "Quality", "n", "mean", "median", "SD"],
                          [[r["model"], COLUMN_TITLES[r["metric"]], r["n"], fmt(r["mean"], 2), fmt(r["median"], 2),
                            fmt(r["sd"], 2)] for r in rows])


def save(fig, path):
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def bar_chart(scores, path):
    models = sorted(scores)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, model in enumerate(models):
        stats = [mean_ci95(scores[model][f]) for f in FIELDS]
        positions = [x + (i - (len(models) - 1) / 2) * width for x in range(len(FIELDS))]
        ax.bar(positions, [mean for mean, _ in stats], width, yerr=[0 if math.isnan(ci) else ci for _, ci in stats],
               capsize=3, label=model)
    ax.set_xticks(range(len(FIELDS)), [COLUMN_TITLES[f] for f in FIELDS])
    ax.set_ylim(0, 11.5)  # headroom above 10 for the legend
    ax.set_ylabel("score (mean ± 95% CI)")
    ax.legend(fontsize="small", loc="upper center", ncol=min(len(models), 4))
    fig.tight_layout()
    save(fig, path)


def distribution_figure(scores, path, kind):
    """One panel per quality; in each, a violin (kind='violin') or a histogram (kind='hist') per model."""
    models = sorted(scores)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for ax, field in zip(axes.flat, FIELDS):
        for i, model in enumerate(models):
            values = np.asarray(scores[model][field], dtype=np.float64)
            color = f"C{i % 10}"
            if kind == "violin":
                if len(values) > 1 and values.std() > 0:
                    parts = ax.violinplot([values], positions=[i], showextrema=False)
                    for body in parts["bodies"]:
                        body.set_facecolor(color)
                ax.hlines(values.mean(), i - 0.3, i + 0.3, color="red", linestyle="--",
                          label="mean" if i == 0 else None)
                ax.hlines(np.median(values), i - 0.3, i + 0.3, color="green", label="median" if i == 0 else None)
            else:
                # one bin per score; true overall (a mean of five scores) in half steps
                bins = np.arange(0.5, 11, 1) if field != "true_overall" else np.arange(0.75, 10.8, 0.5)
                ax.hist(values, bins=bins, alpha=0.5,
                        color=color, label=f"{model} (mean {values.mean():.2f})")
        ax.set_title(COLUMN_TITLES[field], fontsize=10)
        if kind == "violin":
            ax.set_xticks(range(len(models)), models, rotation=20, fontsize=7)
            ax.set_ylim(0.5, 10.5)
            ax.set_ylabel("score")
        else:
            ax.set_xlim(0.5, 10.5)
            ax.set_xlabel("score")
            ax.set_ylabel("ratings")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes.flat[-1].axis("off")
    fig.suptitle("Distribution of the judge's scores " + ("(violins)" if kind == "violin" else "(histograms)"))
    fig.tight_layout()
    save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ratings", nargs="+", help="rating files (JSONL/JSON) or folders of them")
    parser.add_argument("--out", required=True,
                        help="output path without extension: writes OUT.md, OUT.stats.csv and OUT{,.violin,.hist}.png")
    args = parser.parse_args(argv)
    try:
        scores, judges = read_ratings(args.ratings)
    except DataError as e:
        sys.exit(f"error: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = stats_rows(scores)
    table = ratings_table(scores, judges)
    write_text_atomic(args.out + ".md", table + "\n## Per quality\n\n" + stats_table(rows))
    with atomic_write(args.out + ".stats.csv") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    bar_chart(scores, args.out + ".png")
    distribution_figure(scores, args.out + ".violin.png", "violin")
    distribution_figure(scores, args.out + ".hist.png", "hist")
    print(table)
    print(f"wrote {args.out}.md, {args.out}.stats.csv, {args.out}.png, {args.out}.violin.png, {args.out}.hist.png")


if __name__ == "__main__":
    main()
