"""The one seam where nats-py's errors become dagr's, as httpx maps httpcore's.

nats-py raises some thirty exception types, several of them for one cause (a server without the
dagr layout answers ``BucketNotFoundError``, ``NotFoundError`` or ``NoRespondersError`` depending on
the call). Every public operation of ``Mesh`` and ``Registry`` goes through ``nats_seam``, so a
caller (the CLI, an embedding gateway) sees only ``DagrError`` subclasses that say what is wrong
and what to do. Inside the mesh, code still catches the nats-py types it expects (a missing
message is ``NotFoundError``, a failed guard ``APIError``): the seam only translates what escapes.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ClassVar, ParamSpec, TypeVar

import nats.errors as nats_errors
import nats.js.errors as js_errors

from ..errors import DagrError, LayoutMissing, MeshFailure, PermissionDenied, QuotaExceeded

__all__ = ["Violations", "nats_seam", "nats_seam_iter", "translate"]

P = ParamSpec("P")
T = TypeVar("T")

#: JetStream API error codes that mean "the dagr layout is not there".
_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014
#: ... and "an account or server limit is reached": resources for the account (10002), insufficient
#: resources (10023), consumers (10026), streams (10027), memory (10028), storage (10047).
_LIMIT_REACHED = frozenset({10002, 10023, 10026, 10027, 10028, 10047})
_NATS_ERRORS = (nats_errors.Error, js_errors.Error)


class Violations:
    """The permission violations the server reported on one connection, as they came.

    A publish the credentials may not make is dropped by the server with an asynchronous
    ``-ERR 'Permissions Violation ...'``; the request waiting for its answer then times out. The
    seam turns such a timeout into ``PermissionDenied`` naming the subject, instead of "no answer".
    """

    _by_client: ClassVar[weakref.WeakKeyDictionary[Any, Violations]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.last: tuple[float, str] | None = None

    def note(self, message: str) -> None:
        self.last = (time.monotonic(), message)

    def recent(self, within_s: float = 15.0) -> str | None:
        if self.last is None or time.monotonic() - self.last[0] > within_s:
            return None
        return self.last[1]

    def attach(self, client: Any) -> None:
        Violations._by_client[client] = self

    @classmethod
    def of(cls, owner: Any) -> Violations | None:
        """The violations of the connection ``owner`` (a Mesh, a Registry) works on."""
        client = getattr(owner, "nc", None) or getattr(getattr(owner, "_js", None), "_nc", None)
        try:
            return cls._by_client.get(client) if client is not None else None
        except TypeError:  # not weak-referenceable: not a client
            return None


def translate(exc: BaseException, violations: Violations | None = None) -> DagrError:
    """The dagr error for a nats-py error."""
    if isinstance(exc, nats_errors.TimeoutError) and violations is not None:
        denied = violations.recent()
        if denied is not None:
            return PermissionDenied(denied)
    if isinstance(exc, js_errors.BucketNotFoundError):
        return LayoutMissing("a key-value bucket is missing")
    if isinstance(exc, js_errors.NotFoundError) and exc.err_code in (_STREAM_NOT_FOUND, _CONSUMER_NOT_FOUND):
        return LayoutMissing(f"JetStream says: {exc.description or 'not found'}")
    if isinstance(exc, nats_errors.NoRespondersError | js_errors.NoStreamResponseError):
        return LayoutMissing("nothing answers for a dagr stream")
    if isinstance(exc, js_errors.ServiceUnavailableError):
        return MeshFailure(
            "JetStream is not available on this server",
            hint="Enable it (nats-server -js), or wait for a cluster to elect its leaders.",
        )
    if isinstance(exc, nats_errors.AuthorizationError | nats_errors.InvalidUserCredentialsError):
        return MeshFailure("NATS refused the credentials", hint="Check --creds / NATS_CREDS.")
    if isinstance(exc, nats_errors.TimeoutError | nats_errors.FlushTimeoutError):
        return MeshFailure("NATS did not answer in time", hint="Try again; if it persists, check the server.")
    if isinstance(
        exc,
        nats_errors.ConnectionClosedError
        | nats_errors.NoServersError
        | nats_errors.StaleConnectionError
        | nats_errors.UnexpectedEOF
        | nats_errors.ConnectionReconnectingError,
    ):
        return MeshFailure(
            "the connection to NATS was lost", hint="Check that the server is up, then try again."
        )
    if isinstance(exc, js_errors.APIError) and exc.err_code in _LIMIT_REACHED:
        return QuotaExceeded(f"{exc.description} ({exc.err_code})")
    if isinstance(exc, js_errors.APIError):
        code = f" ({exc.err_code})" if exc.err_code else ""
        if "permission" in (exc.description or "").lower():
            return MeshFailure(f"NATS denied the operation: {exc.description}{code}", hint="Check --creds.")
        return MeshFailure(f"JetStream refused the operation: {exc.description}{code}")
    return MeshFailure(f"NATS failed: {type(exc).__name__}: {exc}")


def nats_seam(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a public async operation: nats-py errors escaping it become ``DagrError``."""

    @functools.wraps(fn)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except _NATS_ERRORS as exc:
            raise translate(exc, Violations.of(args[0]) if args else None) from exc

    return translated


def nats_seam_iter(fn: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncIterator[T]]:
    """``nats_seam`` for an async generator."""

    @functools.wraps(fn)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        try:
            async for item in fn(*args, **kwargs):
                yield item
        except _NATS_ERRORS as exc:
            raise translate(exc, Violations.of(args[0]) if args else None) from exc

    return translated
