"""Model calls as plain data: what an agent asks (``ChatRequest``) and what it gets (``ChatResponse``).

The sandbox builds requests from the guest's ``model.chat``; the host sends them to a provider
(``dagr_wasm.models``) and stores the response in the instance's inbox. Neither NATS nor wasmtime
here: both halves and the providers share these records.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "FinishReason",
    "Role",
    "ToolCall",
    "ToolChoice",
    "ToolDefinition",
    "Usage",
    "otel_input_messages",
    "otel_output_messages",
    "request_doc",
    "request_of",
    "response_doc",
    "response_of",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
_ROLES = get_args(Role)
#: "auto", "none", "required", or the name of the one tool the model must call.
ToolChoice: TypeAlias = str


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool-calls"
    CONTENT_FILTER = "content-filter"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    #: A JSON object, as the model wrote it.
    arguments_json: str

    def arguments(self) -> object:
        return json.loads(self.arguments_json)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str
    #: A JSON schema of the arguments object.
    parameters_json: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A model call. ``model`` is an alias the manifest grants, mapped to a provider by the host."""

    model: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatResponse:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    #: The concrete model that answered (the provider's name for it).
    model: str = ""


# --- as stored (CBOR-ready maps), in tasks and inbox entries ------------------------------------


def _call_doc(call: ToolCall) -> list[str]:
    return [call.id, call.name, call.arguments_json]


def _call_of(value: Any) -> ToolCall:
    id_, name, arguments = value
    return ToolCall(str(id_), str(name), str(arguments))


def request_doc(request: ChatRequest) -> dict[str, Any]:
    return {
        "model": request.model,
        "messages": [
            [m.role, list(m.content), [_call_doc(c) for c in m.tool_calls], m.tool_call_id]
            for m in request.messages
        ],
        "tools": [[t.name, t.description, t.parameters_json] for t in request.tools],
        "tool_choice": request.tool_choice,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "stop": list(request.stop),
    }


def request_of(doc: Any) -> ChatRequest:
    messages = []
    for role, content, calls, call_id in doc["messages"]:
        if role not in _ROLES:
            raise ValueError(f"unknown role {role!r}")
        messages.append(
            ChatMessage(
                role,
                tuple(map(str, content)),
                tuple(map(_call_of, calls)),
                None if call_id is None else str(call_id),
            )
        )
    return ChatRequest(
        model=str(doc["model"]),
        messages=tuple(messages),
        tools=tuple(ToolDefinition(str(n), str(d), str(p)) for n, d, p in doc.get("tools") or ()),
        tool_choice=str(doc.get("tool_choice") or "auto"),
        max_output_tokens=None if doc.get("max_output_tokens") is None else int(doc["max_output_tokens"]),
        temperature=None if doc.get("temperature") is None else float(doc["temperature"]),
        stop=tuple(map(str, doc.get("stop") or ())),
    )


def response_doc(response: ChatResponse) -> dict[str, Any]:
    return {
        "text": response.text,
        "tool_calls": [_call_doc(c) for c in response.tool_calls],
        "finish_reason": response.finish_reason.value,
        "usage": [response.usage.input_tokens, response.usage.output_tokens],
        "model": response.model,
    }


def response_of(doc: Any) -> ChatResponse:
    input_tokens, output_tokens = doc.get("usage") or (0, 0)
    return ChatResponse(
        text=str(doc.get("text") or ""),
        tool_calls=tuple(map(_call_of, doc.get("tool_calls") or ())),
        finish_reason=FinishReason(doc.get("finish_reason") or "other"),
        usage=Usage(int(input_tokens), int(output_tokens)),
        model=str(doc.get("model") or ""),
    )


# --- as the OpenTelemetry GenAI conventions record a conversation (gen_ai.*.messages) -----------


def _otel_parts(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_call_response", "id": message.tool_call_id, "response": message.text}]
    parts: list[dict[str, Any]] = [{"type": "text", "content": part} for part in message.content if part]
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments_json}
        for c in message.tool_calls
    ]
    return parts


def otel_input_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """``gen_ai.input.messages``: the conversation sent, in the conventions' parts format."""
    return [{"role": m.role, "parts": _otel_parts(m)} for m in request.messages]


def otel_output_messages(response: ChatResponse) -> list[dict[str, Any]]:
    """``gen_ai.output.messages``: the model's answer, in the conventions' parts format."""
    message = ChatMessage("assistant", (response.text,), response.tool_calls)
    return [
        {
            "role": "assistant",
            "parts": _otel_parts(message),
            "finish_reason": response.finish_reason.value.replace("-", "_"),
        }
    ]
