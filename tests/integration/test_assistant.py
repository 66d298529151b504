"""Issue 11: the model-driven main agent, end to end: agents/assistant (a ToolAgent) with a real
stock-analyst, against a real local server speaking OpenAI's or Anthropic's wire protocol whose
answers are scripted: the model spawns an analyst, the analyst's figures come back as a tool
result, the model answers, and the report lands on agents.main.results.

Also the original DAgR's name for the main agent: `dagr register specialist --name claude-code
--module agents/assistant`, then `dagr start --agent claude-code`, through the CLI against a real
`dagr host` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from meshkit import HostProcess, RunHost, connection_flags, deploying
from modelkit import KEY, Reply, ScriptedProvider, scripted_provider
from test_mesh import result_value
from test_models import KEY_ENV, models_for

from dagr_wasm.cli import main
from dagr_wasm.mesh import EmbeddedServer, Mesh, Role
from dagr_wasm.mesh._layout import AGENTS_STREAM

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "agents" / "assistant" / "config.md").read_text(encoding="utf-8")
TASK = "Check GME sentiment on Reddit"
SCRIPT = (
    Reply(tool_calls=[("spawn", {"specialist": "stock-analyst", "task": TASK})], usage=(310, 24)),
    Reply(text="GME: the analyst reports its signal, return and mood.", usage=(520, 16)),
)


assistant = deploying("assistant", "stock-analyst")


def tool_results(body: dict[str, Any], kind: str) -> list[str]:
    """The tool results a request carries back to the model, as text, in either dialect."""
    if kind == "openai":
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]
    return [
        block["content"]
        for m in body["messages"]
        for block in (m["content"] if isinstance(m["content"], list) else [])
        if block.get("type") == "tool_result"
    ]


def system_prompt(body: dict[str, Any], kind: str) -> str:
    if kind == "openai":
        return str(body["messages"][0]["content"]) if body["messages"][0]["role"] == "system" else ""
    return str(body.get("system", ""))


def check_conversation(provider: ScriptedProvider, kind: str) -> dict[str, Any]:
    """The two requests the loop made: the system prompt from config.md, the spawn tool with
    stock-analyst its only specialist, the first turn made to call a tool, and the analyst's
    figures sent back as the tool result. Returns the analyst's result as the model saw it."""
    first, second = provider.bodies()
    for body in (first, second):
        assert system_prompt(body, kind).strip() == CONFIG.strip()
    tools = first["tools"]
    (spawn,) = tools
    schema = spawn["function"]["parameters"] if kind == "openai" else spawn["input_schema"]
    assert schema["properties"]["specialist"]["enum"] == ["stock-analyst"]
    assert first["tool_choice"] == ("required" if kind == "openai" else {"type": "any"})
    (result,) = tool_results(second, kind)
    seen: dict[str, Any] = json.loads(result)
    return seen


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_the_assistant_spawns_an_analyst_awaits_it_and_reports(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, assistant: None, kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider(kind, *SCRIPT) as provider:  # type: ignore[arg-type]
        await run_host(nats_server, models=models_for(provider))
        instance = await mesh.spawn("assistant", TASK)
        result = await result_value(mesh, instance, timeout_s=120)

        assert result["stopped"] == "answer" and result["answer"] == SCRIPT[1].text
        assert (result["turns"], result["tool_calls"], result["usage"]) == (2, 1, [830, 40])
        (spawned,) = result["spawned"]
        assert spawned["specialist"] == "stock-analyst" and spawned["task"] == TASK and spawned["ok"]
        analysis = spawned["result"]
        assert analysis["ticker"] == "GME" and analysis["signal"] in ("bullish", "bearish", "neutral")

        # The analyst really ran, as the assistant's child, and its figures went back to the model.
        child = await mesh.status(spawned["child_id"])
        assert child is not None and child.state == "finished" and child.lineage.parent == instance
        assert check_conversation(provider, kind)["signal"] == analysis["signal"]
        # Two calls, each once, with the host's key.
        assert len(provider.requests) == 2 and set(provider.by_key.values()) == {1}

        # The report is stored on agents.main.results.
        reports = await reports_about(mesh, instance)
        assert len(reports) == 1 and reports[0]["answer"] == result["answer"]

        # Its calls are recorded (gen_ai.* fields) and booked to its account.
        calls = await mesh.model_calls(instance)
        assert [(c.input_tokens, c.output_tokens) for c in calls] == [(310, 24), (520, 16)]
        assert [c.finish_reason for c in calls] == ["tool-calls", "stop"]
        account = await mesh.model_account(instance)
        assert (account.own.calls, account.own.input_tokens, account.own.output_tokens) == (2, 830, 40)


async def reports_about(mesh: Mesh, instance: str) -> list[dict[str, Any]]:
    """The reports on agents.main.results whose spawned children answer to ``instance``."""
    info = await mesh.js.stream_info(AGENTS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await mesh.js.get_msg(AGENTS_STREAM, seq=seq, direct=True)
        except Exception:
            continue
        try:
            doc = cbor2.loads(msg.data)
        except Exception:
            continue
        if isinstance(doc, dict) and "answer" in doc:
            for spawned in doc.get("spawned") or ():
                child = await mesh.status(spawned.get("child_id", ""))
                if child is not None and child.lineage.parent == instance:
                    found.append(doc)
                    break
    return found


# --- the original name, through the CLI --------------------------------------------------------------


@pytest.fixture
def provider_and_host(
    nats_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, assistant: None
) -> Iterator[ScriptedProvider]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider("openai", *SCRIPT) as provider:
        models = tmp_path / "models.toml"
        models.write_text(
            f'[models.fast]\nprovider = "openai"\nmodel = "provider-model-x"\n'
            f'base_url = "{provider.base_url}"\napi_key_env = "{KEY_ENV}"\n'
            "input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
        )
        log = tmp_path / "host.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagr"), "host", *connection_flags(nats_server, Role.HOST),
                 "--models", str(models), "--record-model-text"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            host = HostProcess(proc, log, log_file)
            try:
                yield provider
            finally:
                host.stop()


def cli(capsys: pytest.CaptureFixture[str], server: EmbeddedServer, *args: str) -> Any:
    code = main([*args, *connection_flags(server), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_registered_as_claude_code_it_runs_the_original_scenario(
    nats_server: EmbeddedServer, provider_and_host: ScriptedProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = provider_and_host
    cli(capsys, nats_server, "register", "specialist", "--name", "claude-code", "--module",
        str(ROOT / "agents" / "assistant"))  # fmt: skip
    started = cli(capsys, nats_server, "start", "--agent", "claude-code", "--context", TASK)
    instance = started["id"]
    deadline = time.monotonic() + 120
    while True:
        status = cli(capsys, nats_server, "status", instance)
        if status["state"] in ("finished", "failed", "dead"):
            break
        assert time.monotonic() < deadline, f"still {status['state']}"
        time.sleep(0.2)
    assert status["state"] == "finished", status
    assert status["specialist"] == "claude-code"
    (child,) = status["children"]
    assert child["specialist"] == "stock-analyst" and child["state"] == "finished"
    # `dagr status` shows what the model calls cost, for the instance and its tree.
    assert status["model"]["own"]["calls"] == 2
    assert status["model"]["tree"]["gen_ai.usage.output_tokens"] == 40
    assert status["model"]["tree"]["cost_usd"] == pytest.approx((830 * 1.0 + 40 * 2.0) / 1e6)

    # `dagr logs` shows every call, with the conversation because the operator turned it on.
    logs = cli(capsys, nats_server, "logs", instance)
    calls = logs["model_calls"]
    assert [c["gen_ai.usage.input_tokens"] for c in calls] == [310, 520]
    assert all(c["gen_ai.request.model"] == "provider-model-x" for c in calls)
    assert all(c["gen_ai.response.model"] == "scripted-model-1" for c in calls)
    assert calls[0]["gen_ai.response.finish_reasons"] == ["tool-calls"]
    assert calls[0]["gen_ai.input.messages"][0]["role"] == "system"
    assert calls[0]["gen_ai.input.messages"][1] == {
        "role": "user",
        "parts": [{"type": "text", "content": TASK}],
    }
    assert calls[1]["gen_ai.output.messages"][0]["parts"][0]["content"] == SCRIPT[1].text
    # The same conversation as under its own name: nothing in it depends on the name.
    check_conversation(provider, "openai")
