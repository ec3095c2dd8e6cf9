"""Tests for regional_tinystories/translation.py (sentences, records, language codes) and for make_requests.py
translate on sample.py output, against the fake OpenAI-compatible server."""
import json

import pytest
from helpers import load_script, write_jsonl

from regional_tinystories.translation import join_sentences, language_code, source_record, split_long, \
    split_sentences

make_requests = load_script("prompting/make_requests.py")
fake_llm_server = load_script("prompting/fake_llm_server.py")

ENGLISH = "Lily saw a small cat under the tree. She gave it some milk.\n\n\"Thank you,\" said the cat. Lily smiled."


# ----------------------------------------------------------------------------- sentences and records

def test_sentences_are_split_and_joined_with_their_paragraph_breaks():
    sentences = split_sentences(ENGLISH, "english")
    assert [s for s, _ in sentences] == ["Lily saw a small cat under the tree.", "She gave it some milk.",
                                         "\"Thank you,\" said the cat.", "Lily smiled."]
    assert [gap for _, gap in sentences] == [" ", "\n\n", " ", ""]
    assert join_sentences([s.upper() for s, _ in sentences], [g for _, g in sentences]) == ENGLISH.upper()
    assert [s for s, _ in split_sentences("राजू आया। वह खुश था! \"चलो।\" सब गए", "hindi")] == \
        ["राजू आया।", "वह खुश था!", "\"चलो।\"", "सब गए"]


def test_long_sentences_are_cut_at_clauses_then_between_words():
    words = len  # one "token" per character keeps the arithmetic visible
    assert split_long("short one", words, 20) == ["short one"]
    assert split_long("a bb ccc, dd ee; ff gg hh", words, 10) == ["a bb ccc,", "dd ee;", "ff gg hh"]
    assert split_long("aaaa bbbb cccc dddd, ee", words, 10) == ["aaaa bbbb", "cccc dddd,", "ee"]
    assert split_long("abcdefghijkl", words, 5) == ["abcdefghijkl"]  # one word: kept whole


def test_source_records_keep_the_sample_key_prompt_and_model():
    sample = {"ID": "p3", "sample_index": 1, "prompt": "Tom had", "story": "Tom had a ball.", "model": "out/a"}
    assert source_record(0, sample) == {"ID": "p3", "sample_index": 1, "prompt": "Tom had", "source_model": "out/a",
                                        "source": "Tom had a ball."}
    assert source_record(7, {"text": "A story."}) == {"ID": "7", "source": "A story."}
    with pytest.raises(ValueError, match="record has no 'story'"):
        source_record(0, {"ID": "x"}, "story")
    assert language_code("marathi", "nllb") == "mar_Deva" and language_code("bangla", "mbart50") == "bn_IN"
    with pytest.raises(ValueError, match="no translation_codes entry for 'xx'"):
        language_code("hindi", "xx")


def test_make_requests_translates_samples_keyed_by_id_and_sample_index(tmp_path):
    """sample.py --num_samples=3 writes three records per prompt ID; each is translated, none is a 'duplicate'."""
    story = fake_llm_server.CANNED_STORIES["english"]
    samples = [{"ID": "p1", "sample_index": i, "prompt": "Tom had", "story": story, "model": "out/en-64x2"}
               for i in range(3)]
    inputs = write_jsonl(str(tmp_path / "in" / "samples.jsonl"), samples)
    with fake_llm_server.FakeLLMServer(language="hindi") as server:
        make_requests.main(["translate", "--input", inputs, "--out", str(tmp_path / "hi"), "--language", "hindi",
                            "--base_url", server.base_url, "--model", "fake-model", "--max_in_flight", "2"])
    with open(tmp_path / "hi" / "samples.jsonl", encoding="utf-8") as f:
        records = sorted((json.loads(line) for line in f), key=lambda r: r["sample_index"])
    assert [r["sample_index"] for r in records] == [0, 1, 2]
    assert all(r["ID"] == "p1" and r["prompt"] == "Tom had" and r["source_model"] == "out/en-64x2"
               and r["model"] == "fake-model" and r["source"] == story for r in records)
