"""
Generate stories from a trained checkpoint, on CPU by default when there is no GPU.

    python training-inference/sample.py --init_from=out/demo-hindi --start="एक दिन"
    python training-inference/sample.py configs/sample-default.py --init_from=out/demo-hindi \
        --start=FILE:training-inference/prompts/hindi.txt --num_samples=2 --output_format=jsonl --out_file=out/samples.jsonl

A model trained on a --format=instruct dataset (TinyStories-Instruct) also writes to a spec: the same block
prepare.py put before each story is built from --words, --ending, --features, --sentence, --summary (or one spec
per line of a JSONL --spec_file, with an optional "start" each), and --start becomes the story's opening:

    python training-inference/sample.py --init_from=out/instruct-hindi --words=बिल्ली,कूदना,छोटा --ending="a happy ending"

The tokenizer is the one recorded in the checkpoint. Each prompt is encoded as [bos] + prompt and its samples
are generated as one batch with a KV cache; a sample stops at <eos> or after max_new_tokens. json/jsonl output
holds records {ID, prompt, sample_index, story, n_tokens, finish_reason, settings, model} that the judge
(prompting/make_requests.py evaluate) and scripts/story_metrics.py read directly.
"""
import json
import os
import signal
import sys
from types import SimpleNamespace

from regional_tinystories import checkpoint, instruct, quantize, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.config import ConfigError, load_config
from regional_tinystories.errors import InputError
from regional_tinystories.files import read_input_records, write_text_atomic
from regional_tinystories.sampling import SamplingConfig, generate_stories

DEFAULTS = dict(
    init_from="out/run",       # run folder (its ckpt_best.pt), a .pt file, hf:OWNER/REPO/FILE.pt, gpt2, a transformers folder
    tokenizer="",              # for a checkpoint that carries no tokenizer (nanoGPT's): e.g. tiktoken:gpt2, sarvam
    start="",                  # prompt text, or FILE:path/to/prompts.txt (one prompt per line)
    words="",                  # instruct models: comma-separated words the story must use
    ending="",                 # instruct models: the ending, e.g. "a happy ending" (or in the story's language)
    features="",               # instruct models: e.g. dialogue
    sentence="",               # instruct models: a sentence the story should contain
    summary="",                # instruct models: what the story is about
    spec_file="",              # instruct models: a JSONL file of specs {words, ending, features, ..., start}
    language="",               # instruct models trained on several languages: the labels' language
    num_samples=1,             # samples per prompt, generated together as one batch
    max_new_tokens=256,
    temperature=0.8,           # 0 = greedy
    top_k=0,                   # 0 = off
    top_p=1.0,                 # nucleus sampling; 1.0 = off
    repetition_penalty=1.0,    # > 1 discourages tokens already in the text
    no_repeat_ngram_size=0,    # > 0 forbids repeating any n-gram of this size
    seed=1337,
    device="auto",
    dtype="auto",              # 'auto': bfloat16 on GPUs that have it (weights cast once), else float32
    quantize="none",           # 'int8': int8 weights (weight-only, one scale per row), CPU only
    compile=False,             # torch.compile the decoding step: faster after a compile of ~20-30 s (README)
    output_format="text",      # 'text', 'json' or 'jsonl'
    out_file="",               # empty: print to stdout
)
CHOICES = dict(output_format=("text", "json", "jsonl"), dtype=("auto", "float32", "bfloat16", "float16"),
               quantize=quantize.QUANTIZE_CHOICES)


def read_prompts(start):
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        if not os.path.isfile(path):
            raise ConfigError(f"prompt file {path}: not found")
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
        if not prompts:
            raise ConfigError(f"prompt file {path}: no prompts in it")
        return prompts
    return [start]


def instruction_blocks(cfg, ckpt, prompts):
    """(prompts, the instruct block of each or None): the spec settings or --spec_file rendered as the model's
    training data was; None when no spec is given."""
    spec = instruct.user_spec(cfg.words, cfg.ending, cfg.features, cfg.sentence, cfg.summary)
    if not spec and not cfg.spec_file:
        return prompts, None
    fmt, language = instruct.model_format(ckpt, cfg.language)
    if cfg.spec_file:
        if spec:
            raise ConfigError("give the spec either as --words/--ending/... or as --spec_file, not both")
        if not os.path.isfile(cfg.spec_file):
            raise ConfigError(f"spec file {cfg.spec_file}: not found")
        records = list(read_input_records(cfg.spec_file))
        if not records:
            raise ConfigError(f"spec file {cfg.spec_file}: no specs in it")
        prompts = [record.get("start", "") if isinstance(record.get("start", ""), str) else "" for _, record in records]
        specs = [instruct.spec_of_request(record, location) for location, record in records]
    else:
        specs = [spec] * len(prompts)
    return prompts, [fmt.render(instruct.localized_spec(s, language), language) for s in specs]


def format_record(record, fmt):
    """One sample as text or as a JSONL line (json output is one list, written at the end)."""
    if fmt == "text":
        return (f"--- {record['ID']} sample {record['sample_index']} ({record['n_tokens']} tokens, "
                f"{record['finish_reason']})\n{record['story']}\n\n")
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_samples(records, fmt, out_file):
    """Write samples as they are generated: text and jsonl one record at a time, flushed at once, so Ctrl-C (or a
    kill) keeps every sample finished so far; json as one list, written atomically at the end, also after Ctrl-C.
    Returns (samples written, whether Ctrl-C stopped it)."""
    written, interrupted = [], False
    if out_file:
        os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    stream = sys.stdout if not out_file or fmt == "json" else open(out_file, "w", encoding="utf-8")
    try:
        for record in records:
            if fmt != "json":
                stream.write(format_record(record, fmt))
                stream.flush()
            written.append(record)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if stream is not sys.stdout:
            stream.close()
    if fmt == "json":
        text = json.dumps(written, ensure_ascii=False, indent=2) + "\n"
        if out_file:
            write_text_atomic(out_file, text)
        else:
            sys.stdout.write(text)
    return len(written), interrupted


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = SimpleNamespace(**load_config(DEFAULTS, argv, CHOICES, __doc__))
        prompts = read_prompts(cfg.start)
        device = runtime.pick_device(cfg.device)
        dtype = quantize.inference_dtype(cfg.dtype, cfg.quantize, device)
        model, tokenizer, ckpt = load_model(cfg.init_from, device, cfg.tokenizer)
        prompts, instructions = instruction_blocks(cfg, ckpt, prompts)
    except (ConfigError, InputError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    print(f"{ckpt['path']}: {model.num_params() / 1e6:.2f}M params, tokenizer {tk.describe(tokenizer.spec)}, "
          f"device {device}, dtype {dtype}{', int8 weights' * (cfg.quantize == 'int8')}, {len(prompts)} prompt(s) x "
          f"{cfg.num_samples}", file=sys.stderr)
    model = quantize.prepare(model, dtype, cfg.quantize)  # after counting: int8 weights are no longer parameters
    if cfg.compile:
        model.compile_decoding()
    records = generate_stories(model, tokenizer, prompts, SamplingConfig.from_settings(vars(cfg)),
                               num_samples=cfg.num_samples, device=device, model_name=ckpt["path"],
                               progress=True, instructions=instructions)
    count, interrupted = write_samples(records, cfg.output_format, cfg.out_file)
    if interrupted:
        print(f"\ninterrupted: kept the {count} samples finished so far in {cfg.out_file or 'stdout'}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    if cfg.out_file:
        print(f"wrote {count} samples to {cfg.out_file}", file=sys.stderr)


if __name__ == "__main__":
    main()
