"""Fixtures for the mesh tests: deployed agents, in-process hosts, and host processes.

Host processes are the real ``dagr host`` command, started with the same compiled-component cache
as the test process, so they load agents in milliseconds instead of compiling them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dagr_wasm.manifest import load_manifest
from dagr_wasm.mesh import (
    ConnectOptions,
    EmbeddedServer,
    Host,
    HostConfig,
    Mesh,
    Role,
    ServerConfig,
    SpecialistVersion,
)
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
MESH_AGENTS = ("echo", "counter", "spawner", "sleeper", "hostile-recursion")


async def deploy_all(
    mesh: Mesh, built: dict[str, Path], sandbox: Sandbox, names: tuple[str, ...] = MESH_AGENTS
) -> dict[str, SpecialistVersion]:
    """Deploy agents (compiling each into the shared cache first, as `dagr deploy` does)."""
    await mesh.ensure_layout()
    deployed = {}
    for name in names:
        await asyncio.to_thread(sandbox.load_file, built[name])
        manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
        deployed[name] = await mesh.deploy(manifest, built[name].read_bytes())
    return deployed


def deploying(*names: str) -> Any:
    """A module-scoped fixture that deploys ``names`` on the session's server (beside the
    session's own agents): ``thinker = deploying("thinker")`` in a test module."""

    @pytest.fixture(scope="module")
    async def fixture(
        nats_server: EmbeddedServer,
        built: dict[str, Path],
        sandbox: Sandbox,
        deployed: dict[str, SpecialistVersion],
    ) -> None:
        async with await Mesh.connect(nats_server.options(Role.ADMIN)) as mesh:
            await deploy_all(mesh, built, sandbox, names)

    return fixture


@pytest.fixture(scope="session")
async def deployed(
    nats_server: EmbeddedServer, built: dict[str, Path], sandbox: Sandbox
) -> AsyncIterator[dict[str, SpecialistVersion]]:
    async with await Mesh.connect(nats_server.options(Role.ADMIN)) as mesh:
        yield await deploy_all(mesh, built, sandbox)


@pytest.fixture
async def mesh(nats_server: EmbeddedServer, deployed: dict[str, SpecialistVersion]) -> AsyncIterator[Mesh]:
    async with await Mesh.connect(nats_server.options(Role.ADMIN)) as client:
        yield client


RunHost = Callable[..., Awaitable[Host]]


def as_host(server: EmbeddedServer | str) -> ConnectOptions:
    if isinstance(server, str):
        return ConnectOptions(servers=(server,))
    return server.options(Role.HOST)


def connection_flags(server: EmbeddedServer | str, role: Role = Role.ADMIN) -> list[str]:
    """``--nats URL [--creds <role>.nk]`` for a CLI command against ``server``."""
    if isinstance(server, str):
        return ["--nats", server]
    credentials = server.credentials
    creds = ["--creds", str(credentials.seed_file(role))] if credentials is not None else []
    return ["--nats", server.url, *creds]


@pytest.fixture
async def run_host(sandbox: Sandbox) -> AsyncIterator[RunHost]:
    """``await run_host(server, **HostConfig fields)``: an in-process host with the host role's
    credentials (or anonymous, given a URL), stopped after the test."""
    running: list[tuple[Host, asyncio.Task[None], Mesh]] = []

    async def start(server: EmbeddedServer | str, **config: Any) -> Host:
        client = await Mesh.connect(as_host(server))
        config.setdefault("host_id", f"test-host-{len(running)}")
        host = Host(client.nc, client.js, sandbox, HostConfig(**config))
        task = asyncio.create_task(host.run())
        running.append((host, task, client))
        await asyncio.wait_for(host.ready.wait(), timeout=60)
        return host

    yield start
    for host, task, client in running:
        await host.stop()
        await task
        await client.close()


@dataclass
class HostProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: Any

    @property
    def host_id(self) -> str:
        """The id the host records in the journal (``dagr host`` uses hostname:pid)."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering, as a host stalled by its machine would."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait, and return the stats line the host prints as it stops."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        for line in reversed(self.log.read_text().splitlines()):
            if line.startswith("host stopped: "):
                stats: dict[str, Any] = json.loads(line.removeprefix("host stopped: "))
                return stats
        raise AssertionError(f"no stats line from the host:\n{self.log.read_text()[-3000:]}")


StartHostProcess = Callable[..., HostProcess]


@pytest.fixture
def host_process(tmp_path: Path) -> Iterator[StartHostProcess]:
    """``host_process(server, concurrency=4, flags=("--http-allow-private",))``: a real `dagr host`
    process with the host role's credentials (or anonymous, given a URL) and any further `dagr host`
    flags, killed after the test."""
    started: list[HostProcess] = []

    def start(
        server: EmbeddedServer | str, *, concurrency: int = 4, flags: tuple[str, ...] = ()
    ) -> HostProcess:
        log = tmp_path / f"host-{len(started)}.log"
        log_file = log.open("wb")
        dagr = Path(sys.executable).parent / "dagr"
        command = [str(dagr), "host", *connection_flags(server, Role.HOST), "--concurrency", str(concurrency)]
        proc = subprocess.Popen(
            [*command, *flags],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(HostProcess(proc, log, log_file))
        return started[-1]

    yield start
    for host in started:
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait(timeout=10)
        host.log_file.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of the test's own (authorization on, as `dagr up` runs it), which it may
    restart or kill; stopped after the test."""
    server = EmbeddedServer(
        config=ServerConfig(store_dir=tmp_path / "nats", credentials_dir=tmp_path / "credentials")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
