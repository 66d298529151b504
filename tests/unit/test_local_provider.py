"""The local provider's pure parts: the conversation a chat template sees, the schema decoding is
held to, and what the model's JSON becomes (the real model runs in tests/integration/test_local_model.py)."""

from __future__ import annotations

import json

from dagr_wasm.chat import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    FinishReason,
    ToolCall,
    ToolDefinition,
    Usage,
)
from dagr_wasm.models._local import _answer_schema, _messages, _tool_answer

LOOKUP = ToolDefinition(
    "lookup", "Find a ticker.", json.dumps({"type": "object", "properties": {"t": {"type": "string"}}})
)
CLOCK = ToolDefinition("clock", "The time.", "{}")


def request(*messages: ChatMessage, choice: str = "auto") -> ChatRequest:
    return ChatRequest(model="fast", messages=messages, tools=(LOOKUP, CLOCK), tool_choice=choice)


def test_the_schema_allows_only_the_offered_calls_and_an_answer_when_the_choice_allows() -> None:
    auto = _answer_schema((LOOKUP, CLOCK), "auto")
    assert auto is not None and len(auto["oneOf"]) == 3
    assert [v["properties"].get("tool", {}).get("const") for v in auto["oneOf"]] == ["lookup", "clock", None]
    required = _answer_schema((LOOKUP, CLOCK), "required")
    assert required is not None and len(required["oneOf"]) == 2
    named = _answer_schema((LOOKUP, CLOCK), "clock")
    assert named is not None and named["properties"]["tool"] == {"const": "clock"}
    assert named["properties"]["arguments"] == {"type": "object"}  # "{}" is no schema: any object
    none = _answer_schema((LOOKUP,), "none")
    assert none is not None and none["required"] == ["answer"]
    assert _answer_schema((), "auto") is None


def test_tool_turns_are_written_in_roles_every_template_knows() -> None:
    call = ToolCall("c1", "lookup", '{"t": "GME"}')
    messages = _messages(
        request(
            ChatMessage("system", ("Be brief.",)),
            ChatMessage("user", ("GME?",)),
            ChatMessage("assistant", (), (call,)),
            ChatMessage("tool", ('{"price": 24}',), tool_call_id="c1"),
        )
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert (
        messages[0]["content"].startswith("Be brief.") and "lookup: Find a ticker." in messages[0]["content"]
    )
    assert json.loads(messages[2]["content"]) == {"tool": "lookup", "arguments": {"t": "GME"}}
    assert messages[3]["content"] == 'Result of lookup: {"price": 24}'


def answer(text: str, finish: FinishReason = FinishReason.STOP) -> ChatResponse:
    return ChatResponse(text=text, finish_reason=finish, usage=Usage(10, 5), model="m")


def test_the_models_json_becomes_a_tool_call_or_text() -> None:
    asked = request(ChatMessage("user", ("GME?",)))
    called = _tool_answer(answer('{"tool": "lookup", "arguments": {"t": "GME"}}'), asked)
    (call,) = called.tool_calls
    assert (call.name, json.loads(call.arguments_json), called.finish_reason) == (
        "lookup", {"t": "GME"}, FinishReason.TOOL_CALLS,
    )  # fmt: skip
    assert call.id.startswith("call_") and called.usage == Usage(10, 5)
    # The same conversation names its call the same way (a re-run's ids match).
    assert _tool_answer(answer('{"tool": "lookup", "arguments": {"t": "GME"}}'), asked).tool_calls == (call,)
    assert _tool_answer(answer('{"answer": "GME is up."}'), asked).text == "GME is up."
    cut = _tool_answer(answer('{"answer": "GME is up \\"a lot\\", and', FinishReason.LENGTH), asked)
    assert (cut.text, cut.finish_reason) == ('GME is up "a lot", and', FinishReason.LENGTH)
    assert _tool_answer(answer("not json"), asked).text == "not json"
