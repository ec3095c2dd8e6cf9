"""Tests for prompting/make_requests.py against the fake OpenAI-compatible server on 127.0.0.1."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import load_script, read_jsonl, write_jsonl

from regional_tinystories.files import load_appended_records
from regional_tinystories.languages import load_language
from regional_tinystories.llm import BackendConfigError, G4FBackend, RequestSettings, backoff_delay
from regional_tinystories.replies import (
    ReplyError,
    check_story,
    extract_json_object,
    parse_scores_reply,
    parse_story_and_summary_reply,
    parse_story_reply,
)
from regional_tinystories.templates import REPLY_FORMAT

make_requests = load_script("prompting/make_requests.py")
fake_llm_server = load_script("prompting/fake_llm_server.py")
CANNED_STORIES = fake_llm_server.CANNED_STORIES
FakeLLMServer = fake_llm_server.FakeLLMServer



ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = {"context awareness": 7, "completeness": 8, "grammar": 9, "fluency": 6, "creativity": 5, "overall": 7}
# Fast retries so that failure paths take milliseconds.
FAST = ["--backoff_base", "0.01", "--backoff_max", "0.02", "--timeout", "1", "--max_in_flight", "4"]


@pytest.fixture
def server():
    with FakeLLMServer(language="hindi") as fake:
        yield fake



def prompt_records(count, language="hindi"):
    """Prompt records like generate_prompts.py writes; each prompt names its ID so the server script can target it."""
    return [{"ID": f"P{i}", "language": language, "noun": "आम", "verb": "खाना", "adjective": "मीठा",
             "ending": "a happy ending", "template": "2", "prompt": f"Write a story. [P{i}]"} for i in range(count)]


def run(mode, server, *argv):
    """make_requests.main in this process; returns the exit message (None on success)."""
    try:
        make_requests.main([mode, "--base_url", server.base_url, "--model", "fake-model", *FAST, *map(str, argv)])
    except SystemExit as e:
        return str(e.code)
    return None


def prompts_containing(server, text):
    return sum(text in prompt for prompt in server.prompts)


# --- reply parsing ------------------------------------------------------------------------------

HINDI_STORY = CANNED_STORIES["hindi"]


@pytest.mark.parametrize("reply", [
    json.dumps({"story": HINDI_STORY}, ensure_ascii=False),
    "Here is your story:\n" + json.dumps({"story": HINDI_STORY}, ensure_ascii=False) + "\nI hope you like it {:}",
    "```json\n" + json.dumps({"story": HINDI_STORY}, ensure_ascii=False, indent=2) + "\n```",
    "Sure!\n```\n" + json.dumps({"story": HINDI_STORY}, ensure_ascii=False) + "\n```\nAnything else?",
    "{'story': '" + HINDI_STORY.replace("\n", "\\n") + "'}",
    '{"story": "' + HINDI_STORY.replace('"', "'") + '"}',  # raw line breaks inside the JSON string
], ids=["strict", "prose-around", "fence-json", "fence-bare", "single-quotes", "raw-newline"])
def test_usable_reply_shapes(reply):
    story = parse_story_reply(reply, load_language("hindi"), min_words=50, min_script_share=0.9)
    assert story.startswith("मीना को") and story.endswith("सपना देखा।")


@pytest.mark.parametrize("reply, reason", [
    ("", "empty reply"),
    ("   \n ", "empty reply"),
    ("Once upon a time there was a dog.", "no JSON object"),
    ('{"story": "मीना को पुराने आम के पेड़ के नीचे', "truncated JSON"),
    ('```json\n{"story": "मीना को पुराने', "truncated JSON"),
    ('{"title": "x"}', 'no "story" text'),
    ('{"story": 42}', 'no "story" text'),
    ('{"story": ""}', "empty story"),
    ('{"story": "...!"}', "empty story"),
    (json.dumps({"story": CANNED_STORIES["english"]}), "wrong script: only 0% of the letters are Devanagari"),
    (json.dumps({"story": CANNED_STORIES["bangla"]}), "wrong script"),
    ('{"story": "मीना घर गई।"}', "too short: 3 words (need 50)"),
    (json.dumps({"story": HINDI_STORY[:-12]}, ensure_ascii=False), "truncated story: it ends mid-sentence"),
    ("{'story': 'it's broken'}", "malformed JSON"),
])
def test_unusable_replies_are_rejected_with_a_reason(reply, reason):
    with pytest.raises(ReplyError) as error:
        parse_story_reply(reply, load_language("hindi"), min_words=50, min_script_share=0.9)
    assert reason in str(error.value)


def test_story_cleaning_drops_stray_script_but_keeps_the_story():
    english_words = " Ram (happy) went home."  # 4 of ~400 letters are Latin: under the 10% allowance
    story = check_story(HINDI_STORY + english_words + " फिर सब सो गए।", load_language("hindi"), 50, 0.9)
    assert "happy" not in story and "Ram" not in story and story.endswith("फिर सब सो गए।")


def test_judge_scores_are_validated():
    assert parse_scores_reply(json.dumps(SCORES)) == {
        "context_awareness": 7, "completeness": 8, "grammar": 9, "fluency": 6, "creativity": 5, "overall": 7}
    loose = {"Context-Awareness": "8", "completeness": "7/10", "grammar": 6.5, "fluency": 10, "creativity": 1,
             "OVERALL": " 9 "}
    assert parse_scores_reply("Scores: " + json.dumps(loose)) == {
        "context_awareness": 8, "completeness": 7, "grammar": 6.5, "fluency": 10, "creativity": 1, "overall": 9}
    for bad_value in (0, 11, -3, "eight", True, None, "NaN", float("nan")):
        with pytest.raises(ReplyError, match="grammar score .* is not a number from 1 to 10"):
            parse_scores_reply(json.dumps({**SCORES, "grammar": bad_value}))
    with pytest.raises(ReplyError, match="lacks creativity"):
        parse_scores_reply(json.dumps({k: v for k, v in SCORES.items() if k != "creativity"}))


def test_extract_json_object_prefers_the_whole_reply():
    assert extract_json_object('{"a": {"b": 1}}') == {"a": {"b": 1}}


def test_backoff_grows_is_jittered_capped_and_honours_retry_after():
    settings = RequestSettings(backoff_base=1.0, backoff_max=8.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        delays = [backoff_delay(attempt, None, settings) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1
    assert backoff_delay(1, 5.0, settings) == 5.0
    assert backoff_delay(1, 600.0, settings) == 8.0  # a server's Retry-After is capped too


# --- generate mode end to end -------------------------------------------------------------------

def test_generate_writes_corpus_records(tmp_path, server, monkeypatch):
    monkeypatch.setenv("STORY_API_KEY", "sk-test-secret-123")
    inputs = write_jsonl(tmp_path / "prompts" / "hindi-2-000.jsonl", prompt_records(12))
    debug_log = tmp_path / "raw.jsonl"
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "stories", "--api_key_env",
               "STORY_API_KEY", "--debug_log", debug_log) is None
    stories = read_jsonl(tmp_path / "stories" / "hindi-2-000.jsonl")
    assert sorted(r["ID"] for r in stories) == sorted(f"P{i}" for i in range(12))
    for record in stories:
        assert list(record)[:8] == ["ID", "language", "noun", "verb", "adjective", "ending", "template", "prompt"]
        assert record["model"] == "fake-model" and record["backend"] == "openai"
        assert record["story"] == HINDI_STORY
    assert not os.path.exists(tmp_path / "stories" / "hindi-2-000.failed.jsonl")
    # The key is sent, and never written anywhere.
    assert server.api_keys == ["sk-test-secret-123"] * 12
    assert len(read_jsonl(debug_log)) == 12
    for folder, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert b"sk-test-secret" not in f.read(), name


def test_a_key_echoed_by_the_server_is_blanked_in_error_messages(tmp_path, server, monkeypatch):
    monkeypatch.setenv("STORY_API_KEY", "sk-test-secret-123")
    server.script["[P0]"] = ["body:unknown key sk-test-secret-123"] * 2
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1))
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--api_key_env", "STORY_API_KEY",
               "--retries", 1) is None
    [failed] = read_jsonl(tmp_path / "out" / "p.failed.jsonl")
    assert "unknown key ***" in failed["error"] and "sk-test" not in failed["error"]


def test_transient_errors_are_retried_then_succeed(tmp_path, server):
    server.script.update({
        "[P0]": ["429", "500", "503"],
        "[P1]": ["hang"],  # the client's 1 s timeout has to fire
        "[P2]": ["body:<html>Bad Gateway</html>"],
        "[P3]": ["reply:Sorry, I cannot help with that."],
        "[P4]": ['reply:{"story": "मीना घर'],  # truncated JSON
        "[P5]": ["reply:" + json.dumps({"story": CANNED_STORIES["english"]})],  # wrong script
    })
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(8))
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--retries", 3) is None
    assert sorted(r["ID"] for r in read_jsonl(tmp_path / "out" / "p.jsonl")) == [f"P{i}" for i in range(8)]
    expected_attempts = {"[P0]": 4, "[P1]": 2, "[P2]": 2, "[P3]": 2, "[P4]": 2, "[P5]": 2, "[P6]": 1, "[P7]": 1}
    assert {key: prompts_containing(server, key) for key in expected_attempts} == expected_attempts


def test_records_that_never_succeed_go_to_the_failed_file(tmp_path, server, capsys):
    server.script.update({"[P0]": ["500"] * 10, "[P1]": ["400"], "[P2]": ["length"],
                          "[P3]": ['reply:{"story": ""}'] * 10})
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(5))
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--retries", 2) is None
    failed = {r["ID"]: r["error"] for r in read_jsonl(tmp_path / "out" / "p.failed.jsonl")}
    assert set(failed) == {"P0", "P1", "P2", "P3"}
    assert "HTTP 500" in failed["P0"] and "gave up after 3 attempts" in failed["P0"]
    assert "HTTP 400" in failed["P1"] and "not retryable" in failed["P1"]
    assert "finish_reason=length" in failed["P2"]
    assert "empty story" in failed["P3"]
    # Bounded: 3 attempts for retryable failures, 1 for permanent ones.
    assert [prompts_containing(server, f"[P{i}]") for i in range(5)] == [3, 1, 1, 3, 1]
    assert [r["ID"] for r in read_jsonl(tmp_path / "out" / "p.jsonl")] == ["P4"]
    assert "1 ok, 4 failed" in capsys.readouterr().out

    # A plain rerun leaves failed records alone; --retry_failed tries them again.
    requests_before = len(server.prompts)
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out") is None
    assert len(server.prompts) == requests_before
    server.script.clear()
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--retry_failed") is None
    assert sorted(r["ID"] for r in read_jsonl(tmp_path / "out" / "p.jsonl")) == ["P0", "P1", "P2", "P3", "P4"]
    assert not os.path.exists(tmp_path / "out" / "p.failed.jsonl")


def test_a_rejected_api_key_stops_the_run(tmp_path, server):
    server.script["[P"] = ["401"] * 100
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(20))
    message = run("generate", server, "--input", inputs, "--out", tmp_path / "out")
    assert message.startswith("error: ") and "refused the API key (HTTP 401)" in message
    assert len(server.prompts) <= 4  # stopped at once, not once per record
    assert not os.path.exists(tmp_path / "out" / "p.failed.jsonl")


def test_rate_limit_is_respected(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(30))
    started = time.monotonic()
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--rps", 20) is None
    # A burst of 20, then 10 more at 20 per second.
    assert time.monotonic() - started >= 0.45
    assert len(read_jsonl(tmp_path / "out" / "p.jsonl")) == 30


def test_generate_with_summary_asks_for_story_and_summary_in_one_request(tmp_path, server):
    inputs = write_jsonl(tmp_path / "prompts" / "p.jsonl", [
        {**record, "prompt": f"Write a story. [{record['ID']}]\n\n{REPLY_FORMAT}"} for record in prompt_records(3)])
    server.script.update({
        "[P1]": ["reply:" + json.dumps({"story": HINDI_STORY}, ensure_ascii=False)] * 2,  # no summary
        "[P2]": ["reply:" + json.dumps({"story": HINDI_STORY, "summary": CANNED_STORIES["english"][:60] + "."})] * 2,
    })
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "stories", "--with_summary",
               "--retries", 1) is None
    [story] = read_jsonl(tmp_path / "stories" / "p.jsonl")
    # The fake LLM sums a story up in its first sentence.
    assert story["ID"] == "P0" and story["story"] == HINDI_STORY
    assert story["summary"] == "मीना को पुराने आम के पेड़ के नीचे एक छोटी लाल पतंग मिली।"
    assert list(story)[-2:] == ["story", "summary"]
    failed = {r["ID"]: r["error"] for r in read_jsonl(tmp_path / "stories" / "p.failed.jsonl")}
    assert 'the JSON has no "summary" text (keys: story)' in failed["P1"]
    assert "summary in the wrong script: only 0% of the letters are Devanagari" in failed["P2"]
    # One request per attempt, whose reply form (and only that) asks for the summary too.
    assert len(server.prompts) == 1 + 2 + 2
    for prompt in server.prompts:
        assert prompt.endswith('{"story": "the story text", "summary": "the summary"}')
        assert REPLY_FORMAT not in prompt and prompt.count("Reply with a JSON object") == 1


def test_generating_with_and_without_summaries_into_one_folder_is_refused(tmp_path, server):
    inputs = write_jsonl(tmp_path / "prompts" / "p.jsonl", prompt_records(3))
    out = tmp_path / "stories"
    assert run("generate", server, "--input", inputs, "--out", out, "--limit", 1) is None
    sent = len(server.prompts)
    message = run("generate", server, "--input", inputs, "--out", out, "--with_summary")
    assert message == (f"error: --out {out} holds stories generated without --with_summary ({out / 'p.jsonl'}); "
                       "this run is with it: write its stories to a folder of their own")
    assert len(server.prompts) == sent  # nothing sent
    assert run("generate", server, "--input", inputs, "--out", out) is None  # the same setting resumes
    assert len(read_jsonl(out / "p.jsonl")) == 3 and all("summary" not in r for r in read_jsonl(out / "p.jsonl"))


def test_with_summary_keeps_the_hyphenated_spelling_with_a_note(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "prompting", "make_requests.py"), "generate",
                           "--input", inputs, "--out", str(tmp_path / "out"), "--base_url", server.base_url,
                           "--with-summary"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("note: --with-summary is deprecated, use --with_summary (the old spelling will be removed in a later "
            "release)") in proc.stderr.splitlines()
    [story] = read_jsonl(tmp_path / "out" / "p.jsonl")
    assert story["summary"].endswith("मिली।")  # a prompt without the plain reply form gets the summary form appended
    assert server.prompts[0].startswith("Write a story. [P0]\n\nAlso sum the story up")


def test_parse_story_and_summary_reply_checks_the_summary():
    hindi = load_language("hindi")
    reply = json.dumps({"story": HINDI_STORY, "summary": " मीना और रवि ने पतंग ठीक की। "}, ensure_ascii=False)
    assert parse_story_and_summary_reply(reply, hindi, 50, 0.9) == (HINDI_STORY, "मीना और रवि ने पतंग ठीक की।")
    for summary, reason in (("", "empty summary"), ("मीना और रवि ने पतंग", "truncated summary"),
                            (HINDI_STORY, "the summary has 98 words for a story of 98: not a summary")):
        with pytest.raises(ReplyError, match=reason):
            parse_story_and_summary_reply(json.dumps({"story": HINDI_STORY, "summary": summary}), hindi, 50, 0.9)


# --- crash safety and resuming ------------------------------------------------------------------

def test_resume_skips_done_records_and_repairs_a_torn_line(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(10))
    out = tmp_path / "out" / "p.jsonl"
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out", "--limit", 4) is None
    done_first = [r["ID"] for r in read_jsonl(out)]
    assert len(done_first) == 4
    with open(out, "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"ID": "P9", "language": "hindi", "story": "मीना'.encode())
    assert run("generate", server, "--input", inputs, "--out", tmp_path / "out") is None
    ids = [r["ID"] for r in read_jsonl(out)]
    assert ids[:4] == done_first and sorted(ids) == sorted(f"P{i}" for i in range(10))
    assert len(server.prompts) == 10  # nothing was asked twice
    assert load_appended_records(str(out))[1] == 0


def test_damage_in_the_middle_of_an_output_file_is_reported_not_repaired(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(3))
    out = tmp_path / "out" / "p.jsonl"
    write_jsonl(out, [{"ID": "P0"}])
    with open(out, "a", encoding="utf-8") as f:
        f.write("not json\n" + json.dumps({"ID": "P1"}) + "\n")
    message = run("generate", server, "--input", inputs, "--out", tmp_path / "out")
    assert message.startswith("error: ") and "p.jsonl:2: damaged line in the middle" in message


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    count = 150
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(count))
    out_dir, out = tmp_path / "out", tmp_path / "out" / "p.jsonl"
    with FakeLLMServer(language="hindi", delay=0.03) as server:
        argv = [sys.executable, os.path.join(ROOT, "prompting", "make_requests.py"), "generate", "--input", inputs,
                "--out", str(out_dir), "--base_url", server.base_url, "--model", "fake-model", "--max_in_flight", "4"]
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 30):
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        lines_at_kill = out.read_bytes().count(b"\n")
        assert 30 <= lines_at_kill < count, "the run should have been killed part-way"

        assert run("generate", server, "--input", inputs, "--out", out_dir) is None
    ids = [r["ID"] for r in read_jsonl(out)]  # every line parses
    assert len(ids) == len(set(ids)) == count
    assert set(ids) == {f"P{i}" for i in range(count)}
    # Only the requests in flight at the kill (at most 4) were sent twice.
    assert len(server.prompts) <= count + 4


def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(2))
    os.makedirs(tmp_path / "out")
    lock = make_requests.lock_output_folder(str(tmp_path / "out"))
    try:
        message = run("generate", server, "--input", inputs, "--out", tmp_path / "out")
    finally:
        lock.close()
    assert message == f"error: another make_requests run is writing to {tmp_path / 'out'}"


@pytest.mark.parametrize("content, message", [
    (None, "p.jsonl: no such file or folder"),
    ('{"ID": "P0", "language": "hindi", "prompt": "x"}\n{"ID": "P1", \n', "p.jsonl:2: not valid JSON"),
    ('{"ID": "P0", "language": "hindi"}\n', "p.jsonl:1: record has no 'prompt'"),
    ('{"ID": "P0", "language": "klingon", "prompt": "x"}\n', "unknown language 'klingon'"),
    ('{"ID": "P0", "language": "hindi", "prompt": "x"}\n' * 2, "p.jsonl:2: duplicate ID 'P0'"),
    ('["not", "an", "object"]\n', "p.jsonl:1: expected a JSON object"),
])
def test_bad_input_gives_one_clear_error_line(tmp_path, server, content, message):
    path = tmp_path / "in" / "p.jsonl"
    if content is not None:
        os.makedirs(path.parent)
        path.write_text(content, encoding="utf-8")
    result = run("generate", server, "--input", path, "--out", tmp_path / "out")
    assert result.startswith("error: ") and message in result and "\n" not in result


# --- evaluate mode ------------------------------------------------------------------------------

def test_evaluate_scores_model_samples(tmp_path, server):
    story = CANNED_STORIES["hindi"]
    samples = [{"ID": "S1", "prompt": "मीना को एक पतंग मिली", "sample_index": i, "story": story, "n_tokens": 120,
                "settings": {"temperature": 0.8}, "model": "hindi-gpt-54M"} for i in range(3)]
    samples.append({"ID": "S2", "prompt": "एक दिन", "sample_index": 0, "story": story, "n_tokens": 99,
                    "settings": {}, "model": "hindi-gpt-54M"})
    path = tmp_path / "samples" / "hindi-gpt-54M.json"
    os.makedirs(path.parent)
    path.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    server.script.update({
        # Three samples share this opening; one reply is out of range and gets asked again.
        "मीना को एक पतंग मिली": (["reply:" + json.dumps({**SCORES, "grammar": 11})]
                                 + ["reply:" + json.dumps(SCORES)] * 3),
        "एक दिन": ["reply:" + json.dumps({k: f"{v}/10" for k, v in SCORES.items()})],
    })
    assert run("evaluate", server, "--input", path, "--out", tmp_path / "ratings", "--language", "hindi") is None
    ratings = read_jsonl(tmp_path / "ratings" / "hindi-gpt-54M.jsonl")
    assert len(ratings) == 4
    assert sorted((r["ID"], r["sample_index"]) for r in ratings) == [("S1", 0), ("S1", 1), ("S1", 2), ("S2", 0)]
    for rating in ratings:
        assert list(rating) == ["ID", "sample_index", "model", "rubric", "context_awareness", "completeness",
                                "grammar", "fluency", "creativity", "overall", "judge"]
        assert rating["model"] == "hindi-gpt-54M" and rating["judge"] == "fake-model" and rating["rubric"] == "seed"
        assert [rating[f] for f in ("context_awareness", "grammar", "overall")] == [7, 9, 7]
    # The rubric judges context awareness against the sample's opening and shows the story.
    rubric = next(p for p in server.prompts if "एक दिन" in p)
    assert 'its opening "एक दिन"' in rubric and story in rubric and "Hindi" in rubric
    assert prompts_containing(server, "मीना को एक पतंग मिली") == 3 + 1  # one retry for the 11


def test_evaluate_corpus_records_uses_their_language_and_brief(tmp_path, server):
    corpus = [{**record, "model": "gpt-4o-mini", "story": CANNED_STORIES["hindi"]} for record in prompt_records(2)]
    inputs = write_jsonl(tmp_path / "stories" / "hindi.jsonl", corpus)
    assert run("evaluate", server, "--input", inputs, "--out", tmp_path / "ratings") is None
    ratings = read_jsonl(tmp_path / "ratings" / "hindi.jsonl")
    assert {r["ID"] for r in ratings} == {"P0", "P1"} and all("sample_index" not in r for r in ratings)
    assert all('use the noun "आम", the verb "खाना"' in prompt for prompt in server.prompts)


def test_evaluate_needs_to_know_the_language(tmp_path, server):
    inputs = write_jsonl(tmp_path / "s" / "x.jsonl", [{"ID": "S1", "story": "x", "model": "m"}])
    message = run("evaluate", server, "--input", inputs, "--out", tmp_path / "ratings")
    assert message.startswith("error: ") and "x.jsonl:1: record has no 'language' or no 'model'" in message


# --- translate mode -----------------------------------------------------------------------------

def test_translate_keeps_source_ids(tmp_path, server):
    english = CANNED_STORIES["english"]
    corpus = [{"ID": "ts-17", "text": english}, {"text": english}, {"ID": 42, "text": english}]
    inputs = write_jsonl(tmp_path / "en" / "tinystories.jsonl", corpus)
    assert run("translate", server, "--input", inputs, "--out", tmp_path / "hi", "--language", "hindi") is None
    translated = {r["ID"]: r for r in read_jsonl(tmp_path / "hi" / "tinystories.jsonl")}
    assert set(translated) == {"ts-17", "1", 42}  # no ID: the record's position
    for record in translated.values():
        assert record["language"] == "hindi" and record["source_language"] == "english"
        assert record["source"] == english and record["story"] == CANNED_STORIES["hindi"]
    assert all("from English into Hindi, written in the Devanagari script" in p and english in p
               for p in server.prompts)


def test_translate_reads_a_hugging_face_dataset(tmp_path, server, monkeypatch):
    # A dataset folder on disk goes through the same datasets.load_dataset call as a hub name.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"text": CANNED_STORIES["english"]} for _ in range(4)]
    write_jsonl(tmp_path / "TinyStories" / "validation.jsonl", rows)
    assert run("translate", server, "--input", f"hf:{tmp_path / 'TinyStories'}", "--hf_split", "validation",
               "--limit", 3, "--out", tmp_path / "hi", "--language", "hindi") is None
    translated = read_jsonl(tmp_path / "hi" / "TinyStories-validation.jsonl")
    assert sorted(r["ID"] for r in translated) == ["0", "1", "2"]
    message = run("translate", server, "--hf_dataset", tmp_path / "missing", "--out", tmp_path / "x",
                  "--language", "hindi")
    assert message.startswith(f"error: hf:{tmp_path / 'missing'}: could not load the Hugging Face dataset")


def test_translate_rejects_a_reply_in_the_wrong_language(tmp_path):
    with FakeLLMServer(language="english") as server:
        inputs = write_jsonl(tmp_path / "en" / "t.jsonl", [{"ID": "a", "story": CANNED_STORIES["english"]}])
        assert run("translate", server, "--input", inputs, "--out", tmp_path / "bn", "--language", "bangla",
                   "--retries", 1) is None
    [failed] = read_jsonl(tmp_path / "bn" / "t.failed.jsonl")
    assert failed["ID"] == "a" and "only 0% of the letters are Bengali" in failed["error"]


# --- backends -----------------------------------------------------------------------------------

def test_g4f_backend_reports_an_unknown_provider():
    with pytest.raises(BackendConfigError, match="g4f has no provider 'NoSuchProvider'"):
        G4FBackend("gpt-4o-mini", provider="NoSuchProvider")


def test_g4f_backend_maps_errors(monkeypatch):
    # No network here: a stand-in for g4f's client shows how the backend reads replies and errors.
    import g4f.errors
    from regional_tinystories.llm import RequestFailed

    backend = G4FBackend("gpt-4o-mini")
    outcomes = []

    async def create(model, messages):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        message = type("Message", (), {"content": outcome})
        return type("Completion", (), {"choices": [type("Choice", (), {"message": message})]})

    monkeypatch.setattr(backend.client.chat.completions, "create", create)
    outcomes[:] = ['{"story": "..."}', g4f.errors.RateLimitError("slow down"), g4f.errors.ModelNotFoundError("x")]
    assert asyncio.run(backend.complete("hi")) == '{"story": "..."}'
    with pytest.raises(RequestFailed, match="g4f RateLimitError: slow down") as failed:
        asyncio.run(backend.complete("hi"))
    assert failed.value.retryable
    with pytest.raises(BackendConfigError, match="g4f: x"):
        asyncio.run(backend.complete("hi"))


def test_connection_refused_is_retried_then_recorded(tmp_path):
    with FakeLLMServer() as server:
        base_url = server.base_url  # the port is free again once the server stops
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1))
    make_requests.main(["generate", "--input", inputs, "--out", str(tmp_path / "out"), "--base_url", base_url,
                        *FAST, "--retries", "1"])
    [failed] = read_jsonl(tmp_path / "out" / "p.failed.jsonl")
    assert failed["error"].startswith(f"cannot connect to {base_url}/chat/completions: ClientConnectorError")
    assert failed["error"].endswith("(gave up after 2 attempts)")  # 2 in a row: under --max_connection_failures


def test_run_requests_closes_the_backend_and_returns_counts(tmp_path, server):
    # The pipeline as a library call, as scripts/bench_requests.py uses it.
    from types import SimpleNamespace

    from regional_tinystories.llm import Job, OpenAICompatibleBackend, Shard, run_requests
    GenerateStories = make_requests.GenerateStories

    backend = OpenAICompatibleBackend(server.base_url, "fake-model")
    mode = GenerateStories(SimpleNamespace(min_words=50, min_script_share=0.9, with_summary=False), backend)
    shard = Shard("x", None, str(tmp_path / "x.jsonl"), str(tmp_path / "x.failed.jsonl"), set())
    jobs = (Job(r["ID"], r, shard) for r in prompt_records(3))
    stats = asyncio.run(run_requests(jobs, backend, mode, RequestSettings(max_in_flight=2), show_progress=False))
    assert stats["ok"] == 3 and stats["failed"] == 0
    assert backend.session.closed
    assert len(read_jsonl(tmp_path / "x.jsonl")) == 3
