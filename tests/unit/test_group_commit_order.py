"""Group commit's hand-offs (dagr_wasm/mesh/_batches.py), with a batch sender held by the test:
who leads, who waits, and cancellations at the moments a real server's timing cannot pin down.
Its NATS side runs against a real server in tests/integration/test_group_commit.py."""

from __future__ import annotations

import asyncio
from typing import Any

from dagr_wasm.mesh._batches import BatchCommit, GroupCommit


class HeldSender:
    """Sends batches that are answered only when the test says so; records what was sent."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self._answers: asyncio.Queue[None] = asyncio.Queue()

    async def send(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, Any]:
        self.sent.append([subject for subject, _data, _headers in messages])
        await self._answers.get()
        return {}

    def answer(self) -> None:
        self._answers.put_nowait(None)


async def settle(_item: BatchCommit, reply: dict[str, Any]) -> bool:
    return "error" not in reply


def commit(name: str) -> BatchCommit:
    return BatchCommit([(f"k.{name}", b"v", {})], what=name, marker=f"x.{name}")


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_go_together_in_the_next_batch_in_order() -> None:
    sender = HeldSender()
    group = GroupCommit(sender.send, settle, max_in_flight=1)
    tasks = [asyncio.create_task(group.commit(commit(name))) for name in ("a", "b", "c", "d")]
    await turn()
    assert sender.sent == [["k.a"]]
    sender.answer()
    await turn()
    assert sender.sent[1] == ["k.b", "k.c", "k.d"]  # b led, with c and d beside it
    sender.answer()
    assert await asyncio.gather(*tasks) == [True] * 4
    assert group.stats.batches == 2 and group.stats.grouped == 3


async def test_a_waiter_cancelled_before_it_leaves_the_queue_is_skipped_and_the_lead_passes_on() -> None:
    sender = HeldSender()
    group = GroupCommit(sender.send, settle, max_in_flight=1)
    lead = asyncio.create_task(group.commit(commit("a")))
    await turn()
    gone = asyncio.create_task(group.commit(commit("gone")))
    after = asyncio.create_task(group.commit(commit("after")))
    await turn()
    sender.answer()  # the leader's answer is handled first ...
    gone.cancel()  # ... and gone's future is cancelled before its task can leave the queue
    assert await lead is True
    await turn()
    assert sender.sent[1] == ["k.after"], "the cancelled commit was sent, or the lead was lost"
    sender.answer()
    assert await after is True
    assert all("k.gone" not in batch for batch in sender.sent)


async def test_a_waiter_cancelled_just_as_it_is_handed_the_lead_hands_it_on() -> None:
    sender = HeldSender()
    group = GroupCommit(sender.send, settle, max_in_flight=1)
    lead = asyncio.create_task(group.commit(commit("a")))
    await turn()
    heir = asyncio.create_task(group.commit(commit("b")))
    await turn()
    sender.answer()
    await asyncio.sleep(0)  # the leader answered: the lead is handed to b ...
    heir.cancel()  # ... which is cancelled before it can take it
    assert await lead is True
    later = asyncio.create_task(group.commit(commit("c")))
    await turn()
    assert sender.sent[-1] == ["k.c"], "the lead died with the cancelled heir"
    sender.answer()
    assert await later is True
