"""A minimal client for OpenAI-compatible chat endpoints (``POST <base>/v1/chat/completions``),
built on the standard library so that judging needs no extra dependency.

Settings come from arguments or the environment: ``PREFALIGN_JUDGE_BASE_URL`` (else
``OPENAI_BASE_URL``), ``PREFALIGN_JUDGE_API_KEY`` (else ``OPENAI_API_KEY``; sent as
``Authorization: Bearer <key>``), ``PREFALIGN_JUDGE_MODEL``. A base URL ending in ``/v1`` gets
``/chat/completions`` appended, any other base URL ``/v1/chat/completions``.

Failure handling: connection errors, timeouts and HTTP 408/409/429/5xx are retried up to
``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, capped at
``max_backoff_s``; a numeric ``Retry-After`` header is honoured up to that cap). Other HTTP errors
raise :class:`EndpointError` at once with the status and the start of the body. A 200 reply that
is not JSON or lacks ``choices[0].message.content`` raises :class:`MalformedReplyError`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with an error status."""


class MalformedReplyError(EndpointError):
    """The endpoint answered 200 with a body that is not a chat completion."""


@dataclass
class EndpointSettings:
    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    @classmethod
    def from_env(cls, *, model: str | None = None, base_url: str | None = None, **overrides: Any) -> EndpointSettings:
        """Settings with unset fields read from the environment (see the module docstring)."""
        env = os.environ
        base_url = base_url or env.get("PREFALIGN_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL")
        model = model or env.get("PREFALIGN_JUDGE_MODEL")
        if not base_url:
            raise ValueError("no judge endpoint: pass base_url or set PREFALIGN_JUDGE_BASE_URL (or OPENAI_BASE_URL)")
        if not model:
            raise ValueError("no judge model: pass model or set PREFALIGN_JUDGE_MODEL")
        api_key = overrides.pop("api_key", None) or env.get("PREFALIGN_JUDGE_API_KEY") or env.get("OPENAI_API_KEY")
        return cls(base_url=base_url, model=model, api_key=api_key, **overrides)

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class ChatCompletionClient:
    """Sends chat requests; ``sleep`` is injectable so tests need not wait for backoff."""

    def __init__(self, settings: EndpointSettings, *, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.sleep = sleep

    def complete(self, messages: list[dict[str, str]], **params: Any) -> str:
        """The content of the first choice for ``messages``; ``params`` go into the request body."""
        payload = {"model": self.settings.model, "messages": messages, **params}
        body = self._post_with_retries(json.dumps(payload).encode("utf-8"))
        return _content_of(body)

    def _request(self, data: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return urllib.request.Request(self.settings.url, data=data, headers=headers, method="POST")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.settings.backoff_s * (2**attempt)
        if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        return min(delay, self.settings.max_backoff_s)

    def _post_with_retries(self, data: bytes) -> bytes:
        url, last_error = self.settings.url, ""
        for attempt in range(self.settings.max_retries + 1):
            retry_after = None
            try:
                with urllib.request.urlopen(self._request(data), timeout=self.settings.timeout_s) as reply:
                    return reply.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code not in RETRY_STATUSES:
                    raise EndpointError(f"{url}: HTTP {exc.code} {exc.reason}: {detail}") from None
                last_error, retry_after = f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.settings.max_retries:
                self.sleep(self._delay(attempt, retry_after))
        raise EndpointError(f"{url}: gave up after {self.settings.max_retries + 1} attempts; last error: {last_error}")


def _content_of(body: bytes) -> str:
    snippet = body[:200].decode("utf-8", "replace")
    try:
        reply = json.loads(body)
    except ValueError:
        raise MalformedReplyError(f"reply is not JSON: {snippet!r}") from None
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedReplyError(f"reply has no 'choices' list: {snippet!r}")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedReplyError(f"reply has no string 'choices[0].message.content': {snippet!r}")
    return content
