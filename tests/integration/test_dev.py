"""`dagr dev`: the local swarm loop, run as a user runs it (a subprocess, its own server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagr_wasm.paths import source_root

DAGR_BIN = str(Path(sys.executable).parent / "dagr")
AGENTS = source_root() / "agents"


def test_dev_once_runs_a_swarm_and_reports_its_tree_logs_and_result() -> None:
    run = subprocess.run(
        [DAGR_BIN, "dev", str(AGENTS / "spawner"), str(AGENTS / "echo"), "--context", "2", "--once", "--json"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("deployed") == 2 and kinds[-1] == "result"
    [result] = [e for e in events if e["event"] == "result"]
    assert result["state"] == "finished"
    assert result["ok"]["cbor"]["replies"] == [{"echo": "child 0"}, {"echo": "child 1"}]
    # Every invocation of the tree was shown: the parent twice (suspend, finish), each child once.
    logged = [(e["specialist"], e["state"]) for e in events if e["event"] == "log"]
    assert sorted(logged) == sorted(
        [("spawner", "suspended"), ("spawner", "finished"), ("echo", "finished"), ("echo", "finished")]
    )


def test_dev_rebuilds_and_starts_again_when_a_source_changes(tmp_path: Path) -> None:
    agent = tmp_path / "echo"
    shutil.copytree(AGENTS / "echo", agent, ignore=shutil.ignore_patterns("build"))
    with subprocess.Popen(
        [DAGR_BIN, "dev", str(agent), "--context", "hi", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    ) as dev:  # fmt: skip
        try:
            first = _next_event(dev, "result")
            assert first["ok"]["cbor"] == {"echo": "hi"}
            app = agent / "app.py"
            app.write_text(app.read_text().replace('{"echo": context}', '{"echo": context, "edited": True}'))
            second = _next_event(dev, "result")
            assert second["ok"]["cbor"] == {"echo": "hi", "edited": True}
        finally:
            dev.terminate()
            dev.wait(timeout=30)


def _next_event(dev: subprocess.Popen[str], kind: str, timeout_s: float = 240) -> dict[str, Any]:
    assert dev.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = dev.stdout.readline()
        if not line:
            raise AssertionError(f"dagr dev ended with {dev.wait()}")
        event = json.loads(line)
        if event["event"] == kind:
            return event
    raise AssertionError(f"no {kind} event within {timeout_s} s")
