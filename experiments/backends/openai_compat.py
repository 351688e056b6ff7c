"""OpenAI-compatible HTTP backend: ``vllm serve`` on one or many hosts, or any hosted endpoint.

Requests of a shard go out concurrently (httpx.AsyncClient, bounded by a semaphore), spread
round robin over the configured base URLs; a retry moves to the next URL, so one dead replica
does not fail its share of the shard. Retries use tenacity (exponential backoff with jitter) on
429, 5xx and connection errors. When retries are exhausted the request becomes a response row
with the error, never an exception that would lose the rest of the batch.

The API key is read from the environment variable named in config at call time; it is never
stored on the backend, logged or returned by ``describe()``. A value of ``api_key_env`` that
looks like a key rather than a variable's name is refused without being echoed, and URLs in
messages and ``describe()`` have their credentials redacted (``crowdlab.experiments.redaction``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import time
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import Field, field_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.backends.base import Message, RequestBatch, ResponseBatch
from crowdlab.experiments.backends.model_ref import BackendError
from crowdlab.experiments.redaction import redact, redact_text

logger = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Prefixes of common API keys and tokens (OpenAI, Anthropic, Hugging Face, Groq, GitHub, Slack, ...).
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "gsk_", "ghp_", "gho_", "ghs_", "github_pat_", "xai-",
                 "xoxb-", "xoxp-", "AIza", "glpat-", "nvapi-", "pplx-", "r8_")


def looks_like_a_key(value: str) -> bool:
    """True when ``value`` cannot be, or is unlikely to be, an environment variable's name.

    Variable names are letters, digits and underscores, and in practice short and not random:
    a known key prefix, or 24+ characters mixing upper case, lower case and digits, mean a key."""
    if not _ENV_NAME.fullmatch(value) or value.startswith(_KEY_PREFIXES):
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return len(value) >= 24 and mixed


class OpenAIBackendConfig(BackendSettings):
    """Options of the OpenAI-compatible HTTP backend."""

    kind: Literal["openai"] = "openai"
    model: str = Field(description="model name as the server knows it (`vllm serve <model>`)")
    base_urls: list[str] = Field(min_length=1, description="e.g. http://gpu1:8000/v1; load-balanced")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    max_concurrency: int = Field(64, ge=1, description="requests in flight at once, all URLs together")
    timeout_s: float = Field(120.0, gt=0, description="read timeout of one attempt")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(4, ge=0, description="extra attempts after the first")
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    structured_output: Literal["response_format", "vllm", "none"] = Field(
        "response_format",
        description="response_format: OpenAI json_schema (portable); vllm: vLLM's structured_outputs body",
    )
    send_seed: bool = Field(True, description="send each request's seed (reproducible on vLLM)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="merged into every request body")

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, name: str | None) -> str | None:
        # The message never repeats the value: it may be the key itself.
        if name is not None and looks_like_a_key(name):
            raise ValueError("must be the NAME of an environment variable that holds the key (e.g. "
                             "OPENAI_API_KEY), not the key itself; the value given looks like a key, "
                             "so it was not stored: export it and give the variable's name")
        return name

    def check_environment(self) -> None:
        """The key variable is set (checked before a run starts and when the backend is built)."""
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise BackendError(f"api_key_env names {self.api_key_env!r} but that environment variable is "
                               f"empty (backend for model {self.model!r})")

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_url_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base URL {url!r} must start with http:// or https://")
        return urls

    def build(self) -> "OpenAIBackend":
        return OpenAIBackend(self)

    def default_label(self) -> str:
        return self.model


def chat_completions_url(base_url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean the server's /v1/chat/completions."""
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class RetryableHTTPError(Exception):
    """A 429 or 5xx answer: worth another attempt, perhaps on another URL."""


class RequestFailed(Exception):
    """A request that will not succeed by retrying (4xx, non-JSON body); the message names the URL."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (RetryableHTTPError, httpx.TransportError))


class OpenAIBackend:
    """Backend over one or more OpenAI-compatible servers."""

    needs_prompts = True

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        self.name = config.display_label()
        # Credentials in a URL (http://user:KEY@host) go in the request's auth, not its URL, so
        # httpx's own request log never shows them; messages show the redacted URL.
        self._urls, self._auths = zip(*(_split_userinfo(chat_completions_url(url)) for url in config.base_urls))
        self._shown_urls = [redact_text(url) for url in self._urls]
        config.check_environment()

    # --- request bodies ----------------------------------------------------------------------

    def _structured_body(self, batch: RequestBatch) -> dict[str, Any]:
        mode = self.config.structured_output
        if mode == "none":
            return {}
        if mode == "response_format" and batch.answer_schema is not None:
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": batch.answer_schema, "strict": True},
                }
            }
        if batch.answer_schema is not None:
            return {"structured_outputs": {"json": batch.answer_schema}}
        if batch.answer_regex is not None:  # only vLLM-style servers understand a regex
            return {"structured_outputs": {"regex": batch.answer_regex}}
        return {}

    def _body(self, messages: list[Message], seed: int, shared: dict[str, Any]) -> dict[str, Any]:
        body = {"model": self.config.model, "messages": messages, **shared}
        if self.config.send_seed:
            body["seed"] = seed
        return body

    def _headers(self) -> dict[str, str]:
        if self.config.api_key_env is None:
            return {}
        return {"Authorization": f"Bearer {os.environ.get(self.config.api_key_env, '')}"}

    # --- sending -----------------------------------------------------------------------------

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        """Send every request of the batch; failures after retries come back as error rows."""
        if batch.messages is None:
            raise ValueError("the openai backend needs RequestBatch.messages")
        coroutine_factory = lambda: self._generate_async(batch)  # noqa: E731
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine_factory())
        # Called from inside an event loop (a notebook, an async flow): run on a private loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(coroutine_factory())).result()

    async def _generate_async(self, batch: RequestBatch) -> ResponseBatch:
        n = len(batch)
        s = batch.sampling
        shared = {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            **self._structured_body(batch),
            **self.config.extra_body,
        }
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.config.max_concurrency)
        texts: list[str] = [""] * n
        errors: list[str | None] = [None] * n
        input_tokens = np.zeros(n, dtype=np.int64)
        output_tokens = np.zeros(n, dtype=np.int64)
        latency = np.zeros(n, dtype=np.float64)
        truncated = np.zeros(n, dtype=bool)
        seeds = batch.seeds.tolist()
        messages = batch.messages
        assert messages is not None

        async def one(i: int) -> None:
            body = self._body(messages[i], seeds[i], shared)
            async with semaphore:
                started = time.perf_counter()
                try:
                    payload = await self._post_with_retries(client, i, body)
                    texts[i], input_tokens[i], output_tokens[i], truncated[i] = _read_completion(payload)
                except Exception as exc:  # every failure becomes this row's error
                    errors[i] = redact_text(_describe_failure(exc))
                latency[i] = time.perf_counter() - started

        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers()) as client:
            await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        failed = sum(e is not None for e in errors)
        if failed:
            first = next(e for e in errors if e is not None)
            logger.warning("%d of %d requests to %s failed; first error: %s", failed, n, self._shown_urls, first)
        return ResponseBatch(
            texts=texts,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency,
            errors=errors,
            stats={
                "batch_seconds": elapsed,
                "failed": float(failed),
                "output_tokens": float(output_tokens.sum()),
                "output_tokens_per_s": float(output_tokens.sum()) / elapsed if elapsed > 0 else 0.0,
            },
            truncated=truncated,
        )

    async def _post_with_retries(self, client: httpx.AsyncClient, i: int, body: dict[str, Any]) -> Any:
        attempt_no = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            # Exponential backoff plus up to one initial step of jitter, so that a shard's worth of
            # requests that failed together does not come back together.
            wait=wait_exponential(multiplier=self.config.backoff_initial_s, max=self.config.backoff_max_s)
            + wait_random(0, self.config.backoff_initial_s),
            stop=stop_after_attempt(self.config.max_retries + 1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                index = (i + attempt_no) % len(self._urls)  # a retry moves on
                attempt_no += 1
                try:
                    return await _post_once(client, self._urls[index], body, self._shown_urls[index],
                                            self._auths[index])
                except httpx.TransportError as exc:
                    raise type(exc)(redact_text(f"{self._shown_urls[index]}: {type(exc).__name__}: {exc}")) from exc
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def describe(self) -> dict[str, Any]:
        """Manifest entry; deliberately without the API key (only the variable's name)."""
        return {
            "backend": "openai",
            "name": self.name,
            "model": self.config.model,
            "revision": None,
            "base_urls": [redact_text(url) for url in self.config.base_urls],
            "api_key_env": self.config.api_key_env,
            "max_concurrency": self.config.max_concurrency,
            "timeout_s": self.config.timeout_s,
            "max_retries": self.config.max_retries,
            "structured_output": self.config.structured_output,
            "extra_body": redact(self.config.extra_body),
        }

    def close(self) -> None:
        """Nothing to release: connections live only inside one ``generate`` call."""


def _split_userinfo(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``http://user:pw@host/v1`` -> (``http://host/v1``, Basic auth for user:pw)."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return url, None
    return str(parsed.copy_with(username=None, password=None)), httpx.BasicAuth(parsed.username, parsed.password)


async def _post_once(client: httpx.AsyncClient, url: str, body: dict[str, Any], shown: str,
                     auth: httpx.BasicAuth | None = None) -> Any:
    """One attempt; messages name the URL as ``shown`` (credentials redacted)."""
    response = await client.post(url, json=body, **({"auth": auth} if auth is not None else {}))
    url = shown
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableHTTPError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise RequestFailed(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        return response.json()
    except ValueError:
        raise RequestFailed(f"{url}: server returned non-JSON: {response.text[:100]!r}") from None


def _read_completion(payload: Any) -> tuple[str, int, int, bool]:
    """Text, prompt tokens, completion tokens, and whether ``max_tokens`` cut the answer off."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise RequestFailed(f"response is not a chat completion: {str(payload)[:200]}") from None
    usage = payload.get("usage") or {}
    truncated = choice.get("finish_reason") == "length"
    return text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), truncated


def _describe_failure(exc: Exception) -> str:
    if isinstance(exc, (RetryableHTTPError, httpx.TransportError)):
        return f"failed after retries: {exc}"
    return str(exc) or type(exc).__name__
