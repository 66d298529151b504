"""Real local HTTP servers speaking a model provider's wire protocol, with scripted answers.

``scripted_provider("openai")`` serves ``POST /v1/chat/completions`` (its base URL ends in
``/v1``, as OpenAI's does); ``scripted_provider("anthropic")`` serves ``POST /v1/messages``. Each
request takes the next scripted ``Reply`` (the last repeats); a request without the expected key
gets 401. Every request is recorded, and counted per ``Idempotency-Key``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from httpkit import serving

KEY = "sk-test-" + "4f1c9e0b7a2d4c6e8f10"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a normal one, or an HTTP error (``status``, e.g. 429 or 503)."""

    text: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    finish: str = ""
    usage: tuple[int, int] = (12, 5)
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    model: str = "scripted-model-1"


@dataclass
class ScriptedProvider:
    kind: Literal["openai", "anthropic"]
    url: str = ""
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    by_key: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1" if self.kind == "openai" else self.url

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.requests]


def _openai(reply: Reply) -> dict[str, Any]:
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(reply.tool_calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reply.finish or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1]},
    }


def _anthropic(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
        for i, (n, a) in enumerate(reply.tool_calls)
    ]
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": reply.finish or ("tool_use" if reply.tool_calls else "end_turn"),
        "usage": {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]},
    }


@contextmanager
def scripted_provider(kind: Literal["openai", "anthropic"], *replies: Reply) -> Iterator[ScriptedProvider]:
    state = ScriptedProvider(kind, replies=list(replies) or [Reply(text="hello")])
    path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            key_ok = (
                self.headers.get("Authorization") == f"Bearer {KEY}"
                if kind == "openai"
                else self.headers.get("x-api-key") == KEY and bool(self.headers.get("anthropic-version"))
            )
            with state.lock:
                index = len(state.requests)
                state.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                state.by_key[self.headers.get("Idempotency-Key") or ""] += 1
                reply = state.replies[min(index, len(state.replies) - 1)]
            if self.path != path:
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if not key_ok:
                return self._send(401, {"error": {"message": "invalid api key"}})
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.status != 200:
                return self._send(
                    reply.status, {"error": {"message": reply.text or "scripted failure"}}, reply.retry_after
                )
            return self._send(200, _openai(reply) if kind == "openai" else _anthropic(reply))

        def _send(self, status: int, doc: dict[str, Any], retry_after: str | None = None) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    with serving(Handler) as url:
        state.url = url
        yield state
