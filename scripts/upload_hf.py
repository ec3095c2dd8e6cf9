"""
Publish a trained run on the Hugging Face hub: the checkpoint, a transformers export (so AutoModelForCausalLM
and AutoTokenizer load it directly) and a model card, uploaded with huggingface_hub.

    export HF_TOKEN=hf_...                      # read from the environment only, never written anywhere
    python scripts/upload_hf.py out/hindi-small --repo you/hindi-tinystories-5m [--private]
    python scripts/upload_hf.py out/hindi-small --repo you/hindi-tinystories-5m --stage_only --out_dir out/stage

The staged folder holds ckpt_best.pt (this project's format: sample.py and serve.py load it with
--init_from=hf:OWNER/REPO/ckpt_best.pt), model.safetensors + config.json + generation_config.json + the tokenizer
files, loss.png, and README.md: language, tokenizer, parameters with and without embeddings, training tokens, val
loss and bits per byte, the loss curve and the train command, from the run's summary.json and checkpoint.
"""
import argparse
import os
import shutil
import sys
import tempfile

from regional_tinystories import checkpoint, convert, metrics
from regional_tinystories.errors import InputError, one_line
from regional_tinystories.files import write_text_atomic

LANGUAGE_CODES = {"hindi": "hi", "marathi": "mr", "bangla": "bn", "english": "en"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a train.py output folder (ckpt_best.pt, summary.json, loss.png)")
    p.add_argument("--repo", required=True, help="OWNER/NAME on the hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--stage_only", action="store_true", help="write the folder (to --out_dir) but upload nothing")
    p.add_argument("--out_dir", default="", help="where to stage (default: a temporary folder)")
    return p.parse_args(argv)


def read_summary(run_dir):
    import json
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        raise InputError(f"{path}: missing (the run has not finished: train.py writes it at the end)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fmt(value, digits=4):
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def model_card(repo, summary, ckpt, model, language):
    lang = LANGUAGE_CODES.get(language)
    arch = "LlamaForCausalLM" if model.config.recipe == "modern" else "GPT2LMHeadModel"
    front = ["---", *([f"language: {lang}"] if lang else []), "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [regional-tinystories, tinystories, small-language-model, children-stories]", "---", ""]
    rows = [("language", language or "unknown"), ("tokenizer", summary.get("tokenizer") or "—"),
            ("architecture", f"{model.config.recipe} recipe ({arch}): {model.config.n_layer} layers x "
                             f"{model.config.n_embd} hidden, {model.config.n_head} heads, context "
                             f"{model.config.block_size}"),
            ("parameters", f"{model.num_params():,} ({model.num_params(non_embedding=True):,} without embeddings)"),
            ("training tokens", fmt(summary.get("tokens"))), ("iterations", fmt(summary.get("iters"))),
            ("best val loss (nats/token)", fmt(summary.get("best_val_loss"))),
            ("best val bits per byte", fmt(summary.get("best_val_bpb"))),
            ("dataset", summary.get("dataset", "—"))]
    table = metrics.markdown_table(["", ""], rows)
    command = summary.get("command") or "(not recorded)"
    return "\n".join(front) + f"""# {repo.split('/')[-1]}

A small story language model for children's stories in {language or 'its language'}, trained with Regional
TinyStories. It continues a story opening; it does not follow instructions.

{table}
Bits per byte is the loss to compare across tokenizers (prepare.py holds out the same text whatever the tokenizer).

![loss curve](loss.png)

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{repo}")
tokenizer = AutoTokenizer.from_pretrained("{repo}")
ids = tokenizer("एक दिन", return_tensors="pt").input_ids        # [bos] + the opening, as in training
out = model.generate(ids, max_new_tokens=200, do_sample=True, temperature=0.8, top_p=0.95)
print(tokenizer.decode(out[0], skip_special_tokens=True))
```

With Regional TinyStories itself: `python training-inference/sample.py --init_from=hf:{repo}/ckpt_best.pt --start="एक दिन"`.

## Training

```bash
{command}
```
"""


def stage(args, folder):
    summary = read_summary(args.run_dir)
    model, tok, ckpt = checkpoint.load_model(args.run_dir)
    language = metrics.language_in(f"{summary.get('dataset', '')} {args.run_dir}")
    hf_model, hf_tok = convert.to_hf(model, tok)
    from transformers import GenerationConfig
    hf_model.generation_config = GenerationConfig(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
                                                  pad_token_id=tok.eos_id)
    hf_model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    shutil.copy(ckpt["path"], os.path.join(folder, "ckpt_best.pt"))
    if os.path.isfile(os.path.join(args.run_dir, "loss.png")):
        shutil.copy(os.path.join(args.run_dir, "loss.png"), os.path.join(folder, "loss.png"))
    write_text_atomic(os.path.join(folder, "README.md"), model_card(args.repo, summary, ckpt, model, language))


def upload(args, folder):
    from huggingface_hub import HfApi
    token = os.environ["HF_TOKEN"]
    api = HfApi(token=token)
    try:
        api.create_repo(args.repo, private=args.private, exist_ok=True)
        api.upload_folder(repo_id=args.repo, folder_path=folder, commit_message="Upload Regional TinyStories model")
    except Exception as e:  # offline, bad token, no rights on the repo
        raise InputError(f"upload to {args.repo} failed ({one_line(e, 200).replace(token, '***')})") from None


def main(argv=None):
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # a tiny model's shard bar is noise around the one result line
    try:
        if not args.stage_only and not os.environ.get("HF_TOKEN"):  # before minutes of staging, not after
            raise InputError("HF_TOKEN is not set: create a write token on the hub and export HF_TOKEN=...")
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            stage(args, args.out_dir)
            folder = args.out_dir
        else:
            folder = tempfile.mkdtemp(prefix="upload-")
            stage(args, folder)
        print(f"staged {args.run_dir} in {folder}")
        if not args.stage_only:
            upload(args, folder)
            print(f"uploaded to https://huggingface.co/{args.repo}")
    except (InputError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
