"""Judge rubrics (make_requests.py evaluate --rubric): the rubric files, what each shows the judge, the ratings each
gets from the fake judge on 127.0.0.1, and the refusals (bad rubric files, a folder of another rubric's ratings)."""
import json
import os

import pytest
from helpers import ROOT, load_script, read_jsonl, run, run_main, write_jsonl

from regional_tinystories.files import DataError
from regional_tinystories.metrics import read_rating_records
from regional_tinystories.replies import ReplyError, parse_scores_reply
from regional_tinystories.templates import (
    BUILTIN_RUBRICS,
    fill_judge_rubric,
    load_rubric,
    opening_and_completion,
)

make_requests = load_script("prompting/make_requests.py")
fake_llm_server = load_script("prompting/fake_llm_server.py")
HINDI_STORY = fake_llm_server.CANNED_STORIES["hindi"]
FAST = ["--backoff_base", "0.01", "--backoff_max", "0.02", "--timeout", "2", "--max_in_flight", "2"]
OPENING = "मीना को पुराने आम के पेड़ के नीचे"


@pytest.fixture
def server():
    with fake_llm_server.FakeLLMServer(language="hindi") as fake:
        yield fake


def evaluate(server, *argv):
    """make_requests.py evaluate in this process against the fake judge: (exit code, stderr)."""
    result = run_main(make_requests.main, ["evaluate", "--base_url", server.base_url, "--model", "fake-judge", *FAST,
                                           *map(str, argv)])
    return result.returncode, result.stderr


def sample_record(**extra):
    """A sample.py record: its story starts with the opening the model was given."""
    return {"ID": "S1", "prompt": OPENING, "sample_index": 0, "story": HINDI_STORY, "model": "hindi-5M",
            "language": "hindi", **extra}


def corpus_record(**extra):
    return {"ID": "P1", "language": "hindi", "noun": "पतंग", "verb": "उड़ना", "adjective": "लाल",
            "ending": "a happy ending", "template": "2", "prompt": "Write a story ...", "model": "gpt-4o-mini",
            "story": HINDI_STORY, **extra}


def judge_copy_record():
    """A record of scripts/augment_synonyms.py --judge_copy: replacements marked in the story and listed."""
    story = HINDI_STORY.replace("छोटी लाल पतंग", "⟨नन्ही⟩ लाल पतंग", 1).replace("तेज़ हवा", "⟨तीव्र⟩ हवा", 1)
    return corpus_record(story=story, synonyms=[["छोटी", "नन्ही"], ["तेज़", "तीव्र"]])


RECORDS = {"seed": sample_record, "tinystories": sample_record, "instruct": lambda: corpus_record(
    features=["dialogue"], summary="मीना और रवि पतंग ठीक करते हैं।"), "synonyms": judge_copy_record}
FIELDS = {
    "seed": ["context_awareness", "completeness", "grammar", "fluency", "creativity", "overall"],
    "tinystories": ["grammar", "creativity", "consistency", "plot"],
    "instruct": ["grammar", "creativity", "consistency", "plot", "instruction_following"],
    "synonyms": ["grammar", "creativity", "consistency", "plot", "vocabulary_diversity"],
}


def test_the_built_in_rubrics_are_rubric_files_with_their_fields():
    assert sorted(os.listdir(os.path.join(ROOT, "prompting", "rubrics"))) == sorted(
        f"{name}.json" for name in BUILTIN_RUBRICS)
    for name in BUILTIN_RUBRICS:
        rubric = load_rubric(name)
        assert rubric.name == name and list(rubric.fields) == FIELDS[name]
        assert load_rubric(rubric.path).fields == rubric.fields  # a built-in is a file like any other


@pytest.mark.parametrize("name", BUILTIN_RUBRICS)
def test_each_rubric_is_scored_by_the_loopback_judge_and_named_in_the_ratings(tmp_path, server, name):
    record = RECORDS[name]()
    inputs = write_jsonl(tmp_path / "in" / "stories.jsonl", [record])
    returncode, stderr = evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric", name)
    assert returncode == 0, stderr
    [rating] = read_jsonl(tmp_path / "ratings" / "stories.jsonl")
    keys = ["ID", *(["sample_index"] if "sample_index" in record else []), "model", "rubric", *FIELDS[name], "judge"]
    assert list(rating) == keys
    assert rating["rubric"] == name and rating["model"] == record["model"] and rating["judge"] == "fake-judge"
    # The fake judge read the fields from the prompt's JSON form and answered each with its fixed fake score.
    assert {f: rating[f] for f in FIELDS[name]} == {
        f: fake_llm_server.canned_score(f.replace("_", " ")) for f in FIELDS[name]}
    [prompt] = server.prompts
    assert prompt.endswith("{" + ", ".join(f'"{f.replace("_", " ")}": <score>' for f in FIELDS[name]) + "}")
    assert "Hindi" in prompt and "{" + "story}" not in prompt


def test_what_each_rubric_shows_the_judge():
    tinystories = fill_judge_rubric(load_rubric("tinystories"), sample_record(), "Hindi")
    # The opening the model was given, ***, then what the model wrote.
    assert f'"""\n{OPENING} *** {HINDI_STORY[len(OPENING):].strip()}\n"""' in tinystories

    instruct = fill_judge_rubric(load_rubric("instruct"), RECORDS["instruct"](), "Hindi")
    assert ("Words: पतंग, उड़ना, लाल\nEnding: a happy ending\nFeatures: dialogue\n"
            "Summary: मीना और रवि पतंग ठीक करते हैं।\n") in instruct and HINDI_STORY in instruct
    # An instruct model's sample names its words as a list.
    spec_sample = {"ID": "x", "story": "s", "words": ["dog", "hide"], "ending": "a twist", "sentence": "He ran."}
    assert "Words: dog, hide\nEnding: a twist\nSentence: He ran.\n" in fill_judge_rubric(
        load_rubric("instruct"), spec_sample, "English")

    synonyms = fill_judge_rubric(load_rubric("synonyms"), judge_copy_record(), "Hindi")
    assert '"छोटी" → "नन्ही", "तेज़" → "तीव्र"' in synonyms and "⟨नन्ही⟩ लाल पतंग" in synonyms


def test_the_opening_of_a_story_without_its_prompt_is_its_first_40_percent_of_words():
    story = "one two three four five six seven eight nine ten"
    # a sample.py record: its prompt
    assert opening_and_completion({"prompt": "one two", "story": story}) == ("one two", "three four five six seven "
                                                                                       "eight nine ten")
    # a corpus record, whose "prompt" is the LLM's instruction, and a record without a prompt: 4 of 10 words
    for record in ({"prompt": "Write a story", "story": story}, {"story": story}):
        assert opening_and_completion(record) == ("one two three four", "five six seven eight nine ten")


def test_a_rubric_file_of_ones_own(tmp_path, server):
    rubric = tmp_path / "word_use.json"
    rubric.write_text(json.dumps({"template": "Does this {language} story use {words} and have {ending}?\n{story}",
                                  "fields": ["word_use", "plot_sense"]}), encoding="utf-8")
    inputs = write_jsonl(tmp_path / "in" / "c.jsonl", [corpus_record()])
    assert evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric", rubric)[0] == 0
    [rating] = read_jsonl(tmp_path / "ratings" / "c.jsonl")
    assert rating["rubric"] == "word_use" and [k for k in rating if k in ("word_use", "plot_sense")] == [
        "word_use", "plot_sense"]
    assert server.prompts[0].startswith("Does this Hindi story use पतंग, उड़ना, लाल and have a happy ending?\n")


@pytest.mark.parametrize("content, message", [
    ({"template": "{story} {moral}", "fields": ["grammar"]}, "unknown placeholder {moral}; allowed: {language}"),
    ({"template": "{story}"}, 'needs a "fields" list of score names'),
    ({"template": "{story}", "fields": []}, 'needs a "fields" list of score names'),
    ({"template": "{story}", "fields": ["Plot Sense"]}, "score name 'Plot Sense' is not a lowercase name"),
    ({"template": "{story}", "fields": ["model"]}, "score name 'model' is a field every rating record has"),
    ({"template": "{story}", "fields": ["plot", "plot"]}, "lists the score 'plot' twice"),
    ({"fields": ["plot"]}, 'needs a "template"'),
    ({"template": "Rate it.", "fields": ["plot"]}, "the template never shows the judge the story"),
    ({"template": "{story}", "feilds": ["plot"]}, "unknown key 'feilds'"),
    ('{"template": "{story}", ', "not valid JSON"),
    (None, "no such file (built-in rubrics: seed, tinystories, instruct, synonyms)"),
])
def test_a_bad_rubric_file_is_one_error_line_naming_it(tmp_path, server, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", [sample_record()])
    returncode, stderr = evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric", path)
    assert returncode == 1 and stderr.startswith(f"error: rubric file {path}: ") and message in stderr
    assert stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "ratings") and server.prompts == []  # nothing touched, nothing sent


def test_a_bad_rubric_on_the_command_line_is_one_line_and_no_traceback(tmp_path):
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", [sample_record()])
    proc = run(os.path.join(ROOT, "prompting", "make_requests.py"), "evaluate", "--input", inputs, "--out",
               str(tmp_path / "ratings"), "--rubric=tinystorys", check=False)
    assert proc.returncode == 1 and proc.stderr == (
        "error: rubric file tinystorys: no such file (built-in rubrics: seed, tinystories, instruct, synonyms)\n")


@pytest.mark.parametrize("name, record, message", [
    ("instruct", {"ID": "S1", "story": HINDI_STORY, "language": "hindi", "model": "m"}, "record has no spec"),
    ("synonyms", corpus_record(), "record has no 'synonyms' list"),
    ("synonyms", corpus_record(synonyms=[["छोटी", "नन्ही"]]), "its story has no ⟨⟩ marks"),
])
def test_a_record_without_what_the_rubric_shows_stops_the_run_before_anything_is_sent(tmp_path, server, name, record,
                                                                                     message):
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", [record])
    returncode, stderr = evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric", name)
    assert returncode == 1 and stderr.startswith(f"error: {inputs}:1: ") and message in stderr
    assert server.prompts == []


def test_unusable_judge_replies_become_failed_records_with_a_reason(tmp_path, server):
    records = [sample_record(ID=f"S{i}", prompt=f"{OPENING} [S{i}]", story=f"{OPENING} [S{i}] " + HINDI_STORY)
               for i in range(4)]
    scores = {"grammar": 8, "creativity": 7, "consistency": 6, "plot": 5}
    server.script.update({
        "[S0]": ["reply:" + json.dumps({k: v for k, v in scores.items() if k != "plot"})] * 2,
        "[S1]": ["reply:I liked it a lot, 8 out of 10."] * 2,
        "[S2]": ["reply:" + json.dumps({**scores, "consistency": 11})] * 2,
        "[S3]": ["reply:" + json.dumps({**scores, "plot sense": 3, "Plot": "9/10"})],
    })
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", records)
    returncode, stderr = evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric",
                                  "tinystories", "--retries", 1)
    assert returncode == 0, stderr
    failed = {r["ID"]: r["error"] for r in read_jsonl(tmp_path / "ratings" / "s.failed.jsonl")}
    assert set(failed) == {"S0", "S1", "S2"}
    assert "the judge's JSON lacks plot" in failed["S0"]
    assert "no JSON object in the reply" in failed["S1"]
    assert "consistency score 11 is not a number from 1 to 10" in failed["S2"]
    [rating] = read_jsonl(tmp_path / "ratings" / "s.jsonl")
    assert rating["ID"] == "S3" and rating["plot"] == 9 and "plot_sense" not in rating
    assert {r["rubric"] for r in read_jsonl(tmp_path / "ratings" / "s.failed.jsonl")} == {"tinystories"}


def test_a_folder_whose_only_records_failed_under_another_rubric_is_refused(tmp_path, server):
    """Failed records name their rubric, so a folder holding nothing else still refuses another one (resuming would
    skip their IDs)."""
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", [sample_record(prompt=f"{OPENING} [S1]",
                                                                     story=f"{OPENING} [S1] " + HINDI_STORY)])
    out = tmp_path / "ratings"
    server.script["[S1]"] = ["reply:not JSON"]
    assert evaluate(server, "--input", inputs, "--out", out, "--rubric", "tinystories", "--retries", 0)[0] == 0
    assert not (out / "s.jsonl").exists() and read_jsonl(out / "s.failed.jsonl")[0]["rubric"] == "tinystories"
    returncode, stderr = evaluate(server, "--input", inputs, "--out", out, "--rubric", "seed")
    assert returncode == 1 and stderr == (f"error: --out {out} holds ratings made with the rubric 'tinystories' "
                                          f"({out / 's.failed.jsonl'}); this run uses 'seed': write its ratings to "
                                          "a folder of their own\n")


def test_parse_scores_reply_reads_a_rubrics_fields():
    reply = json.dumps({"Grammar": 8, "instruction-following": "7/10", "extra": 99})
    assert parse_scores_reply(reply, ("grammar", "instruction_following")) == {"grammar": 8,
                                                                               "instruction_following": 7}
    with pytest.raises(ReplyError, match="lacks vocabulary_diversity"):
        parse_scores_reply(reply, ("grammar", "vocabulary_diversity"))


def test_resuming_into_a_folder_of_another_rubric_is_refused(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", [sample_record(ID=f"S{i}") for i in range(3)])
    out = tmp_path / "ratings"
    assert evaluate(server, "--input", inputs, "--out", out, "--rubric", "tinystories", "--limit", 2)[0] == 0
    returncode, stderr = evaluate(server, "--input", inputs, "--out", out)  # the default, seed
    assert returncode == 1 and stderr == (f"error: --out {out} holds ratings made with the rubric 'tinystories' "
                                          f"({out / 's.jsonl'}); this run uses 'seed': write its ratings to a "
                                          "folder of their own\n")
    assert len(server.prompts) == 2
    # The same rubric resumes: only the third story is sent.
    assert evaluate(server, "--input", inputs, "--out", out, "--rubric", "tinystories")[0] == 0
    assert len(server.prompts) == 3 and [r["rubric"] for r in read_jsonl(out / "s.jsonl")] == ["tinystories"] * 3

    # Ratings written before rubrics had names are the seed rubric's.
    old = tmp_path / "old"
    write_jsonl(old / "s.jsonl", [{"ID": "S0", "sample_index": 0, "model": "hindi-5M",
                                   **{f: 5 for f in FIELDS["seed"]}, "judge": "gpt-4o"}])
    returncode, stderr = evaluate(server, "--input", inputs, "--out", old, "--rubric", "instruct")
    assert returncode == 1 and "holds ratings made with the rubric 'seed'" in stderr
    assert evaluate(server, "--input", inputs, "--out", old)[0] == 0
    assert [r.get("rubric") for r in read_jsonl(old / "s.jsonl")] == [None, "seed", "seed"]


def test_seed_only_readers_refuse_other_rubrics_and_aggregate_reads_them(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"ID": "1", "model": "m", "rubric": "tinystories", "grammar": 7,
                                               "creativity": 6, "consistency": 5, "plot": "4", "judge": "j"}])
    with pytest.raises(DataError, match="r.jsonl:1: rated with the rubric 'tinystories'; this reads seed-rubric"):
        read_rating_records([path])
    [rating] = read_rating_records([path], any_rubric=True)
    assert rating["rubric"] == "tinystories" and rating["fields"] == ("grammar", "creativity", "consistency", "plot")
    assert rating["plot"] == 4.0 and "true_overall" not in rating


def test_the_fake_judge_with_a_corpus_scores_the_fields_a_prompt_asks_for(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus" / "hindi.jsonl", [corpus_record()])
    stories = [sample_record(ID="S1"), sample_record(ID="S2", story=OPENING + " और फिर सब सो गए। बस।")]
    inputs = write_jsonl(tmp_path / "in" / "s.jsonl", stories)
    with fake_llm_server.FakeLLMServer(language="hindi", stories=corpus) as server:
        assert evaluate(server, "--input", inputs, "--out", tmp_path / "ratings", "--rubric", "tinystories")[0] == 0
        prompts = {prompt.count("सो गए"): prompt for prompt in server.prompts}
    ratings = {r["ID"]: r for r in read_jsonl(tmp_path / "ratings" / "s.jsonl")}
    for rating_id, prompt in (("S1", prompts[0]), ("S2", prompts[1])):
        expected = fake_llm_server.fake_scores(prompt, ["grammar", "creativity", "consistency", "plot"])
        assert {field: ratings[rating_id][field] for field in FIELDS["tinystories"]} == expected
    assert ratings["S1"]["plot"] > ratings["S2"]["plot"]  # computed from the story each prompt quotes: its length
