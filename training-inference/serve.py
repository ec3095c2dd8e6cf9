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
plus top_k, repetition_penalty and no_repeat_ngram_size as in sample.py (vLLM's names). Other unknown fields are ignored, but fields
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
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from aiohttp import web

from regional_tinystories import checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.config import ConfigError, load_config
from regional_tinystories.sampling import SamplingConfig, encode_prompt

DEFAULTS = dict(
    init_from="out/run",        # run folder (its ckpt_best.pt), a .pt file, or hf:OWNER/REPO/FILE.pt
    model_name="",              # the id clients pass as "model"; empty: the init_from value
    host="127.0.0.1",           # loopback only; any other address lets the network use the model, without a key
    port=8000,                  # 0 picks a free port (printed at start)
    device="auto",
    dtype="auto",
    max_tokens_limit=1024,      # the most tokens one choice may ask for; also what a request without max_tokens gets
    max_n=4,                    # the most choices (n) per request
    max_body_bytes=1_000_000,   # larger request bodies are refused with 413
)
CHOICES = dict(dtype=("auto", "float32", "bfloat16", "float16"))

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4  # as in the OpenAI API
# Fields an OpenAI client may send that this server cannot honour. They are accepted only at their neutral value,
# so that no request is answered as if they had been applied.
UNSUPPORTED_FIELDS = {"echo": (False,), "suffix": ("",), "logprobs": (False, 0), "best_of": (1,),
                      "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},), "tools": ([],)}
ENDPOINTS = "GET /v1/models, POST /v1/completions, POST /v1/chat/completions"


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


def completion_prompt(body):
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(f"prompt must be a string or a list of one string, got {shown(prompt)}", "prompt")
    if not prompt.strip():
        raise RequestError("prompt is empty: send the opening of a story", "prompt")
    return prompt


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
    """One continuation of the prompt, as it grows."""
    ids: list = field(default_factory=list)  # generated token ids, without eos
    text: str = ""                            # their text, cut before a stop string
    finish_reason: str | None = None          # 'stop' (eos or a stop string) or 'length' (max_tokens reached)
    sent: int = 0                             # streaming: how many characters of text were sent

    def take_unsent(self, stops):
        """Streaming: the text not sent yet that later tokens cannot change (all of it once finished)."""
        ready = self.text if self.finish_reason else stable_prefix(self.text, stops)
        unsent = ready[self.sent:]
        self.sent = max(self.sent, len(ready))
        return unsent


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
    """The n choices of one request, sampled together as one batch like sample.py's num_samples. step() adds one
    token to each unfinished choice; it runs on the server's worker thread."""

    def __init__(self, model, tokenizer, request, device, dtype):
        ids = encode_prompt(tokenizer, request.prompt, model.config.block_size)
        self.prompt_ids = ids
        self.prompt_text = tokenizer.decode(ids[1:])
        self.tokenizer, self.request, self.device, self.dtype = tokenizer, request, device, dtype
        self.choices = [Choice() for _ in range(request.n)]
        generator = torch.Generator(device=device)
        if request.seed is None:
            generator.seed()  # a fresh random seed, as the OpenAI API does without one
        else:
            generator.manual_seed(request.seed)
        idx = torch.tensor([ids] * request.n, dtype=torch.long, device=device)
        self.tokens = model.generate_tokens(idx, request.sampling, eos_id=tokenizer.eos_id, generator=generator)

    def step(self):
        """Generate the next token of every unfinished choice; False once all of them are finished. (Every choice
        finishes by its max_tokens-th token, so the token generator is never asked for more.)"""
        with runtime.autocast(self.device, self.dtype):
            tokens = next(self.tokens).tolist()
        for choice, token in zip(self.choices, tokens):
            if choice.finish_reason is None:
                self.extend(choice, token)
        return any(choice.finish_reason is None for choice in self.choices)

    def run(self):
        while self.step():
            pass

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

    def usage(self):
        completion_tokens = sum(len(choice.ids) for choice in self.choices)
        return {"prompt_tokens": len(self.prompt_ids), "completion_tokens": completion_tokens,
                "total_tokens": len(self.prompt_ids) + completion_tokens}


# ----------------------------------------------------------------------------- the HTTP server

def json_response(body, status=200, headers=None):
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status, headers=headers,
                        content_type="application/json")


def error_response(status, message, param=None, code=None, headers=None):
    return json_response({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                    "code": code}}, status, headers)


class StoryServer:
    """The endpoints around one loaded model. make_app() gives the aiohttp application."""

    def __init__(self, model, tokenizer, model_name, device="cpu", dtype="float32", max_tokens_limit=1024,
                 max_n=4, max_body_bytes=1_000_000):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.device, self.dtype = device, dtype
        self.max_tokens_limit, self.max_n, self.max_body_bytes = max_tokens_limit, max_n, max_body_bytes
        self.created = int(time.time())
        # One worker thread makes every model call: the model is not thread-safe, and the event loop stays free to
        # answer /v1/models and bad requests meanwhile. A non-streaming request holds the worker for its whole
        # generation, a streaming one for one token at a time, so streams in flight advance together.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def make_app(self):
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self.json_errors])
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.on_cleanup.append(self.stop_worker)
        return app

    async def stop_worker(self, app):
        self.worker.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def json_errors(self, request, handler):
        """Every error leaves as an OpenAI-style JSON body, aiohttp's own 404, 405 and 413 included."""
        try:
            return await handler(request)
        except RequestError as e:
            return error_response(e.status, e.message, e.param, e.code)
        except web.HTTPNotFound:
            return error_response(404, f"no endpoint at {request.path}; this server has {ENDPOINTS}")
        except web.HTTPMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.allowed_methods))
            return error_response(405, f"{request.method} is not allowed on {request.path}; use {allowed}",
                                  headers={"Allow": allowed})
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"request body is larger than the limit of {self.max_body_bytes} bytes")

    async def list_models(self, request):
        return json_response({"object": "list", "data": [{"id": self.model_name, "object": "model",
                                                          "created": self.created, "owned_by": "local"}]})

    async def completions(self, request):
        return await self.answer(request, chat=False)

    async def chat_completions(self, request):
        return await self.answer(request, chat=True)

    def parse_request(self, body, chat):
        """A StoryRequest from an OpenAI request body; RequestError names the first field that is wrong."""
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise RequestError(f"model {shown(model)} is not served here; this server serves {shown(self.model_name)}",
                               "model", status=404, code="model_not_found")
        for name, neutral_values in UNSUPPORTED_FIELDS.items():
            if body.get(name) not in (None, *neutral_values):
                raise RequestError(f"{name} is not supported by this server", name)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError(f"stream must be true or false, got {shown(stream)}", "stream")
        tokens_field = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        return StoryRequest(
            prompt=chat_prompt(body) if chat else completion_prompt(body),
            sampling=SamplingConfig(
                max_new_tokens=number_field(body, tokens_field, int, 1, self.max_tokens_limit, self.max_tokens_limit),
                temperature=number_field(body, "temperature", float, 0, 2, 1.0),
                top_p=number_field(body, "top_p", float, 0, 1, 1.0, low_open=True),
                top_k=number_field(body, "top_k", int, 0, self.tokenizer.vocab_size, 0),
                repetition_penalty=number_field(body, "repetition_penalty", float, 0, 2, 1.0, low_open=True),
                no_repeat_ngram_size=number_field(body, "no_repeat_ngram_size", int, 0, 16, 0)),
            n=number_field(body, "n", int, 1, self.max_n, 1),
            seed=number_field(body, "seed", int, 0, 2**63 - 1, None),
            stop=stop_field(body),
            stream=bool(stream))

    async def answer(self, request, chat):
        story_request = self.parse_request(await read_json_object(request), chat)
        generation = Generation(self.model, self.tokenizer, story_request, self.device, self.dtype)
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if story_request.stream:
            return await self.stream(request, generation, response_id, chat)
        await asyncio.get_running_loop().run_in_executor(self.worker, generation.run)
        choices = []
        for index, choice in enumerate(generation.choices):
            content = ({"message": {"role": "assistant", "content": choice.text}} if chat
                       else {"text": choice.text, "logprobs": None})
            choices.append({"index": index, **content, "finish_reason": choice.finish_reason})
        return json_response({"id": response_id, "object": "chat.completion" if chat else "text_completion",
                              "created": int(time.time()), "model": self.model_name, "choices": choices,
                              "usage": generation.usage()})

    async def stream(self, request, generation, response_id, chat):
        """Server-Sent Events: a chunk whenever a choice has new text that can no longer change, then a chunk with
        each choice's finish_reason, then [DONE]. A client that hangs up stops the generation."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())

        async def send(index, text="", finish_reason=None, opening=False):
            if chat:
                delta = {"role": "assistant", "content": ""} if opening else {"content": text} if text else {}
                choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
            else:
                choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
            chunk = {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": self.model_name, "choices": [choice]}
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

        loop = asyncio.get_running_loop()
        try:
            if chat:  # as the OpenAI API does, each chat choice opens with its role
                for index in range(len(generation.choices)):
                    await send(index, opening=True)
            unfinished = True
            while unfinished:
                unfinished = await loop.run_in_executor(self.worker, generation.step)
                for index, choice in enumerate(generation.choices):
                    text = choice.take_unsent(generation.request.stop)
                    if text:
                        await send(index, text)
            for index, choice in enumerate(generation.choices):
                await send(index, finish_reason=choice.finish_reason)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away: no more steps are run for it
        return response


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
    runner = web.AppRunner(app, shutdown_timeout=1.0)
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = SimpleNamespace(**load_config(DEFAULTS, argv, CHOICES, __doc__))
        if not 0 <= cfg.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {cfg.port}")
        for key in ("max_tokens_limit", "max_n", "max_body_bytes"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
        device = runtime.pick_device(cfg.device)
        dtype = runtime.pick_dtype(cfg.dtype, device)
        model, tokenizer, ckpt = load_model(cfg.init_from, device)
    except (ConfigError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    model_name = cfg.model_name or cfg.init_from.rstrip("/")
    print(f"{ckpt['path']}: {model.num_params() / 1e6:.2f}M params, tokenizer {tk.describe(tokenizer.spec)}, "
          f"block_size {model.config.block_size}, device {device}, dtype {dtype}", file=sys.stderr)
    if not is_loopback(cfg.host):
        print(f"warning: listening on {cfg.host}: anyone who can reach this machine can use the model "
              f"(there is no authentication)", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # aiohttp's access log: one line per request
    server = StoryServer(model, tokenizer, model_name, device=device, dtype=dtype,
                         max_tokens_limit=cfg.max_tokens_limit, max_n=cfg.max_n, max_body_bytes=cfg.max_body_bytes)
    try:
        asyncio.run(serve_forever(server.make_app(), cfg.host, cfg.port, model_name))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
