"""A real local HTTP server for tests of agents' outbound calls (port 0, a thread of its own).

Paths: ``/echo`` answers with the request (method, path, headers, body) as JSON; ``/redirect?to=URL``
answers 302 to URL; ``/big?n=N`` answers N bytes; any other path answers as ``/echo``. Any path
takes ``delay_s=S`` to answer only after S seconds (a slow remote, for a caller killed mid-call).
Every request is counted per Idempotency-Key as it arrives (before any delay) in ``by_key``, and
again in ``answered`` once its answer (other than a redirect) is sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class LocalHttp:
    url: str
    requests: list[dict[str, object]] = field(default_factory=list)
    by_key: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    #: Held while the records above change: requests come on threads of their own.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Server(ThreadingHTTPServer):
    # Room for many callers connecting at once (the default backlog is 5).
    request_queue_size = 128


@contextmanager
def local_http() -> Iterator[LocalHttp]:
    state = LocalHttp(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = {
                "method": self.command,
                "path": parts.path,
                "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace"),
            }
            with state.lock:
                state.requests.append(seen)
                state.by_key[self.headers.get("Idempotency-Key") or ""] += 1
            query = parse_qs(parts.query)
            if "delay_s" in query:
                time.sleep(float(query["delay_s"][0]))
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"][0])
                self.end_headers()
                return
            data = b"x" * int(query["n"][0]) if parts.path == "/big" else json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Echo-Authorization", self.headers.get("Authorization") or "")
            try:
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the caller is gone (killed while waiting): nothing to answer
            with state.lock:
                state.answered[self.headers.get("Idempotency-Key") or ""] += 1

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    with serving(Handler) as url:
        state.url = url
        yield state


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1, port 0, on threads of its own; yields its base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
