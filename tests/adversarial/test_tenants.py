"""Issue 9, tenants: one NATS deployment shared by several tenants, one account each
(``dagr accounts``). A tenant's every role, the admin included, sees nothing of another tenant's
streams, state or traffic, and its JetStream quota stops it from filling the shared disk.

The server runs the accounts file the CLI wrote, as a node of host/ would include it; what each
attack tried is checked afterwards from the victim tenant's own streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import watkit
from arena import ECHO_WAT
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, NotFoundError

from dagr_wasm.cli import main
from dagr_wasm.errors import QuotaExceeded
from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Host, HostConfig, Mesh, Role, ServerConfig
from dagr_wasm.mesh._layout import INSTANCES_STREAM, STATE_BUCKET
from dagr_wasm.sandbox import Grants, Limits, Sandbox

QUOTA_BYTES = 4 * 2**20


@dataclass
class Tenants:
    server: EmbeddedServer
    seeds: Path

    def options(self, tenant: str, role: Role) -> ConnectOptions:
        return ConnectOptions(
            servers=(self.server.url,), nkey_seed_file=str(self.seeds / tenant / f"{role}.nk"), role=role
        )

    async def raw(self, tenant: str, role: Role) -> NATS:
        seed = str(self.seeds / tenant / f"{role}.nk")
        return await nats.connect(
            self.server.url, nkeys_seed=seed, max_reconnect_attempts=1, connect_timeout=2
        )


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[Tenants]:
    accounts = tmp_path / "accounts.conf"
    seeds = tmp_path / "tenants"
    argv = ["accounts", "acme", "globex", "--dir", str(seeds), "-o", str(accounts)]
    argv += ["--max-file-store", f"{QUOTA_BYTES}", "--max-memory-store", "1MiB"]
    assert await asyncio.to_thread(main, argv) == 0
    assert all(
        (seeds / t / f"{r}.nk").stat().st_mode & 0o777 == 0o600 for t in ("acme", "globex") for r in Role
    )
    server = EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "store", accounts_file=accounts))
    server.start()
    try:
        yield Tenants(server, seeds)
    finally:
        server.stop()


@pytest.fixture
async def acme_running(tenants: Tenants, sandbox: Sandbox) -> AsyncIterator[tuple[Mesh, str]]:
    """acme's deployment: laid out, echo deployed, a host serving, one instance answered with a secret."""
    admin = await Mesh.connect(tenants.options("acme", Role.ADMIN))
    await admin.ensure_layout()
    await admin.deploy(Manifest(name="echo", grants=Grants(), limits=Limits()), watkit.component(ECHO_WAT))
    client = await Mesh.connect(tenants.options("acme", Role.HOST))
    host = Host(client.nc, client.js, sandbox, HostConfig(host_id="acme-host"))
    task = asyncio.create_task(host.run())
    try:
        await asyncio.wait_for(host.ready.wait(), timeout=30)
        instance = await admin.spawn("echo", "acme-secret")
        await _answered(admin, instance)
        yield admin, instance
    finally:
        await host.stop()
        await task
        await client.close()
        await admin.close()


async def _answered(mesh: Mesh, instance: str) -> None:
    deadline = time.monotonic() + 30
    while (result := await mesh.result(instance)) is None:
        assert time.monotonic() < deadline, f"{instance} was not answered"
        await asyncio.sleep(0.05)
    assert result.ok == b"acme-secret"


async def test_another_tenants_admin_sees_nothing(tenants: Tenants, acme_running: tuple[Mesh, str]) -> None:
    acme, instance = acme_running
    globex = await tenants.raw("globex", Role.ADMIN)
    seen: list[bytes] = []
    try:
        # Even globex's admin (publish and subscribe ">") lists no stream and finds none of acme's.
        js = globex.jetstream()
        assert await js.streams_info() == []
        for stream in (INSTANCES_STREAM, f"KV_{STATE_BUCKET}"):
            with pytest.raises(NotFoundError):
                await js.stream_info(stream)

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.data)

        await globex.subscribe(">", cb=on_msg)
        await globex.flush()
        # acme's traffic while globex listens to everything: a new instance, answered.
        second = await acme.spawn("echo", "acme-secret")
        await _answered(acme, second)
        # globex's admin publishes a start request for "echo": it lands in globex's account.
        before = (await acme.js.stream_info(INSTANCES_STREAM)).state.messages
        await globex.publish("agents.specialist.echo", b"forged")
        await globex.flush()
        await asyncio.sleep(0.5)
        assert (await acme.js.stream_info(INSTANCES_STREAM)).state.messages == before
        assert not [m for m in seen if b"acme-secret" in m]
        # And globex's own layout is a deployment of its own, with nothing of acme's in it.
        async with await Mesh.connect(tenants.options("globex", Role.ADMIN)) as mesh:
            await mesh.ensure_layout()
            assert await mesh.status(instance) is None
            assert await mesh.registry.current("echo") is None
    finally:
        await globex.close()


async def test_a_tenant_is_held_to_its_quota(tenants: Tenants, acme_running: tuple[Mesh, str]) -> None:
    acme, _ = acme_running
    # acme's admin (the most a tenant has) writes state until its account refuses, in smaller and
    # smaller pieces until not even 64 bytes fit.
    refusals: list[APIError] = []
    for size in (512 * 1024, 32 * 1024, 1024, 64):
        for i in range(8 * QUOTA_BYTES // size):
            try:
                await acme.js.publish(f"$KV.{STATE_BUCKET}.hoard.{size}.{i}", b"x" * size)
            except APIError as exc:
                refusals.append(exc)
                break
    assert len(refusals) == 4, "the account took more than its quota"
    assert (await acme.js.account_info()).storage <= QUOTA_BYTES
    # The tenant's own CLI and applications get a reason, and nothing half-stored.
    before = (await acme.js.stream_info(INSTANCES_STREAM)).state.messages
    with pytest.raises(QuotaExceeded, match="quota"):
        await acme.spawn("echo", "one more")
    assert (await acme.js.stream_info(INSTANCES_STREAM)).state.messages == before
    # globex is not affected: it lays out, deploys and stores as before.
    async with await Mesh.connect(tenants.options("globex", Role.ADMIN)) as globex:
        await globex.ensure_layout()
        await globex.deploy(
            Manifest(name="echo", grants=Grants(), limits=Limits()), watkit.component(ECHO_WAT)
        )
        chunk = b"x" * (512 * 1024)
        await globex.js.publish(f"$KV.{STATE_BUCKET}.{uuid.uuid4().hex}", chunk)
        assert (await globex.js.account_info()).storage >= len(chunk)


async def test_a_tenants_submitter_reaches_only_its_own_tenant(
    tenants: Tenants, acme_running: tuple[Mesh, str]
) -> None:
    acme, instance = acme_running
    submitter = await tenants.raw("globex", Role.SUBMITTER)
    try:
        # The journal read a submitter may make, against acme's instance: no such stream here.
        with pytest.raises(nats.errors.NoRespondersError):
            await submitter.request(f"$JS.API.DIRECT.GET.{INSTANCES_STREAM}", b"{}", timeout=1.0)
    finally:
        await submitter.close()
    assert (await acme.result(instance)) is not None
