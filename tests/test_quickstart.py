"""The README's main command, end to end on a reduced setting: prepare -> train on CPU -> sample."""
import gzip
import json
import os
import subprocess

from helpers import ROOT

QUICKSTART = os.path.join(ROOT, "scripts", "quickstart.sh")


def run_quickstart(tmp_path, *args):
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), OUT_ROOT=str(tmp_path / "out"), MAX_ITERS="12",
               NUM_PROMPTS="2", MAX_NEW_TOKENS="12", TOKENIZER="sp-bpe:1024", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", QUICKSTART, *args], capture_output=True, text=True, env=env, timeout=600)


def test_quickstart_runs_end_to_end(tmp_path):
    proc = run_quickstart(tmp_path, "marathi")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "out" / "demo-marathi"
    for name in ("ckpt_best.pt", "ckpt_last.pt", "log.jsonl", "summary.json", "loss.png", "samples.jsonl"):
        assert (run / name).is_file(), name
    assert (tmp_path / "data" / "demo-marathi" / "train.bin").is_file()
    with open(run / "samples.jsonl", encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    with open(os.path.join(ROOT, "training-inference", "prompts", "marathi.txt"), encoding="utf-8") as f:
        prompts = [next(f).rstrip("\n") for _ in range(2)]
    assert [s["prompt"] for s in samples] == prompts
    assert all(s["story"].startswith(s["prompt"]) for s in samples)
    for stage in ("== 1/3 prepare", "== 2/3 train", "== 3/3 sample", "== a few stories", "Artifacts:"):
        assert stage in proc.stdout


def test_quickstart_rejects_unknown_language(tmp_path):
    proc = run_quickstart(tmp_path, "klingon")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no demo corpus for 'klingon' (choose hindi, marathi, bangla or english)"


def test_full_pipeline_runs_every_stage_offline(tmp_path):
    """--full at reduced size: prompts -> stories from the fake LLM (the demo stories written for those prompts) ->
    prepare -> train -> sample -> fake judge -> ratings table -> results table."""
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), OUT_ROOT=str(tmp_path / "out"), MAX_ITERS="6",
               NUM_PROMPTS="3", MAX_NEW_TOKENS="10", TOKENIZER="sp-bpe:1024", OMP_NUM_THREADS="1", STORY_PROMPTS="40")
    proc = subprocess.run(["bash", QUICKSTART, "--full", "hindi"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "out" / "full-hindi"
    for step in range(1, 9):
        assert f"== {step}/8 " in proc.stdout
    stories = [json.loads(line) for f in sorted((run / "stories").glob("*.jsonl")) if ".failed." not in f.name
               for line in f.read_text(encoding="utf-8").splitlines()]
    assert len(stories) == 80
    with gzip.open(os.path.join(ROOT, "data", "demo", "hindi.jsonl.gz"), "rt", encoding="utf-8") as f:
        demo = {record["ID"]: record["story"] for record in map(json.loads, f)}
    answered = [s for s in stories if s["ID"] in demo]
    assert answered and all(s["story"] == demo[s["ID"]] for s in answered)  # each prompt got its own story
    assert len({s["story"] for s in answered}) == len(answered)
    ratings = [json.loads(line) for f in (run / "ratings").glob("*.jsonl") if ".failed." not in f.name
               for line in f.read_text().splitlines()]
    assert len(ratings) == 3 and all(1 <= r["overall"] <= 10 for r in ratings)
    assert (run / "results" / "ratings.md").is_file() and (run / "results" / "ratings.png").is_file()
    assert any(p.suffix == ".md" for p in (run / "results").iterdir() if p.name != "ratings.md")
    assert "held-out bits per byte:" in proc.stdout
