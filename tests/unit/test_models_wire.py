"""The providers' wire formats and the models file, as pure functions (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagr_wasm.chat import ChatMessage, ChatRequest, FinishReason, ToolCall, ToolDefinition
from dagr_wasm.errors import UsageError
from dagr_wasm.models import load_models
from dagr_wasm.models._wire import (
    WireError,
    anthropic_request,
    anthropic_response,
    openai_request,
    openai_response,
)

LOOKUP = ToolDefinition("lookup", "Find a ticker", json.dumps({"type": "object"}))
CONVERSATION = (
    ChatMessage("system", ("Be brief.",)),
    ChatMessage("user", ("GME?",)),
    ChatMessage(
        "assistant", (), (ToolCall("c1", "lookup", '{"t": "GME"}'), ToolCall("c2", "lookup", "{broken"))
    ),
    ChatMessage("tool", ("12.5",), tool_call_id="c1"),
    ChatMessage("tool", ("error",), tool_call_id="c2"),
)


def test_openai_request_carries_the_conversation_tools_and_choice() -> None:
    request = ChatRequest(
        "fast", CONVERSATION, (LOOKUP,), tool_choice="lookup", temperature=0.2, stop=("END",)
    )
    body = openai_request(request, model="gpt-x", max_output_tokens=99)
    assert body["model"] == "gpt-x" and body["max_tokens"] == 99
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert body["messages"][2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"t": "GME"}'}
    assert body["messages"][3]["tool_call_id"] == "c1"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert (body["temperature"], body["stop"]) == (0.2, ["END"])


def test_anthropic_request_moves_system_out_and_merges_tool_results_into_one_user_turn() -> None:
    request = ChatRequest("fast", CONVERSATION, (LOOKUP,), tool_choice="required", temperature=1.7)
    body = anthropic_request(request, model="claude-x", max_output_tokens=50)
    assert body["system"] == "Be brief."
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    tool_uses = body["messages"][1]["content"]
    assert tool_uses[0] == {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"t": "GME"}}
    assert tool_uses[1]["input"] == {"_unparsed": "{broken"}  # the model's broken JSON, kept visible
    assert [b["tool_use_id"] for b in body["messages"][2]["content"]] == ["c1", "c2"]
    assert body["tool_choice"] == {"type": "any"}
    assert body["temperature"] == 1.0  # Anthropic's range is 0-1
    assert body["tools"][0]["input_schema"] == {"type": "object"}


def test_answers_parse_into_one_shape() -> None:
    openai = openai_response(
        {
            "model": "gpt-x-2025",
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [{"id": "a", "function": {"name": "lookup", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3},
        },
        requested="gpt-x",
    )
    anthropic = anthropic_response(
        {
            "content": [{"type": "tool_use", "id": "a", "name": "lookup", "input": {}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 3},
        },
        requested="claude-x",
    )
    for answer in (openai, anthropic):
        assert answer.finish_reason is FinishReason.TOOL_CALLS
        assert [(c.id, c.name, json.loads(c.arguments_json)) for c in answer.tool_calls] == [
            ("a", "lookup", {})
        ]
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (10, 3)
    assert (openai.model, anthropic.model) == ("gpt-x-2025", "claude-x")


@pytest.mark.parametrize("doc", [{}, {"choices": []}, {"choices": [{"message": None}]}, []])
def test_an_answer_that_is_not_the_protocol_is_a_wire_error(doc: object) -> None:
    with pytest.raises(WireError):
        openai_response(doc, requested="x")
    with pytest.raises(WireError):
        anthropic_response(doc, requested="x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.fast\n", "is not TOML"),
        ('[models.fast]\nprovider = "gemini"\n', "models.fast.provider"),
        ('[models.fast]\nprovider = "openai"\nbase_url = "ftp://x"\n', "not an http(s) URL"),
        ('[models.fast]\nprovider = "openai"\nconcurrency = 0\n', "models.fast.concurrency"),
        (
            '[models.fast]\nprovider = "openai"\napi_key = "sk-1"\n',
            "models.fast.api_key",
        ),  # keys are never in the file
    ],
)
def test_a_bad_models_file_says_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match="--models") as refused:
        load_models(path)
    assert expected in str(refused.value)


def test_a_models_file_maps_aliases_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.fast]\nprovider = "anthropic"\nmodel = "claude-x"\napi_key_env = "K"\noutput_usd_per_mtok = 15\n'
    )
    alias = load_models(path).models["fast"]
    assert alias.url == "https://api.anthropic.com"
    assert alias.cost_usd(0, 1_000_000) == 15.0
