"""
Attach stories written outside make_requests.py (by hand, or by any other tool) to the prompts they answer, giving
corpus records in exactly the format `make_requests.py generate` writes, so every later stage treats them alike.

    python scripts/merge_stories.py --prompts data/prompts/hindi --stories my_stories/hindi \
        --out data/demo/hindi.jsonl.gz --model hand-written

--prompts: generate_prompts.py shards. --stories: JSONL files of {"ID", "story"} (any file names; every ID must be
a prompt's ID, and appear once). Prompts without a story are left out and counted. The output is written
atomically, sorted by ID, gzip-compressed when its name ends in .gz.
"""
import argparse
import gzip
import json
import os
import sys
import unicodedata

from regional_tinystories.errors import InputError
from regional_tinystories.files import atomic_write, input_files, read_input_records


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", nargs="+", required=True, help="prompt shards (files or folders)")
    p.add_argument("--stories", nargs="+", required=True, help="{ID, story} JSONL files or folders")
    p.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz file")
    p.add_argument("--model", default="hand-written", help="what the records' model field says wrote the stories")
    p.add_argument("--backend", default="hand-written")
    return p.parse_args(argv)


def merge(args):
    prompts = {}
    for path in input_files(args.prompts):
        for location, record in read_input_records(path):
            prompts[record["ID"]] = record
    records = {}
    for path in input_files(args.stories):
        for location, record in read_input_records(path):
            key, story = record.get("ID"), record.get("story")
            if key not in prompts:
                raise InputError(f"{location}: ID {key!r} is not one of the prompts' IDs")
            if key in records:
                raise InputError(f"{location}: a second story for {key!r}")
            if not isinstance(story, str) or not story.strip():
                raise InputError(f"{location}: no story text")
            records[key] = {**prompts[key], "model": args.model, "backend": args.backend,
                            "story": unicodedata.normalize("NFC", story.strip())}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    lines = "".join(json.dumps(records[key], ensure_ascii=False) + "\n" for key in sorted(records))
    with atomic_write(args.out, "wb") as f:
        data = lines.encode("utf-8")
        # mtime=0: the same records give the same bytes, so a rebuilt corpus shows no spurious git change
        f.write(gzip.compress(data, mtime=0) if args.out.endswith(".gz") else data)
    return len(records), len(prompts) - len(records)


def main(argv=None):
    args = parse_args(argv)
    try:
        written, unanswered = merge(args)
    except InputError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: {args.out}: cannot be written ({e.strerror})")
    print(f"wrote {written} records to {args.out} ({unanswered} prompts had no story)")


if __name__ == "__main__":
    main()
