"""Hostile agents against the model capability: spending past a budget, finding the host's key.

A real server and host, a scripted provider on a real local port (tests/modelkit.py). Checked from
the outside: the requests the provider received, the accounts in the state bucket, every message
of every stream, and the host's log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import cbor2
import pytest
from modelkit import KEY, Reply, scripted_provider
from test_secrets import assert_nowhere_stored

from dagr_wasm.manifest import load_manifest
from dagr_wasm.mesh import EmbeddedServer, Host, HostConfig, Mesh, Role
from dagr_wasm.models import ModelAlias, ModelsConfig
from dagr_wasm.sandbox import Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "DAGR_TEST_ATTACKED_KEY"


async def run_agent(
    admin: Mesh,
    server: EmbeddedServer,
    sandbox: Sandbox,
    built: dict[str, Path],
    name: str,
    models: ModelsConfig,
    context: str = "",
) -> tuple[str, dict[str, Any]]:
    client = await Mesh.connect(server.options(Role.HOST))
    host = Host(client.nc, client.js, sandbox, HostConfig(host_id="attacked", models=models, concurrency=16))
    task = asyncio.create_task(host.run())
    try:
        await asyncio.wait_for(host.ready.wait(), timeout=30)
        manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
        await asyncio.to_thread(sandbox.load_file, built[name])
        await admin.deploy(manifest, built[name].read_bytes())
        instance = await admin.spawn(name, context)
        result = await admin.result(instance, wait=True, timeout_s=180)
        assert result is not None and result.ok is not None, result
        report: dict[str, Any] = cbor2.loads(result.ok)
        return instance, report
    finally:
        await host.stop()
        await task
        await client.close()


async def test_forking_and_asking_again_never_spends_past_the_roots_budget(
    fresh_admin: Mesh, fresh_nats_server: EmbeddedServer, sandbox: Sandbox, built: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Thirteen copies, each with the manifest's whole budget as its own, each asking eight calls
    at a time round after round: the tree gets six calls and sixty output tokens in all."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider("openai", Reply(text="spent", usage=(9, 10))) as provider:
        alias = ModelAlias(
            provider="openai", model="m", base_url=provider.base_url, api_key_env=KEY_ENV, concurrency=64
        )
        root, report = await run_agent(
            fresh_admin,
            fresh_nats_server,
            sandbox,
            built,
            "hostile-spender",
            ModelsConfig(models={"fast": alias}),
        )
        # The provider, from the outside: six calls were made, no more, however they were asked.
        assert len(provider.requests) == 6
        assert all(r["body"]["max_tokens"] == 10 for r in provider.requests)
    # The state bucket: the root's account holds the whole tree's spending, within its budget,
    # and nothing is held for calls in flight any more.
    account = await fresh_admin.model_account(root)
    assert (account.tree.calls, account.tree.output_tokens) == (6, 60)
    assert account.held.calls == 0 and account.held.output_tokens == 0
    assert "quota-exceeded" in report["refused"]
    # Every instance of the tree ended: the attack was contained, not just starved.
    statuses = await fresh_admin.statuses()
    spenders = [s for s in statuses if s.specialist == "hostile-spender"]
    assert len(spenders) == 13 and all(s.state.value == "finished" for s in spenders), [
        s.state for s in spenders
    ]


async def test_an_agent_looking_for_the_key_finds_it_nowhere(
    fresh_admin: Mesh, fresh_nats_server: EmbeddedServer, sandbox: Sandbox, built: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Its environment, arguments, config, identity, state, the model's answer (a provider that
    repeats the key, as a prompt injection would make one) and its inbox: no key anywhere."""
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    with scripted_provider("anthropic", Reply(text=f"Sure: {KEY}", model=f"model-{KEY}")) as provider:
        alias = ModelAlias(provider="anthropic", model="m", base_url=provider.base_url, api_key_env=KEY_ENV)
        _, found = await run_agent(
            fresh_admin,
            fresh_nats_server,
            sandbox,
            built,
            "hostile-keyfinder",
            ModelsConfig(models={"fast": alias}),
        )
        (request,) = provider.requests
        assert request["headers"]["x-api-key"] == KEY  # the key did go where it belongs
    assert found["environ"] == {} and found["answers"], found
    assert "[key]" in json.dumps(found["answers"])
    assert KEY not in json.dumps(found)
    assert await assert_nowhere_stored(fresh_admin, KEY) > 0
    assert KEY not in caplog.text
