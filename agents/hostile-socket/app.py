"""hostile-socket: tries to open TCP connections (by name lookup and raw) and to resolve a name.

Attacks: WASI sockets (reaching NATS on 127.0.0.1:4222 directly, bypassing the host's grants, or
exfiltrating over DNS).
The host must: grant no network (wasmtime's WASI socket capabilities off / no allowed addresses),
so every attempt fails inside the guest. The result reports each as ``"ExceptionClass: message"``
(or what it got), so a test can assert nothing was reached.
"""

# Imported now, at build time: at run time the instance has no filesystem to import from, and
# socket's lazy import of the idna codec would fail before the network is ever touched.
import encodings.idna  # noqa: F401
import socket

import dagr_agent as dagr


def _attempt(action: str) -> str:
    try:
        if action == "connect":
            with socket.create_connection(("127.0.0.1", 4222), timeout=1) as sock:
                return f"CONNECTED: {sock.getpeername()!r} {sock.recv(64)!r}"
        if action == "connect_raw":
            # No name resolution at all: straight to the WASI TCP connect.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(("127.0.0.1", 4222))
                return f"CONNECTED: {sock.getpeername()!r} {sock.recv(64)!r}"
        if action == "getaddrinfo":
            return f"RESOLVED: {socket.getaddrinfo('example.com', 80)!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(action)


def start(ctx: dagr.Context, context: str) -> object:
    return {action: _attempt(action) for action in ("connect", "connect_raw", "getaddrinfo")}


Handler = dagr.handler(start=start)
