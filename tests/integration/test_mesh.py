"""The mesh against a real nats-server: spawn, state, suspend and wake, replies, retries, dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import pytest
import watkit
from meshkit import RunHost, deploying
from nats.js.errors import NotFoundError as JsNotFound

from dagr_wasm.errors import NotFoundError
from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import EmbeddedServer, Layout, Mesh, SpecialistVersion
from dagr_wasm.mesh._layout import consumer_name, tasks_stream

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def stored(mesh: Mesh, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on ``subject`` (one request, whatever the count)."""
    info = await mesh.js.stream_info(stream, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def messages(mesh: Mesh, stream: str, subject: str) -> list[bytes]:
    """Every message stored in ``stream`` on ``subject``, in order."""
    found, seq = [], 0
    while True:
        try:
            msg = await mesh.js.get_msg(stream, seq=seq + 1, subject=subject, next=True, direct=True)
        except JsNotFound:
            return found
        seq = int(msg.seq or 0)
        found.append(msg.data or b"")


def reply_counts(replies: list[bytes]) -> list[int]:
    """The counts in counter replies (each a CBOR reply envelope around the CBOR result), sorted."""
    counts = []
    for raw in replies:
        envelope = cbor2.loads(raw)
        assert envelope["error"] is None, envelope
        counts.append(cbor2.loads(envelope["ok"])["count"])
    return sorted(counts)


async def result_value(mesh: Mesh, instance: str, timeout_s: float = 60) -> Any:
    result = await mesh.result(instance, wait=True, timeout_s=timeout_s)
    assert result is not None, f"no result from {instance} within {timeout_s} s"
    assert result.error is None, result.error
    return cbor2.loads(result.ok)


async def test_spawn_runs_an_instance_and_records_its_result(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    await run_host(nats_server)
    instance = await mesh.spawn("echo", "hello mesh")
    assert await result_value(mesh, instance) == {"echo": "hello mesh"}
    status = await mesh.status(instance)
    assert status is not None
    assert status.state == "finished"
    logs = await mesh.logs(instance)
    assert [record.state for record in logs] == ["finished"]


async def test_spawning_an_unknown_specialist_is_refused(mesh: Mesh) -> None:
    with pytest.raises(NotFoundError, match="no specialist named 'nobody'"):
        await mesh.spawn("nobody", "x")


async def test_a_parent_sees_all_ten_replies_when_it_wakes(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    await run_host(nats_server, concurrency=8)
    parent = await mesh.spawn("spawner", "10")
    result = await result_value(mesh, parent)
    assert result["replies"] == [{"echo": f"child {i}"} for i in range(10)]
    children = result["children"]
    assert len(set(children)) == 10
    for child in children:
        status = await mesh.status(child)
        assert status is not None
        assert (status.state, status.lineage.parent) == ("finished", parent)
    # The replies arrived while the parent slept: it suspended first, then woke once.
    assert [record.state for record in await mesh.logs(parent)] == ["suspended", "finished"]


async def test_state_stays_exact_under_concurrent_invocations_of_one_instance(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    """Many hosts' worth of slots race on one counter: guarded writes and re-runs keep it exact."""
    await run_host(nats_server, concurrency=8)
    await run_host(nats_server, concurrency=8)
    instance = f"counter-{uuid.uuid4().hex[:8]}"
    replies = f"agents.main.test.{instance}"
    for i in range(60):
        await mesh.send("counter", instance, b"tick", reply_to=replies, task_id=f"{instance}-{i}")

    async def all_replied() -> bool:
        return await stored(mesh, "DAGR_AGENTS", replies) >= 60

    await eventually(all_replied, timeout_s=120, what="60 counter replies")
    assert reply_counts(await messages(mesh, "DAGR_AGENTS", replies)) == list(range(1, 61))


async def test_a_trapping_task_is_retried_then_dead_lettered_while_others_flow(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    layout = Layout(max_attempts=3)
    await run_host(nats_server, layout=layout, retry_backoff_s=(0.2, 0.4), concurrency=4)
    doomed = await mesh.spawn("hostile-recursion", "")
    others = [await mesh.spawn("echo", f"bystander {i}") for i in range(20)]
    for i, instance in enumerate(others):
        assert await result_value(mesh, instance) == {"echo": f"bystander {i}"}

    result = await mesh.result(doomed, wait=True, timeout_s=60)
    assert result is not None
    assert (result.error or "").startswith("gave up: stack-overflow")
    status = await mesh.status(doomed)
    assert status is not None
    assert (status.state, status.attempt) == ("dead", 3)
    attempts = await mesh.logs(doomed)
    assert [record.attempt for record in attempts] == [1, 2, 3]
    assert all("stack" in (record.error or "") for record in attempts)
    dead = [
        cbor2.loads(m)
        for m in await messages(mesh, "DAGR_DEAD", f"dagr.dead.hostile-recursion.{status.task}")
    ]
    assert len(dead) == 1
    assert dead[0]["attempts"] == 3
    assert dead[0]["kind"] == "stack-overflow"


async def test_a_redeploy_makes_a_new_version_and_running_instances_keep_theirs(
    mesh: Mesh, deployed: dict[str, SpecialistVersion]
) -> None:
    before = await mesh.registry.require("echo")
    again = await mesh.registry.deploy(Manifest(name="echo", description="echo, redeployed"), None)
    assert again.version == before.version + 1
    assert again.digest == before.digest  # re-registering without a module keeps the module
    pinned = await mesh.registry.version("echo", before.version)
    assert pinned is not None
    assert pinned.description == before.description


async def test_a_specialist_deployed_after_the_host_started_is_compiled_on_deploy_and_served(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    host = await run_host(nats_server)
    marker = uuid.uuid4().hex[:8]
    # A module no host has seen: a WAT echo with a unique constant in it.
    body = f"(drop (i32.const 0x{marker})) (call $ok (local.get $p1) (local.get $p2))"
    wasm = watkit.component(body)
    name = f"late-{marker}"
    version = await mesh.deploy(Manifest(name=name, description="deployed after the host started"), wasm)
    assert version.digest is not None

    async def compiled() -> bool:
        return host.prepared(version.digest or "")

    await eventually(compiled, timeout_s=30, what="the host to compile the new module before any task")
    instance = await mesh.spawn(name, "hello late")
    result = await mesh.result(instance, wait=True, timeout_s=30)
    assert result is not None
    assert result.ok == b"hello late"


async def test_stopping_a_host_finishes_or_hands_back_its_work(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    first = await run_host(nats_server, concurrency=4)
    instances = [await mesh.spawn("echo", f"handover {i}") for i in range(40)]
    await first.stop()  # mid-stream: some done, some in flight, most still queued
    await run_host(nats_server, concurrency=4)
    for i, instance in enumerate(instances):
        assert await result_value(mesh, instance) == {"echo": f"handover {i}"}
        assert len(await mesh.logs(instance)) == 1


sleepy = deploying("hostile-sleep")


async def test_a_host_runs_at_most_its_slots_while_more_tasks_are_in_flight(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, sleepy: None
) -> None:
    """4 wasm slots (2 for one specialist) bound the agents running at once; the pipeline behind
    them holds every task fetched, so a slot never waits for a fetch."""
    await run_host(nats_server, concurrency=4)
    instances = [await mesh.spawn("hostile-sleep", "naps:0.6") for _ in range(8)]
    most_in_flight = 0

    async def all_finished() -> bool:
        nonlocal most_in_flight
        info = await mesh.js.consumer_info(tasks_stream("hostile-sleep"), consumer_name("hostile-sleep"))
        most_in_flight = max(most_in_flight, info.num_ack_pending)
        results = [await mesh.result(instance) for instance in instances]
        return all(result is not None for result in results)

    await eventually(all_finished, timeout_s=60, what="8 sleepers finished")
    assert most_in_flight > 2, "the host fetched no more tasks than it had slots"
    runs = []
    for instance in instances:
        [record] = await mesh.logs(instance)
        assert record.state == "finished" and record.invocation and record.invocation.wall_ms
        runs.append((record.updated_ms - record.invocation.wall_ms, record.updated_ms))
    # At any moment at most 2 ran (each interval shrunk by 100 ms for the commit's latency).
    edges = sorted([(start + 100, 1) for start, _ in runs] + [(end - 100, -1) for _, end in runs])
    running = most_running = 0
    for _at, change in edges:
        running += change
        most_running = max(most_running, running)
    assert most_running == 2


async def test_a_large_result_travels_through_the_commit(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    """The outbox (result, reply, logs) is kept in one commit marker: it must fit in one message."""
    await run_host(nats_server)
    text = "x" * 200_000  # the echo result is just under the 256 KiB max_result_bytes
    instance = await mesh.spawn("echo", text)
    assert await result_value(mesh, instance) == {"echo": text}


async def test_a_host_holds_a_bounded_number_of_components_and_still_serves_every_specialist(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost
) -> None:
    """Defect 7 of issue 8: the per-specialist caches grew without bound. Five modules through a
    host that may hold two: each is served, and no more than two stay loaded."""
    host = await run_host(nats_server, max_loaded_agents=2)
    names = []
    for i in range(5):
        name = f"bounded{i}-{uuid.uuid4().hex[:6]}"
        # Distinct memory sizes make distinct modules (distinct digests).
        await mesh.deploy(
            Manifest(name=name), watkit.component("(call $ok (local.get $p1) (local.get $p2))", pages=i + 1)
        )
        names.append(name)
    for round_ in range(2):
        for name in names:
            instance = await mesh.spawn(name, f"{name} {round_}")
            result = await mesh.result(instance, wait=True, timeout_s=60)
            assert result is not None and result.ok == f"{name} {round_}".encode(), result
            assert host.catalog.loaded_count <= 2
