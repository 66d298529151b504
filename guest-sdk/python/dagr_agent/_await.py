"""Handles and what they resolve to: children's replies, HTTP responses, signals.

``ctx.spawn``, ``ctx.http.get/post/fetch`` and ``ctx.signals.expect`` return a ``Handle`` (a
``str``: keep it in state, compare it, print it). ``ctx.await_all`` / ``ctx.await_any`` end the
invocation until they resolve; a fresh instance then gets ``on_resumed(ctx, resumed)`` with every
``Result``. Nothing runs, and nothing is paid for, while an instance waits.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import _cbor
from ._errors import from_wit, host_call
from ._model import ChatResponse

if TYPE_CHECKING:
    from wit_world.imports.types import Resolution, ResumedInfo

__all__ = ["Handle", "Http", "HttpResponse", "Result", "Resumed", "Signals"]

HandleKind = Literal["child", "http", "model", "signal"]


class Handle(str):
    """Something an instance can await; a ``str`` (the child's id for a spawn)."""

    __slots__ = ()

    @property
    def kind(self) -> HandleKind:
        if self.startswith("http-"):
            return "http"
        if self.startswith("model-"):
            return "model"
        if self.startswith("signal-"):
            return "signal"
        return "child"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n.lower() == wanted), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Result:
    """What one handle resolved to.

    ``ok`` says whether it succeeded: the child returned ``ok``, the call got a response (any
    status: check ``response.status``), the signal arrived. ``value`` is the CBOR-decoded payload
    of a child or signal (None if not CBOR; ``raw`` has the bytes), ``response`` the HTTP
    response, ``error`` the child's error message or why the call failed (``error_kind``: denied,
    invalid, unavailable...).
    """

    handle: Handle
    ok: bool
    value: Any = None
    raw: bytes | None = None
    response: HttpResponse | None = None
    #: A model call's answer (``ctx.model.chat``).
    chat: ChatResponse | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def kind(self) -> HandleKind:
        return self.handle.kind

    @classmethod
    def _from_wit(cls, resolution: Resolution) -> Result:
        from componentize_py_types import Ok
        from wit_world.imports.types import Resolved_Child, Resolved_Http, Resolved_Model

        handle = Handle(resolution.handle)
        resolved = resolution.value
        if isinstance(resolved, Resolved_Child):
            outcome = resolved.value
            if isinstance(outcome, Ok):
                raw = bytes(outcome.value)
                return cls(handle, True, value=_maybe_cbor(raw), raw=raw)
            return cls(handle, False, error=str(outcome.value))
        if isinstance(resolved, Resolved_Http):
            outcome = resolved.value
            if isinstance(outcome, Ok):
                r = outcome.value
                response = HttpResponse(r.status, tuple((n, v) for n, v in r.headers), bytes(r.body))
                return cls(handle, True, response=response, raw=response.body)
            refused = from_wit(outcome.value, "http.fetch")
            return cls(handle, False, error=refused.message, error_kind=refused.kind)
        if isinstance(resolved, Resolved_Model):
            answer = resolved.value
            if isinstance(answer, Ok):
                return cls(handle, True, chat=ChatResponse._from_wit(answer.value))
            refused = from_wit(answer.value, "model.chat")
            return cls(handle, False, error=refused.message, error_kind=refused.kind)
        raw = bytes(resolved.value)
        return cls(handle, True, value=_maybe_cbor(raw), raw=raw)


def _maybe_cbor(raw: bytes) -> Any:
    try:
        return _cbor.loads(raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Resumed:
    """Why ``on_resumed`` runs: the results (every unread one, awaited or not), the awaited
    handles still pending, whether the deadline passed, and the resume context."""

    results: tuple[Result, ...]
    pending: tuple[Handle, ...]
    timed_out: bool
    resume_context: str
    _by_handle: Mapping[str, Result] = field(default_factory=dict, repr=False)

    @classmethod
    def _from_wit(cls, info: ResumedInfo) -> Resumed:
        results = tuple(Result._from_wit(r) for r in info.resolved)
        return cls(
            results=results,
            pending=tuple(Handle(h) for h in info.pending),
            timed_out=info.timed_out,
            resume_context=info.resume_context,
            _by_handle={r.handle: r for r in results},
        )

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, handle: str) -> Result:
        """The result of ``handle`` (``KeyError`` if it has not resolved: see ``pending``)."""
        return self._by_handle[handle]

    def get(self, handle: str) -> Result | None:
        return self._by_handle.get(handle)


class Http:
    """``ctx.http``: outbound calls the host makes after this invocation commits.

    Each returns a handle at once; await it for the response. The URL must match a pattern in the
    manifest's ``[[grants.http]]``; headers may hold ``{{secret:NAME}}``, which the host fills in
    only for a URL that grant allows the secret for. The secret never enters the sandbox.
    """

    __slots__ = ()

    def get(self, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 0) -> Handle:
        return self.fetch("GET", url, headers=headers, timeout_s=timeout_s)

    def post(
        self,
        url: str,
        *,
        json: object = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 0,
    ) -> Handle:
        """POST ``json`` (encoded, with its content type) or ``data`` (bytes or text) to ``url``."""
        all_headers = dict(headers or {})
        if json is not None:
            body = _json.dumps(json).encode()
            all_headers.setdefault("Content-Type", "application/json")
        else:
            body = data.encode() if isinstance(data, str) else (data or b"")
        return self.fetch("POST", url, headers=all_headers, body=body, timeout_s=timeout_s)

    def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout_s: float = 0,
    ) -> Handle:
        from wit_world.imports import http
        from wit_world.imports.types import HttpRequest

        request = HttpRequest(
            method=method.upper(),
            url=url,
            headers=list((headers or {}).items()),
            body=bytes(body),
            timeout_ms=max(0, min(int(timeout_s * 1000), 2**32 - 1)),
        )
        return Handle(host_call(f"http.fetch({url[:80]!r})", lambda: http.fetch(request)))


class Signals:
    """``ctx.signals``: named signals (approvals, webhooks) sent by `dagr signal` or other agents."""

    __slots__ = ()

    def expect(self, name: str) -> Handle:
        """The handle that resolves when signal ``name`` reaches this instance."""
        from wit_world.imports import signals

        return Handle(host_call(f"signals.expect({name!r})", lambda: signals.expect(name)))

    def send(self, instance_id: str, name: str, value: object = None) -> None:
        """Send signal ``name`` with ``value`` (CBOR) to another instance, after this commits."""
        from wit_world.imports import signals

        data = _cbor.dumps(value)
        host_call(f"signals.send({name!r})", lambda: signals.send(instance_id, name, data))
