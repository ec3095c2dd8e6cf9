"""train.py: learning, exact resume, config errors, data checks, atomic checkpoints, NaN stop, DDP on gloo."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import ROOT, TRAIN, load_script, prepare_dataset, run, run_main

from regional_tinystories import checkpoint, training

train_script = load_script("training-inference/train.py")

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--dataset=tiny"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return prepare_dataset(tmp_path_factory.mktemp("train"))


def train(data_root, out_dir, *args):
    result = run_main(train_script.main, [*TINY, f"--data_root={data_root}", f"--out_dir={out_dir}", *args])
    return result


def log_records(out_dir, kind):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


def test_tiny_model_overfits_tiny_corpus(data_root, tmp_path):
    out = tmp_path / "run"
    result = train(data_root, out, "--max_iters=200", "--eval_interval=50", "--learning_rate=1e-2",
                   "--lr_decay_iters=200", "--dropout=0.0")
    assert result.returncode == 0, result.stderr
    losses = [r["loss"] for r in log_records(out, "train")]
    assert losses[0] > 5.0 and np.mean(losses[-10:]) < 1.5, (losses[0], losses[-10:])
    for name in ("ckpt_best.pt", "ckpt_last.pt", "loss.png", "summary.json"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iters"] == 200 and summary["stop_reason"] == "max_iters"
    assert "done (max_iters): 200 iters" in result.stdout + result.stderr

    evals = log_records(out, "eval")
    meta = json.loads((data_root_path(data_root) / "meta.json").read_text())
    v = meta["splits"]["val"]
    last = evals[-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2) * v["tokens"] / v["bytes"])
    assert last["val_ppl"] == pytest.approx(math.exp(last["val_loss"]))


def data_root_path(data_root):
    from pathlib import Path
    return Path(data_root) / "tiny"


def tensors_of(state, path=""):
    """{path: tensor} of every tensor in a nested state dict (an optimizer's, Muon and AdamW's together)."""
    if torch.is_tensor(state):
        return {path: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else ()
    return {k: v for key, value in items for k, v in tensors_of(value, f"{path}/{key}").items()}


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("extra", [[], ["--recipe=classic", "--dropout=0.1", "--doc_aligned=True",
                                        "--gradient_accumulation_steps=2"]])
def test_resume_equals_continuous_training(data_root, tmp_path, optimizer, extra):
    common = ["--eval_interval=4", "--lr_decay_iters=8", "--dropout=0.1", f"--optimizer={optimizer}", *extra]
    assert train(data_root, tmp_path / "full", "--max_iters=8", *common).returncode == 0
    assert train(data_root, tmp_path / "part", "--max_iters=4", *common).returncode == 0
    assert train(data_root, tmp_path / "part", "--max_iters=8", "--init_from=resume", *common).returncode == 0
    full = torch.load(tmp_path / "full" / "ckpt_last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "part" / "ckpt_last.pt", weights_only=True)
    assert full["iter_num"] == resumed["iter_num"] == 8
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    # the optimizer's state too: AdamW's moments, and with Muon its momentum buffers
    full_state, resumed_state = tensors_of(full["optimizer"]), tensors_of(resumed["optimizer"])
    assert full_state.keys() == resumed_state.keys()
    assert any("momentum_buffer" in path for path in full_state) == (optimizer == "muon")
    for path, tensor in full_state.items():
        assert torch.equal(tensor, resumed_state[path]), path
    assert log_records(tmp_path / "full", "train")[-1]["loss"] == log_records(tmp_path / "part", "train")[-1]["loss"]


def test_config_file_overrides_and_errors(data_root, tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text("max_iters = 3\nlearning_rate = 1e-3\neval_interval = 100\n")
    out = tmp_path / "a=b"  # a value may contain '='
    result = train(data_root, out, str(cfg), "--max_iters=2")
    assert result.returncode == 0, result.stderr
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=True)
    assert ckpt["config"]["max_iters"] == 2 and ckpt["config"]["learning_rate"] == 1e-3
    assert ckpt["config"]["out_dir"] == str(out)

    result = train(data_root, out, "--max_iter=5")
    assert result.returncode == 1
    assert "unknown config key 'max_iter' (did you mean max_iters" in result.stderr and "valid keys:" in result.stderr
    result = train(data_root, out, "--batch_size=big")
    assert "batch_size expects int, got 'big' (str)" in result.stderr
    result = train(data_root, out, "--recipe=llama")
    assert "recipe='llama' is not one of 'classic', 'modern'" in result.stderr
    cfg.write_text("learning_rat = 0.1\n")
    result = train(data_root, out, str(cfg))
    assert f"config file {cfg}: unknown config key 'learning_rat'" in result.stderr
    result = train(data_root, out, "--compile")
    assert "'--compile' must look like --key=value" in result.stderr
    assert all(len(r.strip().splitlines()) == 1 for r in [result.stderr])


def test_secrets_never_reach_checkpoint_or_log(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-secret-wandb-123")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_456")
    out = tmp_path / "run"
    result = train(data_root, out, "--max_iters=2", "--eval_interval=1")
    assert result.returncode == 0
    blob = (out / "ckpt_last.pt").read_bytes() + (out / "log.jsonl").read_bytes() + result.stdout.encode()
    assert b"sk-secret-wandb-123" not in blob and b"hf_secret_456" not in blob


def test_corrupt_or_mismatched_bin_is_refused(data_root, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    train_bin = root / "tiny" / "train.bin"
    good = train_bin.read_bytes()
    train_bin.write_bytes(good[:-1])
    result = train(root, tmp_path / "r", "--max_iters=1")
    assert result.returncode == 1 and "not a whole number of uint16 tokens" in result.stderr
    train_bin.write_bytes(good[:-2])
    result = train(root, tmp_path / "r", "--max_iters=1")
    assert "meta.json says" in result.stderr
    (root / "tiny" / "meta.json").unlink()
    result = train(root, tmp_path / "r", "--max_iters=1")
    assert "meta.json: missing (run training-inference/data/prepare.py first)" in result.stderr


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    assert train(data_root, out, "--max_iters=2", "--eval_interval=1").returncode == 0
    # continue from those weights in the same folder at a learning rate that wrecks the model: the loss is still
    # finite at iteration 1 (that checkpoint is written) and nan at iteration 2 (it must not be)
    result = train(data_root, out, f"--init_from={out / 'ckpt_last.pt'}", "--max_iters=50", "--eval_interval=1",
                   "--learning_rate=1e30", "--warmup_iters=0", "--grad_clip=0.0")
    assert result.returncode == 1
    assert f"stopping: loss is nan at iteration 2; the last good checkpoint in {out} is kept" in result.stdout
    assert [(r["iter"], math.isfinite(r["val_loss"])) for r in log_records(out, "eval")] == \
        [(0, True), (1, True), (2, False)]
    ckpt = checkpoint.load(str(out / "ckpt_last.pt"))
    assert ckpt["iter_num"] == 1 and math.isfinite(ckpt["val_loss"])
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == "non-finite loss"


def test_early_stopping(data_root, tmp_path):
    out = tmp_path / "run"
    result = train(data_root, out, "--max_iters=100", "--eval_interval=2", "--early_stop_patience=2",
                   "--early_stop_min_delta=100.0")
    assert result.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"].startswith("early stop") and summary["iters"] == 4


def test_init_from_hub_offline_is_one_line(data_root, tmp_path):
    proc = run(TRAIN, *TINY, f"--data_root={data_root}", f"--out_dir={tmp_path}", "--init_from=hf:someone/models/ckpt.pt",
               check=False, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint hf:someone/models/ckpt.pt: download failed")


WRITER = """
import sys, torch
from regional_tinystories.checkpoint import save_atomic

path = sys.argv[1]
i = 0
while True:
    i += 1
    save_atomic({"iter_num": i, "model": {"w": torch.full((1_000_000,), float(i))}, "model_args": {}}, path)
    print(i, flush=True)
"""


def test_killed_checkpoint_writer_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt_last.pt"
    for delay in (0.5, 0.9, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = checkpoint.load(str(path))
        assert torch.all(ckpt["model"]["w"] == float(ckpt["iter_num"]))


def test_two_rank_ddp_on_gloo(data_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TRAIN, *TINY,
           f"--data_root={data_root}", f"--out_dir={out}", "--max_iters=6", "--eval_interval=3",
           "--gradient_accumulation_steps=2", "--device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("config: ") == 1  # only rank 0 prints and writes
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=True)
    assert ckpt["iter_num"] == 6 and len(ckpt["data_rng"]) == 2
    assert not torch.equal(ckpt["data_rng"][0], ckpt["data_rng"][1])  # each rank reads its own batches
    assert all(not k.startswith("module.") for k in ckpt["model"])
    tokens = [r["tokens"] for r in log_records(out, "train")]
    assert tokens[-1] == 6 * 8 * 32 * 2  # batch x block x accumulation (1 per rank) x 2 ranks


def test_lr_schedules():
    from types import SimpleNamespace
    cfg = SimpleNamespace(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=100, lr_decay_iters=None,
                          lr_schedule="cosine", wsd_decay_fraction=0.2)
    lr = training.learning_rate_at
    assert lr(0, cfg) == pytest.approx(1 / 11) and lr(10, cfg) == pytest.approx(1.0)
    assert lr(55, cfg) == pytest.approx(0.55) and lr(100, cfg) == pytest.approx(0.1)
    cfg.lr_schedule = "wsd"
    assert lr(50, cfg) == 1.0 and lr(80, cfg) == 1.0 and lr(90, cfg) == pytest.approx(0.55) and lr(100, cfg) == pytest.approx(0.1)
    cfg.lr_schedule = "constant"
    assert lr(99, cfg) == 1.0


def test_weight_decay_only_on_matrices():
    from types import SimpleNamespace

    from regional_tinystories.model import GPT, ModelConfig
    model = GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True, recipe="classic"))
    cfg = SimpleNamespace(weight_decay=0.1, learning_rate=1e-3, beta1=0.9, beta2=0.95)
    decay, no_decay = training.make_optimizer(model, cfg, "cpu").param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
