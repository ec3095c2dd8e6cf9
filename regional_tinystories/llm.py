"""
The LLM client: backends (where a prompt goes and its reply text comes back from) and the request engine that
sends many records through one of them, resumably (run_requests: rate limits, an in-flight cap, timeouts, retries
with backoff, each result appended to its shard's output as it arrives).

A backend is any object with
    name, model                        strings recorded next to each result
    async complete(prompt) -> str      the reply text, or raises RequestFailed / BackendConfigError
    async close()
    secrets (optional)                 strings (the API key) that must never be stored or printed
so adding one (say, a local transformers model) is a class of a few lines. Retries, rate limits
and timeouts are the engine's job, not the backend's.

What a reply can do is bounded: its size (max_reply_bytes, enforced while the body is read), its content (any reply,
however malformed or deeply nested, ends as a failed record with the reason, never as a crash), and what it leaks
(the API key is replaced by *** in every reason, message and debug-log line, before anything is cut to length).
"""
import asyncio
import contextlib
import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiolimiter import AsyncLimiter
from tqdm import tqdm

from regional_tinystories.errors import one_line
from regional_tinystories.files import append_record
from regional_tinystories.replies import ReplyError

# Statuses worth another try: the request may succeed later without any change on our side.
RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# A story or a set of scores is a few KB; a reply of megabytes is a broken server, not an answer.
DEFAULT_MAX_REPLY_BYTES = 4 * 2**20


class RequestFailed(Exception):
    """One request did not produce a reply. retryable: may work if sent again later. connection_failed: no
    connection to the server could be made at all (DNS failure, connection refused)."""

    def __init__(self, reason, retryable, retry_after=None, connection_failed=False):
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said
        self.connection_failed = connection_failed


class BackendConfigError(Exception):
    """Every request would fail the same way (bad key, unknown model, wrong URL): stop the run."""


class OutputError(Exception):
    """A result could not be written (a full disk, a read-only folder): stop the run; what was written stays."""


def _cannot_write(path, e):
    return OutputError(f"cannot write {path}: {e.strerror or one_line(e)}")


def _append(path, record):
    """append_record, with a failed write turned into an OutputError naming the file."""
    try:
        append_record(path, record)
    except OSError as e:
        raise _cannot_write(path, e) from None


class DebugLog:
    """--debug_log: one JSON line per raw reply, the API key blanked out. Line-buffered, so a kill loses at most the
    line being written; backslashreplace writes a lone surrogate in a reply as its JSON escape instead of failing."""

    def __init__(self, path):
        self.path = path
        try:
            self.file = open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError as e:
            raise _cannot_write(path, e) from None

    def write(self, entry):
        try:
            self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as e:
            raise _cannot_write(self.path, e) from None

    def close(self):
        with contextlib.suppress(OSError):  # only a line that failed (and was reported) can be left unflushed
            self.file.close()


def redact(text, secrets):
    """text with every secret in it replaced by ***. Done before text is cut to an excerpt: a cut first could
    keep the start of a key that straddles it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _seconds(header_value):
    try:
        return max(0.0, float(header_value))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class OpenAICompatibleBackend:
    """POST {base_url}/chat/completions: OpenAI, vLLM, Ollama, llama.cpp server, this project's serve.py."""

    name = "openai"

    def __init__(self, base_url, model, api_key=None, temperature=1.0, max_tokens=None, max_connections=64,
                 max_reply_bytes=DEFAULT_MAX_REPLY_BYTES):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.secrets = (api_key,) if api_key else ()
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_connections = max_connections
        self.max_reply_bytes = max_reply_bytes
        self.session = None  # created on first use: aiohttp sessions belong to a running event loop

    def _excerpt(self, body):
        """The start of a response body for an error message, with our key blanked out (first) in case the
        server echoes it: error messages end up in terminals and *.failed.jsonl files."""
        return redact(body, self.secrets)[:200]

    async def _read_body(self, response):
        """The body as text, read in chunks and abandoned as soon as it passes max_reply_bytes: a 100 MB reply
        costs at most max_reply_bytes of memory, never 100 MB."""
        too_big = RequestFailed(f"reply larger than {self.max_reply_bytes} bytes (--max_reply_bytes); not read "
                                "further", retryable=False)
        if response.content_length is not None and response.content_length > self.max_reply_bytes:
            raise too_big
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_reply_bytes:
                raise too_big
        return body.decode("utf-8", errors="replace")  # JSON is UTF-8 (RFC 8259)

    async def complete(self, prompt):
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections))
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "temperature": self.temperature}
        if self.max_tokens:
            payload["max_tokens"] = self.max_tokens
        try:
            async with self.session.post(self.url, json=payload, headers=self.headers) as response:
                status, body = response.status, await self._read_body(response)
                retry_after = _seconds(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as e:  # DNS failure, connection refused, host unreachable
            raise RequestFailed(f"cannot connect to {self.url}: {one_line(e)}", retryable=True,
                                connection_failed=True) from None
        except aiohttp.ClientError as e:
            raise RequestFailed(f"connection error: {one_line(e)}", retryable=True) from None

        if status in (401, 403):
            raise BackendConfigError(f"{self.url} refused the API key (HTTP {status}): {self._excerpt(body)}")
        if status == 404:
            raise BackendConfigError(f"{self.url} answered 404; check --base_url and --model ({self._excerpt(body)})")
        if status != 200:
            raise RequestFailed(f"HTTP {status}: {self._excerpt(body)}", retryable=status in RETRYABLE_STATUSES,
                                retry_after=retry_after)
        try:
            choice = json.loads(body)["choices"][0]
            text, finish_reason = choice["message"]["content"], choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):  # deep nesting: RecursionError
            raise RequestFailed(f"HTTP 200 but not a chat completion: {self._excerpt(body)!r}",
                                retryable=True) from None
        if finish_reason == "length":
            raise RequestFailed("reply cut off at the token limit (finish_reason=length); raise --max_tokens",
                                retryable=False)
        if not isinstance(text, str):
            raise RequestFailed(f"chat completion without message text: {self._excerpt(body)!r}", retryable=True)
        return text

    async def close(self):
        if self.session is not None:
            await self.session.close()


class G4FBackend:
    """gpt4free (as the seed used): free, unofficial and flaky, hence every error counts as retryable."""

    name = "g4f"

    def __init__(self, model, provider=None, max_reply_bytes=DEFAULT_MAX_REPLY_BYTES):
        # Imported here: g4f is large and only this backend needs it.
        import g4f.Provider
        from g4f.client import AsyncClient

        provider_class = None
        if provider:
            provider_class = getattr(g4f.Provider, provider, None)
            if provider_class is None:
                raise BackendConfigError(f"g4f has no provider {provider!r}")
        self.model = model
        self.max_reply_bytes = max_reply_bytes
        self.client = AsyncClient(provider=provider_class)

    async def complete(self, prompt):
        import g4f.errors

        try:
            response = await self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}])
            text = response.choices[0].message.content or ""
        except (g4f.errors.ModelNotFoundError, g4f.errors.ProviderNotFoundError) as e:
            raise BackendConfigError(f"g4f: {e}") from None
        except Exception as e:  # providers raise anything from HTTP errors to parse errors
            raise RequestFailed(f"g4f {type(e).__name__}: {e}", retryable=True) from None
        # g4f reads the whole reply itself, so the limit can only be checked afterwards.
        if len(text.encode("utf-8", errors="replace")) > self.max_reply_bytes:
            raise RequestFailed(f"reply larger than {self.max_reply_bytes} bytes (--max_reply_bytes)",
                                retryable=False)
        return text

    async def close(self):
        pass


# ----------------------------------------------------------------------------------------------
# Work items: one input record to send, and the shard (input + output files) it belongs to.

@dataclass
class Shard:
    """One input (file or dataset) and the two output files its results go to."""
    name: str
    read: Callable  # () -> iterable of (location, record)
    out_path: str
    failed_path: str
    skip: set  # keys already in out_path or failed_path


@dataclass
class Job:
    key: str
    record: dict
    shard: Shard


# ----------------------------------------------------------------------------------------------
# Sending: rate limits, in-flight cap, timeouts, retries with backoff; results appended as they come.

@dataclass
class RequestSettings:
    max_in_flight: int = 16
    rps: float | None = None
    rpm: float | None = None
    retries: int = 5
    timeout: float = 120.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    debug_log: str | None = None
    max_connection_failures: int = 5  # in a row, over all requests: then the endpoint is unreachable (0: never)


class ConnectionWatch:
    """Counts requests in a row that could not connect at all. Past the limit the run stops with one line instead
    of grinding through every record (an offline machine, a wrong host or port). Any answer resets the count."""

    def __init__(self, limit):
        self.limit, self.in_a_row = limit, 0

    def answered(self):
        self.in_a_row = 0

    def failed_to_connect(self, reason):
        self.in_a_row += 1
        if self.limit and self.in_a_row >= self.limit:
            raise BackendConfigError(f"{reason} ({self.in_a_row} requests in a row could not connect; is the server "
                                     "up and the URL right?)")


def backoff_delay(attempt, retry_after, settings):
    """Exponential backoff with jitter: 'equal jitter' keeps at least half the delay, so a burst of
    429s spreads out instead of retrying in lockstep. A server's Retry-After wins if it is longer."""
    delay = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    return max(delay, min(retry_after or 0.0, settings.backoff_max))


def rate_limiters(settings):
    limiters = []
    if settings.rps:
        # A leaky bucket that allows a burst of one second's worth (at least one request).
        burst = max(1.0, settings.rps)
        limiters.append(AsyncLimiter(burst, burst / settings.rps))
    if settings.rpm:
        limiters.append(AsyncLimiter(settings.rpm, 60))
    return limiters


def result_of(job, reply, mode, secrets):
    """mode's result for a reply, or ReplyError. Whatever else the reply makes the parser raise (deep nesting, a
    type nobody expected) is a ReplyError too: no reply may end the run."""
    if any(secret and secret in reply for secret in secrets):
        raise ReplyError("the reply contains the API key")  # never stored, whatever the record would be
    try:
        return mode.result_for(job.record, reply)
    except ReplyError:
        raise
    except Exception as e:
        raise ReplyError(f"cannot read the reply ({one_line(e)})") from None


async def send_with_retries(job, prompt, backend, mode, settings, limiters, stats, debug_log, watch):
    """(result, None) or (None, failure reason), after at most 1 + settings.retries attempts."""
    secrets = getattr(backend, "secrets", ())
    for attempt in range(1, settings.retries + 2):
        for limiter in limiters:
            await limiter.acquire()
        retry_after = None
        try:
            async with asyncio.timeout(settings.timeout):
                reply = await backend.complete(prompt)
            watch.answered()
            if debug_log:
                debug_log.write({"key": job.key, "attempt": attempt, "reply": redact(reply, secrets)})
            return result_of(job, reply, mode, secrets), None
        except RequestFailed as e:
            reason, retry_after = redact(str(e), secrets), e.retry_after
            if e.connection_failed:
                watch.failed_to_connect(reason)
            else:
                watch.answered()
            if not e.retryable:
                return None, f"{reason} (attempt {attempt}, not retryable)"
        except ReplyError as e:
            reason = redact(f"unusable reply: {e}", secrets)
        except TimeoutError:
            reason = f"no reply within {settings.timeout:g}s"
        if attempt <= settings.retries:
            stats["retries"] += 1
            await asyncio.sleep(backoff_delay(attempt, retry_after, settings))
    return None, f"{reason} (gave up after {attempt} attempts)"


async def run_requests(jobs, backend, mode, settings, total=None, show_progress=True):
    """Send every job, writing results and failures as they finish; returns Counter(ok, failed, retries)."""
    stats = Counter()
    limiters = rate_limiters(settings)
    watch = ConnectionWatch(settings.max_connection_failures)
    debug_log = DebugLog(settings.debug_log) if settings.debug_log else None
    # In a terminal the bar redraws often; redirected to a log (an overnight nohup run) it writes a
    # line a minute instead of flooding the file.
    progress = tqdm(total=total, unit="req", desc=type(mode).__name__, disable=not show_progress,
                    mininterval=0.5 if sys.stderr.isatty() else 60, dynamic_ncols=True)

    async def worker():
        # The workers share one job iterator, so there are never more than max_in_flight requests
        # and the job list is read lazily, however long it is.
        for job in jobs:
            result, failure = await send_with_retries(job, mode.prompt_for(job.record), backend, mode, settings,
                                                      limiters, stats, debug_log, watch)
            if result is not None:
                _append(job.shard.out_path, result)
                stats["ok"] += 1
            else:
                failed = {"ID": job.record["ID"]}
                if "sample_index" in job.record:
                    failed["sample_index"] = job.record["sample_index"]
                failed.update(getattr(mode, "failure_labels", {}), error=failure)
                _append(job.shard.failed_path, failed)
                stats["failed"] += 1
            progress.set_postfix(ok=stats["ok"], failed=stats["failed"], retries=stats["retries"], refresh=False)
            progress.update(1)

    workers = [asyncio.create_task(worker()) for _ in range(settings.max_in_flight)]
    try:
        await asyncio.gather(*workers)
    finally:
        # On an error in one worker (or Ctrl-C) stop the others too; what was written stays written.
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        progress.close()
        if debug_log:
            debug_log.close()
        await backend.close()
    return stats
