"""Tests for regional_tinystories/attention.py (head statistics and kinds, by hand) and scripts/attention_heatmap.py
(all heads in one figure, the heads' table, and token ids instead of boxes without an Indic font)."""
import csv

import pytest
import torch
from helpers import load_script, run_main

from regional_tinystories import attention
from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig

attention_heatmap = load_script("scripts/attention_heatmap.py")
HINDI = ["राजू के पास एक लाल गेंद थी।", "सीमा ने पतंग उड़ाई।", "मीरा बाज़ार गई और आम लाई।"] * 10


def causal(matrix):
    """Rows normalised to sum to one over the tokens each row may see."""
    m = torch.tril(torch.as_tensor(matrix, dtype=torch.float32))
    return m / m.sum(-1, keepdim=True)


def test_head_kinds_from_the_matrices():
    T = 6
    itself = torch.eye(T)
    previous = causal(torch.eye(T) * 0.01 + torch.diag(torch.ones(T - 1), -1))
    uniform = causal(torch.ones(T, T))
    sink = causal(torch.eye(T) * 1e-6 + torch.nn.functional.one_hot(torch.zeros(T, dtype=torch.long), T))
    assert attention.classify_head(attention.head_statistics(itself)) == "positional"
    assert attention.classify_head(attention.head_statistics(previous)) == "positional"
    assert attention.classify_head(attention.head_statistics(uniform)) == "diffuse"
    stats = attention.head_statistics(sink)
    assert attention.classify_head(stats) == "long-range" and stats["first_token"] == pytest.approx(1, abs=1e-4)
    assert stats["distance"] == pytest.approx(1, abs=1e-4)  # every token attends all the way back
    # by hand, uniform rows: row t spreads 1/(t+1) over t+1 tokens: entropy is the largest possible, 1
    u = attention.head_statistics(uniform)
    assert u["entropy"] == pytest.approx(1) and u["first_token"] == pytest.approx(sum(1 / (t + 1) for t in
                                                                                      range(1, T)) / (T - 1))
    assert u["diagonal"] == pytest.approx((1 + sum(2 / (t + 1) for t in range(2, T))) / (T - 1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An untrained 2-layer, 4-head checkpoint with a byte-level BPE tokenizer trained on Hindi."""
    folder = tmp_path_factory.mktemp("run")
    tok = tk.train_tokenizer(tk.parse_name("bpe:300"), HINDI, str(folder / "tokenizer"))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32))
    torch.save({"model_args": model.model_args(), "model": model.state_dict(), "tokenizer": tk.export(tok)},
               folder / "ckpt_best.pt")
    return str(folder)


def test_all_heads_of_all_layers_in_one_figure(tmp_path, run):
    png = tmp_path / "attention.png"
    result = run_main(attention_heatmap.main, ["--init_from", run, "--prompt", "राजू के पास एक लाल गेंद",
                                               "--out", str(png)])
    assert result.returncode == 0, result.stderr
    assert png.stat().st_size > 20_000 and "warning" not in result.stderr  # fonts-noto-core is installed
    with open(tmp_path / "attention.heads.csv", encoding="utf-8") as f:
        heads = list(csv.DictReader(f))
    assert [(h["layer"], h["head"]) for h in heads] == [(str(l), str(h)) for l in range(2) for h in range(4)]
    assert all(h["kind"] in attention.HEAD_KINDS for h in heads)
    counts = {kind: sum(h["kind"] == kind for h in heads) for kind in attention.HEAD_KINDS}
    assert f"{counts['positional']} positional, {counts['long-range']} long-range, {counts['diffuse']} diffuse " \
           "of 8 heads" in result.stdout
    one_layer = run_main(attention_heatmap.main, ["--init_from", run, "--prompt", "राजू", "--layer", "1",
                                                  "--out", str(tmp_path / "layer1.png")])
    assert one_layer.returncode == 0 and "of 4 heads" in one_layer.stdout


def test_without_an_indic_font_the_labels_are_token_ids_with_a_warning(tmp_path, run, monkeypatch):
    monkeypatch.setattr(attention_heatmap, "LABEL_FONTS", ("DejaVu Sans",))
    result = run_main(attention_heatmap.main, ["--init_from", run, "--prompt", "राजू", "--layer", "0", "--head", "0",
                                               "--out", str(tmp_path / "a.png")])
    assert result.returncode == 0
    assert "warning: no installed font has" in result.stderr and "fonts-noto-core" in result.stderr
    assert "  0              '0' attends most to   0 '0' (1.00)" in result.stdout  # <bos> is shown as its id
    english = run_main(attention_heatmap.main, ["--init_from", run, "--prompt", "ab", "--layer", "0", "--head", "0",
                                                "--out", str(tmp_path / "b.png")])
    assert "warning" not in english.stderr  # DejaVu Sans has Latin letters


@pytest.mark.parametrize("argv, message", [
    (["--layer", "2"], "error: --layer 2: "), (["--head", "-1"], "error: --head -1: "),
    (["--head", "x"], "error: --head x: "), (["--prompt", ""], "error: --prompt is empty"),
])
def test_bad_choices_are_one_error_line(run, argv, message):
    args = ["--init_from", run, "--prompt", "राजू", *argv]
    result = run_main(attention_heatmap.main, args)
    assert result.returncode == 1 and result.stderr.startswith(message) and result.stderr.count("\n") == 1
