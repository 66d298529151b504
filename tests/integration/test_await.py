"""Issue 10: await children, signals and HTTP calls, with no instance alive while waiting.

Real server, real hosts, real agents (agents/gatherer, approver, fetcher); a real local HTTP
server. What is checked is what was stored: journals, inbox entries, requests the server got.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from httpkit import LocalHttp, local_http
from meshkit import ROOT, RunHost, deploying
from test_mesh import eventually, messages, result_value

from dagr_wasm.errors import InstanceStateError, NotFoundError, PayloadError
from dagr_wasm.manifest import Manifest, load_manifest
from dagr_wasm.mesh import EmbeddedServer, HttpPolicy, Mesh
from dagr_wasm.mesh._layout import INBOX_STREAM, inbox_subject
from dagr_wasm.policy import Grants, HttpGrant
from dagr_wasm.sandbox import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="session")

AWAIT_AGENTS = ("gatherer", "approver", "fetcher")


awaiting = deploying(*AWAIT_AGENTS)


@pytest.fixture
def http() -> Iterator[LocalHttp]:
    with local_http() as server:
        yield server


async def states(mesh: Mesh, instance: str) -> list[str]:
    return [str(r.state) for r in await mesh.logs(instance)]


async def test_await_all_gathers_every_child_and_wakes_once(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, awaiting: None
) -> None:
    await run_host(nats_server)
    parent = await mesh.spawn("gatherer", json.dumps({"contexts": ["a", "b", "c"], "timeout_s": 60}))
    result = await result_value(mesh, parent)
    assert sorted(v["echo"] for v in result["answers"].values()) == ["a", "b", "c"]
    assert (result["pending"], result["timed_out"], result["errors"]) == ([], False, {})
    # It ended its first invocation awaiting, and ran exactly once more: no polling, no sleep.
    assert await states(mesh, parent) == ["suspended", "finished"]


async def test_await_any_resumes_at_the_first_and_keeps_the_rest_for_later(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, awaiting: None
) -> None:
    await run_host(nats_server)
    spec = {"specialist": "sleeper", "contexts": ["0.2 fast", "2 slow"], "mode": "any", "timeout_s": 60}
    parent = await mesh.spawn("gatherer", json.dumps(spec))
    result = await result_value(mesh, parent)
    (first,) = result["answers"]
    (slow,) = result["pending"]
    assert first != slow and not result["timed_out"]
    # The slow child's reply comes later: it is kept in the inbox, and read once.
    await eventually(
        lambda: _stored_entries(mesh, parent, 2), timeout_s=30, what="the slow child's reply in the inbox"
    )
    ask = str(uuid.uuid4())
    await mesh.send("gatherer", parent, b"late?", task_id=f"late-{ask}")
    await eventually(lambda: _finished_twice(mesh, parent), timeout_s=30, what="the message event")
    late = cbor2.loads((await mesh.result(parent)).ok)  # type: ignore[union-attr]
    assert list(late["late"]) == [slow]
    await mesh.send("gatherer", parent, b"again?", task_id=f"again-{ask}")
    await eventually(lambda: _finished_n(mesh, parent, 3), timeout_s=30, what="the second message")
    assert cbor2.loads((await mesh.result(parent)).ok) == {"late": {}}  # type: ignore[union-attr]


async def _stored_entries(mesh: Mesh, instance: str, n: int) -> bool:
    return len(await messages(mesh, INBOX_STREAM, inbox_subject(instance))) >= n


async def _finished_twice(mesh: Mesh, instance: str) -> bool:
    return await _finished_n(mesh, instance, 2)


async def _finished_n(mesh: Mesh, instance: str, n: int) -> bool:
    return (await states(mesh, instance)).count("finished") >= n


async def test_await_ends_at_its_deadline_with_what_is_pending(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, awaiting: None
) -> None:
    await run_host(nats_server)
    spec = {"specialist": "sleeper", "contexts": ["5 late", "5 later"], "timeout_s": 1}
    parent = await mesh.spawn("gatherer", json.dumps(spec))
    result = await result_value(mesh, parent)
    assert result["timed_out"] is True
    assert len(result["pending"]) == 2 and result["answers"] == {}
    assert await states(mesh, parent) == ["suspended", "finished"]


async def test_a_signal_wakes_an_approval_and_bad_signals_store_nothing(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, awaiting: None
) -> None:
    await run_host(nats_server)
    instance = await mesh.spawn("approver", "deploy v2 to production")

    async def awaiting_signal() -> bool:
        status = await mesh.status(instance)
        return status is not None and status.awaiting == ("signal-approve",)

    await eventually(awaiting_signal, timeout_s=30, what="the approver awaiting its signal")
    await mesh.signal(instance, "approve", cbor2.dumps({"ok": True, "by": "ana"}))
    result = await result_value(mesh, instance)
    assert result == {"request": "deploy v2 to production", "approved": True, "by": "ana"}
    assert await states(mesh, instance) == ["suspended", "finished"]

    entries = len(await messages(mesh, INBOX_STREAM, inbox_subject(instance)))
    with pytest.raises(InstanceStateError, match="signal"):
        await mesh.signal(instance, "approve", b"")
    with pytest.raises(NotFoundError):
        await mesh.signal("0" * 20, "approve", b"")
    with pytest.raises(PayloadError, match="signal name"):
        await mesh.signal(instance, "Not A Name", b"")
    assert len(await messages(mesh, INBOX_STREAM, inbox_subject(instance))) == entries


async def _deploy_fetcher(mesh: Mesh, sandbox: Sandbox, built: dict[str, Path], grants: Grants) -> str:
    name = f"fetcher-{uuid.uuid4().hex[:8]}"
    base = load_manifest(ROOT / "agents" / "fetcher" / "dagr.toml")
    manifest = Manifest(name=name, description=base.description, grants=grants, limits=base.limits)
    await mesh.deploy(manifest, built["fetcher"].read_bytes())
    return name


async def test_an_http_call_is_made_once_and_its_response_wakes_the_caller(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, built: dict[str, Path], sandbox: Sandbox,
    http: LocalHttp, awaiting: None,
) -> None:  # fmt: skip
    await run_host(nats_server, http=HttpPolicy(allow_private=True))
    name = await _deploy_fetcher(mesh, sandbox, built, Grants(http=(HttpGrant(url=f"{http.url}/echo"),)))
    instance = await mesh.spawn(name, json.dumps({"url": f"{http.url}/echo", "headers": {"X-Q": "1"}}))
    report: dict[str, Any] = await result_value(mesh, instance)
    assert report["ok"] and report["status"] == 200
    seen = json.loads(report["body"])
    assert seen["headers"]["X-Q"] == "1"
    (key,) = [k for k in http.by_key if k]
    assert key.startswith("http-") and http.by_key[key] == 1  # one call, with its idempotency key
    assert await states(mesh, instance) == ["suspended", "finished"]


async def test_private_addresses_are_refused_unless_the_operator_allows_them(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, built: dict[str, Path], sandbox: Sandbox,
    http: LocalHttp, awaiting: None,
) -> None:  # fmt: skip
    await run_host(nats_server)  # the default: no private or loopback addresses
    name = await _deploy_fetcher(mesh, sandbox, built, Grants(http=(HttpGrant(url=f"{http.url}/*"),)))
    instance = await mesh.spawn(name, json.dumps({"url": f"{http.url}/echo"}))
    report = await result_value(mesh, instance)
    assert (report["ok"], report["kind"]) == (False, "denied")
    assert "private or reserved address" in report["error"]
    assert http.requests == []


async def test_dagr_signal_refuses_an_unknown_instance_with_exit_2(
    nats_server: EmbeddedServer, capsys: pytest.CaptureFixture[str], awaiting: None
) -> None:
    from meshkit import connection_flags

    from dagr_wasm.cli import main

    argv = ["signal", "0" * 20, "approve", "--data", '{"ok": true}', "--json", *connection_flags(nats_server)]
    assert await asyncio.to_thread(main, argv) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "usage" and "0" * 20 in error["message"]
