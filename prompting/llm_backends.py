"""
LLM backends: where a prompt goes and where its reply text comes back from.

A backend is any object with
    name, model                        strings recorded next to each result
    async complete(prompt) -> str      the reply text, or raises RequestFailed / BackendConfigError
    async close()
so adding one (say, a local transformers model) is a class of a few lines. Retries, rate limits
and timeouts are the caller's job (make_requests.py), not the backend's.
"""
import json

import aiohttp

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
