"""``Mesh``: a client's handle on a dagr deployment (the CLI, tests, an embedding gateway).

It connects to NATS, lays out JetStream if asked, and offers what people do to agents: deploy,
spawn, read status, results and logs. It never runs agents; hosts do (``_host.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from ..errors import (
    ConnectionFailure,
    InstanceStateError,
    NotDeployed,
    PayloadError,
    RecordError,
    RuntimeFailure,
)
from ..errors import NotFoundError as DagrNotFound
from ..manifest import Manifest
from ..policy import (
    WakeRefused,
    is_reserved_subject,
    is_valid_signal_name,
    is_valid_subject,
    is_valid_subject_pattern,
    resolve_wake,
)
from ._auth import Role, Signature
from ._budget import Account, read_account
from ._commit import iso_at
from ._layout import (
    DEAD_STREAM,
    INSTANCES_STREAM,
    SCHEDULES_STREAM,
    Layout,
    calls_subject,
    cancel_subject,
    ensure_layout,
    instance_key,
    record_subject,
    sched_subject,
    specialist_key,
    task_subject,
    tasks_stream,
    topic,
    wake_subject,
)
from ._nats_errors import Violations, nats_seam, nats_seam_iter
from ._records import (
    DeadLetter,
    InstanceResult,
    InstanceState,
    JournalRecord,
    ModelCallRecord,
    SpawnEdge,
    TreeNode,
)
from ._registry import Registry, SpecialistVersion
from ._state import StateReader
from ._tasks import (
    TASK_HEADER,
    Task,
    decode_task,
    encode_start_request,
    encode_task,
    new_instance_id,
    start_instance_id,
    wake_from_record,
)

__all__ = ["ConnectOptions", "Mesh", "connect_nats"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectOptions:
    """How to reach NATS. ``servers`` may list several URLs of one cluster."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "dagr"
    #: A NATS ``.creds`` file (JWT + seed, for operator-mode deployments).
    creds_file: str | None = None
    #: An nkey seed file (``<role>.nk``), as `dagr up` makes them.
    nkey_seed_file: str | None = None
    #: The role these credentials give: what the client may do decides how it does some things
    #: (a submitter starts instances by a start request; an admin writes the queued record itself).
    role: Role = Role.ADMIN
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout_s: float = 3.0
    #: -1: keep reconnecting (hosts); a CLI command wants a small number and a clear failure.
    max_reconnect_attempts: int = -1


async def connect_nats(options: ConnectOptions) -> NATS:
    """A connected nats-py client, or ``ConnectionFailure`` saying what went wrong."""
    kwargs: dict[str, Any] = {
        "servers": list(options.servers),
        "name": options.name,
        "connect_timeout": options.connect_timeout_s,
        "max_reconnect_attempts": options.max_reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    if options.creds_file:
        kwargs["user_credentials"] = options.creds_file
    if options.nkey_seed_file:
        kwargs["nkeys_seed"] = options.nkey_seed_file
    if options.tls_ca or options.tls_cert:
        import ssl

        context = ssl.create_default_context(cafile=options.tls_ca)
        if options.tls_cert:
            context.load_cert_chain(options.tls_cert, options.tls_key)
        kwargs["tls"] = context
    url = ", ".join(options.servers)

    violations = Violations()
    refused: list[str] = []
    untrusted: list[str] = []

    async def on_error(exc: Exception) -> None:
        # nats-py's default prints a traceback for every failed (re)connect attempt; a refused
        # first connect is reported below as one clear error, and reconnects are routine.
        _log.debug("nats (%s): %r", url, exc)
        if "permissions violation" in str(exc).lower():
            violations.note(str(exc))
        if isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower():
            refused.append(str(exc))
        if "certificate" in str(exc).lower() or "ssl" in type(exc).__name__.lower():
            untrusted.append(str(exc))

    kwargs["error_cb"] = on_error
    # nats-py can keep retrying a TLS handshake it cannot complete without end; a command must fail.
    bound_s = options.connect_timeout_s * (max(options.max_reconnect_attempts, 0) + 2) + 2
    try:
        client = await asyncio.wait_for(nats.connect(**kwargs), timeout=bound_s)
    except (NoServersError, OSError, NatsTimeout, TimeoutError) as exc:
        if untrusted:
            raise ConnectionFailure(
                url,
                f"its TLS certificate cannot be verified ({untrusted[-1][:160]}); pass the CA that "
                "signed it with --tls-ca",
                refused=True,
            ) from None
        if refused:
            given = (
                "these credentials"
                if options.nkey_seed_file or options.creds_file
                else "a client without credentials"
            )
            raise ConnectionFailure(
                url,
                f"it does not accept {given} (authorization violation). `dagr up` keeps each role's "
                "credentials in its data dir (credentials/<role>.nk; the CLI and hosts on the same "
                "machine find them): pass one with --creds",
                refused=True,
            ) from None
        if isinstance(exc, TimeoutError) and not str(exc):
            reason = f"no connection within {bound_s:.0f} s (if the server requires TLS, pass --tls-ca)"
            raise ConnectionFailure(url, reason) from None
        raise ConnectionFailure(url, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # auth errors and friends come as assorted nats-py types
        raise ConnectionFailure(url, f"{type(exc).__name__}: {exc}") from None
    violations.attach(client)
    return client


class Mesh:
    """Client operations on a deployment. ``async with await Mesh.connect(...)`` closes it."""

    def __init__(self, nc: NATS, *, layout: Layout | None = None, role: Role = Role.ADMIN) -> None:
        self.nc = nc
        #: What the connection's credentials allow (see ``_auth.py``); decides how ``spawn`` starts.
        self.role = role
        self.js: JetStreamContext = nc.jetstream()
        self.layout = layout or Layout()
        self.registry = Registry(self.js, layout=self.layout)

    @classmethod
    async def connect(cls, options: ConnectOptions, *, layout: Layout | None = None) -> Mesh:
        return cls(await connect_nats(options), layout=layout, role=options.role)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @nats_seam
    async def ensure_layout(self) -> None:
        await ensure_layout(self.js, self.layout)

    # -- specialists -----------------------------------------------------------------------------

    @nats_seam
    async def deploy(
        self,
        manifest: Manifest,
        wasm: bytes | None,
        *,
        approve_grants: bool = False,
        signed: Signature | None = None,
    ) -> SpecialistVersion:
        """Lay out (if needed) and register a new version (see ``Registry.deploy``)."""
        await self.ensure_layout()
        return await self.registry.deploy(manifest, wasm, approve_grants=approve_grants, signed=signed)

    # -- instances -------------------------------------------------------------------------------

    @nats_seam
    async def host_policies(self) -> dict[str, frozenset[str]]:
        """The running hosts (their announcements not yet expired) and the publishers whose
        modules each runs (empty: any module)."""
        reader = StateReader(self.js)
        policies = {}
        for kv_key, entry in (await reader.entries("h.")).items():
            try:
                doc = json.loads(entry.value) if entry.value else None
            except ValueError:
                continue  # not an announcement of ours
            if isinstance(doc, dict) and isinstance(doc.get("trusted_publishers"), list):
                policies[str(doc.get("host", kv_key))] = frozenset(map(str, doc["trusted_publishers"]))
        return policies

    @nats_seam
    async def spawn(
        self,
        specialist: str,
        context: str,
        *,
        reply_to: str | None = None,
        instance_id: str | None = None,
    ) -> str:
        """Start a new instance of ``specialist``; returns its id. The specialist must exist.

        An admin writes the instance's task (on ``dagr.task.<s>``, which hosts trust) and its
        `queued` record itself. A submitter may not: it publishes a start request on the topic, and
        the instance's id derives from where the server stored it (known from the publish ack).
        """
        spec = await self._deployed(specialist)
        if reply_to is not None and not (is_valid_subject(reply_to) and not is_reserved_subject(reply_to)):
            raise PayloadError(
                f"--reply-to {reply_to!r}",
                "not a subject results can go to",
                hint="Use dot-separated tokens without spaces or wildcards, outside the runtime's own "
                "subjects (dagr.>, agents.specialist.>, _INBOX.>, $...), e.g. agents.main.results.",
            )
        if self.role is Role.SUBMITTER:
            if instance_id is not None:
                raise PayloadError("instance_id", "a submitter cannot name the instance it starts")
            ack = await self.js.publish(
                topic(specialist),
                encode_start_request(context, reply_to=reply_to),
                headers={TASK_HEADER: "1"},
            )
            return start_instance_id(tasks_stream(specialist), ack.seq)
        instance = instance_id or new_instance_id()
        now_ms = int(time.time() * 1000)
        task = Task(
            task_id=f"cli-{instance}",
            kind="start",
            instance_id=instance,
            specialist=specialist,
            version=spec.version,
            root_id=instance,
            reply_to=reply_to,
            context=context,
            created_ms=now_ms,
        )
        # Queued before the task exists, so `dagr status` and `dagr cancel` know it at once.
        queued = JournalRecord.of(
            task, version=task.version, state=InstanceState.QUEUED, attempt=0, now_ms=now_ms
        ).encode()
        await self.js.publish(
            record_subject(instance), queued, headers={"Nats-Msg-Id": f"{task.task_id}.queued"}
        )
        await self.js.publish(
            task_subject(specialist),
            encode_task(task),
            headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id},
        )
        return instance

    @nats_seam
    async def send(
        self,
        specialist: str,
        instance_id: str,
        payload: bytes,
        *,
        subject: str = "",
        reply_to: str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Deliver a ``message`` event to an instance (created on first use); returns the task id.

        ``task_id`` makes the send idempotent: sending again with the same id delivers nothing new.
        """
        await self._deployed(specialist)
        task = Task(
            task_id=task_id or f"msg-{new_instance_id()}",
            kind="message",
            instance_id=instance_id,
            specialist=specialist,
            root_id=instance_id,
            reply_to=reply_to,
            subject=subject or topic(specialist),
            payload=payload,
            created_ms=int(time.time() * 1000),
        )
        await self.js.publish(
            task_subject(specialist),
            encode_task(task),
            headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id},
        )
        return task.task_id

    @nats_seam
    async def signal(
        self, instance: str, name: str, data: bytes = b"", *, signal_id: str | None = None
    ) -> str:
        """Send signal ``name`` with ``data`` to an instance that has not ended; returns its id.

        It is stored in the instance's inbox (once, whatever is redelivered) and wakes an await
        on it. An unknown instance is ``NotFoundError``, an ended one ``InstanceStateError``:
        nothing is stored then. ``signal_id`` makes a retried send idempotent.
        """
        if not is_valid_signal_name(name):
            raise PayloadError("NAME", f"{name[:60]!r} is not a signal name: 1-63 of a-z 0-9 _ -")
        if len(data) > _MAX_SIGNAL_BYTES:
            raise PayloadError("--data", f"{len(data)} bytes, over a signal's {_MAX_SIGNAL_BYTES}")
        status, _seq = await self._head(instance)
        if status.ended:
            raise InstanceStateError(instance, status.state, "signal", hint=_ENDED_HINT)
        task = Task(
            task_id=signal_id or f"sig-{new_instance_id()}",
            kind="signal",
            instance_id=instance,
            specialist=status.specialist,
            subject=name,
            payload=data,
            created_ms=int(time.time() * 1000),
        )
        await self.js.publish(
            task_subject(status.specialist),
            encode_task(task),
            headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id},
        )
        return task.task_id

    @nats_seam
    async def status(self, instance: str) -> JournalRecord | None:
        """The last record of the instance's journal: its state now (None: no such instance)."""
        data = await self._last(record_subject(instance))
        return JournalRecord.decode(data) if data is not None else None

    @nats_seam
    async def result(
        self, instance: str, *, wait: bool = False, timeout_s: float | None = None
    ) -> InstanceResult | None:
        """The instance's latest result (``ok`` bytes or ``error`` text), waiting for one if asked.

        The result is that of its last record, if the instance has finished, failed or died; while
        it is queued, running or suspended there is none (yet).
        """
        subject = record_subject(instance)
        if not wait:
            return await self._result(subject)
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            await arrived.put(msg.data)

        subscription = await self.nc.subscribe(subject, cb=on_message)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poll_s = 0.2
        try:
            while True:
                # Only what the stream holds is returned: JetStream stores a message a moment after
                # it reaches core subscribers, and a caller reading the status next must see it too.
                # A record arriving on the subscription only makes us look again soon.
                found = await self._result(subject)
                if found is not None:
                    return found
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(arrived.get(), timeout=min(poll_s, remaining or poll_s))
                except TimeoutError:
                    continue
                if (arrived_record := _decoded(data)) is not None and arrived_record.ended:
                    poll_s = 0.01  # it is on its way into the stream
        finally:
            await subscription.unsubscribe()

    @nats_seam
    async def logs(self, instance: str, *, limit: int = 1000) -> list[JournalRecord]:
        """The instance's invocation records (state, log lines, result, costs), oldest first."""
        records: list[JournalRecord] = []
        async for data in self._stored(record_subject(instance)):
            record = _decoded(data)
            if record is not None and record.invocation is not None:  # not a queued/running mark
                records.append(record)
                if len(records) >= limit:
                    break
        return records

    async def _stored(self, subject: str) -> AsyncIterator[bytes]:
        """Every message the instances stream holds on ``subject``, oldest first."""
        seq = 0
        while True:
            try:
                msg = await self.js.get_msg(
                    INSTANCES_STREAM, seq=seq + 1, subject=subject, next=True, direct=True
                )
            except NotFoundError:
                return
            seq = int(msg.seq or 0)
            yield msg.data or b""

    @nats_seam
    async def model_calls(self, instance: str, *, limit: int = 1000) -> list[ModelCallRecord]:
        """The instance's model calls (alias, model, tokens, cost, latency, finish reason), oldest first."""
        calls: list[ModelCallRecord] = []
        async for data in self._stored(calls_subject(instance)):
            try:
                calls.append(ModelCallRecord.decode(data))
            except RecordError:
                continue  # not one a host wrote: leave it out rather than hide the others
            if len(calls) >= limit:
                break
        return calls

    @nats_seam
    async def model_account(self, instance: str) -> Account:
        """What the instance spent on models itself and with its subtree, and holds for calls in
        flight (all zero when it never called)."""
        return await read_account(StateReader(self.js), instance)

    @nats_seam
    async def all_logs(self, *, limit: int = 200) -> list[JournalRecord]:
        """The last ``limit`` invocation records of every instance, oldest first."""
        info = await self.js.stream_info(INSTANCES_STREAM)
        records = []
        for seq in range(
            max(info.state.first_seq, info.state.last_seq - 4 * limit + 1), info.state.last_seq + 1
        ):
            try:
                msg = await self.js.get_msg(INSTANCES_STREAM, seq=seq, direct=True)
            except NotFoundError:
                continue
            if msg.subject and msg.subject.startswith("dagr.inst."):
                record = _decoded(msg.data)
                if record is not None and record.invocation is not None:
                    records.append(record)
        return records[-limit:]

    @nats_seam_iter
    async def follow_logs(
        self, instance: str | None = None, *, until_ended: bool = False
    ) -> AsyncIterator[JournalRecord]:
        """New invocation records (of one instance, or of all) as they are stored, until cancelled,
        or, with ``until_ended`` and an instance, until the instance ends (finished, failed, dead,
        cancelled)."""
        subject = record_subject(instance) if instance else "dagr.inst.>"
        subscription = await self.js.subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        try:
            if until_ended and instance and (await self._head(instance))[0].ended:
                return
            async for msg in subscription.messages:
                record = _decoded(msg.data)
                if record is None:
                    continue
                if record.invocation is not None:
                    yield record
                if until_ended and instance and record.ended:
                    return
        finally:
            await subscription.unsubscribe()

    @nats_seam_iter
    async def watch(self, subject: str = "agents.main.>") -> AsyncIterator[tuple[str, bytes]]:
        """What is published on ``subject`` (a pattern) from now on: (subject, payload), until cancelled."""
        if not is_valid_subject_pattern(subject):
            raise PayloadError(f"subject {subject!r}", "not a valid NATS subject pattern")
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)

        async def on_message(msg: Any) -> None:
            await queue.put((msg.subject, msg.data))

        subscription = await self.nc.subscribe(subject, cb=on_message)
        try:
            while True:
                yield await queue.get()
        finally:
            await subscription.unsubscribe()

    @nats_seam
    async def statuses(self, *, limit: int = 1000) -> list[JournalRecord]:
        """The status of up to ``limit`` instances, most recently updated first (records that do
        not decode are left out: one bad record must not hide every other instance)."""
        info = await self.js.stream_info(INSTANCES_STREAM, subjects_filter="dagr.inst.*")
        found = []
        for subject in list(info.state.subjects or {}):
            data = await self._last(subject)
            record = _decoded(data) if data is not None else None
            if record is not None:
                found.append(record)
        found.sort(key=lambda r: r.updated_ms, reverse=True)
        return found[:limit]

    @nats_seam
    async def children(self, instance: str) -> list[str]:
        """The ids of the instances ``instance`` spawned, in spawn order."""
        prefix = f"dagr.tree.{instance}."
        info = await self.js.stream_info(INSTANCES_STREAM, subjects_filter=f"{prefix}*")
        ordered = []
        for subject in info.state.subjects or {}:
            data = await self._last(subject)
            edge = SpawnEdge.decode(data) if data is not None else None
            key = (edge.at_ms, edge.index) if edge else (0, 0)
            ordered.append((key, subject[len(prefix) :]))
        return [child for _, child in sorted(ordered)]

    @nats_seam
    async def tree(self, instance: str, *, max_depth: int = 8) -> TreeNode:
        """``instance``'s status with its descendants, ``max_depth`` levels down."""
        children = (
            [await self.tree(child, max_depth=max_depth - 1) for child in await self.children(instance)]
            if max_depth > 0
            else []
        )
        account = await self._model_account_if_readable(instance)
        return TreeNode(
            instance,
            await self.status(instance),
            tuple(children),
            own_spend=account.own,
            tree_spend=account.tree,
        )

    async def _model_account_if_readable(self, instance: str) -> Account:
        try:
            return await read_account(StateReader(self.js), instance)
        except APIError as exc:  # a role that may not read accounts (another tenant's setup)
            _log.debug("no model account for %s: %r", instance, exc)
            return Account()

    @nats_seam
    async def state_of(self, instance: str, *, shared: bool = False) -> dict[str, tuple[bytes, int]]:
        """The instance's state (or, ``shared``, its specialist's shared state): key -> (value,
        revision). Read-only."""
        reader = StateReader(self.js)
        if shared:
            status, _seq = await self._head(instance)
            base = specialist_key(status.specialist, "")
        else:
            base = instance_key(instance, "")
        return {
            kv_key[len(base) :]: (entry.value, entry.revision)
            for kv_key, entry in (await reader.entries(base)).items()
            if entry.value is not None
        }

    @nats_seam
    async def delete_specialist(self, name: str, *, force: bool = False) -> list[str]:
        """Remove a specialist from the registry, so nothing new can start it; returns the ids of
        the instances it cancelled. Refused while instances of it wait to wake, unless ``force``
        (which cancels them). Its versions stay, for the journal of its past instances."""
        await self.registry.require(name)
        waiting = [s.id for s in await self.statuses(limit=100_000) if s.specialist == name and not s.ended]
        if waiting and not force:
            raise InstanceStateError(
                f"{len(waiting)} instance(s) of {name} ({', '.join(waiting[:3])}...)",
                "not ended",
                f"delete specialist {name}",
                hint="Cancel them first, or pass --force to cancel them with it.",
            )
        for instance in waiting:
            with contextlib.suppress(InstanceStateError):  # it ended meanwhile
                await self.cancel(instance)
        await self.registry.delete(name)
        return waiting

    @nats_seam
    async def cancel(self, instance: str) -> JournalRecord:
        """Cancel an instance: drop its pending wake, and have hosts drop its queued tasks.

        Refused (``InstanceStateError``) once the instance has ended: its result stays readable.
        The record is written only over the record it was decided on (an expected-sequence
        guard), so a host committing at the same moment is seen and the decision taken again.
        """
        for _ in range(_GUARD_ATTEMPTS):
            status, seq = await self._head(instance)
            if status.ended:
                raise InstanceStateError(instance, status.state, "cancel", hint=_ENDED_HINT)
            # The wake first: if a host suspends the instance meanwhile, the guard below fails and
            # the new wake is purged on the next round.
            with contextlib.suppress(NotFoundError):
                await self.js.purge_stream(
                    SCHEDULES_STREAM, subject=sched_subject(status.specialist, instance)
                )
            cancelled = replace(
                status,
                state=InstanceState.CANCELLED,
                updated_ms=int(time.time() * 1000),
                invocation=None,  # not an invocation: `dagr logs` shows invocations only
                wake_at_ms=None,
                wake_task=None,
                resume_context=None,
            )
            if await self._append_record(instance, cancelled, after=seq):
                await self.js.publish(cancel_subject(instance), b"")  # hosts follow these
                return cancelled
        raise RuntimeFailure(f"instance {instance} kept changing while cancelling it; try again")

    @nats_seam
    async def require_status(self, instance: str) -> JournalRecord:
        status, _seq = await self._head(instance)
        return status

    @nats_seam
    async def reschedule(self, instance: str, *, wake_at_ms: int, resume_context: str) -> JournalRecord:
        """Move a suspended instance's wake, by the same rules as ``lifecycle.suspend``.

        Only a suspended instance has a wake to move: any other state is refused
        (``InstanceStateError``), so a finished instance is never run again.
        """
        for _ in range(_GUARD_ATTEMPTS):
            status, seq = await self._head(instance)
            if status.state is not InstanceState.SUSPENDED:
                hint = _ENDED_HINT if status.ended else _NOT_SUSPENDED_HINT
                raise InstanceStateError(instance, status.state, "reschedule", hint=hint)
            spec = await self.registry.version(status.specialist, status.version) if status.version else None
            spec = spec or await self.registry.require(status.specialist)
            now_ms = int(time.time() * 1000)
            try:
                wake_at = resolve_wake(
                    at_unix_ms=wake_at_ms,
                    after_ms=None,
                    now_unix_ms=now_ms,
                    max_suspend_s=spec.grants.max_suspend_s,
                )
            except WakeRefused as refusal:
                raise PayloadError("--until", refusal.reason) from None
            schedule = sched_subject(status.specialist, instance)
            try:
                pending = await self.js.get_msg(SCHEDULES_STREAM, subject=schedule, direct=True)
                wake = decode_task(
                    pending.data or b"", {TASK_HEADER: "1"}, specialist=status.specialist, stream_seq=0,
                    stream=SCHEDULES_STREAM, now_ms=now_ms,
                )  # fmt: skip
            except NotFoundError:
                wake = wake_from_record(status, now_ms=now_ms)
            wake = replace(
                wake, context=resume_context, task_id=f"{wake.task_id}r{now_ms}", created_ms=now_ms
            )
            suspended = replace(
                status,
                state=InstanceState.SUSPENDED,
                wake_at_ms=wake_at,
                wake_task=wake.task_id,
                resume_context=resume_context,
                updated_ms=now_ms,
                invocation=None,  # moved by an operator, not an invocation
            )
            # The record first, guarded: once it is in, the wake below is the instance's pending one.
            if not await self._append_record(instance, suspended, after=seq):
                continue
            await self.js.publish(
                schedule,
                encode_task(wake),
                headers={
                    "Nats-Schedule": f"@at {iso_at(wake_at)}",
                    "Nats-Schedule-Target": wake_subject(status.specialist, instance),
                    TASK_HEADER: "1",
                },
            )
            return suspended
        raise RuntimeFailure(f"instance {instance} kept changing while rescheduling it; try again")

    async def _head(self, instance: str) -> tuple[JournalRecord, int]:
        """The instance's last journal record and its stream sequence."""
        try:
            msg = await self.js.get_msg(INSTANCES_STREAM, subject=record_subject(instance), direct=True)
        except NotFoundError:
            raise DagrNotFound("instance", instance, hint="`dagr status` lists the instances.") from None
        return JournalRecord.decode(msg.data), int(msg.seq or 0)

    async def _append_record(self, instance: str, record: JournalRecord, *, after: int) -> bool:
        """Append ``record`` to the journal if its last record is still number ``after``."""
        try:
            await self.js.publish(
                record_subject(instance),
                record.encode(),
                headers={"Nats-Expected-Last-Subject-Sequence": str(after)},
            )
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def _deployed(self, specialist: str) -> SpecialistVersion:
        spec = await self.registry.require(specialist)
        if spec.digest is None:
            raise NotDeployed(specialist)
        return spec

    @nats_seam
    async def dead_letters(self, *, limit: int = 1000) -> list[DeadLetter]:
        """Dead-lettered tasks, oldest first: task, error, attempts, and the stream sequence."""
        info = await self.js.stream_info(DEAD_STREAM)
        records: list[DeadLetter] = []
        seq = info.state.first_seq - 1
        while len(records) < limit:
            try:
                msg = await self.js.get_msg(
                    DEAD_STREAM, seq=seq + 1, subject="dagr.dead.>", next=True, direct=True
                )
            except NotFoundError:
                break
            seq = int(msg.seq or 0)
            try:
                records.append(DeadLetter.decode(msg.data, seq=seq, subject=msg.subject or ""))
            except RecordError as exc:
                _log.debug("dead letter %d left out: %s", seq, exc)
        return records

    @nats_seam
    async def retry_dead(self, task_id: str) -> str:
        """Re-queue a dead-lettered task as a new task (fresh attempts); returns the new task id."""
        for record in await self.dead_letters():
            if record.task_id != task_id:
                continue
            if record.task is None:
                raise PayloadError(
                    f"dead letter {task_id}", "it is not a task (a malformed message); it cannot be retried"
                )
            specialist = record.specialist
            task = decode_task(
                record.task,
                {TASK_HEADER: "1"},
                specialist=specialist,
                stream_seq=0,
                stream=DEAD_STREAM,
                now_ms=0,
            )
            retried = replace(task, task_id=f"{task.task_id}r{record.seq}")
            await self.js.publish(
                task_subject(specialist),
                encode_task(retried),
                headers={TASK_HEADER: "1", "Nats-Msg-Id": retried.task_id},
            )
            await self.js.delete_msg(DEAD_STREAM, record.seq)
            return retried.task_id
        raise DagrNotFound("dead letter", task_id, hint="`dagr dead-letters` lists them.")

    async def _last(self, subject: str) -> bytes | None:
        """The last message stored on ``subject`` of the instances stream (None: none)."""
        try:
            msg = await self.js.get_msg(INSTANCES_STREAM, subject=subject, direct=True)
        except NotFoundError:
            return None
        return msg.data or b""

    async def _result(self, subject: str) -> InstanceResult | None:
        data = await self._last(subject)
        return JournalRecord.decode(data).result() if data is not None else None


_ENDED_HINT = "It has ended; `dagr result ID` shows how. Spawn a new instance to run it again."
_NOT_SUSPENDED_HINT = "Only a suspended instance has a wake to move."
_GUARD_ATTEMPTS = 8
#: A signal is a small decision (an approval, a webhook's gist), stored in an inbox entry.
_MAX_SIGNAL_BYTES = 256 * 1024
_WRONG_LAST_SEQUENCE = 10071


def _decoded(data: bytes | None) -> JournalRecord | None:
    """A journal record, or None for one that does not decode (left out of listings)."""
    try:
        return JournalRecord.decode(data)
    except RecordError as exc:
        _log.debug("journal record left out: %s", exc)
        return None
