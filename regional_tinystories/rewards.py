"""
Rewards for reward fine-tuning (training-inference/finetune_reward.py): small functions, chosen by name.

A reward scores a batch: fn(completions, records, options) -> one float per completion. completions are the texts
the model wrote after each prompt (the prompt left out), records the prompt records they continue (a .txt prompt
file gives {"prompt": line}), options the run's settings (target_words, language, length_min, ...). Register one
with @reward("name") and pick it with --reward=name; names joined by '+' add up (--reward=coverage+length_band).

    @reward("exclamations")
    def exclamations(completions, records, options):
        return [float(text.count("!")) for text in completions]

  target_words     how often the completion uses a target word, inflected forms included (the seed's "cat")
  target_presence  1 when it uses any target word at all, else 0
  coverage         the share of the record's noun / verb / adjective fields it uses (the prompt's required words)
  length_band      1 inside [length_min, length_max] words, falling linearly to 0 at 0 and at 2 x length_max
  embedding        cosine similarity to options.topic under a local sentence-embedding model (embedding_model)
"""
from regional_tinystories.errors import InputError
from regional_tinystories.metrics import uses_word, words

REWARDS = {}
REQUIRED_WORD_FIELDS = ("noun", "verb", "adjective")


def reward(name):
    def register(fn):
        REWARDS[name] = fn
        return fn
    return register


def parse_names(spec):
    """'coverage+length_band' -> ['coverage', 'length_band'], refusing unknown names in one line."""
    names = [name.strip() for name in spec.split("+") if name.strip()]
    unknown = [name for name in names if name not in REWARDS]
    if unknown or not names:
        raise InputError(f"reward={spec!r}: {'unknown reward ' + ', '.join(unknown) if unknown else 'no reward named'}"
                         f" (one of {', '.join(sorted(REWARDS))}, joined by '+')")
    return names


def score(names, completions, records, options):
    """(the summed reward of each completion, {name: that reward's scores})."""
    parts = {name: [float(s) for s in REWARDS[name](completions, records, options)] for name in names}
    return [sum(values) for values in zip(*parts.values())], parts


def target_list(options):
    targets = [w.strip() for w in options.target_words.split(",") if w.strip()]
    if not targets:
        raise InputError("target_words is empty: give the words to reward, e.g. --target_words=बिल्ली,cat")
    return targets


@reward("target_words")
def target_words(completions, records, options):
    targets = target_list(options)
    return [sum(any(uses_word(w, target, options.language) for target in targets) for w in words(text))
            for text in completions]


@reward("target_presence")
def target_presence(completions, records, options):
    targets = target_list(options)
    return [float(any(uses_word(text, target, options.language) for target in targets)) for text in completions]


@reward("coverage")
def coverage(completions, records, options):
    scores = []
    for text, record in zip(completions, records):
        required = [record[field] for field in REQUIRED_WORD_FIELDS if isinstance(record.get(field), str) and record[field]]
        if not required:
            raise InputError(f"reward coverage: prompt record {record.get('ID', record.get('prompt', '')[:40])!r} has "
                             f"none of the fields {', '.join(REQUIRED_WORD_FIELDS)}")
        language = record.get("language") or options.language
        scores.append(sum(uses_word(text, word, language) for word in required) / len(required))
    return scores


@reward("length_band")
def length_band(completions, records, options):
    low, high = options.length_min, options.length_max
    scores = []
    for text in completions:
        n = len(words(text))
        if n < low:
            scores.append(n / low)
        elif n > high:
            scores.append(max(0.0, 1 - (n - high) / high))
        else:
            scores.append(1.0)
    return scores


EMBEDDERS = {}  # path -> (tokenizer, model), loaded once per process


@reward("embedding")
def embedding(completions, records, options):
    import torch
    from torch.nn import functional as F
    if not options.embedding_model or not options.topic:
        raise InputError("reward embedding needs embedding_model (a local sentence-embedding model folder) and topic")
    if options.embedding_model not in EMBEDDERS:
        from transformers import AutoModel, AutoTokenizer
        try:
            EMBEDDERS[options.embedding_model] = (AutoTokenizer.from_pretrained(options.embedding_model),
                                                  AutoModel.from_pretrained(options.embedding_model).eval())
        except Exception as e:
            raise InputError(f"embedding_model {options.embedding_model}: could not be loaded ({e})") from None
    tokenizer, model = EMBEDDERS[options.embedding_model]
    batch = tokenizer([options.topic, *completions], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)  # mean pooling, as MiniLM
    return (vectors[1:] @ vectors[0]).tolist()
