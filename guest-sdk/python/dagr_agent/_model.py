"""``ctx.model``: language models, called by the host with keys the agent never sees.

``ctx.model.chat(messages, model="fast")`` returns a handle at once; await it and the fresh
instance's ``on_resumed`` finds the answer as ``result.chat``. Messages are dicts in the familiar
shape: ``{"role": "user", "content": "..."}``, an assistant turn with ``"tool_calls": [{"id",
"name", "arguments"}]``, and ``{"role": "tool", "tool_call_id": ..., "content": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import host_call

if TYPE_CHECKING:
    from wit_world.imports.types import ChatResponse as WitChatResponse
    from wit_world.imports.types import ToolCall as WitToolCall

    from ._await import Handle

__all__ = ["ChatResponse", "Model", "ToolCall"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: ``arguments`` is the decoded JSON (None if the model wrote none)."""

    id: str
    name: str
    arguments_json: str

    @property
    def arguments(self) -> Any:
        try:
            return json.loads(self.arguments_json or "null")
        except ValueError:
            return None

    def as_message(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments_json}

    @classmethod
    def _from_wit(cls, call: WitToolCall) -> ToolCall:
        return cls(call.id, call.name, call.arguments_json)


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """What the model answered, with what it cost in tokens and which model it was."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    input_tokens: int
    output_tokens: int
    model: str

    def as_message(self) -> dict[str, Any]:
        """This answer as the assistant message to put back in the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [c.as_message() for c in self.tool_calls]
        return message

    @classmethod
    def _from_wit(cls, r: WitChatResponse) -> ChatResponse:
        return cls(
            text=r.text,
            tool_calls=tuple(ToolCall._from_wit(c) for c in r.tool_calls),
            finish_reason=r.finish_reason.name.lower().replace("_", "-"),
            input_tokens=r.usage.input_tokens,
            output_tokens=r.usage.output_tokens,
            model=r.model,
        )


class Model:
    """``ctx.model``: one method, ``chat``, giving a handle to await."""

    __slots__ = ()

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        tools: Sequence[Mapping[str, Any]] = (),
        tool_choice: str = "auto",
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] = (),
    ) -> Handle:
        """Ask model alias ``model`` (granted in ``grants.models``); returns the call's handle.

        ``tools``: ``{"name", "description", "parameters": <JSON schema>}``; ``tool_choice``:
        ``"auto"``, ``"none"``, ``"required"`` or a tool's name.
        """
        from wit_world.imports import model as wit_model
        from wit_world.imports.types import (
            ChatMessage,
            ChatRequest,
            ChatRole,
            ToolChoice_Auto,
            ToolChoice_Named,
            ToolChoice_None_,
            ToolChoice_Required,
            ToolDefinition,
        )
        from wit_world.imports.types import ToolCall as WitToolCall

        from ._await import Handle  # a cycle at import time: _await reads ChatResponse from here

        def message(m: Mapping[str, Any]) -> ChatMessage:
            content = m.get("content") or ""
            parts = [content] if isinstance(content, str) else [str(p) for p in content]
            calls = [
                WitToolCall(
                    id=str(c["id"]),
                    name=str(c["name"]),
                    arguments_json=c["arguments"]
                    if isinstance(c["arguments"], str)
                    else json.dumps(c["arguments"]),
                )
                for c in m.get("tool_calls") or ()
            ]
            return ChatMessage(
                role=ChatRole[str(m["role"]).upper()],
                content=parts,
                tool_calls=calls,
                tool_call_id=m.get("tool_call_id"),
            )

        choices = {"auto": ToolChoice_Auto(), "none": ToolChoice_None_(), "required": ToolChoice_Required()}
        request = ChatRequest(
            model=model,
            messages=[message(m) for m in messages],
            tools=[
                ToolDefinition(
                    name=str(t["name"]),
                    description=str(t.get("description", "")),
                    parameters_json=json.dumps(t.get("parameters") or {"type": "object", "properties": {}}),
                )
                for t in tools
            ],
            tool_choice=choices.get(tool_choice) or ToolChoice_Named(tool_choice),
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            stop=list(stop),
        )
        return Handle(host_call(f"model.chat({model!r})", lambda: wit_model.chat(request)))
