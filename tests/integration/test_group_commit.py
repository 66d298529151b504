"""Group commit (dagr_wasm/mesh/_batches.py) against a real nats-server: state commits waiting
together share one atomic batch, and one commit's conflict fails no other."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dagr_wasm.errors import CommitConflict
from dagr_wasm.mesh import Mesh
from dagr_wasm.mesh._batches import StateMsg
from dagr_wasm.mesh._commit import Committer
from dagr_wasm.mesh._state import KV_PREFIX, StateReader

pytestmark = pytest.mark.asyncio(loop_scope="session")

_ELSS = "Nats-Expected-Last-Subject-Sequence"


@pytest.fixture
async def committer(mesh: Mesh) -> Committer:
    return Committer(mesh.nc, mesh.js, StateReader(mesh.js))


def write(key: str, value: bytes, guard: int | None = None) -> list[StateMsg]:
    headers = {} if guard is None else {_ELSS: str(guard)}
    return [(KV_PREFIX + key, value, headers)]


async def stored(mesh: Mesh, key: str) -> bytes | None:
    found = await StateReader(mesh.js).raw(key)
    return None if found is None else found[0]


async def test_commits_waiting_together_share_a_batch_and_all_land(mesh: Mesh, committer: Committer) -> None:
    tag = uuid.uuid4().hex[:8]
    results = await asyncio.gather(
        *(
            committer.write_guarded(
                write(f"i.gc{tag}{n}.k", f"v{n}".encode()), f"x.gc{tag}{n}", b"o", what=f"{n}"
            )
            for n in range(40)
        )
    )
    assert results == [True] * 40
    for n in range(40):
        assert await stored(mesh, f"i.gc{tag}{n}.k") == f"v{n}".encode()
        assert await stored(mesh, f"x.gc{tag}{n}") == b"o"
    stats = committer.batches.stats
    assert stats.commits == 40
    assert stats.batches < 40 and stats.grouped > 0, stats


async def test_a_conflict_or_a_repeat_in_a_group_fails_no_other_commit(
    mesh: Mesh, committer: Committer
) -> None:
    tag = uuid.uuid4().hex[:8]
    # A key at revision r, and a marker that exists already (a task committed before).
    assert await committer.write_guarded(
        write(f"i.gc{tag}.held", b"first"), f"x.gc{tag}.old", b"o", what="setup"
    )
    revision = (await StateReader(mesh.js).raw(f"i.gc{tag}.held") or (b"", 0, False))[1]
    committer.batches.max_in_flight = 1  # everything below queues behind the first, then goes as one group

    good = [
        committer.write_guarded(write(f"i.gc{tag}{n}.k", b"good"), f"x.gc{tag}{n}", b"o", what=f"good {n}")
        for n in range(5)
    ]
    stale = committer.write_guarded(
        write(f"i.gc{tag}.held", b"stale", guard=revision - 1), f"x.gc{tag}.stale", b"o", what="stale"
    )
    repeat = committer.write_guarded(
        write(f"i.gc{tag}.again", b"again"), f"x.gc{tag}.old", b"o", what="repeat"
    )
    first = committer.write_guarded(write(f"i.gc{tag}.first", b"1"), f"x.gc{tag}.first", b"o", what="first")
    results = await asyncio.gather(first, *good, stale, repeat, return_exceptions=True)

    assert results[0] is True
    assert results[1:6] == [True] * 5
    assert isinstance(results[6], CommitConflict)
    assert results[7] is False  # committed before: nothing written
    assert committer.batches.stats.split == 1  # the group was refused, then each went alone
    for n in range(5):
        assert await stored(mesh, f"i.gc{tag}{n}.k") == b"good"
    assert await stored(mesh, f"i.gc{tag}.held") == b"first"
    assert await stored(mesh, f"x.gc{tag}.stale") is None
    assert await stored(mesh, f"i.gc{tag}.again") is None


async def test_two_commits_of_one_key_never_share_a_batch(mesh: Mesh, committer: Committer) -> None:
    tag = uuid.uuid4().hex[:8]
    committer.batches.max_in_flight = 1
    key = f"i.gc{tag}.shared"
    results = await asyncio.gather(
        committer.write_guarded(write(f"i.gc{tag}.lead", b"x"), f"x.gc{tag}.lead", b"o", what="lead"),
        *(
            committer.write_guarded(write(key, f"{n}".encode()), f"x.gc{tag}{n}", b"o", what=f"{n}")
            for n in range(4)
        ),
    )
    assert results == [True] * 5
    assert committer.batches.stats.split == 0
    assert await stored(mesh, key) == b"3"  # the last writer in queue order


async def test_a_waiting_commit_cancelled_before_it_is_sent_writes_nothing(
    mesh: Mesh, committer: Committer
) -> None:
    tag = uuid.uuid4().hex[:8]
    committer.batches.max_in_flight = 1
    lead = asyncio.create_task(
        committer.write_guarded(write(f"i.gc{tag}.lead", b"x"), f"x.gc{tag}.lead", b"o", what="lead")
    )
    await asyncio.sleep(0)  # the lead's batch is in flight
    waiting = asyncio.create_task(
        committer.write_guarded(write(f"i.gc{tag}.gone", b"x"), f"x.gc{tag}.gone", b"o", what="gone")
    )
    after = asyncio.create_task(
        committer.write_guarded(write(f"i.gc{tag}.after", b"x"), f"x.gc{tag}.after", b"o", what="after")
    )
    await asyncio.sleep(0)
    waiting.cancel()
    assert await lead is True
    assert await after is True  # the lead passed on past the cancelled commit
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await stored(mesh, f"x.gc{tag}.gone") is None
    assert await stored(mesh, f"i.gc{tag}.gone") is None
