"""Tests for scripts/compare_ratings.py and the paired statistics in regional_tinystories/metrics.py."""
import json
import os
import random

import pytest
from helpers import load_script, run_main

from regional_tinystories import metrics

compare_ratings = load_script("scripts/compare_ratings.py")
FIELDS = ["context_awareness", "completeness", "grammar", "fluency", "creativity", "overall"]


def write_ratings(path, model, scores_by_id, sample_index=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record_id, score in scores_by_id.items():
            extra = {"sample_index": sample_index} if sample_index is not None else {}
            f.write(json.dumps({"ID": record_id, **extra, "model": model, **{k: score for k in FIELDS},
                                "judge": "j"}) + "\n")
    return str(path)


def spread_out_scores(n=20, seed=0):
    """Scores from 1 to 9 that differ a lot from prompt to prompt (some prompts are hard, some easy)."""
    rng = random.Random(seed)
    return {f"p{i}": rng.randint(1, 9) for i in range(n)}


def test_b_better_by_one_on_every_prompt_is_significant_although_the_cis_overlap(tmp_path):
    a = spread_out_scores()
    b = {key: score + 1 for key, score in a.items()}
    result = run_main(compare_ratings.main, [write_ratings(tmp_path / "a.jsonl", "small", a),
                                             write_ratings(tmp_path / "b.jsonl", "large", b),
                                             "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "compare_ratings.json", encoding="utf-8") as f:
        rows = {row["quality"]: row for row in json.load(f)}
    overall = rows["overall"]
    assert overall["n"] == 20 and overall["mean_difference"] == -1.0
    assert overall["ci_low"] == overall["ci_high"] == -1.0  # every pair differs by exactly one
    assert overall["wilcoxon_p"] < 1e-4  # 20 of 20 pairs the same way (all ranks tie: scipy's normal approximation)
    assert overall["b_wins"] == 1.0 and overall["a_wins"] == overall["ties"] == 0.0
    # the two 95% intervals of the means overlap, and the unpaired z-test sees nothing
    assert overall["mean_a"] + overall["ci95_a"] > overall["mean_b"] - overall["ci95_b"]
    assert overall["z_p"] > 0.05
    assert rows["true_overall"]["mean_difference"] == -1.0
    md = (tmp_path / "out" / "compare_ratings.md").read_text(encoding="utf-8")
    assert "## small (A) vs large (B), paired by prompt" in md and "Paired: each prompt is compared with itself" in md
    assert ("| overall | -1.000 | [-1.000, -1.000] | 7.7e-06 | 0% | 0% | 100% | 5.55 ± 1.13 | 6.55 ± 1.13 | 0.179 |"
            in md)
    for name in ("compare_ratings.csv", "compare_ratings.png"):
        assert os.path.getsize(tmp_path / "out" / name) > 0


def test_no_difference_on_average_is_not_significant():
    rng = random.Random(1)
    a = [rng.randint(2, 9) for _ in range(200)]
    b = [score + rng.choice([-1, 1]) for score in a]
    result = metrics.paired_comparison(a, b, resamples=2000)
    assert result["ci_low"] < 0 < result["ci_high"] and result["wilcoxon_p"] > 0.05
    same = metrics.paired_comparison([5, 6, 7], [5, 6, 7], resamples=200)
    assert same["wilcoxon_p"] == 1.0 and same["ties"] == 1.0 and same["ci_low"] == same["ci_high"] == 0.0


def test_unpaired_z_test_is_the_originals():
    # means 6 and 5, population SDs 1 and 1, n = 4 each: z = 1 / sqrt(1/4 + 1/4)
    z = metrics.unpaired_z_test([5, 7, 5, 7], [4, 6, 4, 6])
    assert z["z"] == pytest.approx(2 ** 0.5) and z["z_p"] == pytest.approx(0.157299, abs=1e-6)


def test_ratings_are_paired_by_id_and_sample_index(tmp_path):
    a = write_ratings(tmp_path / "a" / "r.jsonl", "m1", {"p1": 5, "p2": 6, "p3": 7}, sample_index=0)
    b = write_ratings(tmp_path / "b" / "r.jsonl", "m2", {"p1": 6, "p2": 7, "p4": 9}, sample_index=0)
    result = run_main(compare_ratings.main, [a, b, "--out_dir", str(tmp_path / "out")])
    assert "2 prompts rated for both (1 rated for A only, 1 for B only" in result.stdout
    other_sample = write_ratings(tmp_path / "c" / "r.jsonl", "m2", {"p1": 6, "p2": 7}, sample_index=1)
    result = run_main(compare_ratings.main, [a, other_sample, "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 1 and "share 0 rated prompts (same ID and sample_index)" in result.stderr


def test_the_originals_eval_files_pair_by_position(tmp_path):
    for model, shift in (("5M", 0), ("54M", 1)):
        ratings = [{**{k.replace("_", " "): str(s + shift) for k in FIELDS}} for s in (3, 5, 7, 4)]
        (tmp_path / f"eval-{model}.json").write_text(json.dumps(ratings), encoding="utf-8")
    result = run_main(compare_ratings.main, [str(tmp_path / "eval-5M.json"), str(tmp_path / "eval-54M.json"),
                                             "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 0 and "## 5M (A) vs 54M (B)" in result.stdout
    assert "| grammar | -1.000 |" in result.stdout


def test_unclear_input_is_one_error_line(tmp_path):
    write_ratings(tmp_path / "r" / "x.jsonl", "m1", {"p1": 5, "p2": 6})
    write_ratings(tmp_path / "r" / "y.jsonl", "m2", {"p1": 5, "p2": 6})
    folder = str(tmp_path / "r")
    two_models = "r: holds ratings of 2 models (m1, m2); pick one with --model_a / --model_b"
    for argv, message in [([folder, folder], two_models),
                          ([folder, folder, "--model_a", "m1", "--model_b", "m9"],
                           "r: no ratings of model 'm9' (it has m1, m2)")]:
        result = run_main(compare_ratings.main, [*argv, "--out_dir", str(tmp_path / "out")])
        assert result.returncode == 1 and result.stderr == f"error: {folder}{message[1:]}\n"
    result = run_main(compare_ratings.main, [folder, folder, "--model_a", "m1", "--model_b", "m2",
                                             "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 0 and "| overall | +0.000 |" in result.stdout
