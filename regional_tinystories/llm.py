"""
The LLM client: backends (where a prompt goes and its reply text comes back from) and the request engine that
sends many records through one of them, resumably (run_requests: rate limits, an in-flight cap, timeouts, retries
with backoff, each result appended to its shard's output as it arrives).

A backend is any object with
    name, model                        strings recorded next to each result
    async complete(prompt) -> str      the reply text, or raises RequestFailed / BackendConfigError
    async close()
so adding one (say, a local transformers model) is a class of a few lines. Retries, rate limits
and timeouts are the engine's job, not the backend's.
"""
import asyncio
import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiolimiter import AsyncLimiter
from tqdm import tqdm

from regional_tinystories.files import append_record
from regional_tinystories.replies import ReplyError

# Statuses worth another try: the request may succeed later without any change on our side.
RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    """One request did not produce a reply. retryable: may work if sent again later."""

    def __init__(self, reason, retryable, retry_after=None):
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said


class BackendConfigError(Exception):
    """Every request would fail the same way (bad key, unknown model, wrong URL): stop the run."""


def _seconds(header_value):
    try:
        return max(0.0, float(header_value))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class OpenAICompatibleBackend:
    """POST {base_url}/chat/completions: OpenAI, vLLM, Ollama, llama.cpp server, this project's serve.py."""

    name = "openai"

    def __init__(self, base_url, model, api_key=None, temperature=1.0, max_tokens=None, max_connections=64):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_connections = max_connections
        self.session = None  # created on first use: aiohttp sessions belong to a running event loop

    def _excerpt(self, body):
        """The start of a response body for an error message, with our key blanked out in case the
        server echoes it: error messages end up in terminals and *.failed.jsonl files."""
        excerpt = body[:200]
        return excerpt.replace(self.api_key, "***") if self.api_key else excerpt

    async def complete(self, prompt):
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections))
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "temperature": self.temperature}
        if self.max_tokens:
            payload["max_tokens"] = self.max_tokens
        try:
            async with self.session.post(self.url, json=payload, headers=self.headers) as response:
                status, body = response.status, await response.text(errors="replace")
                retry_after = _seconds(response.headers.get("Retry-After"))
        except aiohttp.ClientError as e:
            raise RequestFailed(f"connection error: {type(e).__name__}: {e}", retryable=True) from None

        if status in (401, 403):
            raise BackendConfigError(f"{self.url} refused the API key (HTTP {status}): {self._excerpt(body)}")
        if status == 404:
            raise BackendConfigError(f"{self.url} answered 404; check --base-url and --model ({self._excerpt(body)})")
        if status != 200:
            raise RequestFailed(f"HTTP {status}: {self._excerpt(body)}", retryable=status in RETRYABLE_STATUSES,
                                retry_after=retry_after)
        try:
            choice = json.loads(body)["choices"][0]
            text, finish_reason = choice["message"]["content"], choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed(f"HTTP 200 but not a chat completion: {self._excerpt(body)!r}",
                                retryable=True) from None
        if finish_reason == "length":
            raise RequestFailed("reply cut off at the token limit (finish_reason=length); raise --max-tokens",
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

    def __init__(self, model, provider=None):
        # Imported here: g4f is large and only this backend needs it.
        import g4f.Provider
        from g4f.client import AsyncClient

        provider_class = None
        if provider:
            provider_class = getattr(g4f.Provider, provider, None)
            if provider_class is None:
                raise BackendConfigError(f"g4f has no provider {provider!r}")
        self.model = model
        self.client = AsyncClient(provider=provider_class)

    async def complete(self, prompt):
        import g4f.errors

        try:
            response = await self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}])
            return response.choices[0].message.content or ""
        except (g4f.errors.ModelNotFoundError, g4f.errors.ProviderNotFoundError) as e:
            raise BackendConfigError(f"g4f: {e}") from None
        except Exception as e:  # providers raise anything from HTTP errors to parse errors
            raise RequestFailed(f"g4f {type(e).__name__}: {e}", retryable=True) from None

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
    size: int | None  # records in the input, if cheap to know


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


async def send_with_retries(job, prompt, backend, mode, settings, limiters, stats, debug_log):
    """(result, None) or (None, failure reason), after at most 1 + settings.retries attempts."""
    for attempt in range(1, settings.retries + 2):
        for limiter in limiters:
            await limiter.acquire()
        retry_after = None
        try:
            async with asyncio.timeout(settings.timeout):
                reply = await backend.complete(prompt)
            if debug_log:
                debug_log.write(json.dumps({"key": job.key, "attempt": attempt, "reply": reply},
                                           ensure_ascii=False) + "\n")
            return mode.result_for(job.record, reply), None
        except RequestFailed as e:
            reason, retry_after = str(e), e.retry_after
            if not e.retryable:
                return None, f"{reason} (attempt {attempt}, not retryable)"
        except ReplyError as e:
            reason = f"unusable reply: {e}"
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
    debug_log = open(settings.debug_log, "a", encoding="utf-8", buffering=1) if settings.debug_log else None
    # In a terminal the bar redraws often; redirected to a log (an overnight nohup run) it writes a
    # line a minute instead of flooding the file.
    progress = tqdm(total=total, unit="req", desc=type(mode).__name__, disable=not show_progress,
                    mininterval=0.5 if sys.stderr.isatty() else 60, dynamic_ncols=True)

    async def worker():
        # The workers share one job iterator, so there are never more than max_in_flight requests
        # and the job list is read lazily, however long it is.
        for job in jobs:
            result, failure = await send_with_retries(job, mode.prompt_for(job.record), backend, mode, settings,
                                                      limiters, stats, debug_log)
            if result is not None:
                append_record(job.shard.out_path, result)
                stats["ok"] += 1
            else:
                failed = {"ID": job.record["ID"], "error": failure}
                if "sample_index" in job.record:
                    failed["sample_index"] = job.record["sample_index"]
                append_record(job.shard.failed_path, failed)
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
