"""
Check a prepared dataset against its meta.json and print the first tokens decoded.

    python training-inference/data/decode_data.py data/demo-hindi [--split=train] [--n=200]

Verifies: the .bin size is a whole number of `dtype` items and equals the token count in meta.json, the data
starts with <bos> and ends with <eos>, every <bos> is preceded by <eos>, the number of documents matches, and no
id is outside the vocabulary. Exits non-zero with one line per problem.
"""
import argparse
import os
import sys

import numpy as np

from regional_tinystories import tokenizer as tk
from regional_tinystories.dataset import DatasetError, check_split, load_meta


def decode_framed(ids, tok, bos, eos):
    """Decode ids, showing the framing tokens as <bos> / <eos> and decoding the text between them whole."""
    parts, run = [], []
    for t in ids + [None]:
        if t is None or t == bos or t == eos:
            if run:
                parts.append(tok.decode(run))
                run = []
            if t is not None:
                parts.append("<eos>\n" if t == eos else "<bos>")
        else:
            run.append(t)
    return "".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--n", type=int, default=200, help="how many tokens to decode and print")
    args = p.parse_args(argv)
    try:
        meta = load_meta(args.data_dir)
    except DatasetError as e:
        sys.exit(f"error: {e}")
    try:
        tok = tk.load_dataset_tokenizer(meta, args.data_dir)
    except tk.TokenizerError as e:
        sys.exit(f"error: {e}")
    problems = {split: check_split(args.data_dir, meta, split) for split in ("train", "val")}
    shown = problems[args.split]
    if not any(p.fatal for p in shown) and meta["splits"][args.split]["tokens"]:
        data = np.memmap(os.path.join(args.data_dir, f"{args.split}.bin"), dtype=meta["dtype"], mode="r")
        head = [int(x) for x in data[:args.n]]
        print(f"first {len(head)} tokens of {args.split}.bin: {head[:20]}{' ...' if len(head) > 20 else ''}")
        print(decode_framed(head, tok, meta["bos_id"], meta["eos_id"]))
    problems = problems["train"] + problems["val"]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    c = meta["splits"]
    print(f"ok: {args.data_dir} dtype {meta['dtype']}, train {c['train']['tokens']:,} tokens / "
          f"{c['train']['documents']:,} docs, val {c['val']['tokens']:,} tokens / {c['val']['documents']:,} docs")


if __name__ == "__main__":
    main()
