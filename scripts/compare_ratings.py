"""
Compare two models judged on the same prompts, pairing their ratings story by story.

    python scripts/compare_ratings.py ratings/hindi-5M ratings/hindi-54M --out_dir out/compare-5M-54M
    python scripts/compare_ratings.py ratings/hindi --model_a hindi-5M --model_b hindi-54M

A and B are rating files or folders (make_requests.py evaluate output, or the original Regional-TinyStories'
eval-<model>.json); each must hold one model's ratings, unless --model_a / --model_b pick one. A rating of A and
one of B are a pair when they rate the same prompt: the same ID and sample_index (in eval-<model>.json files without
IDs, the same position). Per quality, and for the "true overall" (mean of the five sub-scores):

  mean difference A - B over the pairs, with a percentile bootstrap 95% CI (--resamples, seeded)
  Wilcoxon signed-rank p-value of the pairs (two-sided; pairs with equal scores are left out, as the test does)
  the share of prompts where A scores higher, where both score the same, and where B does
  beside them, the original's unpaired z-test on all of each model's ratings, and each model's mean ± 95% CI

Why paired: both models answered the same prompts, and prompts differ in how hard they are. A paired test compares
each prompt with itself, so that difficulty cancels out; an unpaired test (the z-test, or checking whether two
confidence intervals overlap) keeps it in the noise and can miss a difference that holds on every single prompt.

Written to --out_dir: compare_ratings.md (also printed), compare_ratings.csv, compare_ratings.json and
compare_ratings.png (mean difference with its bootstrap CI per quality).
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from regional_tinystories import metrics  # noqa: E402
from regional_tinystories.files import DataError, atomic_write, write_text_atomic  # noqa: E402
from regional_tinystories.replies import SCORE_FIELDS  # noqa: E402

FIELDS = (*SCORE_FIELDS, "true_overall")
WHY_PAIRED = ("Paired: each prompt is compared with itself, so how hard a prompt is cancels out. The unpaired z-test "
              "(the original Regional-TinyStories' test) treats the two sets of scores as independent and keeps that "
              "difficulty in the noise; overlapping confidence intervals do not mean there is no difference.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="ratings of model A: a rating file or a folder of them")
    p.add_argument("b", help="ratings of model B (the same prompts)")
    p.add_argument("--model_a", help="the model of A to compare, when A holds several")
    p.add_argument("--model_b", help="the model of B to compare, when B holds several")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out_dir", default="out/compare_ratings")
    args = p.parse_args(argv)
    if args.resamples < 100:
        p.error("--resamples must be at least 100")
    return args


def ratings_of(path, model):
    """{key: rating} of one model's ratings in path; DataError when the choice of model is unclear or a key repeats."""
    ratings = metrics.read_rating_records([path])
    models = sorted({r["model"] for r in ratings})
    if model is None:
        if len(models) > 1:
            raise DataError(f"{path}: holds ratings of {len(models)} models ({', '.join(models)}); pick one with "
                            "--model_a / --model_b")
        model = models[0]
    elif model not in models:
        raise DataError(f"{path}: no ratings of model {model!r} (it has {', '.join(models)})")
    by_key = {}
    for rating in ratings:
        if rating["model"] == model:
            if rating["key"] in by_key:
                raise DataError(f"{rating['location']}: a second rating of {model} for {rating['key']!r} (the first "
                                f"is {by_key[rating['key']]['location']})")
            by_key[rating["key"]] = rating
    return model, by_key


def compare(a, b, args):
    """(one row per quality, number of ratings only A has, only B has)."""
    paired = [key for key in a if key in b]
    if len(paired) < 2:
        raise DataError(f"{args.a} and {args.b} share {len(paired)} rated prompts (same ID and sample_index); a "
                        "paired comparison needs at least 2")
    rows = []
    for field in FIELDS:
        scores_a, scores_b = [a[k][field] for k in paired], [b[k][field] for k in paired]
        all_a, all_b = [r[field] for r in a.values()], [r[field] for r in b.values()]
        mean_a, ci_a = metrics.mean_ci95(all_a)
        mean_b, ci_b = metrics.mean_ci95(all_b)
        rows.append({"quality": field, **metrics.paired_comparison(scores_a, scores_b, args.resamples, args.seed),
                     **metrics.unpaired_z_test(all_a, all_b), "mean_a": mean_a, "ci95_a": ci_a, "n_a": len(all_a),
                     "mean_b": mean_b, "ci95_b": ci_b, "n_b": len(all_b)})
    return rows, len(a) - len(paired), len(b) - len(paired)


def p_value(p):
    return "—" if math.isnan(p) else f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def report(rows, model_a, model_b, only_a, only_b):
    fmt = metrics.fmt
    md = (f"## {model_a} (A) vs {model_b} (B), paired by prompt\n\n{rows[0]['n']} prompts rated for both"
          + (f" ({only_a} rated for A only, {only_b} for B only, left out of the paired columns)"
             if only_a or only_b else "") + ".\n\n")
    md += metrics.markdown_table(
        ["quality", "mean A − B", "bootstrap 95% CI", "Wilcoxon p", "A wins", "ties", "B wins",
         "A mean ± 95% CI", "B mean ± 95% CI", "unpaired z-test p"],
        [(r["quality"].replace("_", " "), f"{r['mean_difference']:+.3f}", f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
          p_value(r["wilcoxon_p"]), f"{r['a_wins']:.0%}", f"{r['ties']:.0%}", f"{r['b_wins']:.0%}",
          f"{fmt(r['mean_a'], 2)} ± {fmt(r['ci95_a'], 2)}", f"{fmt(r['mean_b'], 2)} ± {fmt(r['ci95_b'], 2)}",
          p_value(r["z_p"])) for r in rows])
    return md + f"\n{WHY_PAIRED}\n"


def plot(rows, model_a, model_b, png):
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    x = range(len(rows))
    ax.errorbar(x, [r["mean_difference"] for r in rows],
                yerr=[[r["mean_difference"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean_difference"]
                                                                           for r in rows]],
                fmt="o", capsize=4)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xticks(list(x), [r["quality"].replace("_", "\n") for r in rows], fontsize=8)
    ax.set_ylabel(f"{model_a} − {model_b}\n(mean, bootstrap 95% CI)")
    ax.set_title("Paired difference of judge scores", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(png, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    try:
        model_a, a = ratings_of(args.a, args.model_a)
        model_b, b = ratings_of(args.b, args.model_b)
        rows, only_a, only_b = compare(a, b, args)
    except DataError as e:
        sys.exit(f"error: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    md = report(rows, model_a, model_b, only_a, only_b)
    write_text_atomic(os.path.join(args.out_dir, "compare_ratings.md"), md)
    rows = [{"model_a": model_a, "model_b": model_b, **row} for row in rows]
    write_text_atomic(os.path.join(args.out_dir, "compare_ratings.json"),
                      json.dumps([metrics.without_nan(r) for r in rows], indent=2, ensure_ascii=False) + "\n")
    metrics.write_csv(os.path.join(args.out_dir, "compare_ratings.csv"), rows)
    plot(rows, model_a, model_b, os.path.join(args.out_dir, "compare_ratings.png"))
    print(md)
    print(f"wrote {args.out_dir}/compare_ratings.md, .csv, .json, .png", file=sys.stderr)


if __name__ == "__main__":
    main()
