"""
TinyStories-Instruct: stories written to a specification. `prepare.py --format=instruct` puts an instruction block
before every story, and sample.py / serve.py build the same block from a user's spec, so that an instruct model
writes the story the spec asks for:

    Words: dog, hide, hungry          labels in the story's language (language.json "instruct_labels"),
    Ending: a moral lesson            English for a language without them
    Features: Dialogue
    Sentence: <one sentence of the story>
    Summary: <the record's summary, when it has one>
    Story:
    <the story>

As in the TinyStories paper, each field is shown for only a share of the documents (`shares`), so the model also
learns to write from a partial spec. The block and the story are tokenized separately — [bos] block story [eos] —
which is exactly what sampling feeds the model ([bos] block) and puts the boundary between instruction and story on
a token edge, where the `loss_on=story` mask of train.py cuts.
"""
import functools
import random
import re
from dataclasses import dataclass, field

from regional_tinystories.errors import InputError
from regional_tinystories.languages import available_languages, load_language, word_list

FIELDS = ("words", "ending", "features", "sentence", "summary")
DEFAULT_SHARES = {"words": 1.0, "ending": 0.8, "features": 0.5, "sentence": 0.3, "summary": 0.5}
ENGLISH_LABELS = {"words": "Words", "ending": "Ending", "features": "Features", "sentence": "Sentence",
                  "summary": "Summary", "story": "Story", "dialogue": "Dialogue"}
QUOTES = "\"“”‘’«»"  # a story with any of these has dialogue: the one feature read off the text itself


@functools.cache  # called per document by prepare.py's workers
def labels_for(language):
    """The block's labels for a language key, English for any the language does not define."""
    own = load_language(language).instruct_labels if language in available_languages() else {}
    return {**ENGLISH_LABELS, **own}


@functools.cache
def native_endings(language):
    """{english gloss: the language's own wording} of a language's endings.tsv ({} when it has none), so that a
    record's "ending": "a moral lesson" is shown to a Hindi model as "एक सीख"."""
    try:
        return {gloss: native for native, gloss in word_list(language, "endings")}
    except InputError:
        return {}


def split_sentences(story):
    """The sentences of a story: text up to a full stop of any of the four scripts (। . ! ?), quotes kept."""
    return [s.strip() for s in re.findall(r"[^।.!?\n]+[।.!?]+[\"'”’»]*", story) if len(s.split()) >= 3]


def record_spec(record, story, language, rng):
    """Every field this record can show: its word-list words, its ending in the story's language, its features
    (a "features" list of the record, else dialogue when the story has quotes), one sentence of the story picked
    by rng, and its summary."""
    spec = {}
    words = [record[key].strip() for key in ("noun", "verb", "adjective") if isinstance(record.get(key), str)
             and record[key].strip()]
    if words:
        spec["words"] = words
    ending = record.get("ending")
    if isinstance(ending, str) and ending.strip():
        spec["ending"] = native_endings(language).get(ending.strip(), ending.strip())
    features = record.get("features")
    if isinstance(features, list) and all(isinstance(f, str) for f in features):
        spec["features"] = features
    elif any(q in story for q in QUOTES):
        spec["features"] = ["dialogue"]
    sentences = split_sentences(story)
    if sentences:
        spec["sentence"] = rng.choice(sentences)
    summary = record.get("summary")
    if isinstance(summary, str) and summary.strip():
        spec["summary"] = summary.strip()
    return spec


@dataclass(frozen=True)
class InstructFormat:
    """How prepare.py rendered a dataset's blocks; saved in meta.json (and so in every checkpoint) as
    meta["instruct"], from which sample.py and serve.py render a user's spec the same way."""
    order: tuple = FIELDS
    shares: dict = field(default_factory=lambda: dict(DEFAULT_SHARES))
    labels: dict = field(default_factory=dict)  # {language: labels} of every language the dataset holds

    def to_meta(self):
        return {"order": list(self.order), "shares": dict(self.shares), "labels": dict(self.labels)}

    @classmethod
    def from_meta(cls, entry):
        return cls(order=tuple(entry["order"]), shares=dict(entry["shares"]), labels=dict(entry["labels"]))

    def shown_fields(self, spec, rng):
        """The spec with each field kept with its share's probability (the paper's random partial specs)."""
        return {key: value for key, value in spec.items() if rng.random() < self.shares.get(key, 0.0)}

    def render(self, spec, language):
        """The instruction block of a spec: one 'Label: value' line per field present, in order, then the story
        label on a line of its own. Ends with a newline: the story starts on the next line."""
        labels = self.labels.get(language) or labels_for(language)
        lines = []
        for key in self.order:
            value = spec.get(key)
            if not value:
                continue
            if key == "words":
                value = ", ".join(value)
            elif key == "features":
                value = ", ".join(labels.get(f.lower(), f) for f in value)
            lines.append(f"{labels[key]}: {value}")
        return "\n".join(lines + [f"{labels['story']}:"]) + "\n"


def parse_settings(order_text, shares_text):
    """--instruct_order=words,ending,... and --instruct_shares=words:1,sentence:0.3 (fields not named keep their
    default share) -> (order, shares); InputError naming the bad part."""
    order = tuple(part.strip() for part in order_text.split(",") if part.strip())
    unknown = [key for key in order if key not in FIELDS]
    if unknown or len(set(order)) != len(order):
        raise InputError(f"--instruct_order={order_text}: expected distinct fields among {', '.join(FIELDS)}")
    shares = dict(DEFAULT_SHARES)
    for part in filter(None, (p.strip() for p in shares_text.split(","))):
        key, _, value = part.partition(":")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if key not in FIELDS or not 0 <= share <= 1:
            raise InputError(f"--instruct_shares: {part!r} is not FIELD:SHARE with a field among {', '.join(FIELDS)} "
                             f"and a share in [0, 1]")
        shares[key] = share
    return order, shares


def document_rng(seed, digest):
    """The random choices for one document (which fields show, which sentence): a function of the seed and the
    story, so they do not depend on the worker or the order of the corpus."""
    return random.Random(seed + digest)


def user_spec(words="", ending="", features="", sentence="", summary=""):
    """A spec from sample.py's / serve.py's settings (words and features comma-separated); {} when all empty."""
    spec = {"words": [w.strip() for w in words.split(",") if w.strip()], "ending": ending.strip(),
            "features": [f.strip() for f in features.split(",") if f.strip()], "sentence": sentence.strip(),
            "summary": summary.strip()}
    return {key: value for key, value in spec.items() if value}


def parse_block_message(text, fmt, language):
    """A chat message written as an instruction block ('Words: dog, run' lines, in the model's labels or English)
    -> (spec, the text after the story label or ""), or None when the message has no such lines."""
    labels = {**ENGLISH_LABELS, **fmt.labels.get(language, {})}
    by_label = {label.lower(): key for key, label in labels.items() if key in FIELDS}
    by_label.update({label.lower(): key for key, label in ENGLISH_LABELS.items() if key in FIELDS})
    story_labels = {labels["story"].lower(), "story"}
    spec, opening = {}, []
    lines = text.strip().splitlines()
    for i, line in enumerate(lines):
        label, colon, value = line.partition(":")
        key = by_label.get(label.strip().lower()) if colon else None
        if colon and label.strip().lower() in story_labels:
            opening = [value.strip(), *lines[i + 1:]]
            break
        if key is None:
            return None if not spec else (spec, "\n".join(lines[i:]).strip())
        spec[key] = value.strip()
    if not spec:
        return None
    spec = user_spec(**spec)
    return spec, "\n".join(opening).strip()


def localized_spec(spec, language):
    """A user's spec as a dataset record would have shown it: an ending given as its English gloss in the
    language's own words."""
    if "ending" in spec:
        spec = {**spec, "ending": native_endings(language).get(spec["ending"], spec["ending"])}
    return spec


def spec_of_request(record, where):
    """A user's spec from a JSON object (a line of sample.py's spec file, serve.py's request fields): words as a
    list or a comma-separated string (or noun/verb/adjective as a corpus record has them), ending, features,
    sentence, summary. InputError naming `where` for a field of the wrong type."""
    fields = {}
    for key in FIELDS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, list) and key in ("words", "features") and all(isinstance(v, str) for v in value):
            value = ", ".join(value)
        if not isinstance(value, str):
            raise InputError(f"{where}: {key} must be text{' or a list of text' if key in ('words', 'features') else ''}, "
                             f"got {type(value).__name__}")
        fields[key] = value
    if "words" not in fields:
        fields["words"] = ", ".join(record[key] for key in ("noun", "verb", "adjective")
                                    if isinstance(record.get(key), str) and record[key].strip())
    return user_spec(**fields)


def model_format(ckpt, language=""):
    """(InstructFormat, language) of an instruct checkpoint; InputError in one line for a model trained on plain
    stories, or when the language of the labels is ambiguous or unknown to the model."""
    entry = (ckpt.get("meta") or {}).get("instruct")
    if not entry:
        raise InputError(f"{ckpt['path']}: this model was trained on plain stories, so it cannot follow a spec "
                         f"(words, ending, features, ...); train one on a dataset prepared with --format=instruct")
    fmt = InstructFormat.from_meta(entry)
    languages = sorted(fmt.labels)
    if language:
        if language not in languages:
            raise InputError(f"{ckpt['path']}: language {language!r} is not one the model was trained on "
                             f"({', '.join(languages)})")
        return fmt, language
    if len(languages) != 1:
        raise InputError(f"{ckpt['path']}: the model was trained on {', '.join(languages)}; choose the spec's "
                         f"language with --language")
    return fmt, languages[0]
