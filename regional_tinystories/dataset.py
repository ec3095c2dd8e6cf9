"""
Reading a prepared dataset (prepare.py's train.bin / val.bin / meta.json, and the story masks
{split}.mask.bin of the instruct format): meta.json's shape, the checks of each
.bin against it (size, framing, token ids), and bits per byte.
"""
import json
import math
import os

import numpy as np

from regional_tinystories.errors import InputError

TOKEN_DTYPES = ("uint16", "uint32")  # what prepare.py writes: uint16 below 65,536 ids, else uint32
META_INTS = ("vocab_size", "bos_id", "eos_id")
SPLIT_COUNTS = ("tokens", "documents", "bytes")  # tokens is required; bits per byte needs bytes


class DatasetError(InputError):
    pass


class Problem(str):
    """One line saying what is wrong with a split. fatal: the .bin cannot be read at all (missing, or not a whole
    number of tokens), so nothing should be decoded from it; other problems leave it readable."""

    def __new__(cls, text, fatal=False):
        problem = super().__new__(cls, text)
        problem.fatal = fatal
        return problem


def load_meta(data_dir):
    """meta.json of a prepared dataset, checked for the fields every reader relies on."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing (run training-inference/data/prepare.py first)")
    with open(path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{path}: not UTF-8 text") from None
    problem = meta_problem(meta)
    if problem:
        raise DatasetError(f"{path}: {problem}")
    return meta


def is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def meta_problem(meta):
    """What makes meta (parsed meta.json) unusable, in a few words, or None."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, found {type(meta).__name__}"
    missing = [key for key in (*META_INTS, "dtype", "tokenizer", "splits") if key not in meta]
    if missing:
        return f"no {', '.join(missing)} (not a meta.json written by prepare.py?)"
    for key in META_INTS:
        if not is_count(meta[key]):
            return f"{key} is {meta[key]!r}, not a whole number"
    if meta["vocab_size"] < 1:
        return "vocab_size is 0"
    for key in ("bos_id", "eos_id"):
        if meta[key] >= meta["vocab_size"]:
            return f"{key} {meta[key]} is outside the vocabulary of {meta['vocab_size']}"
    if meta["dtype"] not in TOKEN_DTYPES:
        return f"dtype {meta['dtype']!r} is not one of {', '.join(TOKEN_DTYPES)}"
    if not isinstance(meta["tokenizer"], dict):
        return f"tokenizer is {meta['tokenizer']!r}, not a tokenizer spec"
    if "max_id" in meta and not is_count(meta["max_id"], least=-1):  # -1: no tokens at all
        return f"max_id is {meta['max_id']!r}, not a token id"
    if meta.get("max_id", -1) >= meta["vocab_size"]:
        return f"max_id {meta['max_id']} is outside the vocabulary of {meta['vocab_size']}"
    splits = meta["splits"]
    if not isinstance(splits, dict) or not splits:
        return f"splits is {splits!r}, not an object of splits"
    for split, counts in splits.items():
        if not (isinstance(counts, dict) and "tokens" in counts
                and all(is_count(counts[key]) for key in SPLIT_COUNTS if key in counts)):
            return f"splits.{split} is {counts!r}, not whole counts of {', '.join(SPLIT_COUNTS)}"
        if counts["tokens"] and counts.get("bytes") == 0:
            return f"splits.{split}.bytes is 0 for {counts['tokens']} tokens"
    return None


def check_split(data_dir, meta, split, full=True):
    """Problems (one line each) where {split}.bin disagrees with meta.json, including token ids outside the
    vocabulary (one pass over the file). full=False skips the framing scan."""
    path = os.path.join(data_dir, f"{split}.bin")
    if split not in meta["splits"]:
        return [Problem(f"{os.path.join(data_dir, 'meta.json')}: no split {split!r}", fatal=True)]
    if not os.path.isfile(path):
        return [Problem(f"{path}: missing", fatal=True)]
    itemsize = np.dtype(meta["dtype"]).itemsize
    size = os.path.getsize(path)
    expected = meta["splits"][split]
    if size % itemsize:
        return [Problem(f"{path}: {size} bytes is not a whole number of {meta['dtype']} tokens "
                        f"(truncated or wrong dtype)", fatal=True)]
    problems = []
    if size // itemsize != expected["tokens"]:
        problems.append(Problem(f"{path}: holds {size // itemsize} tokens, meta.json says {expected['tokens']}"))
    mask_path = os.path.join(data_dir, f"{split}.mask.bin")
    if meta.get("format") == "instruct" and (not os.path.isfile(mask_path) or os.path.getsize(mask_path) != size // itemsize):
        problems.append(Problem(f"{mask_path}: missing or not one byte per token of {split}.bin (the instruct "
                                f"format's story mask; run prepare.py again)"))
    if size == 0:  # an evaluation-only dataset has an empty train split
        return problems
    vocab = meta["vocab_size"]
    data = np.memmap(path, dtype=meta["dtype"], mode="r")
    bos, eos = meta["bos_id"], meta["eos_id"]
    if data[0] != bos:
        problems.append(Problem(f"{path}: first token is {data[0]}, expected <bos> ({bos})"))
    if data[-1] != eos:
        problems.append(Problem(f"{path}: last token is {data[-1]}, expected <eos> ({eos})"))
    top = int(data.max())  # an id past the embedding table is a device-side assert on CUDA, not an error
    if top >= vocab:
        problems.append(Problem(f"{path}: token id {top} is outside the vocabulary of {vocab} "
                                f"(the .bin and meta.json come from different tokenizers?)"))
    if full and bos != eos:  # with tiktoken bos == eos, so the framing check is the token count alone
        starts = np.flatnonzero(data == bos)
        if len(starts) != expected.get("documents", len(starts)):
            problems.append(Problem(f"{path}: {len(starts)} <bos> tokens, meta.json says {expected['documents']} "
                                    f"documents"))
        elif len(starts) > 1 and not np.all(data[starts[1:] - 1] == eos):
            problems.append(Problem(f"{path}: a <bos> is not preceded by <eos> (framing broken)"))
    return problems


def bits_per_byte(loss_nats, meta, split, story_only=False):
    """Convert a per-token loss to bits per UTF-8 byte of text, the loss that compares across tokenizers.
    Framing tokens are counted as tokens (they are predicted too) but add no bytes. story_only: the loss is over
    the story tokens of an instruct dataset (loss_on=story), so per story token and story byte."""
    c = meta["splits"][split]
    tokens, n_bytes = ("story_tokens", "story_bytes") if story_only else ("tokens", "bytes")
    if not c.get(n_bytes):
        raise DatasetError(f"meta.json: splits.{split} records no {n_bytes.replace('_', ' ')}, so bits per byte "
                           f"cannot be computed")
    return float(loss_nats / math.log(2) * c[tokens] / c[n_bytes])
