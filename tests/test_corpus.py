"""The bundled demo corpus and its quality gates: scripts/check_corpus.py, the inflection-aware word matching it
uses, the near-copy finder, and scripts/merge_stories.py's record format."""
import gzip
import json
import os
import random

import pytest
from helpers import ROOT, load_script, run_main, write_jsonl

from regional_tinystories import metrics
from regional_tinystories.files import read_input_records

check_corpus = load_script("scripts/check_corpus.py")
merge_stories = load_script("scripts/merge_stories.py")
DEMO = os.path.join(ROOT, "data", "demo")
GENERATE_FIELDS = {"ID", "language", "noun", "verb", "adjective", "ending", "template", "prompt", "model", "backend",
                   "story"}


def test_bundled_demo_corpus_passes_every_gate():
    result = run_main(check_corpus.main, [DEMO])
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()[2:] if line.startswith("|")}
    assert set(rows) == {"hindi", "marathi", "bangla", "english"}
    for language in rows:
        records = [r for _, r in read_input_records(os.path.join(DEMO, f"{language}.jsonl.gz"))]
        assert all(set(r) == GENERATE_FIELDS and r["language"] == language for r in records)
        assert len({r["ID"] for r in records}) == len(records)
        assert {r["template"] for r in records} <= {"1", "2"}


@pytest.mark.parametrize("language, word, text", [
    ("hindi", "बिल्ली", "आँगन में दो बिल्लियाँ खेल रही थीं।"),
    ("hindi", "बिल्ली", "मीना ने बिल्ली को दूध दिया।"),
    ("hindi", "उड़ना", "चिड़िया ऊँचे आसमान में उड़ी।"),
    ("hindi", "छोटा", "एक छोटी लड़की बाज़ार गई।"),
    ("hindi", "खड़ा होना", "सब बच्चे खड़े हो गए।"),
    ("hindi", "खोया हुआ", "उसका पिल्ला खो गया था।"),
    ("hindi", "रंग-बिरंगा", "आसमान में रंग-बिरंगी पतंगें थीं।"),
    ("marathi", "खेळणे", "मुले अंगणात खेळली."),
    ("marathi", "उडी मारणे", "बेडकाने पाण्यात उडी मारली."),
    ("marathi", "घर", "ती घरात गेली."),
    ("bangla", "দৌড়ানো", "টুনু মাঠে দৌড়াল।"),
    ("bangla", "খেলা", "তারা বিকেলে খেলছিল।"),
    ("bangla", "ঘোড়া", "ঘোড়াটা খুব জোরে ছুটল।"),
    ("english", "paddle", "They paddled across the lake."),
])
def test_inflected_forms_count_as_using_the_word(language, word, text):
    assert metrics.uses_word(text, word, language)


@pytest.mark.parametrize("language, word, text", [
    ("hindi", "बिल्ली", "आँगन में दो कुत्ते खेल रहे थे।"),
    ("hindi", "रंग-बिरंगा", "उसने लाल रंग चुना।"),  # one part of the compound is not enough
    ("bangla", "দৌড়ানো", "টুনু মাঠে হাঁটল।"),
    ("english", "win", "She looked out of the window."),  # a word that merely contains it is not a use
])
def test_other_words_do_not_count(language, word, text):
    assert not metrics.uses_word(text, word, language)


def test_near_duplicate_pairs_agrees_with_brute_force():
    rng = random.Random(0)
    vocabulary = "a b c d e f g h i j k l m n o p".split()
    texts = [" ".join(rng.choice(vocabulary) for _ in range(40)) for _ in range(25)]
    texts.append(texts[3].replace(texts[3].split()[5], "zz", 1))  # a near-copy of text 3
    texts.append("Meera had a red kite. " * 3 + "She flew it in the park and smiled at her friends.")
    texts.append("Ravi had a red kite. " * 3 + "He flew it in the park and smiled at his friends.")
    brute = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))
             if metrics.rouge2(texts[i], texts[j]).fmeasure > 0.5}
    found = metrics.near_duplicate_pairs(texts, 0.5)
    assert {(i, j) for i, j, _ in found} == brute
    assert (3, 25) in brute and (26, 27) in brute


def test_gates_fail_loudly(tmp_path):
    base = {"language": "hindi", "noun": "पतंग", "verb": "उड़ना", "adjective": "लाल", "ending": "happy",
            "template": "1", "prompt": "p", "model": "m", "backend": "b"}
    story = "मीरा के पास एक लाल पतंग थी। " + "वह रोज़ शाम को छत पर जाकर उसे उड़ाती थी और बहुत खुश होती थी। " * 8
    write_jsonl(str(tmp_path / "c.jsonl"), [
        {**base, "ID": "a", "story": story},
        {**base, "ID": "b", "story": story.replace("मीरा", "सीमा")},  # a templated near-copy
        {**base, "ID": "c", "story": "Meera had a red kite. " * 30},  # wrong script, prompt words absent
    ])
    result = run_main(check_corpus.main, [str(tmp_path / "c.jsonl")])
    assert result.returncode == 1
    failures = result.stderr.strip().splitlines()
    assert "gate failed: a ~ b: ROUGE-2 F1" in "\n".join(failures)
    assert any(line.startswith("gate failed: c: only 0.00 of its letters are in Devanagari script") for line in failures)
    assert "gate failed: c: does not use पतंग, उड़ना, लाल" in failures


def test_merge_stories_writes_generate_records(tmp_path):
    prompts = [{"ID": f"hindi-1-{i}", "language": "hindi", "noun": "पतंग", "verb": "उड़ना", "adjective": "लाल",
                "ending": "happy", "template": "1", "prompt": f"prompt {i}"} for i in range(3)]
    write_jsonl(str(tmp_path / "prompts" / "hindi-1-000.jsonl"), prompts)
    write_jsonl(str(tmp_path / "stories" / "s.jsonl"), [{"ID": "hindi-1-2", "story": " दो "}, {"ID": "hindi-1-0", "story": "एक"}])
    out = tmp_path / "c.jsonl.gz"
    result = run_main(merge_stories.main, ["--prompts", str(tmp_path / "prompts"), "--stories", str(tmp_path / "stories"),
                                           "--out", str(out)])
    assert result.returncode == 0 and "(1 prompts had no story)" in result.stdout
    records = [json.loads(line) for line in gzip.decompress(out.read_bytes()).decode().splitlines()]
    assert [r["ID"] for r in records] == ["hindi-1-0", "hindi-1-2"]
    assert records[1] == {**prompts[2], "model": "hand-written", "backend": "hand-written", "story": "दो"}
    write_jsonl(str(tmp_path / "stories" / "t.jsonl"), [{"ID": "nope", "story": "x"}])
    result = run_main(merge_stories.main, ["--prompts", str(tmp_path / "prompts"), "--stories", str(tmp_path / "stories"),
                                           "--out", str(out)])
    assert result.returncode == 1 and result.stderr.strip().endswith("t.jsonl:1: ID 'nope' is not one of the prompts' IDs")
