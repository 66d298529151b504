"""Class 6: outboxes. What an invocation caused is published once, a publish that can never succeed
ends in a dead letter with the reason, and nothing leaks on the way.

Before: a committed outbox was replayed before the delivery cap was checked, so a publish that
could never succeed, or one to a granted subject no stream captures (the subscriber got the message
13 times in 3 minutes, for ever), circled without end; each failed replay leaked a nats-py
``publish_async`` slot (after 4,000 every commit hung); 1,500 writes could never commit (the
server takes 1,000 messages per batch); and a 9 MiB ``err`` message was re-run 25 times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import watkit
from arena import Arena, assert_contained
from attacks import PUBLISH_TO_CONTEXT, PUT_MANY, agent

from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Host, HostConfig, Layout, Mesh, ServerConfig
from dagr_wasm.mesh._layout import task_subject
from dagr_wasm.mesh._tasks import TASK_HEADER, Task, encode_task
from dagr_wasm.payload import decode_map
from dagr_wasm.policy import MIB, Grants, Limits
from dagr_wasm.sandbox import Sandbox


async def test_a_publish_no_stream_captures_goes_out_once_even_when_the_task_comes_again(
    arena: Arena,
) -> None:
    name = await arena.deploy(agent(PUBLISH_TO_CONTEXT), grants=Grants(publish=("tele.>",)))
    received: list[bytes] = []

    async def got(msg: object) -> None:
        received.append(msg.data)  # type: ignore[attr-defined]

    subscription = await arena.mesh.nc.subscribe("tele.metrics", cb=got)
    try:
        instance = await arena.mesh.spawn(name, "tele.metrics")
        status = await arena.settled(instance)
        assert status["state"] == "finished", status
        # The same task once more (as a redelivery after a lost ack would bring it): the stored
        # outbox is replayed, and a core publish is not sent a second time.
        again = Task(task_id=f"cli-{instance}", kind="start", instance_id=instance, specialist=name,
                     version=status["version"], root_id=instance, context="tele.metrics")  # fmt: skip
        await arena.mesh.js.publish(task_subject(name), encode_task(again), headers={TASK_HEADER: "1"})
        await asyncio.sleep(1.0)
        assert received == [b"v"], f"the subscriber got {len(received)} copies"
        assert len([r for r in await arena.journal(instance) if "lines" in r]) == 1
    finally:
        await subscription.unsubscribe()
    assert arena.host._js.publish_async_pending() == 0
    await arena.benign_still_served()


async def test_a_huge_failure_message_is_capped_and_not_rerun_for_ever(arena: Arena) -> None:
    huge = "x" * (2 * MIB)
    body = "(call $err (i32.const 65536) (local.get $p2))"
    wasm = watkit.component(body, pages=64)  # the message is the context, read from memory
    name = await arena.deploy(wasm)
    before = await arena.snapshot()
    status = await arena.run(name, huge)
    await assert_contained(arena, status, before=before, reason="failure message is 2097152 bytes")
    attempts = [r for r in await arena.journal(status["id"]) if "lines" in r]
    assert len(attempts) == arena.host.config.layout.max_attempts


async def test_more_writes_than_a_batch_can_hold_are_refused_in_the_guest(arena: Arena) -> None:
    name = await arena.deploy(agent(PUT_MANY))
    before = await arena.snapshot()
    status = await arena.run(name, "x" * 1500)
    await assert_contained(arena, status, before=before, reason="max_state_writes=500", state="failed")


async def test_as_many_writes_as_allowed_commit_in_one_batch(arena: Arena) -> None:
    name = await arena.deploy(agent(PUT_MANY), limits=Limits(max_state_writes=990))
    status = await arena.run(name, "x" * 990)
    assert status["state"] == "finished", status
    assert len(await arena.state_keys(status["id"])) == 990


async def test_an_outbox_the_server_cannot_take_is_dead_lettered_at_once(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    # A server left at nats-server's 1 MiB default: a 700 KiB result and its reply exceed it.
    config = ServerConfig(store_dir=tmp_path / "nats", max_payload_bytes=1 * MIB)
    async with EmbeddedServer(config=config) as server:
        layout = Layout(max_attempts=2)
        async with await Mesh.connect(ConnectOptions(servers=(server.url,)), layout=layout) as mesh:
            body = "(call $ok (i32.const 65536) (local.get $p2))"
            await mesh.deploy(
                Manifest(
                    name="big", grants=Grants(publish=("agents.main.>",)), limits=Limits(max_result_bytes=MIB)
                ),
                watkit.component(body, pages=32),
            )
            host = Host(
                mesh.nc, mesh.js, sandbox, HostConfig(layout=layout, retry_backoff_s=(0.05,), concurrency=2)
            )
            running = asyncio.create_task(host.run())
            try:
                instance = await mesh.spawn("big", "y" * (700 * 1024), reply_to="agents.main.big")
                deadline = time.monotonic() + 30
                while (status := await mesh.status(instance)) is None or status.state not in (
                    "dead",
                    "finished",
                ):
                    assert time.monotonic() < deadline, status
                    await asyncio.sleep(0.05)
                assert status.state == "dead", status
                assert "more than the server takes in one message" in (status.error or "")
                assert host.stats.invocations <= 2, "the task circled"
                # Whoever waits gets the error, not the result that could not be sent.
                reply = await mesh.js.get_msg("DAGR_AGENTS", subject="agents.main.big", direct=True)
                envelope = decode_map(reply.data)
                assert envelope is not None and envelope["ok"] is None
                assert "more than the server takes" in envelope["error"]
                assert mesh.js.publish_async_pending() == 0
            finally:
                await host.stop()
                await running
