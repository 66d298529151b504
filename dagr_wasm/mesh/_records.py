"""What dagr stores about instances, one typed definition each: journal records, results, dead
letters and spawn-tree edges.

The commit path writes them, the client reads them, the CLI renders them; nothing else builds or
reads their CBOR. The wire form is a flat CBOR map (stable since layout 1: stored records written
by older hosts keep decoding); a record that does not decode is a ``RecordError``, never a
half-filled object. Decoding is tolerant of keys it does not know (a newer host may add some) and
strict about the types of the ones it does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cbor2

from ..budget import BudgetNode, Spend
from ..errors import RecordError
from ..invocation import LOG_LEVELS, LogLine
from ..payload import decode_map
from ..policy import Grants, Limits

if TYPE_CHECKING:  # _tasks builds tasks from records; records only read tasks
    from ._tasks import Task

__all__ = [
    "DeadLetter",
    "InstanceResult",
    "InstanceState",
    "InvocationLog",
    "JournalRecord",
    "Lineage",
    "ModelCallRecord",
    "SpawnEdge",
    "TreeNode",
]


class InstanceState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUSPENDED = "suspended"
    RETRYING = "retrying"
    FINISHED = "finished"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether the instance never runs again (its result, if any, stays readable)."""
        return self in _ENDED


_ENDED = frozenset(
    {InstanceState.FINISHED, InstanceState.FAILED, InstanceState.DEAD, InstanceState.CANCELLED}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """Where an instance sits in its spawn tree and what bounds it; enough to wake it from its
    journal alone (``dagr suspend``, a lost schedule re-created, a reply event)."""

    root: str
    parent: str | None = None
    parent_specialist: str | None = None
    parent_version: int | None = None
    reply_to: str | None = None
    depth: int = 0
    #: Grants of every ancestor, nearest first.
    ceilings: tuple[Grants, ...] = ()
    limit_ceiling: Limits | None = None
    #: The model budget of every ancestor, nearest first.
    budgets: tuple[BudgetNode, ...] = ()

    @classmethod
    def of(cls, task: Task) -> Lineage:
        return cls(
            root=task.root_id or task.instance_id,
            parent=task.parent_id,
            parent_specialist=task.parent_specialist,
            parent_version=task.parent_version,
            reply_to=task.reply_to,
            depth=task.depth,
            ceilings=task.ceilings,
            limit_ceiling=task.limit_ceiling,
            budgets=task.budgets,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationLog:
    """What one invocation cost and logged; only records that end an invocation carry it."""

    host: str = ""
    lines: tuple[LogLine, ...] = ()
    dropped_bytes: int = 0
    fuel: int | None = None
    wall_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalRecord:
    """One record of an instance's journal (``dagr.inst.<id>``); the last one is its status."""

    id: str
    specialist: str
    version: int | None
    state: InstanceState
    #: The task this record is about.
    task: str
    attempt: int
    updated_ms: int
    lineage: Lineage
    invocation: InvocationLog | None = None
    #: The result, on a record that ends the instance.
    ok: bytes | None = None
    error: str | None = None
    #: On a suspended record: when, which wake task is the pending one, with what context.
    wake_at_ms: int | None = None
    wake_task: str | None = None
    resume_context: str | None = None
    #: On a suspended record of an await: the handles, "all" or "any" (the wake is the deadline).
    awaiting: tuple[str, ...] = ()
    await_mode: str = "all"

    @classmethod
    def of(
        cls, task: Task, *, version: int | None, state: InstanceState, attempt: int, now_ms: int
    ) -> JournalRecord:
        """A record of ``task``'s instance with its lineage and nothing else (queued, running)."""
        return cls(
            id=task.instance_id,
            specialist=task.specialist,
            version=version,
            state=state,
            task=task.task_id,
            attempt=attempt,
            updated_ms=now_ms,
            lineage=Lineage.of(task),
        )

    @property
    def ended(self) -> bool:
        return self.state.ended

    def result(self) -> InstanceResult | None:
        """The instance's result, if this record ends it (a cancelled one ends with no value)."""
        if not self.ended:
            return None
        cancelled = self.state is InstanceState.CANCELLED
        return InstanceResult(
            id=self.id,
            task=self.task,
            state=self.state,
            ok=None if cancelled else self.ok,
            error="cancelled with `dagr cancel`" if cancelled else self.error,
            at_ms=self.updated_ms,
        )

    def to_doc(self) -> dict[str, Any]:
        """The flat wire form (also what ``--json`` shows, with bytes tagged)."""
        lineage = self.lineage
        doc: dict[str, Any] = {
            "id": self.id,
            "specialist": self.specialist,
            "version": self.version,
            "parent": lineage.parent,
            "root": lineage.root,
            "state": self.state.value,
            "task": self.task,
            "attempt": self.attempt,
            "reply_to": lineage.reply_to,
            "depth": lineage.depth,
            "updated_ms": self.updated_ms,
            "parent_specialist": lineage.parent_specialist,
            "parent_version": lineage.parent_version,
            "ceilings": [g.model_dump(mode="json") for g in lineage.ceilings],
            "limit_ceiling": lineage.limit_ceiling.model_dump(mode="json") if lineage.limit_ceiling else None,
            "budgets": [node.to_doc() for node in lineage.budgets],
        }
        if self.invocation is not None:
            doc.update(
                host=self.invocation.host,
                lines=[[line.level, line.message] for line in self.invocation.lines],
                dropped_bytes=self.invocation.dropped_bytes,
                fuel=self.invocation.fuel,
                wall_ms=self.invocation.wall_ms,
            )
        if self.ended or self.state is InstanceState.RETRYING:
            doc.update(ok=self.ok, error=self.error)
        if self.state is InstanceState.SUSPENDED:
            doc.update(
                wake_at_ms=self.wake_at_ms, wake_task=self.wake_task, resume_context=self.resume_context
            )
            if self.awaiting:
                doc.update(awaiting=list(self.awaiting), await_mode=self.await_mode)
        return doc

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_doc())

    @classmethod
    def decode(cls, data: bytes | None) -> JournalRecord:
        doc = _map(data, "journal record")
        try:
            lines = doc.get("lines")
            invocation = (
                InvocationLog(
                    host=_opt(doc, "host", str) or "",
                    lines=tuple(_log_line(level, message) for level, message in lines),
                    dropped_bytes=int(doc.get("dropped_bytes") or 0),
                    fuel=_opt(doc, "fuel", int),
                    wall_ms=_opt(doc, "wall_ms", (int, float)),
                )
                if isinstance(lines, list)
                else None
            )
            instance = _req(doc, "id", str)
            return cls(
                id=instance,
                specialist=_req(doc, "specialist", str),
                version=_opt(doc, "version", int),
                state=InstanceState(_req(doc, "state", str)),
                task=_opt(doc, "task", str) or "",
                attempt=int(doc.get("attempt") or 0),
                updated_ms=int(doc.get("updated_ms") or 0),
                lineage=Lineage(
                    root=_opt(doc, "root", str) or instance,
                    parent=_opt(doc, "parent", str),
                    parent_specialist=_opt(doc, "parent_specialist", str),
                    parent_version=_opt(doc, "parent_version", int),
                    reply_to=_opt(doc, "reply_to", str),
                    depth=int(doc.get("depth") or 0),
                    ceilings=tuple(Grants.model_validate(g) for g in doc.get("ceilings") or ()),
                    limit_ceiling=Limits.model_validate(doc["limit_ceiling"])
                    if doc.get("limit_ceiling")
                    else None,
                    budgets=tuple(BudgetNode.of_doc(node) for node in doc.get("budgets") or ()),
                ),
                invocation=invocation,
                ok=_opt(doc, "ok", bytes),
                error=_opt(doc, "error", str),
                wake_at_ms=_opt(doc, "wake_at_ms", int),
                wake_task=_opt(doc, "wake_task", str),
                resume_context=_opt(doc, "resume_context", str),
                awaiting=tuple(str(h) for h in doc.get("awaiting") or ()),
                await_mode=_opt(doc, "await_mode", str) or "all",
            )
        except (TypeError, ValueError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
            raise RecordError("journal record", str(exc).splitlines()[0]) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceResult:
    """How an instance ended: ``ok`` bytes, or ``error`` text."""

    id: str
    task: str
    state: InstanceState
    ok: bytes | None
    error: str | None
    at_ms: int

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "state": self.state.value,
            "ok": self.ok,
            "error": self.error,
            "at_ms": self.at_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A task the runtime gave up on (``dagr.dead.<specialist>.<task>``), or a message on a topic
    that was not a task at all (``raw``)."""

    error: str
    at_ms: int
    #: The task envelope as it was delivered (absent for a raw message).
    task: bytes | None = None
    raw: bytes | None = None
    kind: str | None = None
    attempts: int | None = None
    #: The tasks stream's sequence of a raw message.
    stream_seq: int | None = None
    #: Where it is stored; set when read back.
    seq: int = 0
    subject: str = ""

    @property
    def task_id(self) -> str:
        return self.subject.rsplit(".", 1)[-1]

    @property
    def specialist(self) -> str:
        return self.subject.split(".")[2] if self.subject.count(".") >= 3 else ""

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"error": self.error, "at_ms": self.at_ms}
        for key in ("task", "raw", "kind", "attempts", "stream_seq"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        return doc

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_doc())

    @classmethod
    def decode(cls, data: bytes | None, *, seq: int = 0, subject: str = "") -> DeadLetter:
        doc = _map(data, "dead letter")
        try:
            return cls(
                error=str(doc.get("error", "")),
                at_ms=int(doc.get("at_ms") or 0),
                task=_opt(doc, "task", bytes),
                raw=_opt(doc, "raw", bytes),
                kind=_opt(doc, "kind", str),
                attempts=_opt(doc, "attempts", int),
                stream_seq=_opt(doc, "stream_seq", int),
                seq=seq,
                subject=subject,
            )
        except (TypeError, ValueError) as exc:
            raise RecordError("dead letter", str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCallRecord:
    """One model call of an instance (``dagr.calls.<instance>``), as ``dagr logs`` shows it.

    Stored with the OpenTelemetry GenAI semantic conventions' names where they have one
    (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``...), dagr's own under ``dagr.``. The
    conversation itself (``gen_ai.input.messages``, ``gen_ai.output.messages``, in the
    conventions' parts format) only when the host's operator turns it on.
    """

    instance: str
    handle: str
    alias: str
    at_ms: int
    provider: str = ""
    request_model: str = ""
    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    duration_s: float = 0.0
    cost_usd: float = 0.0
    attempts: int = 0
    max_tokens: int | None = None
    temperature: float | None = None
    #: The WIT error case the call ended with (``error.type``), and why.
    error_type: str | None = None
    error: str | None = None
    host: str = ""
    input_messages: list[Any] | None = None
    output_messages: list[Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.request_model,
            "gen_ai.response.model": self.response_model,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.response.finish_reasons": [self.finish_reason] if self.finish_reason else [],
            "gen_ai.client.operation.duration": round(self.duration_s, 6),
            "dagr.instance": self.instance,
            "dagr.handle": self.handle,
            "dagr.model.alias": self.alias,
            "dagr.cost_usd": round(self.cost_usd, 9),
            "dagr.attempts": self.attempts,
            "dagr.host": self.host,
            "dagr.at_ms": self.at_ms,
        }
        if self.max_tokens is not None:
            doc["gen_ai.request.max_tokens"] = self.max_tokens
        if self.temperature is not None:
            doc["gen_ai.request.temperature"] = self.temperature
        if self.error_type is not None:
            doc.update({"error.type": self.error_type, "dagr.error": self.error or ""})
        if self.input_messages is not None:
            doc["gen_ai.input.messages"] = self.input_messages
        if self.output_messages is not None:
            doc["gen_ai.output.messages"] = self.output_messages
        return doc

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_doc())

    @classmethod
    def decode(cls, data: bytes | None) -> ModelCallRecord:
        doc = _map(data, "model call record")
        try:
            finish = doc.get("gen_ai.response.finish_reasons") or []
            return cls(
                instance=_req(doc, "dagr.instance", str),
                handle=_req(doc, "dagr.handle", str),
                alias=_req(doc, "dagr.model.alias", str),
                at_ms=int(doc.get("dagr.at_ms") or 0),
                provider=_opt(doc, "gen_ai.provider.name", str) or "",
                request_model=_opt(doc, "gen_ai.request.model", str) or "",
                response_model=_opt(doc, "gen_ai.response.model", str) or "",
                input_tokens=int(doc.get("gen_ai.usage.input_tokens") or 0),
                output_tokens=int(doc.get("gen_ai.usage.output_tokens") or 0),
                finish_reason=str(finish[0]) if finish else "",
                duration_s=float(doc.get("gen_ai.client.operation.duration") or 0.0),
                cost_usd=float(doc.get("dagr.cost_usd") or 0.0),
                attempts=int(doc.get("dagr.attempts") or 0),
                max_tokens=_opt(doc, "gen_ai.request.max_tokens", int),
                temperature=_opt(doc, "gen_ai.request.temperature", (int, float)),
                error_type=_opt(doc, "error.type", str),
                error=_opt(doc, "dagr.error", str),
                host=_opt(doc, "dagr.host", str) or "",
                input_messages=_opt(doc, "gen_ai.input.messages", list),
                output_messages=_opt(doc, "gen_ai.output.messages", list),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordError("model call record", str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnEdge:
    """A parent spawned a child (``dagr.tree.<parent>.<child>``), the ``index``-th of its task."""

    child: str
    specialist: str
    at_ms: int
    index: int

    def encode(self) -> bytes:
        return cbor2.dumps(
            {"child": self.child, "specialist": self.specialist, "at_ms": self.at_ms, "index": self.index}
        )

    @classmethod
    def decode(cls, data: bytes | None) -> SpawnEdge:
        doc = _map(data, "spawn edge")
        try:
            return cls(
                child=_req(doc, "child", str),
                specialist=_req(doc, "specialist", str),
                at_ms=int(doc.get("at_ms") or 0),
                index=int(doc.get("index") or 0),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordError("spawn edge", str(exc)) from None


@dataclass(frozen=True, slots=True)
class TreeNode:
    """An instance's status with its descendants (``record`` None: no journal for that id)."""

    id: str
    record: JournalRecord | None
    children: tuple[TreeNode, ...] = field(default=())
    #: What the instance spent on models itself, and with its whole subtree.
    own_spend: Spend = Spend()
    tree_spend: Spend = Spend()

    def to_doc(self) -> dict[str, Any]:
        base: dict[str, Any] = self.record.to_doc() if self.record else {"id": self.id, "state": "unknown"}
        if self.tree_spend.calls:
            base["model"] = {"own": _spend_doc(self.own_spend), "tree": _spend_doc(self.tree_spend)}
        return {**base, "children": [child.to_doc() for child in self.children]}


def _spend_doc(spend: Spend) -> dict[str, Any]:
    return {
        "calls": spend.calls,
        "gen_ai.usage.input_tokens": spend.input_tokens,
        "gen_ai.usage.output_tokens": spend.output_tokens,
        "cost_usd": round(spend.cost_usd, 9),
    }


def _log_line(level: Any, message: Any) -> LogLine:
    if level not in LOG_LEVELS or not isinstance(message, str):
        raise ValueError(f"a log line must be [level, text], got [{level!r}, {type(message).__name__}]")
    return LogLine(level, message)


def _map(data: bytes | None, what: str) -> dict[str, Any]:
    doc = decode_map(data or b"")
    if doc is None:
        raise RecordError(what, "not a CBOR map")
    return doc


def _req(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def _opt(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key!r} is {type(value).__name__}")
    return value
