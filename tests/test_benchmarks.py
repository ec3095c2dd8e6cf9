"""The benchmark scripts run end to end at a tiny size and print their tables (the figures themselves are measured
by hand, see the README's Performance section; nothing here is timed)."""
import os

import pytest
from helpers import ROOT, run

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def bench(script, *args):
    """stdout of scripts/SCRIPT run as a user runs it; fails the test with its stderr on a non-zero exit."""
    return run(os.path.join("scripts", script), *args, env={"OMP_NUM_THREADS": "1"}).stdout


def table_rows(stdout):
    return [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ") and "---" not in line]


def test_bench_train_prints_every_contender_against_the_baseline():
    stdout = bench("bench_train.py", "--steps=1", "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32",
                   "--batch_size=2", "--vocab_size=256", "--threads=1")
    assert "bf16: " in stdout and "float32 median" in stdout
    rows = table_rows(stdout)
    assert rows[1:4] == ["nanoGPT recipe (classic, fp32, eager)", "classic fp32, model.cross_entropy, fused AdamW",
                         "modern fp32, fused AdamW"]
    assert "modern fp32, Muon + fused AdamW" in rows


def test_bench_sample_prints_every_contender_against_fp32_batch_1():
    stdout = bench("bench_sample.py", "--rounds=1", "--new_tokens=4", "--n_layer=1", "--n_head=2", "--n_embd=32",
                   "--vocab_size=256", "--threads=1")
    rows = table_rows(stdout)
    assert rows[0] == "contender" and rows[1] == "fp32, batch 1, KV cache"
    assert {"fp32, batch 8, KV cache", "int8 weights, batch 1, KV cache",
            "fp32, batch 1, KV cache, every weight row-major (no quantize.prepare)"} <= set(rows)
    assert "int8 weights: batch 8 gives" in stdout


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="needs the reference text in ../shared/data")
def test_bench_prepare_times_prepare_py_against_the_raw_tokenizer():
    stdout = bench("bench_prepare.py", "--mb=2", "--repeats=1", "--tokenizer=sp-bpe:512")
    assert "raw sp-bpe:512 encode_batch" in stdout
    assert "prepare.py --workers=1:" in stdout and "prepare.py --workers=2:" in stdout
    assert "end to end with 2 workers vs raw x 2:" in stdout
