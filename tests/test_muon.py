"""optimizer="muon": Muon on the blocks' matrices with AdamW on the rest; it learns, runs under DDP with gradient
accumulation, and its float32 step is torch.optim.Muon's bf16 one up to bf16 rounding. Its exact resume is tested
beside AdamW's in tests/test_train.py."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import ROOT, TRAIN, load_script, prepare_dataset, run_main

from regional_tinystories import training
from regional_tinystories.config import ConfigError
from regional_tinystories.model import GPT, ModelConfig

train_script = load_script("training-inference/train.py")

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--dataset=tiny", "--optimizer=muon"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return prepare_dataset(tmp_path_factory.mktemp("muon"))


def train(data_root, out_dir, *args):
    return run_main(train_script.main, [*TINY, f"--data_root={data_root}", f"--out_dir={out_dir}", *args])


def train_losses(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if r["type"] == "train"]


def optimizer_cfg(**changes):
    return SimpleNamespace(**{"optimizer": "muon", "learning_rate": 1e-3, "muon_lr": 0.02, "muon_momentum": 0.95,
                              "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, **changes})


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True, recipe="classic",
                            tie_weights=False))
    optimizer = training.make_optimizer(model, optimizer_cfg(), "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    muon_group, decay, no_decay = optimizer.param_groups
    assert sorted(names[id(p)] for p in muon_group["params"]) == sorted(
        f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert sorted(names[id(p)] for p in decay["params"]) == ["lm_head.weight", "wpe.weight", "wte.weight"]
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert muon_group["lr"] == 0.02 and muon_group["lr_scale"] == pytest.approx(20.0)
    assert decay["lr"] == no_decay["lr"] == 1e-3 and decay["lr_scale"] == 1.0
    every = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(every) == len(set(map(id, every))) == len(list(model.parameters()))


def test_unknown_optimizer_is_one_error_line(data_root, tmp_path):
    result = train(data_root, tmp_path / "run", "--optimizer=sgd", "--max_iters=1")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: command line: optimizer='sgd' is not one of 'adamw', 'muon'"
    result = train(data_root, tmp_path / "run", "--muon_lr=0", "--max_iters=1")
    assert result.returncode == 1 and result.stderr.strip() == "error: muon_lr=0.0 must be positive"
    with pytest.raises(ConfigError, match="optimizer='lion' is not one of 'adamw', 'muon'"):
        training.make_optimizer(GPT(ModelConfig(vocab_size=16, block_size=4, n_layer=1, n_head=1, n_embd=8)),
                                optimizer_cfg(optimizer="lion"), "cpu")


def test_muon_trains_a_tiny_model(data_root, tmp_path):
    out = tmp_path / "run"
    result = train(data_root, out, "--max_iters=60", "--eval_interval=60", "--learning_rate=1e-2")
    assert result.returncode == 0, result.stderr
    losses = train_losses(out)
    assert losses[0] > 5.0 and np.mean(losses[-10:]) < 0.6 * losses[0], (losses[0], losses[-10:])
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"muon", "adamw"} and ckpt["config"]["optimizer"] == "muon"
    assert all("momentum_buffer" in s for s in ckpt["optimizer"]["muon"]["state"].values())


def test_muon_under_two_rank_ddp_with_gradient_accumulation(data_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TRAIN, *TINY,
           f"--data_root={data_root}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=4",
           "--gradient_accumulation_steps=4", "--device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=True)
    assert ckpt["iter_num"] == 4 and len(ckpt["data_rng"]) == 2 and set(ckpt["optimizer"]) == {"muon", "adamw"}
    losses = train_losses(out)
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_float32_step_is_torch_muon_up_to_bf16_rounding():
    torch.manual_seed(0)
    for shape in ((48, 32), (32, 48)):  # tall matrices are orthogonalised transposed
        start, grads = torch.randn(shape), [torch.randn(shape) for _ in range(3)]
        params = {kind: torch.nn.Parameter(start.clone()) for kind in ("torch", "bf16", "fp32")}
        optimizers = {"torch": torch.optim.Muon([params["torch"]], lr=0.02, momentum=0.95, weight_decay=0.1),
                      "bf16": training.Muon([params["bf16"]], 0.02, 0.95, 0.1, orthogonalize_dtype=torch.bfloat16),
                      "fp32": training.Muon([params["fp32"]], 0.02, 0.95, 0.1, orthogonalize_dtype=torch.float32)}
        for grad in grads:
            for kind, optimizer in optimizers.items():
                params[kind].grad = grad.clone()
                optimizer.step()
        assert torch.equal(params["bf16"], params["torch"])  # on bf16 hardware it is torch's own step
        moved = (params["torch"] - start).norm()
        assert (params["fp32"] - params["torch"]).norm() < 0.03 * moved
        assert optimizers["fp32"].state_dict()["state"].keys() == optimizers["torch"].state_dict()["state"].keys()


def test_newton_schulz_makes_the_singular_values_about_one():
    torch.manual_seed(0)
    matrix = torch.randn(64, 24) @ torch.diag(torch.logspace(-1, 0, 24))
    before = torch.linalg.svdvals(matrix)
    assert before.min() < 0.15 * before.max()
    singular = torch.linalg.svdvals(training.newton_schulz(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7))
    assert singular.min() > 0.6 and singular.max() < 1.25  # the quintic lands in about [0.7, 1.2], not on 1 exactly
