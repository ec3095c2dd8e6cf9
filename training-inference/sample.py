"""
Generate stories from a trained checkpoint, on CPU by default when there is no GPU.

    python training-inference/sample.py --init_from=out/demo-hindi --start="एक दिन"
    python training-inference/sample.py configs/sample-default.py --init_from=out/demo-hindi \
        --start=FILE:training-inference/prompts/hindi.txt --num_samples=2 --output_format=jsonl --out_file=out/samples.jsonl

The tokenizer is the one recorded in the checkpoint. Each prompt is encoded as [bos] + prompt and its samples
are generated as one batch with a KV cache; a sample stops at <eos> or after max_new_tokens. json/jsonl output
holds records {ID, prompt, sample_index, story, n_tokens, finish_reason, settings, model} that the judge
(prompting/make_requests.py evaluate) and scripts/story_metrics.py read directly.
"""
import json
import os
import sys
import unicodedata
from types import SimpleNamespace

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer as tk  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from utils import checkpoint, runtime  # noqa: E402
from utils.configurator import ConfigError, load_config  # noqa: E402

DEFAULTS = dict(
    init_from="out/run",       # run folder (its ckpt_best.pt), a .pt file, or hf:OWNER/REPO/FILE.pt
    start="",                  # prompt text, or FILE:path/to/prompts.txt (one prompt per line)
    num_samples=1,             # samples per prompt, generated together as one batch
    max_new_tokens=256,
    temperature=0.8,           # 0 = greedy
    top_k=0,                   # 0 = off
    top_p=1.0,                 # nucleus sampling; 1.0 = off
    repetition_penalty=1.0,    # > 1 discourages tokens already in the text
    no_repeat_ngram_size=0,    # > 0 forbids repeating any n-gram of this size
    seed=1337,
    device="auto",
    dtype="auto",
    output_format="text",      # 'text', 'json' or 'jsonl'
    out_file="",               # empty: print to stdout
)
CHOICES = dict(output_format=("text", "json", "jsonl"), dtype=("auto", "float32", "bfloat16", "float16"))
SETTING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size", "seed")


def load_model(source, device="cpu"):
    """(model in eval mode on device, tokenizer, checkpoint dict) from a run folder, .pt file or hf: path."""
    ckpt = checkpoint.load(source, map_location=device)
    model = GPT(ModelConfig(**ckpt["model_args"]))
    model.load_state_dict(checkpoint.clean_state_dict(ckpt["model"]))
    model.to(device).eval()
    if "tokenizer" not in ckpt:
        raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: no tokenizer recorded")
    return model, tk.from_export(ckpt["tokenizer"]), ckpt


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


def encode_prompt(tokenizer, prompt, block_size):
    """[bos] + the ids of the NFC prompt. A prompt too long for the window keeps its end (and the bos), since that
    is what the story continues from, and leaves room for at least one new token."""
    ids = [tokenizer.bos_id] + tokenizer.encode(unicodedata.normalize("NFC", prompt))
    if len(ids) > block_size - 1:
        ids = [tokenizer.bos_id] + ids[-(block_size - 2):]
    return ids


def generate_stories(model, tokenizer, prompts, num_samples=1, max_new_tokens=256, temperature=0.8, top_k=None,
                     top_p=None, repetition_penalty=1.0, no_repeat_ngram_size=0, seed=1337, device="cpu",
                     dtype="float32", model_name="", progress=False):
    """Sample num_samples continuations of every prompt. Returns one record per sample; story includes the prompt."""
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None,
                    top_p=top_p if top_p and top_p < 1 else None, repetition_penalty=repetition_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size, seed=seed)
    records = []
    for i, prompt in enumerate(tqdm(prompts, desc="sampling", unit="prompt", disable=not progress or None)):
        prompt = unicodedata.normalize("NFC", prompt)
        ids = encode_prompt(tokenizer, prompt, model.config.block_size)
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
        # one generator per prompt: a prompt's samples do not depend on which other prompts are in the file
        generator = torch.Generator(device=device).manual_seed(seed + i)
        with runtime.autocast(device, dtype):
            out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=settings["top_k"],
                                 top_p=settings["top_p"], repetition_penalty=repetition_penalty,
                                 no_repeat_ngram_size=no_repeat_ngram_size, eos_id=tokenizer.eos_id,
                                 generator=generator)
        for s, row in enumerate(out[:, len(ids):].tolist()):
            finish = "eos" if tokenizer.eos_id in row else "length"
            new = row[:row.index(tokenizer.eos_id)] if finish == "eos" else row
            story = tokenizer.decode(ids[1:] + new)
            records.append({"ID": f"prompt-{i + 1:04d}", "prompt": prompt, "sample_index": s, "story": story,
                            "n_tokens": len(new), "finish_reason": finish, "settings": settings,
                            "model": model_name})
    return records


def write_output(records, fmt, out_file):
    if fmt == "text":
        text = "".join(f"--- {r['ID']} sample {r['sample_index']} ({r['n_tokens']} tokens, {r['finish_reason']})\n"
                       f"{r['story']}\n\n" for r in records)
    elif fmt == "json":
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not out_file:
        sys.stdout.write(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    tmp = out_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out_file)
    print(f"wrote {len(records)} samples to {out_file}", file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = SimpleNamespace(**load_config(DEFAULTS, argv, CHOICES, __doc__))
        prompts = read_prompts(cfg.start)
        device = runtime.pick_device(cfg.device)
        dtype = runtime.pick_dtype(cfg.dtype, device)
        model, tokenizer, ckpt = load_model(cfg.init_from, device)
    except (ConfigError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    print(f"{ckpt['path']}: {model.num_params() / 1e6:.2f}M params, tokenizer {tk.describe(tokenizer.spec)}, "
          f"device {device}, dtype {dtype}, {len(prompts)} prompt(s) x {cfg.num_samples}", file=sys.stderr)
    records = generate_stories(model, tokenizer, prompts, model_name=ckpt["path"], device=device, dtype=dtype,
                               num_samples=cfg.num_samples, progress=True,
                               **{k: getattr(cfg, k) for k in SETTING_KEYS})
    write_output(records, cfg.output_format, cfg.out_file)


if __name__ == "__main__":
    main()
