"""
Send records to an LLM and collect the answers, crash-safely and resumably. Three modes:

    generate   prompt records (generate_prompts.py)          -> story corpus records (--with_summary: and a summary)
    evaluate   stories (corpus records or sample.py output)  -> judge scores, 1-10 per quality of a --rubric
    translate  a corpus (JSON/JSONL files or a HF dataset)   -> the stories in another language

    python prompting/make_requests.py generate --input data/prompts/hindi --out data/stories/hindi \
        --base_url https://api.openai.com/v1 --model gpt-4o-mini --api_key_env OPENAI_API_KEY --rps 5

evaluate --rubric=seed|tinystories|instruct|synonyms|FILE picks what the judge sees and scores (the rubric files of
prompting/rubrics/, or one of your own in their format); each rating names its rubric, and an output folder holds
the ratings of one rubric only.

For each input file X.jsonl (or X.json) the results go to <out>/X.jsonl, one record a line, and
records that failed every retry go to <out>/X.failed.jsonl with the reason. Each result is flushed
as soon as it arrives, so killing the run loses at most the requests in flight; running the same
command again skips every record already in the output (or in the failed file, unless
--retry_failed) and repairs a line torn by the kill.

Before anything is sent, every local input is read once: a record the mode cannot use, an ID given
twice or an unknown language stops the run there, in one line, not halfway through. An --out that
is, holds or lies inside an input is refused before any file is touched.

How a request is sent (send_with_retries): wait for the rate limiter(s), call the backend under a
timeout, parse the reply. Timeouts, HTTP 429/5xx, connection errors and unusable replies are
retried with exponential backoff and jitter, at most --retries times; other errors fail the record
at once; a bad key, an unknown model or an endpoint that cannot be reached at all
(--max_connection_failures requests in a row) stops the run (every request would fail the same way).
No reply ends the run: a reply over --max_reply_bytes, or one that no parser can read, is a failed
record with its reason. The API key is blanked out of everything written or printed.
"""
import argparse
import asyncio
import functools
import itertools
import json
import os
import sys
import time

from regional_tinystories.cli import (
    add_translation_source_options,
    rename_deprecated_options,
    underscored,
)
from regional_tinystories.errors import InputError, Problem, one_line
from regional_tinystories.files import (
    hold_lock,
    is_output_sidecar,
    named_sources,
    paths_overlap,
    record_key,
    scan_appended_records,
)
from regional_tinystories.languages import load_language
from regional_tinystories.llm import (
    DEFAULT_MAX_REPLY_BYTES,
    BackendConfigError,
    G4FBackend,
    Job,
    OpenAICompatibleBackend,
    OutputError,
    RequestSettings,
    Shard,
    run_requests,
)
from regional_tinystories.replies import (
    parse_scores_reply,
    parse_story_and_summary_reply,
    parse_story_reply,
)
from regional_tinystories.templates import (
    BUILTIN_RUBRICS,
    fill_judge_rubric,
    fill_translation_request,
    load_rubric,
    request_summary_too,
)
from regional_tinystories.translation import source_record, translated_record

# The spellings of earlier releases, accepted for one more with a deprecation note.
RENAMED_OPTIONS = {
    **underscored("--base-url", "--api-key-env", "--max-tokens", "--max-in-flight", "--backoff-base",
                  "--backoff-max", "--min-words", "--min-script-share", "--retry-failed", "--debug-log",
                  "--story-model", "--source-language", "--hf-dataset", "--text-field", "--with-summary"),
    "--split": "--hf_split",  # prepare.py's name for the same thing
}


def _require(record, *fields):
    missing = [field for field in fields if field not in record]
    if missing:
        raise InputError(f"record has no {', '.join(repr(f) for f in missing)}")
    if "ID" in record and (isinstance(record["ID"], bool) or not isinstance(record["ID"], (str, int))):
        raise InputError(f"'ID' is {record['ID']!r:.60}, not a string or an integer")


def _require_text(record, field):
    if not isinstance(record[field], str):
        raise InputError(f"{field!r} is not text")


# ----------------------------------------------------------------------------------------------
# Modes: each checks an input record (returning it as it will be sent, or raising ValueError with
# the reason), builds its prompt and turns the reply into the output record.

class GenerateStories:
    """{ID, language, noun, verb, adjective, ending, template, prompt} -> the same plus model, backend, story, and
    with --with_summary a one-or-two-sentence summary, asked for in the same request."""

    def __init__(self, args, backend):
        self.backend = backend
        self.min_words, self.min_script_share = args.min_words, args.min_script_share
        self.with_summary = args.with_summary

    def check(self, index, record):
        _require(record, "ID", "prompt", "language")
        _require_text(record, "prompt")
        load_language(record["language"])
        return record

    def prompt_for(self, record):
        return request_summary_too(record["prompt"]) if self.with_summary else record["prompt"]

    def result_for(self, record, reply):
        language = load_language(record["language"])
        result = {**record, "model": self.backend.model, "backend": self.backend.name}
        if not self.with_summary:
            return {**result, "story": parse_story_reply(reply, language, self.min_words, self.min_script_share)}
        story, summary = parse_story_and_summary_reply(reply, language, self.min_words, self.min_script_share)
        return {**result, "story": story, "summary": summary}


class EvaluateStories:
    """A story record -> {ID, [sample_index], model, rubric, <the rubric's scores>, judge}."""

    def __init__(self, args, backend):
        self.backend = backend
        self.default_language, self.default_model = args.language, args.story_model
        self.rubric = args.rubric
        self.failure_labels = {"rubric": self.rubric.name}  # a failed record names the rubric it was judged with

    def check(self, index, record):
        _require(record, "ID", "story")
        _require_text(record, "story")
        language = record.get("language") or self.default_language
        model = record.get("model") or self.default_model
        if not language or not model:
            raise InputError("record has no 'language' or no 'model'; pass --language and --story_model to say which")
        load_language(language)
        record = {**record, "language": language, "model": model}
        self.prompt_for(record)  # a record without what the rubric shows the judge stops the run before any request
        return record

    def prompt_for(self, record):
        return fill_judge_rubric(self.rubric, record, load_language(record["language"]).name)

    def result_for(self, record, reply):
        rating = {"ID": record["ID"]}
        if "sample_index" in record:
            rating["sample_index"] = record["sample_index"]
        return {**rating, "model": record["model"], "rubric": self.rubric.name,
                **parse_scores_reply(reply, self.rubric.fields), "judge": self.backend.model}


class TranslateStories:
    """{ID or none, [sample_index], <text field>} -> {ID, [sample_index], language, source_language, [prompt],
    [source_model], source, model, backend, story} (regional_tinystories.translation, shared with
    translate_local.py)."""

    def __init__(self, args, backend):
        self.backend = backend
        self.language, self.source_language = load_language(args.language), load_language(args.source_language)
        self.text_field, self.min_script_share = args.text_field, args.min_script_share

    def check(self, index, record):
        return source_record(index, record, self.text_field)

    def prompt_for(self, record):
        return fill_translation_request(record["source"], self.source_language, self.language)

    def result_for(self, record, reply):
        # A translation far shorter than its source was cut off or summarised.
        min_words = len(record["source"].split()) // 3
        story = parse_story_reply(reply, self.language, min_words, self.min_script_share)
        return translated_record(record, self.language.key, self.source_language.key, story, self.backend.model,
                                 self.backend.name)


MODES = {"generate": GenerateStories, "evaluate": EvaluateStories, "translate": TranslateStories}


# ----------------------------------------------------------------------------------------------
# Inputs and outputs: which records still need doing, and where their results go.

def input_sources(args):
    """[(name, read)] of this run's inputs: read() yields (location, record); the results of input X go to
    <out>/X.jsonl. Refuses two inputs with the same name and any output that is, holds or lies inside an input
    (symlinks resolved): its results would be taken for done work and its last line "repaired" away. Reads
    nothing but folder listings, so it runs before any file is touched."""
    # "roneneldan/TinyStories" -> TinyStories-train.jsonl; X.jsonl, X.json and X.jsonl.gz -> <out>/X.jsonl
    # only translate mode reads Hugging Face datasets (and has --hf_split)
    sources, inputs = named_sources(args.input, args.hf_source, getattr(args, "hf_split", None))
    for path in [*(args.input or []), *inputs]:
        if paths_overlap(path, args.out):
            raise InputError(f"--out {args.out} overlaps the input {path}; write the results to a folder of their own")
        if args.debug_log and paths_overlap(path, args.debug_log):
            raise InputError(f"--debug_log {args.debug_log} overlaps the input {path}")
    input_paths = {os.path.realpath(path) for path in inputs}
    for name, _ in sources:  # an output file that is a symlink to an input
        for output in (os.path.join(args.out, name + ".jsonl"), os.path.join(args.out, name + ".failed.jsonl")):
            if os.path.realpath(output) in input_paths:
                raise InputError(f"{output} is the input {os.path.realpath(output)}; refusing to write to it")
    if args.debug_log and paths_overlap(args.debug_log, args.out):
        raise InputError(f"--debug_log {args.debug_log} lies in --out {args.out}, which holds results only; "
                         "put the log elsewhere")
    return sources


def remember_key(keys, path, record):
    if "ID" not in record:
        raise InputError(f"{path}: holds a record without an 'ID'; is it a make_requests output?")
    keys.add(record_key(record))


def first_records(out_dir):
    """(path, first record) of every .jsonl file in out_dir, failed files included (not hidden ones): the records
    of one file come from one run's settings, so its first tells what they were. Empty or torn first lines are
    skipped (plan_shards repairs them)."""
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if not name.endswith(".jsonl") or name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            first_line = f.readline()
        try:
            first = json.loads(first_line)
        except ValueError:
            continue
        if isinstance(first, dict):
            yield path, first


def refuse_another_rubric(out_dir, rubric_name):
    """InputError if the ratings already in out_dir, or its failed records, were made with another rubric: resuming
    would skip their IDs and leave one folder, and its tables, with two rubrics. A rating without "rubric" is the
    seed rubric's (every rating written before rubrics had names); a failed record without one is not judged."""
    for path, first in first_records(out_dir):
        if is_output_sidecar(path):
            used = first.get("rubric")
        else:
            used = (first.get("rubric") or "seed") if "judge" in first else None
        if used is not None and used != rubric_name:
            raise InputError(f"--out {out_dir} holds ratings made with the rubric {used!r} ({path}); this run uses "
                             f"{rubric_name!r}: write its ratings to a folder of their own")


def refuse_mixed_summaries(out_dir, with_summary):
    """InputError if the stories already in out_dir were generated with(out) --with_summary and this run is not:
    one corpus would hold stories with and without summaries, and prepare.py --format=instruct would find a
    summary for some of them only."""
    for path, first in first_records(out_dir):
        if "story" in first and ("summary" in first) != with_summary:
            had, now = ("without", "with") if with_summary else ("with", "without")
            raise InputError(f"--out {out_dir} holds stories generated {had} --with_summary ({path}); this run is "
                             f"{now} it: write its stories to a folder of their own")


def plan_shards(args, sources):
    """The shards of this run with the keys already in their outputs (IDs only, never whole records); torn last
    lines repaired on the way. With --retry_failed the failed files' keys count as pending."""
    shards = []
    for name, read in sources:
        out_path = os.path.join(args.out, name + ".jsonl")
        failed_path = os.path.join(args.out, name + ".failed.jsonl")
        skip = set()
        for path in (out_path, failed_path) if not args.retry_failed else (out_path,):
            dropped = scan_appended_records(path, functools.partial(remember_key, skip, path))
            if dropped:
                print(f"repaired {path}: cut off a torn last line ({dropped} bytes)", file=sys.stderr)
        shards.append(Shard(name, read, out_path, failed_path, skip))
    return shards


def check_record(mode, index, location, record, seen):
    """(record as it will be sent, its key, None), or (None, None, the Problem) when the mode cannot use it or its
    key is in seen already. Adds the key to seen."""
    try:
        record = mode.check(index, record)
    except ValueError as e:  # InputError, or an unknown language
        return None, None, Problem(location, str(e), fatal=True)
    key = record_key(record)
    if key in seen:
        return None, None, Problem(location, f"duplicate ID {key!r} (an earlier record of this input has it)",
                                   fatal=True)
    seen.add(key)
    return record, key, None


def check_inputs(shards, mode):
    """Read every input once, before anything is sent: (records still to send, problems). The first record the
    mode cannot use or whose ID repeats in its input is a fatal problem and ends the check; results in an output
    whose IDs are not in its input (an earlier run over other records?) are a warning."""
    pending, problems = 0, []
    for shard in shards:
        seen = set()
        for index, (location, record) in enumerate(shard.read()):
            record, key, problem = check_record(mode, index, location, record, seen)
            if problem:
                return pending, problems + [problem]
            pending += key not in shard.skip
        strangers = shard.skip - seen
        if strangers:
            problems.append(Problem(shard.out_path, f"{len(strangers)} finished or failed records have IDs that are "
                                                    f"not in the input (e.g. {min(strangers)!r})"))
    return pending, problems


def pending_jobs(shards, mode):
    """Jobs for every input record not yet done, reading one input at a time. Local inputs were checked by
    check_inputs; a Hugging Face dataset is checked here, as it streams (InputError at a bad record)."""
    for shard in shards:
        seen = set()
        for index, (location, record) in enumerate(shard.read()):
            record, key, problem = check_record(mode, index, location, record, seen)
            if problem:
                raise InputError(str(problem))
            if key not in shard.skip:
                yield Job(key, record, shard)


# ----------------------------------------------------------------------------------------------
# Command line.

def make_backend(args):
    if args.backend == "g4f":
        return G4FBackend(args.model, args.provider, max_reply_bytes=args.max_reply_bytes)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    return OpenAICompatibleBackend(args.base_url, args.model, api_key=api_key, temperature=args.temperature,
                                   max_tokens=args.max_tokens, max_connections=args.max_in_flight,
                                   max_reply_bytes=args.max_reply_bytes)


def lock_output_folder(out_dir):
    """Hold an exclusive lock on out_dir for this process's life: two runs appending to the same files would write
    duplicates. The OS drops the lock when the process dies, even on SIGKILL."""
    return hold_lock(os.path.join(out_dir, ".make_requests.lock"), f"another make_requests run is writing to {out_dir}")


def describe_os_error(e):
    """'path: reason' of a failed file operation (a full disk, a read-only folder), without a traceback."""
    return f"{e.filename}: {e.strerror}" if e.filename and e.strerror else one_line(e)


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", nargs="+", help="JSONL/JSON files or folders of them (translate: also hf:NAME)")
    common.add_argument("--out", required=True, help="output folder")
    common.add_argument("--backend", choices=("openai", "g4f"), default="openai")
    common.add_argument("--base_url", default="https://api.openai.com/v1",
                        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for vLLM or serve.py")
    common.add_argument("--model", default="gpt-4o-mini")
    common.add_argument("--api_key_env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key (unset: send no key)")
    common.add_argument("--provider", help="g4f provider class name, e.g. PollinationsAI (default: g4f picks)")
    common.add_argument("--temperature", type=float, default=1.0)
    common.add_argument("--max_tokens", type=int, help="token limit per reply (default: the server's)")
    common.add_argument("--rps", type=float, help="max requests per second (default: no limit)")
    common.add_argument("--rpm", type=float, help="max requests per minute (default: no limit)")
    common.add_argument("--max_in_flight", type=int, default=16, help="max concurrent requests (default: 16)")
    common.add_argument("--retries", type=int, default=5, help="retries per record after the first try")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one reply")
    common.add_argument("--backoff_base", type=float, default=1.0, help="first retry waits about this long (s)")
    common.add_argument("--backoff_max", type=float, default=60.0, help="longest wait between retries (s)")
    common.add_argument("--max_reply_bytes", type=int, default=DEFAULT_MAX_REPLY_BYTES,
                        help="a longer reply fails its record, unread past this (default: 4 MiB)")
    common.add_argument("--max_connection_failures", type=int, default=5,
                        help="stop when this many requests in a row cannot connect at all (0: never stop)")
    common.add_argument("--min_words", type=int, default=50, help="reject shorter stories (generate mode)")
    common.add_argument("--min_script_share", type=float, default=0.9,
                        help="reject stories with a smaller share of letters in the language's script")
    common.add_argument("--retry_failed", action="store_true", help="try the records in *.failed.jsonl again")
    common.add_argument("--limit", type=int, help="send at most this many records in this run")
    common.add_argument("--debug_log", help="append every raw reply (API key blanked out) to this JSONL file")

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    generate = modes.add_parser("generate", parents=[common], help="write stories for prompt records")
    generate.add_argument("--with_summary", action="store_true",
                          help='ask for {"story", "summary"} in one request: records get a one-or-two-sentence '
                               '"summary" too')
    evaluate = modes.add_parser("evaluate", parents=[common], help="have an LLM judge score stories")
    evaluate.add_argument("--language", help="language of records that do not name one")
    evaluate.add_argument("--story_model", help="model name for records that do not name one")
    evaluate.add_argument("--rubric", default="seed",
                          help=f"what the judge scores: {', '.join(BUILTIN_RUBRICS)} (prompting/rubrics/), or a "
                               "rubric file of your own (default: seed)")
    translate = modes.add_parser("translate", parents=[common], help="translate a corpus")
    translate.add_argument("--language", required=True, help="target language, e.g. hindi")
    translate.add_argument("--hf_dataset", metavar="NAME[:CONFIG]",
                           help="Hugging Face dataset (hub name or local folder), the same as --input hf:NAME")
    add_translation_source_options(translate)  # --source_language, --hf_split, --text_field
    args = parser.parse_args(rename_deprecated_options(sys.argv[1:] if argv is None else list(argv), RENAMED_OPTIONS))

    hf_inputs = [path for path in args.input or [] if path.startswith("hf:")]
    if hf_inputs and (args.mode != "translate" or len(args.input) > 1):
        parser.error("an hf:NAME input works in translate mode only, as the only --input")
    args.hf_source = hf_inputs[0][len("hf:"):] if hf_inputs else getattr(args, "hf_dataset", None)
    if hf_inputs:
        args.input = None
    if not args.input and not args.hf_source:
        parser.error("--input is required" + (" (or --hf_dataset)" if args.mode == "translate" else ""))
    if args.input and args.hf_source:
        parser.error("give --input or --hf_dataset, not both")
    if args.max_in_flight < 1 or args.retries < 0 or args.timeout <= 0 or (args.limit is not None and args.limit < 0):
        parser.error("need --max_in_flight >= 1, --retries >= 0, --timeout > 0 and --limit >= 0")
    if (args.rps is not None and args.rps <= 0) or (args.rpm is not None and args.rpm <= 0):
        parser.error("--rps and --rpm must be positive")
    if args.max_reply_bytes < 1 or args.max_connection_failures < 0:
        parser.error("need --max_reply_bytes >= 1 and --max_connection_failures >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    settings = RequestSettings(max_in_flight=args.max_in_flight, rps=args.rps, rpm=args.rpm, retries=args.retries,
                               timeout=args.timeout, backoff_base=args.backoff_base, backoff_max=args.backoff_max,
                               debug_log=args.debug_log, max_connection_failures=args.max_connection_failures)
    try:
        if args.mode == "evaluate":
            args.rubric = load_rubric(args.rubric)  # a bad rubric file stops the run before any file is touched
        sources = input_sources(args)  # refuses overlapping inputs and outputs before any file is touched
        os.makedirs(args.out, exist_ok=True)
        lock = lock_output_folder(args.out)
        if args.mode == "evaluate":
            refuse_another_rubric(args.out, args.rubric.name)
        elif args.mode == "generate":
            refuse_mixed_summaries(args.out, args.with_summary)
        shards = plan_shards(args, sources)
        backend = make_backend(args)
        mode = MODES[args.mode](args, backend)
        # Local inputs are read through once now; a Hugging Face dataset (maybe millions of rows on the hub) is
        # checked as it streams.
        pending, problems = check_inputs(shards, mode) if not args.hf_source else (None, [])
        for problem in problems:
            if not problem.fatal:
                print(f"warning: {problem}", file=sys.stderr)
        fatal = next((problem for problem in problems if problem.fatal), None)
        if fatal:
            raise InputError(f"{fatal} (nothing was sent)")
        if args.retry_failed:
            for shard in shards:  # those records are pending again; if they fail again they come back
                if os.path.exists(shard.failed_path):
                    os.remove(shard.failed_path)
    except (ValueError, BackendConfigError) as e:  # InputError is a ValueError
        sys.exit(f"error: {e}")
    except OSError as e:  # a read-only or full disk, a file where the folder should be
        sys.exit(f"error: cannot use --out {args.out}: {describe_os_error(e)}")
    already = sum(len(shard.skip) for shard in shards)
    total = pending if args.limit is None or pending is None else min(pending, args.limit)
    jobs = itertools.islice(pending_jobs(shards, mode), args.limit)
    print(f"{args.mode}: {already} records already done or failed; sending the rest to "
          f"{args.backend} model {args.model}", file=sys.stderr)

    started = time.monotonic()
    try:
        stats = asyncio.run(run_requests(jobs, backend, mode, settings, total=total))
    except (InputError, BackendConfigError, OutputError) as e:
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
              "rerun with --retry_failed to try them again")


if __name__ == "__main__":
    main()
