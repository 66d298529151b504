"""The host functions an agent imports: dagr's contract and WASI, checked, counted and buffered.

Every dagr call is checked against the invocation's capabilities and quotas, and either recorded
as a buffered effect or answered with an ``error`` value. WASI is the host's own (``_wasi.py``).
Nothing here touches NATS.

Every function is declared with its exact WIT signature (``_types`` text): the linker takes host
functions untyped, so ``_validate.py`` compares each import of a component with these before the
component is accepted, and the functions below can trust the shapes of their arguments. Enum and
variant arguments are still decoded strictly: anything unknown is refused, never defaulted.

Control flow out of a host function (suspend, exit, a wait past the deadline, a host bug) is
recorded on the Recorder first, then the guest is stopped by raising ``WasmtimeError``: wasmtime-py
turns that into a trap without touching its process-global ``LAST_EXCEPTION`` (shared by all
threads, see RECIPES.md), and the runner decides the outcome from the Recorder, never from the
exception object.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, cast

from wasmtime import WasmtimeError
from wasmtime.component import Linker, Record, ResourceType, Variant

from .. import CONTRACTS
from ..chat import ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, ToolDefinition
from ..invocation import (
    Await,
    ChildReply,
    Effect,
    HttpCall,
    HttpRequest,
    Invocation,
    LogLine,
    ModelCall,
    Publish,
    RepliesConsumed,
    Resolution,
    Resumed,
    Scope,
    SignalSend,
    Spawn,
    StateDelete,
    StatePut,
    StateUnavailable,
    Suspend,
    child_instance_id,
    http_handle,
    model_handle,
    signal_handle,
)
from ..policy import (
    MAX_SPAWN_DEPTH,
    WakeRefused,
    grant_form,
    is_reserved_subject,
    is_valid_signal_name,
    is_valid_subject,
    resolve_wake,
)
from ._calls import add_host_func
from ._memory import MeteredMemories
from ._wasi import RESOURCE_IDS, WASI_INTERFACES, WASI_VERSION, Interface, WasiCall, WasiTable, wasi_impl

__all__ = [
    "CONTRACT_INTERFACES",
    "HANDLERS",
    "Recorder",
    "build_linker",
    "current_recorder",
    "reply_record",
    "resolution_record",
    "wit_record",
]

_PACKAGE = CONTRACTS[0].split("@")[0]
_V1, _V2, _V3 = (c.split("@")[1] for c in CONTRACTS)
#: A handle as this host issues them: a child's id, ``http-<hex>``, ``model-<hex>`` or ``signal-<name>``.
_HANDLE = re.compile(r"[0-9a-f]{20}|(?:http|model)-[0-9a-f]{20}|signal-[a-z0-9][a-z0-9_-]{0,62}")
_ROLES = ("system", "user", "assistant", "tool")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_TOOLS = 128
_MAX_STOPS = 8
_INSTANCE_ID = re.compile(r"[0-9a-f]{20}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
_MAX_HEADERS = 64
_MAX_AWAIT_HANDLES = 256
# A full match of the whole key (``re.match`` with ``$`` would let a trailing newline through).
_KEY = re.compile(r"[A-Za-z0-9_\-=/]+(?:\.[A-Za-z0-9_\-=/]+)*")
_MAX_KEY = 200
_LEVELS = ("debug", "info", "warn", "error")
_SCOPES = ("instance", "specialist")

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
        self.http_calls = 0
        self.model_calls = 0
        #: Overlay of this invocation's own writes: reads see them (None: deleted).
        self.overlay: dict[tuple[Scope, str], bytes | None] = {}
        #: Revision of each key read from the view, for the commit's conflict check.
        self.reads: dict[tuple[Scope, str], int] = {}
        self.suspended: Suspend | Await | None = None
        #: The refusal of the most recent host call, if it was refused: (kind, message).
        self.last_refusal: tuple[str, str] | None = None
        self.host_fault: str | None = None
        self.replies_read = False
        #: Linear memory accounting, when the engine measures it.
        self.memory: MeteredMemories | None = None
        #: Why a host call stopped the guest (kind: deadline, quota, exit, trap; message), if one did.
        self.stopped: tuple[str, str] | None = None
        #: The WASI resources of this invocation; its deadline bounds every wait.
        self.wasi = WasiTable(deadline_ns=time.monotonic_ns() + invocation.limits.timeout_ms * 1_000_000)
        self._partial: dict[str, str] = {"stdout": "", "stderr": ""}

    # -- accounting -------------------------------------------------------------------------

    def begin_call(self) -> Variant | None:
        """Count a host call; an error value if the quota is spent."""
        self.host_calls += 1
        self.last_refusal = None
        if self.host_calls > self.limits.max_host_calls:
            return self.refuse("quota-exceeded", f"more than max_host_calls={self.limits.max_host_calls}")
        return None

    def stop(self, kind: str, message: str) -> None:
        self.stopped = (kind, message)

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

    def charge_key(self, scope: Scope, key: str) -> Variant | None:
        """Count a write to a key not written before in this invocation."""
        if (scope, key) not in self.overlay and len(self.overlay) >= self.limits.max_state_writes:
            return self.refuse(
                "quota-exceeded", f"more than max_state_writes={self.limits.max_state_writes} distinct keys"
            )
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

    def check_scope(self, scope: str) -> Variant | None:
        if scope not in _SCOPES:
            return self.refuse("invalid", f"unknown state scope {scope[:40]!r}")
        if scope == "specialist" and not self.invocation.capabilities.allows_shared_state():
            return self.refuse("denied", "shared (specialist) state is not granted: grants.kv_scope")
        return None

    def check_key(self, scope: str, key: str) -> Variant | None:
        if (refused := self.check_scope(scope)) is not None:
            return refused
        if not key or len(key) > _MAX_KEY or not _KEY.fullmatch(key):
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
    if (refused := rec.charge_key(scope, key)) is not None:
        return refused
    if (refused := rec.charge_write(len(key) + len(value))) is not None:
        return refused
    rec.overlay[(scope, key)] = value
    rec.effects.append(StatePut(scope, key, value))
    return None


def _state_delete(rec: Recorder, scope: Scope, key: str) -> Any:
    if (refused := rec.check_key(scope, key)) is not None:
        return refused
    if (refused := rec.charge_key(scope, key)) is not None:
        return refused
    rec.overlay[(scope, key)] = None
    rec.effects.append(StateDelete(scope, key))
    return None


def _state_list_keys(rec: Recorder, scope: Scope, prefix: str) -> Any:
    if (refused := rec.check_scope(scope)) is not None:
        return refused
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
    if is_reserved_subject(subject):
        return rec.refuse("denied", f"{subject!r} belongs to the runtime; no grant reaches it")
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
        if is_reserved_subject(reply_to):
            return rec.refuse("denied", f"reply-to {reply_to!r} belongs to the runtime; no grant reaches it")
        if not rec.invocation.capabilities.allows_publish(reply_to):
            return rec.refuse("denied", f"reply-to {reply_to!r} is not granted: grants.publish")
    if rec.spawns >= rec.limits.max_spawns:
        return rec.refuse("quota-exceeded", f"more than max_spawns={rec.limits.max_spawns}")
    if rec.invocation.spawn_depth + 1 > MAX_SPAWN_DEPTH:
        depth = rec.invocation.spawn_depth + 1
        return rec.refuse("quota-exceeded", f"a child would be at depth {depth}, past {MAX_SPAWN_DEPTH}")
    left = rec.invocation.tree_spawns_left
    if left is not None and rec.spawns >= left:
        return rec.refuse(
            "quota-exceeded",
            "the spawn tree has used its budget of instances "
            f"(limits.max_tree_instances={rec.limits.max_tree_instances})",
        )
    if (refused := rec.charge_write(len(specialist) + len(context.encode()))) is not None:
        return refused
    child_id = child_instance_id(rec.invocation.task_id, rec.spawns)
    rec.spawns += 1
    rec.effects.append(Spawn(child_id, specialist, context, reply_to))
    return child_id


def reply_record(reply: ChildReply) -> Record:
    outcome: bytes | str = reply.ok if reply.ok is not None else (reply.error or "")
    return wit_record(child_id=reply.child_id, specialist=reply.specialist, outcome=outcome)


def _suspend(rec: Recorder, when: Variant, resume_context: str) -> Any:
    if when.tag not in ("at-unix-ms", "after-ms") or not isinstance(when.payload, int):
        return rec.refuse("invalid", f"unknown wake-time {str(when.tag)[:40]!r}")
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


def resolution_record(resolution: Resolution) -> Record:
    """A stored result as the contract's ``resolution`` record (0.2.0 and later; only a 0.3.0
    agent can have a model's answer)."""
    value: Variant
    if resolution.kind == "child":
        outcome = resolution.ok if resolution.ok is not None else (resolution.error or "")
        value = Variant("child", outcome)
    elif resolution.kind == "signal":
        value = Variant("signal", resolution.ok or b"")
    elif resolution.kind == "model":
        if resolution.chat is not None:
            value = Variant("model", _chat_response_record(resolution.chat))
        else:
            kind = resolution.error_kind if resolution.error_kind in _ERROR_CASES else "unavailable"
            value = Variant("model", _error(kind, resolution.error or "the model call failed"))
    elif resolution.response is not None:
        r = resolution.response
        value = Variant("http", wit_record(status=r.status, headers=list(r.headers), body=r.body))
    else:
        kind = resolution.error_kind if resolution.error_kind in _ERROR_CASES else "unavailable"
        value = Variant("http", _error(kind, resolution.error or "the call failed"))
    return wit_record(handle=resolution.handle, value=value)


def _read_inbox(rec: Recorder) -> list[Resolution] | Variant:
    try:
        inbox = list(rec.invocation.inbox)
    except StateUnavailable as exc:
        return rec.refuse("unavailable", f"inbox unavailable: {exc}")
    if inbox and not rec.replies_read:
        rec.replies_read = True
        rec.effects.append(RepliesConsumed(tuple(r.seq for r in inbox)))
    return inbox


def _replies(rec: Recorder) -> Any:
    # 0.1.0: children's replies only (an agent of that contract cannot expect anything else).
    inbox = _read_inbox(rec)
    if isinstance(inbox, Variant):
        return inbox
    return [
        reply_record(ChildReply(r.handle, r.source, ok=r.ok, error=r.error if r.ok is None else None))
        for r in inbox
        if r.kind == "child"
    ]


def _results(rec: Recorder) -> Any:
    inbox = _read_inbox(rec)
    if isinstance(inbox, Variant):
        return inbox
    return [resolution_record(r) for r in inbox]


def _await(rec: Recorder, handles: list[str], mode: Any, timeout_ms: int, resume_context: str) -> Any:
    if not handles:
        return rec.refuse("invalid", "await needs at least one handle")
    if len(handles) > _MAX_AWAIT_HANDLES:
        return rec.refuse("invalid", f"await takes at most {_MAX_AWAIT_HANDLES} handles, not {len(handles)}")
    unknown = [h for h in handles if not _HANDLE.fullmatch(h)]
    if unknown:
        return rec.refuse(
            "invalid", f"not handles this host issued: {', '.join(repr(h[:40]) for h in unknown[:5])}"
        )
    try:
        never_issued = _never_issued(rec, handles)
    except StateUnavailable as exc:
        return rec.refuse("unavailable", f"cannot tell which handles this instance holds: {exc}")
    if never_issued:
        return rec.refuse(
            "invalid",
            "never issued to this instance, or their results were read already: "
            + ", ".join(repr(h) for h in never_issued[:5]),
        )
    if mode not in ("all", "any"):
        return rec.refuse("invalid", f"unknown await mode {str(mode)[:40]!r}")
    if timeout_ms <= 0:
        return rec.refuse("invalid", "the await timeout must be positive (milliseconds)")
    try:
        deadline = resolve_wake(
            at_unix_ms=None,
            after_ms=timeout_ms,
            now_unix_ms=rec.invocation.now_unix_ms,
            max_suspend_s=rec.invocation.capabilities.max_suspend_s,
        )
    except WakeRefused as refusal:
        # A deadline past the horizon is a bad argument to await (the typed error), where
        # the same time given to suspend is a refused capability.
        return rec.refuse("invalid", refusal.reason)
    if (refused := rec.charge_write(len(resume_context.encode()) + sum(map(len, handles)))) is not None:
        return refused
    rec.suspended = Await(tuple(dict.fromkeys(handles)), mode, deadline, resume_context)
    rec.effects.append(rec.suspended)
    raise WasmtimeError(SUSPEND_TRAP)


def _never_issued(rec: Recorder, handles: list[str]) -> list[str]:
    """The handles this instance was never given (or has read the results of): awaiting them
    would only wait for the deadline. A signal's handle is anyone's to expect, at any time."""
    ledger = rec.invocation.handles
    if ledger is None:
        return []
    issued = {e.child_id for e in rec.effects if isinstance(e, Spawn) and e.reply_to is None}
    issued.update(e.handle for e in rec.effects if isinstance(e, HttpCall | ModelCall))
    event = rec.invocation.event
    # Results this invocation was given are read when it commits: nothing more comes for them.
    read = {r.handle for r in event.resolved} if isinstance(event, Resumed) else set()
    unread = set()
    if any(h not in issued for h in handles):
        unread = {r.handle for r in rec.invocation.inbox}
        if rec.replies_read:
            read |= unread
    return [
        h
        for h in handles
        if not h.startswith("signal-")
        and h not in issued
        and (h in read or (h not in unread and not ledger.knows(h)))
    ]


def _http_fetch(rec: Recorder, request: Any) -> Any:
    method = str(getattr(request, "method", "")).upper()
    url = str(getattr(request, "url", ""))
    headers = list(getattr(request, "headers", []))
    body = bytes(getattr(request, "body", b""))
    timeout_ms = int(getattr(request, "timeout-ms", 0))
    if method not in _METHODS:
        return rec.refuse("invalid", f"method {method[:20]!r} is not one of {', '.join(_METHODS)}")
    form = grant_form(url)
    if form is None:
        return rec.refuse("invalid", f"{url[:120]!r} is not an absolute http(s) URL without user info")
    if not rec.invocation.capabilities.allows_http(form):
        return rec.refuse("denied", f"fetching {form[:120]!r} is not granted: grants.http")
    if len(headers) > _MAX_HEADERS:
        return rec.refuse("invalid", f"more than {_MAX_HEADERS} headers")
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
            return rec.refuse("invalid", f"header {name[:60]!r} has a bad name or a line break in its value")
    if rec.http_calls >= rec.limits.max_http_calls:
        return rec.refuse("quota-exceeded", f"more than max_http_calls={rec.limits.max_http_calls}")
    size = len(url) + len(body) + sum(len(n) + len(v) for n, v in headers)
    if (refused := rec.charge_write(size)) is not None:
        return refused
    handle = http_handle(rec.invocation.task_id, rec.http_calls)
    rec.http_calls += 1
    call = HttpRequest(method, url, tuple((str(n), str(v)) for n, v in headers), body, max(timeout_ms, 0))
    rec.effects.append(HttpCall(handle, call))
    return handle


def _chat_response_record(chat: ChatResponse) -> Record:
    return wit_record(
        text=chat.text,
        tool_calls=[_tool_call_record(c) for c in chat.tool_calls],
        finish_reason=chat.finish_reason.value,
        usage=wit_record(input_tokens=chat.usage.input_tokens, output_tokens=chat.usage.output_tokens),
        model=chat.model,
    )


def _tool_call_record(call: ToolCall) -> Record:
    return wit_record(id=call.id, name=call.name, arguments_json=call.arguments_json)


class _BadRequest(Exception):
    """A malformed ``chat-request``; the message says which part."""


def _chat_request(request: Any) -> ChatRequest:
    """The guest's ``chat-request`` as plain data, checked part by part."""
    messages = []
    for i, m in enumerate(getattr(request, "messages", [])):
        role = str(getattr(m, "role", ""))
        if role not in _ROLES:
            raise _BadRequest(f"message {i}: role {role[:20]!r} is not one of {', '.join(_ROLES)}")
        calls = tuple(
            ToolCall(str(c.id), str(c.name), str(getattr(c, "arguments-json")))
            for c in getattr(m, "tool-calls", [])
        )
        tool_call_id = getattr(m, "tool-call-id", None)
        if role == "tool" and not tool_call_id:
            raise _BadRequest(f"message {i}: a tool message needs the tool-call-id it answers")
        messages.append(ChatMessage(cast(Role, role), tuple(map(str, m.content)), calls, tool_call_id))
    if not messages:
        raise _BadRequest("a chat request needs at least one message")
    tools = []
    for t in getattr(request, "tools", []):
        name = str(t.name)
        if not _TOOL_NAME.fullmatch(name):
            raise _BadRequest(f"tool name {name[:70]!r}: 1-64 of A-Z a-z 0-9 _ -")
        schema = _json_text(getattr(t, "parameters-json"), f"tool {name}'s parameters")
        if not isinstance(json.loads(schema), dict):
            raise _BadRequest(f"tool {name}'s parameters must be a JSON schema object")
        tools.append(ToolDefinition(name, str(t.description), schema))
    if len(tools) > _MAX_TOOLS or len({t.name for t in tools}) != len(tools):
        raise _BadRequest(f"at most {_MAX_TOOLS} tools, each name once")
    choice = getattr(request, "tool-choice", None)
    tag = getattr(choice, "tag", None)
    if tag == "named":
        tool_choice = str(getattr(choice, "payload", ""))
        if tool_choice not in {t.name for t in tools}:
            raise _BadRequest(f"tool-choice names {tool_choice[:70]!r}, which is not among the tools")
    elif tag in ("auto", "none", "required"):
        tool_choice = str(tag)
    else:
        raise _BadRequest(f"unknown tool-choice {str(tag)[:40]!r}")
    if tool_choice == "required" and not tools:
        raise _BadRequest("tool-choice required, but no tools")
    max_tokens = getattr(request, "max-output-tokens", None)
    if max_tokens is not None and max_tokens <= 0:
        raise _BadRequest("max-output-tokens must be positive")
    temperature = getattr(request, "temperature", None)
    if temperature is not None and not 0.0 <= float(temperature) <= 2.0:
        raise _BadRequest("temperature must be between 0 and 2")
    stop = tuple(str(x) for x in getattr(request, "stop", []))
    if len(stop) > _MAX_STOPS or any(not x for x in stop):
        raise _BadRequest(f"at most {_MAX_STOPS} stop sequences, none empty")
    return ChatRequest(
        model=str(getattr(request, "model", "")),
        messages=tuple(messages),
        tools=tuple(tools),
        tool_choice=tool_choice,
        max_output_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        stop=stop,
    )


def _json_text(text: Any, what: str) -> str:
    try:
        json.loads(str(text))
    except ValueError:
        raise _BadRequest(f"{what} are not JSON") from None
    return str(text)


def _model_chat(rec: Recorder, request: Any) -> Any:
    alias = str(getattr(request, "model", ""))
    if not rec.invocation.capabilities.allows_model(alias):
        return rec.refuse("denied", f"model alias {alias[:64]!r} is not granted: grants.models")
    if rec.model_calls >= rec.limits.max_model_calls:
        return rec.refuse("quota-exceeded", f"more than max_model_calls={rec.limits.max_model_calls}")
    budget = rec.invocation.model_budget
    if budget is not None and (spent := budget.refusal(queued_calls=rec.model_calls)) is not None:
        return rec.refuse("quota-exceeded", spent)
    try:
        chat = _chat_request(request)
    except _BadRequest as bad:
        return rec.refuse("invalid", str(bad))
    size = _request_size(chat)
    if size > rec.limits.max_model_request_bytes:
        return rec.refuse(
            "invalid",
            f"the request is {size} bytes, over max_model_request_bytes={rec.limits.max_model_request_bytes}",
        )
    if (refused := rec.charge_write(size)) is not None:
        return refused
    handle = model_handle(rec.invocation.task_id, rec.model_calls)
    rec.model_calls += 1
    rec.effects.append(ModelCall(handle, chat))
    return handle


def _request_size(chat: ChatRequest) -> int:
    text = sum(len(c.encode()) for m in chat.messages for c in m.content)
    calls = sum(len(c.arguments_json) + len(c.name) for m in chat.messages for c in m.tool_calls)
    tools = sum(len(t.parameters_json) + len(t.description) + len(t.name) for t in chat.tools)
    return text + calls + tools + sum(map(len, chat.stop)) + 64 * len(chat.messages)


def _bad_signal_name(name: str) -> str:
    return f"signal name {name[:60]!r}: 1-63 of a-z 0-9 _ -, a letter or digit first"


def _signals_expect(rec: Recorder, name: str) -> Any:
    if not is_valid_signal_name(name):
        return rec.refuse("invalid", _bad_signal_name(name))
    return signal_handle(name)


def _signals_send(rec: Recorder, instance_id: str, name: str, data: bytes) -> Any:
    if not rec.invocation.capabilities.may_signal:
        return rec.refuse("denied", "sending signals is not granted: grants.signal")
    if not _INSTANCE_ID.fullmatch(instance_id):
        return rec.refuse("invalid", f"{instance_id[:40]!r} is not an instance id")
    if not is_valid_signal_name(name):
        return rec.refuse("invalid", _bad_signal_name(name))
    if rec.publishes >= rec.limits.max_publishes:
        return rec.refuse("quota-exceeded", f"more than max_publishes={rec.limits.max_publishes}")
    if (refused := rec.charge_write(len(name) + len(data) + 20)) is not None:
        return refused
    rec.publishes += 1
    # Whether the target's specialist is granted is checked on delivery, where it is known.
    rec.effects.append(SignalSend(instance_id, name, data))
    return None


def _log(rec: Recorder, level: str, message: str) -> None:
    if level not in _LEVELS:
        return  # an unknown level is refused (dropped); the signature check makes it unreachable
    rec.add_log(level, message)


def _config_get(rec: Recorder) -> str:
    return rec.invocation.config_text


def _identity_get(rec: Recorder) -> Record:
    inv = rec.invocation
    return wit_record(
        id=inv.instance_id, specialist=inv.specialist, parent_id=inv.parent_id, attempt=inv.attempt
    )


def _bind(fn: Callable[..., Any], *, refusable: bool) -> Callable[..., Any]:
    """Wrap a dagr host function: find the Recorder, count the call, contain host bugs."""

    def host_function(_store: Any, *args: Any) -> Any:
        rec = _current.get()
        if rec is None:
            raise WasmtimeError("dagr: host function called outside an invocation")
        if rec.suspended is not None or rec.stopped is not None:
            raise WasmtimeError(SUSPEND_TRAP)
        refused = rec.begin_call()
        if refused is not None:
            if refusable:
                return refused
            # A call that cannot say no (log): past the quota the guest is stopped, so that a flood
            # of them costs the host no more than the quota allows.
            rec.stop("quota", f"more than max_host_calls={rec.limits.max_host_calls}")
            raise WasmtimeError("dagr: host call quota")
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


def _bind_wasi(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a WASI function: the same accounting, with the invocation's WASI table at hand."""

    def wasi_function(store: Any, *args: Any) -> Any:
        rec = _current.get()
        if rec is None:
            raise WasmtimeError("dagr: host function called outside an invocation")
        if rec.suspended is not None or rec.stopped is not None:
            raise WasmtimeError(SUSPEND_TRAP)
        rec.host_calls += 1
        if rec.host_calls > rec.limits.max_host_calls:
            rec.stop("quota", f"more than max_host_calls={rec.limits.max_host_calls}")
            raise WasmtimeError("dagr: host call quota")
        call = WasiCall(rec.wasi, store, rec.output, rec.stop)
        try:
            return fn(call, *args)
        except WasmtimeError:
            raise
        except Exception:
            rec.host_fault = traceback.format_exc(limit=8)
            raise WasmtimeError(HOST_FAULT_TRAP) from None
        finally:
            call.release(args)

    wasi_function.__name__ = f"wasi_{getattr(fn, '__name__', 'fn').lstrip('_')}"
    return wasi_function


def _drop_wasi_resource(_store: Any, rep: int) -> None:
    rec = _current.get()
    if rec is not None:
        rec.wasi.drop(rep)


# Types the contract's signatures share (written as ``_types`` renders them).
_ERROR_CASES = ("denied", "quota-exceeded", "not-found", "conflict", "invalid", "unavailable")
_ERROR = (
    "variant{denied(string), quota-exceeded(string), not-found(string), conflict(string), "
    "invalid(string), unavailable(string)}"
)
_SCOPE = "enum{instance, specialist}"
_CHILD_REPLY = "record{child-id: string, specialist: string, outcome: result<list<u8>, string>}"
_MESSAGE = "record{subject: string, payload: list<u8>}"
_HEADERS = "list<tuple<string, string>>"
_RESOLUTION = (
    "record{handle: string, value: variant{child(result<list<u8>, string>), "
    f"http(result<record{{status: u16, headers: {_HEADERS}, body: list<u8>}}, {_ERROR}>), "
    "signal(list<u8>)}}"
)
_TOOL_CALL = "record{id: string, name: string, arguments-json: string}"
_CHAT_REQUEST = (
    "record{model: string, messages: list<record{role: enum{system, user, assistant, tool}, "
    f"content: list<string>, tool-calls: list<{_TOOL_CALL}>, tool-call-id: option<string>}}>, "
    "tools: list<record{name: string, description: string, parameters-json: string}>, "
    "tool-choice: variant{auto, none, required, named(string)}, max-output-tokens: option<u32>, "
    "temperature: option<f32>, stop: list<string>}"
)
_CHAT_RESPONSE = (
    f"record{{text: string, tool-calls: list<{_TOOL_CALL}>, "
    "finish-reason: enum{stop, length, tool-calls, content-filter, other}, "
    "usage: record{input-tokens: u32, output-tokens: u32}, model: string}"
)
_RESOLUTION_V3 = _RESOLUTION[: -len("}}")] + f", model(result<{_CHAT_RESPONSE}, {_ERROR}>)}}}}"
_EVENT_V1 = f"variant{{start(string), wake(string), reply({_CHILD_REPLY}), message({_MESSAGE})}}"
_EVENT_V2 = (
    f"variant{{start(string), wake(string), reply({_CHILD_REPLY}), message({_MESSAGE}), "
    f"resumed(record{{resolved: list<{_RESOLUTION}>, pending: list<string>, timed-out: bool, "
    "resume-context: string})}"
)
_EVENT_V3 = _EVENT_V2.replace(f"list<{_RESOLUTION}>", f"list<{_RESOLUTION_V3}>")
_HTTP_REQUEST = f"record{{method: string, url: string, headers: {_HEADERS}, body: list<u8>, timeout-ms: u32}}"

Table = dict[str, dict[str, tuple[Callable[..., Any], bool, str]]]

# interface -> function -> (implementation, refusable, exact signature), per contract version.
_V1_TABLE: Table = {
    "state": {
        "get": (_state_get, True, f"func(scope: {_SCOPE}, key: string) -> result<list<u8>, {_ERROR}>"),
        "put": (
            _state_put,
            True,
            f"func(scope: {_SCOPE}, key: string, value: list<u8>) -> result<_, {_ERROR}>",
        ),
        "delete": (_state_delete, True, f"func(scope: {_SCOPE}, key: string) -> result<_, {_ERROR}>"),
        "list-keys": (
            _state_list_keys,
            True,
            f"func(scope: {_SCOPE}, prefix: string) -> result<list<string>, {_ERROR}>",
        ),
    },
    "messaging": {
        "publish": (_publish, True, f"func(subject: string, payload: list<u8>) -> result<_, {_ERROR}>"),
    },
    "swarm": {
        "spawn": (
            _spawn,
            True,
            "func(specialist: string, context: string, reply-to: option<string>) "
            f"-> result<string, {_ERROR}>",
        ),
        "replies": (_replies, True, f"func() -> result<list<{_CHILD_REPLY}>, {_ERROR}>"),
    },
    "lifecycle": {
        "suspend": (
            _suspend,
            True,
            "func(when: variant{at-unix-ms(u64), after-ms(u64)}, resume-context: string) "
            f"-> result<_, {_ERROR}>",
        ),
    },
    "log": {"log": (_log, False, "func(level: enum{debug, info, warn, error}, message: string)")},
    "config": {"get": (_config_get, False, "func() -> string")},
    "identity": {
        "get": (
            _identity_get,
            False,
            "func() -> record{id: string, specialist: string, parent-id: option<string>, attempt: u32}",
        )
    },
}
# 0.2.0: handles and await; `swarm.replies` gives way to `lifecycle.results`, which reads every kind.
_V2_TABLE: Table = {
    **_V1_TABLE,
    "swarm": {"spawn": _V1_TABLE["swarm"]["spawn"]},
    "lifecycle": {
        **_V1_TABLE["lifecycle"],
        "await": (
            _await,
            True,
            "func(handles: list<string>, mode: enum{all, any}, timeout-ms: u64, resume-context: string) "
            f"-> result<_, {_ERROR}>",
        ),
        "results": (_results, True, f"func() -> result<list<{_RESOLUTION}>, {_ERROR}>"),
    },
    "http": {"fetch": (_http_fetch, True, f"func(request: {_HTTP_REQUEST}) -> result<string, {_ERROR}>")},
    "signals": {
        "expect": (_signals_expect, True, f"func(name: string) -> result<string, {_ERROR}>"),
        "send": (
            _signals_send,
            True,
            f"func(instance-id: string, name: string, data: list<u8>) -> result<_, {_ERROR}>",
        ),
    },
}
# 0.3.0: model calls; a resolution can be a model's answer.
_V3_TABLE: Table = {
    **_V2_TABLE,
    "lifecycle": {
        **_V2_TABLE["lifecycle"],
        "results": (_results, True, f"func() -> result<list<{_RESOLUTION_V3}>, {_ERROR}>"),
    },
    "model": {"chat": (_model_chat, True, f"func(request: {_CHAT_REQUEST}) -> result<string, {_ERROR}>")},
}
_TABLES: dict[str, Table] = {_V1: _V1_TABLE, _V2: _V2_TABLE, _V3: _V3_TABLE}

#: What each dagr interface declares, per contract version (``types`` holds only type definitions).
CONTRACT_INTERFACES: dict[str, dict[str, Interface]] = {
    version: {
        f"{_PACKAGE}/{name}": Interface((), {fn: sig for fn, (_, _, sig) in functions.items()})
        for name, functions in table.items()
    }
    | {f"{_PACKAGE}/types": Interface((), {})}
    for version, table in _TABLES.items()
}
#: The handler export of each contract version: (interface name, exact signature of ``handle``).
HANDLERS: dict[str, tuple[str, str]] = {
    _V1: (f"{_PACKAGE}/handler@{_V1}", f"func(event: {_EVENT_V1}) -> result<list<u8>, string>"),
    _V2: (f"{_PACKAGE}/handler@{_V2}", f"func(event: {_EVENT_V2}) -> result<list<u8>, string>"),
    _V3: (f"{_PACKAGE}/handler@{_V3}", f"func(event: {_EVENT_V3}) -> result<list<u8>, string>"),
}


def build_linker(engine: Any) -> Linker:
    """The linker every invocation instantiates through: dagr's contract and dagr's WASI.

    Resource types are shared by name across interfaces (``pollable`` in streams is poll's).
    """
    linker = Linker(engine)
    resource_types = {name: ResourceType.host(rid) for name, rid in RESOURCE_IDS.items()}
    with linker.root() as root:
        for version, table in _TABLES.items():
            for interface, functions in table.items():
                with root.add_instance(f"{_PACKAGE}/{interface}@{version}") as instance:
                    for name, (fn, refusable, _signature) in functions.items():
                        add_host_func(instance, name, _bind(fn, refusable=refusable))
        for interface, declared in WASI_INTERFACES.items():
            with root.add_instance(f"{interface}@{WASI_VERSION}") as instance:
                for resource in declared.resources:
                    instance.add_resource(resource, resource_types[resource], _drop_wasi_resource)
                for name in declared.functions:
                    add_host_func(instance, name, _bind_wasi(wasi_impl(interface, name)))
    return linker
