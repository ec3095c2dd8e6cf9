"""
Translation records and text handling shared by the two translators: make_requests.py translate (an LLM behind
an API) and translate_local.py (a local Hugging Face seq2seq model).

  source_record       an input record as a translation source: its key fields, the text, what it carries over
  translated_record   the output record, the same for both translators
  split_sentences     a story cut into sentences (with the whitespace between them) and put back together
  split_long          a sentence over a token limit cut at clause marks, then between words
  language_code       a language's code for a model family (NLLB hin_Deva, M2M-100 hi, mBART-50 hi_IN), read
                      from the "translation_codes" entry of the language's folder (prompting/prompt_gen/<language>/)

A record is identified by files.record_key: its ID, plus its sample_index for sample.py output (one
prompt, several stories). sample.py records also carry their prompt and the name of the model that wrote them;
both are kept (the model as source_model: "model" is the translator).
"""
import json
import os
import re

from regional_tinystories.errors import InputError
from regional_tinystories.languages import PROMPT_GEN_DIR, load_language

# Fields of a source record that the translation keeps as they are (sample.py output has them).
CARRIED_FIELDS = ("sample_index", "prompt")
MODEL_FAMILIES = ("nllb", "m2m100", "mbart50", "marian")


def source_record(index, record, text_field=None):
    """{ID, [sample_index], [prompt], [source_model], source} of an input record; InputError says what is missing.
    text_field None: 'story', else 'text'. Records without an ID (the Hugging Face TinyStories rows) are named by
    their position in their input."""
    field = text_field or next((f for f in ("story", "text") if f in record), "story")
    if field not in record:
        raise InputError(f"record has no {field!r}")
    if not isinstance(record[field], str):
        raise InputError(f"{field!r} is not text")
    record_id = record.get("ID", str(index))
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        raise InputError(f"'ID' is {record_id!r:.60}, not a string or an integer")
    source = {"ID": record_id, **{f: record[f] for f in CARRIED_FIELDS if f in record}}
    if isinstance(record.get("model"), str):
        source["source_model"] = record["model"]
    return {**source, "source": record[field]}


def translated_record(source, language, source_language, story, model, backend):
    """The output record of both translators: {ID, [sample_index], language, source_language, [prompt],
    [source_model], source, model, backend, story}."""
    carried = {k: v for k, v in source.items() if k not in ("ID", "source")}
    return {"ID": source["ID"], **carried, "language": language, "source_language": source_language,
            "source": source["source"], "model": model, "backend": backend, "story": story}


# ----------------------------------------------------------------------------------------------
# Sentences. Seq2seq translators are trained on single sentences: a whole story as one input gets cut at the
# model's length limit (the original Regional-TinyStories truncated at 500 tokens) or summarised.

CLOSING = "\"'”’»)]"


def split_sentences(text, language):
    """[(sentence, whitespace after it)] of a text: a sentence ends with one of the language's sentence_end marks
    (closing quotes and brackets stay with it) followed by whitespace. "".join(s + gap) gives the text back with
    its whitespace normalised: a gap holding line breaks keeps them (paragraphs survive), any other gap is one
    space. Abbreviations ("Mr. Brown") are cut too; the translator sees two short sentences."""
    ends = "".join(re.escape(mark) for mark in load_language(language).sentence_end)
    boundary = re.compile(rf"(?<=[{ends}])[{re.escape(CLOSING)}]*\s+")
    pieces, start = [], 0
    text = text.strip()
    for match in boundary.finditer(text):
        cut = match.start() + len(match.group().rstrip())  # closing quotes belong to the sentence
        gap = text[cut:match.end()]
        pieces.append((text[start:cut], "\n" * gap.count("\n") if "\n" in gap else " "))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], ""))
    if pieces:
        pieces[-1] = (pieces[-1][0], "")
    return pieces


def join_sentences(sentences, gaps):
    return "".join(sentence + gap for sentence, gap in zip(sentences, gaps)).strip()


def split_long(sentence, count_tokens, limit):
    """sentence as one or more parts of at most `limit` tokens each (count_tokens(text) -> int): cut after clause
    marks (, ; :) first, then between words. A single word over the limit stays whole (the caller decides)."""
    if count_tokens(sentence) <= limit:
        return [sentence]
    clauses = [clause for clause in re.split(r"(?<=[,;:])\s+", sentence) if clause]
    if len(clauses) > 1:  # a clause still too long is cut between its words
        groups = _pack(clauses, count_tokens, limit)
        return [part for group in groups for part in split_long(group, count_tokens, limit)]
    words = sentence.split()
    return _pack(words, count_tokens, limit) if len(words) > 1 else [sentence]


def _pack(units, count_tokens, limit):
    """units joined by spaces, greedily, into parts of at most `limit` tokens (a unit over it alone is one part)."""
    parts, current = [], ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and count_tokens(candidate) > limit:
            parts.append(current)
            candidate = unit
        current = candidate
    return parts + [current]


# ----------------------------------------------------------------------------------------------
# Language codes of the multilingual model families.

def language_code(language, family):
    """The code a model family uses for a language, from "translation_codes" in the language's language.json,
    e.g. ("hindi", "nllb") -> "hin_Deva". InputError when the folder has none for this family."""
    load_language(language)  # a known language folder, never a path
    path = os.path.join(PROMPT_GEN_DIR, language, "language.json")
    with open(path, encoding="utf-8") as f:
        codes = json.load(f).get("translation_codes", {})
    if family not in codes:
        raise InputError(f"{path}: no translation_codes entry for {family!r} (known: {', '.join(codes) or 'none'}); "
                         f"add the code this model family uses for {language}")
    return codes[family]
