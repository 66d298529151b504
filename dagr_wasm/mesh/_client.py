"""``Mesh``: a client's handle on a dagr deployment (the CLI, tests, an embedding gateway).

It connects to NATS, lays out JetStream if asked, and offers what people do to agents: deploy,
spawn, read status, results and logs. It never runs agents; hosts do (``_host.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import cbor2
import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from ..errors import ConnectionFailure, PayloadError
from ..errors import NotFoundError as DagrNotFound
from ..manifest import Manifest
from ..payload import decode_map
from ..policy import WakeRefused, is_valid_subject, resolve_wake
from ._commit import iso_at, record_doc
from ._layout import (
    DEAD_STREAM,
    INSTANCES_STREAM,
    SCHEDULES_STREAM,
    Layout,
    cancel_subject,
    ensure_layout,
    instance_key,
    record_subject,
    sched_subject,
    topic,
    wake_subject,
)
from ._registry import Registry, SpecialistVersion
from ._state import StateReader
from ._tasks import TASK_HEADER, Task, decode_task, encode_task, new_instance_id, task_from_status

__all__ = ["ConnectOptions", "Mesh", "connect_nats"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectOptions:
    """How to reach NATS. ``servers`` may list several URLs of one cluster."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "dagr"
    creds_file: str | None = None
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
    if options.tls_ca or options.tls_cert:
        import ssl

        context = ssl.create_default_context(cafile=options.tls_ca)
        if options.tls_cert:
            context.load_cert_chain(options.tls_cert, options.tls_key)
        kwargs["tls"] = context
    url = ", ".join(options.servers)

    async def on_error(exc: Exception) -> None:
        # nats-py's default prints a traceback for every failed (re)connect attempt; a refused
        # first connect is reported below as one clear error, and reconnects are routine.
        _log.debug("nats (%s): %r", url, exc)

    kwargs["error_cb"] = on_error
    try:
        return await nats.connect(**kwargs)
    except (NoServersError, OSError, NatsTimeout, TimeoutError) as exc:
        raise ConnectionFailure(url, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # auth errors and friends come as assorted nats-py types
        raise ConnectionFailure(url, f"{type(exc).__name__}: {exc}") from None


class Mesh:
    """Client operations on a deployment. ``async with await Mesh.connect(...)`` closes it."""

    def __init__(self, nc: NATS, *, layout: Layout | None = None) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.layout = layout or Layout()
        self.registry = Registry(self.js, layout=self.layout)

    @classmethod
    async def connect(cls, options: ConnectOptions, *, layout: Layout | None = None) -> Mesh:
        return cls(await connect_nats(options), layout=layout)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def ensure_layout(self) -> None:
        await ensure_layout(self.js, self.layout)

    # -- specialists -----------------------------------------------------------------------------

    async def deploy(self, manifest: Manifest, wasm: bytes | None) -> SpecialistVersion:
        await self.ensure_layout()
        return await self.registry.deploy(manifest, wasm)

    # -- instances -------------------------------------------------------------------------------

    async def spawn(
        self,
        specialist: str,
        context: str,
        *,
        reply_to: str | None = None,
        instance_id: str | None = None,
    ) -> str:
        """Start a new instance of ``specialist``; returns its id. The specialist must exist."""
        spec = await self.registry.require(specialist)
        if reply_to is not None and not is_valid_subject(reply_to):
            raise PayloadError(
                f"--reply-to {reply_to!r}",
                "not a valid NATS subject",
                hint="Use dot-separated tokens without spaces or wildcards, e.g. agents.main.results.",
            )
        instance = instance_id or new_instance_id()
        now_ms = int(time.time() * 1000)
        task = Task(
            task_id=f"cli-{instance}",
            kind="start",
            instance_id=instance,
            specialist=specialist,
            version=spec.version if spec.digest else None,
            root_id=instance,
            reply_to=reply_to,
            context=context,
            created_ms=now_ms,
        )
        # Queued before the task exists, so `dagr status` and `dagr cancel` know it at once.
        queued = record_doc(task, version=task.version, state="queued", attempt=0, now_ms=now_ms)
        await self.js.publish(
            record_subject(instance), queued, headers={"Nats-Msg-Id": f"{task.task_id}.queued"}
        )
        await self.js.publish(
            topic(specialist), encode_task(task), headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id}
        )
        return instance

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
        await self.registry.require(specialist)
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
            topic(specialist), encode_task(task), headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id}
        )
        return task.task_id

    async def status(self, instance: str) -> dict[str, Any] | None:
        """The last record of the instance's journal: its state now."""
        return await self._last(record_subject(instance))

    async def result(
        self, instance: str, *, wait: bool = False, timeout_s: float | None = None
    ) -> dict[str, Any] | None:
        """The instance's latest result (``ok`` bytes or ``error`` text), waiting for one if asked.

        The result is that of its last record, if the instance has finished, failed or died; while
        it is queued, running or suspended there is none (yet).
        """
        subject = record_subject(instance)
        if not wait:
            return _result_of(await self._last(subject))
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            await arrived.put(msg.data)

        subscription = await self.nc.subscribe(subject, cb=on_message)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                # Look in the stream on every round: JetStream stores a message a moment after it
                # reaches core subscribers, so a result can slip between our subscribe and our look.
                found = _result_of(await self._last(subject))
                if found is not None:
                    return found
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(arrived.get(), timeout=min(0.2, remaining or 0.2))
                except TimeoutError:
                    continue
                found = _result_of(decode_map(data))
                if found is not None:
                    return found
        finally:
            await subscription.unsubscribe()

    async def logs(self, instance: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The instance's invocation records (state, log lines, result, costs), oldest first."""
        records: list[dict[str, Any]] = []
        seq = 0
        while len(records) < limit:
            try:
                msg = await self.js.get_msg(
                    INSTANCES_STREAM, seq=seq + 1, subject=record_subject(instance), next=True, direct=True
                )
            except NotFoundError:
                break
            seq = int(msg.seq or 0)
            record = decode_map(msg.data)
            if record is not None and "lines" in record:  # an invocation, not a queued/running mark
                records.append(record)
        return records

    async def all_logs(self, *, limit: int = 200) -> list[dict[str, Any]]:
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
                record = decode_map(msg.data)
                if record is not None and "lines" in record:
                    records.append(record)
        return records[-limit:]

    async def follow_logs(self, instance: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """New invocation records (of one instance, or of all) as they are stored, until cancelled."""
        subject = record_subject(instance) if instance else "dagr.inst.>"
        subscription = await self.js.subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        try:
            async for msg in subscription.messages:
                record = decode_map(msg.data)
                if record is not None and "lines" in record:
                    yield record
        finally:
            await subscription.unsubscribe()

    async def statuses(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The status of up to ``limit`` instances, most recently updated first."""
        info = await self.js.stream_info(INSTANCES_STREAM, subjects_filter="dagr.inst.*")
        found = []
        for subject in list(info.state.subjects or {}):
            record = await self._last(subject)
            if record is not None:
                found.append(record)
        found.sort(key=lambda r: r.get("updated_ms", 0), reverse=True)
        return found[:limit]

    async def children(self, instance: str) -> list[str]:
        """The ids of the instances ``instance`` spawned, in spawn order."""
        prefix = f"dagr.tree.{instance}."
        info = await self.js.stream_info(INSTANCES_STREAM, subjects_filter=f"{prefix}*")
        ordered = []
        for subject in info.state.subjects or {}:
            record = await self._last(subject)
            key = (record.get("at_ms", 0), record.get("index", 0)) if record else (0, 0)
            ordered.append((key, subject[len(prefix) :]))
        return [child for _, child in sorted(ordered)]

    async def tree(self, instance: str, *, max_depth: int = 8) -> dict[str, Any]:
        """``instance``'s status with its descendants under ``children``."""
        status = await self.status(instance) or {"id": instance, "state": "unknown"}
        node = dict(status)
        node["children"] = (
            [await self.tree(child, max_depth=max_depth - 1) for child in await self.children(instance)]
            if max_depth > 0
            else []
        )
        return node

    async def state_of(self, instance: str) -> dict[str, tuple[bytes, int]]:
        """The instance's state: key -> (value, revision). Read-only."""
        reader = StateReader(self.js)
        base = instance_key(instance, "")
        values = {}
        for kv_key in await reader.keys(base):
            entry = await reader.entry(kv_key)
            if entry is not None and entry.value is not None:
                values[kv_key[len(base) :]] = (entry.value, entry.revision)
        return values

    async def cancel(self, instance: str) -> dict[str, Any]:
        """Cancel an instance: drop its pending wake, and have hosts drop its queued tasks."""
        status = await self.require_status(instance)
        with contextlib.suppress(NotFoundError):
            await self.js.purge_stream(
                SCHEDULES_STREAM, subject=sched_subject(status["specialist"], instance)
            )
        cancelled = {**status, "state": "cancelled", "updated_ms": int(time.time() * 1000)}
        cancelled.pop("wake_at_ms", None)
        await self.js.publish(record_subject(instance), cbor2.dumps(cancelled))
        await self.js.publish(cancel_subject(instance), b"")  # hosts follow these
        return cancelled

    async def require_status(self, instance: str) -> dict[str, Any]:
        status = await self.status(instance)
        if status is None:
            raise DagrNotFound("instance", instance, hint="`dagr status` lists the instances.")
        return status

    async def reschedule(self, instance: str, *, wake_at_ms: int, resume_context: str) -> dict[str, Any]:
        """Move (or set) an instance's wake, by the same rules as ``lifecycle.suspend``."""
        status = await self.require_status(instance)
        if status["state"] in ("cancelled", "dead"):
            raise PayloadError(f"instance {instance}", f"it is {status['state']}", hint="Spawn a new one.")
        spec = (
            await self.registry.version(status["specialist"], status["version"])
            if status.get("version")
            else None
        )
        spec = spec or await self.registry.require(status["specialist"])
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
        schedule = sched_subject(status["specialist"], instance)
        try:
            pending = await self.js.get_msg(SCHEDULES_STREAM, subject=schedule, direct=True)
            wake = decode_task(
                pending.data or b"", {TASK_HEADER: "1"}, specialist=status["specialist"], stream_seq=0,
                stream=SCHEDULES_STREAM, now_ms=now_ms,
            )  # fmt: skip
        except NotFoundError:
            wake = task_from_status(status, now_ms=now_ms)
        wake = replace(wake, context=resume_context, task_id=f"{wake.task_id}r{now_ms}", created_ms=now_ms)
        await self.js.publish(
            schedule,
            encode_task(wake),
            headers={
                "Nats-Schedule": f"@at {iso_at(wake_at)}",
                "Nats-Schedule-Target": wake_subject(status["specialist"], instance),
                TASK_HEADER: "1",
            },
        )
        suspended = {**status, "state": "suspended", "wake_at_ms": wake_at, "updated_ms": now_ms}
        await self.js.publish(record_subject(instance), cbor2.dumps(suspended))
        return suspended

    async def dead_letters(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Dead-lettered tasks, oldest first: task, error, attempts, and the stream sequence."""
        info = await self.js.stream_info(DEAD_STREAM)
        records: list[dict[str, Any]] = []
        seq = info.state.first_seq - 1
        while len(records) < limit:
            try:
                msg = await self.js.get_msg(
                    DEAD_STREAM, seq=seq + 1, subject="dagr.dead.>", next=True, direct=True
                )
            except NotFoundError:
                break
            seq = int(msg.seq or 0)
            record = decode_map(msg.data)
            if record is None:
                continue
            record["seq"] = seq
            record["subject"] = msg.subject
            records.append(record)
        return records

    async def retry_dead(self, task_id: str) -> str:
        """Re-queue a dead-lettered task as a new task (fresh attempts); returns the new task id."""
        for record in await self.dead_letters():
            if not str(record.get("subject", "")).endswith(f".{task_id}"):
                continue
            if "task" not in record:
                raise PayloadError(
                    f"dead letter {task_id}", "it is not a task (a malformed message); it cannot be retried"
                )
            specialist = str(record["subject"]).split(".")[2]
            task = decode_task(
                record["task"],
                {TASK_HEADER: "1"},
                specialist=specialist,
                stream_seq=0,
                stream=DEAD_STREAM,
                now_ms=0,
            )
            retried = replace(task, task_id=f"{task.task_id}r{record['seq']}")
            await self.js.publish(
                topic(specialist),
                encode_task(retried),
                headers={TASK_HEADER: "1", "Nats-Msg-Id": retried.task_id},
            )
            await self.js.delete_msg(DEAD_STREAM, record["seq"])
            return retried.task_id
        raise DagrNotFound("dead letter", task_id, hint="`dagr dead-letters` lists them.")

    async def _last(self, subject: str) -> dict[str, Any] | None:
        try:
            msg = await self.js.get_msg(INSTANCES_STREAM, subject=subject, direct=True)
        except NotFoundError:
            return None
        return decode_map(msg.data)


_FINAL = frozenset({"finished", "failed", "dead"})


def _result_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result in a journal record, if it ends an invocation with one."""
    if record is None or record.get("state") not in _FINAL:
        return None
    return {
        "id": record["id"],
        "task": record.get("task"),
        "state": record["state"],
        "ok": record.get("ok"),
        "error": record.get("error"),
        "at_ms": record.get("updated_ms"),
    }
