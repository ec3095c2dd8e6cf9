"""
Read story documents from a local corpus or a Hugging Face dataset, one text at a time (streaming).

Local sources: a .json file holding a list of records (or of strings), a .jsonl file, a .txt file (documents
separated by blank lines, or one per line), or a folder of such shards read in sorted order. A Hugging Face
dataset is named 'hf:NAME' (or 'hf:NAME:CONFIG'). Records are dicts; the text lives in `text_field`.
Any problem is a CorpusError whose message is one line naming the file (and line) and the cause.
"""
import glob
import json
import os

from regional_tinystories.errors import one_line

SHARD_EXTENSIONS = (".jsonl", ".json", ".txt")


class CorpusError(Exception):
    pass


def list_files(source):
    """The local files a source names, in reading order."""
    if os.path.isdir(source):
        files = sorted(f for f in glob.glob(os.path.join(source, "**", "*"), recursive=True)
                       if f.endswith(SHARD_EXTENSIONS) and os.path.isfile(f))
        if not files:
            raise CorpusError(f"{source}: folder has no {'/'.join(SHARD_EXTENSIONS)} files")
        return files
    if not os.path.exists(source):
        raise CorpusError(f"{source}: no such file or folder")
    if not source.endswith(SHARD_EXTENSIONS):
        raise CorpusError(f"{source}: unsupported file type; use .jsonl, .json, .txt, a folder of them, or hf:NAME")
    return [source]


def _text_of(record, text_field, where):
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: record is a {type(record).__name__}, expected an object with a {text_field!r} field")
    if text_field not in record:
        raise CorpusError(f"{where}: record has no field {text_field!r} (fields seen: {', '.join(map(str, record)) or 'none'}); "
                          f"choose one with --text_field")
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} is a {type(text).__name__}, not text")
    return text


def _read_jsonl(path, text_field):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield _text_of(record, text_field, f"{path}:{lineno}")


def _read_json(path, text_field):
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(records, dict):  # {"output": [...]} style: take the text_field column if it is a list
        if isinstance(records.get(text_field), list):
            records = records[text_field]
        else:
            raise CorpusError(f"{path}: expected a list of records, found an object with keys {', '.join(records)}")
    for i, record in enumerate(records):
        yield _text_of(record, text_field, f"{path}: record {i}")


def _read_txt(path, txt_mode):
    with open(path, encoding="utf-8") as f:
        if txt_mode == "line":
            yield from (line.rstrip("\n") for line in f)
            return
        paragraph = []
        for line in f:
            if line.strip():
                paragraph.append(line.rstrip("\n"))
            elif paragraph:
                yield "\n".join(paragraph)
                paragraph = []
        if paragraph:
            yield "\n".join(paragraph)


def _read_hf(source, text_field, split):
    import datasets
    name, _, config = source[len("hf:"):].partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
        for i, record in enumerate(ds):
            yield _text_of(record, text_field, f"{source} ({split}) record {i}")
    except CorpusError:
        raise
    except Exception as e:  # offline hub, unknown name, bad split: one line, not a traceback
        raise CorpusError(f"{source}: could not load the Hugging Face dataset ({one_line(e)})") from None


def read_texts(source, text_field="story", txt_mode="paragraph", hf_split="train"):
    """Yield the raw text of every document in `source`, in order."""
    if source.startswith("hf:"):
        yield from _read_hf(source, text_field, hf_split)
        return
    for path in list_files(source):
        try:
            if path.endswith(".jsonl"):
                yield from _read_jsonl(path, text_field)
            elif path.endswith(".json"):
                yield from _read_json(path, text_field)
            else:
                yield from _read_txt(path, txt_mode)
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}: not UTF-8 text (byte {e.start})") from None
