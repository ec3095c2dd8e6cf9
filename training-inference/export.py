"""
Export a trained checkpoint for other runtimes.

    python training-inference/export.py out/hindi-small --format=hf --out=out/export/hindi-small-hf
    python training-inference/export.py out/hindi-small --format=gguf --out=out/export/hindi-small-gguf
    python training-inference/export.py out/hindi-small --format=llama2c --out=out/export/hindi-small-llama2c

hf       a transformers folder: LlamaForCausalLM (modern recipe) or GPT2LMHeadModel (classic), model.safetensors,
         config.json, generation_config.json (bos/eos) and the tokenizer, so that
         AutoModelForCausalLM.from_pretrained(DIR) + AutoTokenizer.from_pretrained(DIR) continue a story exactly
         as sample.py does.
gguf     DIR/model.gguf (float32, vocabulary and special tokens inside) for llama.cpp / Ollama, and for
         transformers' from_pretrained(DIR, gguf_file="model.gguf").
llama2c  DIR/model.bin + DIR/tokenizer.bin for llama2.c's run.c (--llama2c_version=0, the layout run.c reads;
         1 writes export.py's version-1 header). Modern recipe, SentencePiece tokenizer, no biases.

A model with QK-norm, or a tokenizer a format cannot hold, is refused in one line. The first argument is a run
folder (its ckpt_best.pt), a .pt file, or hf:OWNER/REPO/FILE.pt.
"""
import argparse
import os
import sys

from regional_tinystories import checkpoint
from regional_tinystories import convert
from regional_tinystories import tokenizer as tk
from regional_tinystories.errors import InputError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("init_from", help="run folder, .pt checkpoint, or hf:OWNER/REPO/FILE.pt")
    p.add_argument("--format", required=True, choices=["hf", "gguf", "llama2c"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--llama2c_version", type=int, default=0, choices=[0, 1])
    return p.parse_args(argv)


def export_hf(model, tok, ckpt, out):
    from transformers import GenerationConfig
    hf_model, hf_tok = convert.to_hf(model, tok)
    hf_model.generation_config = GenerationConfig(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
                                                  pad_token_id=tok.eos_id, max_length=model.config.block_size)
    hf_model.save_pretrained(out)  # model.safetensors, config.json, generation_config.json
    hf_tok.save_pretrained(out)


def main(argv=None):
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # a tiny model's shard bar is noise around the one result line
    try:
        model, tok, ckpt = checkpoint.load_model(args.init_from)
        os.makedirs(args.out, exist_ok=True)
        if args.format == "hf":
            export_hf(model, tok, ckpt, args.out)
        elif args.format == "gguf":
            convert.write_gguf(model, tok, os.path.join(args.out, "model.gguf"),
                               name=os.path.basename(os.path.dirname(ckpt["path"])) or "regional-tinystories")
        else:
            convert.write_llama2c(model, tok, args.out, version=args.llama2c_version)
    except (checkpoint.CheckpointError, tk.TokenizerError, InputError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: {args.out}: cannot be written ({e.strerror or e})")
    print(f"exported {ckpt['path']} ({model.config.recipe} recipe, {model.num_params() / 1e6:.2f}M parameters) "
          f"as {args.format} to {args.out}")


if __name__ == "__main__":
    main()
