"""The providers' wire formats: a ``ChatRequest`` as each expects it, its answer as a ``ChatResponse``.

Two dialects cover the providers dagr talks to: OpenAI Chat Completions (OpenAI, vLLM, Ollama,
llama.cpp server, LM Studio, OpenRouter...) and Anthropic Messages. Pure functions of dicts; the
HTTP, the keys and the retries are ``ModelRouter``'s.
"""

from __future__ import annotations

import json
from typing import Any

from ..chat import ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolCall, Usage

__all__ = [
    "ANTHROPIC_VERSION",
    "WireError",
    "anthropic_request",
    "anthropic_response",
    "openai_request",
    "openai_response",
]

ANTHROPIC_VERSION = "2023-06-01"

_OPENAI_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}
_ANTHROPIC_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


class WireError(ValueError):
    """A provider's answer that is not what its protocol promises."""


# --- OpenAI Chat Completions ---------------------------------------------------------------------


def openai_request(request: ChatRequest, *, model: str, max_output_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [_openai_message(m) for m in request.messages],
        "max_tokens": request.max_output_tokens or max_output_tokens,
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": json.loads(t.parameters_json),
                },
            }
            for t in request.tools
        ]
        body["tool_choice"] = (
            request.tool_choice
            if request.tool_choice in ("auto", "none", "required")
            else {"type": "function", "function": {"name": request.tool_choice}}
        )
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.stop:
        body["stop"] = list(request.stop)
    return body


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def openai_response(doc: Any, *, requested: str) -> ChatResponse:
    try:
        choice = doc["choices"][0]
        message = choice["message"]
        calls = tuple(
            ToolCall(
                id=str(c.get("id") or f"call_{i}"),
                name=str(c["function"]["name"]),
                arguments_json=_arguments(c["function"].get("arguments")),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        )
        usage = doc.get("usage") or {}
        return ChatResponse(
            text=str(message.get("content") or ""),
            tool_calls=calls,
            finish_reason=_OPENAI_FINISH.get(str(choice.get("finish_reason")), FinishReason.OTHER),
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            model=str(doc.get("model") or requested),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise WireError(f"not a Chat Completions answer ({type(exc).__name__}: {exc})") from None


# --- Anthropic Messages --------------------------------------------------------------------------


def anthropic_request(request: ChatRequest, *, model: str, max_output_tokens: int) -> dict[str, Any]:
    system = "\n\n".join(m.text for m in request.messages if m.role == "system")
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _anthropic_blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # the API wants user and assistant to alternate
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_output_tokens or max_output_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": json.loads(t.parameters_json)}
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "auto"}
            if choice == "auto"
            else {"type": "none"}
            if choice == "none"
            else {"type": "any"}
            if choice == "required"
            else {"type": "tool", "name": choice}
        )
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0-1
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    return body


def _anthropic_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": part} for part in message.content if part]
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments_json)}
        for c in message.tool_calls
    ]
    return blocks or [{"type": "text", "text": ""}]


def anthropic_response(doc: Any, *, requested: str) -> ChatResponse:
    try:
        text, calls = [], []
        for block in doc["content"]:
            if block.get("type") == "text":
                text.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                calls.append(
                    ToolCall(str(block["id"]), str(block["name"]), json.dumps(block.get("input") or {}))
                )
        usage = doc.get("usage") or {}
        return ChatResponse(
            text="".join(text),
            tool_calls=tuple(calls),
            finish_reason=_ANTHROPIC_FINISH.get(str(doc.get("stop_reason")), FinishReason.OTHER),
            usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
            model=str(doc.get("model") or requested),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WireError(f"not a Messages answer ({type(exc).__name__}: {exc})") from None


def _input(arguments_json: str) -> Any:
    """Arguments as Anthropic wants them (an object), even when the model wrote broken JSON."""
    try:
        value = json.loads(arguments_json or "{}")
    except ValueError:
        return {"_unparsed": arguments_json}
    return value if isinstance(value, dict) else {"_value": value}


def _arguments(value: Any) -> str:
    """A tool call's arguments as JSON text: providers send a string (as the model wrote it, kept
    so: the agent sees a broken one and can say so to the model), some an object."""
    if isinstance(value, str):
        return value or "{}"
    return json.dumps(value if value is not None else {})
