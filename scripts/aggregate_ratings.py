"""
Turn a folder of judge ratings (make_requests.py evaluate output) into a Markdown table and a bar chart.

    python scripts/aggregate_ratings.py ratings/hindi --out results/hindi-ratings

writes results/hindi-ratings.md (one row per model, mean ± 95% CI per quality, like Table 1 of the
seed paper) and results/hindi-ratings.png (grouped bars with the same intervals).

The 95% CI is the Student-t interval of the mean (regional_tinystories.metrics, shared with results_table.py);
a model with a single rating shows its score alone.
"""
import argparse
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

from regional_tinystories.files import DataError
from regional_tinystories.metrics import markdown_table, mean_ci95, read_ratings
from regional_tinystories.replies import SCORE_FIELDS

COLUMN_TITLES = {"context_awareness": "Context awareness", "completeness": "Completeness", "grammar": "Grammar",
                 "fluency": "Fluency", "creativity": "Creativity", "overall": "Overall"}


def ratings_table(scores, judges):
    rows = []
    for model in sorted(scores):
        cells = [f"{mean:.2f}" + ("" if math.isnan(ci) else f" ± {ci:.2f}")
                 for mean, ci in (mean_ci95(scores[model][f]) for f in SCORE_FIELDS)]
        rows.append([model, *cells, str(len(scores[model]["overall"]))])
    table = markdown_table(["Model", *(COLUMN_TITLES[f] for f in SCORE_FIELDS), "n"], rows)
    return table + f"\nMean ± 95% CI of the judge's 1–10 scores; judged by {', '.join(sorted(judges))}.\n"


def bar_chart(scores, path):
    models = sorted(scores)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, model in enumerate(models):
        stats = [mean_ci95(scores[model][f]) for f in SCORE_FIELDS]
        positions = [x + (i - (len(models) - 1) / 2) * width for x in range(len(SCORE_FIELDS))]
        ax.bar(positions, [mean for mean, _ in stats], width, yerr=[0 if math.isnan(ci) else ci for _, ci in stats],
               capsize=3, label=model)
    ax.set_xticks(range(len(SCORE_FIELDS)), [COLUMN_TITLES[f] for f in SCORE_FIELDS])
    ax.set_ylim(0, 11.5)  # headroom above 10 for the legend
    ax.set_ylabel("score (mean ± 95% CI)")
    ax.legend(fontsize="small", loc="upper center", ncol=min(len(models), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ratings", nargs="+", help="rating files (JSONL/JSON) or folders of them")
    parser.add_argument("--out", required=True, help="output path without extension: writes OUT.md and OUT.png")
    args = parser.parse_args(argv)
    try:
        scores, judges = read_ratings(args.ratings)
    except DataError as e:
        sys.exit(f"error: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    table = ratings_table(scores, judges)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    bar_chart(scores, args.out + ".png")
    print(table)
    print(f"wrote {args.out}.md and {args.out}.png")


if __name__ == "__main__":
    main()
