"""
Prompt texts: the story templates for each complexity level, the judge's rubric and the
translation request.

Templates use string.Template placeholders ($noun, not {noun}) so that a user's template can
show a JSON example without escaping its braces. Placeholders a story template may use:
    $language $script $noun $verb $adjective $ending $story_traditions
Every story template gets REPLY_FORMAT appended, so user templates need not ask for JSON.
"""
import os
from string import Template

STORY_PLACEHOLDERS = ("language", "script", "noun", "verb", "adjective", "ending", "story_traditions")

REPLY_FORMAT = ('Reply with a JSON object and nothing else, in this form '
                '(paragraphs separated by \\n inside the string):\n{"story": "the story text"}')

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


JUDGE_RUBRIC = Template("""\
You are judging a short story written in $language for children aged 5 to 7. With that audience \
in mind, score each quality below with a whole number from 1 (very poor) to 10 (excellent).
- context awareness: judge strictly how well the middle and the end of the story follow from $context.
- completeness: does the story have a real beginning, middle and end?
- grammar: is the $language grammar and spelling correct?
- fluency: do the sentences read smoothly and naturally?
- creativity: is the story original and engaging?
- overall: your overall judgement of the story.

The story:
\"\"\"
$story
\"\"\"

Reply with a JSON object and nothing else, in this form, each <score> a whole number from 1 to 10:
{"context awareness": <score>, "completeness": <score>, "grammar": <score>, "fluency": <score>, \
"creativity": <score>, "overall": <score>}""")


def judge_context(record):
    """What the story should follow from, in words, for the 'context awareness' score.

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


def fill_judge_rubric(record, language_name):
    return JUDGE_RUBRIC.substitute(language=language_name, context=judge_context(record), story=record["story"])


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
