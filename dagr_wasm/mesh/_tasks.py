"""Task envelopes: what travels on a specialist's topic to make one invocation happen.

A task is CBOR in the message body with the header ``Dagr-Task: 1``. Its id is deterministic for
everything the runtime publishes itself (a hash of the parent task id and the spawn index, of the
suspending task for a wake, of the child task for a reply event), so that a replayed publish is
recognised by ``Nats-Msg-Id`` and the ids of effects derived from it stay stable.

A message on a topic *without* the header (say ``nats pub agents.specialist.echo hello``) is a
start task for a new instance whose context is the payload text; its ids come from the stream
sequence, so a redelivery still names the same instance.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import cbor2

from ..budget import BudgetNode
from ..chat import ChatRequest, request_doc, request_of, response_doc, response_of
from ..invocation import (
    ChildReply,
    Event,
    HttpRequest,
    HttpResponse,
    Message,
    Reply,
    Resolution,
    Start,
    Wake,
)
from ..payload import decode_map
from ..policy import Grants, Limits, is_reserved_subject, is_valid_subject

if TYPE_CHECKING:
    from ._records import JournalRecord, Lineage

__all__ = [
    "SENT_HEADER",
    "TASK_HEADER",
    "Task",
    "TaskError",
    "decode_resolution",
    "decode_task",
    "encode_inbox_entry",
    "encode_resolution",
    "encode_start_request",
    "encode_task",
    "new_instance_id",
    "start_instance_id",
    "start_request",
    "wake_from_record",
]

TASK_HEADER = "Dagr-Task"
#: On a wake left on an instance's schedule subject once a poke has sent it: it cancels the
#: deadline's schedule and is not itself pending (``_host.py``, ``_poke``).
SENT_HEADER = "Dagr-Wake-Sent"
#: Task and instance ids become parts of subjects and KV keys: a strict alphabet, matched whole.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FORMAT = 1
#: Deeper spawn trees are refused: every level adds a grant ceiling to carry.
MAX_DEPTH = 32

#: start, wake, reply, message: events an instance runs. poke: check whether an awaiting instance
#: can wake now. signal, http, model: a result to store in an instance's inbox (an http or model
#: task makes the call first). Only the first four run agent code.
TaskKind = Literal["start", "wake", "reply", "message", "poke", "signal", "http", "model"]
_KINDS = ("start", "wake", "reply", "message", "poke", "signal", "http", "model")


class TaskError(ValueError):
    """A message on a topic that is not a usable task."""


def new_instance_id() -> str:
    """A fresh random instance id (20 hex characters, like the deterministic child ids)."""
    return secrets.token_hex(10)


def _derived_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    task_id: str
    kind: TaskKind
    instance_id: str
    specialist: str
    #: The specialist version this instance is pinned to (None: the current one, fixed at first run).
    version: int | None = None
    parent_id: str | None = None
    parent_specialist: str | None = None
    parent_version: int | None = None
    root_id: str = ""
    reply_to: str | None = None
    context: str = ""
    subject: str = ""
    payload: bytes = b""
    reply: ChildReply | None = None
    #: Grants of every ancestor, nearest first: a child never gets more than its parent.
    ceilings: tuple[Grants, ...] = ()
    limit_ceiling: Limits | None = None
    #: The model budget of every ancestor, nearest first: the instance's calls count against each.
    budgets: tuple[BudgetNode, ...] = ()
    created_ms: int = 0
    depth: int = 0
    #: A wake that ends an await: the handles and the mode (the wake itself is its deadline).
    awaiting: tuple[str, ...] = ()
    await_mode: str = "all"
    #: An http task: the call's handle and request (placeholders, never secrets, in its headers).
    handle: str = ""
    http_request: HttpRequest | None = None
    #: A model task: the call (an alias, never a provider's key).
    chat_request: ChatRequest | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self) -> Event:
        if self.kind == "start":
            return Start(self.context)
        if self.kind == "wake":
            return Wake(self.context)
        if self.kind == "reply":
            if self.reply is None:
                raise TaskError("a reply task without a reply")
            return Reply(self.reply)
        return Message(self.subject, self.payload)

    def pinned(self, version: int) -> Task:
        return replace(self, version=version)

    def with_lineage(self, lineage: Lineage) -> Task:
        """This task with the instance's own lineage, from its journal.

        A reply event is built by the child, which knows its parent's id but not the parent's
        own parent, reply-to, ceilings or limits: the parent's journal does.
        """
        return replace(
            self,
            parent_id=lineage.parent,
            parent_specialist=lineage.parent_specialist,
            parent_version=lineage.parent_version,
            root_id=lineage.root,
            reply_to=lineage.reply_to,
            ceilings=lineage.ceilings,
            limit_ceiling=lineage.limit_ceiling,
            budgets=lineage.budgets,
            depth=lineage.depth,
        )

    def budget_chain(self, limits: Limits) -> tuple[BudgetNode, ...]:
        """The instance's own budget (from the limits it runs under) and every ancestor's."""
        return (BudgetNode(self.instance_id, limits.model_budget), *self.budgets)


def encode_task(task: Task) -> bytes:
    doc: dict[str, Any] = {
        "v": _FORMAT,
        "id": task.task_id,
        "kind": task.kind,
        "instance": task.instance_id,
        "specialist": task.specialist,
        "version": task.version,
        "parent": task.parent_id,
        "parent_specialist": task.parent_specialist,
        "parent_version": task.parent_version,
        "root": task.root_id or task.instance_id,
        "reply_to": task.reply_to,
        "context": task.context,
        "subject": task.subject,
        "payload": task.payload,
        "ceilings": [g.model_dump(mode="json") for g in task.ceilings],
        "limit_ceiling": task.limit_ceiling.model_dump(mode="json") if task.limit_ceiling else None,
        "budgets": [node.to_doc() for node in task.budgets],
        "created_ms": task.created_ms,
        "depth": task.depth,
    }
    if task.reply is not None:
        doc["reply"] = encode_reply(task.reply)
    if task.awaiting:
        doc.update(awaiting=list(task.awaiting), await_mode=task.await_mode)
    if task.http_request is not None:
        r = task.http_request
        doc.update(
            handle=task.handle,
            http=[r.method, r.url, [list(h) for h in r.headers], r.body, r.timeout_ms],
        )
    elif task.chat_request is not None:
        doc.update(handle=task.handle, chat=request_doc(task.chat_request))
    elif task.handle:
        doc["handle"] = task.handle
    return cbor2.dumps(doc)


def encode_reply(reply: ChildReply) -> dict[str, Any]:
    return {"child": reply.child_id, "specialist": reply.specialist, "ok": reply.ok, "error": reply.error}


def encode_inbox_entry(reply: ChildReply, task_id: str) -> bytes:
    """A child's reply as stored in its parent's inbox (``dagr.inbox.<parent>``) or published to
    its reply-to subject; ``task`` names the child's task, for readers that want to dedupe."""
    return cbor2.dumps({**encode_reply(reply), "task": task_id})


def encode_resolution(resolution: Resolution, task_id: str) -> bytes:
    """A result as stored in an instance's inbox (``dagr.inbox.<instance>``); child replies keep
    the 0.1.0 entry's fields, so either kind of reader understands them."""
    r = resolution
    doc: dict[str, Any] = {"kind": r.kind, "handle": r.handle, "ok": r.ok, "error": r.error, "task": task_id}
    if r.kind == "child":
        doc.update(child=r.handle, specialist=r.source)
    else:
        doc["source"] = r.source
    if r.kind == "model":
        doc["error_kind"] = r.error_kind
        if r.chat is not None:
            doc["chat"] = response_doc(r.chat)
    if r.kind == "http":
        doc["error_kind"] = r.error_kind
        if r.response is not None:
            doc["response"] = [r.response.status, [list(h) for h in r.response.headers], r.response.body]
    return cbor2.dumps(doc)


def decode_resolution(doc: Any, *, seq: int = 0) -> Resolution:
    if not isinstance(doc, dict):
        raise TaskError("an inbox entry must be a map")
    kind = doc.get("kind", "child")
    if kind == "child":
        reply = decode_reply(doc, seq=seq)
        return Resolution(
            reply.child_id, "child", ok=reply.ok, error=reply.error, source=reply.specialist, seq=seq
        )
    if kind not in ("http", "signal", "model"):
        raise TaskError(f"unknown inbox entry kind {kind!r}")
    response = None
    if doc.get("response") is not None:
        status, headers, body = doc["response"]
        response = HttpResponse(int(status), tuple((str(n), str(v)) for n, v in headers), bytes(body))
    ok = doc.get("ok")
    return Resolution(
        handle=str(doc["handle"]),
        kind=kind,
        ok=bytes(ok) if ok is not None else None,
        error=str(doc["error"]) if doc.get("error") is not None else None,
        error_kind=str(doc.get("error_kind") or "unavailable"),
        response=response,
        chat=response_of(doc["chat"]) if doc.get("chat") is not None else None,
        source=str(doc.get("source") or ""),
        seq=seq,
    )


def decode_reply(doc: Any, *, seq: int = 0) -> ChildReply:
    if not isinstance(doc, dict):
        raise TaskError("a reply must be a map")
    return ChildReply(
        child_id=str(doc["child"]),
        specialist=str(doc["specialist"]),
        ok=doc.get("ok"),
        error=doc.get("error"),
        seq=seq,
    )


def decode_task(
    data: bytes,
    headers: dict[str, str] | None,
    *,
    specialist: str,
    stream_seq: int,
    stream: str,
    now_ms: int,
    trusted: bool = True,
) -> Task:
    """The task in a message from ``specialist``'s task stream. Raises ``TaskError``.

    ``trusted``: the message came on a subject only hosts and admins may publish to
    (``dagr.task.<s>``, ``dagr.wake.<s>.<i>``). Anything else is a start request: a new instance
    (its ids from the stream sequence) with the specialist's own grants as its only ceiling, whatever
    its envelope claims; only its context and a reply-to outside the runtime's subjects are taken.
    """
    if not headers or headers.get(TASK_HEADER) is None:
        try:
            context = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TaskError("a plain message on a topic must be UTF-8 text (the start context)") from None
        return start_request(specialist, stream=stream, stream_seq=stream_seq, context=context, now_ms=now_ms)
    if not trusted:
        return _untrusted(data, specialist, stream=stream, stream_seq=stream_seq, now_ms=now_ms)
    try:
        doc = decode_map(data)
        if doc is None or doc.get("v") != _FORMAT:
            raise TaskError(f"unknown task format {doc.get('v') if isinstance(doc, dict) else '?'}")
        kind = doc["kind"]
        if kind not in _KINDS:
            raise TaskError(f"unknown task kind {kind!r}")
        if doc["specialist"] != specialist:
            raise TaskError(f"a task for {doc['specialist']!r} on the topic of {specialist!r}")
        for field_name in ("id", "instance", "parent", "root"):
            value = doc.get(field_name)
            if value is not None and value != "" and not (isinstance(value, str) and _ID.fullmatch(value)):
                raise TaskError(f"task field {field_name!r} is not an id (1-128 of A-Za-z0-9_-)")
        reply_to = doc.get("reply_to")
        if reply_to is not None and not (isinstance(reply_to, str) and is_valid_subject(reply_to)):
            raise TaskError("task field 'reply_to' is not a valid subject")
        return Task(
            task_id=str(doc["id"]),
            kind=kind,
            instance_id=str(doc["instance"]),
            specialist=specialist,
            version=doc.get("version"),
            parent_id=doc.get("parent"),
            parent_specialist=doc.get("parent_specialist"),
            parent_version=doc.get("parent_version"),
            root_id=doc.get("root") or str(doc["instance"]),
            reply_to=doc.get("reply_to"),
            context=doc.get("context", ""),
            subject=doc.get("subject", ""),
            payload=doc.get("payload", b""),
            reply=decode_reply(doc["reply"]) if doc.get("reply") is not None else None,
            ceilings=tuple(Grants.model_validate(g) for g in doc.get("ceilings", [])),
            limit_ceiling=Limits.model_validate(doc["limit_ceiling"]) if doc.get("limit_ceiling") else None,
            budgets=tuple(BudgetNode.of_doc(node) for node in doc.get("budgets") or ()),
            created_ms=int(doc.get("created_ms", now_ms)),
            depth=int(doc.get("depth", 0)),
            awaiting=tuple(str(h) for h in doc.get("awaiting") or ()),
            await_mode="any" if doc.get("await_mode") == "any" else "all",
            handle=str(doc.get("handle") or ""),
            http_request=_decode_http(doc["http"]) if doc.get("http") is not None else None,
            chat_request=request_of(doc["chat"]) if doc.get("chat") is not None else None,
        )
    except TaskError:
        raise
    except Exception as exc:  # any decoding or validation problem: the message is not a task
        raise TaskError(f"malformed task: {exc!r}") from None


def _decode_http(value: Any) -> HttpRequest:
    method, url, headers, body, timeout_ms = value
    return HttpRequest(
        str(method), str(url), tuple((str(n), str(v)) for n, v in headers), bytes(body), int(timeout_ms)
    )


def start_request(
    specialist: str, *, stream: str, stream_seq: int, context: str, now_ms: int, reply_to: str | None = None
) -> Task:
    """A new instance asked for on a topic; its ids derive from where the request is stored, so a
    redelivery names the same instance and the requester knows it from its publish ack."""
    task_id = _derived_id(f"{stream}/{stream_seq}")
    return Task(
        task_id=task_id,
        kind="start",
        instance_id=start_instance_id(stream, stream_seq),
        specialist=specialist,
        context=context,
        reply_to=reply_to,
        created_ms=now_ms,
    )


def start_instance_id(stream: str, stream_seq: int) -> str:
    """The instance a start request stored at ``stream_seq`` of ``stream`` starts (what a
    submitter learns from its publish ack)."""
    return _derived_id(f"{_derived_id(f'{stream}/{stream_seq}')}/instance")


def encode_start_request(context: str, *, reply_to: str | None = None) -> bytes:
    """What a submitter publishes on a topic to start an instance (header ``Dagr-Task: 1``)."""
    return cbor2.dumps({"v": _FORMAT, "kind": "start", "context": context, "reply_to": reply_to})


def _untrusted(data: bytes, specialist: str, *, stream: str, stream_seq: int, now_ms: int) -> Task:
    doc = decode_map(data)
    if doc is None or doc.get("v") != _FORMAT:
        raise TaskError("a task envelope on a topic must be a start request (CBOR map, v 1)")
    if doc.get("kind", "start") != "start":
        raise TaskError(
            f"a {doc.get('kind')!r} task on a topic: only hosts send events to existing instances "
            "(on dagr.task.<specialist>); a topic takes start requests"
        )
    context, reply_to = doc.get("context", ""), doc.get("reply_to")
    if not isinstance(context, str):
        raise TaskError("a start request's context must be text")
    if reply_to is not None and not (
        isinstance(reply_to, str) and is_valid_subject(reply_to) and not is_reserved_subject(reply_to)
    ):
        raise TaskError(
            "a start request's reply_to must be a subject outside the runtime's own "
            "(dagr.>, agents.specialist.>, _INBOX.>, $...)"
        )
    return start_request(
        specialist, stream=stream, stream_seq=stream_seq, context=context, now_ms=now_ms, reply_to=reply_to
    )


def wake_from_record(record: JournalRecord, *, now_ms: int) -> Task:
    """A wake task for the instance a journal record describes (its lineage is in the record)."""
    return Task(
        task_id=_derived_id(f"{record.task}/wake/{now_ms}"),
        kind="wake",
        instance_id=record.id,
        specialist=record.specialist,
        version=record.version,
        created_ms=now_ms,
    ).with_lineage(record.lineage)


# Derived ids are hashes, not concatenations: an instance that suspends a thousand times must not
# carry a thousand suffixes in its task id.
def child_task_id(parent_task_id: str, index: int) -> str:
    return _derived_id(f"{parent_task_id}/spawn/{index}")


def wake_task_id(task_id: str) -> str:
    return _derived_id(f"{task_id}/wake")


def reply_task_id(child_task_id: str) -> str:
    return _derived_id(f"{child_task_id}/reply")


def poke_task_id(cause: str) -> str:
    """The poke that follows ``cause`` (a commit that stored a result, or began an await)."""
    return _derived_id(f"{cause}/poke")


def call_task_id(handle: str) -> str:
    """The task that makes an outbound call (HTTP or model) named ``handle``."""
    return _derived_id(f"{handle}/call")


def signal_task_id(sender_task: str, index: int) -> str:
    return _derived_id(f"{sender_task}/signal/{index}")
