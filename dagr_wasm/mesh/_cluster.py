"""A NATS cluster of embedded servers on loopback: n1..nN, each with JetStream and its own store.

This module owns the wiring of several ``EmbeddedServer``s into one cluster (routes, unique names
and store dirs) and the wait for a JetStream meta leader. It exists for tests and demos of
replicated streams (R3, leader kill) on one machine; a real cluster runs one server per machine
from the configs in ``host/``. Like ``_server.py`` the API is synchronous; async code calls it
through ``asyncio.to_thread`` (``async with`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from dagr_wasm.errors import ServerError
from dagr_wasm.mesh._server import ClusterConfig, EmbeddedServer, ServerConfig, _PortInUse

__all__ = ["LoopbackCluster"]

_POLL_S = 0.02
# Route ports are chosen here, so another process can take one before nats-server binds it; a few
# attempts with fresh ports make that race harmless.
_PORT_ATTEMPTS = 3


class LoopbackCluster:
    """``size`` nats-servers named n1..nN on ``host``, routed to each other, JetStream on each.

    Nodes are addressed by index (0-based: ``servers[0]`` is "n1") or by server name, which is what
    stream info reports as a leader: ``cluster.kill(info.cluster.leader)``.
    """

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike[str],
        size: int = 3,
        name: str = "dagr",
        host: str = "127.0.0.1",
        sync_always: bool = True,
        start_timeout_s: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._base_dir = Path(base_dir)
        self._size = size
        self._name = name
        self._host = host
        self._sync_always = sync_always
        self._start_timeout_s = start_timeout_s
        self._servers: list[EmbeddedServer] = []

    @property
    def servers(self) -> tuple[EmbeddedServer, ...]:
        return tuple(self._servers)

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node (running or not): give them all to the client, it fails over."""
        return [s.url for s in self._servers]

    def start(self) -> None:
        """Start every node and return once a meta leader is elected and every node is current."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._servers = self._build(_free_ports(self._host, self._size))
            try:
                for server in self._servers:
                    # Sequential is enough: a node is "JetStream enabled" before its peers exist,
                    # and the meta leader election below waits for all of them.
                    server.start()
            except _PortInUse:
                self.stop()
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            break
        try:
            self.wait_ready(self._start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node: SIGTERM to all first, so they shut down in parallel. Safe to call twice."""
        deadline = time.monotonic() + timeout_s
        for server in self._servers:
            server._signal_stop()
        for server in self._servers:
            server.stop(max(0.1, deadline - time.monotonic()))

    def kill(self, node: int | str) -> None:
        """SIGKILL one node (it keeps its store, ports and routes for ``restart``)."""
        self._server(node).kill()

    def restart(self, node: int | str, *, timeout_s: float | None = None) -> None:
        """Start a stopped or killed node again (or restart a running one) and wait until it is
        current with the meta leader."""
        self._server(node).restart()
        self.wait_ready(self._start_timeout_s if timeout_s is None else timeout_s)

    def index(self, node: int | str) -> int:
        """The 0-based index of a node given by index or by server name ("n2" -> 1)."""
        if isinstance(node, int):
            if not 0 <= node < len(self._servers):
                raise IndexError(f"no node {node}; the cluster has {len(self._servers)}")
            return node
        for i, server in enumerate(self._servers):
            if server.config.server_name == node:
                return i
        raise KeyError(f"no node named {node!r}; nodes are n1..n{len(self._servers)}")

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's name if every running node names the same running node."""
        leaders: set[object] = set()
        for server in self._servers:
            if not server.running:
                continue
            try:
                meta = server.monitor_json("jsz").get("meta_cluster")
            except ServerError:
                return None
            leaders.add(meta.get("leader") if isinstance(meta, dict) else None)
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        # Right after a leader is killed the survivors still name it for a moment; a dead leader is
        # no leader.
        alive = {s.config.server_name for s in self._servers if s.running}
        return leader if isinstance(leader, str) and leader in alive else None

    def wait_ready(self, timeout_s: float) -> str:
        """Wait until the running nodes agree on a meta leader and each passes the full ``/healthz``
        (current with the meta leader, its streams current); return the leader's name.

        ``/healthz?js-enabled-only=true`` answers 200 before any leader exists (measured on 2.15.1),
        so it does not tell that a cluster can take writes; the full check does.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            leader = self.meta_leader()
            running = [s for s in self._servers if s.running]
            if leader is not None and all(s.healthz(js_enabled_only=False) for s in running):
                return leader
            if time.monotonic() >= deadline:
                tails = "\n".join(f"[{s.config.server_name}] {s.log_tail(8)}" for s in running)
                raise ServerError(
                    f"the cluster has no JetStream meta leader after {timeout_s:g} s",
                    hint=f"{len(running)} of {len(self._servers)} nodes run; a leader needs a majority.",
                    log_tail=tails,
                )
            time.sleep(_POLL_S)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _server(self, node: int | str) -> EmbeddedServer:
        return self._servers[self.index(node)]

    def _build(self, route_ports: list[int]) -> list[EmbeddedServer]:
        host = f"[{self._host}]" if ":" in self._host else self._host
        routes = tuple(f"nats-route://{host}:{p}" for p in route_ports)
        servers = []
        for i, port in enumerate(route_ports, start=1):
            config = ServerConfig(
                store_dir=self._base_dir / f"n{i}",
                host=self._host,
                server_name=f"n{i}",
                sync_always=self._sync_always,
                cluster=ClusterConfig(name=self._name, host=self._host, port=port, routes=routes),
            )
            servers.append(EmbeddedServer(config=config, start_timeout_s=self._start_timeout_s))
        return servers


def _free_ports(host: str, count: int) -> list[int]:
    # Route ports must be known before any node starts (every node lists all routes, and a JetStream
    # cluster node with no routes refuses to start), so nats-server's "-1" cannot be used here.
    # All sockets stay open until all ports are picked, so the ports differ from each other.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports
