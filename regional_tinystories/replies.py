"""
Turning an LLM's reply text into a usable story (with its summary, when one was asked for) or a set of judge
scores for a rubric's fields.

Models asked for JSON answer with JSON, JSON in a code fence, JSON wrapped in chatty prose,
Python-style dicts with single quotes, or JSON cut off mid-string. extract_json_object accepts the
first four (strict JSON tried first) and rejects anything else with a ReplyError whose message
says what was wrong; the request pipeline retries such replies and records the reason if they
never come right.
"""
import ast
import itertools
import json
import re

from regional_tinystories.languages import (
    clean_text,
    ends_like_a_sentence,
    script_share,
)

# strict=False lets raw newlines inside strings through: models often put real line breaks in a story.
_JSON = json.JSONDecoder(strict=False)
_CODE_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
# Code fences and "{" positions tried at most. A real reply has one or two; a failed parse costs time in proportion
# to the reply's length, so a reply of a million stray braces must not be tried a million times.
MAX_CANDIDATES = 50

# The seed rubric's scores (prompting/rubrics/seed.json), which rating files without a "rubric" hold.
SCORE_FIELDS = ("context_awareness", "completeness", "grammar", "fluency", "creativity", "overall")


class ReplyError(ValueError):
    """The model answered, but the answer cannot be used; the message is the reason."""


def _as_dict(text):
    """The dict that text is exactly (JSON, else a Python literal), or None. RecursionError if nested too deeply."""
    text = text.strip()
    try:
        value = _JSON.decode(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)  # single-quoted keys and strings
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def extract_json_object(reply):
    """The first JSON object in reply: whole reply, then code fences, then an object inside prose."""
    text = (reply or "").strip()
    if not text:
        raise ReplyError("empty reply")
    # The span from the first "{" to the last "}" catches an object wrapped in prose, including a
    # single-quoted one; the raw_decode scan below catches prose with stray braces after the object.
    span = text[text.find("{"):text.rfind("}") + 1]
    fences = (match[1] for match in _CODE_FENCE.finditer(text))
    try:
        for candidate in [text, *itertools.islice(fences, MAX_CANDIDATES), span]:
            found = _as_dict(candidate)
            if found is not None:
                return found
        for brace in itertools.islice(re.finditer(r"\{", text), MAX_CANDIDATES):
            try:
                found, _ = _JSON.raw_decode(text, brace.start())
                if isinstance(found, dict):
                    return found
            except ValueError:
                pass
    except RecursionError:
        # No story or score object nests hundreds of levels deep; such a reply is garbage (or an attack).
        raise ReplyError(f"JSON nested too deeply to read (starts {text[:60]!r})") from None
    if "{" not in text:
        raise ReplyError(f"no JSON object in the reply (starts {text[:60]!r})")
    if not text.rstrip("`\n ").endswith("}"):
        raise ReplyError(f"truncated JSON: the reply stops before the object is closed (...{text[-40:]!r})")
    raise ReplyError(f"malformed JSON object in the reply (starts {text[:60]!r})")


def check_story(story, language, min_words, min_script_share):
    """The cleaned story, or ReplyError if it is empty, mostly another script, too short or cut off."""
    if not any(ch.isalpha() for ch in story):
        raise ReplyError("empty story")
    share = script_share(story, language)
    if share < min_script_share:
        raise ReplyError(f"wrong script: only {share:.0%} of the letters are {language.script} "
                         f"(need {min_script_share:.0%})")
    cleaned = clean_text(story, language)
    word_count = len(cleaned.split())
    if word_count < min_words:
        raise ReplyError(f"too short: {word_count} words (need {min_words})")
    if not ends_like_a_sentence(cleaned, language):
        raise ReplyError(f"truncated story: it ends mid-sentence (...{cleaned[-30:]!r})")
    return cleaned


def _text_field(found, field):
    value = found.get(field)
    if not isinstance(value, str):
        raise ReplyError(f'the JSON has no "{field}" text (keys: {", ".join(map(str, found)) or "none"})')
    return value


def parse_story_reply(reply, language, min_words, min_script_share):
    """Cleaned story text from a reply of the form {"story": "..."}."""
    return check_story(_text_field(extract_json_object(reply), "story"), language, min_words, min_script_share)


def check_summary(summary, story, language, min_script_share):
    """The cleaned summary of a story, or ReplyError if it is empty, mostly another script, cut off, or longer than
    half the story (then it is the story again, not a summary)."""
    if not any(ch.isalpha() for ch in summary):
        raise ReplyError("empty summary")
    share = script_share(summary, language)
    if share < min_script_share:
        raise ReplyError(f"summary in the wrong script: only {share:.0%} of the letters are {language.script} "
                         f"(need {min_script_share:.0%})")
    cleaned = clean_text(summary, language)
    if not ends_like_a_sentence(cleaned, language):
        raise ReplyError(f"truncated summary: it ends mid-sentence (...{cleaned[-30:]!r})")
    summary_words, story_words = len(cleaned.split()), len(story.split())
    if summary_words > story_words / 2:
        raise ReplyError(f"the summary has {summary_words} words for a story of {story_words}: not a summary")
    return cleaned


def parse_story_and_summary_reply(reply, language, min_words, min_script_share):
    """(story, summary), cleaned, from a reply of the form {"story": "...", "summary": "..."}."""
    found = extract_json_object(reply)
    story = check_story(_text_field(found, "story"), language, min_words, min_script_share)
    return story, check_summary(_text_field(found, "summary"), story, language, min_script_share)


def _score(field, value):
    if isinstance(value, str):
        # Judges sometimes quote numbers or write "8/10".
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*", value)
        value = float(match[1]) if match else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10:
        raise ReplyError(f"{field} score {value!r} is not a number from 1 to 10")
    return int(value) if float(value).is_integer() else float(value)


def parse_scores_reply(reply, fields=SCORE_FIELDS):
    """{field: score} for a rubric's fields (the seed rubric's by default) from a judge's reply; keys may use
    spaces, hyphens or any case ("plot sense" is plot_sense)."""
    found = extract_json_object(reply)
    by_field = {re.sub(r"[\s\-]+", "_", str(key).strip().lower()): value for key, value in found.items()}
    missing = [field for field in fields if field not in by_field]
    if missing:
        raise ReplyError(f"the judge's JSON lacks {', '.join(missing)}")
    return {field: _score(field, by_field[field]) for field in fields}
