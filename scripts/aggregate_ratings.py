"""
Turn judge ratings (make_requests.py evaluate output, of any rubric, or the original Regional-TinyStories'
eval-<model>.json files) into tables, a stats file and figures.

    python scripts/aggregate_ratings.py ratings/hindi --out results/hindi-ratings

writes
  results/hindi-ratings.md         one row per model, mean ± 95% CI per quality (like Table 1 of the original
                                   paper), with the original's "true overall" (mean of the five sub-scores) beside
                                   the judge's overall for the seed rubric; then n, mean, median and SD per model
                                   and quality
  results/hindi-ratings.stats.csv  the same statistics, one row per model, rubric and quality
  results/hindi-ratings.png        grouped bars with the 95% intervals
  results/hindi-ratings.violin.png the distribution of each quality's scores per model (violins, mean and median marked)
  results/hindi-ratings.hist.png   histograms of each quality's scores per model, one bin per score

The qualities are those the ratings hold: a rating names its rubric ("rubric"; none: the seed rubric's six scores),
and ratings are grouped by rubric and model, each rubric with its own table (under a heading of its own when the
ratings hold more than one) and its own bars. The 95% CI is the Student-t interval of the mean
(regional_tinystories.metrics, shared with results_table.py); a model with a single rating shows its score alone.
Files named eval-<model>.json hold the original's lists of score dicts without a model field: the model is the
<model> of the file name.
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regional_tinystories.files import DataError, atomic_write, write_text_atomic  # noqa: E402
from regional_tinystories.metrics import (  # noqa: E402
    fmt,
    markdown_table,
    mean_ci95,
    read_rating_records,
    score_summary,
)


def title(field):
    """'context_awareness' -> 'Context awareness'."""
    return field.replace("_", " ").capitalize()


def group_ratings(ratings):
    """{rubric: {"fields", "scores": {model: {field: [scores]}}, "judges"}}, the seed rubric first, then by name.
    The seed rubric's fields end with the original's true overall. DataError for a rating whose scores are not those
    of the earlier ratings of its rubric."""
    groups = {}
    for rating in ratings:
        rubric = rating["rubric"]
        fields = (*rating["fields"], "true_overall") if rubric == "seed" else tuple(rating["fields"])
        group = groups.setdefault(rubric, {"fields": fields, "scores": defaultdict(lambda: defaultdict(list)),
                                           "judges": set()})
        if set(fields) != set(group["fields"]):
            raise DataError(f"{rating['location']}: scores {', '.join(fields)}, where the other ratings of the rubric "
                            f"{rubric!r} have {', '.join(group['fields'])}")
        for field in group["fields"]:
            group["scores"][rating["model"]][field].append(rating[field])
        group["judges"].add(rating["judge"])
    return dict(sorted(groups.items(), key=lambda item: (item[0] != "seed", item[0])))


def ratings_table(rubric, group):
    scores, fields = group["scores"], group["fields"]
    rows = []
    for model in sorted(scores):
        cells = [f"{mean:.2f}" + ("" if math.isnan(ci) else f" ± {ci:.2f}")
                 for mean, ci in (mean_ci95(scores[model][f]) for f in fields)]
        rows.append([model, *cells, str(len(scores[model][fields[0]]))])
    table = markdown_table(["Model", *map(title, fields), "n"], rows)
    note = (f"\nMean ± 95% CI of the judge's 1–10 scores (rubric {rubric}); judged by "
            f"{', '.join(sorted(group['judges']))}.")
    if "true_overall" in fields:
        note += (" True overall is the mean of the five sub-scores (the original Regional-TinyStories' figure), "
                 "beside the judge's own overall.")
    return table + note + "\n"


def stats_rows(groups):
    return [{"model": model, "rubric": rubric, "metric": field, **score_summary(group["scores"][model][field])}
            for rubric, group in groups.items() for model in sorted(group["scores"]) for field in group["fields"]]


def stats_table(rows):
    return markdown_table(["Model", "Quality", "n", "mean", "median", "SD"],
                          [[r["model"], title(r["metric"]), r["n"], fmt(r["mean"], 2), fmt(r["median"], 2),
                            fmt(r["sd"], 2)] for r in rows])


def markdown_report(groups, rows):
    """Each rubric's table and per-quality statistics; a heading per rubric when there is more than one."""
    several = len(groups) > 1
    sections = []
    for rubric, group in groups.items():
        heading = f"## Rubric: {rubric}\n\n" if several else ""
        per_quality = stats_table([row for row in rows if row["rubric"] == rubric])
        sections.append(heading + ratings_table(rubric, group) + f"\n{'###' if several else '##'} Per quality\n\n"
                        + per_quality)
    return "\n".join(sections)


def save(fig, path):
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def model_colors(groups):
    """One colour per model, the same in every panel."""
    models = sorted({model for group in groups.values() for model in group["scores"]})
    return {model: f"C{i % 10}" for i, model in enumerate(models)}


def bar_chart(groups, path):
    """One row of grouped bars per rubric."""
    colors = model_colors(groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 4.5 * len(groups)), squeeze=False)
    for ax, (rubric, group) in zip(axes[:, 0], groups.items()):
        scores, fields = group["scores"], group["fields"]
        models = sorted(scores)
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            stats = [mean_ci95(scores[model][f]) for f in fields]
            positions = [x + (i - (len(models) - 1) / 2) * width for x in range(len(fields))]
            ax.bar(positions, [mean for mean, _ in stats], width,
                   yerr=[0 if math.isnan(ci) else ci for _, ci in stats], capsize=3, label=model, color=colors[model])
        ax.set_xticks(range(len(fields)), [title(f) for f in fields])
        ax.set_ylim(0, 11.5)  # headroom above 10 for the legend
        ax.set_ylabel("score (mean ± 95% CI)")
        ax.legend(fontsize="small", loc="upper center", ncol=min(len(models), 4))
        if len(groups) > 1:
            ax.set_title(f"Rubric: {rubric}", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def distribution_figure(groups, path, kind):
    """One panel per rubric and quality; in each, a violin (kind='violin') or a histogram (kind='hist') per model."""
    colors = model_colors(groups)
    panels = [(rubric, field, group["scores"]) for rubric, group in groups.items() for field in group["fields"]]
    rows = math.ceil(len(panels) / 4)
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.75 * rows), squeeze=False)
    for ax, (rubric, field, scores) in zip(axes.flat, panels):
        models = sorted(scores)
        for i, model in enumerate(models):
            values = np.asarray(scores[model][field], dtype=np.float64)
            color = colors[model]
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
        ax.set_title(title(field) if len(groups) == 1 else f"{rubric}: {title(field)}", fontsize=10)
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
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
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
        groups = group_ratings(read_rating_records(args.ratings, any_rubric=True))
    except DataError as e:
        sys.exit(f"error: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows = stats_rows(groups)
    write_text_atomic(args.out + ".md", markdown_report(groups, rows))
    with atomic_write(args.out + ".stats.csv") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    bar_chart(groups, args.out + ".png")
    distribution_figure(groups, args.out + ".violin.png", "violin")
    distribution_figure(groups, args.out + ".hist.png", "hist")
    print("\n".join(ratings_table(rubric, group) for rubric, group in groups.items()))
    print(f"wrote {args.out}.md, {args.out}.stats.csv, {args.out}.png, {args.out}.violin.png, {args.out}.hist.png")


if __name__ == "__main__":
    main()
