"""MorphScore on inconsistent morpheme lists: read_morph_list's skipped rows and compare_tokenizers.py
--skip_inconsistent, on a small list made here and on the original Regional-TinyStories' own lists."""
import csv
import os

import pytest
from helpers import ROOT, load_script, run_main, write_jsonl

from regional_tinystories import metrics

compare_tokenizers = load_script("scripts/compare_tokenizers.py")
ORIGINAL = os.path.join(ROOT, "..", "shared", "data", "seed-regional-tinystories")
LIST = "index,full_word,pt1,rest\n0,लड़कों,लड़क,ों\n1,मनोहर,मनो,रम\n2,खेलना,खेल,ना\n3,आम,,आम\n"


def test_inconsistent_rows_are_skipped_and_reported_only_when_asked(tmp_path):
    path = tmp_path / "hindi.csv"
    path.write_text(LIST, encoding="utf-8")
    with pytest.raises(ValueError, match=r"hindi.csv:3: word 'मनोहर' is not stem 'मनो' \+ suffix 'रम'"):
        metrics.read_morph_list(str(path))
    skipped = []
    assert metrics.read_morph_list(str(path), skipped) == [("लड़कों", "लड़क", "ों"), ("खेलना", "खेल", "ना")]
    assert skipped == [f"{path}:3: word 'मनोहर' is not stem 'मनो' + suffix 'रम'",
                       f"{path}:5: word 'आम' is not stem '' + suffix 'आम'"]


def test_compare_tokenizers_skips_and_counts(tmp_path):
    (tmp_path / "morph").mkdir()
    (tmp_path / "morph" / "hindi.csv").write_text(LIST, encoding="utf-8")
    stories = [{"story": f"लड़कों ने खेलना शुरू किया {i}।"} for i in range(8)]
    corpus = write_jsonl(str(tmp_path / "hindi.jsonl"), stories)
    argv = ["--corpus", corpus, "--tokenizers", "bpe:300", "--morph_dir", str(tmp_path / "morph"),
            "--out_dir", str(tmp_path / "out")]
    refused = run_main(compare_tokenizers.main, argv)
    assert refused.returncode == 1 and refused.stderr.endswith("hindi.csv:3: word 'मनोहर' is not stem 'मनो' + "
                                                               "suffix 'रम'\n")
    result = run_main(compare_tokenizers.main, [*argv, "--skip_inconsistent"])
    assert result.returncode == 0
    assert "MorphScore: skipped 2 rows of" in result.stderr and " / 2 (2 rows skipped) |" in result.stdout
    with open(tmp_path / "out" / "tokenizers.csv", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n_words"] == "2" and row["morph_skipped"] == "2"


@pytest.mark.skipif(not os.path.isdir(ORIGINAL), reason="../shared/data is not here")
@pytest.mark.parametrize("language, rows, inconsistent", [("hindi", 1001, 42), ("marathi", 810, 92),
                                                          ("bengali", 804, 85)])
def test_the_original_lists_have_the_known_inconsistent_rows(language, rows, inconsistent):
    skipped = []
    entries = metrics.read_morph_list(os.path.join(ORIGINAL, f"morphscore-{language}_morph_data.csv"), skipped)
    assert (len(entries) + len(skipped), len(skipped)) == (rows, inconsistent)
