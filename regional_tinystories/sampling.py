"""
Sampling: one frozen SamplingConfig that every generator reads (sample.py, serve.py, the prompt suites, reward
fine-tuning), the per-step token choice, and story generation from prompts.

  SamplingConfig        max_new_tokens, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size, seed
  sample_next           pick the next token of each row from its logits under a SamplingConfig
  encode_prompt         [bos] + prompt ids, cut to fit the window
  generate_stories      num_samples continuations of each prompt, as sample.py's output records
"""
import unicodedata
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F
from tqdm import tqdm


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.8      # 0 = greedy
    top_k: int = 0                # 0 = off
    top_p: float = 1.0            # nucleus sampling; 1.0 = off
    repetition_penalty: float = 1.0   # > 1 discourages tokens already in the text (CTRL-style)
    no_repeat_ngram_size: int = 0     # > 0 forbids repeating any n-gram of this size
    seed: int = 1337

    @classmethod
    def from_settings(cls, settings):
        """The sampling fields of a config dict (other keys are ignored)."""
        return cls(**{k: settings[k] for k in cls.__dataclass_fields__ if k in settings})

    def as_dict(self):
        return asdict(self)


def banned_ngram_tokens(row, n):
    """Tokens that would repeat an n-gram already present in row (a list of ints)."""
    if n <= 0 or len(row) < n:
        return []
    prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return [row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix]


def sample_next(logits, idx, sampling, generator=None):
    """Pick the next token for each row from logits (B, V) given the text so far idx (B, T). temperature 0 (or
    top_k 1) is greedy."""
    if sampling.repetition_penalty != 1.0:  # make every token already in the text less likely
        seen = torch.gather(logits, 1, idx)
        seen = torch.where(seen > 0, seen / sampling.repetition_penalty, seen * sampling.repetition_penalty)
        logits = logits.scatter(1, idx, seen)
    if sampling.no_repeat_ngram_size > 0:
        for b, row in enumerate(idx.tolist()):
            banned = banned_ngram_tokens(row, sampling.no_repeat_ngram_size)
            if banned:
                logits[b, banned] = float("-inf")
    if sampling.temperature == 0 or sampling.top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < sampling.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already cover top_p; the top token always stays
        drop = probs.cumsum(dim=-1) - probs >= sampling.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def encode_prompt(tokenizer, prompt, block_size, instruction=""):
    """[bos] + the ids of the NFC prompt; with an instruct model's instruction block, [bos] + block + prompt, each
    encoded on its own as prepare.py --format=instruct did. A prompt too long for the window keeps its end (and
    the bos), since that is what the story continues from, and leaves room for at least one new token."""
    block = tokenizer.encode(unicodedata.normalize("NFC", instruction)) if instruction else []
    ids = [tokenizer.bos_id] + block + (tokenizer.encode(unicodedata.normalize("NFC", prompt)) if prompt else [])
    if len(ids) > block_size - 1:
        ids = [tokenizer.bos_id] + ids[-(block_size - 2):]
    return ids


def generate_stories(model, tokenizer, prompts, sampling, num_samples=1, device="cpu", model_name="", progress=False,
                     instructions=None):
    """Yield one record per sample of every prompt, prompt by prompt (so a caller can write each as it comes);
    story includes the prompt. instructions: an instruct model's block for each prompt (regional_tinystories.
    instruct), kept out of the story and recorded as "instruction". The model runs in the precision its weights
    have (bf16 weights are cast once by quantize.prepare, not autocast at every step)."""
    for i, prompt in enumerate(tqdm(prompts, desc="sampling", unit="prompt", disable=not progress or None)):
        prompt = unicodedata.normalize("NFC", prompt)
        instruction = instructions[i] if instructions else ""
        ids = encode_prompt(tokenizer, prompt, model.config.block_size, instruction)
        # the story is the prompt (what is left of it in the window) and what follows, never the instruction
        opening = ids[max(1, len(ids) - len(tokenizer.encode(prompt))):] if prompt else []
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
        # one generator per prompt: a prompt's samples do not depend on which other prompts are in the file
        generator = torch.Generator(device=device).manual_seed(sampling.seed + i)
        out = model.generate(idx, sampling, eos_id=tokenizer.eos_id, generator=generator)
        for s, row in enumerate(out[:, len(ids):].tolist()):
            finish = "eos" if tokenizer.eos_id in row else "length"
            new = row[:row.index(tokenizer.eos_id)] if finish == "eos" else row
            record = {"ID": f"prompt-{i + 1:04d}", "prompt": prompt, "sample_index": s,
                      "story": tokenizer.decode(opening + new), "n_tokens": len(new), "finish_reason": finish,
                      "settings": sampling.as_dict(), "model": model_name}
            yield {**record, "instruction": instruction} if instruction else record
