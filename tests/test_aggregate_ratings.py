"""Tests for scripts/aggregate_ratings.py: rating files -> Markdown table and bar chart."""
import csv
import json
import math
import os

import pytest
from helpers import load_script

aggregate_ratings = load_script("scripts/aggregate_ratings.py")


FIELDS = ["context_awareness", "completeness", "grammar", "fluency", "creativity", "overall"]


def write_ratings(path, model, overall_scores, judge="gpt-4o"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, overall in enumerate(overall_scores):
            scores = {field: 5 for field in FIELDS} | {"overall": overall}
            f.write(json.dumps({"ID": str(i), "model": model, **scores, "judge": judge}) + "\n")


def test_table_has_one_row_per_model_with_mean_and_95_ci(tmp_path, capsys):
    write_ratings(tmp_path / "ratings" / "a.jsonl", "hindi-gpt-5M", [6, 8, 7, 7])
    write_ratings(tmp_path / "ratings" / "b.jsonl", "hindi-gpt-54M", [9, 9])
    write_ratings(tmp_path / "ratings" / "b.failed.jsonl", "ignored", [])  # failure files are not ratings
    aggregate_ratings.main([str(tmp_path / "ratings"), "--out", str(tmp_path / "results" / "hindi")])

    table = (tmp_path / "results" / "hindi.md").read_text(encoding="utf-8")
    lines = table.splitlines()
    assert lines[0] == ("| Model | Context awareness | Completeness | Grammar | Fluency | Creativity | Overall | "
                        "True overall | n |")
    half_width = 3.182446 * math.sqrt(2 / 3) / 2  # t(0.975, 3 dof); SD of 6, 8, 7, 7 is sqrt(2/3); n = 4
    # true overall: the five sub-scores only, so the overall of 9 does not move it
    assert lines[2] == f"| hindi-gpt-54M | {' | '.join(['5.00 ± 0.00'] * 5)} | 9.00 ± 0.00 | 5.00 ± 0.00 | 2 |"
    assert lines[3] == f"| hindi-gpt-5M | {' | '.join(['5.00 ± 0.00'] * 5)} | 7.00 ± {half_width:.2f} | 5.00 ± 0.00 | 4 |"
    assert "judged by gpt-4o" in table
    assert "| hindi-gpt-5M | Overall | 4 | 7.00 | 7.00 | 0.82 |" in table  # n, mean, median, SD (sqrt(2/3))
    with open(tmp_path / "results" / "hindi.stats.csv", encoding="utf-8") as f:
        stats = list(csv.DictReader(f))
    assert len(stats) == 2 * 7
    overall = next(r for r in stats if r["model"] == "hindi-gpt-5M" and r["metric"] == "overall")
    assert overall == {"model": "hindi-gpt-5M", "rubric": "seed", "metric": "overall", "n": "4", "mean": "7.0", "median": "7.0",
                       "sd": f"{math.sqrt(2 / 3):.4f}", "ci95": f"{half_width:.4f}"}
    for figure in ("hindi.png", "hindi.violin.png", "hindi.hist.png"):
        with open(tmp_path / "results" / figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_reads_the_original_eval_json_files(tmp_path):
    """The original Regional-TinyStories wrote eval-<model>.json: a list of score dicts, keys with spaces, scores as
    strings, no model field."""
    ratings = [{"context awareness": "6", "completeness": "7", "grammar": "8", "fluency": "9", "creativity": "5",
                "overall": "7"}, {"context awareness": 8, "completeness": 9, "grammar": 8, "fluency": 9,
                                  "creativity": 6, "overall": 8}]
    (tmp_path / "eval-hindi-5M.json").write_text(json.dumps(ratings), encoding="utf-8")
    aggregate_ratings.main([str(tmp_path / "eval-hindi-5M.json"), "--out", str(tmp_path / "out")])
    row = (tmp_path / "out.md").read_text(encoding="utf-8").splitlines()[2]
    # true overall per rating: (6+7+8+9+5)/5 = 7.0 and (8+9+8+9+6)/5 = 8.0
    assert row.startswith("| hindi-5M | 7.00 ± 12.71 | 8.00 ± 12.71 | 8.00 ± 0.00 | 9.00 ± 0.00 | 5.50 ± 6.35 | "
                          "7.50 ± 6.35 | 7.50 ± 6.35 | 2 |")


@pytest.mark.parametrize("record, message", [
    ({"ID": "1", "model": "m", **{f: 5 for f in FIELDS}, "grammar": 12}, "r.jsonl:1: grammar is 12"),
    ({"ID": "1", **{f: 5 for f in FIELDS}}, "r.jsonl:1: rating has no 'model'"),
    ({"ID": "1", "model": "m", **{f: 5 for f in FIELDS}, "fluency": "good"}, "r.jsonl:1: fluency is 'good'"),
])
def test_bad_rating_files_give_one_clear_error(tmp_path, record, message):
    (tmp_path / "r.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        aggregate_ratings.main([str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "out")])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="folder has no .jsonl/.json"):
        aggregate_ratings.main([str(tmp_path), "--out", str(tmp_path / "out")])


def write_rubric_ratings(path, model, rubric, rows, judge="gpt-4o"):
    """Rating records of make_requests.py evaluate --rubric=<rubric>: rows of {field: score}."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, scores in enumerate(rows):
            f.write(json.dumps({"ID": str(i), "model": model, "rubric": rubric, **scores, "judge": judge}) + "\n")


def test_a_non_seed_rubric_is_tabled_with_the_fields_its_ratings_hold(tmp_path):
    tinystories = [{"grammar": 8, "creativity": 6, "consistency": 7, "plot": 5},
                   {"grammar": 6, "creativity": 6, "consistency": 9, "plot": 7}]
    write_rubric_ratings(tmp_path / "ratings" / "a.jsonl", "english-5M", "tinystories", tinystories)
    aggregate_ratings.main([str(tmp_path / "ratings"), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| Model | Grammar | Creativity | Consistency | Plot | n |"
    assert lines[2] == "| english-5M | 7.00 ± 12.71 | 6.00 ± 0.00 | 8.00 ± 12.71 | 6.00 ± 12.71 | 2 |"
    assert lines[4] == "Mean ± 95% CI of the judge's 1–10 scores (rubric tinystories); judged by gpt-4o."
    assert "| english-5M | Plot | 2 | 6.00 | 6.00 | 1.41 |" in lines
    with open(tmp_path / "out.stats.csv", encoding="utf-8") as f:
        stats = list(csv.DictReader(f))
    assert [(r["rubric"], r["metric"]) for r in stats] == [("tinystories", f) for f in tinystories[0]]
    with open(tmp_path / "out.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ratings_of_two_rubrics_get_a_section_each(tmp_path):
    write_ratings(tmp_path / "ratings" / "seed.jsonl", "hindi-5M", [6, 8])
    instruct = [{"grammar": 7, "creativity": 6, "consistency": 7, "plot": 6, "instruction_following": score}
                for score in (3, 5)]
    write_rubric_ratings(tmp_path / "ratings" / "instruct.jsonl", "hindi-5M", "instruct", instruct, judge="gpt-4.1")
    aggregate_ratings.main([str(tmp_path / "ratings"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out.md").read_text(encoding="utf-8")
    seed, instruct_section = report.split("## Rubric: instruct\n\n")
    assert seed.startswith("## Rubric: seed\n\n| Model | Context awareness |") and "### Per quality" in seed
    assert "True overall" in seed and "True overall" not in instruct_section
    assert instruct_section.startswith("| Model | Grammar | Creativity | Consistency | Plot | Instruction following "
                                       "| n |")
    assert "| hindi-5M | 7.00 ± 0.00 | 6.00 ± 0.00 | 7.00 ± 0.00 | 6.00 ± 0.00 | 4.00 ± 12.71 | 2 |" in instruct_section
    assert "judged by gpt-4.1" in instruct_section and "judged by gpt-4o" in seed
    with open(tmp_path / "out.stats.csv", encoding="utf-8") as f:
        stats = list(csv.DictReader(f))
    assert len(stats) == 7 + 5 and {r["rubric"] for r in stats} == {"seed", "instruct"}


def test_a_rating_with_other_scores_than_its_rubric_has_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    write_rubric_ratings(path, "m", "tinystories", [{"grammar": 8, "plot": 5}, {"grammar": 8, "plots": 5}])
    with pytest.raises(SystemExit) as exit_info:
        aggregate_ratings.main([str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == ("error: " + f"{path}:2: scores grammar, plots, where the other ratings of the "
                                    "rubric 'tinystories' have grammar, plot")
