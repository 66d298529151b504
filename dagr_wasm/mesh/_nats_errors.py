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
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import nats.errors as nats_errors
import nats.js.errors as js_errors

from ..errors import DagrError, LayoutMissing, MeshFailure

__all__ = ["nats_seam", "nats_seam_iter", "translate"]

P = ParamSpec("P")
T = TypeVar("T")

#: JetStream API error codes that mean "the dagr layout is not there".
_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014
_NATS_ERRORS = (nats_errors.Error, js_errors.Error)


def translate(exc: BaseException) -> DagrError:
    """The dagr error for a nats-py error."""
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
            raise translate(exc) from exc

    return translated


def nats_seam_iter(fn: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncIterator[T]]:
    """``nats_seam`` for an async generator."""

    @functools.wraps(fn)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        try:
            async for item in fn(*args, **kwargs):
                yield item
        except _NATS_ERRORS as exc:
            raise translate(exc) from exc

    return translated
