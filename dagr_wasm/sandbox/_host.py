"""The host side of the contract: a linker built once, and a per-invocation ``Recorder``.

Every import of ``dagr:agent`` is a function on the linker. When the guest calls one, the function
finds the running invocation's ``Recorder`` (a ``ContextVar``: the guest calls back on the thread
that is running it), checks the call against the invocation's capabilities and quotas, and either
records it as a buffered effect or returns an ``error`` value. Nothing here touches NATS.

Control flow out of a host function (suspend, a host bug) is recorded on the Recorder first, then
the guest is stopped by raising ``WasmtimeError``: wasmtime-py turns that into a trap without
touching its process-global ``LAST_EXCEPTION`` (shared by all threads, see RECIPES.md), and the
runner decides the outcome from the Recorder, never from the exception object.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from wasmtime import WasiConfig, WasmtimeError
from wasmtime.component import Linker, Record, Variant

from .. import CONTRACT
from ..invocation import (
    ChildReply,
    Effect,
    Invocation,
    LogLine,
    Publish,
    RepliesConsumed,
    Scope,
    Spawn,
    StateDelete,
    StatePut,
    StateUnavailable,
    Suspend,
    child_instance_id,
)
from ..policy import WakeRefused, is_valid_subject, resolve_wake
from ._memory import MeteredMemories

__all__ = ["Recorder", "build_linker", "current_recorder", "reply_record", "wit_record"]

_PACKAGE, _VERSION = CONTRACT.split("@")
_KEY = re.compile(r"^[A-Za-z0-9_\-=/]+(\.[A-Za-z0-9_\-=/]+)*$")
_MAX_KEY = 200
_LEVELS = ("debug", "info", "warn", "error")

_current: ContextVar[Recorder | None] = ContextVar("dagr_recorder", default=None)

#: Messages of the traps the host raises on purpose; the runner recognises them.
SUSPEND_TRAP = "dagr: the agent suspended"
HOST_FAULT_TRAP = "dagr: host fault"


def current_recorder() -> ContextVar[Recorder | None]:
    return _current


def _error(kind: str, message: str) -> Variant:
    return Variant(kind, message)


def wit_record(**fields: Any) -> Record:
    """A WIT record value; field names use the WIT spelling (dashes), as wasmtime-py expects."""
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


class Recorder:
    """Everything one invocation did through the host, as plain data."""

    def __init__(self, invocation: Invocation) -> None:
        self.invocation = invocation
        self.limits = invocation.limits
        self.effects: list[Effect] = []
        self.logs: list[LogLine] = []
        self.log_bytes = 0
        self.log_bytes_dropped = 0
        self.host_calls = 0
        self.write_bytes = 0
        self.spawns = 0
        self.publishes = 0
        #: Overlay of this invocation's own writes: reads see them (None: deleted).
        self.overlay: dict[tuple[Scope, str], bytes | None] = {}
        #: Revision of each key read from the view, for the commit's conflict check.
        self.reads: dict[tuple[Scope, str], int] = {}
        self.suspended: Suspend | None = None
        #: The refusal of the most recent host call, if it was refused: (kind, message).
        self.last_refusal: tuple[str, str] | None = None
        self.host_fault: str | None = None
        self.replies_read = False
        #: Linear memory accounting, when the engine measures it.
        self.memory: MeteredMemories | None = None
        self._partial: dict[str, str] = {"stdout": "", "stderr": ""}

    # -- accounting -------------------------------------------------------------------------

    def begin_call(self) -> Variant | None:
        """Count a host call; an error value if the quota is spent."""
        self.host_calls += 1
        self.last_refusal = None
        if self.host_calls > self.limits.max_host_calls:
            return self.refuse("quota-exceeded", f"more than max_host_calls={self.limits.max_host_calls}")
        return None

    def refuse(self, kind: str, message: str) -> Variant:
        self.last_refusal = (kind, message)
        return _error(kind, message)

    def charge_write(self, size: int) -> Variant | None:
        if self.write_bytes + size > self.limits.max_write_bytes:
            return self.refuse(
                "quota-exceeded",
                f"writing {size} more bytes would pass max_write_bytes={self.limits.max_write_bytes}",
            )
        self.write_bytes += size
        return None

    def add_log(self, level: Any, message: str) -> None:
        size = len(message.encode("utf-8", "replace"))
        if self.log_bytes + size > self.limits.max_log_bytes:
            self.log_bytes_dropped += size
            return
        self.log_bytes += size
        self.logs.append(LogLine(level, message))

    def output(self, stream: str, data: bytes) -> None:
        """stdout/stderr of the guest, split into lines, into the same capped log."""
        text = self._partial[stream] + data.decode("utf-8", "replace")
        *lines, rest = text.split("\n")
        for line in lines:
            self.add_log(stream, line)
        if len(rest) > self.limits.max_log_bytes:
            self.add_log(stream, rest)
            rest = ""
        self._partial[stream] = rest

    def flush_output(self) -> None:
        for stream, rest in self._partial.items():
            if rest:
                self.add_log(stream, rest)
        self._partial = {"stdout": "", "stderr": ""}

    def stderr_tail(self, lines: int = 12) -> list[str]:
        return [line.message for line in self.logs if line.level == "stderr"][-lines:]

    # -- checks -----------------------------------------------------------------------------

    def check_key(self, scope: str, key: str) -> Variant | None:
        if scope == "specialist" and not self.invocation.capabilities.allows_shared_state():
            return self.refuse("denied", "shared (specialist) state is not granted: grants.kv_scope")
        if not key or len(key) > _MAX_KEY or not _KEY.match(key):
            return self.refuse(
                "invalid",
                f"bad key {key[:60]!r}: 1-{_MAX_KEY} characters of A-Za-z0-9_-=/ and inner dots",
            )
        return None


# ---------------------------------------------------------------------------------------------
# Host functions. Each takes the Recorder first; ``_bind`` finds it and guards the call.


def _state_get(rec: Recorder, scope: Scope, key: str) -> Any:
    if (refused := rec.check_key(scope, key)) is not None:
        return refused
    if (scope, key) in rec.overlay:
        value = rec.overlay[(scope, key)]
        return value if value is not None else rec.refuse("not-found", f"no value under {key!r}")
    try:
        entry = rec.invocation.state.get(scope, key)
    except StateUnavailable as exc:
        return rec.refuse("unavailable", f"state store unavailable: {exc}")
    rec.reads.setdefault((scope, key), entry.revision if entry is not None else 0)
    if entry is None or entry.value is None:
        return rec.refuse("not-found", f"no value under {key!r}")
    return entry.value


def _state_put(rec: Recorder, scope: Scope, key: str, value: bytes) -> Any:
    if (refused := rec.check_key(scope, key)) is not None:
        return refused
    if (refused := rec.charge_write(len(key) + len(value))) is not None:
        return refused
    rec.overlay[(scope, key)] = value
    rec.effects.append(StatePut(scope, key, value))
    return None


def _state_delete(rec: Recorder, scope: Scope, key: str) -> Any:
    if (refused := rec.check_key(scope, key)) is not None:
        return refused
    rec.overlay[(scope, key)] = None
    rec.effects.append(StateDelete(scope, key))
    return None


def _state_list_keys(rec: Recorder, scope: Scope, prefix: str) -> Any:
    if scope == "specialist" and not rec.invocation.capabilities.allows_shared_state():
        return rec.refuse("denied", "shared (specialist) state is not granted: grants.kv_scope")
    try:
        stored = set(rec.invocation.state.keys(scope, prefix))
    except StateUnavailable as exc:
        return rec.refuse("unavailable", f"state store unavailable: {exc}")
    for (s, key), value in rec.overlay.items():
        if s == scope and key.startswith(prefix):
            if value is None:
                stored.discard(key)
            else:
                stored.add(key)
    return sorted(stored)


def _publish(rec: Recorder, subject: str, payload: bytes) -> Any:
    if not is_valid_subject(subject):
        return rec.refuse("invalid", f"{subject[:80]!r} is not a valid NATS subject (no wildcards or spaces)")
    if not rec.invocation.capabilities.allows_publish(subject):
        return rec.refuse("denied", f"publishing to {subject!r} is not granted: grants.publish")
    if rec.publishes >= rec.limits.max_publishes:
        return rec.refuse("quota-exceeded", f"more than max_publishes={rec.limits.max_publishes}")
    if (refused := rec.charge_write(len(subject) + len(payload))) is not None:
        return refused
    rec.publishes += 1
    rec.effects.append(Publish(subject, payload))
    return None


def _spawn(rec: Recorder, specialist: str, context: str, reply_to: str | None) -> Any:
    if not rec.invocation.capabilities.allows_spawn(specialist):
        return rec.refuse("denied", f"spawning {specialist!r} is not granted: grants.spawn")
    known = rec.invocation.spawnable
    if known is not None and specialist not in known:
        return rec.refuse("not-found", f"no specialist named {specialist!r} is registered")
    if reply_to is not None:
        # Directing a child's result somewhere is publishing there by proxy: same grant.
        if not is_valid_subject(reply_to):
            return rec.refuse("invalid", f"reply-to {reply_to[:80]!r} is not a valid NATS subject")
        if not rec.invocation.capabilities.allows_publish(reply_to):
            return rec.refuse("denied", f"reply-to {reply_to!r} is not granted: grants.publish")
    if rec.spawns >= rec.limits.max_spawns:
        return rec.refuse("quota-exceeded", f"more than max_spawns={rec.limits.max_spawns}")
    if (refused := rec.charge_write(len(specialist) + len(context.encode()))) is not None:
        return refused
    child_id = child_instance_id(rec.invocation.task_id, rec.spawns)
    rec.spawns += 1
    rec.effects.append(Spawn(child_id, specialist, context, reply_to))
    return child_id


def reply_record(reply: ChildReply) -> Record:
    outcome: bytes | str = reply.ok if reply.ok is not None else (reply.error or "")
    return wit_record(child_id=reply.child_id, specialist=reply.specialist, outcome=outcome)


def _replies(rec: Recorder) -> Any:
    try:
        inbox = list(rec.invocation.inbox)
    except StateUnavailable as exc:
        return rec.refuse("unavailable", f"inbox unavailable: {exc}")
    if inbox and not rec.replies_read:
        rec.replies_read = True
        rec.effects.append(RepliesConsumed(tuple(r.seq for r in inbox)))
    return [reply_record(r) for r in inbox]


def _suspend(rec: Recorder, when: Variant, resume_context: str) -> Any:
    try:
        wake_at = resolve_wake(
            at_unix_ms=when.payload if when.tag == "at-unix-ms" else None,
            after_ms=when.payload if when.tag == "after-ms" else None,
            now_unix_ms=rec.invocation.now_unix_ms,
            max_suspend_s=rec.invocation.capabilities.max_suspend_s,
        )
    except WakeRefused as refusal:
        return rec.refuse(refusal.kind, refusal.reason)
    if (refused := rec.charge_write(len(resume_context.encode()))) is not None:
        return refused
    rec.suspended = Suspend(wake_at, resume_context)
    rec.effects.append(rec.suspended)
    # Ends the invocation: the guest cannot run on after suspending.
    raise WasmtimeError(SUSPEND_TRAP)


def _log(rec: Recorder, level: str, message: str) -> None:
    rec.add_log(level if level in _LEVELS else "info", message)


def _config_get(rec: Recorder) -> str:
    return rec.invocation.config_text


def _identity_get(rec: Recorder) -> Record:
    inv = rec.invocation
    return wit_record(
        id=inv.instance_id, specialist=inv.specialist, parent_id=inv.parent_id, attempt=inv.attempt
    )


def _bind(fn: Callable[..., Any], *, refusable: bool) -> Callable[..., Any]:
    """Wrap a host function: find the Recorder, count the call, contain host bugs."""

    def host_function(_store: Any, *args: Any) -> Any:
        rec = _current.get()
        if rec is None:
            raise WasmtimeError("dagr: host function called outside an invocation")
        if rec.suspended is not None:
            raise WasmtimeError(SUSPEND_TRAP)
        refused = rec.begin_call()
        if refused is not None:
            if refusable:
                return refused
            return None  # log: over quota, the line is dropped
        try:
            return fn(rec, *args)
        except WasmtimeError:
            raise
        except Exception:
            # A bug on our side: never let it look like the guest's fault, never let it escape
            # through wasmtime-py's shared exception slot.
            rec.host_fault = traceback.format_exc(limit=8)
            raise WasmtimeError(HOST_FAULT_TRAP) from None

    host_function.__name__ = f"dagr_{fn.__name__.lstrip('_')}"
    return host_function


_INTERFACES: dict[str, dict[str, tuple[Callable[..., Any], bool]]] = {
    "state": {
        "get": (_state_get, True),
        "put": (_state_put, True),
        "delete": (_state_delete, True),
        "list-keys": (_state_list_keys, True),
    },
    "messaging": {"publish": (_publish, True)},
    "swarm": {"spawn": (_spawn, True), "replies": (_replies, True)},
    "lifecycle": {"suspend": (_suspend, True)},
    "log": {"log": (_log, False)},
    "config": {"get": (_config_get, False)},
    "identity": {"get": (_identity_get, False)},
}

#: The import names the host provides, e.g. ``dagr:agent/state@0.1.0``.
PROVIDED_INTERFACES = frozenset(f"{_PACKAGE}/{name}@{_VERSION}" for name in (*_INTERFACES, "types"))
HANDLER_INTERFACE = f"{_PACKAGE}/handler@{_VERSION}"


def build_linker(engine: Any) -> Linker:
    """The linker every invocation instantiates through: WASI without authority, plus dagr."""
    linker = Linker(engine)
    # WASI p2 is needed by componentize-py guests for their runtime. What it can reach is decided
    # per Store by the WasiConfig (see ``wasi_config``): no files, env, args, stdin or network.
    linker.add_wasip2()
    with linker.root() as root:
        for interface, functions in _INTERFACES.items():
            with root.add_instance(f"{_PACKAGE}/{interface}@{_VERSION}") as instance:
                for name, (fn, refusable) in functions.items():
                    instance.add_func(name, _bind(fn, refusable=refusable))
    return linker


def wasi_config(rec: Recorder) -> WasiConfig:
    """An empty WASI context: no preopens, environment, args or stdin; output goes to the log."""
    config = WasiConfig()
    config.stdout_custom = lambda data: rec.output("stdout", data)
    config.stderr_custom = lambda data: rec.output("stderr", data)
    return config
