"""Tests for prompting/translate_local.py: tiny randomly initialised NLLB-, M2M-100- and Marian-architecture models
with tokenizers trained here (no weights can be downloaded), run end to end, killed and resumed, and split over two
processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, load_script, run_main, write_jsonl

translate_local = load_script("prompting/translate_local.py")
SCRIPT = os.path.join(ROOT, "prompting", "translate_local.py")

ENGLISH = ["Tom had a red ball. He liked to play with it in the park every day!",
           "Lily saw a small cat under the tree. She gave it some milk.\n\n\"Thank you,\" said the cat. Lily smiled.",
           "The sun was hot, so the children sat in the shade, ate cold mangoes, and told stories until evening."]
tiny_seq2seq = load_script("scripts/bench_translate.py").tiny_seq2seq  # a random NLLB/M2M-100/Marian model


@pytest.fixture(scope="module")
def nllb(tmp_path_factory):
    return tiny_seq2seq(str(tmp_path_factory.mktemp("nllb")), "nllb")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def corpus(path, count):
    return write_jsonl(str(path), [{"ID": f"s{i}", "story": ENGLISH[i % 3] + f" It was day {i}."}
                                   for i in range(count)])


def translate(*argv):
    return run_main(translate_local.main, [*map(str, argv)])


# ----------------------------------------------------------------------------- end to end

@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")  # Marian's tokenizer, about English
@pytest.mark.parametrize("family, target_token", [("nllb", "hin_Deva"), ("m2m100", "__hi__"), ("marian", None)])
def test_each_model_family_translates_with_its_language_codes(tmp_path, family, target_token):
    folder = tiny_seq2seq(str(tmp_path / family), family)
    args = translate_local.parse_args(["--input", "x.jsonl", "--out", "o", "--language", "hindi",
                                       "--model", folder, "--num_beams", "2"])
    translator = translate_local.Translator(args, "cpu", "float32")
    assert translator.family == family
    expected = translator.tokenizer.convert_tokens_to_ids(target_token) if target_token else None
    assert translator.forced_bos_id == expected
    results = translator.translate(["Tom had a red ball.", "He liked to play."])
    assert len(results) == 2 and all(problem is None and text for text, problem in results), results


def test_translates_a_corpus_sentence_by_sentence(tmp_path, nllb):
    samples = [{"ID": "p1", "sample_index": i, "prompt": "Tom had", "story": ENGLISH[i], "model": "out/en-64x2"}
               for i in range(3)]  # sample.py output: one prompt, several stories
    inputs = write_jsonl(str(tmp_path / "in" / "samples.jsonl"), samples)
    result = translate("--input", inputs, "--out", tmp_path / "hi", "--language", "hindi", "--model", nllb,
                       "--min_script_share", "0", "--batch_size", "3")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "hi" / "samples.jsonl")
    assert sorted(r["sample_index"] for r in records) == [0, 1, 2]
    for record in records:
        source = samples[record["sample_index"]]
        assert {k: record[k] for k in ("ID", "prompt", "source_model", "source", "language", "source_language",
                                       "model", "backend")} == \
            {"ID": "p1", "prompt": "Tom had", "source_model": "out/en-64x2", "source": source["story"],
             "language": "hindi", "source_language": "english", "model": nllb, "backend": "hf-seq2seq"}
        assert record["story"].strip()
    two_paragraphs = next(r for r in records if r["sample_index"] == 1)
    assert two_paragraphs["story"].count("\n\n") == 1  # the paragraph break survives
    # 2 + 4 + 1 sentences
    assert "3 ok, 0 failed, 7 sentences in" in result.stdout and "sentences/s" in result.stdout
    assert not os.path.exists(tmp_path / "hi" / "samples.failed.jsonl")


def test_failed_translations_are_failed_records_with_a_reason_never_empty_stories(tmp_path, nllb):
    inputs = corpus(tmp_path / "in" / "c.jsonl", 2)
    result = translate("--input", inputs, "--out", tmp_path / "cut", "--language", "hindi", "--model", nllb,
                       "--max_new_tokens", "1", "--min_script_share", "0")
    assert result.returncode == 0 and "0 ok, 2 failed" in result.stdout
    assert not os.path.exists(tmp_path / "cut" / "c.jsonl")
    assert [r["error"] for r in read_jsonl(tmp_path / "cut" / "c.failed.jsonl")] == \
        ["sentence 1: its translation reached --max_new_tokens=1 (cut off, or repeating itself)"] * 2
    # a random model writes several scripts at once: not Hindi
    translate("--input", inputs, "--out", tmp_path / "script", "--language", "hindi", "--model", nllb)
    failed = read_jsonl(tmp_path / "script" / "c.failed.jsonl")
    assert len(failed) == 2 and all(f["error"].startswith("wrong script: only ") and
                                    f["error"].endswith("of the letters are Devanagari (need 90%)") for f in failed)
    # --retry_failed sends them again; this time they pass
    result = translate("--input", inputs, "--out", tmp_path / "script", "--language", "hindi", "--model", nllb,
                       "--retry_failed", "--min_script_share", "0")
    assert "2 ok, 0 failed" in result.stdout and not os.path.exists(tmp_path / "script" / "c.failed.jsonl")


@pytest.mark.parametrize("make_bad, message", [
    (lambda tmp, nllb: ["--input", write_jsonl(str(tmp / "in" / "a.jsonl"), [{"ID": 1, "story": "A."}, {"ID": 2}]),
                        "--model", nllb], "a.jsonl:2: record has no 'story'"),
    (lambda tmp, nllb: ["--input", write_jsonl(str(tmp / "in" / "a.jsonl"), [{"ID": 1, "story": "A."}] * 2),
                        "--model", nllb], "a.jsonl:2: duplicate ID '1'"),
    (lambda tmp, nllb: ["--input", corpus(tmp / "in" / "a.jsonl", 1), "--model", str(tmp / "none")],
     "--model "),
    (lambda tmp, nllb: ["--input", corpus(tmp / "out" / "a.jsonl", 1), "--model", nllb], "--out "),
])
def test_bad_input_is_one_error_line(tmp_path, nllb, make_bad, message):
    result = translate(*make_bad(tmp_path, nllb), "--out", tmp_path / "out", "--language", "hindi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_resume_after_sigkill_loses_nothing_and_doubles_nothing(tmp_path, nllb):
    count = 80
    inputs = corpus(tmp_path / "in" / "c.jsonl", count)
    out = tmp_path / "out"
    argv = ["--input", inputs, "--out", str(out), "--language", "hindi", "--model", nllb, "--min_script_share", "0",
            "--chunk_records", "1", "--num_beams", "1"]
    process = subprocess.Popen([sys.executable, SCRIPT, *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and len(read_jsonl_lenient(out / "c.jsonl")) < 5:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL  # it was killed mid-run, not finished
    with open(out / "c.jsonl", "ab") as f:
        f.write(b'{"ID": "s9", "sto')  # and as if the kill tore the line being written
    done_before = len(read_jsonl_lenient(out / "c.jsonl"))
    assert 5 <= done_before < count
    result = translate(*argv)  # the same command again, in this process (the model loads faster here)
    assert result.returncode == 0, result.stderr
    assert "repaired" in result.stderr and f"{count - done_before} ok, 0 failed" in result.stdout
    ids = [r["ID"] for r in read_jsonl(out / "c.jsonl")]
    assert sorted(ids) == sorted(f"s{i}" for i in range(count))


def read_jsonl_lenient(path):
    """The complete lines of a file that may be being written (none if it does not exist yet)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def test_two_processes_merge_to_the_same_records_as_one(tmp_path, nllb):
    inputs = corpus(tmp_path / "in" / "c.jsonl", 24)
    common = ["--input", inputs, "--language", "hindi", "--model", nllb, "--min_script_share", "0",
              "--num_beams", "1", "--limit", "20"]
    assert translate(*common, "--out", tmp_path / "one").returncode == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SCRIPT,
                          *common, "--out", str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert two.returncode == 0, two.stderr
    assert "merged the 2 shards" in two.stdout
    assert sorted(os.listdir(tmp_path / "two")) == [".translate_local.rank0.lock", ".translate_local.rank1.lock",
                                                    "c.jsonl"]
    by_key = {r["ID"]: r for r in read_jsonl(tmp_path / "one" / "c.jsonl")}
    merged = read_jsonl(tmp_path / "two" / "c.jsonl")
    assert len(merged) == len(by_key) == 20
    assert {r["ID"]: r for r in merged} == by_key  # the same records, translations included (greedy decoding)
    # each process translated a share of its own
    shares = [line for line in two.stdout.splitlines() if " of 2, " in line and " ok, " in line]
    assert len(shares) == 2 and all(" 0 ok" not in line for line in shares)


def test_merge_refuses_a_key_translated_twice(tmp_path):
    out = tmp_path / "out"
    inputs = corpus(tmp_path / "in" / "c.jsonl", 3)
    write_jsonl(str(out / "c.rank0-of-2.jsonl"), [{"ID": "s0", "story": "x"}, {"ID": "s1", "story": "x"}])
    write_jsonl(str(out / "c.rank1-of-2.jsonl"), [{"ID": "s1", "story": "y"}])
    result = translate("--input", inputs, "--out", out, "--merge_only")
    assert result.returncode == 1
    assert result.stderr == f"error: {out / 'c.rank1-of-2.jsonl'}: 's1' is translated in " \
                            f"{out / 'c.rank0-of-2.jsonl'} too (did two runs write to this folder at once?)\n"
    os.remove(out / "c.rank1-of-2.jsonl")
    write_jsonl(str(out / "c.rank1-of-2.failed.jsonl"), [{"ID": "s1", "error": "old"}, {"ID": "s2", "error": "e"}])
    result = translate("--input", inputs, "--out", out, "--merge_only")
    assert result.returncode == 0 and "0 input records are in no output" in result.stdout
    assert [r["ID"] for r in read_jsonl(out / "c.jsonl")] == ["s0", "s1"]
    assert read_jsonl(out / "c.failed.jsonl") == [{"ID": "s2", "error": "e"}]  # s1 was translated after all
    assert sorted(os.listdir(out)) == [".translate_local.rank0.lock", "c.failed.jsonl", "c.jsonl"]
