"""
Turn a folder of judge ratings (make_requests.py evaluate output) into a Markdown table and a bar chart.

    python scripts/aggregate_ratings.py ratings/hindi --out results/hindi-ratings

writes results/hindi-ratings.md (one row per model, mean ± 95% CI per quality, like Table 1 of the
seed paper) and results/hindi-ratings.png (grouped bars with the same intervals).

The 95% CI is the Student-t interval of the mean (scripts/analysis.py, shared with results_table.py);
a model with a single rating shows its score alone.
"""
import argparse
import math
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "prompting"))
from analysis import mean_ci95  # noqa: E402  (Student-t intervals, as in results_table.py)
from jsonl_shards import DataError, input_files, read_input_records  # noqa: E402
from reply_parsing import SCORE_FIELDS  # noqa: E402

COLUMN_TITLES = {"context_awareness": "Context awareness", "completeness": "Completeness", "grammar": "Grammar",
                 "fluency": "Fluency", "creativity": "Creativity", "overall": "Overall"}


def read_ratings(paths):
    """({model: {field: [scores]}}, {judges}) from rating files and folders of them."""
    scores = defaultdict(lambda: defaultdict(list))
    judges = set()
    for file in input_files(paths):
        for location, record in read_input_records(file):
            if "model" not in record:
                raise DataError(f"{location}: rating has no 'model'")
            for field in SCORE_FIELDS:
                value = record.get(field)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10:
                    raise DataError(f"{location}: {field} is {value!r}, not a score from 1 to 10")
                scores[record["model"]][field].append(value)
            judges.add(str(record.get("judge", "unknown judge")))
    return scores, judges


def markdown_table(scores, judges):
    header = ["Model", *(COLUMN_TITLES[f] for f in SCORE_FIELDS), "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in sorted(scores):
        cells = [f"{mean:.2f}" + ("" if math.isnan(ci) else f" ± {ci:.2f}")
                 for mean, ci in (mean_ci95(scores[model][f]) for f in SCORE_FIELDS)]
        lines.append("| " + " | ".join([model, *cells, str(len(scores[model]["overall"]))]) + " |")
    caption = (f"Mean ± 95% CI of the judge's 1–10 scores; judged by {', '.join(sorted(judges))}.")
    return "\n".join(lines) + "\n\n" + caption + "\n"


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
    table = markdown_table(scores, judges)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    bar_chart(scores, args.out + ".png")
    print(table)
    print(f"wrote {args.out}.md and {args.out}.png")


if __name__ == "__main__":
    main()
