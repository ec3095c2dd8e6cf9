"""scripts/automate-training.sh reading a sweep file of paired rows, and scripts/sample_sweep.sh sampling every
finished run, end to end on a tiny dataset (two 2-iteration runs)."""
import json
import os
import subprocess

from helpers import ROOT, prepare_dataset

SWEEP = os.path.join(ROOT, "scripts", "automate-training.sh")
SAMPLE_SWEEP = os.path.join(ROOT, "scripts", "sample_sweep.sh")
TINY_BASE = """recipe = "modern"
n_head = 2
block_size = 32
batch_size = 4
max_iters = 2
eval_interval = 2
eval_iters = 1
log_interval = 1
device = "cpu"
"""


def bash(script, *args, **env):
    return subprocess.run(["bash", script, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **env), timeout=600)


def test_the_shipped_sweep_is_the_originals_eight_paired_rows():
    with open(os.path.join(ROOT, "configs", "sweep-seed.txt"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    assert rows[0] == ["name", "n_layer", "n_embd", "batch_size", "learning_rate", "warmup_iters"]
    assert len(rows) == 9 and rows[-1] == ["L7-H1024", "7", "1024", "96", "6e-4", "450"]


def test_sweep_rows_train_then_every_finished_run_is_sampled(tmp_path):
    data_root = prepare_dataset(tmp_path, n_copies=4)
    (tmp_path / "base.py").write_text(TINY_BASE, encoding="utf-8")
    (tmp_path / "sweep.txt").write_text("# two paired rows\nname n_layer n_embd learning_rate\n"
                                        "small 1 16 1e-3\nwide  1 32 5e-4  # a comment\n", encoding="utf-8")
    sweep_dir = tmp_path / "sweep"
    env = dict(SWEEP_DIR=str(sweep_dir), EXTRA=f"--data_root={data_root}")
    first = bash(SWEEP, "tiny", tmp_path / "base.py", tmp_path / "sweep.txt", **env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    for name, n_embd, lr in (("small", 16, 1e-3), ("wide", 32, 5e-4)):
        with open(sweep_dir / name / "summary.json", encoding="utf-8") as f:
            summary = json.load(f)
        assert (summary["n_layer"], summary["n_embd"], summary["learning_rate"]) == (1, n_embd, lr)
    results = (sweep_dir / "results.md").read_text(encoding="utf-8")
    assert "(2 runs, best bits-per-byte first)" in results and "| small |" in results and "| wide |" in results
    again = bash(SWEEP, "tiny", tmp_path / "base.py", tmp_path / "sweep.txt", **env)
    assert again.returncode == 0 and again.stdout.count("done already, skipped") == 2

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("एक दिन\nTom had\n", encoding="utf-8")
    sampled = bash(SAMPLE_SWEEP, sweep_dir, prompts, EXTRA="--max_new_tokens=4 --num_samples=2 --device=cpu")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    for name in ("small", "wide"):
        with open(sweep_dir / "samples" / f"{name}.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        assert sorted((r["prompt"], r["sample_index"]) for r in records) == \
            [("Tom had", 0), ("Tom had", 1), ("एक दिन", 0), ("एक दिन", 1)]
    assert bash(SAMPLE_SWEEP, sweep_dir, prompts).stdout.count("sampled already") == 2


def test_a_malformed_sweep_file_stops_before_any_run(tmp_path):
    (tmp_path / "base.py").write_text(TINY_BASE, encoding="utf-8")
    short_row = "sweep.txt:3: 2 values for the 3 columns name n_layer n_embd"
    for table, message in [("name n_layer n_embd\na 1 16\nb 2\n", short_row),
                           ("name n-layer\na 1\n", "sweep.txt:1: 'n-layer' is not a setting name"),
                           ("name n_layer\na 1\na 2\n", "sweep.txt:3: a second run named a"),
                           ("# nothing\n", "sweep.txt: no runs in it (a header line, then one row per run)")]:
        (tmp_path / "sweep.txt").write_text(table, encoding="utf-8")
        result = bash(SWEEP, "tiny", tmp_path / "base.py", tmp_path / "sweep.txt", SWEEP_DIR=str(tmp_path / "out"))
        assert result.returncode == 1 and result.stderr == f"error: {tmp_path / message}\n"
        assert not os.path.exists(tmp_path / "out")
