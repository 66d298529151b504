"""Issue 9, credentials by default: the embedded server lets in only the roles' nkeys, and each role
does what it must and nothing more.

Before: the embedded server had no authorization at all: any process that reached the port read an
instance's state from ``$KV.dagr-state``, cancelled any instance with one publish on
``dagr.cancel.<id>``, and rewrote a registry entry to grant ``publish = [">"]``.

Every attack runs as a raw NATS client (what an outsider has), and what it tried to change is read
back afterwards as the admin, from the streams and buckets themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cbor2
import nats
import pytest
from arena import Arena
from nats.aio.client import Client as NATS

from dagr_wasm.errors import ConnectionFailure, PermissionDenied
from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Mesh, Role
from dagr_wasm.mesh._tasks import start_instance_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

Client = Callable[[Role | None], Awaitable[tuple[NATS, list[str]]]]


@pytest.fixture
async def client(arena_server: EmbeddedServer) -> AsyncIterator[Client]:
    """``await client(role)``: a raw nats-py client with that role's nkey (None: no credentials),
    and the list the server's asynchronous errors (permission violations) are collected in."""
    opened: list[NATS] = []

    async def connect(role: Role | None) -> tuple[NATS, list[str]]:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        credentials = arena_server.credentials
        assert credentials is not None
        seed = {"nkeys_seed": str(credentials.seed_file(role))} if role is not None else {}
        nc = await nats.connect(
            arena_server.url, error_cb=on_error, max_reconnect_attempts=1, connect_timeout=2, **seed
        )
        opened.append(nc)
        return nc, errors

    yield connect
    for nc in opened:
        await nc.close()


async def denied(nc: NATS, errors: list[str], subject: str, payload: bytes = b"x") -> None:
    """Publish ``subject``, and assert the server refused it (a permissions violation)."""
    before = len(errors)
    await nc.publish(subject, payload)
    await nc.flush()
    await _violation_after(errors, before)


async def _violation_after(errors: list[str], before: int) -> None:
    for _ in range(100):
        if any("permissions violation" in e.lower() for e in errors[before:]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server did not refuse it: {errors[before:]}")


async def unanswered(nc: NATS, subject: str, payload: bytes = b"") -> None:
    """A JetStream API request the role may not make gets no answer at all."""
    with pytest.raises(nats.errors.TimeoutError):
        await nc.request(subject, payload, timeout=1.0)


async def test_a_client_without_credentials_or_with_a_stranger_key_is_refused(
    arena_server: EmbeddedServer, tmp_path: Any
) -> None:
    with pytest.raises(ConnectionFailure, match="without credentials") as refused:
        await Mesh.connect(ConnectOptions(servers=(arena_server.url,), max_reconnect_attempts=1))
    assert refused.value.refused
    import secrets

    import nkeys

    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))
    with pytest.raises(ConnectionFailure, match="authorization violation"):
        await Mesh.connect(
            ConnectOptions(
                servers=(arena_server.url,), nkey_seed_file=str(stranger), max_reconnect_attempts=1
            )
        )


async def test_a_submitter_cannot_read_or_write_state(arena: Arena, client: Client) -> None:
    await arena.benign_still_served()  # deploys the benign specialist
    status = await arena.run("benign", "a secret in the journal")
    instance = status["id"]
    await arena.mesh.js.publish(f"$KV.dagr-state.i.{instance}.secret", cbor2.dumps("hunter2"))
    nc, errors = await client(Role.SUBMITTER)
    await unanswered(
        nc,
        "$JS.API.DIRECT.GET.KV_dagr-state",
        json.dumps({"last_by_subj": f"$KV.dagr-state.i.{instance}.secret"}).encode(),
    )
    await unanswered(nc, f"$JS.API.DIRECT.GET.KV_dagr-state.$KV.dagr-state.i.{instance}.secret")
    await unanswered(nc, "$JS.API.STREAM.INFO.KV_dagr-state")
    await denied(nc, errors, f"$KV.dagr-state.i.{instance}.secret", cbor2.dumps("overwritten"))
    # Subscribing to the bucket's subjects (to see writes as they happen) is refused too.
    before = len(errors)
    await nc.subscribe("$KV.dagr-state.>")
    await nc.flush()
    await _violation_after(errors, before)
    kept = await arena.mesh.js.get_msg(
        "KV_dagr-state", subject=f"$KV.dagr-state.i.{instance}.secret", direct=True
    )
    assert cbor2.loads(kept.data or b"") == "hunter2"


async def test_a_submitter_cannot_cancel_forge_or_touch_the_registry(arena: Arena, client: Client) -> None:
    await arena.benign_still_served()  # deploys the benign specialist
    before = await arena.mesh.registry.require("benign")
    instance = await arena.mesh.spawn("benign", "kept")
    nc, errors = await client(Role.SUBMITTER)
    await denied(nc, errors, f"dagr.cancel.{instance}", b"")
    await denied(nc, errors, f"dagr.inst.{instance}", cbor2.dumps({"id": instance, "state": "cancelled"}))
    await denied(nc, errors, "$KV.dagr-registry.spec.benign", b"{}")
    await denied(nc, errors, f"dagr.sched.benign.{instance}", b"")
    await denied(nc, errors, f"dagr.inbox.{instance}", b"")
    for api in (
        "STREAM.DELETE.DAGR_TASKS_benign",
        "STREAM.PURGE.DAGR_INSTANCES",
        "STREAM.UPDATE.DAGR_AGENTS",
    ):
        await unanswered(nc, f"$JS.API.{api}", b"{}")
    settled = await arena.settled(instance)
    assert settled["state"] == "finished" and settled["ok"] == b"kept"  # not cancelled, not rewritten
    assert await arena.mesh.registry.require("benign") == before
    for stream in ("DAGR_TASKS_benign", "DAGR_INSTANCES", "DAGR_AGENTS"):
        await arena.mesh.js.stream_info(stream)  # still there


async def test_a_submitter_starts_instances_and_reads_their_results(arena: Arena, client: Client) -> None:
    await arena.benign_still_served()
    nc, _errors = await client(Role.SUBMITTER)
    ack = await nc.jetstream().publish("agents.specialist.benign", b"from a submitter")
    instance = await _instance_of_plain_start(arena, ack.seq)
    async with await Mesh.connect(arena.server.options(Role.SUBMITTER)) as submitter:
        result = await submitter.result(instance, wait=True, timeout_s=30)
        assert result is not None and result.ok == b"from a submitter"
        assert [s.name for s in await submitter.registry.list()]  # listing specialists is allowed


async def test_a_host_cannot_write_the_registry_or_cancel(arena: Arena, client: Client) -> None:
    await arena.benign_still_served()
    before = await arena.mesh.registry.require("benign")
    instance = await arena.mesh.spawn("benign", "still here")
    nc, errors = await client(Role.HOST)
    await denied(nc, errors, "$KV.dagr-registry.spec.benign", b'{"grants": {"publish": [">"]}}')
    await denied(nc, errors, f"dagr.cancel.{instance}", b"")
    await unanswered(nc, "$JS.API.STREAM.DELETE.DAGR_INSTANCES", b"{}")
    async with await Mesh.connect(arena.server.options(Role.HOST)) as host:
        with pytest.raises(PermissionDenied, match="dagr-registry"):
            await host.registry.delete("benign")
    settled = await arena.settled(instance)
    assert settled["state"] == "finished"
    assert await arena.mesh.registry.require("benign") == before


async def _instance_of_plain_start(arena: Arena, seq: int) -> str:
    """The instance a plain message on a topic started: its id derives from the stream sequence."""
    return start_instance_id("DAGR_TASKS_benign", seq)


async def test_an_envelope_on_a_topic_carries_no_authority(arena: Arena, client: Client) -> None:
    """Issue 9, item 2. Before: an envelope naming another instance, with its ceilings stripped and
    its result sent to the attacker, ran as that instance. Now only hosts and admins write trusted
    tasks (on dagr.task.<s>); on a topic an envelope is a start request for a new instance."""
    await arena.benign_still_served()
    victim = await arena.mesh.spawn("benign", "the victim")
    await arena.settled(victim)
    victim_journal = await arena.journal(victim)
    nc, errors = await client(Role.SUBMITTER)
    js = nc.jetstream()
    forged = {
        "v": 1, "id": "forged-task", "kind": "start", "instance": victim, "specialist": "benign",
        "parent": "someone", "parent_specialist": "orchestrator", "root": "someone", "depth": 0,
        "ceilings": [], "limit_ceiling": None, "context": "forged", "reply_to": "agents.main.attacker",
    }  # fmt: skip
    ack = await js.publish("agents.specialist.benign", cbor2.dumps(forged), headers={"Dagr-Task": "1"})
    started = await _instance_of_plain_start(arena, ack.seq)
    assert started != victim
    new = await arena.settled(started)
    assert (new["parent"], new["root"], new["ceilings"], new["depth"]) == (None, started, [], 0)
    assert new["ok"] == b"forged"
    assert await arena.journal(victim) == victim_journal  # the victim never ran again
    # Events for existing instances and reply-to subjects of the runtime are refused outright.
    for bad in (
        {**forged, "kind": "wake"},
        {**forged, "kind": "message"},
        {**forged, "reply_to": f"dagr.cancel.{victim}"},
    ):
        ack = await js.publish("agents.specialist.benign", cbor2.dumps(bad), headers={"Dagr-Task": "1"})
        letter = await _dead_letter_of(arena, ack.seq)
        assert "only hosts" in letter["error"] or "reply_to" in letter["error"], letter
    assert await arena.journal(victim) == victim_journal
    await denied(nc, errors, "dagr.task.benign", cbor2.dumps(forged))


async def test_a_submitter_spawns_through_the_mesh_api_and_reads_the_result(arena: Arena) -> None:
    await arena.benign_still_served()
    async with await Mesh.connect(arena.server.options(Role.SUBMITTER)) as submitter:
        instance = await submitter.spawn("benign", "hello from a submitter")
        result = await submitter.result(instance, wait=True, timeout_s=30)
        assert result is not None and result.ok == b"hello from a submitter"
        with pytest.raises(PermissionDenied):
            await submitter.registry.delete("benign")
    assert await arena.mesh.registry.current("benign") is not None


async def _dead_letter_of(arena: Arena, seq: int) -> dict[str, Any]:
    for _ in range(200):
        for letter in await arena.dead_letters():
            if letter.get("stream_seq") == seq:
                return letter
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing dead-lettered for stream sequence {seq}")
