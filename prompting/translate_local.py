"""
Translate a corpus with a local Hugging Face seq2seq model (NLLB-200, M2M-100, mBART-50, or an opus-mt Marian
model), on a CPU, one GPU or many, resumably.

    python prompting/translate_local.py --input data/demo/english.jsonl --language hindi \
        --out data/translated/hindi --model facebook/nllb-200-distilled-600M
    torchrun --standalone --nproc_per_node=8 prompting/translate_local.py --input hf:roneneldan/TinyStories \
        --hf_split train --language bangla --out data/translated/bangla --model facebook/nllb-200-3.3B --batch_size 64

A story is cut into sentences (seq2seq translators learn from single sentences; a whole story as one input is cut
off at the model's length limit or summarised), and a sentence over --max_source_tokens is cut at clause marks,
then between words. The sentences of --chunk_records records at a time are sorted by length and translated in
batches of --batch_size (little padding), with --num_beams beams and at most --max_new_tokens tokens each; the
translations are joined again with the story's paragraph breaks and NFC-normalised (not cleaned of other scripts'
letters as make_requests.py cleans LLM stories: a name left in Latin letters is better kept than cut out of its
sentence; --min_script_share bounds how much of that there may be).

A record fails, with its reason in <out>/X.failed.jsonl, when a sentence's translation reached --max_new_tokens
(cut off, or repeating itself), when the story comes out without letters, when fewer than --min_script_share of
its letters are in the target script, or when the model cannot take it even alone (out of memory). A failed
record is never written as an empty translation.

Output and resume as in make_requests.py: the results of input X go to <out>/X.jsonl, appended and flushed record
by record; the same command again skips every key already in X.jsonl or X.failed.jsonl (unless --retry_failed)
and repairs a line torn by a kill. A record is keyed by its ID and, for sample.py output, its sample_index; its
prompt and the model that wrote it (as source_model) are carried over.

Many GPUs: under torchrun or accelerate launch, each of the N processes takes the records whose key hashes to its
rank (a disjoint share, the same whatever the input order), runs on GPU LOCAL_RANK and appends to
<out>/X.rank<R>-of-<N>.jsonl. When every process is done, rank 0 merges the shards into X.jsonl and checks that no
key is lost or doubled; --merge_only does that merge alone (after a run that was stopped, say).

Why a script of its own rather than a make_requests.py backend: make_requests.py sends one record per request
through an asyncio engine built for remote APIs (rate limits, retries, timeouts), while a local model wants many
records' sentences sorted and batched together on the device, and one process per GPU.
"""
import argparse
import glob
import itertools
import json
import os
import sys
import time
import unicodedata
import zlib
from dataclasses import dataclass
from datetime import timedelta

import torch
from tqdm import tqdm

from regional_tinystories import runtime
from regional_tinystories.cli import add_translation_source_options
from regional_tinystories.errors import InputError, one_line
from regional_tinystories.files import (
    append_record,
    atomic_write,
    hold_lock,
    named_sources,
    paths_overlap,
    record_key,
    scan_appended_records,
)
from regional_tinystories.languages import load_language, script_share
from regional_tinystories.translation import (
    MODEL_FAMILIES,
    join_sentences,
    language_code,
    source_record,
    split_long,
    split_sentences,
    translated_record,
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True,
                   help="JSONL/JSON files or folders of them, or hf:NAME[:CONFIG] (a Hugging Face dataset)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--language", help="target language, e.g. hindi")
    add_translation_source_options(p)  # --source_language, --hf_split, --text_field
    p.add_argument("--model", help="hub name or local folder, e.g. facebook/nllb-200-distilled-600M")
    p.add_argument("--model_family", choices=MODEL_FAMILIES,
                   help="how the model names languages (default: read from the model and its tokenizer)")
    p.add_argument("--batch_size", type=int, default=32, help="sentences per forward pass")
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=200, help="tokens per sentence's translation, at most")
    p.add_argument("--max_source_tokens", type=int, default=200, help="longer sentences are cut in parts first")
    p.add_argument("--chunk_records", type=int, default=256,
                   help="records whose sentences are sorted and batched together (a kill loses at most these)")
    p.add_argument("--min_script_share", type=float, default=0.9,
                   help="fail translations with a smaller share of letters in the target script (0: no check)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="auto: bf16 on GPUs that have it (else fp16); on a CPU bf16 where its bf16 products beat fp32 "
                        "(AMX, some AVX-512 BF16), else fp32")
    p.add_argument("--retry_failed", action="store_true", help="translate the records in *.failed.jsonl again")
    p.add_argument("--limit", type=int, help="only the first N records of the inputs (all processes together)")
    p.add_argument("--merge_only", action="store_true",
                   help="merge the shards of a many-process run; translate nothing")
    args = p.parse_args(argv)
    hf_inputs = [path for path in args.input if path.startswith("hf:")]
    if hf_inputs and len(args.input) > 1:
        p.error("an hf:NAME input must be the only --input")
    args.hf_source = hf_inputs[0][len("hf:"):] if hf_inputs else None
    if min(args.batch_size, args.num_beams, args.max_new_tokens, args.max_source_tokens, args.chunk_records) < 1:
        p.error("--batch_size, --num_beams, --max_new_tokens, --max_source_tokens and --chunk_records must be >= 1")
    if args.limit is not None and args.limit < 0:
        p.error("--limit must be >= 0")
    if not args.merge_only and not (args.language and args.model):
        p.error("--language and --model are required (except with --merge_only)")
    return args


# ----------------------------------------------------------------------------------------------
# Inputs, outputs, and this process's share.

@dataclass
class Shard:
    """One input (file or dataset) and the files its results go to."""
    name: str
    read: object  # () -> iterable of (location, record)
    out_path: str  # this process's results; <out>/X.jsonl when it runs alone
    failed_path: str
    skip: set  # keys already done (or failed) that this process must not translate again


def input_sources(args):
    """[(name, read)] of the inputs; refuses an --out that is, holds or lies inside an input (its results would be
    read as done work), before any file is touched."""
    sources, inputs = named_sources(args.input, args.hf_source, args.hf_split)
    for path in [*args.input, *inputs]:
        if not path.startswith("hf:") and paths_overlap(path, args.out):
            raise InputError(f"--out {args.out} overlaps the input {path}; write the results to a folder of their own")
    return sources


def rank_files(out_dir, name, failed=False):
    """The shard files of many-process runs for input `name`: X.rank<R>-of-<N>.jsonl (or .failed.jsonl)."""
    files = glob.glob(os.path.join(glob.escape(out_dir), f"{glob.escape(name)}.rank*-of-*.jsonl"))
    return sorted(f for f in files if f.endswith(".failed.jsonl") == failed)


def keys_in(path):
    """The keys of the records in an output file (empty if there is none); a torn last line is cut off."""
    keys = set()
    dropped = scan_appended_records(path, lambda record: keys.add(record_key(record)))
    if dropped:
        print(f"repaired {path}: cut off a torn last line ({dropped} bytes)", file=sys.stderr)
    return keys


def plan_shards(args, sources, rank, world):
    """A Shard per input with the keys this process must skip: those in the merged outputs and in its own shard
    files. Refuses to start beside the unmerged shards of a run with another number of processes."""
    shards = []
    for name, read in sources:
        merged_out, merged_failed = (os.path.join(args.out, f"{name}{ext}") for ext in (".jsonl", ".failed.jsonl"))
        own = f"{name}.rank{rank}-of-{world}" if world > 1 else name
        out_path, failed_path = (os.path.join(args.out, f"{own}{ext}") for ext in (".jsonl", ".failed.jsonl"))
        others = [path for path in rank_files(args.out, name) + rank_files(args.out, name, failed=True)
                  if world == 1 or f"-of-{world}." not in os.path.basename(path)]
        if others:
            raise InputError(f"{others[0]}: unmerged output of a run with another number of processes; finish it "
                             "with that many, or merge it first with --merge_only")
        outputs = {merged_out, out_path} | ({merged_failed, failed_path} if not args.retry_failed else set())
        skip = set().union(*(keys_in(path) for path in sorted(outputs)))
        shards.append(Shard(name, read, out_path, failed_path, skip))
    return shards


def share_of(key, world):
    """The process (0..world-1) that translates a record: a hash of its key, so the shares are disjoint and the
    same whatever order the records come in."""
    return zlib.crc32(key.encode("utf-8")) % world


def input_records(shards, args):
    """(shard, key, source record) of the first --limit records of the inputs, in order. A record the translator
    cannot use, or a key given twice in one input, is an InputError naming file:line."""
    count = 0
    for shard in shards:
        seen = set()
        for index, (location, record) in enumerate(shard.read()):
            if args.limit is not None and count >= args.limit:
                return
            count += 1
            try:
                source = source_record(index, record, args.text_field)
            except InputError as e:
                raise InputError(f"{location}: {e}") from None
            key = record_key(source)
            if key in seen:
                raise InputError(f"{location}: duplicate ID {key!r} (an earlier record of this input has it)")
            seen.add(key)
            yield shard, key, source


def pending(shards, args, rank, world):
    for shard, key, source in input_records(shards, args):
        if share_of(key, world) == rank and key not in shard.skip:
            yield shard, key, source


# ----------------------------------------------------------------------------------------------
# The model.

class Translator:
    """A seq2seq model and its tokenizer, set up for one language pair: translate(texts) -> [(text, problem)]."""

    def __init__(self, args, device, dtype):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # slow to import: only translating needs it

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(args.model)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(args.model, dtype=getattr(torch, dtype))
        except Exception as e:  # not found, offline, not a seq2seq model
            raise InputError(f"--model {args.model}: cannot be loaded ({one_line(e)})") from None
        self.model.to(device).eval()
        self.device, self.args = device, args
        self.family = args.model_family or self.family_of()
        self.name = args.model
        self.forced_bos_id = None
        if self.family != "marian":  # a Marian (opus-mt) model translates one language pair: nothing to name
            source_code = language_code(args.source_language, self.family)
            target_token = language_code(args.language, self.family)
            if self.family == "m2m100":
                target_token = f"__{target_token}__"
            self.check_known(source_code if self.family != "m2m100" else f"__{source_code}__", args.source_language)
            self.forced_bos_id = self.check_known(target_token, args.language)
            self.tokenizer.src_lang = source_code

    def family_of(self):
        kind, tokenizer = self.model.config.model_type, type(self.tokenizer).__name__
        if kind == "m2m_100":
            return "nllb" if "Nllb" in tokenizer else "m2m100"
        if kind == "mbart" and "MBart50" in tokenizer:
            return "mbart50"
        if kind == "marian":
            return "marian"
        raise InputError(f"--model {self.args.model}: a {kind} model with a {tokenizer}; this script knows NLLB, "
                         f"M2M-100, mBART-50 and Marian (give --model_family if it is one of those)")

    def check_known(self, token, language):
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise InputError(f"--model {self.args.model}: its tokenizer has no language token {token!r} for "
                             f"{language} (is --model_family {self.family} right?)")
        return token_id

    def count_tokens(self, text):
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def translate(self, texts):
        """[(translation, None) or (None, reason)], one per text. Out of memory: the batch is halved and halved
        again; a text that does not fit alone fails."""
        try:
            return self.generate(texts)
        except torch.OutOfMemoryError as e:
            if device_is_cuda(self.device):
                torch.cuda.empty_cache()
            if len(texts) == 1:
                return [(None, f"does not fit in memory even alone ({one_line(e, 120)})")]
            half = len(texts) // 2
            return self.translate(texts[:half]) + self.translate(texts[half:])

    @torch.no_grad()
    def generate(self, texts):
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        out = self.model.generate(**batch, num_beams=self.args.num_beams, max_new_tokens=self.args.max_new_tokens,
                                  do_sample=False, forced_bos_token_id=self.forced_bos_id)
        generated = out[:, 1:]  # after the decoder's start token
        lengths = (generated != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        rows = [[t for t in row if t != self.forced_bos_id] for row in generated.tolist()]
        decoded = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        cut_off = f"its translation reached --max_new_tokens={self.args.max_new_tokens} (cut off, or repeating itself)"
        return [(None, cut_off) if length >= self.args.max_new_tokens else (text.strip(), None)
                for text, length in zip(decoded, lengths)]


def device_is_cuda(device):
    return device.startswith("cuda")


# ----------------------------------------------------------------------------------------------
# Translating: a chunk of records at a time.

def translate_chunk(chunk, translator, language, args, progress):
    """[(result record, None) or (None, failure reason)], one per (shard, key, source) item of the chunk."""
    parts = []  # (item, sentence index, text): every sentence of every story, long ones in parts
    gaps = []  # per item: the whitespace after each of its sentences
    for item, (_, _, source) in enumerate(chunk):
        sentences = split_sentences(source["source"], args.source_language)
        gaps.append([gap for _, gap in sentences])
        for index, (sentence, _) in enumerate(sentences):
            parts += [(item, index, part)
                      for part in split_long(sentence, translator.count_tokens, args.max_source_tokens)]
    # Sorted by length, a batch holds sentences of about the same length: little padding to compute.
    order = sorted(range(len(parts)), key=lambda i: translator.count_tokens(parts[i][2]))
    translated = [None] * len(parts)
    for start in range(0, len(order), args.batch_size):
        batch = order[start:start + args.batch_size]
        translated_batch = translator.translate([parts[i][2] for i in batch])
        for i, result in zip(batch, translated_batch):
            translated[i] = result
        progress.update(len(batch))

    sentences = [[[] for _ in item_gaps] for item_gaps in gaps]
    problems = [None] * len(chunk)
    for (item, index, _), (text, reason) in zip(parts, translated):
        if reason and problems[item] is None:
            problems[item] = f"sentence {index + 1}: {reason}"
        sentences[item][index].append(text or "")
    results = []
    for item, (_, _, source) in enumerate(chunk):
        if problems[item]:
            results.append((None, problems[item]))
            continue
        story = join_sentences([" ".join(parts_of) for parts_of in sentences[item]], gaps[item])
        story = unicodedata.normalize("NFC", story)
        share = script_share(story, language)
        if not any(ch.isalpha() for ch in story):
            results.append((None, "empty translation"))
        elif share < args.min_script_share:
            reason = f"wrong script: only {share:.0%} of the letters are {language.script} " \
                     f"(need {args.min_script_share:.0%})"
            results.append((None, reason))
        else:
            results.append((translated_record(source, language.key, args.source_language, story, translator.name,
                                              "hf-seq2seq"), None))
    return results


def chunks(items, size):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def write_result(shard, source, result, problem):
    if result is not None:
        append_record(shard.out_path, result)
    else:
        failed = {"ID": source["ID"], **({"sample_index": source["sample_index"]} if "sample_index" in source else {})}
        append_record(shard.failed_path, {**failed, "error": problem})


# ----------------------------------------------------------------------------------------------
# Merging the shards of a many-process run.

def merge(args, shards):
    """Fold each input's rank files into X.jsonl and X.failed.jsonl, then remove them; returns the keys of the
    (first --limit) input records that are in no output. InputError when a key is translated twice."""
    finished = {shard.name: merge_input(args.out, shard.name) for shard in shards}
    return [key for shard, key, _ in input_records(shards, args) if key not in finished[shard.name]]


def merge_input(out_dir, name):
    """Merge the outputs of one input; returns the keys now in X.jsonl or X.failed.jsonl. A failure whose key is
    translated elsewhere is dropped; of several failures of one key the newest (a rank file's) is kept."""
    merged_out, merged_failed = (os.path.join(out_dir, f"{name}{ext}") for ext in (".jsonl", ".failed.jsonl"))
    out_files = [merged_out, *rank_files(out_dir, name)]
    failed_files = [*rank_files(out_dir, name, failed=True), merged_failed]
    translated_in = {}
    for path in out_files:
        for key in keys_in(path):
            if key in translated_in:
                raise InputError(f"{path}: {key!r} is translated in {translated_in[key]} too (did two runs write "
                                 "to this folder at once?)")
            translated_in[key] = path
    failed = set()

    def first_failure(record):
        key = record_key(record)
        if key in translated_in or key in failed:
            return False
        failed.add(key)
        return True

    write_merged(out_files, merged_out, lambda record: True)
    write_merged(failed_files, merged_failed, first_failure)
    for path in out_files[1:] + failed_files[:-1]:
        os.remove(path)
    return translated_in.keys() | failed


def write_merged(paths, target, keep):
    """The records of paths that keep(record) accepts, one file after another, written to target atomically (line by
    line: a merge never holds a corpus in memory). No record kept: no target file."""
    existing = [path for path in paths if os.path.exists(path)]
    if not existing:
        return
    written = 0
    with atomic_write(target) as out:
        for path in existing:
            def copy(record):
                nonlocal written
                if keep(record):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written += 1
            scan_appended_records(path, copy)
    if not written:
        os.remove(target)


# ----------------------------------------------------------------------------------------------
# Command line.

def pick_device(requested, local_rank, world):
    """auto: cuda:LOCAL_RANK under torchrun (cuda alone), else whatever runtime.pick_device finds."""
    device = runtime.pick_device(requested)
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    problem = runtime.device_problem(device)
    if problem:
        raise InputError(problem)
    return device


def main(argv=None):
    args = parse_args(argv)
    rank, local_rank, world = runtime.world_info()
    try:
        language = load_language(args.language) if not args.merge_only else None
        load_language(args.source_language)
        sources = input_sources(args)  # refuses an --out overlapping an input before any file is touched
        os.makedirs(args.out, exist_ok=True)
        lock = hold_lock(os.path.join(args.out, f".translate_local.rank{rank}.lock"),
                         f"another translate_local run is writing to {args.out}")
        if args.merge_only:
            if world > 1:
                raise InputError("--merge_only runs in one process, not under torchrun")
            lost = merge(args, [Shard(name, read, None, None, set()) for name, read in sources])
            print(f"merged; {len(lost)} input records are in no output yet"
                  + (f" (e.g. {lost[0]!r}): run the translation again to do them" if lost else ""))
            return
        shards = plan_shards(args, sources, rank, world)
        # Local inputs are read through once now, so a bad record stops the run before the model is loaded; a
        # Hugging Face dataset is checked as it streams.
        todo = sum(1 for _ in pending(shards, args, rank, world)) if not args.hf_source else None
        if args.retry_failed:
            for shard in shards:  # those records are pending again; if they fail again they come back
                if os.path.exists(shard.failed_path):
                    os.remove(shard.failed_path)
        device = pick_device(args.device, local_rank, world)
        dtype = runtime.pick_dtype(args.dtype, device)
        if world > 1:
            import torch.distributed as dist

            # gloo: the processes only meet at the end, to merge; a slow share may take days
            dist.init_process_group("gloo", timeout=timedelta(days=7))
        translator = Translator(args, device, dtype)
    except InputError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a read-only or full disk, a file where the folder should be
        sys.exit(f"error: cannot use --out {args.out}: {e.strerror or one_line(e)}")

    where = f"rank {rank} of {world}, " if world > 1 else ""
    print(f"translate: {where}{todo if todo is not None else 'all'} records to do with {translator.name} "
          f"({translator.family}) on {device} in {dtype}", file=sys.stderr)
    progress = tqdm(unit="sent", desc=f"translate{' ' + str(rank) if world > 1 else ''}", dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 60)
    ok = failed = 0
    started = time.monotonic()
    try:
        for chunk in chunks(pending(shards, args, rank, world), args.chunk_records):
            for (shard, _, source), (result, problem) in zip(chunk, translate_chunk(chunk, translator, language,
                                                                                     args, progress)):
                write_result(shard, source, result, problem)
                ok, failed = ok + (result is not None), failed + (result is None)
            progress.set_postfix(ok=ok, failed=failed, refresh=False)
    except InputError as e:
        sys.exit(f"error: {e} (results so far are saved; fix this and run the same command to resume)")
    except OSError as e:
        sys.exit(f"error: cannot write to {args.out}: {e.strerror or one_line(e)} (results so far are saved)")
    except KeyboardInterrupt:
        sys.exit("interrupted: results so far are saved; run the same command to resume")
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    print(f"translate: {where}{ok} ok, {failed} failed, {progress.n} sentences in {elapsed:.1f}s "
          f"({progress.n / max(elapsed, 1e-9):.1f} sentences/s)")
    if failed:
        print(f"failed records and reasons are in {args.out}/*.failed.jsonl; rerun with --retry_failed to try them "
              "again")
    if world > 1:
        dist.barrier()  # every share is done
        if rank == 0:
            try:
                lost = merge(args, shards)
            except InputError as e:
                sys.exit(f"error: merge: {e}")
            if lost:
                sys.exit(f"error: merge: {len(lost)} input records are in no output (e.g. {lost[0]!r})")
            print(f"merged the {world} shards into {args.out}")
        dist.destroy_process_group()
    lock.close()


if __name__ == "__main__":
    main()
