"""The exceptions an agent raises or catches, and the one seam where host errors are translated.

::

    Exception
    ├── Fail                    raised by the agent: the deliberate, final `err` result
    └── HostError               a host call was refused (the WIT `types.error` variant)
        ├── Denied              the manifest does not grant it; retrying will not help
        ├── QuotaExceeded       a per-invocation quota is used up
        ├── NotFound            the thing asked for does not exist
        ├── Conflict            a concurrent change got there first; let it propagate
        ├── Invalid             malformed arguments; retrying with the same ones will not help
        └── Unavailable         the host could not serve it now; worth retrying later

All are plain ``Exception`` subclasses so an agent can catch them. A ``HostError`` the agent does
not catch propagates out of ``handle`` and traps the instance: the host discards everything the
invocation did and retries or dead-letters the event. Only ``Fail`` becomes the ``err`` result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from wit_world.imports.types import Error as WitError

__all__ = [
    "Conflict",
    "Denied",
    "Fail",
    "HostError",
    "Invalid",
    "NotFound",
    "QuotaExceeded",
    "Unavailable",
]

_T = TypeVar("_T")


class Fail(Exception):
    """Raise to end the invocation with the ``err`` result: a deliberate, final failure.

    The host discards the invocation's buffered effects (state writes, publishes, spawns), sends
    ``message`` to the reply-to and marks the instance failed. It is not retried.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HostError(Exception):
    """A host call was refused. ``kind`` is the WIT error case (``"denied"``, ``"not-found"``...).

    ``message`` is the host's explanation and ``call`` the host function that refused (e.g.
    ``"messaging.publish('results.x')"``).
    """

    #: The WIT error case a subclass stands for.
    KIND: ClassVar[str] = ""
    #: What to do about it, appended to the message.
    HINT: ClassVar[str] = ""

    def __init__(self, kind: str, message: str, *, call: str = "") -> None:
        self.kind = kind
        self.message = message
        self.call = call
        what = f"{call} failed" if call else "host call failed"
        hint = f" {self.HINT}" if self.HINT else ""
        super().__init__(f"{what} ({kind}): {message}.{hint}")


class Denied(HostError):
    """The manifest does not grant this call (subject, specialist, scope, horizon)."""

    KIND = "denied"
    HINT = "Grant it in the [grants] table of the agent's dagr.toml; retrying will not help."

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


class QuotaExceeded(HostError):
    """A per-invocation quota (host calls, bytes written, spawns, publishes) is used up."""

    KIND = "quota-exceeded"
    HINT = "Do less per invocation, e.g. suspend and continue on wake."

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


class NotFound(HostError):
    """The thing asked for does not exist."""

    KIND = "not-found"

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


class Conflict(HostError):
    """A concurrent change got there first; the host re-runs the invocation on fresh state."""

    KIND = "conflict"
    HINT = "Let it propagate so the host re-runs the invocation."

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


class Invalid(HostError):
    """The arguments are malformed (empty key, bad subject, time in the past...)."""

    KIND = "invalid"
    HINT = "Fix the arguments; retrying with the same ones will not help."

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


class Unavailable(HostError):
    """The host could not serve the call right now."""

    KIND = "unavailable"
    HINT = "Worth retrying in a later invocation: let it propagate, or suspend and try again."

    def __init__(self, message: str, *, call: str = "") -> None:
        super().__init__(self.KIND, message, call=call)


# Keyed by the class name of the generated binding (wit_world.imports.types.Error_<Case>), so the
# mapping needs no import of the bindings.
_BY_BINDING: dict[str, type[Denied | QuotaExceeded | NotFound | Conflict | Invalid | Unavailable]] = {
    "Error_Denied": Denied,
    "Error_QuotaExceeded": QuotaExceeded,
    "Error_NotFound": NotFound,
    "Error_Conflict": Conflict,
    "Error_Invalid": Invalid,
    "Error_Unavailable": Unavailable,
}


def from_wit(error: WitError | object, call: str) -> HostError:
    """Translate a ``wit_world.imports.types.Error`` case into the matching ``HostError``."""
    message = str(getattr(error, "value", error))
    cls = _BY_BINDING.get(type(error).__name__)
    if cls is None:
        return HostError("unknown", f"{type(error).__name__}: {message}", call=call)
    return cls(message, call=call)


def host_call(call: str, fn: Callable[[], _T]) -> _T:
    """Run one host call, translating a refused call (``componentize_py_types.Err``) into a
    ``HostError``. The single seam between the bindings' error type and the SDK's."""
    from componentize_py_types import Err

    try:
        return fn()
    except Err as exc:
        raise from_wit(exc.value, call) from exc
