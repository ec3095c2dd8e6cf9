"""
Sentences per second of prompting/translate_local.py, run as a user runs it (a subprocess), on the English demo
stories: the script's own figure, which counts translation only (not starting Python or loading the model).

    python scripts/bench_translate.py                                  # a tiny random NLLB-architecture model, CPU
    python scripts/bench_translate.py --model facebook/nllb-200-distilled-600M --device cuda --batch_size 64

Without --model, a tiny randomly initialised model of NLLB's architecture (an M2M-100 network, 1+1 layers of width
16, with an NLLB tokenizer whose 150 pieces are trained here) is built in a temporary folder; its generation config
ends every translation after a few tokens, so it measures the pipeline around the model (sentence splitting,
batching, tokenizing, beam search, writing), not a translation. tests/test_translate_local.py builds its test
models with tiny_seq2seq from here. With a real --model (a hub name or a downloaded folder) it measures that model.
"""
import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from regional_tinystories import PROJECT_ROOT, runtime

SCRIPT = os.path.join(PROJECT_ROOT, "prompting", "translate_local.py")
DEMO = os.path.join(PROJECT_ROOT, "data", "demo", "english.jsonl.gz")
# text the tiny model's tokenizer learns from: a little of each language it may be asked about
TOKENIZER_TEXT = ["Tom had a red ball. He liked to play with it in the park every day!",
                  "Lily saw a small cat under the tree. She gave it some milk.", "\"Thank you,\" said the cat.",
                  "एक दिन छोटी मीरा बाज़ार गई। उसने लाल पतंग खरीदी।", "राजू का कुत्ता बहुत प्यारा था।",
                  "একদিন ছোট্ট টুনু নদীর ধারে গেল।", "एकदा एका गावात एक हुशार कावळा राहत होता."]
NLLB_CODES = ["eng_Latn", "hin_Deva", "mar_Deva", "ben_Beng"]


def tiny_seq2seq(folder, family="nllb"):
    """Save a randomly initialised seq2seq model of the family's architecture ('nllb', 'm2m100' or 'marian') with a
    tokenizer trained here into folder. Its generation config raises the end-of-sequence score after a few tokens,
    so that its (random) translations end by themselves."""
    import sentencepiece as spm
    import torch
    from transformers import (GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer,
                              MarianConfig, MarianMTModel, MarianTokenizer, NllbTokenizer)

    os.makedirs(folder, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TOKENIZER_TEXT * 20), model_writer=model_bytes,
                                   vocab_size=150, model_type="bpe", character_coverage=1.0, minloglevel=3)
    spm_path = os.path.join(folder, "sentencepiece.bpe.model")
    with open(spm_path, "wb") as f:
        f.write(model_bytes.getvalue())
    processor = spm.SentencePieceProcessor(model_file=spm_path)
    pieces = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    vocab_path = os.path.join(folder, "vocab.json")
    if family == "nllb":
        tokenizer = NllbTokenizer.from_pretrained(folder, src_lang="eng_Latn", additional_special_tokens=NLLB_CODES)
    elif family == "m2m100":
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(pieces, f)
        tokenizer = M2M100Tokenizer(vocab_path, spm_path, src_lang="en")
    else:
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump({**pieces, "<pad>": len(pieces)}, f)
        tokenizer = MarianTokenizer(spm_path, spm_path, vocab_path)
    special = [f"__{code}__" for code in ("en", "hi", "mr", "bn")] if family == "m2m100" else []  # after the pieces
    vocab_size = 1 + max(tokenizer.convert_tokens_to_ids(token) for token in [*tokenizer.get_vocab(), *special])
    sizes = dict(vocab_size=vocab_size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256,
                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if family == "marian":
        model = MarianMTModel(MarianConfig(**sizes, decoder_start_token_id=tokenizer.pad_token_id))
    else:
        model = M2M100ForConditionalGeneration(M2M100Config(**sizes, decoder_start_token_id=tokenizer.eos_token_id))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=model.config.decoder_start_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, exponential_decay_length_penalty=(4, 4.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="hub name or folder (default: a tiny random NLLB-architecture model)")
    p.add_argument("--language", default="hindi")
    p.add_argument("--stories", type=int, default=100, help="English demo stories to translate")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_seq2seq(os.path.join(tmp, "tiny-nllb"))
        command = [sys.executable, SCRIPT, "--input", DEMO, "--out", os.path.join(tmp, "out"), "--model", model,
                   "--language", args.language, "--limit", str(args.stories), "--batch_size", str(args.batch_size),
                   "--num_beams", str(args.num_beams), "--device", args.device, "--dtype", args.dtype,
                   "--min_script_share", "0" if not args.model else "0.9"]
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"error: exit {proc.returncode}")
    summary = re.search(r"(\d+) ok, (\d+) failed, (\d+) sentences in ([\d.]+)s \(([\d.]+) sentences/s\)", proc.stdout)
    ok, failed, sentences, seconds, rate = summary.groups()
    print(f"| model | device | batch | beams | stories ok / failed | sentences | seconds | sentences/s |\n"
          f"|---|---|---|---|---|---|---|---|\n"
          f"| {args.model or 'tiny random NLLB-architecture (1+1 layers, width 16)'} | {args.device} "
          f"({runtime.cpu_name() if args.device == 'cpu' else args.device}) | {args.batch_size} | {args.num_beams} | "
          f"{ok} / {failed} | {sentences} | {seconds} | **{rate}** |")


if __name__ == "__main__":
    main()
