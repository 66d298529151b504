"""Group commit: the state commits of a host that wait together share one atomic batch.

An invocation that writes state commits in one atomic batch on the state stream (its guarded
writes and its marker, ``_commit.py``). Batches are dear on the server, and dearer the more are
open at once. Measured with bare nats-py against nats-server 2.15.1, fsync on, on a 2-vCPU VM:

| commits per batch | batches in flight | commits/s |
|---|---|---|
| 1 | 8 | ~740 (the peak) |
| 1 | 32 | ~460 |
| 1 | 64 | ~370, and refusals past the server's 50 open batches per stream |
| 8 | 1-2 | 3,200-4,100 |
| 16 | 4 | 6,400 |

A host running a Python agent that counts in its state made ~250 invocations/s, whatever its
slots.

So this is a database's group commit, done without a task of its own:

- At most ``max_in_flight`` batches are in flight per host.
- A commit that arrives while they are all taken waits in a queue.
- The commit that opens a batch, its *leader*, adds every queued commit that fits. The server
  takes 1,000 messages per batch, and a bytes bound keeps the server's staging small.
- When the batch is answered, the leader passes the lead to the first commit still waiting.

A batch is atomic: all its commits happen, or none. One commit failing its guard must not fail the
others, so when a group's batch is refused, its commits are sent again one by one, and each gets
its own answer (committed, committed before, conflict, refused). The server's answer does not say
whose message it refused. Two commits writing one key never share a batch. A lost answer fails
every commit of the group as ``RuntimeFailure``: each task is handed back and, on its next
delivery, finds its marker if the batch did commit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..errors import RuntimeFailure

__all__ = ["BatchCommit", "BatchStats", "GroupCommit", "StateMsg"]

#: A message of an atomic state batch: bucket subject, value, headers (guards, KV operation).
StateMsg: TypeAlias = tuple[str, bytes, dict[str, str]]
#: Sends one atomic batch; returns the server's answer (``{"error": ...}`` when refused). Raises
#: ``RuntimeFailure`` when the answer is lost.
Send = Callable[[list[StateMsg]], Awaitable[dict[str, Any]]]
#: One commit's result from the answer to a batch of its own: True (committed now), False
#: (committed before), or it raises (``CommitConflict``, ``RuntimeFailure``).
Settle = Callable[["BatchCommit", dict[str, Any]], Awaitable[bool]]

#: The server's limit of messages in one atomic batch.
MAX_BATCH_MESSAGES = 1000
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_LEAD = object()  # a waiting commit's outcome when it is handed the lead


@dataclass(slots=True, eq=False)
class BatchCommit:
    """One commit's messages (its guarded writes, its marker last), and what it is about."""

    messages: list[StateMsg]
    what: str
    marker: str
    outcome: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def size(self) -> int:
        return sum(len(subject) + len(data) for subject, data, _headers in self.messages)

    def settle(self, result: bool | BaseException) -> None:
        if self.outcome.done():  # its waiter was cancelled
            return
        if isinstance(result, BaseException):
            self.outcome.set_exception(result)
        else:
            self.outcome.set_result(result)


@dataclass(slots=True)
class BatchStats:
    batches: int = 0
    commits: int = 0
    #: Commits that shared a batch with others.
    grouped: int = 0
    #: Groups sent again one commit at a time after the server refused them.
    split: int = 0


class GroupCommit:
    """``await group.commit(item)``: ``item`` committed alone or with others waiting beside it."""

    def __init__(self, send: Send, settle: Settle, *, max_in_flight: int = 2) -> None:
        self._send = send
        self._settle = settle
        self.max_in_flight = max_in_flight
        self._leaders = 0
        self._queue: deque[BatchCommit] = deque()
        self.stats = BatchStats()

    async def commit(self, item: BatchCommit) -> bool:
        if self._leaders < self.max_in_flight:
            self._leaders += 1
        else:
            self._queue.append(item)
            try:
                first = await item.outcome
            except asyncio.CancelledError:
                if item in self._queue:
                    self._queue.remove(item)  # not sent: nothing of it is committed
                elif _handed_the_lead(item.outcome):
                    self._pass_lead()  # handed the lead as it was cancelled: hand it on
                raise
            if first is not _LEAD:
                return bool(first)
            item.outcome = asyncio.get_running_loop().create_future()
        await self._lead(item)
        return bool(item.outcome.result())  # raises the commit's error

    async def _lead(self, mine: BatchCommit) -> None:
        """Send ``mine`` with every queued commit that fits in one batch; then pass the lead on."""
        group = [mine]
        count, size = len(mine.messages), mine.size
        subjects = {subject for subject, _data, _headers in mine.messages}
        while self._queue:
            nxt = self._queue[0]
            if nxt.outcome.done():  # cancelled, not yet out of the queue: nothing of it is sent
                self._queue.popleft()
                continue
            count += len(nxt.messages)
            size += nxt.size
            theirs = {subject for subject, _data, _headers in nxt.messages}
            # Two writes of one key in one batch would be judged against each other (a guard
            # read before the other's write): the later commit waits for the next batch.
            if count > MAX_BATCH_MESSAGES or size > _MAX_BATCH_BYTES or theirs & subjects:
                break
            subjects |= theirs
            group.append(self._queue.popleft())
        try:
            await self._commit_group(group)
        except BaseException as exc:
            # The leader's task was cancelled (the host stopping) mid-batch: whether the batch
            # committed is unknown, so every commit in it is handed back to find out from its marker.
            lost = RuntimeFailure(f"the state commit was interrupted: {exc!r}")
            for item in group[1:]:  # the leader's own commit ends with the exception itself
                item.settle(lost)
            raise
        finally:
            self._pass_lead()

    def _pass_lead(self) -> None:
        while self._queue:
            nxt = self._queue.popleft()
            # A waiter cancelled a moment ago has a cancelled future but has not left the queue yet.
            if not nxt.outcome.done():
                nxt.outcome.set_result(_LEAD)  # the leader's place goes with it
                return
        self._leaders -= 1

    async def _commit_group(self, group: list[BatchCommit]) -> None:
        self.stats.batches += 1
        self.stats.commits += len(group)
        if len(group) == 1:
            await self._one(group[0])
            return
        self.stats.grouped += len(group)
        try:
            reply = await self._send([message for item in group for message in item.messages])
        except RuntimeFailure as exc:
            for item in group:
                item.settle(exc)
            return
        if "error" not in reply:
            for item in group:
                item.settle(True)
            return
        # Refused, and the answer does not say for whose message (a guard, a marker that exists):
        # each commit alone gets its own answer, so one commit's conflict fails no other.
        self.stats.split += 1
        for item in group:
            self.stats.batches += 1
            await self._one(item)

    async def _one(self, item: BatchCommit) -> None:
        try:
            result = await self._settle(item, await self._send(item.messages))
        except Exception as exc:  # a conflict, or NATS trouble: the commit's own answer
            item.settle(exc)
            return
        item.settle(result)


def _handed_the_lead(outcome: asyncio.Future[Any]) -> bool:
    return (
        outcome.done()
        and not outcome.cancelled()
        and outcome.exception() is None
        and outcome.result() is _LEAD
    )
