"""The host: one delivery's path, decode -> decide -> run -> commit -> ack.

The host is split by role: ``_catalog.py`` knows what can run here (specialists, versions and
compiled components, bounded); ``_feed.py`` is the worker loop (pull from one durable consumer per
specialist, shared by all hosts so JetStream balances the work; slots; heartbeat; drain);
``_decide.py`` holds the decisions, pure functions of the task, the journal and the outcome; the
sandbox runs on ``_workers.py``'s threads; ``_commit.py`` commits. This module puts them together.

It follows the registry: a specialist registered after the host started is picked up without a
restart, and a newly deployed module is compiled when the host sees the deploy, not on the first
task. ``stop()`` stops fetching and lets in-flight invocations finish (bounded); what does not
finish in time is handed back (nak) for another host.

Failure handling, by who is at fault:

- the agent trapped or exhausted a limit: retry with backoff (``nak(delay)``) up to
  ``Layout.max_attempts``, then commit it as dead: dead-letter record, error reply, status ``dead``.
  Attempts count the agent's failures (kept in the state bucket), not deliveries;
- the agent returned ``err``: a final failure, committed as such (no retry);
- a state conflict: re-run on fresh state, at once, a few times;
- NATS trouble or a bug of ours: nak with a delay and let any host try again.

The server's ``max_deliver`` is unlimited: the host itself dead-letters a task on the attempt after
the last, so a host dying during the last attempt cannot strand a task in the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from .. import CONTRACTS
from ..budget import Spend, call_estimate
from ..chat import ChatRequest, otel_input_messages, otel_output_messages
from ..errors import CommitConflict
from ..invocation import (
    ErrorKind,
    Event,
    GuestError,
    HttpCall,
    Invocation,
    ModelCall,
    Outcome,
    RepliesConsumed,
    Resolution,
    Resumed,
    SignalSend,
    Spawn,
    Status,
    signal_handle,
)
from ..models import ModelAnswer, ModelRouter, ModelsConfig
from ..outbound import HttpPolicy, OutboundHttp
from ..policy import Capabilities, Limits
from ._auth import Signature, verify_module
from ._budget import BudgetBook, BudgetRefused
from ._catalog import MAX_AGENTS, Catalog, Lru
from ._commit import (
    CommitContext,
    Committer,
    Outbox,
    OutboxRefused,
    add_poke,
    invocation_record,
    iso_at,
)
from ._decide import EventDecision, JournalHead, await_satisfied, decide_error, decide_event
from ._feed import FeedConfig, TaskFeed, is_call, quietly
from ._layout import (
    INSTANCES_STREAM,
    MARKER_TTL_S,
    SCHEDULES_STREAM,
    Layout,
    calls_subject,
    dead_subject,
    ensure_layout,
    failures_key,
    host_key,
    inbox_subject,
    record_subject,
    sched_subject,
    task_subject,
    tasks_stream,
    tree_key,
    trusted_subject,
    wake_subject,
)
from ._records import DeadLetter, InstanceState, JournalRecord, ModelCallRecord
from ._registry import Registry, SpecialistVersion
from ._state import KV_PREFIX, KvStateView, LazyInbox, LazyLedger, StateReader
from ._tasks import (
    SENT_HEADER,
    TASK_HEADER,
    Task,
    TaskError,
    decode_task,
    encode_inbox_entry,
    encode_resolution,
    encode_task,
    wake_from_record,
)
from ._workers import WorkerPool

__all__ = ["Executor", "Host", "HostConfig", "HostStats"]

#: How long a host's announcement outlives its last refresh.
_ANNOUNCE_TTL_S = 30

_log = logging.getLogger(__name__)

#: The contract without ``lifecycle.await``: its agents keep no handle ledger.
_AWAITLESS_CONTRACT = CONTRACTS[0]

#: Cancelled instance ids each host keeps in memory.
MAX_CANCELLED = 65_536


class Executor(Protocol):
    """What runs invocations; ``dagr_wasm.sandbox.Sandbox`` is one. Called from worker threads."""

    def load_cached(
        self, digest: str, *, source: str | None = ..., limits: Limits | None = ...
    ) -> Any | None: ...

    def load(
        self,
        wasm: bytes,
        *,
        source: str = ...,
        expected_digest: str | None = ...,
        limits: Limits | None = ...,
    ) -> Any: ...

    def run(self, agent: Any, invocation: Invocation) -> Outcome: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    layout: Layout = Layout()
    #: Agents running on this host at once (wasm slots): with each instance's memory limit, what
    #: bounds the memory agents may take.
    concurrency: int = 16
    #: Tasks fetched and not yet acked at most: waiting for a wasm slot, deciding, running or
    #: committing (default: four per wasm slot). A task spends most of its time in round trips to
    #: the server, so a pipeline deeper than the wasm slots keeps them busy (see _feed.py).
    in_flight: int | None = None
    #: Threads running wasm at most (default: one per slot). An idle thread is reused before a new one
    #: starts, so short work stays on one hot thread (measured: two threads taking turns made trivial
    #: invocations slower); more start only while others are busy, so a slow agent never holds up
    #: the rest. See _workers.py. More cores are used by more host processes.
    workers: int | None = None
    #: Agents of one specialist running at once at most (default: half the slots, at least one),
    #: so that one specialist's agents, hostile or just busy, cannot take every slot from the
    #: others; its tasks in flight are capped in the same proportion.
    specialist_concurrency: int | None = None
    #: Outbound calls (model and HTTP tasks) in flight at most: they wait on a remote, run no
    #: agent code and hold no wasm slot; one specialist may hold half. Each provider is further
    #: bounded by its alias's ``concurrency``.
    call_concurrency: int = 1024
    #: A worker running one invocation longer than this drops to the lowest CPU priority, so that
    #: short invocations beside long or hostile ones keep their latency.
    demote_after_s: float = 0.05
    #: Messages fetched per pull request at most.
    fetch_batch: int = 64
    #: Delay before retrying a failed attempt n (1-based); the last value repeats.
    retry_backoff_s: tuple[float, ...] = (0.5, 2.0, 8.0, 30.0)
    #: Re-runs after state conflicts before the task is handed back with a delay.
    max_conflict_reruns: int = 8
    #: How long ``stop()`` waits for in-flight invocations.
    drain_timeout_s: float = 30.0
    #: Loaded components kept in memory at most (the least recently used is dropped first).
    max_loaded_agents: int = MAX_AGENTS
    #: nkey public keys of the publishers whose signed modules this host runs; empty: any module.
    #: A task of a version that is unsigned, signed by anyone else, or whose signature does not
    #: verify ends ``dead`` with the reason (its instance's status says why).
    trusted_publishers: frozenset[str] = frozenset()
    #: Agents' outbound calls: the host-held secrets, whether private addresses are reachable.
    http: HttpPolicy = field(default_factory=HttpPolicy)
    #: The model aliases agents' ``model.chat`` may name here (``dagr host --models FILE``).
    models: ModelsConfig = field(default_factory=ModelsConfig)
    #: First wait before retrying a model provider's rate limit or outage (doubling, capped).
    model_backoff_s: float = 1.0
    #: Whether model call records (``dagr logs``) hold the conversation and the answer's text;
    #: off by default: prompts and completions may carry what the operator must not keep.
    record_model_text: bool = False
    host_id: str = "host"


@dataclass(slots=True)
class HostStats:
    invocations: int = 0
    committed: int = 0
    replayed: int = 0
    retried: int = 0
    dead: int = 0
    conflicts: int = 0
    dropped: int = 0
    per_specialist: dict[str, int] = field(default_factory=dict)


class Host:
    """One host process's worker. ``await run()`` until ``await stop()``."""

    def __init__(self, nc: NATS, js: JetStreamContext, executor: Executor, config: HostConfig) -> None:
        self._nc = nc
        self._js = js
        self._executor = executor
        self.config = config
        self.registry = Registry(js, layout=config.layout)
        self._reader = StateReader(js)
        self._committer = Committer(nc, js, self._reader)
        self._workers = WorkerPool(
            max_workers=config.workers or config.concurrency, demote_after_s=config.demote_after_s
        )
        specialist_cap = min(
            config.specialist_concurrency or max(1, config.concurrency // 2), config.concurrency
        )
        # The CLI refuses an in-flight bound below the slots; an embedder's is raised to them.
        in_flight = max(config.in_flight or 4 * config.concurrency, config.concurrency)
        self._feed = TaskFeed(
            js,
            FeedConfig(
                concurrency=config.concurrency,
                specialist_cap=specialist_cap,
                in_flight=in_flight,
                specialist_in_flight=max(1, in_flight * specialist_cap // config.concurrency),
                fetch_batch=config.fetch_batch,
                heartbeat_s=config.layout.ack_wait_s / 3,
                call_concurrency=config.call_concurrency,
                specialist_call_cap=max(1, config.call_concurrency // 2),
            ),
            handle=self._process,
            long_running=self._record_running,
        )
        self.catalog = Catalog(self.registry, executor, max_agents=config.max_loaded_agents)
        self._pulling: set[str] = set()
        self._instance_locks: dict[str, _InstanceLock] = {}
        #: What each message in flight is running (task, version, attempt), by id(msg): for the
        #: `running` record of a long invocation.
        self._running: dict[int, tuple[Task, int, int]] = {}
        #: Instances cancelled with `dagr cancel` (followed from dagr.cancel.>), the latest
        #: MAX_CANCELLED of them; older ones are told apart by their journal when a task comes.
        self._cancelled: Lru[str, bool] = Lru(MAX_CANCELLED)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        #: Set once the host pulls for every specialist registered when it started.
        self.ready = asyncio.Event()
        self.stats = HostStats()
        self._http = OutboundHttp(config.http)
        self._models = ModelRouter(config.models, backoff_base_s=config.model_backoff_s)
        self._budgets = BudgetBook(self._reader, self._committer)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``. Lays out JetStream first (idempotent)."""
        await ensure_layout(self._js, self.config.layout, update=False)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._follow_registry())
                group.create_task(self._follow_cancellations())
                group.create_task(self._announce())
                group.create_task(self._feed.heartbeat())
                await self._stopping.wait()
                await self._feed.drain(self.config.drain_timeout_s)
                raise _Stop
        except* _Stop:
            pass
        finally:
            self._workers.shutdown()
            await self._http.aclose()
            await self._models.aclose()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching, let in-flight invocations finish, hand back the rest. Safe to call twice."""
        self._stopping.set()
        await self._stopped.wait()

    def prepared(self, digest: str) -> bool:
        """Whether the module ``digest`` is compiled and loaded on this host."""
        return self.catalog.loaded(digest)

    # -- the registry ------------------------------------------------------------------------------

    async def _follow_registry(self) -> None:
        # A lost connection ends a watch; the host outlives it and watches again.
        while not self._stopping.is_set():
            try:
                for spec in await self.registry.list():
                    self._learn(spec)
                self.ready.set()
                async for spec in self.registry.watch():
                    self._learn(spec)
            except Exception as exc:
                _log.warning("following the registry failed (%r); again in 1 s", exc)
            await asyncio.sleep(1.0)

    def _learn(self, spec: SpecialistVersion) -> None:
        self.catalog.learn(spec)
        assert self._group is not None
        if spec.digest is not None and not self.catalog.loaded(spec.digest):
            # Compile now, not when the first task arrives.
            self._group.create_task(self._prepare(spec))
        if spec.name not in self._pulling:
            self._pulling.add(spec.name)
            self._group.create_task(
                self._feed.pull(spec.name, stopping=self._stopping, spawn=self._group.create_task)
            )
            self._group.create_task(
                self._feed.pull_calls(spec.name, stopping=self._stopping, spawn=self._group.create_task)
            )

    async def _prepare(self, spec: SpecialistVersion) -> None:
        try:
            await self.catalog.agent_for(spec)
        except Exception as exc:  # its tasks will retry the load, and say why they fail
            _log.warning("could not prepare %s version %d: %r", spec.name, spec.version, exc)

    async def _record_running(self, msg: Msg, running_for_s: float) -> None:
        """A `running` record for a long invocation, appended only over the record it was decided
        on: it must never land after the final record of this task (another host may have finished
        it meanwhile, as a frozen host comes back), or status and reply routing would read it."""
        running_now = self._running.get(id(msg))
        if running_now is None:
            return  # not running yet (deciding) or done
        task, version, attempt = running_now
        started_ms = int(time.time() * 1000 - running_for_s * 1000)
        head = await self._journal_head(task.instance_id)
        if head is not None and head.record.updated_ms >= started_ms:
            return  # recorded since this invocation began (another host finished it?): only a hint
        running = JournalRecord.of(
            task,
            version=version,
            state=InstanceState.RUNNING,
            attempt=attempt,
            now_ms=int(time.time() * 1000),
        ).encode()
        try:
            await self._js.publish(
                record_subject(task.instance_id),
                running,
                headers={"Nats-Expected-Last-Subject-Sequence": str(head.seq if head else 0)},
            )
        except APIError as exc:
            _log.debug("no running record for %s: its journal moved on (%r)", task.task_id, exc)

    async def _announce(self) -> None:
        """Say, while running, which publishers' modules this host runs (``dagr deploy`` reads it
        to warn about a version some hosts will refuse). Expires if the host dies."""
        doc = json.dumps(
            {"host": self.config.host_id, "trusted_publishers": sorted(self.config.trusted_publishers)}
        )
        while not self._stopping.is_set():
            await quietly(
                self._js.publish(
                    KV_PREFIX + host_key(self.config.host_id), doc.encode(), msg_ttl=_ANNOUNCE_TTL_S
                )
            )
            await asyncio.sleep(_ANNOUNCE_TTL_S / 3)

    async def _follow_cancellations(self) -> None:
        """Keep the set of cancelled instances: their queued tasks are dropped, not run."""
        while not self._stopping.is_set():
            try:
                subscription = await self._js.subscribe(
                    "dagr.cancel.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                )
                async for msg in subscription.messages:
                    self._cancelled.put(msg.subject.rsplit(".", 1)[-1], True)
            except Exception as exc:
                _log.warning("following cancellations failed (%r); again in 1 s", exc)
            await asyncio.sleep(1.0)

    def _backoff(self, attempt: int) -> float:
        delays = self.config.retry_backoff_s
        return delays[min(max(attempt, 1), len(delays)) - 1]

    # -- one task ----------------------------------------------------------------------------------

    async def _process(self, name: str, msg: Msg) -> None:
        meta = msg.metadata
        now_ms = int(time.time() * 1000)
        try:
            task = decode_task(
                msg.data,
                msg.headers,
                specialist=name,
                stream_seq=meta.sequence.stream,
                stream=tasks_stream(name),
                now_ms=now_ms,
                trusted=trusted_subject(msg.subject),
            )
        except TaskError as exc:
            await self._dead_letter_raw(name, msg, str(exc))
            return
        self.stats.invocations += 1
        self.stats.per_specialist[name] = self.stats.per_specialist.get(name, 0) + 1

        redelivered = meta.num_delivered > 1
        # A wake or reply can come again as a *new* message: a late replay of the outbox that made
        # it (a host frozen past its ack wait, a server that lost its duplicate memory in a
        # restart). Its own commit marker says whether it already happened. Only a redelivery
        # replays the stored outbox: a host acks a task only once its outbox is out, so the
        # first copy of a committed task that was not acked comes back itself, and a new copy of
        # one has nothing left to send (replaying it past the server's 10-minute duplicate window
        # would send its effects again).
        replayable = redelivered or task.kind in ("wake", "reply", "signal", "http", "model")
        if meta.num_delivered > self.config.layout.max_deliveries and await self._committer.committed(
            task.task_id
        ):
            # Committed, but its outbox would not go out in all these deliveries: stop replaying it.
            await self._dead_letter_committed(task, f"its committed outbox was not published after "
                                              f"{meta.num_delivered - 1} deliveries")  # fmt: skip
            await msg.ack()
            return
        if replayable:
            try:
                replayed = await (
                    self._committer.replay(task.task_id)
                    if redelivered
                    else self._committer.committed(task.task_id)
                )
            except OutboxRefused as exc:
                await self._dead_letter_committed(task, f"its committed outbox cannot be published: {exc}")
                await msg.ack()
                return
            if replayed:
                # Committed before (we crashed, or lost the lease after committing): replayed; ack.
                self.stats.replayed += 1
                if task.kind == "wake":  # an old schedule come back may have replaced the pending one
                    await self._repair_wake(task, await self._journal_head(task.instance_id))
                await msg.ack()
                return

        spec = await self.catalog.version(name, task.version)
        if spec is None or spec.digest is None:
            # Not deployed (yet): wait for a deploy rather than burn attempts.
            await msg.nak(delay=self._backoff(3))
            return
        task = task.pinned(spec.version)

        if task.instance_id in self._cancelled:
            # `dagr cancel`: its queued tasks are dropped, not run.
            self.stats.dropped += 1
            await msg.ack()
            return
        if is_call(msg) and task.kind not in ("http", "model"):
            # Only hosts and admins publish calls; a task that runs agent code must not get past
            # the wasm slots by coming that way.
            await self._dead_letter_raw(name, msg, f"a {task.kind} task queued as an outbound call")
            return
        if task.kind in ("poke", "signal", "http", "model"):
            await self._resolve(task, spec)
            await msg.ack()
            return
        if task.kind in ("wake", "reply"):
            # Both act on an instance that exists already: its journal decides what they may do.
            head = await self._journal_head(task.instance_id)
            decision = decide_event(task, head)
            if decision is EventDecision.DROP:
                self.stats.dropped += 1
                await self._repair_wake(task, head)
                await msg.ack()
                return
            if decision is EventDecision.PARK:
                await self._park_reply(task)
                await msg.ack()
                return
            if head is not None and task.kind == "reply":
                task = task.with_lineage(head.record.lineage)

        # Attempts count the agent's failures only (kept in the state bucket); deliveries also count
        # NATS trouble during a commit, which must not use up an agent's attempts.
        attempt = (await self._failures(task.task_id) if redelivered else 0) + 1
        if meta.num_delivered > self.config.layout.max_deliveries:
            lost = GuestError(
                ErrorKind.HOST,
                f"delivered {meta.num_delivered - 1} times without finishing (a host crashing on it?)",
            )
            await self._commit_final(task, spec, attempt, now_ms, Outcome(status=Status.ERROR, error=lost))
            await msg.ack()
            return

        signed = Signature(spec.signer, spec.signature) if spec.signer and spec.signature else None
        refusal = verify_module(spec.name, spec.digest, signed, self.config.trusted_publishers)
        if refusal is not None:
            untrusted = GuestError(
                ErrorKind.DENIED, f"this host does not run version {spec.version}: {refusal}"
            )
            await self._commit_final(
                task, spec, attempt, now_ms, Outcome(status=Status.ERROR, error=untrusted)
            )
            await msg.ack()
            return
        agent = await self.catalog.agent_for(spec)
        # One invocation per instance at a time on this host: concurrent ones would only conflict on
        # the instance's state and re-run. Other hosts may still race; the commit's guards settle it.
        lock = self._instance_locks.setdefault(task.instance_id, _InstanceLock())
        lock.users += 1
        try:
            async with lock.lock:
                await self._invoke(name, msg, task, spec, agent, attempt, now_ms)
        finally:
            lock.users -= 1
            if not lock.users:
                self._instance_locks.pop(task.instance_id, None)

    async def _invoke(
        self, name: str, msg: Msg, task: Task, spec: SpecialistVersion, agent: Any, attempt: int, now_ms: int
    ) -> None:
        self._running[id(msg)] = (task, spec.version, attempt)  # for a `running` record
        try:
            await self._run_and_commit(msg, task, spec, agent, attempt, now_ms)
        finally:
            self._running.pop(id(msg), None)

    async def _run_and_commit(
        self, msg: Msg, task: Task, spec: SpecialistVersion, agent: Any, attempt: int, now_ms: int
    ) -> None:
        name = task.specialist
        loop = asyncio.get_running_loop()
        for _rerun in range(self.config.max_conflict_reruns + 1):
            view = KvStateView(self._reader, loop, instance=task.instance_id, specialist=name)
            inbox = LazyInbox(self._js, self._reader, loop, instance=task.instance_id)
            # Only an agent of a contract with await can ask what it holds (0.1.0 agents pay nothing).
            ledger = (
                LazyLedger(self._reader, loop, instance=task.instance_id)
                if getattr(agent, "contract", None) != _AWAITLESS_CONTRACT
                else None
            )
            limits = _limits(spec, task)
            tree_count = await self._tree_count(task, spec)
            # Read only for agents that may call a model (the others pay nothing): one key per
            # instance of the chain up to the root.
            model_budget = await self._budgets.left(task.budget_chain(limits)) if spec.grants.models else None
            event: Event = task.event()
            if task.kind == "wake" and task.awaiting:
                # The end of an await: every unread result goes in the event (and is read by it).
                resolved = tuple(await inbox.load())
                handles = {r.handle for r in resolved}
                event = Resumed(
                    resolved=resolved,
                    pending=tuple(h for h in task.awaiting if h not in handles),
                    timed_out=not await_satisfied(task.awaiting, task.await_mode, handles),
                    resume_context=task.context,
                )
            invocation = Invocation(
                task_id=task.task_id,
                instance_id=task.instance_id,
                specialist=name,
                event=event,
                parent_id=task.parent_id,
                attempt=attempt,
                config_text=spec.config_text,
                capabilities=Capabilities(own=spec.grants, ceilings=task.ceilings),
                limits=limits,
                state=view,
                inbox=() if isinstance(event, Resumed) else inbox,
                handles=ledger,
                spawnable=self.catalog.spawnable,
                now_unix_ms=int(time.time() * 1000),
                spawn_depth=task.depth,
                tree_spawns_left=max(limits.max_tree_instances - 1 - tree_count[0], 0),
                model_budget=model_budget,
            )
            async with self._feed.running(name, msg):
                outcome = await self._workers.run(self._executor.run, agent, invocation)
            if outcome.status is Status.ERROR:
                retry = decide_error(
                    outcome,
                    attempt=attempt,
                    max_attempts=self.config.layout.max_attempts,
                    backoff_s=self.config.retry_backoff_s,
                )
                if retry is not None:
                    await self._count_failure(task.task_id, attempt)
                    await self._record_retry(task, spec, attempt, outcome)
                    await msg.nak(delay=retry.delay_s)
                    self.stats.retried += 1
                else:
                    await self._commit_final(task, spec, attempt, now_ms, outcome)
                    await msg.ack()
                return
            ctx = replace(
                await self._context(task, spec, attempt, outcome, inbox),
                tree_count=tree_count,
                ledger=await _ledger_update(outcome, inbox, ledger) if ledger is not None else None,
            )
            try:
                fresh = await self._committer.commit(ctx, outcome)
            except CommitConflict:
                self.stats.conflicts += 1
                continue
            except OutboxRefused as exc:
                # What it did can never be committed: final at once, with the reason.
                refused = Outcome(status=Status.ERROR, error=GuestError(ErrorKind.QUOTA, str(exc)))
                await self._commit_final(task, spec, attempt, now_ms, refused)
                await msg.ack()
                return
            if fresh:
                self.stats.committed += 1
            else:  # another host committed it first (we lost the task while running it)
                self.stats.replayed += 1
            await msg.ack()
            return
        await msg.nak(delay=self._backoff(1))

    async def _context(
        self, task: Task, spec: SpecialistVersion, attempt: int, outcome: Outcome, inbox: LazyInbox
    ) -> CommitContext:
        replies_to_parent = outcome.status is not Status.SUSPENDED and task.parent_id and not task.reply_to
        return CommitContext(
            task=task,
            version=spec.version,
            attempt=attempt,
            now_ms=int(time.time() * 1000),
            child_versions=self.catalog.current_versions,
            parent_suspended=bool(replies_to_parent) and await self._is_suspended(task.parent_id or ""),
            cursor_revision=inbox.cursor_revision,
            host=self.config.host_id,
            own_grants=spec.grants,
            limits=_limits(spec, task),
            signal_targets=await self._signal_targets(outcome),
        )

    async def _signal_targets(self, outcome: Outcome) -> dict[str, str | None]:
        """The specialist of every instance ``outcome`` signals (None: no such instance)."""
        targets: dict[str, str | None] = {}
        for effect in outcome.effects:
            if isinstance(effect, SignalSend) and effect.instance_id not in targets:
                head = await self._journal_head(effect.instance_id)
                live = head is not None and not head.record.ended
                targets[effect.instance_id] = head.record.specialist if live and head else None
        return targets

    # -- results: signals, outbound calls, and the pokes that wake awaits ---------------------------

    async def _resolve(self, task: Task, spec: SpecialistVersion) -> None:
        """A task that stores a result for an instance (signal, http, model) or checks its await (poke).

        None of them runs agent code. A stored result is a commit like a parked reply: a marker
        holding its outbox (the inbox entry and a poke), so a redelivery never stores it twice and
        an HTTP or model call whose answer is stored is never made again.
        """
        if task.kind == "poke":
            await self._poke(task)
            return
        head = await self._journal_head(task.instance_id)
        if head is None or head.record.ended:
            self.stats.dropped += 1
            _log.info(
                "%s for %s dropped: the instance has ended or does not exist", task.kind, task.instance_id
            )
            if task.kind == "model":
                await self._release_hold(task, spec)
            return
        if task.kind == "signal":
            resolution = Resolution(
                handle=signal_handle(task.subject), kind="signal", ok=task.payload, source=task.subject
            )
        elif task.kind == "model":
            await self._call_model(task, spec)
            return
        else:
            assert task.http_request is not None
            resolution = await self._http.call(
                task.handle,
                task.http_request,
                Capabilities(own=spec.grants, ceilings=task.ceilings),
                max_body_bytes=_limits(spec, task).max_http_response_bytes,
            )
        await self._store_in_inbox(task, encode_resolution(resolution, task.task_id))
        self.stats.committed += 1

    async def _call_model(self, task: Task, spec: SpecialistVersion) -> None:
        """Make a model call once, within the budgets of the instance and every ancestor: hold its
        estimate, call, then book what it used and store the answer in one commit (_budget.py)."""
        request = task.chat_request
        assert request is not None
        chain = task.budget_chain(_limits(spec, task))
        alias = self._models.alias(request.model)
        held: Spend | None = None
        started = time.monotonic()
        if not Capabilities(own=spec.grants, ceilings=task.ceilings).allows_model(request.model):
            # The version it runs as now (or an ancestor) no longer grants the alias.
            answer = _refused(task, "denied", f"model alias {request.model!r} is not granted: grants.models")
        elif alias is None:
            answer = await self._models.call(task.handle, request)  # resolves unavailable, says why
        else:
            estimate = call_estimate(
                request,
                max_output_tokens=alias.max_output_tokens,
                input_usd_per_mtok=alias.input_usd_per_mtok,
                output_usd_per_mtok=alias.output_usd_per_mtok,
            )
            hold = await self._budgets.hold(task.handle, chain, estimate)
            if isinstance(hold, BudgetRefused):
                answer = _refused(task, "quota-exceeded", str(hold))
            else:
                held = hold
                answer = await self._models.call(task.handle, request)
        outbox = Outbox()
        record = self._call_record(task, request, answer, duration_s=time.monotonic() - started)
        outbox.add(task.task_id, calls_subject(task.instance_id), record.encode())
        outbox.add(
            task.task_id, inbox_subject(task.instance_id), encode_resolution(answer.resolution, task.task_id)
        )
        add_poke(outbox, task.task_id, task.instance_id, task.specialist)
        if held is None:
            fresh = await self._committer.commit_outbox(task.task_id, outbox)
        else:
            fresh = await self._budgets.settle(task.task_id, chain, held, answer.usage, outbox)
        if fresh:
            self.stats.committed += 1
        else:
            self.stats.replayed += 1

    def _call_record(
        self, task: Task, request: ChatRequest, answer: ModelAnswer, *, duration_s: float
    ) -> ModelCallRecord:
        resolution = answer.resolution
        chat = resolution.chat
        text = self.config.record_model_text
        return ModelCallRecord(
            instance=task.instance_id,
            handle=task.handle,
            alias=request.model,
            at_ms=int(time.time() * 1000),
            provider=answer.provider,
            request_model=answer.model,
            response_model=chat.model if chat else "",
            input_tokens=answer.usage.input_tokens,
            output_tokens=answer.usage.output_tokens,
            finish_reason=chat.finish_reason.value if chat else "",
            duration_s=duration_s,
            cost_usd=answer.usage.cost_usd,
            attempts=answer.attempts,
            max_tokens=request.max_output_tokens,
            temperature=request.temperature,
            error_type=None if chat else resolution.error_kind,
            error=None if chat else resolution.error,
            host=self.config.host_id,
            input_messages=otel_input_messages(request) if text else None,
            output_messages=otel_output_messages(chat) if text and chat else None,
        )

    async def _release_hold(self, task: Task, spec: SpecialistVersion) -> None:
        """A model call dropped after its estimate was held (its instance ended meanwhile): give
        the hold back to every account, once, so the tree's budget is not lost to it."""
        held = await self._budgets.held_for(task.handle)
        if held is not None:
            chain = task.budget_chain(_limits(spec, task))
            await self._budgets.settle(task.task_id, chain, held, Spend(), Outbox())

    async def _store_in_inbox(self, task: Task, entry: bytes) -> None:
        """Store a result in ``task``'s instance's inbox and poke its await: a commit of the two
        (a marker holding them), so the same task delivered again never stores it twice."""
        outbox = Outbox()
        outbox.add(task.task_id, inbox_subject(task.instance_id), entry)
        add_poke(outbox, task.task_id, task.instance_id, task.specialist)
        await self._committer.commit_outbox(task.task_id, outbox)

    async def _poke(self, task: Task) -> None:
        """Wake the instance now if its await is satisfied: its pending deadline wake is cancelled,
        and the same wake is sent to the specialist's tasks at once.

        Not by moving the schedule to now: nats-server fires a schedule due now up to ~250 ms
        late (its scheduler's timer; 219 ms p50 of every await in bench_models), on every turn of
        a model-driven agent. The deadline is cancelled first: a plain message carrying the same
        wake replaces the schedule (guarded by its sequence, so a newer schedule stays; a plain
        message on a schedule's subject cancels it). Then the wake goes out under an id of its
        own. A host dying between the two leaves this poke to be delivered again: it finds the
        same wake on the subject and sends it (the id dedupes a second copy)."""
        head = await self._journal_head(task.instance_id)
        if head is None or head.record.state is not InstanceState.SUSPENDED or not head.record.awaiting:
            return
        record = head.record
        loop = asyncio.get_running_loop()
        entries = await LazyInbox(self._js, self._reader, loop, instance=task.instance_id).load()
        if not await_satisfied(record.awaiting, record.await_mode, {e.handle for e in entries}):
            return
        schedule = sched_subject(record.specialist, record.id)
        try:
            pending = await self._js.get_msg(SCHEDULES_STREAM, subject=schedule, direct=True)
        except NotFoundError:
            return  # the deadline fired already: that wake is on its way
        wake = decode_task(
            pending.data or b"", {TASK_HEADER: "1"}, specialist=record.specialist, stream_seq=0,
            stream=SCHEDULES_STREAM, now_ms=int(time.time() * 1000),
        )  # fmt: skip
        if wake.task_id != record.wake_task:
            return  # not this await's wake (moved by an operator, or a newer one)
        try:
            await self._js.publish(
                schedule,
                pending.data or b"",
                headers={
                    TASK_HEADER: "1",
                    SENT_HEADER: "1",
                    # Only over the schedule just read: a newer one (the instance moved on) stays.
                    "Nats-Expected-Last-Subject-Sequence": str(pending.seq),
                },
            )
        except APIError as exc:
            _log.debug("await of %s not woken early: its schedule moved on (%r)", record.id, exc)
            return
        await self._js.publish(
            task_subject(record.specialist),
            pending.data or b"",
            headers={TASK_HEADER: "1", "Nats-Msg-Id": f"{wake.task_id}.now"},
        )

    async def _commit_final(
        self, task: Task, spec: SpecialistVersion, attempt: int, now_ms: int, outcome: Outcome
    ) -> None:
        ctx = CommitContext(
            task=task, version=spec.version, attempt=attempt, now_ms=now_ms, host=self.config.host_id
        )
        parent_suspended = bool(task.parent_id) and await self._is_suspended(task.parent_id or "")
        await self._committer.commit(replace(ctx, parent_suspended=parent_suspended), outcome)
        self.stats.dead += 1

    async def _record_retry(
        self, task: Task, spec: SpecialistVersion, attempt: int, outcome: Outcome
    ) -> None:
        """The journal record of an attempt that will be retried; not a commit (nothing happened)."""
        ctx = CommitContext(
            task=task,
            version=spec.version,
            attempt=attempt,
            now_ms=int(time.time() * 1000),
            host=self.config.host_id,
        )
        record = invocation_record(ctx, outcome, InstanceState.RETRYING, error=str(outcome.error)).encode()
        await self._js.publish(
            record_subject(task.instance_id), record, headers={"Nats-Msg-Id": f"{task.task_id}.a{attempt}"}
        )

    async def _tree_count(self, task: Task, spec: SpecialistVersion) -> tuple[int, int]:
        """The instances of ``task``'s spawn tree besides its root, and the count's revision."""
        if not spec.grants.spawn:
            return 0, 0  # it cannot spawn: spare the read
        found = await self._reader.raw(tree_key(task.root_id or task.instance_id))
        if found is None or found[2]:
            return 0, found[1] if found is not None else 0
        return int(found[0].decode() or 0), found[1]

    async def _failures(self, task_id: str) -> int:
        """How many attempts at ``task_id`` the agent failed so far."""
        found = await self._reader.raw(failures_key(task_id))
        return int(found[0].decode() or 0) if found is not None and not found[2] else 0

    async def _count_failure(self, task_id: str, failures: int) -> None:
        found = await self._reader.raw(failures_key(task_id))
        try:
            # Guarded like a KV update, and kept as long as commit markers: long after the task is settled.
            await self._js.publish(
                KV_PREFIX + failures_key(task_id),
                str(failures).encode(),
                headers={"Nats-Expected-Last-Subject-Sequence": str(found[1] if found else 0)},
                msg_ttl=MARKER_TTL_S,
            )
        except APIError as exc:  # only this host holds the task now; a lost count costs one attempt
            _log.warning("could not count a failed attempt of %s: %r", task_id, exc)

    async def _journal_head(self, instance: str) -> JournalHead | None:
        """The last record of the instance's journal, with its sequence (None: no record yet)."""
        try:
            msg = await self._js.get_msg(INSTANCES_STREAM, subject=record_subject(instance), direct=True)
        except NotFoundError:
            return None
        return JournalHead(JournalRecord.decode(msg.data), int(msg.seq or 0))

    async def _is_suspended(self, instance: str) -> bool:
        head = await self._journal_head(instance)
        return head is not None and head.record.state is InstanceState.SUSPENDED

    async def _repair_wake(self, stale: Task, head: JournalHead | None) -> None:
        """After dropping a stale wake: if the instance still waits for its real one and no
        schedule is pending (a late replay of an old outbox replaced it), schedule it again."""
        if stale.kind != "wake" or head is None or head.record.state is not InstanceState.SUSPENDED:
            return
        record = head.record
        if record.wake_task in (None, stale.task_id):
            return  # an older record, or this very wake: nothing to re-create
        schedule = sched_subject(stale.specialist, stale.instance_id)
        try:
            last = await self._js.get_msg(SCHEDULES_STREAM, subject=schedule, direct=True)
            if (last.headers or {}).get("Nats-Schedule"):
                return  # one is pending
        except NotFoundError:
            pass
        wake = replace(
            wake_from_record(record, now_ms=int(time.time() * 1000)),
            task_id=record.wake_task,
            context=record.resume_context or "",
        )
        at_ms = max(record.wake_at_ms or 0, int(time.time() * 1000) + 1000)
        _log.warning("instance %s lost its pending wake to a stale schedule; scheduling it again",
                     stale.instance_id)  # fmt: skip
        await self._js.publish(
            schedule,
            encode_task(wake),
            headers={
                "Nats-Schedule": f"@at {iso_at(at_ms)}",
                "Nats-Schedule-Target": wake_subject(stale.specialist, stale.instance_id),
                "Dagr-Task": "1",
            },
        )

    async def _park_reply(self, task: Task) -> None:
        """A reply for a suspended instance waits in its inbox, to be read when it wakes.

        Parking is a commit like any other (a marker holding a one-message outbox), so the same
        reply delivered again later (a late replay) is recognised and never parked or run twice.
        """
        assert task.reply is not None
        await self._store_in_inbox(task, encode_inbox_entry(task.reply, task.task_id))

    async def _dead_letter_committed(self, task: Task, reason: str) -> None:
        """A task whose effects were committed but whose outbox cannot go out: recorded, not replayed."""
        record = DeadLetter(
            task=encode_task(task), error=reason, kind="outbox", at_ms=int(time.time() * 1000)
        ).encode()
        await self._js.publish(
            dead_subject(task.specialist, task.task_id),
            record,
            headers={"Nats-Msg-Id": f"dead.{task.task_id}.outbox"},
        )
        self.stats.dead += 1
        _log.warning("task %s dead-lettered: %s", task.task_id, reason)

    async def _dead_letter_raw(self, name: str, msg: Msg, reason: str) -> None:
        seq = msg.metadata.sequence.stream
        record = DeadLetter(
            raw=msg.data, error=reason, stream_seq=seq, at_ms=int(time.time() * 1000)
        ).encode()
        await self._js.publish(
            dead_subject(name, f"raw{seq}"),
            record,
            headers={"Nats-Msg-Id": f"dead.{tasks_stream(name)}.{seq}"},
        )
        await msg.ack()
        self.stats.dead += 1


def _limits(spec: SpecialistVersion, task: Task) -> Limits:
    """The limits ``task`` runs under: its version's, capped by those it inherited."""
    return spec.limits.capped_by(task.limit_ceiling) if task.limit_ceiling else spec.limits


def _refused(task: Task, kind: str, reason: str) -> ModelAnswer:
    """A model call the host will not make, as its answer."""
    request = task.chat_request
    alias = request.model if request is not None else ""
    return ModelAnswer(
        resolution=Resolution(task.handle, "model", error=reason, error_kind=kind, source=alias), alias=alias
    )


class _InstanceLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Stop(Exception):
    """Ends the host's task group once draining is done."""


async def _ledger_update(
    outcome: Outcome, inbox: LazyInbox, ledger: LazyLedger
) -> tuple[frozenset[str], int] | None:
    """What the instance holds after ``outcome`` commits, and the guard for writing it; None when
    that does not change. Handles come in with spawns (answering to it) and HTTP calls, and go
    out when their result is read."""
    if not outcome.committable:
        return None
    issued = {e.child_id for e in outcome.effects if isinstance(e, Spawn) and e.reply_to is None}
    issued.update(e.handle for e in outcome.effects if isinstance(e, HttpCall | ModelCall))
    consumed = {seq for e in outcome.effects if isinstance(e, RepliesConsumed) for seq in e.seqs}
    if not issued and not consumed:
        return None
    held = await ledger.load()
    read = {r.handle for r in await inbox.entries() if r.seq in consumed} if consumed else set()
    after = (held | issued) - read
    return (after, ledger.revision) if after != held else None
