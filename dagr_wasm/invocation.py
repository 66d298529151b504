"""The plain data that crosses the seam between the sandbox and the mesh.

An ``Invocation`` goes in; an ``Outcome`` comes out, carrying the buffered ``Effect`` list. None of
these types know about NATS or wasmtime: the sandbox consumes and produces them, the mesh stores,
sends and commits them, and neither has to import the other.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, get_args

from .budget import BudgetLeft
from .chat import ChatRequest, ChatResponse
from .policy import Capabilities, Limits

__all__ = [
    "LOG_LEVELS",
    "Await",
    "AwaitMode",
    "ChildReply",
    "Effect",
    "EmptyState",
    "ErrorKind",
    "Event",
    "GuestError",
    "HandleLedger",
    "HttpCall",
    "HttpRequest",
    "HttpResponse",
    "Invocation",
    "LogLevel",
    "LogLine",
    "Message",
    "ModelCall",
    "Outcome",
    "Publish",
    "RepliesConsumed",
    "Reply",
    "Resolution",
    "ResolutionKind",
    "Resumed",
    "Scope",
    "SignalSend",
    "Spawn",
    "Start",
    "StateDelete",
    "StateEntry",
    "StatePut",
    "StateUnavailable",
    "StateView",
    "Status",
    "Suspend",
    "Wake",
    "child_instance_id",
    "http_handle",
    "model_handle",
    "signal_handle",
]

Scope: TypeAlias = Literal["instance", "specialist"]


# ---------------------------------------------------------------------------------------------
# Events: why an invocation happens (the WIT `event` variant).


@dataclass(frozen=True, slots=True)
class Start:
    """The instance was spawned with this context."""

    context: str


@dataclass(frozen=True, slots=True)
class Wake:
    """A suspend came due; the resume context given to suspend."""

    resume_context: str


@dataclass(frozen=True, slots=True)
class ChildReply:
    """What a child's ``handle`` returned. ``seq`` is the driver's handle for marking it read."""

    child_id: str
    specialist: str
    ok: bytes | None = None
    error: str | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if (self.ok is None) == (self.error is None):
            raise ValueError("a child reply carries exactly one of ok and error")


@dataclass(frozen=True, slots=True)
class Reply:
    """A child replied (delivered as the event itself)."""

    reply: ChildReply


@dataclass(frozen=True, slots=True)
class Message:
    """A message arrived on a subject this instance listens on."""

    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An outbound HTTP call as the agent asked for it (placeholders, never secrets, in headers)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: 0: the host's default.
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


ResolutionKind: TypeAlias = Literal["child", "http", "signal", "model"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one handle resolved to, as stored in the instance's inbox.

    ``child``: ``ok`` or ``error`` is the child's outcome. ``http``: ``response``, or ``error`` with
    ``error_kind`` (a WIT error case). ``signal``: ``ok`` is the data. ``seq`` is the driver's handle
    for marking it read.
    """

    handle: str
    kind: ResolutionKind
    ok: bytes | None = None
    error: str | None = None
    error_kind: str = "unavailable"
    response: HttpResponse | None = None
    #: ``model``: the answer (None with ``error`` and ``error_kind`` when there is none).
    chat: ChatResponse | None = None
    #: The child's specialist, or the signal's name.
    source: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Resumed:
    """An await ended: every unread result, the awaited handles still pending, and why."""

    resolved: tuple[Resolution, ...]
    pending: tuple[str, ...]
    timed_out: bool
    resume_context: str


Event: TypeAlias = Start | Wake | Reply | Message | Resumed


# ---------------------------------------------------------------------------------------------
# State, as the sandbox sees it: read through a view, written as effects.


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A stored value and the revision it was read at (used to detect conflicting writers).

    ``value`` is None for a key that was deleted: it reads as absent, but its revision (that of the
    delete marker) still guards a later write.
    """

    value: bytes | None
    revision: int


class StateView(Protocol):
    """Read access to the state an invocation starts from. Called from the wasm thread.

    Implementations raise ``StateUnavailable`` when the backing store cannot answer; the guest then
    gets ``error.unavailable``.
    """

    def get(self, scope: Scope, key: str) -> StateEntry | None: ...

    def keys(self, scope: Scope, prefix: str) -> list[str]: ...


class EmptyState:
    """A ``StateView`` with nothing in it."""

    def get(self, scope: Scope, key: str) -> StateEntry | None:
        return None

    def keys(self, scope: Scope, prefix: str) -> list[str]:
        return []


class HandleLedger(Protocol):
    """The handles an instance was given in earlier invocations and has not read the results of:
    what it may await besides those its current invocation issues. Called from the wasm thread;
    raises ``StateUnavailable`` when its store cannot answer."""

    def knows(self, handle: str) -> bool: ...


class StateUnavailable(Exception):
    """Raised by a ``StateView`` that cannot reach its store; becomes ``error.unavailable``."""


# ---------------------------------------------------------------------------------------------
# Effects: what the invocation asked for, buffered until commit.


@dataclass(frozen=True, slots=True)
class StatePut:
    scope: Scope
    key: str
    value: bytes
    kind: Literal["state-put"] = "state-put"


@dataclass(frozen=True, slots=True)
class StateDelete:
    scope: Scope
    key: str
    kind: Literal["state-delete"] = "state-delete"


@dataclass(frozen=True, slots=True)
class Publish:
    subject: str
    payload: bytes
    kind: Literal["publish"] = "publish"


@dataclass(frozen=True, slots=True)
class Spawn:
    child_id: str
    specialist: str
    context: str
    reply_to: str | None
    kind: Literal["spawn"] = "spawn"


@dataclass(frozen=True, slots=True)
class Suspend:
    wake_at_unix_ms: int
    resume_context: str
    kind: Literal["suspend"] = "suspend"


AwaitMode: TypeAlias = Literal["all", "any"]


@dataclass(frozen=True, slots=True)
class Await:
    """End the invocation until ``handles`` resolve (``mode``) or ``deadline_unix_ms`` passes."""

    handles: tuple[str, ...]
    mode: AwaitMode
    deadline_unix_ms: int
    resume_context: str
    kind: Literal["await"] = "await"


@dataclass(frozen=True, slots=True)
class HttpCall:
    """An outbound call to make once the invocation commits; ``handle`` names its result."""

    handle: str
    request: HttpRequest
    kind: Literal["http-call"] = "http-call"


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A model call to make once the invocation commits; ``handle`` names its answer."""

    handle: str
    request: ChatRequest
    kind: Literal["model-call"] = "model-call"


@dataclass(frozen=True, slots=True)
class SignalSend:
    """A signal to another instance, sent once the invocation commits."""

    instance_id: str
    name: str
    data: bytes
    kind: Literal["signal-send"] = "signal-send"


@dataclass(frozen=True, slots=True)
class RepliesConsumed:
    """The agent read these inbox replies (by ``ChildReply.seq``); mark them read on commit."""

    seqs: tuple[int, ...]
    kind: Literal["replies-consumed"] = "replies-consumed"


Effect: TypeAlias = (
    StatePut
    | StateDelete
    | Publish
    | Spawn
    | Suspend
    | Await
    | HttpCall
    | ModelCall
    | SignalSend
    | RepliesConsumed
)


def child_instance_id(task_id: str, index: int) -> str:
    """The id of the ``index``-th child spawned by task ``task_id``.

    Deterministic, so that a task re-run after a crash names its children the same way and
    duplicate spawns are recognised by id instead of creating twins.
    """
    digest = hashlib.sha256(f"{task_id}/spawn/{index}".encode()).hexdigest()
    return digest[:20]


def http_handle(task_id: str, index: int) -> str:
    """The handle of the ``index``-th HTTP call of task ``task_id``: deterministic, like a child's
    id, so a re-run names its calls the same way and a stored response is reused, not re-fetched."""
    digest = hashlib.sha256(f"{task_id}/http/{index}".encode()).hexdigest()
    return f"http-{digest[:20]}"


def model_handle(task_id: str, index: int) -> str:
    """The handle of the ``index``-th model call of task ``task_id``: deterministic, so a re-run
    names its calls the same way and a stored answer is reused, never paid for twice."""
    digest = hashlib.sha256(f"{task_id}/model/{index}".encode()).hexdigest()
    return f"model-{digest[:20]}"


def signal_handle(name: str) -> str:
    """The handle of signal ``name``: one per name and instance."""
    return f"signal-{name}"


# ---------------------------------------------------------------------------------------------
# The invocation and its outcome.


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """Everything one run of one agent needs. Plain data: the driver builds it, the sandbox reads it."""

    task_id: str
    instance_id: str
    specialist: str
    event: Event
    parent_id: str | None = None
    attempt: int = 1
    config_text: str = ""
    capabilities: Capabilities = Capabilities()
    limits: Limits = Limits()
    state: StateView = field(default_factory=EmptyState)
    #: Unread results in the instance's inbox (children's replies, signals, HTTP responses).
    inbox: Sequence[Resolution] = ()
    #: Handles issued to the instance before this invocation and still unread; an await on a
    #: handle in neither it, the inbox nor this invocation is refused. None: the driver keeps no
    #: ledger, and any well-formed handle is accepted.
    handles: HandleLedger | None = None
    #: Specialists that exist, for spawn to answer not-found; None when the driver cannot tell.
    spawnable: frozenset[str] | None = None
    #: The clock the invocation runs at: ``after-ms`` suspends and the suspend horizon count from here.
    now_unix_ms: int = 0
    #: Where the instance sits in its spawn tree (the root is 0): spawns past MAX_SPAWN_DEPTH are refused.
    spawn_depth: int = 0
    #: Instances its spawn tree may still add (``limits.max_tree_instances`` less those it has);
    #: None when the driver does not count (``dagr run``).
    tree_spawns_left: int | None = None
    #: What the instance and its ancestors may still spend on models (``model.chat`` is refused
    #: quota-exceeded when a dimension is spent); None when the driver does not count.
    model_budget: BudgetLeft | None = None


class Status(enum.StrEnum):
    """How an invocation ended."""

    #: ``handle`` returned ``ok``: commit the effects, send the result.
    OK = "ok"
    #: ``lifecycle.suspend`` or ``lifecycle.await`` ended it: commit the effects, schedule the wake.
    SUSPENDED = "suspended"
    #: ``handle`` returned ``err``: a deliberate, final failure; the effects are discarded.
    FAILED = "failed"
    #: It trapped or exhausted a limit: nothing is committed; the driver may retry.
    ERROR = "error"


class ErrorKind(enum.StrEnum):
    """Why an invocation was stopped (``Status.ERROR``)."""

    TRAP = "trap"
    OUT_OF_FUEL = "out-of-fuel"
    DEADLINE = "deadline"
    MEMORY_LIMIT = "memory-limit"
    STACK_OVERFLOW = "stack-overflow"
    QUOTA = "quota"
    DENIED = "denied"
    #: An unhandled refused host call other than denied or quota (``not-found``, ``invalid``).
    REFUSED = "refused"
    INSTANTIATION = "instantiation"
    HOST = "host"

    @property
    def final(self) -> bool:
        """Whether running the same invocation again cannot help: the same call is refused again."""
        return self in (ErrorKind.DENIED, ErrorKind.REFUSED)


@dataclass(frozen=True, slots=True)
class GuestError:
    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


LogLevel = Literal["debug", "info", "warn", "error", "stdout", "stderr"]
LOG_LEVELS: frozenset[str] = frozenset(get_args(LogLevel))


@dataclass(frozen=True, slots=True)
class LogLine:
    level: LogLevel
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one invocation did, and what it cost."""

    status: Status
    result: bytes | None = None
    failure: str | None = None
    error: GuestError | None = None
    effects: tuple[Effect, ...] = ()
    #: Revision of every state key the invocation read (0: absent). Commit checks them.
    reads: tuple[tuple[Scope, str, int], ...] = ()
    fuel_used: int = 0
    wall_time_s: float = 0.0
    #: Linear memory high-water mark; None when the engine does not measure it (see docs).
    peak_memory_bytes: int | None = None
    host_calls: int = 0
    logs: tuple[LogLine, ...] = ()
    log_bytes_dropped: int = 0

    @property
    def committable(self) -> bool:
        """Whether the driver should commit the effects."""
        return self.status in (Status.OK, Status.SUSPENDED)

    @property
    def suspend(self) -> Suspend | None:
        for effect in self.effects:
            if isinstance(effect, Suspend):
                return effect
        return None

    @property
    def awaiting(self) -> Await | None:
        for effect in self.effects:
            if isinstance(effect, Await):
                return effect
        return None

    def final_state(self) -> dict[tuple[Scope, str], bytes | None]:
        """The last write to each key (None: deleted), in first-write order."""
        final: dict[tuple[Scope, str], bytes | None] = {}
        for effect in self.effects:
            if isinstance(effect, StatePut):
                final[(effect.scope, effect.key)] = effect.value
            elif isinstance(effect, StateDelete):
                final[(effect.scope, effect.key)] = None
        return final
