"""Reliability of the prompting stage (issue 9): no reply ends a run, outputs never overlap inputs, API keys never
leak, a full or read-only disk and an unreachable endpoint end in one line, bad inputs are refused before anything is
sent. Real processes against the fake OpenAI-compatible server on 127.0.0.1."""
import builtins
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import pytest
from helpers import ROOT, load_script, read_jsonl, run_main, write_jsonl

from regional_tinystories import files
from regional_tinystories.errors import Problem

make_requests = load_script("prompting/make_requests.py")
generate_prompts = load_script("prompting/generate_prompts.py")
FakeLLMServer = load_script("prompting/fake_llm_server.py").FakeLLMServer

MAKE_REQUESTS = os.path.join(ROOT, "prompting", "make_requests.py")
GENERATE_PROMPTS = os.path.join(ROOT, "prompting", "generate_prompts.py")
FAST = ["--backoff_base", "0.01", "--backoff_max", "0.02", "--timeout", "5", "--max_in_flight", "4"]
KEY = "sk-SECRET-0123456789abcdefghij"


@pytest.fixture
def server():
    with FakeLLMServer(language="hindi") as fake:
        yield fake



def prompt_records(count, language="hindi"):
    return [{"ID": f"P{i}", "language": language, "prompt": f"Write a story. [P{i}]"} for i in range(count)]


def cli(*argv, env=None):
    """make_requests.py as a user runs it: (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, MAKE_REQUESTS, *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=dict(os.environ, **(env or {})))
    return proc.returncode, proc.stdout, proc.stderr


def generate(server, *argv, env=None):
    return cli("generate", "--base_url", server.base_url, "--model", "fake", *FAST, *argv, env=env)


def assert_one_error_line(returncode, stderr, starts):
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert returncode == 1 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith(starts), stderr


def tree_bytes(folder):
    """{relative path: bytes} of every file under folder, to show a refused run touched nothing."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


# --- 1. no reply ends the run -------------------------------------------------------------------

def test_deeply_nested_replies_become_failed_records_and_the_rerun_goes_on(tmp_path, server):
    server.script.update({"[P1]": ["nested:60000"] * 3,  # "[" * 60000 as the message
                          "[P2]": ["body:" + "[" * 60000] * 3,  # ... as the whole HTTP body
                          "[P3]": ["reply:" + '{"story": ' * 60000] * 3})
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(5))
    returncode, stdout, stderr = generate(server, "--input", inputs, "--out", tmp_path / "out", "--retries", 2)
    assert returncode == 0 and "Traceback" not in stderr, stderr
    assert sorted(r["ID"] for r in read_jsonl(tmp_path / "out" / "p.jsonl")) == ["P0", "P4"]
    failed = {r["ID"]: r["error"] for r in read_jsonl(tmp_path / "out" / "p.failed.jsonl")}
    assert sorted(failed) == ["P1", "P2", "P3"]
    assert failed["P1"].startswith("unusable reply: JSON nested too deeply to read (starts '[[[")
    assert failed["P2"].startswith("HTTP 200 but not a chat completion: '[[[")
    assert failed["P3"].startswith("unusable reply: JSON nested too deeply")
    assert all(reason.endswith("(gave up after 3 attempts)") for reason in failed.values())
    assert "2 ok, 3 failed" in stdout
    # The rerun does not die at the same place: everything is done or failed, nothing is sent again.
    sent = len(server.prompts)
    returncode, stdout, _ = generate(server, "--input", inputs, "--out", tmp_path / "out")
    assert returncode == 0 and "0 ok, 0 failed" in stdout and len(server.prompts) == sent


def test_sigkill_among_unreadable_replies_then_resume_keeps_every_record_once(tmp_path):
    count = 80
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(count))
    out_dir = tmp_path / "out"
    nested = {f"[P{i}]" for i in range(0, count, 7)}
    with FakeLLMServer(language="hindi", delay=0.02, script={key: ["nested:60000"] * 10 for key in nested}) as server:
        child = subprocess.Popen([sys.executable, MAKE_REQUESTS, "generate", "--input", inputs, "--out", str(out_dir),
                                  "--base_url", server.base_url, "--model", "fake", *FAST, "--retries", "0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = out_dir / "p.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 20):
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert out.read_bytes().count(b"\n") < count - len(nested), "the run should have been killed part-way"
        returncode, _, stderr = generate(server, "--input", inputs, "--out", out_dir, "--retries", "0")
    assert returncode == 0, stderr
    done = [r["ID"] for r in read_jsonl(out)]
    failed = [r["ID"] for r in read_jsonl(out_dir / "p.failed.jsonl")]
    assert sorted(done + failed) == sorted(f"P{i}" for i in range(count))  # each exactly once
    assert {f"[{i}]" for i in failed} == nested


def test_a_huge_reply_is_refused_while_it_is_read(tmp_path, server):
    server.script["[P1]"] = ["huge:100000000"]  # 100 MB, streamed without a Content-Length
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(3))
    # A small parent process reports the peak memory of its child: started from this (large) test process, the
    # child's own figure would include ours.
    peak_of_child = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", peak_of_child, sys.executable, MAKE_REQUESTS, "generate", "--input",
                           inputs, "--out", str(tmp_path / "out"), "--base_url", server.base_url, "--model", "fake",
                           *FAST, "--max_reply_bytes", "1000000"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(proc.stdout.split()[-1])
    [failed] = read_jsonl(tmp_path / "out" / "p.failed.jsonl")
    assert failed["error"] == ("reply larger than 1000000 bytes (--max_reply_bytes); not read further "
                               "(attempt 1, not retryable)")
    assert sorted(r["ID"] for r in read_jsonl(tmp_path / "out" / "p.jsonl")) == ["P0", "P2"]
    # The client hung up after about a megabyte (plus what the sockets buffer), not after 100 MB...
    deadline = time.monotonic() + 30  # the server notices the hang-up on its own thread
    while not server.huge_bytes_sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.huge_bytes_sent and server.huge_bytes_sent[0] < 20_000_000
    # ... and never held it: the whole process peaked far below the 100 MB it was offered.
    assert peak_kib < 150_000


def test_a_reply_with_a_lone_surrogate_is_stored_not_fatal(tmp_path, server):
    # The message starts with "\ud800", a lone surrogate: no UTF-8 file can hold it as it is.
    body = json.dumps({"choices": [{"message": {"content": "\ud800" + server.canned_reply}, "finish_reason": "stop"}]})
    server.script["[P0]"] = ["body:" + body]
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1))
    returncode, _, stderr = generate(server, "--input", inputs, "--out", tmp_path / "out",
                                     "--debug_log", tmp_path / "raw.jsonl")
    assert returncode == 0 and "Traceback" not in stderr, stderr
    [record] = read_jsonl(tmp_path / "out" / "p.jsonl")
    assert record["story"] == json.loads(server.canned_reply)["story"]  # the stray surrogate was cleaned away
    [logged] = read_jsonl(tmp_path / "raw.jsonl")
    assert logged["reply"] == "\ud800" + server.canned_reply  # the debug log keeps the raw reply, escaped


# --- 3. outputs never overlap inputs -------------------------------------------------------------

@pytest.mark.parametrize("layout", ["same", "out_inside_input", "input_inside_out", "symlinked_out",
                                    "symlinked_file_in_out", "debug_log_is_input", "debug_log_in_out"])
def test_overlapping_input_and_output_are_refused_before_any_file_is_touched(tmp_path, server, layout):
    inputs = tmp_path / "data" / "prompts"
    write_jsonl(inputs / "p.jsonl", prompt_records(3))
    write_jsonl(tmp_path / "data" / "done" / "p.jsonl", [{"ID": "P0", "story": "x"}])
    if layout == "same":
        argv = ["--input", inputs, "--out", inputs]
    elif layout == "out_inside_input":
        argv = ["--input", inputs, "--out", inputs / "stories"]
    elif layout == "input_inside_out":
        argv = ["--input", inputs / "p.jsonl", "--out", tmp_path / "data"]
    elif layout == "symlinked_out":
        os.symlink(inputs, tmp_path / "link")
        argv = ["--input", inputs, "--out", tmp_path / "link"]
    elif layout == "symlinked_file_in_out":  # an output file that is the input under another name
        os.makedirs(tmp_path / "stories")
        os.symlink(inputs / "p.jsonl", tmp_path / "stories" / "p.jsonl")
        argv = ["--input", inputs, "--out", tmp_path / "stories"]
    elif layout == "debug_log_is_input":
        argv = ["--input", inputs, "--out", tmp_path / "stories", "--debug_log", inputs / "p.jsonl"]
    else:
        argv = ["--input", inputs, "--out", tmp_path / "stories", "--debug_log", tmp_path / "stories" / "raw.jsonl"]
    before = tree_bytes(tmp_path)
    returncode, _, stderr = generate(server, *argv)
    starts = {"symlinked_file_in_out": f"error: {tmp_path / 'stories' / 'p.jsonl'} is the input",
              "debug_log_is_input": "error: --debug_log", "debug_log_in_out": "error: --debug_log"}
    assert_one_error_line(returncode, stderr, starts.get(layout, "error: --out"))
    assert server.prompts == []
    assert tree_bytes(tmp_path) == before  # the input intact, no output folder, no lock file
    assert not os.path.exists(tmp_path / "stories" / ".make_requests.lock")


@pytest.mark.parametrize("mode", ["evaluate", "translate"])
def test_every_mode_refuses_an_output_inside_its_input(tmp_path, server, mode):
    dataset = tmp_path / "TinyStories"
    write_jsonl(dataset / "validation.jsonl", [{"ID": "a", "story": "A story.", "language": "english", "model": "m"}])
    before = tree_bytes(tmp_path)
    source = ["--input", str(dataset)] if mode == "evaluate" else ["--input", f"hf:{dataset}", "--language", "hindi"]
    result = run_main(make_requests.main, [mode, *source, "--out", str(dataset / "out"), "--base_url",
                                           server.base_url, "--model", "fake"])
    assert_one_error_line(result.returncode, result.stderr, f"error: --out {dataset / 'out'} overlaps the input ")
    assert tree_bytes(tmp_path) == before and server.prompts == []


@pytest.mark.parametrize("layout", ["same", "out_inside_words", "words_inside_out"])
def test_generate_prompts_refuses_an_out_overlapping_the_word_lists(tmp_path, layout):
    words = tmp_path / "lists" / "words"
    os.makedirs(words)
    for kind in generate_prompts.WORD_KINDS:
        (words / f"{kind}.tsv").write_text(f"{kind}0\tgloss0\n{kind}1\tgloss1\n", encoding="utf-8")
    out = {"same": words, "out_inside_words": words / "prompts", "words_inside_out": tmp_path / "lists"}[layout]
    before = tree_bytes(tmp_path)
    result = run_main(generate_prompts.main, ["--language", "hindi", "--num_prompts", "4", "--words_dir", str(words),
                                              "--out", str(out)])
    assert result.returncode == 1
    assert result.stderr == f"error: --out {out} overlaps the word lists' folder {words}; " \
                            "write the prompts to a folder of their own\n"
    assert tree_bytes(tmp_path) == before


# --- 5. API keys never stored or printed ---------------------------------------------------------

def assert_key_absent(*texts):
    """No 8-character piece of the key anywhere: a key cut in half leaks too."""
    for text in texts:
        for start in range(len(KEY) - 7):
            assert KEY[start:start + 8] not in text, (KEY[start:start + 8], text[:300])


def test_the_api_key_is_blanked_everywhere_even_when_cut_or_echoed(tmp_path, server):
    server.script.update({
        "[P0]": ["body:" + "x" * 190 + KEY + " is not a valid key"] * 2,  # straddles the 200-character excerpt
        "[P1]": [f"reply:I cannot use the key {KEY}, sorry."] * 2,  # echoed in the reply itself
        "[P2]": ['reply:{"story": "' + KEY + '"}'] * 2,  # a "story" that is the key
    })
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(4))
    returncode, stdout, stderr = generate(server, "--input", inputs, "--out", tmp_path / "out", "--retries", 1,
                                          "--api_key_env", "STORY_KEY", "--debug_log", tmp_path / "raw.jsonl",
                                          env={"STORY_KEY": KEY})
    assert returncode == 0, stderr
    assert server.api_keys == [KEY] * 7  # sent every time
    failed = {r["ID"]: r["error"] for r in read_jsonl(tmp_path / "out" / "p.failed.jsonl")}
    assert sorted(failed) == ["P0", "P1", "P2"]
    assert failed["P0"].startswith("HTTP 200 but not a chat completion: '" + "x" * 190 + "*")
    assert failed["P1"].startswith("unusable reply: the reply contains the API key")
    # The debug log keeps each raw reply with the key's value replaced and the rest as it was.
    logged = [entry["reply"] for entry in read_jsonl(tmp_path / "raw.jsonl")]
    assert "I cannot use the key ***, sorry." in logged and '{"story": "***"}' in logged
    written = [content.decode("utf-8", "replace") for content in tree_bytes(tmp_path).values()]
    assert_key_absent(stdout, stderr, *written)


def test_a_refused_key_echoed_by_the_server_is_blanked_in_the_error_line(tmp_path, server):
    server.script["[P0]"] = ["http:401:{\"error\": \"Incorrect API key provided: " + KEY + "\"}"]
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1))
    returncode, stdout, stderr = generate(server, "--input", inputs, "--out", tmp_path / "out",
                                          "--api_key_env", "STORY_KEY", env={"STORY_KEY": KEY})
    assert_one_error_line(returncode, stderr, f"error: {server.base_url}/chat/completions refused the API key "
                                              '(HTTP 401): {"error": "Incorrect API key provided: ***"}')
    assert_key_absent(stdout, stderr)


# --- clear errors: disks ----------------------------------------------------------------------------

def test_a_read_only_output_folder_is_one_error_line(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(2))
    # /sys refuses every mkdir, root or not: a real read-only place.
    returncode, _, stderr = generate(server, "--input", inputs, "--out", "/sys/regional-tinystories-test/out")
    assert_one_error_line(returncode, stderr, "error: cannot use --out /sys/regional-tinystories-test/out: "
                                              "/sys/regional-tinystories-test: Operation not permitted")
    proc = subprocess.run([sys.executable, GENERATE_PROMPTS, "--language", "hindi", "--num_prompts", "3",
                           "--out", "/sys/regional-tinystories-test"], capture_output=True, text=True, timeout=60)
    folder = "/sys/regional-tinystories-test"
    assert_one_error_line(proc.returncode, proc.stderr, f"error: cannot write the prompts to {folder}: {folder}: "
                                                        "Operation not permitted (0 of 1 shards written")


def test_a_full_disk_mid_run_stops_in_one_line_and_the_rerun_completes(tmp_path, server, monkeypatch):
    """The kernel's own ENOSPC: from the 4th result on, appends to the output go to /dev/full."""
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(10))
    out_path = str(tmp_path / "out" / "p.jsonl")
    appends = []

    def full_after_three(path, mode="r", *args, **kwargs):
        if path == out_path and mode == "ab":
            appends.append(path)
            if len(appends) > 3:
                path = "/dev/full"
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_after_three, raising=False)
    argv = ["generate", "--input", inputs, "--out", str(tmp_path / "out"), "--base_url", server.base_url,
            "--model", "fake", *FAST, "--max_in_flight", "1"]
    result = run_main(make_requests.main, argv)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"error: cannot write {out_path}: No space left on device (results "
                                              "so far are saved; fix this and run the same command to resume)")
    assert [r["ID"] for r in read_jsonl(out_path)] == ["P0", "P1", "P2"]
    monkeypatch.undo()  # space freed
    assert run_main(make_requests.main, argv).returncode == 0
    assert sorted(r["ID"] for r in read_jsonl(out_path)) == sorted(f"P{i}" for i in range(10))


def test_a_full_disk_for_the_debug_log_stops_in_one_line(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(3))
    returncode, _, stderr = generate(server, "--input", inputs, "--out", tmp_path / "out", "--debug_log", "/dev/full")
    assert_one_error_line(returncode, stderr, "error: cannot write /dev/full: No space left on device (results so "
                                              "far are saved")


def test_generate_prompts_on_a_full_disk_leaves_whole_shards_only(tmp_path):
    """The second shard's temp file is a link to /dev/full: the kernel's own ENOSPC, in generate_prompts' process."""
    out = tmp_path / "prompts"
    os.makedirs(out)
    os.symlink("/dev/full", out / f"hindi-1-001.jsonl.tmp.{os.getpid()}")
    argv = ["--language", "hindi", "--template", "1", "--num_prompts", "6", "--shards", "3", "--out", str(out)]
    result = run_main(generate_prompts.main, argv)
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: cannot write the prompts to {out}: No space left on device (1 of 3 shards written")
    assert sorted(os.listdir(out)) == ["hindi-1-000.jsonl"]  # whole, and the failed temp file removed
    assert len(read_jsonl(out / "hindi-1-000.jsonl")) == 2
    assert run_main(generate_prompts.main, argv).returncode == 0  # space freed: the same command
    assert sorted(os.listdir(out)) == [f"hindi-1-00{i}.jsonl" for i in range(3)]


# --- clear errors: inputs, found before anything is sent ------------------------------------------

@pytest.mark.parametrize("records, message", [
    (prompt_records(6) + [prompt_records(3)[2]], "p.jsonl:7: duplicate ID 'P2' (an earlier record of this input"),
    (prompt_records(4) + [{"ID": "X", "language": "../../x", "prompt": "p"}], "p.jsonl:5: unknown language '../../x'"),
    (prompt_records(2) + [{"ID": "X", "language": ["hindi"], "prompt": "p"}], "p.jsonl:3: unknown language ['hindi']"),
    (prompt_records(2) + [{"ID": None, "language": "hindi", "prompt": "p"}], "p.jsonl:3: 'ID' is None, not a string"),
    (prompt_records(2) + [{"ID": "X", "language": "hindi", "prompt": {"a": 1}}], "p.jsonl:3: 'prompt' is not text"),
])
def test_a_bad_record_anywhere_stops_the_run_before_anything_is_sent(tmp_path, server, records, message):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", records)
    result = run_main(make_requests.main, ["generate", "--input", inputs, "--out", str(tmp_path / "out"),
                                           "--base_url", server.base_url, "--model", "fake", *FAST])
    assert_one_error_line(result.returncode, result.stderr, f"error: {inputs[:-len('p.jsonl')]}{message}")
    assert result.stderr.rstrip().endswith("(nothing was sent)")
    assert server.prompts == []
    assert not os.path.exists(tmp_path / "out" / "p.jsonl")


def test_a_language_key_never_reaches_outside_the_language_folders(tmp_path):
    outside = tmp_path / "x"
    os.makedirs(outside)
    (outside / "language.json").write_text("{}", encoding="utf-8")
    relative = os.path.relpath(outside, os.path.join(ROOT, "prompting", "prompt_gen"))
    result = run_main(generate_prompts.main, ["--language", relative, "--num_prompts", "1",
                                              "--out", str(tmp_path / "out")])
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown language '../")
    assert "... (a language is a folder of prompting/prompt_gen/, named in lowercase letters, digits and _; " \
           "known: bangla, english, hindi, marathi" in result.stderr


def test_check_inputs_returns_problems_as_data(tmp_path):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(3) + [prompt_records(2)[1]])
    write_jsonl(tmp_path / "out" / "p.jsonl", [{"ID": "P0"}, {"ID": "Q7"}, {"ID": "Q8"}])
    args = make_requests.parse_args(["generate", "--input", inputs, "--out", str(tmp_path / "out")])
    shards = make_requests.plan_shards(args, make_requests.input_sources(args))
    mode = make_requests.GenerateStories(args, backend=None)
    assert make_requests.check_inputs(shards, mode) == (2, [
        Problem(f"{inputs}:4", "duplicate ID 'P1' (an earlier record of this input has it)", fatal=True)])
    write_jsonl(inputs, prompt_records(3))
    assert make_requests.check_inputs(shards, mode) == (2, [
        Problem(str(tmp_path / "out" / "p.jsonl"),
                "2 finished or failed records have IDs that are not in the input (e.g. 'Q7')", fatal=False)])


# --- unreachable endpoints --------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid"])
def test_an_unreachable_endpoint_stops_the_run_in_one_line(tmp_path, host):
    with FakeLLMServer() as server:
        port = server.base_url.split(":")[-1].split("/")[0]  # free again once the server stops
    base_url = f"http://{host.format(port=port)}/v1"
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(100))
    returncode, _, stderr = cli("generate", "--input", inputs, "--out", tmp_path / "out", "--base_url", base_url,
                                *FAST)
    assert_one_error_line(returncode, stderr, f"error: cannot connect to {base_url}/chat/completions: "
                                              "ClientConnector")
    assert "(5 requests in a row could not connect; is the server up and the URL right?)" in stderr
    # Stopped, not ground through: no record was given up on, so none is stuck in a failed file.
    assert not os.path.exists(tmp_path / "out" / "p.failed.jsonl")
    assert not os.path.exists(tmp_path / "out" / "p.jsonl")


def test_max_connection_failures_zero_never_stops(tmp_path):
    with FakeLLMServer() as server:
        base_url = server.base_url
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(6))
    returncode, stdout, stderr = cli("generate", "--input", inputs, "--out", tmp_path / "out", "--base_url", base_url,
                                     *FAST, "--retries", 1, "--max_connection_failures", 0)
    assert returncode == 0, stderr
    assert len(read_jsonl(tmp_path / "out" / "p.failed.jsonl")) == 6 and "0 ok, 6 failed" in stdout


# --- resuming holds IDs, not records -----------------------------------------------------------------

def test_the_resume_index_holds_ids_not_records(tmp_path):
    story = "क" * 3000
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(1000))
    write_jsonl(tmp_path / "out" / "p.jsonl", [{"ID": f"P{i}", "story": story} for i in range(1000)])  # 9 MB
    args = make_requests.parse_args(["generate", "--input", inputs, "--out", str(tmp_path / "out")])
    tracemalloc.start()
    try:
        [shard] = make_requests.plan_shards(args, make_requests.input_sources(args))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shard.skip == {f"P{i}" for i in range(1000)}
    assert peak < 2_000_000  # one line at a time and 1000 short IDs; the records would be 6 MB of text


# --- portability and the command line ----------------------------------------------------------------

def test_make_requests_imports_without_fcntl_as_on_windows():
    code = ("import sys, importlib.util; sys.modules['fcntl'] = None; "
            f"spec = importlib.util.spec_from_file_location('make_requests', {MAKE_REQUESTS!r}); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); print('imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "imported\n", proc.stderr


def test_old_hyphenated_options_still_work_with_a_deprecation_note(tmp_path, server):
    inputs = write_jsonl(tmp_path / "in" / "p.jsonl", prompt_records(2))
    returncode, stdout, stderr = cli("generate", "--input", inputs, "--out", tmp_path / "out", "--base-url",
                                     server.base_url, "--model", "fake", "--max-in-flight=2", "--retry-failed")
    assert returncode == 0, stderr
    assert "2 ok, 0 failed" in stdout
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {old} is deprecated, use {new} (the old spelling will be removed in a later release)"
                     for old, new in (("--base-url", "--base_url"), ("--max-in-flight", "--max_in_flight"),
                                      ("--retry-failed", "--retry_failed"))]
