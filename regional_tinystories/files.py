"""
Reading and writing JSONL shards safely.

Two kinds of writes, for two kinds of files:
- write_jsonl_atomic: a whole file at once (prompt shards). Written to a temporary file and
  renamed over the target, so readers see either the old file or the complete new one.
- append_record: results arriving one by one (stories, ratings, translations). Each record is one
  write() of one line, flushed at once, so a process killed at any moment leaves complete lines
  plus at most one torn last line, which load_appended_records detects and cuts off on restart.
"""
import glob
import json
import os


class DataError(ValueError):
    """A file the user gave us is missing or malformed; the message says which file and where."""


def write_jsonl_atomic(path, records):
    """Write records as JSONL to path via a temporary file and a rename; returns the record count."""
    tmp_path = path + ".tmp"
    count = 0
    with open(tmp_path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    return count


def _as_record(location, record):
    if not isinstance(record, dict):
        raise DataError(f"{location}: expected a JSON object, found {type(record).__name__}")
    return location, record


def read_input_records(path):
    """Yield (location, record) from a .jsonl file (one object a line) or a .json file (a list of objects).

    JSONL is read line by line, so a shard of millions of prompts is never all in memory.
    location is "file:line" or "file[index]", for error messages that point at the bad record.
    """
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(data, list):
                    raise DataError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
                for index, record in enumerate(data):
                    yield _as_record(f"{path}[{index}]", record)
                return
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                    yield _as_record(f"{path}:{line_no}", record)
    except FileNotFoundError:
        raise DataError(f"input file not found: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def load_appended_records(path):
    """(records, bytes_dropped) of a file written by append_record, repairing a torn last line.

    Only the end of the file can be damaged by a kill, so a bad line with complete lines after it
    is not repaired but reported: something else wrote to the file.
    """
    if not os.path.exists(path):
        return [], 0
    records, good_end = [], 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline: the write was cut off")
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                if f.read(1):
                    raise DataError(f"{path}:{line_no}: damaged line in the middle of the file ({e}); "
                                    "fix or remove it by hand") from None
                break
            records.append(record)
            good_end += len(line)
    dropped = os.path.getsize(path) - good_end
    if dropped:
        os.truncate(path, good_end)
    return records, dropped


def append_record(path, record):
    """Append record to a JSONL file as one line, in one write, and close (which flushes) at once.

    A kill can then tear only the line being written, never an earlier one. Opening the file per
    record costs microseconds and means no file handles to track across thousands of shards.
    """
    with open(path, "ab") as f:
        f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def input_files(paths):
    """The .jsonl/.json files named, with folders expanded; failed-record files are outputs, not inputs."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.jsonl")) + glob.glob(os.path.join(path, "*.json")))
            files += [f for f in found if not f.endswith(".failed.jsonl")]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise DataError(f"input not found: {path}")
    if not files:
        raise DataError(f"no .jsonl or .json files in {', '.join(paths)}")
    return files
