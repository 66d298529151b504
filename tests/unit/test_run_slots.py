"""The wasm slots of a host's feed: caps per specialist, the reserve, order, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from dagr_wasm.mesh._feed import RunSlots


class Runs:
    """Agents holding slots until released, and the order they got them in."""

    def __init__(self, slots: RunSlots) -> None:
        self.slots = slots
        self.started: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, label: str) -> None:
        specialist = label.rstrip("0123456789")
        self._release[label] = asyncio.Event()

        async def run() -> None:
            async with self.slots.hold(specialist):
                self.started.append(label)
                await self._release[label].wait()

        self._tasks[label] = asyncio.create_task(run())

    async def finish(self, label: str) -> None:
        self._release[label].set()
        await self._tasks[label]

    def cancel(self, label: str) -> None:
        self._tasks[label].cancel()

    async def settle(self) -> None:
        for _ in range(5):  # let every woken waiter run
            await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def runs(total: int, cap: int) -> AsyncIterator[Runs]:
    group = Runs(RunSlots(total=total, cap=cap))
    try:
        yield group
    finally:
        for task in group._tasks.values():
            task.cancel()
        await asyncio.gather(*group._tasks.values(), return_exceptions=True)


async def test_one_specialist_holds_at_most_its_cap() -> None:
    async with runs(total=8, cap=4) as group:
        for i in range(6):
            group.start(f"a{i}")
        await group.settle()
        assert group.started == ["a0", "a1", "a2", "a3"]
        await group.finish("a1")
        await group.settle()
        assert group.started[4:] == ["a4"]
        assert group.slots.used == 4


async def test_a_busy_specialist_does_not_block_one_queued_behind_it() -> None:
    async with runs(total=4, cap=2) as group:
        for label in ("a0", "a1", "a2", "b0"):
            group.start(label)
        await group.settle()
        # a2 waits for a's cap; b0, queued after it, takes a free slot at once.
        assert group.started == ["a0", "a1", "b0"]


async def test_the_reserve_is_left_to_a_specialist_with_nothing_running() -> None:
    # 16 slots, caps of 12: the reserve is 2, so a and b together take at most 14.
    async with runs(total=16, cap=12) as group:
        for i in range(12):
            group.start(f"a{i}")
        for i in range(4):
            group.start(f"b{i}")
        await group.settle()
        assert group.slots.used == 14
        assert sum(label.startswith("b") for label in group.started) == 2
        group.start("c0")
        await group.settle()
        assert group.started[-1] == "c0", "a specialist with nothing running takes the reserve"


async def test_first_come_first_served_when_slots_free() -> None:
    async with runs(total=2, cap=2) as group:
        for label in ("a0", "a1", "b0", "c0", "b1"):
            group.start(label)
        await group.settle()
        assert group.started == ["a0", "a1"]
        await group.finish("a0")
        await group.settle()
        assert group.started[2:] == ["b0"]
        await group.finish("a1")
        await group.settle()
        assert group.started[3:] == ["c0"]


async def test_a_cancelled_waiter_gives_its_turn_away_and_no_slot_leaks() -> None:
    async with runs(total=1, cap=1) as group:
        for label in ("a0", "b0", "c0"):
            group.start(label)
        await group.settle()
        group.cancel("b0")
        await group.settle()
        await group.finish("a0")
        await group.settle()
        assert group.started == ["a0", "c0"]
        await group.finish("c0")
        assert group.slots.used == 0


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    async with runs(total=1, cap=1) as group:
        group.start("a0")
        group.start("b0")
        group.start("c0")
        await group.settle()
        # Release a0 and cancel b0 before b0's task runs again: b0 was granted the slot but never
        # used it, so it must hand it to c0.
        group._release["a0"].set()
        await asyncio.sleep(0)  # a0 leaves its block: the slot is granted to b0
        group.cancel("b0")
        await group.settle()
        assert group.started == ["a0", "c0"]
        await group.finish("c0")
        assert group.slots.used == 0
