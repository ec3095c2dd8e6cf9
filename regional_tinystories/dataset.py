"""
Reading a prepared dataset (prepare.py's train.bin / val.bin / meta.json): checks and batches.
"""
import json
import math
import os

import numpy as np

from regional_tinystories.errors import Problem


class DatasetError(Exception):
    pass


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing (run training-inference/data/prepare.py first)")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def check_split(data_dir, meta, split, full=True):
    """Problems where {split}.bin disagrees with meta.json (fatal ones first: the file cannot be read as tokens).
    full=False skips the whole-file scans."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        return [Problem(path, "missing", fatal=True)]
    itemsize = np.dtype(meta["dtype"]).itemsize
    size = os.path.getsize(path)
    expected = meta["splits"][split]
    if size % itemsize:
        return [Problem(path, f"{size} bytes is not a whole number of {meta['dtype']} tokens (truncated or wrong dtype)",
                        fatal=True)]
    problems = []
    if size // itemsize != expected["tokens"]:
        problems.append(Problem(path, f"holds {size // itemsize} tokens, meta.json says {expected['tokens']}"))
    if size == 0:  # an evaluation-only dataset (--val_fraction=1.0) has an empty train.bin, and says so
        return problems + ([Problem(path, "empty")] if expected["tokens"] else [])
    data = np.memmap(path, dtype=meta["dtype"], mode="r")
    bos, eos = meta["bos_id"], meta["eos_id"]
    if data[0] != bos:
        problems.append(Problem(path, f"first token is {data[0]}, expected <bos> ({bos})"))
    if data[-1] != eos:
        problems.append(Problem(path, f"last token is {data[-1]}, expected <eos> ({eos})"))
    if not full:
        return problems
    if bos != eos:  # with tiktoken bos == eos, so the framing check is the token count alone
        starts = np.flatnonzero(data == bos)
        if len(starts) != expected["documents"]:
            problems.append(Problem(path, f"{len(starts)} <bos> tokens, meta.json says {expected['documents']} documents"))
        elif len(starts) > 1 and not np.all(data[starts[1:] - 1] == eos):
            problems.append(Problem(path, "a <bos> is not preceded by <eos> (framing broken)"))
    top = int(data.max())
    if top >= meta["vocab_size"]:
        problems.append(Problem(path, f"token id {top} is outside the vocabulary of {meta['vocab_size']}"))
    return problems


def bits_per_byte(loss_nats, meta, split):
    """Convert a per-token loss to bits per UTF-8 byte of text, the loss that compares across tokenizers.
    Framing tokens are counted as tokens (they are predicted too) but add no bytes."""
    c = meta["splits"][split]
    return float(loss_nats / math.log(2) * c["tokens"] / c["bytes"])
