"""
regional_tinystories: what several stages of Regional TinyStories share. Each stage stays a script of its own
(prompting/, training-inference/, scripts/); this package holds only the pieces they have in common.

  errors       the one input-error type (file:line + message), one-line wrapping of other libraries' errors
  files        atomic writes, JSON/JSONL reading and appending, input expansion
  corpus       documents from local files or a Hugging Face dataset, for tokenizing
  languages    language folders (script ranges, sentence ends), text cleaning
  templates    story, judge and translation prompt templates
  replies      parsing and checking LLM replies (stories, judge scores)
  llm          LLM backends and the resumable request engine
  translation  translation records, sentence splitting and model language codes (make_requests, translate_local)
  tokenizer    one interface over SentencePiece, byte-level BPE, tiktoken and HF tokenizers
  model        the GPT (classic and modern recipes) with KV-cache generation
  sampling     SamplingConfig, token choice, story generation
  checkpoint   saving and loading checkpoints and models
  config       the --key=value config loader
  cli          underscore option names for the argparse scripts, old hyphenated spellings as deprecated aliases
  dataset      prepared datasets: meta.json, .bin checks, bits per byte
  training     what training scripts share: settings checks, batches, LR schedule, evaluation, run state,
               checkpoint save/resume, run log, stopping on SIGINT/SIGTERM
  runtime      device, dtype, autocast, timing
  plots        loss curves
  metrics      story, tokenizer and rating metrics for the analysis scripts
  attention    attention weights recomputed from the model's own modules, and each head's kind
"""
import os

# The repository root: word lists, prompts and demo data live in the stage folders beside this package.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
