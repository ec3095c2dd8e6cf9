"""Tests for training-inference/serve.py: a real HTTP client (http.client) against the server on a free 127.0.0.1
port, serving a tiny model trained for a moment on a few stories, so that its greedy text is real multi-byte text."""
import asyncio
import contextlib
import http.client
import json
import os
import subprocess
import sys
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import torch
from helpers import ROOT, STORIES, load_script, run

from regional_tinystories import checkpoint
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.llm import OpenAICompatibleBackend
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.sampling import SamplingConfig, generate_stories

serve = load_script("training-inference/serve.py")

SERVE = os.path.join(ROOT, "training-inference", "serve.py")
MODEL_NAME = "tiny-stories"
BLOCK_SIZE = 64
MAX_TOKENS_LIMIT = 48
MAX_N = 3
MAX_BODY_BYTES = 4096
PROMPT = "एक दिन छोटी"


def train_briefly(model, tokenizer, steps=80):
    """A moment of training on the stories, so that greedy decoding writes story text and can end with <eos>."""
    ids = []
    for story in STORIES:
        ids += [tokenizer.bos_id] + tokenizer.encode(story) + [tokenizer.eos_id]
    data = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other, badly so on a busy machine
    for _ in range(steps):
        starts = torch.randint(0, len(data) - BLOCK_SIZE - 1, (16,), generator=generator).tolist()
        x = torch.stack([data[s:s + BLOCK_SIZE] for s in starts])
        y = torch.stack([data[s + 1:s + BLOCK_SIZE + 1] for s in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    tok = tk.train_tokenizer(tk.parse_name("sp-bpe:512"), STORIES * 4, str(folder / "tokenizer"))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=BLOCK_SIZE, n_layer=1, n_head=2, n_embd=32))
    train_briefly(model, tok)
    path = str(folder / "ckpt_best.pt")
    checkpoint.save_atomic({"model_args": model.model_args(), "model": model.state_dict(),
                            "tokenizer": tk.export(tok)}, path)
    return path


@contextlib.contextmanager
def running_server(slots, **settings):
    """serve.py's server on its own event loop thread, on a free loopback port."""
    settings = {"max_tokens_limit": MAX_TOKENS_LIMIT, "max_n": MAX_N, "max_body_bytes": MAX_BODY_BYTES, **settings}
    story_server = serve.StoryServer(slots, **settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started = serve.start_server(story_server.make_app(), "127.0.0.1", 0)
    runner, url = asyncio.run_coroutine_threadsafe(started, loop).result(timeout=10)
    try:
        yield SimpleNamespace(url=url, port=urlsplit(url).port, model=slots[0].model, tokenizer=slots[0].tokenizer,
                              slot=slots[0], story_server=story_server)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def served_model(checkpoint_path):
    model, tokenizer, _ = load_model(checkpoint_path)
    return model, tokenizer


@pytest.fixture(scope="module")
def server(served_model):
    model, tokenizer = served_model
    with running_server([serve.ModelSlot(MODEL_NAME, model, tokenizer, "cpu", "hindi")]) as running:
        yield running


def call(server, method, path, body=None, raw=None):
    """One HTTP request; returns (status, headers, body bytes). body is sent as JSON, raw as it is."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = raw if raw is not None else None if body is None else json.dumps(body, ensure_ascii=False).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, response.headers, payload


def post(server, path, body):
    status, _, payload = call(server, "POST", path, body)
    assert status == 200, payload
    return json.loads(payload)


def post_stream(server, path, body):
    """The parsed chunks of a streamed reply; checks the SSE framing and the closing [DONE]."""
    status, headers, payload = call(server, "POST", path, {**body, "stream": True})
    assert status == 200, payload
    assert headers["Content-Type"].startswith("text/event-stream")
    events = payload.decode("utf-8").split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: ") for event in events[:-2])
    return [json.loads(event[len("data: "):]) for event in events[:-2]]


def streamed_choices(chunks, chat):
    """{index: (concatenated text, finish_reason)} from stream chunks."""
    texts, finish_reasons = {}, {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            piece = choice["delta"].get("content", "") if chat else choice["text"]
            texts[choice["index"]] = texts.get(choice["index"], "") + piece
            if choice["finish_reason"] is not None:
                assert choice["index"] not in finish_reasons, "a choice finished twice"
                finish_reasons[choice["index"]] = choice["finish_reason"]
    return {i: (texts[i], finish_reasons[i]) for i in texts}


def greedy_continuation(server, prompt, max_tokens):
    """(text, finish_reason, completion tokens) of model.generate's greedy continuation of [bos] + prompt."""
    tok = server.tokenizer
    ids = [tok.bos_id] + tok.encode(prompt)
    new = server.model.generate(torch.tensor([ids]), SamplingConfig(max_new_tokens=max_tokens, temperature=0), eos_id=tok.eos_id)[0, len(ids):]
    new = new.tolist()
    finish_reason = "stop" if tok.eos_id in new else "length"
    new = new[:new.index(tok.eos_id)] if tok.eos_id in new else new
    story = tok.decode(ids[1:] + new)
    assert story.startswith(prompt)
    return story[len(prompt):], finish_reason, len(new)


# ----------------------------------------------------------------------------- answers

def test_models_lists_the_served_model(server):
    status, _, payload = call(server, "GET", "/v1/models")
    assert status == 200
    body = json.loads(payload)
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [(MODEL_NAME, "model")]


def test_completion_is_the_greedy_continuation(server):
    text, finish_reason, n_new = greedy_continuation(server, PROMPT, 40)
    assert text.strip(), "the trained model should write something"
    body = post(server, "/v1/completions", {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 40,
                                            "temperature": 0})
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == MODEL_NAME and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    prompt_tokens = 1 + len(server.tokenizer.encode(PROMPT))  # bos + prompt
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": n_new,
                             "total_tokens": prompt_tokens + n_new}
    # a list of one string is the same prompt
    assert post(server, "/v1/completions", {"prompt": [PROMPT], "max_tokens": 40, "temperature": 0})["choices"] == \
        body["choices"]


def test_max_tokens_cuts_with_finish_reason_length(server):
    body = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "temperature": 0})
    text, finish_reason, n_new = greedy_continuation(server, PROMPT, 3)
    assert (finish_reason, n_new) == ("length", 3)
    assert (body["choices"][0]["text"], body["choices"][0]["finish_reason"]) == (text, "length")
    assert body["usage"]["completion_tokens"] == 3


def test_chat_continues_the_last_user_message(server):
    text, finish_reason, n_new = greedy_continuation(server, PROMPT, 40)
    messages = [{"role": "system", "content": "You tell stories."},
                {"role": "user", "content": "Tom had a red ball."},
                {"role": "assistant", "content": "He played with it."},
                {"role": "user", "content": PROMPT}]
    body = post(server, "/v1/chat/completions", {"model": MODEL_NAME, "messages": messages, "max_tokens": 40,
                                                 "temperature": 0})
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": finish_reason}]
    assert body["usage"]["completion_tokens"] == n_new
    # newer OpenAI clients send max_completion_tokens instead of max_tokens
    capped = post(server, "/v1/chat/completions", {"messages": messages, "max_completion_tokens": 2,
                                                   "temperature": 0})
    assert capped["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_stream_concatenates_to_the_non_streaming_text(server, chat):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    request = ({"messages": [{"role": "user", "content": PROMPT}]} if chat else {"prompt": PROMPT})
    # greedy, and seeded sampling with several choices (random byte tokens: characters split across chunks)
    for settings in ({"temperature": 0, "max_tokens": 40}, {"temperature": 1.0, "seed": 3, "n": 3, "max_tokens": 30}):
        whole = post(server, path, {**request, **settings})
        chunks = post_stream(server, path, {**request, **settings})
        assert {c["object"] for c in chunks} == {"chat.completion.chunk" if chat else "text_completion"}
        assert len({c["id"] for c in chunks}) == 1 and all(c["model"] == MODEL_NAME for c in chunks)
        expected = {c["index"]: (c["message"]["content"] if chat else c["text"], c["finish_reason"])
                    for c in whole["choices"]}
        assert streamed_choices(chunks, chat) == expected
        text_chunks = [c for c in chunks if (c["choices"][0]["delta"].get("content") if chat
                                             else c["choices"][0]["text"])]
        assert len(text_chunks) > settings.get("n", 1), "text should arrive in several chunks, not all at the end"
        if chat:
            openings = [c["choices"][0] for c in chunks[:settings.get("n", 1)]]
            assert all(o["delta"] == {"role": "assistant", "content": ""} for o in openings)


def test_seeded_sampling_matches_sample_py(server):
    settings = dict(temperature=0.9, top_p=0.95, top_k=50, repetition_penalty=1.1)
    body = post(server, "/v1/completions", {"prompt": PROMPT, "n": 2, "max_tokens": 25, "seed": 11, **settings})
    again = post(server, "/v1/completions", {"prompt": PROMPT, "n": 2, "max_tokens": 25, "seed": 11, **settings})
    assert again["choices"] == body["choices"]
    records = list(generate_stories(server.model, server.tokenizer, [PROMPT],
                                    SamplingConfig(max_new_tokens=25, seed=11, **settings), num_samples=2))
    for choice, record in zip(body["choices"], records):
        assert PROMPT + choice["text"] == record["story"]
        assert choice["finish_reason"] == {"eos": "stop", "length": "length"}[record["finish_reason"]]
    assert body["usage"]["completion_tokens"] == sum(r["n_tokens"] for r in records)


def test_too_long_prompt_keeps_its_end(server):
    long_prompt = " ".join(STORIES)
    assert len(server.tokenizer.encode(long_prompt)) > BLOCK_SIZE
    body = post(server, "/v1/completions", {"prompt": long_prompt, "max_tokens": 10, "temperature": 0})
    assert body["usage"]["prompt_tokens"] == BLOCK_SIZE - 1
    record = next(generate_stories(server.model, server.tokenizer, [long_prompt],
                                  SamplingConfig(max_new_tokens=10, temperature=0)))
    assert record["story"].endswith(body["choices"][0]["text"])
    assert body["usage"]["completion_tokens"] == record["n_tokens"]


def test_stop_strings_cut_the_text(server):
    text, _, _ = greedy_continuation(server, PROMPT, 40)
    stop = next(text[i:i + 2] for i in range(3, len(text) - 1) if "\ufffd" not in text[i:i + 2])
    expected = text[:text.find(stop)]
    request = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "stop": ["never-in-the-text", stop]}
    choice = post(server, "/v1/completions", request)["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (expected, "stop")
    assert streamed_choices(post_stream(server, "/v1/completions", request), chat=False) == {0: (expected, "stop")}
    single = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}],
                                                   "max_tokens": 40, "temperature": 0, "stop": stop})
    assert single["choices"][0]["message"]["content"] == expected


def test_a_character_split_over_byte_tokens_is_streamed_whole(server):
    tok = server.tokenizer
    piece_ids = {tok.id_to_piece(i): i for i in range(tok.vocab_size)}
    byte_ids = [piece_ids[f"<0x{byte:02X}>"] for byte in "ॐ".encode()]  # three byte-fallback tokens
    request = serve.StoryRequest(prompt=PROMPT, sampling=SamplingConfig(max_new_tokens=10, temperature=0), n=1,
                                 seed=None, stop=[], stream=True)
    generation = serve.Generation(server.slot, request, time_limit=60)
    sent, shown = [], 0
    for token in byte_ids + [tok.eos_id]:  # as if the model had drawn them
        generation.accept([token])
        choice = generation.choices[0]
        ready = choice.text if choice.finish_reason else serve.stable_prefix(choice.text, request.stop)
        sent.append(ready[shown:])
        shown = len(ready)
    assert sent == ["", "", "ॐ", ""]
    assert generation.choices[0].finish_reason == "stop"


def test_stable_prefix_holds_back_incomplete_characters_and_stop_beginnings():
    assert serve.stable_prefix("एक दि\ufffd", []) == "एक दि"
    assert serve.stable_prefix("एक दि\ufffd\ufffd", ["END"]) == "एक दि"
    assert serve.stable_prefix("once upon EN", ["END"]) == "once upon "
    assert serve.stable_prefix("once upon E", ["END", "x"]) == "once upon "
    assert serve.stable_prefix("once upon", ["END"]) == "once upon"


# ----------------------------------------------------------------------------- refusals

def chat_body(messages):
    return {"messages": messages, "max_tokens": 5}


BAD_REQUESTS = [
    # (endpoint, body, param the error names)
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": MAX_TOKENS_LIMIT + 1}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": -1}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": "10"}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 2.5}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": True}, "max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": 2.5}, "temperature"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": -0.1}, "temperature"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": PROMPT, "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": PROMPT, "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": PROMPT, "n": 0}, "n"),
    ("/v1/completions", {"prompt": PROMPT, "n": MAX_N + 1}, "n"),
    ("/v1/completions", {"prompt": PROMPT, "seed": "abc"}, "seed"),
    ("/v1/completions", {"prompt": PROMPT, "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/completions", {"prompt": PROMPT, "stop": ""}, "stop"),
    ("/v1/completions", {"prompt": PROMPT, "echo": True}, "echo"),
    ("/v1/completions", {"prompt": PROMPT, "logprobs": 5}, "logprobs"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": "   "}, "prompt"),
    ("/v1/completions", {"max_tokens": 5}, "prompt"),
    ("/v1/completions", {"prompt": [PROMPT, PROMPT]}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt"),
    ("/v1/chat/completions", chat_body([]), "messages"),
    ("/v1/chat/completions", {"max_tokens": 5}, "messages"),
    ("/v1/chat/completions", chat_body("hello"), "messages"),
    ("/v1/chat/completions", chat_body([{"role": "narrator", "content": PROMPT}]), "messages[0].role"),
    ("/v1/chat/completions", chat_body([{"role": "user", "content": PROMPT}, {"role": "user"}]),
     "messages[1].content"),
    ("/v1/chat/completions", chat_body([{"role": "user", "content": 5}]), "messages[0].content"),
    ("/v1/chat/completions", chat_body([{"role": "system", "content": "Tell a story."}]), "messages"),
    ("/v1/chat/completions", chat_body([{"role": "user", "content": PROMPT}, {"role": "user", "content": ""}]),
     "messages"),
    ("/v1/chat/completions", {**chat_body([{"role": "user", "content": PROMPT}]), "temperature": 3}, "temperature"),
]


@pytest.mark.parametrize("path, body, param", BAD_REQUESTS, ids=[f"{p[4:]}:{k}" for p, _, k in BAD_REQUESTS])
def test_bad_fields_get_a_400_naming_the_field(server, path, body, param):
    status, headers, payload = call(server, "POST", path, body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(payload)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"] and "\n" not in error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", "\"just a string\"".encode(), b"\xff\xfe{}"])
def test_a_body_that_is_not_a_json_object_gets_a_400(server, raw):
    status, _, payload = call(server, "POST", "/v1/completions", raw=raw)
    assert status == 400
    assert "JSON" in json.loads(payload)["error"]["message"]


def test_unknown_model_gets_a_404_naming_the_served_one(server):
    status, _, payload = call(server, "POST", "/v1/chat/completions",
                              {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]})
    error = json.loads(payload)["error"]
    assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL_NAME in error["message"]


def test_oversized_body_gets_a_413(server):
    status, _, payload = call(server, "POST", "/v1/completions", {"prompt": "x" * MAX_BODY_BYTES})
    assert status == 413
    assert str(MAX_BODY_BYTES) in json.loads(payload)["error"]["message"]


def test_unknown_paths_and_wrong_methods(server):
    status, _, payload = call(server, "GET", "/v1/engines")
    assert status == 404 and "/v1/completions" in json.loads(payload)["error"]["message"]
    status, headers, payload = call(server, "GET", "/v1/completions")
    assert status == 405 and headers["Allow"] == "POST"
    assert json.loads(payload)["error"]["type"] == "invalid_request_error"
    status, _, _ = call(server, "POST", "/v1/models", {})
    assert status == 405


def test_other_requests_are_answered_while_a_stream_is_open(server):
    """The event loop stays free while a stream is half read, and the generations sharing the worker thread do not
    disturb each other: the stream still gives what the same seeded request gives alone."""
    request = {"prompt": PROMPT, "max_tokens": MAX_TOKENS_LIMIT, "temperature": 1.0, "seed": 1}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1/completions", body=json.dumps({**request, "stream": True}))
    response = connection.getresponse()
    first_event = response.readline()
    assert first_event.startswith(b"data: ")
    assert call(server, "GET", "/v1/models")[0] == 200
    assert call(server, "POST", "/v1/completions", {"prompt": PROMPT, "n": 0})[0] == 400
    assert post(server, "/v1/completions", {"prompt": "Tom had", "max_tokens": 20, "temperature": 1.0})["choices"]
    events = (first_event + response.read()).decode("utf-8").split("\n\n")
    connection.close()
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event[len("data: "):]) for event in events[:-2]]
    alone = post(server, "/v1/completions", request)["choices"][0]
    assert streamed_choices(chunks, chat=False) == {0: (alone["text"], alone["finish_reason"])}


def test_the_projects_own_openai_backend_gets_the_story(server):
    """prompting/make_requests.py's backend, pointed at the server, receives the chat reply."""
    async def ask():
        backend = OpenAICompatibleBackend(server.url, MODEL_NAME, temperature=0, max_tokens=MAX_TOKENS_LIMIT)
        try:
            return await backend.complete(PROMPT)
        finally:
            await backend.close()
    text, finish_reason, _ = greedy_continuation(server, PROMPT, MAX_TOKENS_LIMIT)
    assert finish_reason == "stop", "the trained model should end its story with <eos> (the backend refuses 'length')"
    assert asyncio.run(ask()) == text


# ----------------------------------------------------------------------------- command line

def test_missing_checkpoint_is_a_one_line_error():
    proc = run(SERVE, "--init_from=/nonexistent", check=False, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["error: checkpoint /nonexistent: not found"]


@pytest.mark.parametrize("argv, message", [
    (["--max_n=0"], "error: max_n must be at least 1, got 0"),
    (["--port=70000"], "error: port must be between 0 and 65535, got 70000"),
    (["--max_token_limit=5"], "error: command line: unknown config key 'max_token_limit' (did you mean max_tokens"),
])
def test_bad_settings_are_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--init_from=/nonexistent", *argv])
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)


def test_a_non_loopback_host_gets_a_warning(checkpoint_path, capsys):
    # 192.0.2.1 is a documentation address (TEST-NET-1) that no machine has: the bind fails, nothing is exposed
    with pytest.raises(SystemExit) as exit_info:
        serve.main([f"--init_from={checkpoint_path}", "--host=192.0.2.1", "--port=0", "--dtype=float32"])
    assert "warning: listening on 192.0.2.1" in capsys.readouterr().err
    assert str(exit_info.value.code).startswith("error: cannot listen on 192.0.2.1:0")


def test_command_line_serves_on_a_free_loopback_port(checkpoint_path):
    proc = subprocess.Popen([sys.executable, SERVE, f"--init_from={checkpoint_path}", "--port=0", "--dtype=float32",
                             f"--model_name={MODEL_NAME}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        lines = [""]
        while "serving" not in lines[-1]:
            lines.append(proc.stderr.readline())
            assert lines[-1] and time.monotonic() < deadline, "serve.py exited or did not start"
        assert not any("warning" in earlier for earlier in lines), "the default host is loopback: no warning"
        url = lines[-1].split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        status, _, payload = call(SimpleNamespace(port=urlsplit(url).port), "GET", "/v1/models")
        assert status == 200 and json.loads(payload)["data"][0]["id"] == MODEL_NAME
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


# ----------------------------------------------------------------------------- under load

def health(server):
    status, _, payload = call(server, "GET", "/health")
    assert status == 200
    return json.loads(payload)


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def endless_slot(checkpoint_path):
    """A served model that never ends a story (its eos logit is -inf), so a request runs for as long as asked."""
    model, tokenizer, _ = load_model(checkpoint_path)

    def no_eos(module, inputs, logits):
        logits[..., tokenizer.eos_id] = float("-inf")
        return logits
    model.lm_head.register_forward_hook(no_eos)
    return serve.ModelSlot(MODEL_NAME, model, tokenizer, "cpu")


def test_concurrent_requests_are_batched_and_each_gets_its_own_story(server):
    """Requests of different prompt lengths and settings decoded together give what each gets alone (sample.py)."""
    prompts = [PROMPT, "एक दिन", STORIES[1][:30], STORIES[5][:20], STORIES[6]]
    bodies = [{"prompt": p, "max_tokens": 30, "temperature": 0} if i % 2 == 0 else
              {"prompt": p, "max_tokens": 25, "temperature": 0.9, "top_p": 0.9, "seed": i, "n": 2}
              for i, p in enumerate(prompts)]
    results = [None] * len(bodies)

    def worker(i):
        results[i] = post(server, "/v1/completions", bodies[i])
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for body, result in zip(bodies, results):
        sampling = SamplingConfig(max_new_tokens=body["max_tokens"], temperature=body["temperature"],
                                  top_p=body.get("top_p", 1.0), seed=body.get("seed", 0))
        records = list(generate_stories(server.model, server.tokenizer, [body["prompt"]], sampling,
                                        num_samples=body.get("n", 1)))
        assert [body["prompt"] + c["text"] for c in result["choices"]] == [r["story"] for r in records]


def test_batch_rows_padded_to_a_common_length_compute_what_they_would_alone(server):
    slot = server.slot
    requests = [serve.StoryRequest(prompt=p, sampling=SamplingConfig(max_new_tokens=12, temperature=0), n=n, seed=1,
                                   stop=[], stream=False) for p, n in ((PROMPT, 1), (STORIES[0], 2), ("Tom", 1))]
    together = [serve.Generation(slot, r, 60) for r in requests]
    batch = serve.DecodeBatch(server.model)
    with torch.no_grad():
        for g in together:
            batch.add(g)
        assert batch.rows == 4 and not bool(batch.valid.all())  # padding is really there
        while batch.members:
            batch.step()
            batch.remove_done()
    for r, g in zip(requests, together):
        record = next(generate_stories(server.model, server.tokenizer, [r.prompt], r.sampling, num_samples=r.n))
        assert r.prompt + g.choices[0].text == record["story"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_ends_its_generation(endless_slot, stream):
    with running_server([endless_slot], max_tokens_limit=100_000) as server:
        # a prompt longer than the window takes the slow sliding-cache path: 100k tokens would run for minutes
        body = {"prompt": " ".join(STORIES), "max_tokens": 100_000, "temperature": 1.0, "stream": stream}
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
        wait_until(lambda: health(server)["in_flight"] == 1)
        if stream:
            connection.getresponse().read(50)  # it is streaming
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        wait_until(lambda: health(server)["in_flight"] == 0)
        assert health(server)["cancelled"] == 1, health(server)
        assert post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 5})["choices"][0]["text"] is not None


def test_over_max_queued_is_a_503_with_retry_after(endless_slot):
    with running_server([endless_slot], max_tokens_limit=100_000, max_queued=1) as server:
        body = {"prompt": " ".join(STORIES), "max_tokens": 100_000, "stream": True}
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
        wait_until(lambda: health(server)["in_flight"] == 1)
        status, headers, payload = call(server, "POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 5})
        assert status == 503 and headers["Retry-After"] == "1"
        assert json.loads(payload)["error"]["message"] == "the server is busy (1 requests in flight); retry shortly"
        connection.close()


def test_the_time_limit_ends_a_request_with_finish_reason_length(endless_slot):
    with running_server([endless_slot], max_tokens_limit=100_000, request_timeout=0.5) as server:
        body = post(server, "/v1/completions", {"prompt": " ".join(STORIES), "max_tokens": 100_000})
        assert body["choices"][0]["finish_reason"] == "length"
        assert 0 < body["usage"]["completion_tokens"] < 100_000
        assert health(server)["timed_out"] == 1


@pytest.mark.parametrize("raw", [b"[" * 4000, b'{"prompt": ' + b"[" * 1900 + b"]" * 1900 + b"}"])
def test_deeply_nested_json_gets_a_400(server, raw):
    status, _, payload = call(server, "POST", "/v1/completions", raw=raw)
    assert status == 400
    assert "error" in json.loads(payload)


def test_usage_chunk_when_asked(server):
    chunks = post_stream(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                                      "stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and all(c["choices"] for c in chunks[:-1])
    _, _, count = greedy_continuation(server, PROMPT, 8)
    assert chunks[-1]["usage"]["completion_tokens"] == count


def test_two_models_side_by_side(served_model, checkpoint_path):
    model, tokenizer = served_model
    other, other_tokenizer, _ = load_model(checkpoint_path)
    with torch.no_grad():
        other.lm_head.weight.mul_(-1)  # a different model with the same tokenizer
    slots = [serve.ModelSlot("a", model, tokenizer, "cpu", "hindi"),
             serve.ModelSlot("b", other, other_tokenizer, "cpu", "hindi")]
    with running_server(slots) as server:
        status, _, payload = call(server, "GET", "/v1/models")
        assert [m["id"] for m in json.loads(payload)["data"]] == ["a", "b"]
        texts = [post(server, "/v1/completions", {"model": name, "prompt": PROMPT, "max_tokens": 10,
                                                  "temperature": 0})["choices"][0]["text"] for name in ("a", "b")]
        assert texts[0] != texts[1]
        status, _, page = call(server, "GET", "/")
        assert status == 200 and b'"name": "a"' in page and b'"name": "b"' in page and b'"lang": "hi"' in page
        first_opening = serve.openings("hindi")[0]
        assert first_opening and json.dumps(first_opening, ensure_ascii=False).encode() in page
