"""Issue 11: the real local model (SmolLM2-135M-Instruct through llama-cpp-python, from the
``local-model`` extra), with no internet and no account. Structure is asserted, never wording: a
135M model follows a schema, not an argument.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagr_wasm.chat import ChatMessage, ChatRequest, FinishReason, ToolDefinition
from dagr_wasm.models import DEFAULT_LOCAL_MODEL
from dagr_wasm.models._local import LocalModels

SPAWN = ToolDefinition(
    "spawn",
    "Ask a specialist and wait for its answer.",
    json.dumps(
        {
            "type": "object",
            "properties": {"specialist": {"enum": ["stock-analyst"]}, "task": {"type": "string"}},
            "required": ["specialist", "task"],
            "additionalProperties": False,
        }
    ),
)
CLOCK = ToolDefinition("clock", "The time now.", json.dumps({"type": "object", "properties": {}}))


def ask(*tools: ToolDefinition, tool_choice: str = "auto") -> ChatRequest:
    return ChatRequest(
        model="fast",
        messages=(
            ChatMessage("system", ("You are the main agent of a team. Delegate analysis.",)),
            ChatMessage("user", ("Check GME sentiment on Reddit",)),
        ),
        tools=tools,
        tool_choice=tool_choice,
        max_output_tokens=96,
    )


@pytest.fixture(scope="module")
def local() -> LocalModels:
    return LocalModels()


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("tool_choice", ["required", "spawn"])
async def test_constrained_decoding_makes_even_a_tiny_model_call_a_tool_that_fits_its_schema(
    local: LocalModels, tool_choice: str
) -> None:
    answer = await local.chat(
        ask(SPAWN, CLOCK, tool_choice=tool_choice), model=DEFAULT_LOCAL_MODEL, max_output_tokens=96
    )
    (call,) = answer.tool_calls
    assert answer.finish_reason is FinishReason.TOOL_CALLS and answer.text == ""
    arguments = json.loads(call.arguments_json)
    if tool_choice == "spawn" or call.name == "spawn":
        assert call.name == "spawn"
        assert arguments["specialist"] == "stock-analyst" and isinstance(arguments["task"], str)
        assert set(arguments) == {"specialist", "task"}
    else:
        assert call.name == "clock"
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert answer.model == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.asyncio(loop_scope="session")
async def test_with_tool_choice_none_it_answers_in_text(local: LocalModels) -> None:
    answer = await local.chat(ask(SPAWN, tool_choice="none"), model=DEFAULT_LOCAL_MODEL, max_output_tokens=48)
    assert answer.tool_calls == () and answer.text.strip()
    assert not answer.text.lstrip().startswith('{"answer"')


@pytest.mark.slow
def test_dagr_demo_assistant_runs_the_seed_scenario_on_the_local_model(
    tmp_path: Path, built: dict[str, Path]
) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagr"), "demo", "--assistant", "--port", "0",
         "--data-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    report, tree = outcome["report"], outcome["tree"]
    # The model decided: it delegated to a stock-analyst (its first turn had to call a tool) and
    # the loop ended within its bound, with the analysts' answers in the report.
    assert report["stopped"] in ("answer", "max-iterations"), report
    assert 2 <= report["turns"] <= 6 and report["usage"][0] > 0 and report["usage"][1] > 0
    assert report["spawned"] and all(s["specialist"] == "stock-analyst" for s in report["spawned"])
    assert all("result" in s or "error" in s for s in report["spawned"])
    assert isinstance(report["answer"], str) and report["answer"].strip()
    # The spawn tree: the assistant finished, each analyst it spawned ran as its child.
    assert tree["specialist"] == "assistant" and tree["state"] == "finished"
    children = {c["id"]: c for c in tree["children"]}
    assert {s["child_id"] for s in report["spawned"]} == set(children)
    assert all(
        c["specialist"] == "stock-analyst" and c["state"] in ("finished", "failed") for c in children.values()
    )
    # The local model's calls were recorded and booked, at no cost.
    assert tree["model"]["own"]["calls"] == report["turns"]
    assert tree["model"]["own"]["gen_ai.usage.input_tokens"] == report["usage"][0]
    assert tree["model"]["own"]["cost_usd"] == 0
