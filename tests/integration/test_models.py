"""Issue 11: model calls, made by the host with keys the agent never sees, awaited like any handle.

Real server, real host, a real agent (agents/thinker), and a real local HTTP server speaking
OpenAI's Chat Completions or Anthropic's Messages with scripted answers (tests/modelkit.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from meshkit import RunHost, deploying
from modelkit import KEY, Reply, ScriptedProvider, scripted_provider
from test_mesh import result_value

from dagr_wasm.mesh import EmbeddedServer, Mesh
from dagr_wasm.models import ModelAlias, ModelsConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY_ENV = "DAGR_TEST_MODEL_KEY"


thinker = deploying("thinker")


def models_for(provider: ScriptedProvider, **extra: Any) -> ModelsConfig:
    alias = ModelAlias(
        provider=provider.kind,
        model="provider-model-x",
        base_url=provider.base_url,
        api_key_env=KEY_ENV,
        input_usd_per_mtok=1.0,
        output_usd_per_mtok=2.0,
        **extra,
    )
    return ModelsConfig(models={"fast": alias})


async def think(mesh: Mesh, **spec: Any) -> dict[str, Any]:
    instance = await mesh.spawn("thinker", json.dumps(spec))
    result: dict[str, Any] = await result_value(mesh, instance)
    return result


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_model_call_is_made_once_with_the_hosts_key_and_its_answer_resumes_the_agent(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, thinker: None, kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, KEY)
    answer = Reply(text="Checking.", tool_calls=[("lookup", {"ticker": "GME"})], usage=(40, 7))
    with scripted_provider(kind, answer) as provider:  # type: ignore[arg-type]
        await run_host(nats_server, models=models_for(provider))
        tools = [{"name": "lookup", "description": "Find a ticker", "parameters": {"type": "object"}}]
        result = await think(mesh, prompt="What about GME?", system="Be brief.", tools=tools)

        assert result["text"] == "Checking."
        assert result["tool_calls"] == [
            {"id": result["tool_calls"][0]["id"], "name": "lookup", "arguments": {"ticker": "GME"}}
        ]
        assert (result["finish_reason"], result["usage"], result["model"]) == (
            "tool-calls",
            [40, 7],
            "scripted-model-1",
        )
        # One request, with the key the host holds, the provider's model name and the agent's turn.
        (request,) = provider.requests
        body = request["body"]
        assert body["model"] == "provider-model-x"
        if kind == "openai":
            assert [m["role"] for m in body["messages"]] == ["system", "user"]
            assert body["tools"][0]["function"]["name"] == "lookup"
        else:
            assert body["system"] == "Be brief." and [m["role"] for m in body["messages"]] == ["user"]
            assert body["tools"][0]["input_schema"] == {"type": "object"}
        assert request["headers"]["Idempotency-Key"].startswith("model-")
        assert provider.by_key[request["headers"]["Idempotency-Key"]] == 1


async def test_rate_limits_and_outages_are_retried_and_surface_only_when_the_call_finally_fails(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, thinker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    flaky = (Reply(status=429, retry_after="0"), Reply(status=503), Reply(text="at last"))
    with scripted_provider("openai", *flaky) as provider:
        first = await run_host(nats_server, models=models_for(provider), model_backoff_s=0.01)
        assert (await think(mesh, prompt="hi"))["text"] == "at last"
        # Three attempts of one call: the same idempotency key each time.
        assert len(provider.requests) == 3 and len(provider.by_key) == 1
    await first.stop()  # its provider is gone: the next call must be the next host's

    with scripted_provider("openai", Reply(status=503)) as down:
        await run_host(nats_server, models=models_for(down, max_retries=2), model_backoff_s=0.01)
        result = await think(mesh, prompt="hi")
        assert result["kind"] == "unavailable" and "gave up after 3 attempts" in result["error"]
        assert len(down.requests) == 3


async def test_an_alias_the_manifest_does_not_grant_is_denied_and_nothing_is_sent(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, thinker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider("openai") as provider:
        config = models_for(provider)
        await run_host(
            nats_server, models=ModelsConfig(models={**config.models, "smart": config.models["fast"]})
        )
        result = await think(mesh, prompt="hi", model="smart")
        assert result["refused"] == "denied" and "grants.models" in result["error"]
        assert provider.requests == []


async def test_a_provider_refusing_the_key_is_unavailable_to_the_agent_without_the_key(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, thinker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-" + "0" * 20)
    with scripted_provider("anthropic") as provider:
        await run_host(nats_server, models=models_for(provider))
        result = await think(mesh, prompt="hi")
        assert result["kind"] == "unavailable" and "refused this host's key" in result["error"]
        assert "sk-wrong" not in json.dumps(result)
