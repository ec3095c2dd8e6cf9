"""
Files: the one place that reads JSON/JSONL inputs and writes outputs safely.

Two kinds of writes, for two kinds of files:
- atomic_write (and write_text/json/jsonl_atomic): a whole file at once (prompt shards, meta.json, summaries,
  plots). Written to a temporary file in the same folder, flushed to disk (fsync) and renamed over the target,
  so readers see either the old file or the complete new one, whatever moment a kill comes.
- append_record: results arriving one by one (stories, ratings, translations). Each record is one
  write() of one line, flushed at once, so a process killed at any moment leaves complete lines
  plus at most one torn last line, which load_appended_records detects and cuts off on restart.

Reading: read_input_records yields (location, record) from .json/.jsonl files (also gzip-compressed, .jsonl.gz),
input_files expands files and folders into the input files they hold (never an output's *.failed.jsonl), and
hf_dataset_rows streams a Hugging Face dataset. Every problem is an InputError naming the file and line.
hold_lock keeps two resumable runs from appending to the same output folder; record_key is what identifies a record
in those outputs.
"""
import contextlib
import errno
import glob
import gzip
import json
import os

from regional_tinystories.errors import InputError, one_line

DataError = InputError  # the name the prompting stage has always raised; the same class

JSON_EXTENSIONS = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


def open_text(path):
    """A text file (UTF-8) for reading, transparently gunzipped when its name ends in .gz."""
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def strip_gz(path):
    return path[:-3] if path.endswith(".gz") else path


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Open a temporary file beside path for writing; on a clean exit flush it to disk and rename it over path,
    on an error remove it. (The temp name carries the pid, so two writers never share one.)"""
    tmp = f"{path}.tmp.{os.getpid()}"
    f = open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # on a full disk the close's flush fails too: the temp file must still go
            f.close()
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path, obj):
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_jsonl_atomic(path, records):
    """Write records as JSONL to path atomically; returns the record count."""
    count = 0
    with atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def remove_stale_temp_files(folder, pattern="*.tmp.*"):
    """Delete temp files a killed writer left in folder (their pids are gone or reused); returns how many."""
    stale = glob.glob(os.path.join(glob.escape(folder), pattern))
    for path in stale:
        os.remove(path)
    return len(stale)


def _as_record(location, record):
    if not isinstance(record, dict):
        raise InputError(f"{location}: expected a JSON object, found {type(record).__name__}")
    return location, record


def first_bad_utf8(path):
    """(line, byte offset in the file) of the first byte sequence that is not UTF-8, for an error message."""
    offset = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, offset + e.start
            offset += len(line)
    return None, None


def read_input_records(path, objects_only=True):
    """Yield (location, record) from a .jsonl file (one value a line) or a .json file (a list of values), either
    possibly gzipped. location is "file:line" or "file[index]", for error messages that point at the bad record.
    objects_only: every record must be a JSON object (else InputError); False also lets strings through.

    JSONL is read line by line, so a shard of millions of prompts is never all in memory.
    """
    check = _as_record if objects_only else (lambda location, record: (location, record))
    try:
        with open_text(path) as f:
            if strip_gz(path).endswith(".json"):
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(data, list):
                    raise InputError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
                for index, record in enumerate(data):
                    yield check(f"{path}[{index}]", record)
                return
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, RecursionError) as e:
                        reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                        raise InputError(f"{path}:{line_no}: not valid JSON ({reason})") from None
                    yield check(f"{path}:{line_no}", record)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder") from None
    except UnicodeDecodeError:
        line_no, offset = first_bad_utf8(path) if not path.endswith(".gz") else (None, None)
        where = f"{path}:{line_no}" if line_no else path
        raise InputError(f"{where}: not UTF-8 text" + (f" (byte {offset} of the file)" if offset is not None else "")) from None
    except (OSError, EOFError) as e:  # a torn or corrupt .gz
        raise InputError(f"{path}: cannot be read ({one_line(e)})") from None


def load_appended_records(path):
    """(records, bytes_dropped) of a file written by append_record, repairing a torn last line (see
    scan_appended_records)."""
    records = []
    dropped = scan_appended_records(path, records.append)
    return records, dropped


def scan_appended_records(path, visit):
    """Call visit(record) for each record of a file written by append_record, in order, reading one line at a time
    (resuming over a large output then holds what visit keeps, e.g. the IDs, not every record); returns the
    bytes of a torn last line, which is cut off.

    Only the end of the file can be damaged by a kill, so a bad line with complete lines after it
    is not repaired but reported: something else wrote to the file.
    """
    if not os.path.exists(path):
        return 0
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a regular file")
    good_end = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline: the write was cut off")
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, RecursionError) as e:  # RecursionError: JSON nested too deeply
                if f.read(1):
                    raise DataError(f"{path}:{line_no}: damaged line in the middle of the file ({e}); "
                                    "fix or remove it by hand") from None
                break
            visit(record)
            good_end += len(line)
    dropped = os.path.getsize(path) - good_end
    if dropped:
        os.truncate(path, good_end)
    return dropped


def record_key(record):
    """What identifies a record: its ID, plus its sample_index for model samples (one prompt, many stories)."""
    if "sample_index" in record:
        return f"{record['ID']}#{record['sample_index']}"
    return str(record["ID"])


def append_record(path, record):
    """Append record to a JSONL file as one line, in one write, and close (which flushes) at once.

    A kill can then tear only the line being written, never an earlier one. Opening the file per
    record costs microseconds and means no file handles to track across thousands of shards.
    """
    # backslashreplace: a lone surrogate (a "\\ud800" escape in a reply or an input) is written as that same JSON
    # escape instead of failing the write; no other character needs it.
    with open(path, "ab") as f:
        f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", errors="backslashreplace"))


def is_output_sidecar(path):
    """Files a make_requests.py run writes beside its results that are not results: failed records, hidden files
    (its lock)."""
    name = os.path.basename(path)
    return name.endswith((".failed.jsonl", ".failed.jsonl.gz")) or name.startswith(".")


def input_files(paths, extensions=JSON_EXTENSIONS, recursive=False):
    """The input files named, in reading order, with folders expanded (sorted; recursive=True also reads
    subfolders) to the files with one of `extensions`. Failed-record files, lock and temp files in a folder are a
    run's bookkeeping, not inputs, and are skipped."""
    paths = [paths] if isinstance(paths, str) else paths
    files = []
    for path in paths:
        if os.path.isdir(path):
            pattern = os.path.join(glob.escape(path), "**", "*") if recursive else os.path.join(glob.escape(path), "*")
            found = sorted(f for f in glob.glob(pattern, recursive=recursive)
                           if f.endswith(extensions) and os.path.isfile(f) and not is_output_sidecar(f))
            if not found:
                raise InputError(f"{path}: folder has no {'/'.join(extensions)} files")
            files += found
        elif os.path.isfile(path):
            if not path.endswith(extensions):
                raise InputError(f"{path}: unsupported file type; expected {', '.join(extensions)}")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not files:
        raise InputError(f"no {'/'.join(extensions)} files in {', '.join(paths)}")
    return files


def hf_dataset_rows(source, split):
    """(location, row) for each row of a Hugging Face dataset, streamed. source is NAME or NAME:CONFIG (a hub id
    or a local folder). Offline or unknown: one InputError line."""
    import datasets  # slow to import; only hub inputs need it

    name, _, config = source.partition(":")
    try:
        rows = datasets.load_dataset(name, config or None, split=split, streaming=True)
        for index, row in enumerate(rows):
            yield f"{source}[{split}][{index}]", row
    except InputError:
        raise
    except Exception as e:  # offline hub, unknown name, bad split or config
        raise InputError(f"hf:{source}: could not load the Hugging Face dataset split {split!r} ({one_line(e)})") from None


def paths_overlap(a, b):
    """True when two paths are the same or one lies inside the other, after resolving symlinks."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def hold_lock(path, busy_message):
    """The open lock file at path, held with an exclusive lock for this process's life (close it to release; the OS
    drops it when the process dies, even on SIGKILL). InputError(busy_message) when another process holds it:
    two runs appending to the same output files would write duplicates."""
    lock_file = open(path, "a+")
    try:
        if os.name == "nt":
            import msvcrt  # imported here: Windows only, as fcntl is POSIX only

            msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        lock_file.close()
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            raise InputError(busy_message) from None
        raise
    return lock_file


def named_sources(input_paths, hf_source=None, hf_split="train"):
    """(sources, local inputs) of a run that writes one output per input: sources is [(output name, read())], where
    read() yields (location, record) — X.jsonl, X.json and X.jsonl.gz all name X, a Hugging Face dataset NAME (or
    NAME:CONFIG) names NAME-CONFIG-SPLIT — and local inputs are the files or dataset folder to keep the output away
    from. Two inputs that would write to the same output are refused."""
    if hf_source:
        name = hf_source.rstrip("/").split("/")[-1].replace(":", "-")
        sources = [(f"{name}-{hf_split}", lambda: hf_dataset_rows(hf_source, hf_split))]
        local_dataset = hf_source.partition(":")[0]
        inputs = [local_dataset] if os.path.exists(local_dataset) else []  # a dataset folder on disk
    else:
        inputs = input_files(input_paths)
        sources = [(os.path.splitext(os.path.basename(strip_gz(path)))[0], lambda path=path: read_input_records(path))
                   for path in inputs]
    names = [name for name, _ in sources]
    duplicated = next((name for name in names if names.count(name) > 1), None)
    if duplicated:
        raise InputError(f"two inputs are named {duplicated!r} and would write to the same output file")
    return sources, inputs
