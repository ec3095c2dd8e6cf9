"""The bundled prompt sets: prompt suites in all four languages, and the parallel openings (the same opening on line
i of every language's file) for side-by-side model comparisons."""
import os
import unicodedata

import pytest
from helpers import ROOT, load_script

from regional_tinystories.languages import script_share

run_prompt_suites = load_script("scripts/run_prompt_suites.py")
LANGUAGES = ("english", "hindi", "marathi", "bangla")
PARALLEL = os.path.join(ROOT, "training-inference", "prompts", "parallel")
# the children's names in the parallel openings, per language
NAMES = [("Meera", "मीरा", "मीरा", "মীরা"), ("Raju", "राजू", "राजू", "রাজু"), ("Anu", "अनु", "अनू", "অনু"),
         ("Kabir", "कबीर", "कबीर", "কবির"), ("Nina", "नीना", "नीना", "নীনা"), ("Golu", "गोलू", "गोलू", "গোলু"),
         ("Riya", "रिया", "रिया", "রিয়া"), ("Aman", "अमन", "अमन", "অমন")]


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_language_has_a_prompt_suite_in_its_own_script(language):
    prompts = run_prompt_suites.read_suite(os.path.join(ROOT, "data", "prompt_suites", f"{language}.jsonl"))
    assert [p["suite"] for p in prompts] == ["context"] * 12 + ["reasoning"] * 12 + ["factual"] * 12
    for p in prompts:
        assert p["language"] == language and p["ID"].startswith(f"{language}-")
        assert script_share(p["prompt"] + " " + p["expected"], language) >= 0.95, p["ID"]
        assert unicodedata.is_normalized("NFC", p["prompt"] + p["expected"])


def read_parallel(language):
    with open(os.path.join(PARALLEL, f"{language}.txt"), encoding="utf-8") as f:
        return f.read().splitlines()


def test_the_parallel_openings_line_up_across_the_four_languages():
    files = {language: read_parallel(language) for language in LANGUAGES}
    assert {len(lines) for lines in files.values()} == {200}
    for language, lines in files.items():
        assert len(set(lines)) == 200 and all(line.strip() == line and line for line in lines)
        assert all(unicodedata.is_normalized("NFC", line) for line in lines)
        assert min(script_share(line, language) for line in lines) >= 0.95
    for i in range(200):
        # line i is about the same child in every language
        names = {tuple(name[k] in files[language][i] for k, language in enumerate(LANGUAGES)) for name in NAMES}
        assert (True,) * 4 in names, [files[language][i] for language in LANGUAGES]
