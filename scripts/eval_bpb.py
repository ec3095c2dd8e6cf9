"""
Bits per byte of trained checkpoints on a prepared dataset split: the one loss that compares across tokenizers.

    python scripts/eval_bpb.py --init_from out/demo-hindi-sp4k out/demo-hindi-bpe4k
    python scripts/eval_bpb.py --init_from out/run-a/ckpt_last.pt --data_dir data/demo-hindi --split val

A loss per token depends on how much text a token holds: a tokenizer with longer tokens has a higher loss per
token for the same model quality, so per-token losses (and perplexities) of models with different tokenizers cannot
be compared. Bits per byte divides the total cross-entropy by the UTF-8 bytes of the text, which are the same
whatever the tokenizer, so the same held-out text gives comparable numbers. prepare.py puts a document in the val
split by a hash of its text, so datasets prepared from the same corpus with the same seed and val_fraction hold the
same val documents whatever their tokenizer (the bytes column shows it).

Each checkpoint is evaluated on its own training dataset (data_root/dataset from its config) unless --data_dir is
given; the dataset's tokenizer must be the checkpoint's. Every token of the split after the first is predicted once,
in consecutive windows of the model's block_size (the first tokens of a window see a shorter context).
bpb = sum of the token losses in bits / UTF-8 bytes of the split's text. The model runs in float32 unless --dtype or
--quantize say otherwise, as sample.py would run it (bf16 weights cast once, or int8 weights): the bpb cost of
that precision is the difference from a float32 run.
Written to --out_dir: eval_bpb.md (also printed), eval_bpb.csv, eval_bpb.json (read by results_table.py).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

from regional_tinystories import checkpoint, quantize, runtime
from regional_tinystories import metrics
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.cli import add_init_from, resolve_init_from
from regional_tinystories.config import ConfigError
from regional_tinystories.dataset import DatasetError, check_split, load_meta


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_init_from(p, "run folders (their ckpt_best.pt), .pt files or hf:OWNER/REPO/FILE.pt")
    p.add_argument("--data_dir", help="prepared dataset for every checkpoint (default: each checkpoint's own)")
    p.add_argument("--data_root", help="replaces the data_root recorded in the checkpoints' configs")
    p.add_argument("--split", default="val")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto (as sample.py)")
    p.add_argument("--quantize", default="none", help="int8: int8 weights, as sample.py --quantize=int8 (CPU only)")
    p.add_argument("--out_dir", default="out/eval_bpb")
    return resolve_init_from(p, p.parse_args(argv))


def dataset_of(ckpt, args):
    if args.data_dir:
        return args.data_dir
    config = ckpt.get("config") or {}
    if "dataset" not in config:
        raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: records no dataset; give --data_dir")
    return os.path.join(args.data_root or config.get("data_root", "data"), config["dataset"])


def check_same_tokenizer(tokenizer, meta, data_dir, ckpt):
    """The dataset's ids mean something to the model only if both use the very same tokenizer (file included)."""
    data_tokenizer = tk.load_dataset_tokenizer(meta, data_dir)
    if tk.export(data_tokenizer) != tk.export(tokenizer):
        ours, theirs = meta["tokenizer_name"], tk.describe(tokenizer.spec)
        what = f"another training of {ours}" if ours == theirs else ours
        raise DatasetError(f"{data_dir}: tokenized with {what}, not with the tokenizer of checkpoint {ckpt['path']} "
                           f"({theirs}); prepare the text with the checkpoint's tokenizer")


@torch.no_grad()
def total_loss_nats(model, tokens, batch_size, device):
    """Sum of the cross-entropy (nats) of predicting tokens[1:] from what precedes them, window by window."""
    block = model.config.block_size
    n_windows = (len(tokens) - 1) // block
    total = 0.0
    for start in range(0, n_windows, batch_size):
        windows = range(start, min(start + batch_size, n_windows))
        rows = np.stack([tokens[i * block:(i + 1) * block + 1] for i in windows])
        batch = torch.from_numpy(rows.astype(np.int64)).to(device)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        total += loss.item() * batch[:, 1:].numel()  # the model returns the mean over the batch's targets
    tail = tokens[n_windows * block:]
    if len(tail) > 1:  # the last, shorter window
        batch = torch.from_numpy(tail.astype(np.int64)[None]).to(device)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        total += loss.item() * (len(tail) - 1)
    return total


def evaluate(source, args, device, dtype):
    model, tokenizer, ckpt = load_model(source, device)
    params = model.num_params()  # counted before quantizing: int8 weights are no longer parameters
    quantize.prepare(model, dtype, args.quantize)
    data_dir = dataset_of(ckpt, args)
    meta = load_meta(data_dir)
    problems = check_split(data_dir, meta, args.split, full=False)
    if problems:
        raise DatasetError(str(problems[0]))
    check_same_tokenizer(tokenizer, meta, data_dir, ckpt)
    tokens = np.memmap(os.path.join(data_dir, f"{args.split}.bin"), dtype=meta["dtype"], mode="r")
    n_bytes = meta["splits"][args.split]["bytes"]
    nats = total_loss_nats(model, tokens, args.batch_size, device)
    predicted = len(tokens) - 1
    return {"model": ckpt["path"], "dataset": data_dir, "split": args.split, "tokenizer": tk.describe(tokenizer.spec),
            "weights": "int8" if args.quantize == "int8" else dtype, "params": params, "tokens": predicted,
            "bytes": n_bytes,
            "loss_per_token": nats / predicted, "bytes_per_token": n_bytes / predicted,
            "bpb": nats / math.log(2) / n_bytes}


def report(rows):
    md = ("## Bits per byte on held-out text\n\nLoss per token is not comparable across tokenizers (a longer token "
          "carries more text, so it costs more nats); bits per byte is.\n\n")
    md += metrics.markdown_table(
        ["checkpoint", "dataset", "tokenizer", "weights", "params", "tokens", "bytes", "loss per token (nats)",
         "bits per byte"],
        [(f"`{r['model']}`", f"{r['dataset']} ({r['split']})", f"`{r['tokenizer']}`", r["weights"], metrics.fmt(r["params"]),
          metrics.fmt(r["tokens"]), metrics.fmt(r["bytes"]), metrics.fmt(r["loss_per_token"]),
          f"**{r['bpb']:.4f}**") for r in rows])
    return md


def main(argv=None):
    args = parse_args(argv)
    device = runtime.pick_device(args.device)
    try:
        if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype={args.dtype!r} is not one of 'auto', 'float32', 'bfloat16', 'float16'")
        dtype = quantize.inference_dtype(args.dtype, args.quantize, device)
        rows = [evaluate(source, args, device, dtype) for source in args.init_from]
    except (ConfigError, checkpoint.CheckpointError, DatasetError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    os.makedirs(args.out_dir, exist_ok=True)
    md = report(rows)
    with open(os.path.join(args.out_dir, "eval_bpb.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(args.out_dir, "eval_bpb.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2, ensure_ascii=False)
    metrics.write_csv(os.path.join(args.out_dir, "eval_bpb.csv"), rows)
    print(md)
    print(f"wrote {args.out_dir}/eval_bpb.md, eval_bpb.csv, eval_bpb.json", file=sys.stderr)


if __name__ == "__main__":
    main()
