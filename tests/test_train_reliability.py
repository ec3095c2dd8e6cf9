"""train.py under a hostile user and an unreliable machine: SIGINT / SIGTERM / SIGKILL of a real process and exact
resume, the resumed run's own settings, housekeeping of temp files and log.jsonl, and one `error:` line for each
bad setting, meta.json, .bin and checkpoint. sample.py keeps the samples finished before Ctrl-C."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import ROOT, SAMPLE, TRAIN, load_script, prepare_dataset, run_main

from regional_tinystories import checkpoint

train_script = load_script("training-inference/train.py")
sample_script = load_script("training-inference/sample.py")

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--dataset=tiny"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return prepare_dataset(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def run_dir(data_root, tmp_path_factory):
    """A finished two-iteration run (ckpt_last.pt, ckpt_best.pt, log.jsonl, summary.json)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train(data_root, out, "--max_iters=2", "--eval_interval=1")
    assert result.returncode == 0, result.stderr
    return out


def train(data_root, out_dir, *args):
    return run_main(train_script.main, [*TINY, f"--data_root={data_root}", f"--out_dir={out_dir}", *args])


def records(out_dir, kind):
    """The complete records of log.jsonl of one kind (a torn last line of a running or killed run is skipped)."""
    found = []
    path = os.path.join(out_dir, "log.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    record = json.loads(line)
                    if record["type"] == kind:
                        found.append(record)
    return found


def start_train(tmp_path, *args):
    """train.py as a user starts it, in its own process; stdout and stderr go to files (no pipe can fill up)."""
    stdout, stderr = open(tmp_path / "stdout.txt", "w"), open(tmp_path / "stderr.txt", "w")
    return subprocess.Popen([sys.executable, TRAIN, *args], cwd=ROOT, stdout=stdout, stderr=stderr,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))


def wait_until(proc, condition, what):
    """Poll until condition() holds while proc runs (a deadline only guards against a hung test)."""
    deadline = time.monotonic() + 240
    while not condition():
        assert proc.poll() is None, f"the process ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def last_train_iter(out_dir):
    return max((r["iter"] for r in records(out_dir, "train")), default=0)


def one_error_line(result):
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- signals, kills and exact resume

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_ckpt_last_and_the_resumed_run_equals_an_uninterrupted_one(data_root, tmp_path, sig):
    common = [*TINY, f"--data_root={data_root}", "--eval_interval=1000", "--lr_decay_iters=30", "--dropout=0.1"]
    out = tmp_path / "stopped"
    proc = start_train(tmp_path, *common, f"--out_dir={out}", "--max_iters=100000")
    wait_until(proc, lambda: last_train_iter(out) >= 3, "iteration 3")
    proc.send_signal(sig)
    assert proc.wait(timeout=240) == 128 + sig
    stderr = (tmp_path / "stderr.txt").read_text()
    stopped_at = torch.load(out / "ckpt_last.pt", weights_only=True)["iter_num"]
    assert stopped_at >= 3 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"{sig.name} at iteration {stopped_at}: saved {out}/ckpt_last.pt; resume with: "
        f"python training-inference/train.py --init_from=resume --out_dir={out}")
    assert not (out / "summary.json").exists()  # the run is not finished

    end = stopped_at + 3  # resume with nothing but the new length: every other setting comes from the checkpoint
    resumed = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", f"--max_iters={end}"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: max_iters 100000 -> {end}\n" in resumed.stdout
    full = tmp_path / "full"
    assert run_main(train_script.main, [*common, f"--out_dir={full}", f"--max_iters={end}"]).returncode == 0
    a, b = (torch.load(d / "ckpt_last.pt", weights_only=True) for d in (full, out))
    assert a["iter_num"] == b["iter_num"] == end
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [(r["iter"], r["loss"]) for r in records(out, "train")] == \
        [(r["iter"], r["loss"]) for r in records(full, "train")]
    assert [r["iter"] for r in records(out, "train")] == list(range(1, end + 1))


def test_sigkilled_run_resumes_with_each_iteration_logged_once_and_no_temp_files(data_root, tmp_path):
    out = tmp_path / "run"
    proc = start_train(tmp_path, *TINY, f"--data_root={data_root}", f"--out_dir={out}", "--max_iters=100000",
                       "--eval_interval=8")

    def logged_past_checkpoint():
        # kill a few steps after an evaluation, never near one: a kill as the next checkpoint lands
        # would leave nothing in the log for resume to drop
        if not (out / "ckpt_last.pt").exists() or last_train_iter(out) % 8 not in (1, 2, 3):
            return False
        return last_train_iter(out) > torch.load(out / "ckpt_last.pt", weights_only=True)["iter_num"]
    wait_until(proc, logged_past_checkpoint, "the log to run ahead of ckpt_last.pt")
    proc.kill()
    proc.wait()
    saved = torch.load(out / "ckpt_last.pt", weights_only=True)["iter_num"]
    assert saved % 8 == 0 and last_train_iter(out) > saved
    # what a kill in the middle of checkpoint writes leaves behind (the pid is in the name)
    (out / f"ckpt_last.pt.tmp.{proc.pid}").write_bytes(b"half a checkpoint")
    (out / f"ckpt_best.pt.tmp.{proc.pid}").write_bytes(b"half a checkpoint")

    resumed = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", f"--max_iters={saved + 2}"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"removed 2 temporary file(s) left in {out} by a killed run" in resumed.stdout
    assert not list(out.glob("*.tmp.*"))
    assert [r["iter"] for r in records(out, "train")] == list(range(1, saved + 3))
    assert [r["iter"] for r in records(out, "eval")] == [*range(0, saved + 1, 8), saved + 2]

    # a rerun from scratch in the same folder starts a new log
    assert train(data_root, out, "--max_iters=2", "--eval_interval=1").returncode == 0
    assert [r["iter"] for r in records(out, "train")] == [1, 2]
    assert [r["iter"] for r in records(out, "eval")] == [0, 1, 2]


def test_ckpt_last_is_written_before_ckpt_best(data_root, tmp_path, monkeypatch):
    written = []
    save = checkpoint.save_atomic

    def recording_save(obj, path):
        save(obj, path)
        written.append((obj["iter_num"], os.path.basename(path)))
    monkeypatch.setattr(checkpoint, "save_atomic", recording_save)
    assert train(data_root, tmp_path / "run", "--max_iters=2", "--eval_interval=1").returncode == 0
    # with a kill between the two writes, resume still finds ckpt_last.pt of the newest evaluation
    assert written == [(1, "ckpt_last.pt"), (1, "ckpt_best.pt"), (2, "ckpt_last.pt"), (2, "ckpt_best.pt")]


# ----------------------------------------------------------------------------- resume takes the run's own settings

def test_resume_restores_the_runs_settings_and_refuses_other_changes(data_root, tmp_path):
    out = tmp_path / "run"
    assert train(data_root, out, "--max_iters=2", "--eval_interval=2", "--batch_size=4",
                 "--gradient_accumulation_steps=2", "--warmup_iters=5").returncode == 0
    # only the new length and log interval are given: batch 4 x 2, warmup 5, the tiny model come from the checkpoint
    result = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", "--max_iters=4",
                                          "--log_interval=2", "--lr_decay_iters=4"])
    assert one_error_line(result) == (
        f"error: resume from {out}/ckpt_last.pt: lr_decay_iters=4 (the run has None) would make it a different run; "
        "only max_iters, max_seconds, eval_interval, log_interval, eval_iters, eval_only, always_save_checkpoint, "
        "early_stop_patience, early_stop_min_delta, wandb_mode, wandb_project, wandb_run_name, data_root, device, "
        "compile may change on resume (train into a new out_dir instead)")
    result = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", "--max_iters=4",
                                          "--log_interval=2"])
    assert result.returncode == 0, result.stderr
    assert "resume: max_iters 2 -> 4 (lr_decay_iters is unset, so the learning-rate schedule now ends at 4)\n" \
        in result.stdout
    assert "resume: log_interval 1 -> 2\n" in result.stdout
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=True)
    assert {k: ckpt["config"][k] for k in ("batch_size", "gradient_accumulation_steps", "warmup_iters", "n_embd",
                                           "max_iters", "log_interval")} == \
        dict(batch_size=4, gradient_accumulation_steps=2, warmup_iters=5, n_embd=32, max_iters=4, log_interval=2)
    assert [(r["iter"], r["tokens"]) for r in records(out, "train")] == [(1, 256), (2, 512), (4, 1024)]

    result = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", "--batch_size=16",
                                          "--learning_rate=0.01"])
    assert one_error_line(result).startswith(
        f"error: resume from {out}/ckpt_last.pt: batch_size=16 (the run has 4), learning_rate=0.01 (the run has "
        "0.001) would make it a different run; only max_iters, ")


def test_eval_only_resume_uses_the_checkpoints_block_size_and_writes_nothing(run_dir):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    # block_size=32 is the run's; the default (256) is not given, so it does not count
    result = run_main(train_script.main, [f"--out_dir={run_dir}", "--init_from=resume", "--eval_only=True"])
    assert result.returncode == 0, result.stderr
    assert "resume: eval_only False -> True\n" in result.stdout and "\neval 2: train " in result.stdout
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_fine_tuning_keeps_the_checkpoints_architecture(data_root, run_dir, tmp_path):
    source = run_dir / "ckpt_last.pt"
    result = run_main(train_script.main, [f"--data_root={data_root}", "--dataset=tiny", f"--out_dir={tmp_path}",
                                          f"--init_from={source}", "--n_layer=3", "--recipe=classic"])
    assert one_error_line(result) == (f"error: init_from={source}: n_layer=3 (the model has 2), recipe='classic' "
                                      "(the model has 'modern'); a model initialised from a checkpoint keeps its "
                                      "architecture")
    result = run_main(train_script.main, [f"--data_root={data_root}", "--dataset=tiny", f"--out_dir={tmp_path}",
                                          f"--init_from={source}", "--eval_only=True", "--eval_iters=1"])
    assert result.returncode == 0, result.stderr
    assert '"block_size": 32' in result.stdout and '"n_layer": 2' in result.stdout


# ----------------------------------------------------------------------------- one line for each bad setting

@pytest.mark.parametrize("args, message", [
    (["--eval_interval=0"], "eval_interval=0 must be at least 1"),
    (["--log_interval=0"], "log_interval=0 must be at least 1"),
    (["--batch_size=0"], "batch_size=0 must be at least 1"),
    (["--batch_size=-3"], "batch_size=-3 must be at least 1"),
    (["--eval_iters=0"], "eval_iters=0 must be at least 1"),
    (["--block_size=0"], "block_size=0 must be at least 1"),
    (["--gradient_accumulation_steps=0"], "gradient_accumulation_steps=0 must be at least 1"),
    (["--max_iters=-1"], "max_iters=-1 must be at least 0"),
    (["--lr_decay_iters=0"], "lr_decay_iters=0 must be at least 1"),
    (["--learning_rate=-0.1"], "learning_rate=-0.1 must be positive"),
    (["--learning_rate=1e999"], "learning_rate=inf must be a finite number"),
    (["--min_lr=-1e-4"], "min_lr=-0.0001 must not be negative"),
    (["--weight_decay=-1"], "weight_decay=-1.0 must not be negative"),
    (["--dropout=1.0"], "dropout=1.0 must be in [0, 1)"),
    (["--beta2=1.5"], "beta2=1.5 must be in [0, 1)"),
    (["--wsd_decay_fraction=2.0"], "wsd_decay_fraction=2.0 must be in [0, 1]"),
    (["--n_embd=32", "--n_head=3"], "n_embd=32 must be a multiple of n_head=3"),
    (["--n_embd=36", "--n_head=4"], "n_embd / n_head = 9 must be even for the modern recipe (RoPE rotates pairs of "
                                    "dimensions)"),
    (["--device=tpu"], "device='tpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"),
    (["--device=cuda:x"], "device='cuda:x' is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"),
    (["--lr_decay_iters=abc"], "command line: lr_decay_iters expects int, got 'abc' (str)"),
    (["--lr_decay_iters=2.5"], "command line: lr_decay_iters expects int, got 2.5 (float)"),
    (["--max_iters=None"], "command line: max_iters expects int, got None"),
])
def test_out_of_range_settings_are_one_error_line(data_root, tmp_path, args, message):
    result = train(data_root, tmp_path / "run", *args)
    assert one_error_line(result) == f"error: {message}"
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_one_error_line(data_root, tmp_path):
    assert one_error_line(train(data_root, tmp_path, "--device=cuda")) == \
        "error: device='cuda': no CUDA device is available here"


def test_lr_decay_iters_accepts_an_int_or_none(data_root, tmp_path):
    assert train(data_root, tmp_path / "a", "--max_iters=1", "--lr_decay_iters=5").returncode == 0
    assert train(data_root, tmp_path / "b", "--max_iters=1", "--lr_decay_iters=None").returncode == 0


# ----------------------------------------------------------------------------- one line for each bad dataset

def copy_dataset(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    return root, root / "tiny"


def edit_meta(meta_path, edit):
    meta = json.loads(meta_path.read_text())
    meta = edit(meta)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, problem", [
    (lambda m: {}, "no vocab_size, bos_id, eos_id, dtype, tokenizer, splits (not a meta.json written by prepare.py?)"),
    (lambda m: [], "expected a JSON object, found list"),
    (lambda m: {k: v for k, v in m.items() if k != "splits"}, "no splits (not a meta.json written by prepare.py?)"),
    (lambda m: m | {"dtype": "float8"}, "dtype 'float8' is not one of uint16, uint32"),
    (lambda m: m | {"vocab_size": "512"}, "vocab_size is '512', not a whole number"),
    (lambda m: m | {"splits": m["splits"] | {"val": m["splits"]["val"] | {"bytes": 0}}},
     "splits.val.bytes is 0 for {val_tokens} tokens"),
    (lambda m: m | {"splits": m["splits"] | {"train": "many"}},
     "splits.train is 'many', not whole counts of tokens, documents, bytes"),
    (lambda m: m | {"max_id": m["vocab_size"]}, "max_id 512 is outside the vocabulary of 512"),
])
def test_bad_meta_json_is_one_error_line(data_root, tmp_path, edit, problem):
    root, dataset = copy_dataset(data_root, tmp_path)
    val_tokens = json.loads((dataset / "meta.json").read_text())["splits"]["val"]["tokens"]
    edit_meta(dataset / "meta.json", edit)
    result = train(root, tmp_path / "run", "--max_iters=1")
    assert one_error_line(result) == f"error: {dataset}/meta.json: {problem.format(val_tokens=val_tokens)}"


def test_bin_with_ids_outside_the_vocabulary_is_one_error_line(data_root, tmp_path):
    root, dataset = copy_dataset(data_root, tmp_path)
    meta = json.loads((dataset / "meta.json").read_text())
    data = np.memmap(dataset / "train.bin", dtype=meta["dtype"], mode="r+")
    data[len(data) // 2] = meta["vocab_size"] + 88  # meta.json (and its max_id) still look fine
    data.flush()
    del data
    result = train(root, tmp_path / "run", "--max_iters=1")
    assert one_error_line(result) == (
        f"error: {dataset}/train.bin: token id {meta['vocab_size'] + 88} is outside the vocabulary of "
        f"{meta['vocab_size']} (the .bin and meta.json come from different tokenizers?)")


def test_evaluation_only_dataset_is_refused_for_training(data_root, tmp_path):
    root, dataset = copy_dataset(data_root, tmp_path)
    (dataset / "train.bin").write_bytes(b"")
    edit_meta(dataset / "meta.json", lambda m: m | {"splits": m["splits"] | {"train": {"documents": 0, "tokens": 0,
                                                                                       "bytes": 0}}})
    result = train(root, tmp_path / "run", "--max_iters=1")
    assert one_error_line(result) == (f"error: {dataset}/train.bin: empty (an evaluation-only dataset? training "
                                      "needs both splits)")


# ----------------------------------------------------------------------------- one line for each bad checkpoint

def broken_copy(run_dir, tmp_path, edit):
    """run_dir's ckpt_last.pt, edited, as the only checkpoint of a new run folder."""
    ckpt = torch.load(run_dir / "ckpt_last.pt", weights_only=True)
    edit(ckpt)
    out = tmp_path / "broken"
    out.mkdir()
    torch.save(ckpt, out / "ckpt_last.pt")
    return out


def add_model_arg(ckpt):
    ckpt["model_args"]["flash"] = True


def widen_model_args(ckpt):
    ckpt["model_args"]["n_embd"] = 64


def drop_weight(ckpt):
    del ckpt["model"]["blocks.1.mlp.c_proj.weight"]


def misshape_optimizer(ckpt):
    ckpt["optimizer"]["adamw"]["state"][0]["exp_avg"] = torch.zeros(3, 3)  # optimizer=muon: Muon + AdamW


@pytest.mark.parametrize("edit, problem", [
    (lambda c: c.pop("optimizer"),
     "no optimizer, so it cannot be resumed (it can start a new run: --init_from={path})"),
    (add_model_arg, "unknown model_args flash (written by another program?)"),
    (lambda c: c["model_args"].pop("n_layer"), "no model_args n_layer (written by another program?)"),
    (lambda c: c["model_args"].update(n_layer="two"), "model_args n_layer='two' is a str, expected int"),
    (widen_model_args,
     "weights do not match its model_args (wte.weight is 512x32, model_args give 512x64 and 14 more)"),
    (drop_weight, "weights do not match its model_args (no blocks.1.mlp.c_proj.weight)"),
    (misshape_optimizer, "optimizer exp_avg of shape (3, 3) does not fit a parameter of shape (512, 32)"),
    (lambda c: c["optimizer"]["adamw"]["param_groups"].pop(),
     "its optimizer state does not fit the model (ValueError: loaded state dict has a different number of "
     "parameter groups)"),
])
def test_bad_checkpoint_is_one_error_line_on_resume(run_dir, tmp_path, edit, problem):
    out = broken_copy(run_dir, tmp_path, edit)
    path = out / "ckpt_last.pt"
    result = run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", "--max_iters=3"])
    assert one_error_line(result) == f"error: checkpoint {path}: {problem.format(path=path)}"


def test_bad_checkpoint_is_one_error_line_in_sample(run_dir, tmp_path):
    out = broken_copy(run_dir, tmp_path, widen_model_args)
    result = run_main(sample_script.main, [f"--init_from={out}", "--start=Tom"])
    assert one_error_line(result).startswith(f"error: checkpoint {out}/ckpt_last.pt: weights do not match its "
                                             "model_args (wte.weight is 512x32, model_args give 512x64")


# ----------------------------------------------------------------------------- sample.py and Ctrl-C

def test_sample_sigint_keeps_the_finished_samples(run_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tom had a\n" * 5000, encoding="utf-8")
    out = tmp_path / "samples.jsonl"
    stderr = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, SAMPLE, f"--init_from={run_dir}", f"--start=FILE:{prompts}",
                             "--max_new_tokens=20", "--output_format=jsonl", f"--out_file={out}", "--device=cpu"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    wait_until(proc, lambda: out.exists() and out.read_bytes().count(b"\n") >= 3, "three samples")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=240) == 128 + signal.SIGINT
    lines = out.read_text(encoding="utf-8").splitlines()
    message = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in message
    assert message.strip().splitlines()[-1] == f"interrupted: kept the {len(lines)} samples finished so far in {out}"
    assert [json.loads(line)["ID"] for line in lines] == [f"prompt-{i:04d}" for i in range(1, len(lines) + 1)]
