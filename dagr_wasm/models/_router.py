"""``ModelRouter``: a host's model calls, from an alias to a provider's answer.

The key is read from the host's environment when the router starts and put in the request's
headers here, never anywhere an agent can read; a provider's error text is stripped of it before
it becomes the agent's error. Rate limits (429), overloads and outages (5xx, timeouts, refused
connections) are retried with backoff (``Retry-After`` honoured, capped); any other refusal is
final at once. A semaphore per provider URL bounds the calls in flight on this host.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ..budget import Spend
from ..chat import ChatRequest, ChatResponse
from ..invocation import Resolution
from ._config import ModelAlias, ModelsConfig
from ._local import LocalModelError, LocalModels
from ._wire import (
    ANTHROPIC_VERSION,
    WireError,
    anthropic_request,
    anthropic_response,
    openai_request,
    openai_response,
)

__all__ = ["ModelAnswer", "ModelRouter"]

_MAX_BACKOFF_S = 30.0
_MAX_CONNECTIONS = 8192
_MAX_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A finished model call: its resolution for the inbox, and what it cost."""

    resolution: Resolution
    alias: str
    provider: str = ""
    #: The provider's name of the model asked (the alias's ``model``).
    model: str = ""
    #: What the call used: one call with its tokens and cost when answered; nothing when not.
    usage: Spend = Spend()
    latency_ms: float = 0.0
    attempts: int = 0


class _Final(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class _Transient(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class ModelRouter:
    """One per host; ``aclose`` when the host stops."""

    def __init__(
        self,
        config: ModelsConfig,
        *,
        environ: Mapping[str, str] | None = None,
        backoff_base_s: float = 1.0,
    ) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self._backoff_base_s = backoff_base_s
        self._keys = {
            name: env.get(alias.api_key_env, "") if alias.api_key_env else ""
            for name, alias in config.models.items()
        }
        # As many connections as the aliases allow calls in flight (each base URL is bounded by its
        # alias's semaphore): httpx's default pool of 100 would cap them lower, unseen.
        connections = min(sum(a.concurrency for a in config.models.values()) or 1, _MAX_CONNECTIONS)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._local = LocalModels()

    def alias(self, name: str) -> ModelAlias | None:
        """What this host serves under alias ``name`` (None: nothing)."""
        return self.config.models.get(name)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, handle: str, request: ChatRequest) -> ModelAnswer:
        """Make the call; its outcome as the resolution of ``handle`` (never raises for the
        provider's faults, which are the agent's to handle)."""
        alias = self.config.models.get(request.model)
        started = time.monotonic()
        if alias is None:
            return self._failed(
                handle, request.model, "unavailable", f"this host serves no model {request.model!r}"
            )
        attempts = 0
        reason = ""
        for attempt in range(alias.max_retries + 1):
            attempts = attempt + 1
            try:
                chat = await self._once(handle, request, alias, self._keys.get(request.model, ""))
            except _Final as final:
                return self._failed(
                    handle,
                    request.model,
                    final.kind,
                    final.reason,
                    attempts=attempts,
                    alias=alias,
                    started=started,
                )
            except _Transient as transient:
                reason = transient.reason
                if attempt < alias.max_retries:
                    await asyncio.sleep(self._backoff(attempt, transient.retry_after_s))
                continue
            tokens = chat.usage
            return ModelAnswer(
                resolution=Resolution(handle, "model", chat=chat, source=request.model),
                alias=request.model,
                provider=alias.provider,
                model=alias.model,
                usage=Spend(
                    1,
                    tokens.input_tokens,
                    tokens.output_tokens,
                    alias.cost_usd(tokens.input_tokens, tokens.output_tokens),
                ),
                latency_ms=(time.monotonic() - started) * 1000,
                attempts=attempts,
            )
        return self._failed(
            handle,
            request.model,
            "unavailable",
            f"gave up after {attempts} attempts: {reason}",
            attempts=attempts,
            alias=alias,
            started=started,
        )

    async def _once(self, handle: str, request: ChatRequest, alias: ModelAlias, key: str) -> ChatResponse:
        if alias.provider == "local":
            return await self._call_local(request, alias)
        if alias.api_key_env and not key:
            raise _Transient(f"this host has no key for {request.model!r} ({alias.api_key_env} is not set)")
        headers = {"Idempotency-Key": handle}
        if alias.provider == "anthropic":
            url = f"{alias.url}/v1/messages"
            body = anthropic_request(request, model=alias.model, max_output_tokens=alias.max_output_tokens)
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if key:
                headers["x-api-key"] = key
        else:
            url = f"{alias.url}/chat/completions"
            body = openai_request(request, model=alias.model, max_output_tokens=alias.max_output_tokens)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        slots = self._slots.setdefault(alias.url, asyncio.Semaphore(alias.concurrency))
        try:
            async with slots:
                response = await self._client.post(url, json=body, headers=headers, timeout=alias.timeout_s)
        except httpx.TimeoutException:
            raise _Transient(f"{alias.provider} did not answer within {alias.timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise _Transient(f"cannot reach {alias.provider}: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Transient(
                f"{alias.provider} answered {status}: {self._text(response, key)}", _retry_after(response)
            )
        if status in (401, 403):
            raise _Final("unavailable", f"{alias.provider} refused this host's key ({status})")
        if status != 200:
            raise _Final(
                "invalid", f"{alias.provider} refused the request ({status}): {self._text(response, key)}"
            )
        try:
            doc: Any = response.json()
            if alias.provider == "anthropic":
                chat = anthropic_response(doc, requested=alias.model)
            else:
                chat = openai_response(doc, requested=alias.model)
        except (ValueError, WireError) as exc:
            raise _Transient(f"{alias.provider} sent an answer dagr cannot read: {exc}") from None
        return _redacted(chat, key)

    async def _call_local(self, request: ChatRequest, alias: ModelAlias) -> ChatResponse:
        slots = self._slots.setdefault(f"local:{alias.model}", asyncio.Semaphore(alias.concurrency))
        try:
            async with slots:
                return await asyncio.wait_for(
                    self._local.chat(request, model=alias.model, max_output_tokens=alias.max_output_tokens),
                    timeout=alias.timeout_s,
                )
        except LocalModelError as exc:
            raise _Final(exc.kind, exc.reason) from None
        except TimeoutError:
            # The thread finishes its call in the background; the next waits for its lock.
            raise _Transient(f"the local model did not answer within {alias.timeout_s} s") from None

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, _MAX_BACKOFF_S)
        delay: float = min(self._backoff_base_s * 2.0**attempt, _MAX_BACKOFF_S)
        return delay * random.uniform(0.5, 1.0)

    @staticmethod
    def _text(response: httpx.Response, key: str) -> str:
        text = str(response.text)[:_MAX_ERROR_TEXT]
        return text.replace(key, "[key]") if key else text

    @staticmethod
    def _failed(
        handle: str,
        name: str,
        kind: str,
        reason: str,
        *,
        attempts: int = 0,
        alias: ModelAlias | None = None,
        started: float | None = None,
    ) -> ModelAnswer:
        return ModelAnswer(
            resolution=Resolution(handle, "model", error=reason, error_kind=kind, source=name),
            alias=name,
            provider=alias.provider if alias else "",
            model=alias.model if alias else "",
            latency_ms=(time.monotonic() - started) * 1000 if started is not None else 0.0,
            attempts=attempts,
        )


def _redacted(chat: ChatResponse, key: str) -> ChatResponse:
    """The answer with the key taken out wherever a provider (compromised, or echoing a prompt
    injected with it) put it: the agent must never hold it."""
    if not key or not _mentions(chat, key):
        return chat

    def clean(text: str) -> str:
        return text.replace(key, "[key]")

    calls = tuple(
        replace(c, id=clean(c.id), name=clean(c.name), arguments_json=clean(c.arguments_json))
        for c in chat.tool_calls
    )
    return replace(chat, text=clean(chat.text), tool_calls=calls, model=clean(chat.model))


def _mentions(chat: ChatResponse, key: str) -> bool:
    fields = [chat.text, chat.model, *(f for c in chat.tool_calls for f in (c.id, c.name, c.arguments_json))]
    return any(key in f for f in fields)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
