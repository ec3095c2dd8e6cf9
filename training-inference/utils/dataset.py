"""
Reading a prepared dataset (prepare.py's train.bin / val.bin / meta.json): checks and batches.
"""
import json
import math
import os

import numpy as np
import torch


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
    """Problems (one line each) where {split}.bin disagrees with meta.json. full=False skips the whole-file scans."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        return [f"{path}: missing"]
    itemsize = np.dtype(meta["dtype"]).itemsize
    size = os.path.getsize(path)
    expected = meta["splits"][split]
    if size % itemsize:
        return [f"{path}: {size} bytes is not a whole number of {meta['dtype']} tokens (truncated or wrong dtype)"]
    problems = []
    if size // itemsize != expected["tokens"]:
        problems.append(f"{path}: holds {size // itemsize} tokens, meta.json says {expected['tokens']}")
    if size == 0:
        return problems + [f"{path}: empty"]
    data = np.memmap(path, dtype=meta["dtype"], mode="r")
    bos, eos = meta["bos_id"], meta["eos_id"]
    if data[0] != bos:
        problems.append(f"{path}: first token is {data[0]}, expected <bos> ({bos})")
    if data[-1] != eos:
        problems.append(f"{path}: last token is {data[-1]}, expected <eos> ({eos})")
    if not full:
        return problems
    if bos != eos:  # with tiktoken bos == eos, so the framing check is the token count alone
        starts = np.flatnonzero(data == bos)
        if len(starts) != expected["documents"]:
            problems.append(f"{path}: {len(starts)} <bos> tokens, meta.json says {expected['documents']} documents")
        elif len(starts) > 1 and not np.all(data[starts[1:] - 1] == eos):
            problems.append(f"{path}: a <bos> is not preceded by <eos> (framing broken)")
    top = int(data.max())
    if top >= meta["vocab_size"]:
        problems.append(f"{path}: token id {top} is outside the vocabulary of {meta['vocab_size']}")
    return problems


def bits_per_byte(loss_nats, meta, split):
    """Convert a per-token loss to bits per UTF-8 byte of text, the loss that compares across tokenizers.
    Framing tokens are counted as tokens (they are predicted too) but add no bytes."""
    c = meta["splits"][split]
    return float(loss_nats / math.log(2) * c["tokens"] / c["bytes"])


class BatchSampler:
    """Random (x, y) windows of block_size tokens from one split. doc_aligned windows start at a <bos>.
    Positions come from a seeded torch.Generator whose state is saved in checkpoints for exact resume."""

    def __init__(self, data_dir, meta, split, block_size, batch_size, seed, doc_aligned=False):
        self.path = os.path.join(data_dir, f"{split}.bin")
        self.dtype = np.dtype(meta["dtype"])
        self.block_size, self.batch_size = block_size, batch_size
        n = os.path.getsize(self.path) // self.dtype.itemsize
        if n <= block_size + 1:
            raise DatasetError(f"{self.path}: {n} tokens is too few for block_size {block_size}; "
                               f"use a smaller block_size or more data")
        self.starts = None
        if doc_aligned:
            data = np.memmap(self.path, dtype=self.dtype, mode="r")
            starts = np.flatnonzero(data[: n - block_size - 1] == meta["bos_id"])
            if len(starts) == 0:
                raise DatasetError(f"{self.path}: no <bos> leaves room for a window of {block_size} tokens")
            self.starts = torch.from_numpy(starts.astype(np.int64))
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        if self.starts is not None:
            pick = torch.randint(len(self.starts), (self.batch_size,), generator=self.generator)
            ix = self.starts[pick]
        else:
            ix = torch.randint(self.n - self.block_size - 1, (self.batch_size,), generator=self.generator)
        # a fresh memmap per batch avoids the memory growth of a long-lived one (as in nanoGPT)
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        rows = np.stack([data[i:i + self.block_size + 1] for i in ix.tolist()]).astype(np.int64)
        batch = torch.from_numpy(rows)
        return batch[:, :-1], batch[:, 1:]
