"""
Send records to an LLM and collect the answers, crash-safely and resumably. Three modes:

    generate   prompt records (generate_prompts.py)          -> story corpus records
    evaluate   stories (corpus records or sample.py output)  -> judge scores, 1-10 per quality
    translate  a corpus (JSON/JSONL files or a HF dataset)   -> the stories in another language

    python prompting/make_requests.py generate --input data/prompts/hindi --out data/stories/hindi \
        --base-url https://api.openai.com/v1 --model gpt-4o-mini --api-key-env OPENAI_API_KEY --rps 5

For each input file X.jsonl (or X.json) the results go to <out>/X.jsonl, one record a line, and
records that failed every retry go to <out>/X.failed.jsonl with the reason. Each result is flushed
as soon as it arrives, so killing the run loses at most the requests in flight; running the same
command again skips every record already in the output (or in the failed file, unless
--retry-failed) and repairs a line torn by the kill.

How a request is sent (send_with_retries): wait for the rate limiter(s), call the backend under a
timeout, parse the reply. Timeouts, HTTP 429/5xx, connection errors and unusable replies are
retried with exponential backoff and jitter, at most --retries times; other errors fail the record
at once; a bad key or unknown model stops the run (every request would fail the same way).
"""
import argparse
import asyncio
import fcntl
import itertools
import os
import sys
import time


from regional_tinystories.files import (
    DataError,
    input_files,
    load_appended_records,
    read_input_records,
)
from regional_tinystories.languages import load_language
from regional_tinystories.llm import (
    BackendConfigError,
    G4FBackend,
    Job,
    OpenAICompatibleBackend,
    RequestSettings,
    Shard,
    run_requests,
)
from regional_tinystories.replies import (
    parse_scores_reply,
    parse_story_reply,
)
from regional_tinystories.templates import fill_judge_rubric, fill_translation_request


def record_key(record):
    """What identifies a record: its ID, plus its sample_index for model samples (one prompt, many stories)."""
    if "sample_index" in record:
        return f"{record['ID']}#{record['sample_index']}"
    return str(record["ID"])


def _require(location, record, *fields):
    missing = [field for field in fields if field not in record]
    if missing:
        raise DataError(f"{location}: record has no {', '.join(repr(f) for f in missing)}")


# ----------------------------------------------------------------------------------------------
# Modes: each checks an input record, builds its prompt and turns the reply into the output record.

class GenerateStories:
    """{ID, language, noun, verb, adjective, ending, template, prompt} -> the same plus model, backend, story."""

    def __init__(self, args, backend):
        self.backend = backend
        self.min_words, self.min_script_share = args.min_words, args.min_script_share

    def check(self, location, index, record):
        _require(location, record, "ID", "prompt", "language")
        try:
            load_language(record["language"])
        except ValueError as e:
            raise DataError(f"{location}: {e}") from None
        return record

    def prompt_for(self, record):
        return record["prompt"]

    def result_for(self, record, reply):
        story = parse_story_reply(reply, load_language(record["language"]), self.min_words, self.min_script_share)
        return {**record, "model": self.backend.model, "backend": self.backend.name, "story": story}


class EvaluateStories:
    """A story record -> {ID, [sample_index], model, <six scores>, judge}."""

    def __init__(self, args, backend):
        self.backend = backend
        self.default_language, self.default_model = args.language, args.story_model

    def check(self, location, index, record):
        _require(location, record, "ID", "story")
        if not isinstance(record["story"], str):
            raise DataError(f"{location}: 'story' is not text")
        language = record.get("language") or self.default_language
        model = record.get("model") or self.default_model
        if not language or not model:
            raise DataError(f"{location}: record has no 'language' or no 'model'; "
                            "pass --language and --story-model to say which")
        try:
            load_language(language)
        except ValueError as e:
            raise DataError(f"{location}: {e}") from None
        return {**record, "language": language, "model": model}

    def prompt_for(self, record):
        return fill_judge_rubric(record, load_language(record["language"]).name)

    def result_for(self, record, reply):
        rating = {"ID": record["ID"]}
        if "sample_index" in record:
            rating["sample_index"] = record["sample_index"]
        return {**rating, "model": record["model"], **parse_scores_reply(reply), "judge": self.backend.model}


class TranslateStories:
    """{ID or none, <text field>} -> {ID, language, source_language, source, model, backend, story}."""

    def __init__(self, args, backend):
        self.backend = backend
        self.language, self.source_language = load_language(args.language), load_language(args.source_language)
        self.text_field, self.min_script_share = args.text_field, args.min_script_share

    def check(self, location, index, record):
        field = self.text_field or next((f for f in ("story", "text") if f in record), "story")
        _require(location, record, field)
        if not isinstance(record[field], str):
            raise DataError(f"{location}: {field!r} is not text")
        # Records without an ID (the Hugging Face TinyStories rows) are named by their position.
        return {"ID": record.get("ID", str(index)), "source": record[field]}

    def prompt_for(self, record):
        return fill_translation_request(record["source"], self.source_language, self.language)

    def result_for(self, record, reply):
        # A translation far shorter than its source was cut off or summarised.
        min_words = len(record["source"].split()) // 3
        story = parse_story_reply(reply, self.language, min_words, self.min_script_share)
        return {"ID": record["ID"], "language": self.language.key, "source_language": self.source_language.key,
                "source": record["source"], "model": self.backend.model, "backend": self.backend.name,
                "story": story}


MODES = {"generate": GenerateStories, "evaluate": EvaluateStories, "translate": TranslateStories}


# ----------------------------------------------------------------------------------------------
# Inputs and outputs: which records still need doing, and where their results go.

def hf_dataset_rows(name, split):
    """(location, record) for each row of a Hugging Face dataset (hub name or local folder), streamed."""
    import datasets  # imported here: slow to import and only translate mode needs it

    try:
        rows = datasets.load_dataset(name, split=split, streaming=True)
        for index, row in enumerate(rows):
            yield f"{name}[{split}][{index}]", row
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise DataError(f"cannot read dataset {name!r} split {split!r}: {e}") from None


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def plan_shards(args, out_dir):
    """The shards of this run with their finished keys loaded; torn last lines repaired on the way."""
    if args.mode == "translate" and args.hf_dataset:
        # "roneneldan/TinyStories" -> TinyStories-train.jsonl
        sources = [(f"{args.hf_dataset.rstrip('/').split('/')[-1]}-{args.split}",
                    lambda: hf_dataset_rows(args.hf_dataset, args.split), None)]
    else:
        sources = [(os.path.splitext(os.path.basename(path))[0],
                    lambda path=path: read_input_records(path),
                    count_lines(path) if path.endswith(".jsonl") else None)
                   for path in input_files(args.input)]
    names = [name for name, _, _ in sources]
    duplicated = next((name for name in names if names.count(name) > 1), None)
    if duplicated:
        raise DataError(f"two inputs are named {duplicated!r} and would write to the same output file")

    shards = []
    for name, read, size in sources:
        out_path = os.path.join(out_dir, name + ".jsonl")
        failed_path = os.path.join(out_dir, name + ".failed.jsonl")
        if any(os.path.abspath(p) == os.path.abspath(out_path) for p in args.input or []):
            raise DataError(f"--out {out_dir} would overwrite the input {out_path}")
        skip = set()
        for path in (out_path, failed_path):
            records, dropped = load_appended_records(path)
            if dropped:
                print(f"repaired {path}: cut off a torn last line ({dropped} bytes)", file=sys.stderr)
            if path == failed_path and args.retry_failed:
                if os.path.exists(path):
                    os.remove(path)  # those records are pending again; if they fail again they come back
                continue
            skip.update(record_key(record) for record in records)
        shards.append(Shard(name, read, out_path, failed_path, skip, size))
    return shards


def pending_jobs(shards, mode):
    """Jobs for every input record not yet done, reading one input at a time."""
    for shard in shards:
        seen = set()
        for index, (location, record) in enumerate(shard.read()):
            record = mode.check(location, index, record)
            key = record_key(record)
            if key in seen:
                raise DataError(f"{location}: duplicate ID {key!r} in {shard.name}")
            seen.add(key)
            if key not in shard.skip:
                yield Job(key, record, shard)


# ----------------------------------------------------------------------------------------------
# Command line.

def make_backend(args):
    if args.backend == "g4f":
        return G4FBackend(args.model, args.provider)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    return OpenAICompatibleBackend(args.base_url, args.model, api_key=api_key, temperature=args.temperature,
                                   max_tokens=args.max_tokens, max_connections=args.max_in_flight)


def lock_output_folder(out_dir):
    """Hold an exclusive lock on out_dir for this process's life: two runs appending to the same
    files would write duplicates. The OS drops the lock when the process dies, even on SIGKILL."""
    lock_file = open(os.path.join(out_dir, ".make_requests.lock"), "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataError(f"another make_requests run is writing to {out_dir}") from None
    return lock_file


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", nargs="+", help="JSONL/JSON files or folders of them")
    common.add_argument("--out", required=True, help="output folder")
    common.add_argument("--backend", choices=("openai", "g4f"), default="openai")
    common.add_argument("--base-url", default="https://api.openai.com/v1",
                        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for vLLM or serve.py")
    common.add_argument("--model", default="gpt-4o-mini")
    common.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key (unset: send no key)")
    common.add_argument("--provider", help="g4f provider class name, e.g. PollinationsAI (default: g4f picks)")
    common.add_argument("--temperature", type=float, default=1.0)
    common.add_argument("--max-tokens", type=int, help="token limit per reply (default: the server's)")
    common.add_argument("--rps", type=float, help="max requests per second (default: no limit)")
    common.add_argument("--rpm", type=float, help="max requests per minute (default: no limit)")
    common.add_argument("--max-in-flight", type=int, default=16, help="max concurrent requests (default: 16)")
    common.add_argument("--retries", type=int, default=5, help="retries per record after the first try")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one reply")
    common.add_argument("--backoff-base", type=float, default=1.0, help="first retry waits about this long (s)")
    common.add_argument("--backoff-max", type=float, default=60.0, help="longest wait between retries (s)")
    common.add_argument("--min-words", type=int, default=50, help="reject shorter stories (generate mode)")
    common.add_argument("--min-script-share", type=float, default=0.9,
                        help="reject stories with a smaller share of letters in the language's script")
    common.add_argument("--retry-failed", action="store_true", help="try the records in *.failed.jsonl again")
    common.add_argument("--limit", type=int, help="send at most this many records in this run")
    common.add_argument("--debug-log", help="append every raw reply to this JSONL file")

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("generate", parents=[common], help="write stories for prompt records")
    evaluate = modes.add_parser("evaluate", parents=[common], help="have an LLM judge score stories")
    evaluate.add_argument("--language", help="language of records that do not name one")
    evaluate.add_argument("--story-model", help="model name for records that do not name one")
    translate = modes.add_parser("translate", parents=[common], help="translate a corpus")
    translate.add_argument("--language", required=True, help="target language, e.g. hindi")
    translate.add_argument("--source-language", default="english")
    translate.add_argument("--hf-dataset", help="Hugging Face dataset instead of --input, e.g. roneneldan/TinyStories")
    translate.add_argument("--split", default="train")
    translate.add_argument("--text-field", help="field holding the text (default: 'story', else 'text')")
    args = parser.parse_args(argv)

    if not args.input and not getattr(args, "hf_dataset", None):
        parser.error("--input is required" + (" (or --hf-dataset)" if args.mode == "translate" else ""))
    if args.input and getattr(args, "hf_dataset", None):
        parser.error("give --input or --hf-dataset, not both")
    if args.max_in_flight < 1 or args.retries < 0 or args.timeout <= 0 or (args.limit is not None and args.limit < 0):
        parser.error("need --max-in-flight >= 1, --retries >= 0, --timeout > 0 and --limit >= 0")
    if (args.rps is not None and args.rps <= 0) or (args.rpm is not None and args.rpm <= 0):
        parser.error("--rps and --rpm must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    settings = RequestSettings(max_in_flight=args.max_in_flight, rps=args.rps, rpm=args.rpm, retries=args.retries,
                               timeout=args.timeout, backoff_base=args.backoff_base, backoff_max=args.backoff_max,
                               debug_log=args.debug_log)
    try:
        os.makedirs(args.out, exist_ok=True)
        lock = lock_output_folder(args.out)
        shards = plan_shards(args, args.out)
        backend = make_backend(args)
        mode = MODES[args.mode](args, backend)
    except (ValueError, BackendConfigError) as e:  # DataError is a ValueError
        sys.exit(f"error: {e}")

    already = sum(len(shard.skip) for shard in shards)
    total = None if any(shard.size is None for shard in shards) else sum(shard.size for shard in shards) - already
    if args.limit is not None:
        total = args.limit if total is None else min(total, args.limit)
    jobs = itertools.islice(pending_jobs(shards, mode), args.limit)
    print(f"{args.mode}: {already} records already done or failed; sending the rest to "
          f"{args.backend} model {args.model}", file=sys.stderr)

    started = time.monotonic()
    try:
        stats = asyncio.run(run_requests(jobs, backend, mode, settings, total=total))
    except (DataError, BackendConfigError) as e:
        sys.exit(f"error: {e} (results so far are saved; fix this and run the same command to resume)")
    except KeyboardInterrupt:
        sys.exit("interrupted: results so far are saved; run the same command to resume")
    finally:
        lock.close()
    elapsed = time.monotonic() - started
    print(f"{args.mode}: {stats['ok']} ok, {stats['failed']} failed, {stats['retries']} retries "
          f"in {elapsed:.1f}s ({(stats['ok'] + stats['failed']) / max(elapsed, 1e-9):.1f} records/s)")
    if stats["failed"]:
        print(f"failed records and reasons are in {args.out}/*.failed.jsonl; "
              "rerun with --retry-failed to try them again")


if __name__ == "__main__":
    main()
