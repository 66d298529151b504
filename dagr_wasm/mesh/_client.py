"""``Mesh``: a client's handle on a dagr deployment (the CLI, tests, an embedding gateway).

It connects to NATS, lays out JetStream if asked, and offers what people do to agents: deploy,
spawn, read status, results and logs. It never runs agents; hosts do (``_host.py``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import cbor2
import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from ..errors import ConnectionFailure, PayloadError
from ..manifest import Manifest
from ..policy import is_valid_subject
from ._layout import (
    LOGS_STREAM,
    RESULTS_STREAM,
    STATUS_STREAM,
    Layout,
    ensure_layout,
    logs_subject,
    result_subject,
    status_subject,
    topic,
)
from ._registry import Registry, SpecialistVersion
from ._tasks import TASK_HEADER, Task, encode_task, new_instance_id

__all__ = ["ConnectOptions", "Mesh", "connect_nats"]


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
        return await self._last(STATUS_STREAM, status_subject(instance))

    async def result(
        self, instance: str, *, wait: bool = False, timeout_s: float | None = None
    ) -> dict[str, Any] | None:
        """The instance's latest result (``{"ok": bytes}`` or ``{"error": str}``), waiting if asked."""
        subject = result_subject(instance)
        if not wait:
            return await self._last(RESULTS_STREAM, subject)
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            await arrived.put(msg.data)

        subscription = await self.nc.subscribe(subject, cb=on_message)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                # Look in the stream on every round: JetStream stores a message a moment after it
                # reaches core subscribers, so a result can slip between our subscribe and our look.
                found = await self._last(RESULTS_STREAM, subject)
                if found is not None:
                    return found
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(arrived.get(), timeout=min(0.2, remaining or 0.2))
                except TimeoutError:
                    continue
                decoded: dict[str, Any] = cbor2.loads(data)
                return decoded
        finally:
            await subscription.unsubscribe()

    async def logs(self, instance: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The instance's log records (one per invocation), oldest first."""
        records: list[dict[str, Any]] = []
        seq = 0
        while len(records) < limit:
            try:
                msg = await self.js.get_msg(
                    LOGS_STREAM, seq=seq + 1, subject=logs_subject(instance), next=True, direct=True
                )
            except NotFoundError:
                break
            seq = int(msg.seq or 0)
            records.append(cbor2.loads(msg.data or b""))
        return records

    async def _last(self, stream: str, subject: str) -> dict[str, Any] | None:
        try:
            msg = await self.js.get_msg(stream, subject=subject, direct=True)
        except NotFoundError:
            return None
        decoded: dict[str, Any] = cbor2.loads(msg.data or b"")
        return decoded
