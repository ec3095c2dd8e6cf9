"""Held-out text scored with eval_bpb.py: prepare.py --val_fraction=1.0 --tokenizer=from:DATA_DIR builds an
evaluation-only dataset (every document in val.bin) with the model's own tokenizer, as the README shows."""
import json
import math
import os

import numpy as np
import pytest
import torch
from helpers import PREPARE, load_script, prepare_dataset, run, write_jsonl

from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig

eval_bpb = load_script("scripts/eval_bpb.py")
HELD_OUT = ["एक नई कहानी: चिड़िया ने घोंसला बनाया।", "Sara found a shell on the beach and took it home.",
            "একটা নতুন গল্প: বিড়ালটা দুধ খেল।"]


def test_held_out_text_becomes_an_eval_only_dataset_scored_in_bits_per_byte(tmp_path):
    data_root = prepare_dataset(tmp_path, n_copies=4)
    train_dir = os.path.join(data_root, "tiny")
    with open(os.path.join(train_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=meta["vocab_size"], block_size=16, n_layer=1, n_head=2, n_embd=16))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"model_args": model.model_args(), "model": model.state_dict(),
                "tokenizer": tk.export(tk.load_dataset_tokenizer(meta, train_dir))}, run_dir / "ckpt_best.pt")

    held_out = write_jsonl(str(tmp_path / "held_out.jsonl"), [{"story": text} for text in HELD_OUT])
    run(PREPARE, f"--input={held_out}", "--name=held-out", f"--out_dir={data_root}", f"--tokenizer=from:{train_dir}",
        "--val_fraction=1.0", "--workers=1")
    eval_dir = os.path.join(data_root, "held-out")
    with open(os.path.join(eval_dir, "meta.json"), encoding="utf-8") as f:
        eval_meta = json.load(f)
    assert eval_meta["splits"]["val"]["documents"] == 3 and eval_meta["splits"]["train"]["documents"] == 0
    assert eval_meta["splits"]["val"]["bytes"] == sum(len(t.encode("utf-8")) for t in HELD_OUT)

    eval_bpb.main(["--init_from", str(run_dir), "--data_dir", eval_dir, "--out_dir", str(tmp_path / "bpb")])
    with open(tmp_path / "bpb" / "eval_bpb.json", encoding="utf-8") as f:
        (row,) = json.load(f)
    tokens = np.memmap(os.path.join(eval_dir, "val.bin"), dtype=eval_meta["dtype"], mode="r")
    assert row["tokens"] == len(tokens) - 1 and row["bytes"] == eval_meta["splits"]["val"]["bytes"]
    assert row["bpb"] == pytest.approx(row["loss_per_token"] * row["tokens"] / math.log(2) / row["bytes"])
