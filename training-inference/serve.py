"""
Serve a trained checkpoint over HTTP with the OpenAI-compatible completions API, so any OpenAI client (the
openai package, curl, prompting/make_requests.py) can ask a local model for stories.

    python training-inference/serve.py --init_from=out/demo-hindi --port=8000
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
        -d '{"model": "out/demo-hindi", "prompt": "एक दिन", "max_tokens": 200, "temperature": 0.8}'

Endpoints:
    GET  /v1/models             the one model served; its id is --model_name (default: the --init_from value)
    POST /v1/completions        continue "prompt" (a string, or a list of one string)
    POST /v1/chat/completions   continue the content of the LAST user message in "messages": the model tells
                                stories and follows no instructions, so system and assistant messages and the
                                earlier turns are validated but not read. The reply is the continuation only.
Both take max_tokens (chat also max_completion_tokens), temperature, top_p, n, seed, stop (a string or a list
of up to 4: the text is cut before the first one) and stream (Server-Sent Events ending in "data: [DONE]"),
plus top_k, repetition_penalty and no_repeat_ngram_size as in sample.py (vLLM's names). A model trained on a
--format=instruct dataset also takes a spec, as sample.py does: the fields words, ending, features, sentence and
summary (words and features as a list or comma-separated text; the prompt is then the story's opening and may be
empty), or in chat a user message written as the block itself ("Words: dog, run\nEnding: a happy ending"). A
model trained on plain stories refuses a spec with 400. Other unknown fields are ignored, but fields
this server cannot honour (echo, logprobs, suffix, presence/frequency penalties, ...) are refused unless left
at their neutral value. A bad request gets a 4xx with an OpenAI-style body
{"error": {"message", "type", "param", "code"}}.

Generation is exactly sample.py's: the prompt is encoded as [bos] + prompt (keeping its last block_size - 1
tokens when it is longer), a reply longer than the window goes on with the model's sliding KV cache, and the
same seed gives the same story. usage.prompt_tokens counts the tokens the model read, bos included;
completion_tokens counts the generated tokens before eos, over all n choices.
There is no authentication: the server listens on 127.0.0.1 unless --host names another address.
"""
import asyncio
import ipaddress
import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from aiohttp import web

from regional_tinystories import PROJECT_ROOT, checkpoint, instruct, metrics, quantize, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.config import ConfigError, load_config
from regional_tinystories.errors import InputError
from regional_tinystories.model import KVCache
from regional_tinystories.sampling import SamplingConfig, encode_prompt, sample_next

DEFAULTS = dict(
    init_from="out/run",        # run folder (its ckpt_best.pt), a .pt file, hf:OWNER/REPO/FILE.pt, gpt2, a transformers
                                # folder; A,B serves both
    tokenizer="",               # for checkpoints that carry no tokenizer (nanoGPT's): e.g. tiktoken:gpt2, sarvam
    model_name="",              # the id(s) clients pass as "model" (comma-separated); empty: the init_from value(s)
    host="127.0.0.1",           # loopback only; any other address lets the network use the model, without a key
    port=8000,                  # 0 picks a free port (printed at start)
    device="auto",
    dtype="auto",               # 'auto': bfloat16 on GPUs that have it (weights cast once), else float32
    quantize="none",            # 'int8': int8 weights (weight-only, one scale per row), CPU only
    max_tokens_limit=1024,      # the most tokens one choice may ask for; also what a request without max_tokens gets
    max_n=4,                    # the most choices (n) per request
    max_body_bytes=1_000_000,   # larger request bodies are refused with 413
    max_queued=64,              # requests in flight (generating or waiting) at most; more get 503 + Retry-After
    max_batch=16,               # rows (sum of n) decoded together in one forward pass, per model
    request_timeout=300.0,      # seconds a request may generate; then its choices end with finish_reason "length"
)
CHOICES = dict(dtype=("auto", "float32", "bfloat16", "float16"), quantize=quantize.QUANTIZE_CHOICES)

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4  # as in the OpenAI API
# Fields an OpenAI client may send that this server cannot honour. They are accepted only at their neutral value,
# so that no request is answered as if they had been applied.
UNSUPPORTED_FIELDS = {"echo": (False,), "suffix": ("",), "logprobs": (False, 0), "best_of": (1,),
                      "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},), "tools": ([],)}
ENDPOINTS = "GET / (playground), GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions"


# ----------------------------------------------------------------------------- reading and checking a request

class RequestError(Exception):
    """A request the server refuses; it is answered with this status and an OpenAI-style error body."""

    def __init__(self, message, param=None, status=400, code=None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass
class StoryRequest:
    """A checked request of either endpoint: what to continue and how to sample it."""
    prompt: str
    sampling: SamplingConfig  # its seed is unused: a request without one gets a fresh random seed
    n: int
    seed: int | None
    stop: list
    stream: bool
    include_usage: bool = False  # streaming: a last chunk with the usage, as stream_options.include_usage asks
    instruction: str = ""        # an instruct model's block built from the request's spec


def shown(value):
    """A request value as JSON, shortened for an error message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


async def read_json_object(request):
    raw = await request.read()  # past the app's client_max_size this raises aiohttp's 413
    try:
        body = json.loads(raw)
    except ValueError as e:  # also bytes that are not UTF-8
        raise RequestError(f"request body is not valid JSON ({e})") from None
    except RecursionError:
        raise RequestError("request body is nested too deeply to be a request") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {shown(body)}")
    return body


def number_field(body, name, kind, low, high, default, low_open=False):
    """body[name] checked to be a kind (int or float) within [low, high] ((low, high] if low_open); null or
    missing gives the default."""
    value = body.get(name)
    if value is None:
        return default
    allowed = (int, float) if kind is float else int
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise RequestError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {shown(value)}",
                           name)
    if not ((low < value if low_open else low <= value) and value <= high):  # NaN fails here too
        bounds = f"> {low} and <= {high}" if low_open else f"between {low} and {high}"
        raise RequestError(f"{name} must be {bounds}, got {shown(value)}", name)
    return kind(value)


def stop_field(body):
    value = body.get("stop")
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS} of them, "
                           f"got {shown(value)}", "stop")
    return stops


def include_usage_field(body):
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(f"stream_options must be an object like {{\"include_usage\": true}}, got {shown(options)}",
                           "stream_options")
    return options.get("include_usage", False)


def completion_prompt(body, spec):
    prompt = body.get("prompt", "" if spec else None)
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(f"prompt must be a string or a list of one string, got {shown(prompt)}", "prompt")
    if not prompt.strip() and not spec:
        raise RequestError("prompt is empty: send the opening of a story", "prompt")
    return prompt


def request_spec(body, slot):
    """The spec of a request's words/ending/features/sentence/summary fields ({} without any), refused for a
    model that was not trained to follow one."""
    fields = {key: body[key] for key in instruct.FIELDS if body.get(key) not in (None, "", [])}
    if not fields:
        return {}
    if slot.instruct is None:
        raise RequestError(f"model {slot.name!r} was trained on plain stories and cannot follow a spec "
                           f"({', '.join(fields)}); send only the story's opening", next(iter(fields)))
    try:
        return instruct.spec_of_request(fields, "request")
    except InputError as e:
        raise RequestError(str(e).removeprefix("request: "), next(iter(fields))) from None


def chat_prompt(body):
    """The content of the last user message: the story opening (see the docstring at the top)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects, got {shown(messages)}",
                           "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object with role and content, got {shown(message)}",
                               f"messages[{i}]")
        if message.get("role") not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, "
                               f"got {shown(message.get('role'))}", f"messages[{i}].role")
        if not isinstance(message.get("content"), str):
            raise RequestError(f"messages[{i}].content must be a string, got {shown(message.get('content'))}",
                               f"messages[{i}].content")
    user_contents = [message["content"] for message in messages if message["role"] == "user"]
    if not user_contents:
        raise RequestError("messages has no user message: the last one is the story opening to continue", "messages")
    if not user_contents[-1].strip():
        raise RequestError("the last user message is empty: send the opening of a story", "messages")
    return user_contents[-1]


# ----------------------------------------------------------------------------- generating, one token at a time

@dataclass
class Choice:
    """One continuation of the prompt, as it grows (on the worker thread)."""
    ids: list = field(default_factory=list)  # generated token ids, without eos
    text: str = ""                            # their text, cut before a stop string
    finish_reason: str | None = None          # 'stop' (eos or a stop string) or 'length' (max_tokens or time limit)


def first_stop(text, stops):
    """Where the first stop string starts in text, or None."""
    starts = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(starts) if starts else None


def stable_prefix(text, stops):
    """The part of an unfinished continuation that more tokens cannot change: without a trailing character whose
    bytes are still incomplete (it decodes as U+FFFD until the last byte arrives), and without an ending that the
    next tokens could complete into a stop string (text from a stop string on is never sent)."""
    text = text.rstrip("\ufffd")
    for length in range(min(len(text), max(map(len, stops), default=1) - 1), 0, -1):
        if any(stop.startswith(text[-length:]) for stop in stops):
            return text[:-length]
    return text


class Generation:
    """The n choices of one request, sampled together like sample.py's num_samples: one torch.Generator draws the
    next token of all n rows at each step, and a row that reached eos keeps eos, so a seeded request gives
    sample.py's stories. The scheduler advances it one token per step on the worker thread — in the shared
    DecodeBatch when prompt + max_tokens fits the model's window, else alone with the model's sliding KV cache.
    Handlers on the event loop read only what publish() copied out between steps."""

    def __init__(self, slot, request, time_limit):
        model, tokenizer, device = slot.model, slot.tokenizer, slot.device
        ids = encode_prompt(tokenizer, request.prompt, model.config.block_size, request.instruction)
        self.prompt_ids, self.prompt_text = ids, tokenizer.decode(ids[1:])
        self.tokenizer, self.request = tokenizer, request
        self.choices = [Choice() for _ in range(request.n)]
        self.generator = torch.Generator(device=device)
        if request.seed is None:
            self.generator.seed()  # a fresh random seed, as the OpenAI API does without one
        else:
            self.generator.manual_seed(request.seed)
        self.idx = torch.tensor([ids] * request.n, dtype=torch.long, device=device)  # every token so far
        self.eos_rows = torch.zeros(request.n, dtype=torch.bool, device=device)
        self.batched = len(ids) + request.sampling.max_new_tokens <= model.config.block_size
        self.solo_tokens = None if self.batched else model.generate_tokens(
            self.idx, request.sampling, eos_id=tokenizer.eos_id, generator=self.generator)
        self.deadline = time.monotonic() + time_limit
        self.cancelled = False          # set by the handler when its client goes away
        self.updated = asyncio.Event()  # set on the event loop after every step that touched this generation
        self.shown = [("", None)] * request.n  # (text, finish_reason) per choice, as last published

    @property
    def done(self):
        return self.cancelled or all(choice.finish_reason for choice in self.choices)

    def push(self, next_token):
        """Take the sampled next token of every row (a (n,) tensor), as generate_tokens does."""
        next_token = torch.where(self.eos_rows, torch.full_like(next_token, self.tokenizer.eos_id), next_token)
        self.eos_rows |= next_token == self.tokenizer.eos_id
        self.idx = torch.cat((self.idx, next_token[:, None]), dim=1)
        self.accept(next_token.tolist())

    def sample(self, logits):
        """logits (n, V) of this generation's rows -> their next token."""
        return sample_next(logits.float(), self.idx, self.request.sampling, self.generator)

    def solo_step(self):
        self.accept(next(self.solo_tokens).tolist())

    def accept(self, tokens):
        for choice, token in zip(self.choices, tokens):
            if choice.finish_reason is None:
                self.extend(choice, token)

    def extend(self, choice, token):
        if token == self.tokenizer.eos_id:
            choice.finish_reason = "stop"
            return
        choice.ids.append(token)
        # decoded behind the prompt: a tokenizer may drop the leading space of a word that starts the text
        text = self.tokenizer.decode(self.prompt_ids[1:] + choice.ids)[len(self.prompt_text):]
        stop_at = first_stop(text, self.request.stop)
        if stop_at is not None:
            choice.text, choice.finish_reason = text[:stop_at], "stop"
        else:
            choice.text = text
            if len(choice.ids) == self.request.sampling.max_new_tokens:
                choice.finish_reason = "length"

    def expire(self):
        """The request's time limit is over: its unfinished choices end here, as if their max_tokens were reached."""
        for choice in self.choices:
            choice.finish_reason = choice.finish_reason or "length"

    def publish(self):
        """Copy the choices' state for the handler (runs on the event loop, while the worker is idle)."""
        self.shown = [(choice.text, choice.finish_reason) for choice in self.choices]
        self.updated.set()

    def usage(self):
        completion_tokens = sum(len(choice.ids) for choice in self.choices)
        return {"prompt_tokens": len(self.prompt_ids), "completion_tokens": completion_tokens,
                "total_tokens": len(self.prompt_ids) + completion_tokens}


class DecodeBatch:
    """The rows of every batched generation in flight, decoded together: one forward pass per step for all of them.
    Rows are left-padded to a common cache length; an attention mask hides the padding and each row keeps positions
    of its own, so a row computes what it would alone. It is the KV cache the model writes to (update())."""

    def __init__(self, model):
        self.model = model
        self.members = []  # generations, each owning request.n consecutive rows
        self.k, self.v = [None] * model.config.n_layer, [None] * model.config.n_layer
        self.valid = None      # (B, L) bool: which cached positions each row may attend to
        self.positions = None  # (B,) the position of each row's next input token
        self.length = 0        # the model adds to it; unused here

    @property
    def rows(self):
        return sum(g.request.n for g in self.members)

    def update(self, layer, k, v):  # the model's KV-cache interface, for a decode step
        self.k[layer] = torch.cat((self.k[layer], k), dim=2)
        self.v[layer] = torch.cat((self.v[layer], v), dim=2)
        return self.k[layer], self.v[layer]

    def add(self, generation):
        """Prefill a new generation's prompt (alone), draw its first token, and merge its cache rows in."""
        cache = KVCache(self.model.config.n_layer, self.model.config.block_size)
        logits, _ = self.model(generation.idx, cache=cache)
        generation.push(generation.sample(logits[:, -1]))
        T = generation.idx.size(1) - 1
        new_k = [cache.k[i][:, :, :T] for i in range(len(self.k))]
        new_v = [cache.v[i][:, :, :T] for i in range(len(self.v))]
        new_valid = torch.ones(generation.request.n, T, dtype=torch.bool, device=generation.idx.device)
        new_positions = torch.full((generation.request.n,), T, dtype=torch.long, device=generation.idx.device)
        if not self.members:
            self.k, self.v, self.valid, self.positions = new_k, new_v, new_valid, new_positions
        else:
            L = self.valid.size(1)
            width = max(L, T)
            pad = lambda t, n: F.pad(t, (0, 0, n, 0)) if n else t  # noqa: E731  (left-pad the time axis)
            self.k = [torch.cat((pad(a, width - L), pad(b, width - T))) for a, b in zip(self.k, new_k)]
            self.v = [torch.cat((pad(a, width - L), pad(b, width - T))) for a, b in zip(self.v, new_v)]
            self.valid = torch.cat((F.pad(self.valid, (width - L, 0)), F.pad(new_valid, (width - T, 0))))
            self.positions = torch.cat((self.positions, new_positions))
        self.members.append(generation)

    def step(self):
        """One token for every row of every member."""
        last = torch.cat([g.idx[:, -1:] for g in self.members])
        self.valid = F.pad(self.valid, (0, 1), value=True)
        mask = None if bool(self.valid.all()) else self.valid[:, None, None, :]  # no padding: sample.py's exact path
        logits, _ = self.model(last, cache=self, positions=self.positions[:, None], attn_mask=mask)
        self.positions = self.positions + 1
        row = 0
        for g in self.members:
            g.push(g.sample(logits[row:row + g.request.n, -1]))
            row += g.request.n

    def remove_done(self):
        keep, row = [], 0
        for g in self.members:
            keep += [not g.done] * g.request.n
            row += g.request.n
        if all(keep):
            return
        keep = torch.tensor(keep, device=self.valid.device)
        self.members = [g for g in self.members if not g.done]
        if not self.members:
            self.k, self.v = [None] * len(self.k), [None] * len(self.v)
            self.valid = self.positions = None
            return
        self.valid, self.positions = self.valid[keep], self.positions[keep]
        first = int(self.valid.any(0).int().argmax())  # columns no remaining row can see are dropped
        self.valid = self.valid[:, first:]
        self.k = [k[keep][:, :, first:] for k in self.k]
        self.v = [v[keep][:, :, first:] for v in self.v]


@dataclass
class ModelSlot:
    """One served model: its weights, tokenizer, what the playground needs to know, and its generations in flight."""
    name: str
    model: object
    tokenizer: object
    device: str
    language: str | None = None
    instruct: tuple | None = None  # (InstructFormat, language) of a model trained on the instruct format
    batch: DecodeBatch = None
    solo: list = field(default_factory=list)
    pending: deque = field(default_factory=deque)  # appended on the event loop, taken on the worker thread

    def __post_init__(self):
        self.batch = DecodeBatch(self.model)


class Scheduler:
    """Runs every model call on one worker thread (the model is not thread-safe, and the event loop stays free for
    requests). Each step admits the requests that arrived, advances every generation in flight by one token —
    the batched ones in one forward pass per model, up to max_batch rows — ends those whose client left or whose
    time ran out, and wakes their handlers."""

    def __init__(self, slots, max_batch):
        self.slots, self.max_batch = slots, max_batch
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.wake = asyncio.Event()
        self.stats = {"completed": 0, "cancelled": 0, "timed_out": 0}

    def in_flight(self):
        return sum(len(s.pending) + len(s.batch.members) + len(s.solo) for s in self.slots.values())

    def submit(self, slot, generation):
        slot.pending.append(generation)
        self.wake.set()

    def step(self):
        """One step of everything (worker thread); returns the generations it touched."""
        touched = []
        now = time.monotonic()
        for slot in self.slots.values():
            slot.batch.remove_done()  # generations whose client left since the last step
            slot.solo = [g for g in slot.solo if not g.done]
            with torch.no_grad():  # in the weights' own dtype (quantize.prepare cast them once)
                waiting = len(slot.pending)
                for _ in range(waiting):
                    g = slot.pending.popleft()
                    if g.cancelled:
                        touched.append(g)
                    elif not g.batched:
                        slot.solo.append(g)
                    elif slot.batch.rows + g.request.n <= self.max_batch or not slot.batch.members:
                        slot.batch.add(g)
                    else:
                        slot.pending.append(g)  # waits for rows to free up
                if slot.batch.members:
                    slot.batch.step()
                for g in slot.solo:
                    if not g.done:
                        g.solo_step()
            for g in slot.batch.members + slot.solo:
                if not g.done and now > g.deadline:
                    g.expire()
                    self.stats["timed_out"] += 1
                touched.append(g)
            slot.batch.remove_done()
            slot.solo = [g for g in slot.solo if not g.done]
        return touched

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.in_flight():
                for g in await loop.run_in_executor(self.worker, self.step):
                    g.publish()

    def close(self):
        self.worker.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- the HTTP server

def json_response(body, status=200, headers=None):
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status, headers=headers,
                        content_type="application/json")


def error_response(status, message, param=None, code=None, headers=None, kind="invalid_request_error"):
    return json_response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status, headers)


class StoryServer:
    """The endpoints around the loaded models. make_app() gives the aiohttp application."""

    def __init__(self, slots, max_tokens_limit=1024, max_n=4, max_body_bytes=1_000_000, max_queued=64, max_batch=16,
                 request_timeout=300.0):
        self.slots = {slot.name: slot for slot in slots}
        self.default = slots[0]
        self.max_tokens_limit, self.max_n, self.max_body_bytes = max_tokens_limit, max_n, max_body_bytes
        self.max_queued, self.request_timeout = max_queued, request_timeout
        self.scheduler = Scheduler(self.slots, max_batch)
        self.created = int(time.time())

    # the first model, for the tests and the one-model case
    model = property(lambda self: self.default.model)
    tokenizer = property(lambda self: self.default.tokenizer)
    model_name = property(lambda self: self.default.name)

    def make_app(self):
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self.json_errors])
        app.router.add_get("/", self.playground)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.on_startup.append(self.start_scheduler)
        app.on_cleanup.append(self.stop_scheduler)
        return app

    async def start_scheduler(self, app):
        self.scheduler_task = asyncio.create_task(self.scheduler.run())

    async def stop_scheduler(self, app):
        self.scheduler_task.cancel()
        self.scheduler.close()

    @web.middleware
    async def json_errors(self, request, handler):
        """Every error leaves as an OpenAI-style JSON body, aiohttp's own 404, 405 and 413 included."""
        try:
            return await handler(request)
        except RequestError as e:
            headers = {"Retry-After": "1"} if e.status == 503 else None
            return error_response(e.status, e.message, e.param, e.code, headers,
                                  kind="server_overloaded" if e.status == 503 else "invalid_request_error")
        except web.HTTPNotFound:
            return error_response(404, f"no endpoint at {request.path}; this server has {ENDPOINTS}")
        except web.HTTPMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.allowed_methods))
            return error_response(405, f"{request.method} is not allowed on {request.path}; use {allowed}",
                                  headers={"Allow": allowed})
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"request body is larger than the limit of {self.max_body_bytes} bytes")

    async def list_models(self, request):
        return json_response({"object": "list", "data": [
            {"id": slot.name, "object": "model", "created": self.created, "owned_by": "local",
             "language": slot.language, "block_size": slot.model.config.block_size}
            for slot in self.slots.values()]})

    async def health(self, request):
        return json_response({"status": "ok", "in_flight": self.scheduler.in_flight(),
                              "max_queued": self.max_queued, **self.scheduler.stats})

    async def playground(self, request):
        return web.Response(text=playground_page(list(self.slots.values()), self.max_tokens_limit),
                            content_type="text/html", charset="utf-8")

    async def completions(self, request):
        return await self.answer(request, chat=False)

    async def chat_completions(self, request):
        return await self.answer(request, chat=True)

    def parse_request(self, body, chat):
        """(model slot, StoryRequest) from an OpenAI request body; RequestError names the first wrong field."""
        model = body.get("model")
        if model is not None and model not in self.slots:
            served = ", ".join(shown(name) for name in self.slots)
            raise RequestError(f"model {shown(model)} is not served here; this server serves {served}",
                               "model", status=404, code="model_not_found")
        slot = self.slots[model] if model is not None else self.default
        for name, neutral_values in UNSUPPORTED_FIELDS.items():
            if body.get(name) not in (None, *neutral_values):
                raise RequestError(f"{name} is not supported by this server", name)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError(f"stream must be true or false, got {shown(stream)}", "stream")
        tokens_field = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        spec = request_spec(body, slot)
        prompt = chat_prompt(body) if chat else completion_prompt(body, spec)
        if chat and slot.instruct and not spec:  # "Words: ...\nEnding: ..." written as a message
            spec, prompt = instruct.parse_block_message(prompt, *slot.instruct) or ({}, prompt)
        instruction = ""
        if spec:
            fmt, language = slot.instruct
            instruction = fmt.render(instruct.localized_spec(spec, language), language)
        return slot, StoryRequest(
            prompt=prompt, instruction=instruction,
            sampling=SamplingConfig(
                max_new_tokens=number_field(body, tokens_field, int, 1, self.max_tokens_limit, self.max_tokens_limit),
                temperature=number_field(body, "temperature", float, 0, 2, 1.0),
                top_p=number_field(body, "top_p", float, 0, 1, 1.0, low_open=True),
                top_k=number_field(body, "top_k", int, 0, slot.tokenizer.vocab_size, 0),
                repetition_penalty=number_field(body, "repetition_penalty", float, 0, 2, 1.0, low_open=True),
                no_repeat_ngram_size=number_field(body, "no_repeat_ngram_size", int, 0, 16, 0)),
            n=number_field(body, "n", int, 1, self.max_n, 1),
            seed=number_field(body, "seed", int, 0, 2**63 - 1, None),
            stop=stop_field(body),
            stream=bool(stream),
            include_usage=include_usage_field(body))

    async def answer(self, request, chat):
        slot, story_request = self.parse_request(await read_json_object(request), chat)
        if self.scheduler.in_flight() >= self.max_queued:
            raise RequestError(f"the server is busy ({self.max_queued} requests in flight); retry shortly",
                               status=503, code="overloaded")
        generation = Generation(slot, story_request, self.request_timeout)
        self.scheduler.submit(slot, generation)
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        try:
            if story_request.stream:
                return await self.stream(request, generation, slot, response_id, chat)
            while not all(finish for _, finish in generation.shown):
                await generation.updated.wait()
                generation.updated.clear()
        finally:
            if not all(finish for _, finish in generation.shown):  # the client went away (or the server stops)
                generation.cancelled = True
                self.scheduler.stats["cancelled"] += 1
            else:
                self.scheduler.stats["completed"] += 1
        choices = []
        for index, (text, finish_reason) in enumerate(generation.shown):
            content = ({"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None})
            choices.append({"index": index, **content, "finish_reason": finish_reason})
        return json_response({"id": response_id, "object": "chat.completion" if chat else "text_completion",
                              "created": int(time.time()), "model": slot.name, "choices": choices,
                              "usage": generation.usage()})

    async def stream(self, request, generation, slot, response_id, chat):
        """Server-Sent Events: a chunk whenever a choice has new text that can no longer change, then a chunk with
        each choice's finish_reason, then [DONE]. A client that hangs up ends its generation."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())
        sent = [0] * len(generation.choices)

        async def send(index, text="", finish_reason=None, opening=False):
            if chat:
                delta = {"role": "assistant", "content": ""} if opening else {"content": text} if text else {}
                choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
            else:
                choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
            chunk = {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": slot.name, "choices": [choice]}
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

        try:
            if chat:  # as the OpenAI API does, each chat choice opens with its role
                for index in range(len(generation.choices)):
                    await send(index, opening=True)
            while True:
                await generation.updated.wait()
                generation.updated.clear()
                for index, (text, finish_reason) in enumerate(generation.shown):
                    ready = text if finish_reason else stable_prefix(text, generation.request.stop)
                    if len(ready) > sent[index]:
                        await send(index, ready[sent[index]:])
                        sent[index] = len(ready)
                if all(finish for _, finish in generation.shown):
                    break
            for index, (_, finish_reason) in enumerate(generation.shown):
                await send(index, finish_reason=finish_reason)
            if generation.request.include_usage:
                chunk = {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": created, "model": slot.name, "choices": [], "usage": generation.usage()}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; answer()'s finally ends the generation
        return response


# ----------------------------------------------------------------------------- the playground page

LANGUAGE_TAGS = {"hindi": "hi", "marathi": "mr", "bangla": "bn", "english": "en"}


def openings(language):
    """The story openings of training-inference/prompts/<language>.txt, for the playground's "random opening"."""
    path = os.path.join(PROJECT_ROOT, "training-inference", "prompts", f"{language}.txt")
    if not language or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def playground_page(slots, max_tokens_limit):
    """The page, with the served models and their openings filled in as JSON (nothing from outside this machine)."""
    models = [{"name": slot.name, "language": slot.language, "lang": LANGUAGE_TAGS.get(slot.language, ""),
               "openings": openings(slot.language)} for slot in slots]
    data = json.dumps({"models": models, "max_tokens_limit": max_tokens_limit}, ensure_ascii=False)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "playground.html"), encoding="utf-8") as f:
        page = f.read()
    # </script> inside a JSON string would end the script element early
    return page.replace("/*SERVER_DATA*/null", data.replace("</", "<\\/"))


# ----------------------------------------------------------------------------- command line

def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may well resolve to an address the network can reach
        return False


async def start_server(app, host, port):
    """Listen on host:port (port 0: a free one); returns (runner, the URL of the API)."""
    # handler_cancellation: a client that hangs up cancels its handler, which ends its generation
    runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/v1"


async def serve_forever(app, host, port, model_name):
    runner, url = await start_server(app, host, port)
    print(f"serving {model_name!r} at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def load_slots(cfg, device, dtype):
    """One ModelSlot per checkpoint in --init_from (comma-separated)."""
    sources = [source.strip() for source in cfg.init_from.split(",") if source.strip()]
    names = [name.strip() for name in cfg.model_name.split(",")] if cfg.model_name else [s.rstrip("/") for s in sources]
    if len(names) != len(sources) or len(set(names)) != len(names):
        raise ConfigError(f"model_name must give one distinct name per init_from checkpoint, got {cfg.model_name!r}")
    slots = []
    for source, name in zip(sources, names):
        model, tokenizer, ckpt = load_model(source, device, cfg.tokenizer)
        config = ckpt.get("config") or {}
        language = metrics.language_in(f"{config.get('dataset', '')} {source}")
        print(f"{ckpt['path']}: {model.num_params() / 1e6:.2f}M params, tokenizer {tk.describe(tokenizer.spec)}, "
              f"block_size {model.config.block_size}, language {language or 'unknown'}", file=sys.stderr)
        model = quantize.prepare(model, dtype, cfg.quantize)  # after counting: int8 weights are no longer parameters
        instruct_format = None
        labels = ((ckpt.get("meta") or {}).get("instruct") or {}).get("labels")
        if labels:  # a spec is rendered with the labels of the model's language
            instruct_format = instruct.model_format(ckpt, language if language in labels else sorted(labels)[0])
        slots.append(ModelSlot(name, model, tokenizer, device, language, instruct_format))
    return slots


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = SimpleNamespace(**load_config(DEFAULTS, argv, CHOICES, __doc__))
        if not 0 <= cfg.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {cfg.port}")
        for key in ("max_tokens_limit", "max_n", "max_body_bytes", "max_queued", "max_batch"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
        if not cfg.request_timeout > 0:
            raise ConfigError(f"request_timeout must be > 0 seconds, got {cfg.request_timeout}")
        device = runtime.pick_device(cfg.device)
        dtype = quantize.inference_dtype(cfg.dtype, cfg.quantize, device)
        slots = load_slots(cfg, device, dtype)
    except (ConfigError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    print(f"device {device}, dtype {dtype}{', int8 weights' * (cfg.quantize == 'int8')}; playground at / on the same "
          f"address", file=sys.stderr)
    if not is_loopback(cfg.host):
        print(f"warning: listening on {cfg.host}: anyone who can reach this machine can use the model "
              f"(there is no authentication)", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # aiohttp's access log: one line per request
    server = StoryServer(slots, max_tokens_limit=cfg.max_tokens_limit, max_n=cfg.max_n,
                         max_body_bytes=cfg.max_body_bytes, max_queued=cfg.max_queued, max_batch=cfg.max_batch,
                         request_timeout=cfg.request_timeout)
    try:
        asyncio.run(serve_forever(server.make_app(), cfg.host, cfg.port, ", ".join(server.slots)))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
