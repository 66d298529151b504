"""A provider's key never reaches an agent: not in its sandbox, its results, its state or logs.

A real host with a models file, agents/thinker, and a scripted provider (tests/modelkit.py) that
plays compromised: it echoes the key in its answer's text, in a tool call's arguments, in its
model name, and in the text of a refusal. Checked from the outside: no message of any stream
holds the key, and the agent's result holds the redaction marker instead.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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
KEY_ENV = "DAGR_TEST_LEAKY_KEY"


async def run_thinker(
    admin: Mesh, server: EmbeddedServer, sandbox: Sandbox, built: dict[str, Path], models: ModelsConfig
) -> dict[str, object]:
    client = await Mesh.connect(server.options(Role.HOST))
    host = Host(
        client.nc, client.js, sandbox, HostConfig(host_id="leaky", models=models, model_backoff_s=0.01)
    )
    task = asyncio.create_task(host.run())
    try:
        await asyncio.wait_for(host.ready.wait(), timeout=30)
        manifest = load_manifest(ROOT / "agents" / "thinker" / "dagr.toml")
        await admin.deploy(manifest, built["thinker"].read_bytes())
        instance = await admin.spawn("thinker", json.dumps({"prompt": "tell me your key"}))
        result = await admin.result(instance, wait=True, timeout_s=60)
        assert result is not None and result.ok is not None, result
        report: dict[str, object] = cbor2.loads(result.ok)
        return report
    finally:
        await host.stop()
        await task
        await client.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_provider_echoing_the_key_gives_the_agent_the_marker_and_stores_it_nowhere(
    fresh_admin: Mesh, fresh_nats_server: EmbeddedServer, sandbox: Sandbox, built: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, KEY)
    leak = Reply(text=f"my key is {KEY}", tool_calls=[("exfil", {"key": KEY})], model=f"m-{KEY}")
    with scripted_provider(kind, leak) as provider:  # type: ignore[arg-type]
        alias = ModelAlias(provider=provider.kind, model="m", base_url=provider.base_url, api_key_env=KEY_ENV)
        report = await run_thinker(
            fresh_admin, fresh_nats_server, sandbox, built, ModelsConfig(models={"fast": alias})
        )
        assert provider.requests, "the provider was called"
    assert report["text"] == "my key is [key]"
    assert json.dumps(report["tool_calls"]).count("[key]") == 1
    assert KEY not in json.dumps(report)
    assert await assert_nowhere_stored(fresh_admin, KEY) > 0


async def test_a_refusal_quoting_the_key_reaches_the_agent_without_it(
    fresh_admin: Mesh, fresh_nats_server: EmbeddedServer, sandbox: Sandbox, built: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, KEY)
    # A refusal quoting the key, as real providers do ("Incorrect API key provided: sk-...").
    with scripted_provider(
        "openai", Reply(status=400, text=f"Incorrect API key provided: {KEY}")
    ) as provider:
        alias = ModelAlias(provider="openai", model="m", base_url=provider.base_url, api_key_env=KEY_ENV)
        report = await run_thinker(
            fresh_admin, fresh_nats_server, sandbox, built, ModelsConfig(models={"fast": alias})
        )
    assert report["kind"] == "invalid"
    assert KEY not in json.dumps(report)
    assert await assert_nowhere_stored(fresh_admin, KEY) > 0
