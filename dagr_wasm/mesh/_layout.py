"""The JetStream layout dagr runs on: every stream, bucket and subject name, and ``ensure_layout``.

Created idempotently (creating what exists is a no-op; a changed config is updated in place) and
versioned: the registry bucket records the layout version, and a host refuses a store laid out by
a newer dagr than itself. Replica count is a parameter: 1 for the embedded server, 3 in a cluster.

Subjects (``<i>`` an instance id, ``<s>`` a specialist, ``<t>`` a task id)::

    agents.specialist.<s>      tasks for a specialist (its topic)   stream DAGR_TASKS_<s>, work queue
    dagr.sched.<s>.<i>         an instance's pending wake           stream DAGR_SCHEDULES (schedules)
    dagr.task.<s>              tasks hosts and admins send          DAGR_TASKS_<s> (only they may publish)
    dagr.call.<s>              outbound calls hosts queue           DAGR_TASKS_<s>, a consumer of their own
    dagr.wake.<s>.<i>          the wake, when it fires              DAGR_SCHEDULES, sourced by DAGR_TASKS_<s>
    dagr.inbox.<i>             replies from children                stream DAGR_INBOX
    dagr.inst.<i>              the instance's journal: one record   stream DAGR_INSTANCES
                               per invocation (state, result, logs,
                               costs); the last one is its status
    dagr.calls.<i>             the instance's model calls           stream DAGR_INSTANCES
    dagr.tree.<parent>.<i>     who spawned whom                     stream DAGR_INSTANCES
    dagr.cancel.<i>            a cancellation, for hosts to follow  stream DAGR_INSTANCES
    dagr.dead.<s>.<t>          dead-lettered tasks                  stream DAGR_DEAD
    agents.main.>              what agents report to people         stream DAGR_AGENTS

One record per invocation (rather than a status, a result and a log message each) because every
stored message costs the server an fsync with ``sync_interval: always``: measured, the disk and not
the hosts was what bounded throughput.

Buckets: ``dagr-state`` (KV, agent state, commit markers, inbox cursors, model accounts and holds;
atomic batches on),
``dagr-registry`` (KV, specialists and their versions), ``dagr-modules`` (object store, by sha256).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from ..errors import RuntimeFailure

__all__ = ["LAYOUT_VERSION", "Layout", "ensure_layout", "ensure_specialist", "tasks_stream"]

LAYOUT_VERSION = 3

STATE_BUCKET = "dagr-state"
REGISTRY_BUCKET = "dagr-registry"
MODULES_BUCKET = "dagr-modules"

SCHEDULES_STREAM = "DAGR_SCHEDULES"
INBOX_STREAM = "DAGR_INBOX"
INSTANCES_STREAM = "DAGR_INSTANCES"
DEAD_STREAM = "DAGR_DEAD"
AGENTS_STREAM = "DAGR_AGENTS"
#: What DAGR_AGENTS captures: what agents report to people.
AGENTS_SUBJECTS = ("agents.main.>",)

#: Nats-Msg-Id dedupe window on every stream that takes effects. A redelivered task is replayed
#: within ack_wait x attempts, well inside it; commit markers cover anything later.
DUPLICATE_WINDOW_S = 600.0
#: How long a commit marker (proof that a task's effects were applied) is kept.
MARKER_TTL_S = 86_400
DAY_S = 86_400.0


def tasks_stream(specialist: str) -> str:
    return f"DAGR_TASKS_{specialist}"


def topic(specialist: str) -> str:
    """Where anyone allowed may ask for a new instance of ``specialist`` (a start, nothing more)."""
    return f"agents.specialist.{specialist}"


def task_subject(specialist: str) -> str:
    """Where hosts and admins send tasks with authority (instance, lineage, ceilings, attempt):
    only those roles may publish here, so a host trusts what it finds on it (``_auth.py``)."""
    return f"dagr.task.{specialist}"


def call_subject(specialist: str) -> str:
    """Where hosts queue the outbound calls (model, HTTP) of ``specialist``'s instances: a consumer
    of their own, so calls waiting for call slots never hold up the specialist's other tasks."""
    return f"dagr.call.{specialist}"


def trusted_subject(subject: str) -> bool:
    """Whether a task that came on ``subject`` was written by a host or an admin."""
    return subject.startswith(("dagr.task.", "dagr.wake.", "dagr.call."))


def sched_subject(specialist: str, instance: str) -> str:
    return f"dagr.sched.{specialist}.{instance}"


def wake_subject(specialist: str, instance: str) -> str:
    return f"dagr.wake.{specialist}.{instance}"


def inbox_subject(instance: str) -> str:
    return f"dagr.inbox.{instance}"


def record_subject(instance: str) -> str:
    return f"dagr.inst.{instance}"


def calls_subject(instance: str) -> str:
    """The instance's model calls, one record each (``dagr logs``)."""
    return f"dagr.calls.{instance}"


def tree_subject(parent: str, child: str) -> str:
    return f"dagr.tree.{parent}.{child}"


def cancel_subject(instance: str) -> str:
    return f"dagr.cancel.{instance}"


def dead_subject(specialist: str, task_id: str) -> str:
    return f"dagr.dead.{specialist}.{task_id}"


def consumer_name(specialist: str) -> str:
    return f"dagr-host-{specialist}"


def call_consumer_name(specialist: str) -> str:
    return f"dagr-calls-{specialist}"


# KV keys in the state bucket. User keys may contain dots: they stay inside the last segment.
def instance_key(instance: str, key: str) -> str:
    return f"i.{instance}.{key}"


def specialist_key(specialist: str, key: str) -> str:
    return f"s.{specialist}.{key}"


def state_key(scope: str, key: str, *, instance: str, specialist: str) -> str:
    """The bucket key of an agent's state key in ``scope``."""
    return instance_key(instance, key) if scope == "instance" else specialist_key(specialist, key)


def marker_key(task_id: str) -> str:
    return f"x.{task_id}"


def host_key(host_id: str) -> str:
    """A running host's announcement (what it will run), refreshed while it runs, expiring after."""
    return f"h.{host_id.replace(':', '-').replace('.', '-')}"


def failures_key(task_id: str) -> str:
    return f"f.{task_id}"


def tree_key(root: str) -> str:
    """How many instances the spawn tree of ``root`` holds besides the root (guarded in commits)."""
    return f"t.{root}"


def budget_key(instance: str) -> str:
    """What ``instance`` and its subtree spent on models, and hold for calls in flight."""
    return f"b.{instance}"


def hold_key(handle: str) -> str:
    """The amount held for model call ``handle`` while it is made (written once, with its hold)."""
    return f"r.{handle}"


def cursor_key(instance: str) -> str:
    return f"c.{instance}.inbox"


def ledger_key(instance: str) -> str:
    """The handles ``instance`` was issued and has not read the results of (what it may await)."""
    return f"c.{instance}.handles"


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Settings of the layout that change with the deployment, not the code."""

    replicas: int = 1
    storage: StorageType = StorageType.FILE
    #: Failed attempts of an agent at a task before the task goes to the dead-letter stream.
    max_attempts: int = 4
    #: Deliveries of one task, whatever the cause, before it is dead-lettered: a task on which
    #: hosts keep crashing must not circle for ever. NATS trouble during commits also counts here
    #: (with backoff up to 30 s, this allows minutes of it), not against ``max_attempts``.
    max_deliveries: int = 25
    #: How long a task stays with a host that stopped answering for it. Working hosts send
    #: progress every third of it, so this only bounds how long a crashed host's tasks wait.
    ack_wait_s: float = 6.0


def _stream(layout: Layout, **config: Any) -> StreamConfig:
    base: dict[str, Any] = {
        "num_replicas": layout.replicas,
        "storage": layout.storage,
        "duplicate_window": DUPLICATE_WINDOW_S,
        # Reads by subject (status, results, inbox, logs) are direct gets, served by any replica.
        "allow_direct": True,
    }
    base.update(config)
    return StreamConfig(**base)


def _static_streams(layout: Layout) -> list[StreamConfig]:
    return [
        _stream(
            layout,
            name=f"KV_{STATE_BUCKET}",
            description="dagr agent state, commit markers and inbox cursors",
            subjects=[f"$KV.{STATE_BUCKET}.>"],
            allow_rollup_hdrs=True,
            allow_msg_ttl=True,
            allow_atomic=True,
            deny_delete=True,
            discard=DiscardPolicy.NEW,
            max_consumers=-1,
            max_msgs=-1,
            max_msgs_per_subject=1,
        ),
        _stream(
            layout,
            name=SCHEDULES_STREAM,
            description="pending wakes (one schedule per instance) and fired wakes",
            subjects=["dagr.sched.>", "dagr.wake.>"],
            allow_msg_schedules=True,
            allow_msg_ttl=True,
            # Fired wakes are sourced into the task streams; keep them a day for inspection.
            max_age=DAY_S,
        ),
        _stream(
            layout,
            name=INBOX_STREAM,
            description="replies from children, kept until read (cursor in dagr-state)",
            subjects=["dagr.inbox.>"],
            max_age=30 * DAY_S,
        ),
        _stream(
            layout,
            name=INSTANCES_STREAM,
            description="each instance's journal (one record per invocation), its model calls, "
            "the spawn tree, cancellations",
            subjects=["dagr.inst.>", "dagr.calls.>", "dagr.tree.>", "dagr.cancel.>"],
            # A long-lived instance keeps its last thousand records.
            max_msgs_per_subject=1000,
            max_age=30 * DAY_S,
        ),
        _stream(
            layout,
            name=DEAD_STREAM,
            description="tasks that failed every attempt, with the error",
            subjects=["dagr.dead.>"],
        ),
        _stream(
            layout,
            name=AGENTS_STREAM,
            description="what agents publish for people (agents.main.>)",
            subjects=list(AGENTS_SUBJECTS),
            max_age=30 * DAY_S,
        ),
    ]


async def _ensure_stream(js: JetStreamContext, config: StreamConfig, *, update: bool = True) -> None:
    assert config.name is not None
    try:
        existing = await js.stream_info(config.name)
        if not update:
            return
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError as exc:
            if exc.err_code != 10058:  # created meanwhile by another host: fall through and update
                raise
            existing = await js.stream_info(config.name)
    # Replication is the deployment's choice, made when it was laid out: a host started with other
    # settings must not change it.
    config.num_replicas = existing.config.num_replicas
    await js.update_stream(config)


async def deployment_replicas(js: JetStreamContext, layout: Layout) -> int:
    """The replica count of this deployment: that of its registry, once it exists."""
    try:
        info = await js.stream_info(f"KV_{REGISTRY_BUCKET}")
    except NotFoundError:
        return layout.replicas
    return info.config.num_replicas or layout.replicas


async def ensure_layout(js: JetStreamContext, layout: Layout, *, update: bool = True) -> None:
    """Create or update every stream and bucket of the layout. Safe to run from many hosts at once.

    With ``update=False`` (hosts), existing streams are left as they are and only missing ones are
    created: a host's role may read the layout but not change it (an admin lays it out).
    """
    try:
        for config in _static_streams(layout):
            await _ensure_stream(js, config, update=update)
        registry = await _ensure_kv(js, REGISTRY_BUCKET, layout, history=64)
        await _ensure_object_store(js, layout)
    except APIError as exc:
        raise RuntimeFailure(f"could not set up the JetStream layout: {exc}") from exc
    await _check_version(js, layout, registry, upgrade=update)


async def _ensure_kv(js: JetStreamContext, bucket: str, layout: Layout, *, history: int) -> Any:
    try:
        return await js.key_value(bucket)
    except Exception:  # nats-py raises BucketNotFoundError or NotFoundError depending on the path
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket, history=history, replicas=layout.replicas, storage=layout.storage, direct=True
            )
        )


async def _ensure_object_store(js: JetStreamContext, layout: Layout) -> None:
    try:
        await js.object_store(MODULES_BUCKET)
    except Exception:
        await js.create_object_store(
            MODULES_BUCKET,
            config=ObjectStoreConfig(
                description="agent modules, named by sha256",
                replicas=layout.replicas,
                storage=layout.storage,
            ),
        )


async def _check_version(js: JetStreamContext, layout: Layout, registry: Any, *, upgrade: bool) -> None:
    from nats.js.errors import KeyNotFoundError

    key = "layout.version"
    try:
        entry = await registry.get(key)
        stored = int(entry.value.decode())
    except KeyNotFoundError:
        # Another host may write it first; then the next start checks it.
        with contextlib.suppress(Exception):
            await registry.create(key, str(LAYOUT_VERSION).encode())
        return
    if stored > LAYOUT_VERSION:
        raise RuntimeFailure(
            f"this JetStream store was laid out by a newer dagr (layout {stored}, this one knows "
            f"{LAYOUT_VERSION}); upgrade dagr-wasm on this host"
        )
    if stored < LAYOUT_VERSION and upgrade:
        # Layout 2: trusted tasks travel on dagr.task.<s>. Hosts of layout 1 would still send them
        # on the topic, where they are not trusted: from here on they refuse to start.
        # Layout 3: model call records on dagr.calls.<i> (DAGR_INSTANCES, updated above); outbound
        # calls on dagr.call.<s>, each specialist's stream and consumers updated here.
        await _ensure_every_specialist(js, layout, registry)
        await registry.put(key, str(LAYOUT_VERSION).encode())


async def ensure_specialist(js: JetStreamContext, layout: Layout, specialist: str) -> None:
    """The task stream of one specialist: its topic, plus its fired wakes sourced from schedules."""
    from nats.js.api import AckPolicy, ConsumerConfig

    layout = replace(layout, replicas=await deployment_replicas(js, layout))

    await _ensure_stream(
        js,
        _stream(
            layout,
            name=tasks_stream(specialist),
            description=f"tasks for specialist {specialist}",
            subjects=[topic(specialist), task_subject(specialist), call_subject(specialist)],
            retention=RetentionPolicy.WORK_QUEUE,
            sources=[StreamSource(name=SCHEDULES_STREAM, filter_subject=f"dagr.wake.{specialist}.>")],
        ),
    )
    # Two consumers with disjoint filters (a work queue allows no overlap): the tasks that run
    # agents, and the outbound calls. A consumer of layout 2 had no filter: it is narrowed (its
    # other settings kept) before the calls' consumer can exist.
    stream = tasks_stream(specialist)
    for name, filters in (
        (
            consumer_name(specialist),
            [topic(specialist), task_subject(specialist), f"dagr.wake.{specialist}.>"],
        ),
        (call_consumer_name(specialist), [call_subject(specialist)]),
    ):
        try:
            existing = (await js.consumer_info(stream, name)).config
        except NotFoundError:
            existing = None
        if existing is None:
            config = ConsumerConfig(
                durable_name=name,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=layout.ack_wait_s,
                # Unlimited at the server: the host dead-letters a task itself on its last attempt,
                # so a host dying during that attempt cannot strand the task (see _host.py).
                max_deliver=-1,
                max_ack_pending=10_000,
                filter_subjects=filters,
            )
        elif sorted(existing.filter_subjects or [existing.filter_subject or ">"]) != sorted(filters):
            config = replace(existing, filter_subject=None, filter_subjects=filters)
        else:
            continue
        await js.add_consumer(stream, config)


async def _ensure_every_specialist(js: JetStreamContext, layout: Layout, registry: Any) -> None:
    """Bring the task stream and consumers of every registered specialist up to this layout."""
    from nats.js.errors import NoKeysError

    try:
        keys = await registry.keys()
    except NoKeysError:
        return
    for key in keys:
        if key.startswith("spec."):
            await ensure_specialist(js, layout, key.removeprefix("spec."))
