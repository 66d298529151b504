"""Directed fault sequences (issue 8): a host frozen past its ack wait, the server restarted while it
is frozen, the host resumed. Each sequence once lost or duplicated an effect; every check reads the
data itself (state, schedules, the journal, what was published), not the runtime's status.

Every host is a `dagr host` process; freezing is SIGSTOP, resuming SIGCONT.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from meshkit import StartHostProcess
from test_mesh import eventually, messages

from dagr_wasm.invocation import ChildReply
from dagr_wasm.manifest import load_manifest
from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Mesh, Role
from dagr_wasm.mesh._layout import SCHEDULES_STREAM, sched_subject, task_subject
from dagr_wasm.mesh._tasks import TASK_HEADER, Task, encode_task, reply_task_id
from dagr_wasm.sandbox import Sandbox

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(own_server: EmbeddedServer) -> EmbeddedServer:
    return own_server


def connect(server: EmbeddedServer) -> ConnectOptions:
    return replace(server.options(Role.ADMIN), max_reconnect_attempts=-1)


async def deploy(mesh: Mesh, built: dict[str, Path], sandbox: Sandbox, *names: str) -> None:
    """Deploy agents with a long deadline: a frozen host's invocation must outlive its freeze."""
    await mesh.ensure_layout()
    for name in names:
        await asyncio.to_thread(sandbox.load_file, built[name])
        manifest = load_manifest(
            ROOT / "agents" / name / "dagr.toml", overrides={"limits": {"timeout_ms": 120_000}}
        )
        await mesh.deploy(manifest, built[name].read_bytes())


async def state_value(mesh: Mesh, instance: str, key: str) -> Any:
    msg = await mesh.js.get_msg("KV_dagr-state", subject=f"$KV.dagr-state.i.{instance}.{key}", direct=True)
    return cbor2.loads(msg.data or b"")


async def is_running(mesh: Mesh, instance: str) -> bool:
    status = await mesh.status(instance)
    return status is not None and status.state == "running"


async def test_a_frozen_host_back_after_a_server_restart_neither_loses_nor_repeats_a_wake(
    server: EmbeddedServer, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    """Issue 8 #11: the frozen host's late commit replays the start's outbox, whose schedule has
    fired long ago; the server forgot it in the restart, so it replaced the pending wake, fired at
    once, and the pending wake was lost (the instance stayed `suspended` for ever)."""
    async with await Mesh.connect(connect(server)) as mesh:
        await deploy(mesh, built, sandbox, "sleeper")
        frozen = host_process(server)
        # Starts busy for 4 s, then: a wake in 1 s, and after it a wake in an hour.
        instance = await mesh.spawn("sleeper", "1 nap times=2 then=3600 busy=4")
        # Only `frozen` runs: the start's `running` record (after 2 s) says it is inside it now.
        await eventually(lambda: is_running(mesh, instance), timeout_s=60, what="the start running")
        frozen.freeze()
        other = host_process(server)  # takes the start over once its ack wait passes

        async def woke_once_and_waits_an_hour() -> bool:
            status = await mesh.status(instance)
            return status is not None and status.state == "suspended" and len(await mesh.logs(instance)) == 2

        await eventually(woke_once_and_waits_an_hour, timeout_s=120, what="the first wake, on the other host")
        pending = (await mesh.status(instance)).wake_at_ms

    server.restart()  # its memory of message ids is rebuilt from what is still stored
    frozen.thaw()  # finishes the start and commits it: the start was committed: a late replay

    async with await Mesh.connect(connect(server)) as mesh:
        await asyncio.sleep(8)  # the replayed schedule fires at once; give the hosts time to act on it
        assert await state_value(mesh, instance, "wakes") == 1  # on_wake ran once
        records = await mesh.logs(instance)
        assert [r.state for r in records] == ["suspended", "suspended"]
        status = await mesh.status(instance)
        assert status is not None
        assert (status.state, status.wake_at_ms) == ("suspended", pending)
        schedule = await mesh.js.get_msg(
            SCHEDULES_STREAM, subject=sched_subject("sleeper", instance), direct=True
        )
        assert (schedule.headers or {}).get("Nats-Schedule", "").startswith("@at ")  # still to wake
        wake_at = (schedule.headers or {})["Nats-Schedule"].removeprefix("@at ")
        assert wake_at >= _iso(pending)
    stats = frozen.stop()
    assert stats["replayed"] >= 1, stats  # the sequence did happen: its commit found the other's
    other.stop()


def _iso(unix_ms: int) -> str:
    from dagr_wasm.mesh._commit import iso_at

    return iso_at(unix_ms)[:19]


async def test_a_frozen_host_does_not_record_running_over_a_finished_instance(
    server: EmbeddedServer, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    """Issue 8 #13: the heartbeat's `running` record landed after another host's final record."""
    async with await Mesh.connect(connect(server)) as mesh:
        await deploy(mesh, built, sandbox, "sleeper")
        frozen = host_process(server)
        await asyncio.sleep(2)  # the host pulls
        instance = await mesh.spawn("sleeper", "0.5 nap busy=3")
        await asyncio.sleep(0.8)  # inside the busy start, before its `running` record (2 s)
        frozen.freeze()
        other = host_process(server)
        result = await mesh.result(instance, wait=True, timeout_s=120)
        assert result is not None and result.state == "finished"
    frozen.thaw()  # its heartbeat comes due at once, then its late commit replays
    async with await Mesh.connect(connect(server)) as mesh:
        await asyncio.sleep(6)
        status = await mesh.status(instance)
        assert status is not None
        assert status.state == "finished"
        assert [r.state for r in await mesh.logs(instance)] == ["suspended", "finished"]
    frozen.stop()
    other.stop()


async def test_a_reply_that_arrives_as_an_event_keeps_the_parents_lineage(
    server: EmbeddedServer, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    """Issue 8 #10: a reply event ran without the parent's reply-to, parent and ceilings, so the
    parent's final result, produced while handling it, went nowhere."""
    async with await Mesh.connect(connect(server)) as mesh:
        await deploy(mesh, built, sandbox, "sleeper", "spawner")
        host_process(server, concurrency=8)  # room for the reply beside the busy parent
        reply_to = f"agents.main.test.{uuid.uuid4().hex[:8]}"
        # The parent wakes at 0.5 s and stays busy 7 s (its `running` record comes 2-4 s in); its
        # child replies at ~5 s, while the parent runs (not suspended): the reply comes as an
        # event, handled after the busy wake.
        parent = await mesh.spawn("spawner", "1 child=sleeper:5 busy=7", reply_to=reply_to)

        async def reported() -> bool:
            return bool(await messages(mesh, "DAGR_AGENTS", reply_to))

        await eventually(reported, timeout_s=120, what="the parent's result on its reply-to")
        [report] = await messages(mesh, "DAGR_AGENTS", reply_to)
        envelope = cbor2.loads(report)
        assert envelope["error"] is None
        value = cbor2.loads(envelope["ok"])
        journal = [
            (r["state"], r["task"], r.get("updated_ms"))
            for r in map(cbor2.loads, await messages(mesh, "DAGR_INSTANCES", f"dagr.inst.{parent}"))
        ]
        assert value.get("as_events") is True, journal  # produced by on_reply
        assert value["replies"] == [{"note": "kid-0", "resume": "slept 5 s", "wakes": 1}]
        status = await mesh.status(parent)
        assert status is not None and status.state == "finished"
        assert status.lineage.reply_to == reply_to


async def test_a_reply_delivered_again_is_not_seen_twice(
    server: EmbeddedServer, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    """Issue 8 #12: the first delivery of a reply to a suspended parent was parked without a commit
    marker, so the same reply delivered again (a late replay of the child's outbox, as a new message
    after a server forgot its ids) ran as an event on the parent: it saw the reply twice."""
    async with await Mesh.connect(connect(server)) as mesh:
        await deploy(mesh, built, sandbox, "echo", "spawner")
        host_process(server, concurrency=8)
        # No children of its own: it sleeps 0.5 s, then a 6 s busy wake collects its inbox.
        parent = await mesh.spawn("spawner", "0 busy=6")
        await eventually(lambda: is_suspended(mesh, parent), timeout_s=60, what="the parent to suspend")
        # A child's reply task, as a child's commit publishes it when the parent is not suspended.
        reply = Task(
            task_id=reply_task_id("a-child-task"),
            kind="reply",
            instance_id=parent,
            specialist="spawner",
            root_id=parent,
            reply=ChildReply(child_id="c0", specialist="echo", ok=cbor2.dumps({"echo": "hi"}), error=None),
            created_ms=int(time.time() * 1000),
        )
        first = {TASK_HEADER: "1", "Nats-Msg-Id": "reply-first"}
        await mesh.js.publish(task_subject("spawner"), encode_task(reply), headers=first)  # parked
        await eventually(lambda: is_running(mesh, parent), timeout_s=60, what="the parent's busy wake")
        # The late replay, while the parent runs: a message the server has not seen before.
        again = {TASK_HEADER: "1", "Nats-Msg-Id": "reply-again"}
        await mesh.js.publish(task_subject("spawner"), encode_task(reply), headers=again)

        result = await mesh.result(parent, wait=True, timeout_s=60)
        assert result is not None and result.state == "finished"
        await asyncio.sleep(3)  # a duplicate event would have run by now
        journal = await messages(mesh, "DAGR_INSTANCES", f"dagr.inst.{parent}")
        states = [cbor2.loads(m)["state"] for m in journal]
        assert [s for s in states if s != "running"] == ["queued", "suspended", "finished"], states
        assert cbor2.loads(result.ok) == {"children": [], "replies": [{"echo": "hi"}]}


async def is_suspended(mesh: Mesh, instance: str) -> bool:
    status = await mesh.status(instance)
    return status is not None and status.state == "suspended"
