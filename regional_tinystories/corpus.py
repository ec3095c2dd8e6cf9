"""
Story documents for tokenizing: the raw text of every document of a local corpus or a Hugging Face dataset, one
at a time (streaming).

Local sources: a .json file holding a list of records (or of strings), a .jsonl file (either may be gzipped), a
.txt file (documents separated by blank lines, or one per line), or a folder of such shards read in sorted order
(a make_requests.py output folder reads its stories, not its *.failed.jsonl). A Hugging Face dataset is named
'hf:NAME' or 'hf:NAME:CONFIG'. Records are dicts; the text lives in `text_field`. Any problem is an InputError
whose message is one line naming the file (and line) and the cause.
"""
from regional_tinystories.errors import InputError
from regional_tinystories.files import JSON_EXTENSIONS, first_bad_utf8, hf_dataset_rows, input_files, read_input_records

CorpusError = InputError  # the name prepare.py and the analysis scripts catch; the same class
CORPUS_EXTENSIONS = JSON_EXTENSIONS + (".txt",)


def list_files(source):
    """The local files a source names, in reading order (subfolders included)."""
    return input_files([source], CORPUS_EXTENSIONS, recursive=True)


def _text_of(record, text_field, where):
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise InputError(f"{where}: record is a {type(record).__name__}, expected an object with a {text_field!r} field")
    if text_field not in record:
        raise InputError(f"{where}: record has no field {text_field!r} (fields seen: {', '.join(map(str, record)) or 'none'}); "
                         f"choose one with --text_field")
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(f"{where}: field {text_field!r} is a {type(text).__name__}, not text")
    return text


def _read_txt(path, txt_mode):
    try:
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
    except UnicodeDecodeError:
        line_no, offset = first_bad_utf8(path)
        raise InputError(f"{path}:{line_no}: not UTF-8 text (byte {offset} of the file)") from None


def require_records(source):
    """The files of a local source, refused in one line if one is a .txt file (text without record fields)."""
    paths = list_files(source)
    text_files = [path for path in paths if path.endswith(".txt")]
    if text_files:
        raise InputError(f"{text_files[0]}: a .txt file holds only text; this format needs JSON/JSONL records "
                         f"with their fields (noun, verb, adjective, ending, ...)")
    return paths


def read_records(source, text_field="story", hf_split="train"):
    """Yield (record, its raw text) for every record of a JSON/JSONL corpus or a Hugging Face dataset, for
    formats that need more of a record than its text (prepare.py --format=instruct)."""
    if source.startswith("hf:"):
        rows = hf_dataset_rows(source[len("hf:"):], hf_split)
    else:
        rows = ((location, record) for path in require_records(source) for location, record in read_input_records(path))
    for location, record in rows:
        yield record, _text_of(record, text_field, location)


def read_texts(source, text_field="story", txt_mode="paragraph", hf_split="train"):
    """Yield the raw text of every document in `source`, in order."""
    if source.startswith("hf:"):
        for location, record in hf_dataset_rows(source[len("hf:"):], hf_split):
            yield _text_of(record, text_field, location)
        return
    for path in list_files(source):
        if path.endswith(".txt"):
            yield from _read_txt(path, txt_mode)
            continue
        for location, record in read_input_records(path, objects_only=False):
            yield _text_of(record, text_field, location)
