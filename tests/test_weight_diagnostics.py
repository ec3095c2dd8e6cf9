"""Tests for scripts/weight_diagnostics.py: WeightWatcher metrics of a checkpoint's own weights, loaded safely."""
import csv

import numpy as np
import torch
from helpers import load_script, run_main

from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig

weight_diagnostics = load_script("scripts/weight_diagnostics.py")


def save_checkpoint(folder, weights=None):
    tok = tk.train_tokenizer(tk.parse_name("bpe:300"), ["राजू के पास एक लाल गेंद थी।", "Tom had a ball."] * 20,
                             str(folder / "tokenizer"))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        model.wte.weight.mul_(3)  # trained weights, as far as this test can tell: not what a fresh model has
    torch.save({"model_args": model.model_args(), "model": weights or model.state_dict(), "tokenizer": tk.export(tok)},
               folder / "ckpt_best.pt")
    return model


def test_layer_metrics_are_those_of_the_checkpoints_weights(tmp_path):
    model = save_checkpoint(tmp_path)
    result = run_main(weight_diagnostics.main, ["--init_from", str(tmp_path), "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "weight_diagnostics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # wte, then four matrices per block; the tied lm_head is wte again and is left out
    assert [r["layer"] for r in rows] == ["wte"] + [f"blocks.{i}.{m}" for i in range(2) for m in
                                                    ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    wte = np.linalg.svd(model.wte.weight.detach().numpy(), compute_uv=False)
    assert abs(float(rows[0]["spectral_norm"]) - wte[0] ** 2) < 1e-4 * wte[0] ** 2  # the largest eigenvalue of W^T W
    assert abs(float(rows[0]["stable_rank"]) - (wte ** 2).sum() / wte[0] ** 2) < 1e-3
    assert all(float(r["alpha"]) > 0 for r in rows)
    assert "## Weight diagnostics (WeightWatcher)" in result.stdout and "| 9 |" in result.stdout
    assert (tmp_path / "out" / "weight_diagnostics.png").stat().st_size > 10_000


def test_weights_that_do_not_fit_the_model_are_refused_not_skipped(tmp_path):
    model = GPT(ModelConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32))
    # a checkpoint of another layout: strict=False would load none of it and diagnose a random model
    renamed = {f"decoder.{name}": tensor for name, tensor in model.state_dict().items()}
    save_checkpoint(tmp_path, weights=renamed)
    result = run_main(weight_diagnostics.main, ["--init_from", str(tmp_path), "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: checkpoint {tmp_path / 'ckpt_best.pt'}: weights do not match its "
                                    "model_args (no wte.weight and ")
    assert not (tmp_path / "out").exists()
