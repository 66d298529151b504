"""The host's worker loop: pull tasks for each specialist, hand out slots fairly, keep tasks alive,
drain on stop. It knows messages and slots, not what a task means (``_host.py`` decides that).

Two kinds of slot, per host, each with the same three rules:

- *wasm slots* (``concurrency``): agents running at once, each instance up to its memory limit;
- *in-flight slots* (``in_flight``, several times more): tasks fetched and not yet acked, that is
  waiting for a wasm slot, deciding, running or committing. A task spends most of its time in
  round trips to the server (reads before the run, the commit, the ack), not in wasm; holding a
  wasm slot for all of it kept the pipeline as shallow as the memory bound (measured, 1 host, a
  trivial agent: 932 inv/s with 16 tasks in flight, 1,304 with 64).

For both kinds:

- at most a cap of them for one specialist (half, by default), so one specialist's agents
  (hostile or just busy) cannot hold every slot;
- a ``reserve`` only a specialist with nothing in flight (nothing running) may take: the cap
  alone let two hostile specialists at half the slots each fill every slot (measured: a benign
  echo's p99 went from 67 ms to 1.1 s beside them).

Outbound calls (a model's answer or an HTTP response to fetch, queued by hosts on
``dagr.call.<s>``) run no agent code and spend their time waiting on a remote: they come from a
consumer of their own (``pull_calls``) into *call slots*, many more of them (``call_concurrency``, a
specialist at most half), so a thousand agents' model calls can be in flight while the wasm slots
serve other invocations, and calls waiting for a slot wait in the stream, never in front of a
specialist's starts and wakes.

A pull never holds slots while it waits for messages: it waits until its specialist may take one,
then fetches at most that many. A fetched task that finds its slots gone meanwhile waits, kept
alive by the heartbeat, so it is not redelivered to another host while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from ._layout import call_consumer_name, consumer_name, tasks_stream

__all__ = ["FeedConfig", "RunSlots", "TaskFeed", "is_call", "quietly"]

_log = logging.getLogger(__name__)

#: How long a fetch for a batch may wait when the tasks it expected were taken by another host
#: first (it then waits for a whole batch to arrive): short, and the next fetch asks for one.
_RACE_WAIT_S = 0.05

#: Handles one fetched task; acks or naks it itself. Raising hands it back with a delay.
Handler = Callable[[str, Msg], Awaitable[None]]
#: Told once about a task still in flight after a heartbeat interval (the host records `running`).
LongRunning = Callable[[Msg, float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedConfig:
    #: Agents running at once (wasm slots), and for one specialist.
    concurrency: int
    specialist_cap: int
    #: Tasks fetched and not yet acked at most, and for one specialist.
    in_flight: int
    specialist_in_flight: int
    fetch_batch: int
    heartbeat_s: float
    #: Outbound calls in flight at most (model and HTTP tasks), and for one specialist.
    call_concurrency: int = 1024
    specialist_call_cap: int = 512

    @property
    def reserve(self) -> int:
        """In-flight slots only a specialist with none may take."""
        return _reserve(self.in_flight)


def _reserve(slots: int) -> int:
    return max(1, slots // 8) if slots > 2 else 0


@dataclass(slots=True)
class _Inflight:
    msg: Msg
    fetched: float
    #: Since when it holds a wasm slot (or waits on its remote, for a call); None while waiting.
    running_since: float | None = None
    told: bool = False
    #: An outbound call, in a call slot rather than an in-flight one.
    call: bool = False


class RunSlots:
    """The wasm slots: ``async with slots.hold(name):`` around running one of ``name``'s agents.

    Waiters are served first come, first served, skipping those whose specialist is at its cap or
    may not take the reserve, so a busy specialist never blocks another queued behind it. A
    release looks at the queue only until the slots are full again: the cost per task is flat,
    where a condition notifying every waiter cost one wake-up per task in flight.
    """

    def __init__(self, *, total: int, cap: int) -> None:
        self.total = total
        self.cap = cap
        self.reserve = _reserve(total)
        self.used = 0
        self._by_specialist: dict[str, int] = {}
        self._queue: deque[tuple[str, asyncio.Future[None]]] = deque()

    def _may_take(self, name: str) -> bool:
        mine = self._by_specialist.get(name, 0)
        free = self.total - self.used
        return mine < self.cap and free > (self.reserve if mine else 0)

    def _take(self, name: str) -> None:
        self.used += 1
        self._by_specialist[name] = self._by_specialist.get(name, 0) + 1

    def _give_back(self, name: str) -> None:
        self.used -= 1
        left = self._by_specialist[name] - 1
        if left:
            self._by_specialist[name] = left
        else:
            del self._by_specialist[name]
        self._grant()

    def _grant(self) -> None:
        for entry in list(self._queue):
            if self.used >= self.total:
                return
            name, waiter = entry
            if waiter.done():  # cancelled while queued
                self._queue.remove(entry)
            elif self._may_take(name):
                self._queue.remove(entry)
                self._take(name)
                waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        # Every change ends in _grant, so no queued waiter may take a slot now: one this caller
        # may take is no one else's turn.
        if self._may_take(name):
            self._take(name)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((name, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(name)  # granted as it was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._give_back(name)


def is_call(msg: Msg) -> bool:
    """Whether ``msg`` came from the calls' consumer (``dagr.call.<s>``: only hosts and admins
    may publish there)."""
    return msg.subject.startswith("dagr.call.")


class TaskFeed:
    """Pulls, slots and heartbeats for one host. ``pull(name)`` per specialist and ``heartbeat()``
    run in the host's task group; ``drain()`` waits for what is in flight."""

    def __init__(
        self, js: JetStreamContext, config: FeedConfig, *, handle: Handler, long_running: LongRunning
    ) -> None:
        self._js = js
        self.config = config
        self._handle_task = handle
        self._long_running = long_running
        self._slots = asyncio.Semaphore(config.in_flight)
        self._wasm_slots = RunSlots(total=config.concurrency, cap=config.specialist_cap)
        self._call_slots = asyncio.Semaphore(config.call_concurrency)
        #: Per specialist: the slots it may still take, and the call slots.
        self._specialist_slots: dict[str, asyncio.Semaphore] = {}
        self._specialist_call_slots: dict[str, asyncio.Semaphore] = {}
        #: Notified whenever a slot is given back: pulls waiting to fetch look again.
        self._slot_freed = asyncio.Condition()
        #: Fetched tasks waiting for a slot, and tasks in flight, by id(msg) (messages are not hashable).
        self._waiting: dict[int, Msg] = {}
        self._inflight: dict[int, _Inflight] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Tasks holding an in-flight slot (waiting for a wasm slot, running, or committing)."""
        return sum(1 for inflight in self._inflight.values() if not inflight.call)

    @contextlib.asynccontextmanager
    async def running(self, name: str, msg: Msg) -> AsyncIterator[None]:
        """Hold one of ``name``'s wasm slots while its agent runs for ``msg``."""
        async with self._wasm_slots.hold(name):
            inflight = self._inflight.get(id(msg))
            if inflight is not None:
                inflight.running_since = time.monotonic()
            try:
                yield
            finally:
                if inflight is not None:
                    inflight.running_since = None

    async def pull(
        self, name: str, *, stopping: asyncio.Event, spawn: Callable[[Coroutine[Any, Any, None]], Any]
    ) -> None:
        """Fetch ``name``'s tasks while not ``stopping``; each is handled in a task made by ``spawn``
        (the host's task group, so none is fire-and-forget)."""
        mine = self._specialist_slots.setdefault(name, asyncio.Semaphore(self.config.specialist_in_flight))
        await self._pull(
            name,
            consumer_name(name),
            (mine, self._slots),
            lambda: self._fetchable(mine),
            stopping,
            spawn,
            call=False,
        )

    async def pull_calls(
        self, name: str, *, stopping: asyncio.Event, spawn: Callable[[Coroutine[Any, Any, None]], Any]
    ) -> None:
        """Fetch ``name``'s outbound calls while not ``stopping``, as many as call slots are free."""
        mine = self._specialist_call_slots.setdefault(
            name, asyncio.Semaphore(self.config.specialist_call_cap)
        )
        await self._pull(
            name,
            call_consumer_name(name),
            (mine, self._call_slots),
            lambda: min(_free_slots(mine), _free_slots(self._call_slots)),
            stopping,
            spawn,
            call=True,
        )

    async def _pull(
        self,
        name: str,
        consumer: str,
        slots: tuple[asyncio.Semaphore, asyncio.Semaphore],
        fetchable: Callable[[], int],
        stopping: asyncio.Event,
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
        *,
        call: bool,
    ) -> None:
        while True:
            try:
                subscription = await self._js.pull_subscribe_bind(consumer, stream=tasks_stream(name))
                break
            except Exception as exc:
                _log.warning("cannot pull from %s yet (%r); again in 1 s", consumer, exc)
                await asyncio.sleep(1.0)
        backlog = True
        while not stopping.is_set():
            async with self._slot_freed:
                await self._slot_freed.wait_for(lambda: fetchable() > 0)
            # nats-py's fetch(n) takes what is there at once; when nothing is, it waits until n
            # tasks came or the timeout passed, holding the first ones meanwhile (measured: p99
            # spawn-to-reply 29 ms at 669 spawns/s with 28 asked for). So a batch is asked for
            # only while the last task fetched said more were pending; otherwise one, which
            # returns as soon as it arrives.
            wanted = min(self.config.fetch_batch, fetchable()) if backlog else 1
            try:
                messages = await subscription.fetch(wanted, timeout=1.0 if wanted == 1 else _RACE_WAIT_S)
            except (NatsTimeout, TimeoutError):
                backlog = False
                continue
            except Exception as exc:  # connection trouble: back off, keep the loop alive
                _log.warning("fetch from %s failed: %r", consumer, exc)
                await asyncio.sleep(0.5)
                continue
            backlog = bool(messages) and messages[-1].metadata.num_pending > 0
            for message in messages:
                self._waiting[id(message)] = message
            for index, message in enumerate(messages):
                try:
                    await slots[0].acquire()
                    try:
                        await slots[1].acquire()
                    except BaseException:
                        slots[0].release()
                        raise
                except asyncio.CancelledError:
                    for waiting in messages[index:]:  # stopping: hand them back at once
                        self._waiting.pop(id(waiting), None)
                        await quietly(waiting.nak())
                    raise
                self._waiting.pop(id(message), None)
                spawn(self._handle(name, message, slots, call=call))
        await subscription.unsubscribe()

    def _fetchable(self, mine: asyncio.Semaphore) -> int:
        """How many tasks a specialist (with slots ``mine``) may fetch now, in in-flight slots."""
        waiting = sum(1 for msg in self._waiting.values() if not is_call(msg))
        free = min(self.config.in_flight - self.active - waiting, _free_slots(mine))
        busy = _free_slots(mine) < self.config.specialist_in_flight
        return free - self.config.reserve if busy else free

    async def _handle(
        self, name: str, msg: Msg, slots: tuple[asyncio.Semaphore, asyncio.Semaphore], *, call: bool
    ) -> None:
        self._idle.clear()
        now = time.monotonic()
        # A call waits on its remote from the start; an agent's task runs once it has a wasm slot.
        self._inflight[id(msg)] = _Inflight(
            msg=msg, fetched=now, running_since=now if call else None, call=call
        )
        try:
            await self._handle_task(name, msg)
        except asyncio.CancelledError:
            await quietly(msg.nak())
            raise
        except Exception as exc:
            # NATS trouble or a fault of ours, not the agent's: try again soon, and keep trying.
            delay = min(0.25 * 2 ** (msg.metadata.num_delivered - 1), 8.0)
            _log.warning("task on %s failed in the host (%r); retrying in %.1f s", name, exc, delay)
            await quietly(msg.nak(delay=delay))
        finally:
            self._inflight.pop(id(msg), None)
            if not self._inflight:
                self._idle.set()
            for semaphore in slots:
                semaphore.release()
            async with self._slot_freed:
                self._slot_freed.notify_all()

    async def heartbeat(self) -> None:
        """One loop for every task fetched: progress to the server, so a short ack_wait only bites
        dead hosts; and, once per task still in flight after an interval, ``long_running``.

        Fast invocations never pay for either: a `running` record written up front was a stored
        message (an fsync) per invocation (measured).
        """
        interval = self.config.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            for waiting in list(self._waiting.values()):
                await quietly(waiting.in_progress())
            now = time.monotonic()
            for inflight in list(self._inflight.values()):
                if now - inflight.fetched < interval:
                    continue
                await quietly(inflight.msg.in_progress())
                running_since = inflight.running_since
                if not inflight.told and running_since is not None and now - running_since >= interval:
                    inflight.told = True
                    await quietly(self._long_running(inflight.msg, now - running_since))

    async def drain(self, timeout_s: float) -> None:
        """Wait for the tasks in flight to finish, at most ``timeout_s``."""
        if self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            except TimeoutError:
                _log.warning("%d invocations still running after %.0f s; handing them back",
                             self.active, timeout_s)  # fmt: skip


def _free_slots(semaphore: asyncio.Semaphore) -> int:
    """Permits a semaphore can give right now."""
    return max(semaphore._value, 0)


async def quietly(action: Awaitable[Any]) -> None:
    """Await ``action``, logging instead of raising: for hand-backs and hints on a connection that
    may be gone (the server redelivers after ack_wait anyway)."""
    try:
        await action
    except Exception as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # On Python 3.11 a cancelled request can come back as a timeout: swallowing it would
            # keep a loop of hints alive after its task group was told to stop.
            raise asyncio.CancelledError from exc
        _log.debug("ignored: %r", exc)
