"""The per-invocation ``Context``: the agent's whole view of the host.

One ``Context`` is built for every call of ``handle``. It wraps the generated bindings
(``wit_world.imports.*``) so an agent works with Python values: CBOR is encoded and decoded here,
refused host calls become ``HostError`` subclasses (through ``_errors.host_call``), and times
become ``datetime`` / ``timedelta``. The bindings are imported inside the methods, never at module
level, so this module also imports on a host that has no bindings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from . import _cbor
from ._await import Handle, Http, Result, Signals
from ._errors import NotFound, host_call
from ._model import Model

if TYPE_CHECKING:
    from wit_world.imports.types import ChildReply, IdentityInfo, Level, Scope

__all__ = ["Context", "Log", "Reply", "State"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_U64_MAX = 2**64 - 1


class SuspendAccepted(BaseException):
    """The host accepted a suspend but returned instead of ending the invocation.

    The contract says a successful ``lifecycle.suspend`` never returns; should a host return
    anyway, this unwinds the agent straight to the handler wrapper, which ends the invocation.
    A ``BaseException`` so the agent's own ``except Exception`` cannot swallow it.
    """


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of a child agent, as read by ``Context.replies()`` or passed to ``on_reply``.

    ``ok`` tells whether the child returned ``ok``. Then ``raw`` is its payload and ``value`` that
    payload CBOR-decoded (``None`` if the payload is not CBOR, e.g. from a non-Python agent: use
    ``raw``). Otherwise ``error`` is the child's error message and ``value`` and ``raw`` are None.
    """

    child_id: str
    specialist: str
    ok: bool
    value: Any = None
    error: str | None = None
    raw: bytes | None = None

    @classmethod
    def _from_wit(cls, reply: ChildReply) -> Reply:
        from componentize_py_types import Ok

        outcome = reply.outcome
        if isinstance(outcome, Ok):
            raw = bytes(outcome.value)
            try:
                value = _cbor.loads(raw)
            except ValueError:
                value = None
            return cls(child_id=reply.child_id, specialist=reply.specialist, ok=True, value=value, raw=raw)
        return cls(child_id=reply.child_id, specialist=reply.specialist, ok=False, error=str(outcome.value))


class Log:
    """The instance's log (``dagr logs``). Lines beyond the invocation's quota are dropped by the host."""

    __slots__ = ()

    def debug(self, message: str) -> None:
        """Append a debug line."""
        self._log("DEBUG", message)

    def info(self, message: str) -> None:
        """Append an info line."""
        self._log("INFO", message)

    def warn(self, message: str) -> None:
        """Append a warning line."""
        self._log("WARN", message)

    def error(self, message: str) -> None:
        """Append an error line."""
        self._log("ERROR", message)

    @staticmethod
    def _log(level: Literal["DEBUG", "INFO", "WARN", "ERROR"], message: str) -> None:
        from wit_world.imports import log
        from wit_world.imports.types import Level

        lvl: Level = Level[level]
        log.log(lvl, str(message))


class State:
    """Key-value state in one scope: ``ctx.state`` (this instance) or ``ctx.shared`` (the specialist).

    Keys are 1-200 characters of ``A-Za-z0-9_-=./``. Values given to ``put`` are CBOR-encoded and
    ``get`` decodes them; ``put_bytes`` / ``get_bytes`` store raw bytes. Reads see this invocation's
    own writes; writes take effect only when the invocation commits.
    """

    __slots__ = ("_scope",)

    def __init__(self, scope: Literal["instance", "specialist"]) -> None:
        self._scope = scope

    @property
    def scope(self) -> Literal["instance", "specialist"]:
        """Which state this is: ``"instance"`` or ``"specialist"``."""
        return self._scope

    def _wit_scope(self) -> Scope:
        from wit_world.imports.types import Scope

        return Scope.INSTANCE if self._scope == "instance" else Scope.SPECIALIST

    def _call(self, name: str, key: str) -> str:
        return f"state.{name}({self._scope}, {key!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """The CBOR-decoded value under ``key``, or ``default`` when there is none.

        Raises ``ValueError`` if the stored bytes are not CBOR (read those with ``get_bytes``).
        """
        raw = self.get_bytes(key)
        if raw is None:
            return default
        try:
            return _cbor.loads(raw)
        except ValueError as exc:
            raise ValueError(
                f"{self._scope} state key {key!r} does not hold CBOR ({exc}); read it with get_bytes()"
            ) from exc

    def get_bytes(self, key: str) -> bytes | None:
        """The raw bytes under ``key``, or None when there are none."""
        from wit_world.imports import state

        scope = self._wit_scope()
        try:
            return bytes(host_call(self._call("get", key), lambda: state.get(scope, key)))
        except NotFound:
            # The contract reports a missing key as `error.not-found` rather than an option.
            return None

    def put(self, key: str, value: object) -> None:
        """Store ``value`` CBOR-encoded under ``key`` (``ValueError`` if it is not encodable)."""
        self.put_bytes(key, _cbor.dumps(value))

    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store raw bytes under ``key``."""
        from wit_world.imports import state

        scope = self._wit_scope()
        payload = bytes(data)
        host_call(self._call("put", key), lambda: state.put(scope, key, payload))

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        from wit_world.imports import state

        scope = self._wit_scope()
        host_call(self._call("delete", key), lambda: state.delete(scope, key))

    def keys(self, prefix: str = "") -> list[str]:
        """The keys that start with ``prefix``, sorted."""
        from wit_world.imports import state

        scope = self._wit_scope()
        return list(host_call(self._call("list_keys", prefix), lambda: state.list_keys(scope, prefix)))


class Context:
    """Everything an agent can do during one invocation. Built by the handler wrapper.

    Effects (state writes, publishes, spawns, a suspend) are buffered by the host and take effect
    only when the invocation ends well: by returning, or by a successful ``suspend``. Raising
    ``Fail`` or letting any other exception escape discards them.
    """

    __slots__ = ("_config", "_identity", "_results", "http", "log", "model", "shared", "signals", "state")

    def __init__(self) -> None:
        self._identity: IdentityInfo | None = None
        self._config: str | None = None
        self._results: list[Result] | None = None
        #: Outbound HTTP (``[[grants.http]]``): calls return handles to await.
        self.http = Http()
        #: Language models (``grants.models``): ``chat`` returns a handle to await.
        self.model = Model()
        #: Named signals: ``expect`` one (a handle to await), or ``send`` one to another instance.
        self.signals = Signals()
        #: This instance's private state; it follows the instance through suspends.
        self.state = State("instance")
        #: State shared by every instance of this specialist (needs ``kv_scope = "specialist"``).
        self.shared = State("specialist")
        #: The instance's log.
        self.log = Log()

    # -- identity and configuration, fetched once per invocation ---------------------------------

    def _who(self) -> IdentityInfo:
        if self._identity is None:
            from wit_world.imports import identity

            self._identity = identity.get()
        return self._identity

    @property
    def id(self) -> str:
        """This instance's id; stable across suspends and wakes."""
        return self._who().id

    @property
    def specialist(self) -> str:
        """The specialist (registered agent type) this instance runs as."""
        return self._who().specialist

    @property
    def parent_id(self) -> str | None:
        """The id of the instance that spawned this one, or None for a root instance."""
        return self._who().parent_id

    @property
    def attempt(self) -> int:
        """1 for the first attempt at this event, 2 for the first retry, and so on."""
        return self._who().attempt

    @property
    def config(self) -> str:
        """The configuration text the specialist was registered with; empty when none."""
        if self._config is None:
            from wit_world.imports import config

            self._config = config.get()
        return self._config

    # -- messaging ------------------------------------------------------------------------------

    def publish(self, subject: str, value: object) -> None:
        """Publish ``value`` CBOR-encoded to ``subject``, delivered after the invocation commits."""
        self.publish_bytes(subject, _cbor.dumps(value))

    def publish_bytes(self, subject: str, data: bytes | bytearray | memoryview) -> None:
        """Publish raw bytes to ``subject``, delivered after the invocation commits."""
        from wit_world.imports import messaging

        payload = bytes(data)
        host_call(f"messaging.publish({subject!r})", lambda: messaging.publish(subject, payload))

    # -- swarm ----------------------------------------------------------------------------------

    def spawn(self, specialist: str, context: str, reply_to: str | None = None) -> Handle:
        """Start a child instance of ``specialist`` with ``context`` as its start event.

        Returns its handle (a ``str``: the child's id). Await it (``await_all``) to get the child's
        answer in ``on_resumed``; if this instance is not waiting when it comes, it arrives as an
        ``on_reply`` event. With ``reply_to`` the result goes to that subject instead.
        """
        from wit_world.imports import swarm

        return Handle(
            host_call(f"swarm.spawn({specialist!r})", lambda: swarm.spawn(specialist, context, reply_to))
        )

    def results(self) -> list[Result]:
        """Results in this instance's inbox not read yet (late ones of an await that timed out
        included); marked read when the invocation commits, so each is seen once."""
        if self._results is None:
            from wit_world.imports import lifecycle

            self._results = [Result._from_wit(r) for r in host_call("lifecycle.results()", lifecycle.results)]
        return list(self._results)

    def replies(self) -> list[Reply]:
        """The children's replies among ``results()``. Reading marks every unread result read
        (signals and HTTP responses too): read ``results()`` when the agent expects those."""
        return [
            Reply(r.handle, "", ok=r.ok, value=r.value, error=r.error, raw=r.raw)
            for r in self.results()
            if r.kind == "child"
        ]

    # -- waiting for things -----------------------------------------------------------------------

    def await_all(
        self, handles: list[str] | tuple[str, ...], *, timeout_s: float | timedelta, resume_context: str = ""
    ) -> NoReturn:
        """End this invocation until every one of ``handles`` resolved, or ``timeout_s`` passed;
        then ``on_resumed(ctx, resumed)`` runs in a fresh instance. Nothing runs meanwhile.

        The timeout obeys the manifest's ``max_suspend_s``. On success this call does not return.
        """
        self._await(handles, "all", timeout_s, resume_context)

    def await_any(
        self, handles: list[str] | tuple[str, ...], *, timeout_s: float | timedelta, resume_context: str = ""
    ) -> NoReturn:
        """Like ``await_all``, but resumes as soon as one handle resolved."""
        self._await(handles, "any", timeout_s, resume_context)

    def _await(
        self, handles: list[str] | tuple[str, ...], mode: str, timeout: float | timedelta, resume_context: str
    ) -> NoReturn:
        from wit_world.imports import lifecycle
        from wit_world.imports.types import AwaitMode

        if isinstance(handles, str):
            raise TypeError("await_all/await_any take a list of handles, not one handle")
        wit_mode = AwaitMode.ALL if mode == "all" else AwaitMode.ANY
        ms = _delay_ms(timeout, what="await(timeout_s")
        names = [str(h) for h in handles]
        host_call("lifecycle.await()", lambda: lifecycle.await_(names, wit_mode, ms, resume_context))
        raise SuspendAccepted()

    # -- lifecycle ------------------------------------------------------------------------------

    def suspend(
        self,
        *,
        at: datetime | None = None,
        after: float | timedelta | None = None,
        resume_context: str = "",
    ) -> NoReturn:
        """End this invocation and wake later with ``on_wake(ctx, resume_context)``.

        Give exactly one of ``at`` (a datetime; naive means UTC) or ``after`` (seconds, or a
        timedelta). The effects buffered so far are committed. On success this call does not
        return; if the host refuses (e.g. beyond the manifest's ``max_suspend_s``) it raises the
        matching ``HostError`` and the agent runs on.
        """
        from wit_world.imports import lifecycle
        from wit_world.imports.types import WakeTime_AfterMs, WakeTime_AtUnixMs

        when: WakeTime_AtUnixMs | WakeTime_AfterMs
        if (at is None) == (after is None):
            raise TypeError(
                "suspend() takes exactly one of at= (a datetime) or after= (seconds or a timedelta)"
            )
        if at is not None:
            when = WakeTime_AtUnixMs(_unix_ms(at))
        else:
            assert after is not None
            when = WakeTime_AfterMs(_delay_ms(after, what="suspend(after"))
        host_call("lifecycle.suspend()", lambda: lifecycle.suspend(when, resume_context))
        raise SuspendAccepted()


def _unix_ms(at: datetime) -> int:
    if not isinstance(at, datetime):
        raise TypeError(f"suspend(at=...) needs a datetime, not {type(at).__name__}")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ms = (at - _EPOCH) // _ONE_MS
    if ms < 0:
        raise ValueError(f"suspend(at={at.isoformat()}) is before 1970-01-01T00:00:00Z")
    return ms


def _delay_ms(after: float | timedelta, *, what: str) -> int:
    if isinstance(after, timedelta):
        ms = after // _ONE_MS
    elif isinstance(after, int | float) and not isinstance(after, bool):
        if not math.isfinite(after):
            raise ValueError(f"{what}={after!r}) must be a finite delay")
        ms = round(after * 1000)
    else:
        raise TypeError(f"{what}=...) needs seconds or a timedelta, not {type(after).__name__}")
    if ms < 0:
        raise ValueError(f"{what}={after!r}) is negative; give a delay of 0 or more")
    if ms > _U64_MAX:
        raise ValueError(f"{what}={after!r}) is too far in the future")
    return ms
