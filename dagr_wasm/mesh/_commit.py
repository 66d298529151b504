"""Committing an invocation: its effects applied exactly once, then the task acked.

The protocol, for a task ``t`` whose invocation returned (or suspended, failed, or was given up on):

1. **Plan.** The outcome becomes an *outbox*: every message the invocation causes (spawned tasks,
   publishes, the reply, the wake schedule, and one journal record with the state, result, logs and
   costs), each with ``Nats-Msg-Id`` = ``<t>.o<i>``. The plan is a pure function of the task and
   the outcome.
2. **Commit point.** One write decides that ``t`` happened:
   - with state writes: an *atomic batch* on the state stream: each written key guarded by the
     revision the invocation read (``Nats-Expected-Last-Subject-Sequence``), the inbox cursor if
     replies were read, and the marker ``x.<t>`` (must not exist) holding the outbox;
   - without: the marker alone, created with a compare-and-set.
   If the marker already exists, ``t`` was committed before (a redelivery, or a late ack from a
   host that lost its lease): the *stored* outbox is replayed instead, so even a nondeterministic
   agent's effects are applied once. If a guard fails and the marker does not exist, another
   invocation changed the state first: ``CommitConflict``, and the host re-runs ``t``.
3. **Outbox.** Every message is published with its id, all at once; JetStream drops the ones it
   already has.
4. **Ack.** Last. A lost ack only causes a replay of step 3.

Atomic batches cost ~3-5 ms each on file storage, so invocations without state writes skip them,
and those with state writes that commit together share one batch (group commit, ``_batches.py``);
markers expire after a day, after the task has long been settled.
Every stored message costs the server an fsync (``sync_interval: always``), so an invocation that
returns without a parent stores two: its marker and its journal record.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError

from ..errors import CommitConflict, RuntimeFailure
from ..invocation import (
    ChildReply,
    HttpCall,
    ModelCall,
    Outcome,
    Publish,
    RepliesConsumed,
    SignalSend,
    Spawn,
    Status,
)
from ..policy import Capabilities, Grants, Limits, is_valid_subject, subject_matches
from ._batches import BatchCommit, GroupCommit, StateMsg
from ._layout import (
    AGENTS_SUBJECTS,
    MARKER_TTL_S,
    STATE_BUCKET,
    call_subject,
    cursor_key,
    dead_subject,
    inbox_subject,
    ledger_key,
    marker_key,
    record_subject,
    sched_subject,
    state_key,
    task_subject,
    tree_key,
    tree_subject,
    wake_subject,
)
from ._records import DeadLetter, InstanceState, InvocationLog, JournalRecord, SpawnEdge
from ._state import KV_PREFIX, StateReader, encode_ledger
from ._tasks import (
    Task,
    call_task_id,
    child_task_id,
    encode_inbox_entry,
    encode_task,
    poke_task_id,
    reply_task_id,
    signal_task_id,
    wake_task_id,
)

__all__ = [
    "CommitContext",
    "Committer",
    "OutMsg",
    "Outbox",
    "OutboxRefused",
    "StateMsg",
    "add_poke",
    "invocation_record",
    "iso_at",
    "plan_outbox",
]

_ELSS = "Nats-Expected-Last-Subject-Sequence"
_CONFLICT_CODES = {10071, 10164}

_PUBLISH_TIMEOUT_S = 10.0
#: How long a "does a stream capture this subject" answer is reused, and how many are kept.
_CAPTURE_TTL_S = 10.0
_MAX_KNOWN_SUBJECTS = 4096
#: Room for a message's headers and subject beside its payload.
_HEADROOM_BYTES = 1024


def _is_conflict(reply: dict[str, Any]) -> bool:
    """Whether JetStream refused a batch for a failed guard (a wrong last sequence)."""
    return int((reply.get("error") or {}).get("err_code", 0)) in _CONFLICT_CODES


def iso_at(unix_ms: int) -> str:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{unix_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class OutMsg:
    subject: str
    payload: bytes
    headers: dict[str, str]
    #: May go out as a core publish when no stream captures the subject (agent publishes, reply-to).
    core_ok: bool = False


@dataclass(slots=True)
class Outbox:
    """Every message a committed invocation causes. Stored in its commit marker, so it must fit in
    one NATS message: the embedded server allows 8 MiB (``max_payload``), the default limits keep an
    outbox well under that (results 256 KiB, writes 1 MiB, each counted at most twice)."""

    messages: list[OutMsg] = field(default_factory=list)

    def add(
        self, task_id: str, subject: str, payload: bytes, *, core_ok: bool = False, **headers: str
    ) -> None:
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        headers["Nats-Msg-Id"] = f"{task_id}.o{len(self.messages)}"
        self.messages.append(OutMsg(subject, payload, headers, core_ok))

    def encode(self) -> bytes:
        return cbor2.dumps(
            {"messages": [[m.subject, m.headers, m.payload, m.core_ok] for m in self.messages]}
        )

    @classmethod
    def decode(cls, data: bytes) -> Outbox:
        doc = cbor2.loads(data)
        return cls(messages=[OutMsg(s, p, dict(h), bool(c)) for s, h, p, c in doc["messages"]])


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitContext:
    """What the plan needs besides the task and the outcome; gathered by the host beforehand."""

    task: Task
    version: int
    attempt: int
    now_ms: int
    #: Current version of every specialist the invocation spawned (children are pinned to it).
    child_versions: dict[str, int] = field(default_factory=dict)
    #: Whether the parent is suspended: then a reply waits in its inbox instead of waking it.
    parent_suspended: bool = False
    #: The inbox cursor's revision when the invocation read its replies (0: never written).
    cursor_revision: int = 0
    #: The spawn tree's instance count (besides its root) and its revision when the run began
    #: (0, 0: never written); a run that spawns commits the new count guarded by that revision.
    tree_count: tuple[int, int] = (0, 0)
    #: The grants in force for this invocation, passed down to children as ceilings.
    own_grants: Grants | None = None
    limits: Limits | None = None
    #: Which host ran it (recorded in the logs, for operators and tests).
    host: str = ""
    #: The specialist of each instance the invocation signals (None: no such instance).
    signal_targets: dict[str, str | None] = field(default_factory=dict)
    #: The instance's handle ledger after the commit and the revision it was read at (guards the
    #: write); None: it does not change.
    ledger: tuple[frozenset[str], int] | None = None


def invocation_record(
    ctx: CommitContext,
    outcome: Outcome,
    state: InstanceState,
    *,
    ok: bytes | None = None,
    error: str | None = None,
    wake_at_ms: int | None = None,
    wake_task: str | None = None,
    resume_context: str | None = None,
) -> JournalRecord:
    """The journal record of one invocation: its state, result, log lines and costs."""
    return replace(
        JournalRecord.of(ctx.task, version=ctx.version, state=state, attempt=ctx.attempt, now_ms=ctx.now_ms),
        invocation=InvocationLog(
            host=ctx.host,
            lines=tuple(outcome.logs),
            dropped_bytes=outcome.log_bytes_dropped,
            fuel=outcome.fuel_used,
            wall_ms=round(outcome.wall_time_s * 1000, 3),
        ),
        ok=ok,
        error=error,
        wake_at_ms=wake_at_ms,
        wake_task=wake_task,
        resume_context=resume_context,
    )


def _add_reply(outbox: Outbox, ctx: CommitContext, *, ok: bytes | None, error: str | None) -> None:
    """Route the instance's result to whoever waits for it."""
    task = ctx.task
    reply = ChildReply(child_id=task.instance_id, specialist=task.specialist, ok=ok, error=error)
    body = encode_inbox_entry(reply, task.task_id)
    if task.reply_to:
        outbox.add(task.task_id, task.reply_to, body, core_ok=True, Dagr_Reply="1")
    elif task.parent_id and task.parent_specialist:
        if ctx.parent_suspended:
            outbox.add(task.task_id, inbox_subject(task.parent_id), body)
            add_poke(outbox, task.task_id, task.parent_id, task.parent_specialist)
        else:
            event = Task(
                task_id=reply_task_id(task.task_id),
                kind="reply",
                instance_id=task.parent_id,
                specialist=task.parent_specialist,
                version=task.parent_version,
                root_id=task.root_id,
                reply=reply,
                created_ms=ctx.now_ms,
                depth=max(task.depth - 1, 0),
            )
            outbox.add(task.task_id, task_subject(task.parent_specialist), encode_task(event), Dagr_Task="1")


def _add_spawn(outbox: Outbox, ctx: CommitContext, effect: Spawn, index: int) -> None:
    task = ctx.task
    child = Task(
        task_id=child_task_id(task.task_id, index),
        kind="start",
        instance_id=effect.child_id,
        specialist=effect.specialist,
        version=ctx.child_versions.get(effect.specialist),
        parent_id=task.instance_id,
        parent_specialist=task.specialist,
        parent_version=ctx.version,
        root_id=task.root_id or task.instance_id,
        reply_to=effect.reply_to,
        context=effect.context,
        ceilings=(ctx.own_grants, *task.ceilings) if ctx.own_grants is not None else task.ceilings,
        limit_ceiling=ctx.limits,
        # The child's model calls count against this instance's budget too (and its ancestors').
        budgets=task.budget_chain(ctx.limits) if ctx.limits is not None else task.budgets,
        created_ms=ctx.now_ms,
        depth=task.depth + 1,
    )
    outbox.add(task.task_id, task_subject(effect.specialist), encode_task(child), Dagr_Task="1")
    outbox.add(
        task.task_id,
        tree_subject(task.instance_id, effect.child_id),
        SpawnEdge(
            child=effect.child_id, specialist=effect.specialist, at_ms=ctx.now_ms, index=index
        ).encode(),
    )
    outbox.add(
        task.task_id,
        record_subject(effect.child_id),
        JournalRecord.of(
            child, version=child.version, state=InstanceState.QUEUED, attempt=0, now_ms=ctx.now_ms
        ).encode(),
    )


def _add_suspension(outbox: Outbox, ctx: CommitContext, outcome: Outcome) -> None:
    """The wake (a suspend's time, an await's deadline) and the suspended journal record."""
    task = ctx.task
    suspend, awaiting = outcome.suspend, outcome.awaiting
    if awaiting is not None:
        wake_at, context = awaiting.deadline_unix_ms, awaiting.resume_context
        handles, mode = awaiting.handles, awaiting.mode
    else:
        assert suspend is not None
        wake_at, context, handles, mode = suspend.wake_at_unix_ms, suspend.resume_context, (), "all"
    # The same instance, lineage and pins; a new task carrying the resume context.
    wake = replace(
        task,
        task_id=wake_task_id(task.task_id),
        kind="wake",
        version=ctx.version,
        context=context,
        subject="",
        payload=b"",
        reply=None,
        created_ms=ctx.now_ms,
        awaiting=handles,
        await_mode=mode,
        handle="",
        http_request=None,
    )
    outbox.add(
        task.task_id,
        sched_subject(task.specialist, task.instance_id),
        encode_task(wake),
        Nats_Schedule=f"@at {iso_at(wake_at)}",
        Nats_Schedule_Target=wake_subject(task.specialist, task.instance_id),
        Dagr_Task="1",
    )
    record = invocation_record(
        ctx,
        outcome,
        InstanceState.SUSPENDED,
        wake_at_ms=wake_at,
        wake_task=wake.task_id,
        resume_context=context,
    )
    # The wake's id and context: a host checks a wake against the first (a stale schedule is
    # dropped) and re-creates a lost schedule from both; a poke wakes an await early from them.
    outbox.add(
        task.task_id,
        record_subject(task.instance_id),
        replace(record, awaiting=handles, await_mode=mode).encode(),
    )


def _add_call(outbox: Outbox, ctx: CommitContext, effect: HttpCall | ModelCall) -> None:
    """The call as a task of the caller's own specialist, on its calls' subject (call slots, not
    wasm slots): any of its hosts makes it, once."""
    task = ctx.task
    call = replace(
        task,
        task_id=call_task_id(effect.handle),
        kind="http" if isinstance(effect, HttpCall) else "model",
        version=ctx.version,
        context="",
        subject="",
        payload=b"",
        reply=None,
        created_ms=ctx.now_ms,
        awaiting=(),
        handle=effect.handle,
        http_request=effect.request if isinstance(effect, HttpCall) else None,
        chat_request=effect.request if isinstance(effect, ModelCall) else None,
    )
    outbox.add(task.task_id, call_subject(task.specialist), encode_task(call), Dagr_Task="1")


def _add_signal(outbox: Outbox, ctx: CommitContext, effect: SignalSend, index: int) -> None:
    task = ctx.task
    target = ctx.signal_targets.get(effect.instance_id)
    capabilities = Capabilities(own=ctx.own_grants or Grants(), ceilings=task.ceilings)
    allowed = target is not None and capabilities.allows_signal(target)
    if target is None or not allowed:
        why = "no such instance" if target is None else f"grants.signal does not name {target!r}"
        outbox.add(
            task.task_id,
            dead_subject(task.specialist, f"{task.task_id}-signal{index}"),
            DeadLetter(
                task=encode_task(task),
                error=f"signal {effect.name!r} to {effect.instance_id} not sent: {why}",
                kind="denied",
                at_ms=ctx.now_ms,
            ).encode(),
        )
        return
    signal = Task(
        task_id=signal_task_id(task.task_id, index),
        kind="signal",
        instance_id=effect.instance_id,
        specialist=target,
        subject=effect.name,
        payload=effect.data,
        created_ms=ctx.now_ms,
    )
    outbox.add(task.task_id, task_subject(target), encode_task(signal), Dagr_Task="1")


def add_poke(outbox: Outbox, cause: str, instance: str, specialist: str) -> None:
    """Ask whichever host gets it whether ``instance``'s await is satisfied now (and wake it)."""
    poke = Task(task_id=poke_task_id(cause), kind="poke", instance_id=instance, specialist=specialist)
    outbox.add(cause, task_subject(specialist), encode_task(poke), Dagr_Task="1")


def plan_outbox(ctx: CommitContext, outcome: Outcome) -> Outbox:
    """Everything a committed outcome causes, in order, with deterministic ids."""
    task = ctx.task
    outbox = Outbox()
    if outcome.status is Status.SUSPENDED:
        # First: a child that answers at once must find its parent suspended (its reply then waits
        # in the inbox and pokes the await) rather than still running.
        _add_suspension(outbox, ctx, outcome)
    if outcome.committable:
        spawn_index = signal_index = 0
        for effect in outcome.effects:
            if isinstance(effect, Spawn):
                _add_spawn(outbox, ctx, effect, spawn_index)
                spawn_index += 1
            elif isinstance(effect, Publish):
                outbox.add(task.task_id, effect.subject, effect.payload, core_ok=True)
            elif isinstance(effect, HttpCall | ModelCall):
                _add_call(outbox, ctx, effect)
            elif isinstance(effect, SignalSend):
                _add_signal(outbox, ctx, effect, signal_index)
                signal_index += 1
    if outcome.status is Status.SUSPENDED:
        if outcome.awaiting is not None:
            # Results may be in the inbox already (a signal sent before the await): check at once.
            add_poke(outbox, task.task_id, task.instance_id, task.specialist)
    elif outcome.status is Status.OK:
        _add_reply(outbox, ctx, ok=outcome.result, error=None)
        outbox.add(
            task.task_id,
            record_subject(task.instance_id),
            invocation_record(ctx, outcome, InstanceState.FINISHED, ok=outcome.result).encode(),
        )
    else:
        if outcome.status is Status.FAILED:
            message = outcome.failure
        elif outcome.error is not None and outcome.error.kind.final:
            message = f"{outcome.error} (not retried: the same call would be refused again)"
        else:
            message = f"gave up: {outcome.error}"
        state = InstanceState.FAILED if outcome.status is Status.FAILED else InstanceState.DEAD
        if outcome.status is Status.ERROR:
            outbox.add(
                task.task_id,
                dead_subject(task.specialist, task.task_id),
                DeadLetter(
                    task=encode_task(task),
                    error=str(outcome.error),
                    kind=outcome.error.kind.value if outcome.error else None,
                    attempts=ctx.attempt,
                    at_ms=ctx.now_ms,
                ).encode(),
            )
        _add_reply(outbox, ctx, ok=None, error=message)
        outbox.add(
            task.task_id,
            record_subject(task.instance_id),
            invocation_record(ctx, outcome, state, error=message).encode(),
        )
    return outbox


class Committer:
    """Applies plans. One per host; safe for concurrent commits."""

    def __init__(self, nc: NATS, js: JetStreamContext, reader: StateReader) -> None:
        self._nc = nc
        self._js = js
        self._reader = reader
        self._kv: Any = None
        #: subject -> (whether a stream captures it, until when that answer is trusted)
        self._streams: dict[str, tuple[bool, float]] = {}
        self.batches = GroupCommit(self._send_batch, self._settle_alone)

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self._js.key_value(STATE_BUCKET)
        return self._kv

    async def commit(
        self,
        ctx: CommitContext,
        outcome: Outcome,
    ) -> bool:
        """Commit ``outcome`` of ``ctx.task``. True if it was committed now, False if it had been.

        Raises
        ``CommitConflict`` (re-run the task) or ``RuntimeFailure`` (NATS trouble: retry later).
        """
        outbox = plan_outbox(ctx, outcome)
        encoded = outbox.encode()
        if len(encoded) + _HEADROOM_BYTES > self._nc.max_payload:
            raise OutboxRefused(
                f"what the invocation caused is {len(encoded)} bytes, more than the server takes in one "
                f"message ({self._nc.max_payload}): lower its max_result_bytes and max_write_bytes, or "
                "raise the server's max_payload"
            )
        state_msgs = self._state_messages(ctx, outcome) if outcome.committable else []
        marker = marker_key(ctx.task.task_id)
        fresh = await (
            self.write_guarded(state_msgs, marker, encoded, what=ctx.task.instance_id)
            if state_msgs
            else self._mark(marker, encoded)
        )
        if not fresh:
            stored = await self._reader.raw(marker)
            if stored is None:
                raise RuntimeFailure(f"commit marker of task {ctx.task.task_id} vanished while replaying it")
            outbox = Outbox.decode(stored[0])
        await self.publish(outbox, replay=not fresh)
        return fresh

    async def commit_outbox(
        self, task_id: str, outbox: Outbox, *, state: list[StateMsg] | None = None
    ) -> bool:
        """Commit a task that ran no agent (a stored result, a settled model call): its marker
        holding ``outbox``, with the guarded ``state`` writes in the same atomic batch if any, then
        the messages. True if committed now, False if it had been (the stored outbox is replayed);
        ``CommitConflict`` when a guard of ``state`` failed (read again and retry)."""
        marker = marker_key(task_id)
        encoded = outbox.encode()
        fresh = await (
            self.write_guarded(state, marker, encoded, what=task_id) if state else self._mark(marker, encoded)
        )
        if not fresh:
            stored = await self._reader.raw(marker)
            if stored is None:
                raise RuntimeFailure(f"commit marker of task {task_id} vanished while replaying it")
            outbox = Outbox.decode(stored[0])
        await self.publish(outbox, replay=not fresh)
        return fresh

    async def committed(self, task_id: str) -> bool:
        """Whether ``task_id`` has a commit marker."""
        stored = await self._reader.raw(marker_key(task_id))
        return stored is not None and not stored[2]

    async def replay(self, task_id: str) -> bool:
        """Publish the stored outbox of an already committed task; False if it was never committed."""
        stored = await self._reader.raw(marker_key(task_id))
        if stored is None or stored[2]:
            return False
        await self.publish(Outbox.decode(stored[0]), replay=True)
        return True

    def _state_messages(self, ctx: CommitContext, outcome: Outcome) -> list[StateMsg]:
        read = {(scope, key): rev for scope, key, rev in outcome.reads}
        messages = []
        for (scope, key), value in outcome.final_state().items():
            headers: dict[str, str] = {}
            if (scope, key) in read:
                headers[_ELSS] = str(read[(scope, key)])
            if value is None:
                headers["KV-Operation"] = "DEL"
            bucket_key = state_key(scope, key, instance=ctx.task.instance_id, specialist=ctx.task.specialist)
            messages.append((KV_PREFIX + bucket_key, value or b"", headers))
        spawns = sum(1 for e in outcome.effects if isinstance(e, Spawn))
        if spawns:
            count, revision = ctx.tree_count
            root = ctx.task.root_id or ctx.task.instance_id
            # Guarded like a state write: two invocations of one tree spawning at once cannot both
            # take the last places; the loser re-runs on the new count.
            messages.append(
                (KV_PREFIX + tree_key(root), str(count + spawns).encode(), {_ELSS: str(revision)})
            )
        if ctx.ledger is not None:
            handles, revision = ctx.ledger
            messages.append(
                (KV_PREFIX + ledger_key(ctx.task.instance_id), encode_ledger(handles), {_ELSS: str(revision)})
            )
        consumed = [seq for e in outcome.effects if isinstance(e, RepliesConsumed) for seq in e.seqs]
        if consumed:
            messages.append(
                (
                    KV_PREFIX + cursor_key(ctx.task.instance_id),
                    str(max(consumed)).encode(),
                    {_ELSS: str(ctx.cursor_revision)},
                )
            )
        return messages

    async def _mark(self, marker: str, outbox: bytes) -> bool:
        kv = await self._bucket()
        try:
            await kv.create(marker, outbox, msg_ttl=MARKER_TTL_S)
        except KeyWrongLastSequenceError:
            return False
        except NatsTimeout as exc:
            raise RuntimeFailure(f"commit marker write timed out: {exc}") from exc
        return True

    async def write_guarded(
        self, state_msgs: list[StateMsg], marker: str, value: bytes, *, what: str
    ) -> bool:
        """One atomic batch on the state stream: ``state_msgs`` (each guarded as it says) and
        ``marker``, which must not exist yet, holding ``value``.

        True if written now; False if the marker was there (done before: nothing written);
        ``CommitConflict`` if a guard failed with the marker absent (another writer got there
        first: read again and retry); ``RuntimeFailure`` for NATS trouble.
        """
        messages = [
            *state_msgs,
            (KV_PREFIX + marker, value, {_ELSS: "0", "Nats-TTL": f"{MARKER_TTL_S}s"}),
        ]
        # A batch abandoned half-way stays open on the server (50 at most per stream, and all state
        # shares one stream): check everything that could make a message fail before opening one.
        for subject, data, _headers in messages:
            if not is_valid_subject(subject) or len(data) + _HEADROOM_BYTES > self._nc.max_payload:
                raise OutboxRefused(
                    f"the state commit holds a message the server cannot take ({subject[:80]!r})"
                )
        return await self.batches.commit(BatchCommit(messages, what=what, marker=marker))

    async def _send_batch(self, messages: list[StateMsg]) -> dict[str, Any]:
        """One atomic batch on the state stream; the server's answer (with ``error`` if refused)."""
        batch_id = uuid.uuid4().hex
        reply: dict[str, Any] = {}
        try:
            for index, (subject, data, headers) in enumerate(messages, start=1):
                h = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index)}
                if index == len(messages):
                    h["Nats-Batch-Commit"] = "1"
                    response = await self._nc.request(subject, data, headers=h, timeout=_PUBLISH_TIMEOUT_S)
                    reply = json.loads(response.data or b"{}")
                elif index == 1:
                    # A request on the first message: the server refuses a batch it cannot open
                    # (too many in flight) there, and only there.
                    response = await self._nc.request(subject, data, headers=h, timeout=_PUBLISH_TIMEOUT_S)
                    if response.data:
                        reply = json.loads(response.data)
                        if "error" in reply:
                            break
                else:
                    await self._nc.publish(subject, data, headers=h)
        except (NatsTimeout, NoRespondersError) as exc:
            raise RuntimeFailure(f"state commit did not complete: {exc!r}") from exc
        return reply

    async def _settle_alone(self, item: BatchCommit, reply: dict[str, Any]) -> bool:
        """One commit's result from the answer to a batch of its own."""
        error = reply.get("error")
        if error is None:
            return True
        if _is_conflict(reply):
            if await self._reader.raw(item.marker) is not None:
                return False  # committed before: the marker's guard is what failed
            raise CommitConflict(f"{item.what}: {error.get('description', 'state changed')}")
        code = int(error.get("err_code", 0))
        raise RuntimeFailure(f"state commit refused by JetStream: {error.get('description')} ({code})")

    async def publish(self, outbox: Outbox, *, replay: bool = False) -> None:
        """Publish every message of ``outbox`` at once, then wait for all the acks together.

        Messages to subjects a stream captures go through JetStream with their ids (duplicates
        are dropped): exactly once. Messages an agent sends to a subject no stream captures go
        out as core NATS publishes, without waiting for an ack that cannot come: at most once, so
        a replay does not send them again. One wait for the whole outbox, not one per message:
        per-message request machinery was most of a host's event-loop time (measured).

        Raises ``OutboxRefused`` for a message that can never be published (too big for the
        server), ``RuntimeFailure`` for trouble that may pass.
        """
        limit = self._nc.max_payload
        for message in outbox.messages:
            size = len(message.payload) + sum(len(k) + len(v) + 4 for k, v in message.headers.items())
            if size > limit:
                raise OutboxRefused(
                    f"a message to {message.subject} is {size} bytes, over the server's {limit}"
                )
        stored: list[OutMsg] = []
        for message in outbox.messages:
            if message.core_ok and not await self._captured(message.subject):
                if not replay:
                    await self._nc.publish(message.subject, message.payload, headers=message.headers)
            else:
                stored.append(message)
        # Every future is awaited below (or cancelled by the timeout), so none holds one of nats-py's
        # publish_async slots beyond this call; sizes are checked above, so publish_async does not
        # fail half-way through registering one.
        pending = [
            (message, await self._js.publish_async(message.subject, message.payload, headers=message.headers))
            for message in stored
        ]
        try:
            acks = await asyncio.wait_for(
                asyncio.gather(*(future for _, future in pending), return_exceptions=True),
                timeout=_PUBLISH_TIMEOUT_S,
            )
        except TimeoutError:
            raise RuntimeFailure(
                f"the outbox was not acknowledged within {_PUBLISH_TIMEOUT_S:.0f} s"
            ) from None
        for (message, _), ack in zip(pending, acks, strict=True):
            if not isinstance(ack, BaseException):
                continue
            # A stream that captures it did not answer (gone, or electing a leader): try again later.
            self._streams.pop(message.subject, None)
            if isinstance(ack, NoStreamResponseError):
                raise RuntimeFailure(f"no stream answered for {message.subject}; is the layout in place?")
            raise RuntimeFailure(f"publishing to {message.subject} failed: {ack!r}")

    async def _captured(self, subject: str) -> bool:
        """Whether a stream captures ``subject`` (asked of the server, remembered a little while).

        Only a definite answer counts: "no stream" sends a message out at most once, so an error,
        a timeout or a cluster in the middle of an election is a ``RuntimeFailure`` (retry), never
        a "no". The runtime's own report stream is known without asking.
        """
        if any(subject_matches(pattern, subject) for pattern in AGENTS_SUBJECTS):
            return True
        now = time.monotonic()
        known = self._streams.get(subject)
        if known is not None and known[1] > now:
            return known[0]
        try:
            response = await self._nc.request(
                "$JS.API.STREAM.NAMES", json.dumps({"subject": subject}).encode(), timeout=_PUBLISH_TIMEOUT_S
            )
            answer = json.loads(response.data or b"{}")
        except (NatsTimeout, NoRespondersError, ValueError) as exc:
            raise RuntimeFailure(f"could not tell whether a stream captures {subject}: {exc!r}") from exc
        if not isinstance(answer, dict) or "error" in answer or "total" not in answer:
            raise RuntimeFailure(f"could not tell whether a stream captures {subject}: {answer!r:.200}")
        captured = bool(answer.get("streams"))
        if len(self._streams) >= _MAX_KNOWN_SUBJECTS:
            self._streams.pop(next(iter(self._streams)))
        self._streams[subject] = (captured, now + _CAPTURE_TTL_S)
        return captured


class OutboxRefused(RuntimeFailure):
    """A committed outbox holds a message the server can never take: replaying will not help."""
