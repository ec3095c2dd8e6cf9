"""
Prompt texts: the story templates for each complexity level, the judge's rubrics and the
translation request.

Story templates use string.Template placeholders ($noun, not {noun}) so that a user's template can
show a JSON example without escaping its braces. Placeholders a story template may use:
    $language $script $noun $verb $adjective $ending $story_traditions
Every story template gets REPLY_FORMAT appended, so user templates need not ask for JSON;
request_summary_too() turns such a prompt into one that asks for a summary as well.

Judge rubrics are JSON files (prompting/rubrics/*.json, or a user's): a template with placeholders in
braces ({story}, {opening}, {spec}, ...; see RECORD_PLACEHOLDERS) and the list of score fields; see
load_rubric and fill_judge_rubric.
"""
import functools
import json
import os
import re
from dataclasses import dataclass
from string import Template

from regional_tinystories import PROJECT_ROOT
from regional_tinystories.errors import InputError, one_line

STORY_PLACEHOLDERS = ("language", "script", "noun", "verb", "adjective", "ending", "story_traditions")

REPLY_FORMAT = ('Reply with a JSON object and nothing else, in this form '
                '(paragraphs separated by \\n inside the string):\n{"story": "the story text"}')
REPLY_FORMAT_WITH_SUMMARY = (
    'Also sum the story up in one or two sentences, in the same language and script. Reply with a JSON object '
    'and nothing else, in this form (paragraphs separated by \\n inside the story string):\n'
    '{"story": "the story text", "summary": "the summary"}')

# Building blocks shared by the levels; each level adds one idea to the one before it.
_AUDIENCE = "Write a story in $language, in the $script script, for children aged 5 to 7."
_SIMPLE_WORDS = "Use only simple, everyday words that such a child knows."
_SHAPE = "Keep it to 3 or 4 short paragraphs ({words}) with a clear beginning, middle and end."
_WORDS = 'Work the noun "$noun", the verb "$verb" and the adjective "$adjective" naturally into the story.'
# $ending is a feature of the ending such as "a happy ending" or "a lesson about sharing".
_TONE = ('The story should have "$ending", shown through what the characters do and what happens to them '
         'rather than stated outright.')
_DIALOGUE = ("Let the characters talk: include up to three short lines of dialogue, each a plain, "
             "easy sentence.")
_THEME = ("Build the story around friendship, an adventure or learning something about life, and let "
          "the lesson show through how the story ends; do not label it as a moral.")
_TRADITION = "Take inspiration from well-loved children's stories such as $story_traditions."
_NATURE = ("Bring in nature (trees, rivers, animals or village life) and supporting characters such as "
           "animals, neighbours or a friendly magical creature.")
_SHORT = "about 200 to 300 words"
_LONG = "about 350 to 500 words"

BUILTIN_TEMPLATES = {
    # 1: TinyStories style: the three words and one feature, nothing more.
    "1": " ".join([
        "Write a short story of 3 to 5 paragraphs in $language, in the $script script, using only words "
        "that a 5-to-7-year-old child understands.",
        _WORDS,
        'The story should also have "$ending".',
        "Keep the words simple and the story short.",
    ]),
    # 2: story structure and an implicit ending tone.
    "2": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_SHORT), _WORDS, _TONE]),
    # 2+: as 2, longer.
    "2+": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_LONG), _WORDS, _TONE]),
    # 3: adds dialogue and a theme with an implicit lesson.
    "3": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_SHORT), _WORDS, _DIALOGUE, _THEME, _TONE]),
    # 4: adds the language's own storytelling tradition as inspiration.
    "4": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_SHORT), _WORDS, _DIALOGUE, _TRADITION,
                   _THEME, _TONE]),
    # 4+: as 4, longer.
    "4+": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_LONG), _WORDS, _DIALOGUE, _TRADITION,
                    _THEME, _TONE]),
    # 5: adds nature and supporting characters.
    "5": " ".join([_AUDIENCE, _SIMPLE_WORDS, _SHAPE.format(words=_SHORT), _WORDS, _DIALOGUE, _TRADITION,
                   _NATURE, _THEME, _TONE]),
}


def load_template_file(path):
    """(name, text) of a user template; ValueError naming the file if it is unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read template file {path}: {e.strerror}") from None
    template = Template(text)
    if not text or not template.is_valid():
        raise ValueError(f"template file {path}: empty, or a '$' not followed by a placeholder name "
                         "(write $$ for a literal dollar sign)")
    unknown = sorted(set(template.get_identifiers()) - set(STORY_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"template file {path}: unknown placeholder ${unknown[0]}; "
                         f"allowed: {', '.join('$' + p for p in STORY_PLACEHOLDERS)}")
    return os.path.splitext(os.path.basename(path))[0], text


def fill_story_template(template_text, language, noun, verb, adjective, ending):
    filled = Template(template_text).substitute(
        language=language.name, script=language.script, noun=noun, verb=verb, adjective=adjective,
        ending=ending, story_traditions=language.story_traditions)
    return filled + "\n\n" + REPLY_FORMAT


def request_summary_too(prompt):
    """A story prompt (a prompt record's "prompt") that asks for {"story", "summary"} in one reply: its plain reply
    form (which every prompt of generate_prompts.py ends with) replaced by REPLY_FORMAT_WITH_SUMMARY; a prompt
    written some other way gets REPLY_FORMAT_WITH_SUMMARY appended."""
    return prompt.strip().removesuffix(REPLY_FORMAT).rstrip() + "\n\n" + REPLY_FORMAT_WITH_SUMMARY


# ----------------------------------------------------------------------------------------------
# Judge rubrics. A rubric is a JSON file {"template": "...", "fields": ["grammar", ...]} (the template may be a
# list of lines); the built-in ones are the files of prompting/rubrics/, and a user's file works the same way. The
# template names what the judge is shown with placeholders in braces, {story}; any other brace is literal text.
# Every rubric prompt ends with score_reply_format(its fields), so a template need not ask for JSON.

RUBRIC_DIR = os.path.join(PROJECT_ROOT, "prompting", "rubrics")
BUILTIN_RUBRICS = ("seed", "tinystories", "instruct", "synonyms")
RUBRIC_KEYS = ("template", "fields", "description")
# A rating record's own fields and the names the rating readers add (metrics.read_rating_records): no score may be
# named after one.
RATING_FIELDS = ("id", "sample_index", "model", "judge", "rubric", "true_overall", "key", "location", "fields")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCORE_NAME = re.compile(r"[a-z][a-z0-9_]*")
# The share of a story's words shown as its opening when a record has no prompt that the story starts with.
OPENING_SHARE = 0.4
SPEC_LABELS = (("words", "Words"), ("ending", "Ending"), ("features", "Features"), ("summary", "Summary"),
               ("sentence", "Sentence"))


@dataclass(frozen=True)
class Rubric:
    name: str  # what rating records call it: a built-in name, or the file's name without its extension
    path: str
    template: str
    fields: tuple


def score_reply_format(fields):
    """The JSON form a judge is asked to answer in; a score's spoken name has spaces where its field has '_'."""
    form = ", ".join(f'"{field.replace("_", " ")}": <score>' for field in fields)
    return ("Reply with a JSON object and nothing else, in this form, each <score> a whole number from 1 to 10:\n"
            "{" + form + "}")


def load_rubric(name_or_path):
    """The Rubric of a built-in name (seed, tinystories, instruct, synonyms) or a rubric file; ValueError naming
    the file, in one line, if the file cannot be used."""
    path = os.path.join(RUBRIC_DIR, name_or_path + ".json") if name_or_path in BUILTIN_RUBRICS else name_or_path
    where = f"rubric file {path}"
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file (built-in rubrics: {', '.join(BUILTIN_RUBRICS)})") from None
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{where}: not valid JSON ({one_line(e)})") from None
    if not isinstance(spec, dict):
        raise ValueError(f'{where}: expected a JSON object {{"template": ..., "fields": [...]}}')
    unknown_keys = sorted(set(spec) - set(RUBRIC_KEYS))
    if unknown_keys:
        raise ValueError(f"{where}: unknown key {unknown_keys[0]!r}; a rubric has {', '.join(RUBRIC_KEYS)}")
    template = spec.get("template")
    if isinstance(template, list) and all(isinstance(line, str) for line in template):
        template = "\n".join(template)
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f'{where}: needs a "template": the judge\'s prompt, a string or a list of lines')
    fields = spec.get("fields")
    if not isinstance(fields, list) or not fields or not all(isinstance(field, str) for field in fields):
        raise ValueError(f'{where}: needs a "fields" list of score names, e.g. ["grammar", "creativity"]')
    for field in fields:
        if not _SCORE_NAME.fullmatch(field):
            raise ValueError(f"{where}: score name {field!r} is not a lowercase name like plot_sense")
        if field in RATING_FIELDS:
            raise ValueError(f"{where}: score name {field!r} is a field every rating record has already")
        if fields.count(field) > 1:
            raise ValueError(f"{where}: lists the score {field!r} twice")
    used = set(_PLACEHOLDER.findall(template))
    unknown = sorted(used - set(JUDGE_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"{where}: unknown placeholder {{{unknown[0]}}}; allowed: "
                         f"{', '.join('{' + name + '}' for name in JUDGE_PLACEHOLDERS)}")
    if not used & {"story", "completion"}:
        raise ValueError(f"{where}: the template never shows the judge the story (use {{story}}, or {{opening}} "
                         "and {completion})")
    name = name_or_path if name_or_path in BUILTIN_RUBRICS else os.path.splitext(os.path.basename(path))[0]
    return Rubric(name, path, template.strip(), tuple(fields))


def judge_context(record):
    """What the story should follow from, in words, for the seed rubric's 'context awareness' score.

    A corpus record (from generate mode) was written to a brief of four words; a sample from the
    trained model continues an opening held in "prompt"; anything else (a translated story, say)
    is judged against its own first paragraph.
    """
    if all(field in record for field in ("noun", "verb", "adjective", "ending")):
        return (f'its writing brief: use the noun "{record["noun"]}", the verb "{record["verb"]}" and '
                f'the adjective "{record["adjective"]}", and have "{record["ending"]}"')
    if record.get("prompt"):
        return f'its opening "{record["prompt"]}"'
    first_paragraph = record["story"].strip().split("\n")[0][:300]
    return f'its opening "{first_paragraph}"'


def opening_and_completion(record):
    """(opening, completion) of a story for the TinyStories paper's *** split: a sample.py record's story starts
    with its "prompt", the opening the model was given; any other record (a corpus story, whose "prompt" is the
    LLM's instruction) is cut before the word at OPENING_SHARE of its words."""
    # metrics pulls in scipy and rouge-score; only rubrics that show an opening need it
    from regional_tinystories.metrics import completion_of, split_at_word_fraction
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt.strip() and record["story"].startswith(prompt):
        return prompt.strip(), completion_of(record)
    return split_at_word_fraction(record["story"], OPENING_SHARE)


def _text(record, field, rubric_name):
    value = record.get(field)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        value = ", ".join(value)  # "words": [...], "features": [...]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"record has no {field!r} text, which the {rubric_name} rubric shows the judge")
    return value.strip()


def _words(record, rubric_name):
    if "words" in record:
        return _text(record, "words", rubric_name)
    return ", ".join(_text(record, field, rubric_name) for field in ("noun", "verb", "adjective"))


def _spec(record, rubric_name):
    """The instructions a story was written to, one "Label: value" line per field the record has."""
    lines = []
    for field, label in SPEC_LABELS:
        present = field in record or (field == "words" and all(k in record for k in ("noun", "verb", "adjective")))
        if present:
            lines.append(f"{label}: " + (_words(record, rubric_name) if field == "words"
                                         else _text(record, field, rubric_name)))
    if not lines:
        raise InputError(f"record has no spec (noun, verb and adjective, or words, ending, features, summary, "
                         f"sentence), which the {rubric_name} rubric shows the judge")
    return "\n".join(lines)


def _synonyms(record, rubric_name):
    """'"original" → "replacement", ...' of a record of scripts/augment_synonyms.py --judge_copy."""
    pairs = record.get("synonyms")
    if not isinstance(pairs, list) or not all(isinstance(pair, list) and len(pair) == 2
                                              and all(isinstance(word, str) for word in pair) for pair in pairs):
        raise InputError(f"record has no 'synonyms' list of [original, replacement] pairs, which the {rubric_name} "
                         "rubric shows the judge (judge the --judge_copy of scripts/augment_synonyms.py)")
    if pairs and "⟨" not in record["story"]:
        raise InputError(f"its story has no ⟨⟩ marks but 'synonyms' lists {len(pairs)} replacements: judge the "
                         "--judge_copy of scripts/augment_synonyms.py, whose stories mark them")
    return ", ".join(f'"{original}" → "{replacement}"' for original, replacement in pairs) or "none"


# {placeholder: its value for (record, rubric name)}. A value the record cannot give is an InputError, which stops
# the run before anything is sent.
RECORD_PLACEHOLDERS = {
    "story": lambda record, rubric_name: record["story"],
    "context": lambda record, rubric_name: judge_context(record),
    "opening": lambda record, rubric_name: opening_and_completion(record)[0],
    "completion": lambda record, rubric_name: opening_and_completion(record)[1],
    "words": _words,
    "noun": functools.partial(_text, field="noun"),
    "verb": functools.partial(_text, field="verb"),
    "adjective": functools.partial(_text, field="adjective"),
    "ending": functools.partial(_text, field="ending"),
    "features": functools.partial(_text, field="features"),
    "summary": functools.partial(_text, field="summary"),
    "sentence": functools.partial(_text, field="sentence"),
    "spec": _spec,
    "synonyms": _synonyms,
}
JUDGE_PLACEHOLDERS = ("language", *RECORD_PLACEHOLDERS)  # {language}: the name of the story's language


def fill_judge_rubric(rubric, record, language_name):
    """The judge's prompt for one story record; InputError if the record lacks what the rubric shows."""
    values = {"language": language_name}
    for name in set(_PLACEHOLDER.findall(rubric.template)) - {"language"}:
        values[name] = RECORD_PLACEHOLDERS[name](record, rubric_name=rubric.name)
    filled = _PLACEHOLDER.sub(lambda match: values[match[1]], rubric.template)
    return filled + "\n\n" + score_reply_format(rubric.fields)


TRANSLATION_REQUEST = Template("""\
Translate this children's story from $source_language into $language, written in the $script script. \
Keep the meaning, the names and the paragraph breaks. Use simple words that a 5-to-7-year-old child \
who speaks $language knows. Translate everything and add nothing.

The story:
\"\"\"
$text
\"\"\"

""")


def fill_translation_request(text, source_language, language):
    return TRANSLATION_REQUEST.substitute(source_language=source_language.name, language=language.name,
                                          script=language.script, text=text) + REPLY_FORMAT
