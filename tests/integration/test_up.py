"""`dagr up` as a user runs it: a real process that serves agents with no other setup, stops on
Ctrl-C (SIGINT) cleanly, and keeps its data for the next start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGR = str(Path(sys.executable).parent / "dagr")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dagr(*args: str, url: str, data: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user on the same machine runs it: it finds `dagr up`'s credentials in the data dir."""
    env = {**os.environ, "DAGR_DATA_DIR": str(data)}
    return subprocess.run([DAGR, *args, "--nats", url], capture_output=True, text=True, timeout=300, env=env)


def start_up(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DAGR_DATA_DIR": str(data)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [DAGR, "up", "--port", str(port), "--monitor-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while "Ctrl-C to stop" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc


def test_dagr_up_serves_agents_and_stops_cleanly_keeping_data(tmp_path: Path, built: dict[str, Path]) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    up = start_up(tmp_path / "data", port, log)
    try:
        deployed = dagr("deploy", str(ROOT / "agents" / "counter"), url=url, data=tmp_path / "data")
        assert deployed.returncode == 0, deployed.stderr
        # Authorization is on by default: without `dagr up`'s credentials nothing gets in.
        stranger = dagr("list", "specialists", url=url, data=tmp_path / "elsewhere")
        assert stranger.returncode == 1
        assert "refused the connection" in stranger.stderr and "without credentials" in stranger.stderr
        keys = sorted(p.name for p in (tmp_path / "data" / "credentials").iterdir())
        assert keys == ["admin.nk", "host.nk", "submitter.nk"]
        assert all((tmp_path / "data" / "credentials" / k).stat().st_mode & 0o777 == 0o600 for k in keys)
        instance = dagr("start", "--agent", "counter", url=url, data=tmp_path / "data").stdout.strip()
        result = dagr(
            "result", instance, "--wait", "--timeout", "60", "--json", url=url, data=tmp_path / "data"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] == {"cbor": {"count": 1}}
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "stopped; data kept" in log.read_text()

    # The next start finds everything where it was.
    up = start_up(tmp_path / "data", port, log)
    try:
        status = dagr("status", instance, "--json", url=url, data=tmp_path / "data")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "finished"
        listed = dagr("list", "specialists", url=url, data=tmp_path / "data")
        assert '- counter: "' in listed.stdout
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
