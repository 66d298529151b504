"""Real processes, real crashes: hosts share work, die mid-stream, and the server itself is killed.

Every host here is a `dagr host` process; crashes are SIGKILL. The checks are on what JetStream
holds afterwards: exact counts, each reply exactly once, each wake exactly once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from meshkit import StartHostProcess, deploy_all
from test_mesh import eventually, messages, reply_counts, stored

from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Layout, Mesh, Role, ServerConfig
from dagr_wasm.mesh._cluster import LoopbackCluster
from dagr_wasm.mesh._layout import consumer_name, tasks_stream
from dagr_wasm.sandbox import Sandbox

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


async def test_two_host_processes_share_a_specialists_tasks_and_each_task_runs_once(
    mesh: Mesh, nats_server: EmbeddedServer, host_process: StartHostProcess
) -> None:
    hosts = [host_process(nats_server, concurrency=4) for _ in range(2)]
    instances = [await mesh.spawn("echo", f"job {i}") for i in range(200)]
    for instance in instances:
        result = await mesh.result(instance, wait=True, timeout_s=120)
        assert result is not None
        assert result.error is None
    ran_on: dict[str, int] = {}
    for instance in instances:
        records = await mesh.logs(instance)
        assert len(records) == 1, f"{instance} committed {len(records)} times"
        ran_on[records[0].invocation.host] = ran_on.get(records[0].invocation.host, 0) + 1
    stats = [host.stop() for host in hosts]
    assert len(ran_on) == 2, f"only {ran_on} did work"
    assert all(count > 0 for count in ran_on.values())
    # No crash, so no task ran twice: the hosts' invocations add up to exactly the tasks.
    assert sum(s["per_specialist"].get("echo", 0) for s in stats) == 200
    assert sum(s["replayed"] for s in stats) == 0


async def test_sigkill_of_a_host_mid_stream_loses_and_duplicates_nothing(
    mesh: Mesh, nats_server: EmbeddedServer, host_process: StartHostProcess
) -> None:
    victim = host_process(nats_server, concurrency=4)
    survivor = host_process(nats_server, concurrency=4)
    instance = f"counter-{uuid.uuid4().hex[:8]}"
    replies = f"agents.main.test.{instance}"
    for i in range(500):
        await mesh.send("counter", instance, b"tick", reply_to=replies, task_id=f"{instance}-{i}")

    async def some_done() -> bool:
        return await stored(mesh, "DAGR_AGENTS", replies) >= 100

    await eventually(some_done, timeout_s=120, what="the first 100 replies")
    victim.kill()  # SIGKILL, in the middle of the stream

    async def all_done() -> bool:
        return await stored(mesh, "DAGR_AGENTS", replies) >= 500

    await eventually(all_done, timeout_s=300, what="all 500 replies after the crash")
    assert reply_counts(await messages(mesh, "DAGR_AGENTS", replies)) == list(range(1, 501))
    count = await mesh.js.get_msg("KV_dagr-state", subject=f"$KV.dagr-state.i.{instance}.count", direct=True)
    assert cbor2.loads(count.data or b"") == 500
    survivor.stop()


async def test_sigkill_of_a_host_with_tasks_waiting_for_its_wasm_slots_loses_and_duplicates_nothing(
    mesh: Mesh, nats_server: EmbeddedServer, host_process: StartHostProcess
) -> None:
    """A host fetches more tasks than it runs at once (its in-flight pipeline): the ones waiting
    for a wasm slot when it dies go to another host, and every task's effects happen once."""
    victim = host_process(nats_server, concurrency=2)  # 1 wasm slot for counter, 4 tasks in flight
    tag = uuid.uuid4().hex[:8]
    replies = f"agents.main.test.waiting-{tag}"
    instances = [f"counter-{tag}-{i}" for i in range(300)]
    for instance in instances:
        await mesh.send("counter", instance, b"tick", reply_to=replies, task_id=f"{instance}-0")

    async def victim_holds_waiting_tasks() -> bool:
        info = await mesh.js.consumer_info(tasks_stream("counter"), consumer_name("counter"))
        return info.num_ack_pending > 1 and await stored(mesh, "DAGR_AGENTS", replies) >= 30

    await eventually(victim_holds_waiting_tasks, timeout_s=120, what="the victim to hold waiting tasks")
    victim.kill()  # SIGKILL: one task running or committing, the rest waiting for its slot
    survivor = host_process(nats_server, concurrency=2)

    async def all_done() -> bool:
        return await stored(mesh, "DAGR_AGENTS", replies) >= len(instances)

    await eventually(all_done, timeout_s=300, what="every reply after the crash")
    assert reply_counts(await messages(mesh, "DAGR_AGENTS", replies)) == [1] * len(instances)
    for instance in instances:
        count = await mesh.js.get_msg(
            "KV_dagr-state", subject=f"$KV.dagr-state.i.{instance}.count", direct=True
        )
        assert cbor2.loads(count.data or b"") == 1, instance
    survivor.stop()


async def test_suspended_agents_wake_once_with_their_state_after_everything_is_killed(
    tmp_path: Path, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    server = EmbeddedServer(
        config=ServerConfig(store_dir=tmp_path / "nats", credentials_dir=tmp_path / "credentials")
    )
    server.start()
    try:
        async with await Mesh.connect(server.options(Role.ADMIN)) as mesh:
            await deploy_all(mesh, built, sandbox, ("sleeper",))
        host = host_process(server, concurrency=8)
        async with await Mesh.connect(replace(server.options(Role.ADMIN), max_reconnect_attempts=-1)) as mesh:
            sleepers = [await mesh.spawn("sleeper", f"6 note-{i}") for i in range(100)]

            async def all_suspended() -> bool:
                states = [await mesh.status(s) for s in sleepers]
                return all(st is not None and st.state == "suspended" for st in states)

            await eventually(all_suspended, timeout_s=120, what="100 sleepers to suspend")

        # Everything dies: the host, then the server, both by SIGKILL.
        host.kill()
        server.kill()
        server.restart()
        host_process(server, concurrency=8)

        async with await Mesh.connect(server.options(Role.ADMIN)) as mesh:
            for i, sleeper in enumerate(sleepers):
                result = await mesh.result(sleeper, wait=True, timeout_s=120)
                assert result is not None, f"sleeper {i} never woke"
                assert cbor2.loads(result.ok) == {"note": f"note-{i}", "resume": "slept 6 s", "wakes": 1}
                assert [r.state for r in await mesh.logs(sleeper)] == ["suspended", "finished"]
    finally:
        server.stop()


async def test_r3_cluster_survives_the_stream_leader_being_killed_under_load(
    tmp_path: Path, built: dict[str, Path], sandbox: Sandbox, host_process: StartHostProcess
) -> None:
    layout = Layout(replicas=3)
    with LoopbackCluster(base_dir=tmp_path / "cluster") as cluster:
        urls = cluster.urls
        options = ConnectOptions(servers=tuple(urls), max_reconnect_attempts=-1)
        async with await Mesh.connect(options, layout=layout) as mesh:
            await deploy_all(mesh, built, sandbox, ("counter",))
        hosts = [host_process(",".join(urls), concurrency=4) for _ in range(2)]
        instance = f"counter-{uuid.uuid4().hex[:8]}"
        replies = f"agents.main.test.{instance}"
        async with await Mesh.connect(options, layout=layout) as mesh:
            for i in range(300):
                await mesh.send("counter", instance, b"tick", reply_to=replies, task_id=f"{instance}-{i}")

            async def some_done() -> bool:
                return await stored(mesh, "DAGR_AGENTS", replies) >= 60

            await eventually(some_done, timeout_s=120, what="the first 60 replies")
            info = await mesh.js.stream_info("DAGR_TASKS_counter")
            assert info.config.num_replicas == 3
            state_info = await mesh.js.stream_info("KV_dagr-state")
            assert state_info.config.num_replicas == 3
            assert info.cluster is not None
            leader = info.cluster.leader
            assert leader is not None
            cluster.kill(leader)

            async def all_done() -> bool:
                try:
                    return await stored(mesh, "DAGR_AGENTS", replies) >= 300
                except Exception:  # the cluster is electing a new leader; ask again
                    return False

            await eventually(all_done, timeout_s=300, what="all 300 replies after the leader died")
            assert reply_counts(await messages(mesh, "DAGR_AGENTS", replies)) == list(range(1, 301))
        for host in hosts:
            host.kill()


async def test_a_swarm_loses_and_duplicates_nothing_while_hosts_are_killed_at_random(
    mesh: Mesh, nats_server: EmbeddedServer, host_process: StartHostProcess
) -> None:
    """Parents fan out to children, wait, collect and report while hosts are SIGKILLed and replaced
    at random moments (seeded, so a failure can be replayed). Checked from the data: every parent's
    report is published exactly once with every child's answer, and every instance's journal holds
    exactly one final record."""
    rng = random.Random(20261203)
    hosts = [host_process(nats_server, concurrency=4) for _ in range(3)]
    run = uuid.uuid4().hex[:8]
    parents: dict[str, str] = {}

    async def spawn_parent() -> None:
        subject = f"agents.main.swarm.{run}.{len(parents)}"
        parents[await mesh.spawn("spawner", "4 wait=all", reply_to=subject)] = subject

    # Waves of parents, and a kill between waves: kills land while the swarm is at work.
    for _wave in range(8):
        for _ in range(2):
            await spawn_parent()
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        victim = rng.randrange(len(hosts))
        hosts[victim].kill()  # SIGKILL: whatever it was doing, mid-invocation or mid-commit
        hosts[victim] = host_process(nats_server, concurrency=4)

    async def all_reported() -> bool:
        return all([await stored(mesh, "DAGR_AGENTS", s) >= 1 for s in parents.values()])

    await eventually(all_reported, timeout_s=300, what="every parent's report")
    await asyncio.sleep(2)  # anything duplicated would be stored by now

    for parent, subject in parents.items():
        published = await messages(mesh, "DAGR_AGENTS", subject)
        assert len(published) == 1, f"{parent} reported {len(published)} times"
        envelope = cbor2.loads(published[0])
        assert envelope["error"] is None, envelope
        report = cbor2.loads(envelope["ok"])
        assert report["replies"] == [{"echo": f"child {i}"} for i in range(4)]
        assert len(set(report["children"])) == 4
        for instance in (parent, *report["children"]):
            journal = [
                cbor2.loads(m) for m in await messages(mesh, "DAGR_INSTANCES", f"dagr.inst.{instance}")
            ]
            finals = [r for r in journal if r["state"] in ("finished", "failed", "dead")]
            assert [r["state"] for r in finals] == ["finished"], (instance, [r["state"] for r in journal])
        children_state = await mesh.js.get_msg(
            "KV_dagr-state", subject=f"$KV.dagr-state.i.{parent}.children", direct=True
        )
        assert cbor2.loads(children_state.data or b"") == report["children"]
