"""The example and hostile agents in agents/, built for real and run in the sandbox.

Every hostile agent must be contained with a clear error (or, for the ones that probe for
authority, find none), and the next invocation on the same engine must work.
"""

from __future__ import annotations

import socket
from pathlib import Path

import cbor2
import pytest

from dagr_wasm.invocation import (
    ErrorKind,
    Invocation,
    Outcome,
    Resolution,
    Spawn,
    Start,
    StatePut,
    Status,
    Suspend,
    Wake,
)
from dagr_wasm.local import LocalState
from dagr_wasm.manifest import load_manifest
from dagr_wasm.policy import Capabilities
from dagr_wasm.sandbox import AgentComponent, Sandbox

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def agents(built: dict[str, Path], sandbox: Sandbox) -> dict[str, AgentComponent]:
    return {name: sandbox.load_file(path) for name, path in built.items()}


def invoke(
    sandbox: Sandbox,
    agents: dict[str, AgentComponent],
    name: str,
    event: Start | Wake | None = None,
    **extra: object,
) -> Outcome:
    manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
    invocation = Invocation(
        task_id=f"test-{name}",
        instance_id=f"inst-{name}",
        specialist=manifest.name,
        event=event or Start(""),
        capabilities=Capabilities(own=manifest.grants),
        limits=manifest.limits,
        config_text=manifest.config_text,
        now_unix_ms=1_700_000_000_000,
        **extra,  # type: ignore[arg-type]
    )
    return sandbox.run(agents[name], invocation)


def value(outcome: Outcome) -> object:
    assert outcome.status is Status.OK, outcome
    assert outcome.result is not None
    return cbor2.loads(outcome.result)


def still_works(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    assert value(invoke(sandbox, agents, "echo", Start("after"))) == {"echo": "after"}


# --- examples ------------------------------------------------------------------------------------


def test_echo(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    assert value(invoke(sandbox, agents, "echo", Start("hello"))) == {"echo": "hello"}
    assert value(invoke(sandbox, agents, "echo", Wake("again"))) == {"woke": "again"}


def test_counter_counts_in_instance_state(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    state = LocalState(None)
    for expected in (1, 2, 3):
        outcome = invoke(sandbox, agents, "counter", state=state)
        assert value(outcome) == {"count": expected}
        assert outcome.effects == (StatePut("instance", "count", cbor2.dumps(expected)),)
        state.apply(outcome)


def test_spawner_spawns_suspends_and_collects(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    first = invoke(sandbox, agents, "spawner", Start("3"))
    assert first.status is Status.SUSPENDED
    spawns = [e for e in first.effects if isinstance(e, Spawn)]
    assert [(s.specialist, s.context) for s in spawns] == [("echo", f"child {i}") for i in range(3)]
    suspend = first.suspend
    assert suspend == Suspend(1_700_000_002_000, "collect")

    state = LocalState(None)
    state.apply(first)
    inbox = [
        Resolution(s.child_id, "child", ok=cbor2.dumps({"echo": s.context}), source="echo", seq=10 + i)
        for i, s in enumerate(reversed(spawns))
    ]
    woke = invoke(sandbox, agents, "spawner", Wake("collect"), state=state, inbox=inbox)
    assert value(woke) == {
        "children": [s.child_id for s in spawns],
        "replies": [{"echo": f"child {i}"} for i in range(3)],
    }


# --- hostile agents: contained, with a clear error, and the engine runs on ----------------------------


@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("hostile-loop", {ErrorKind.OUT_OF_FUEL, ErrorKind.DEADLINE}, ""),
        ("hostile-memory", {ErrorKind.MEMORY_LIMIT}, "ran out of memory"),
        ("hostile-recursion", {ErrorKind.STACK_OVERFLOW}, "call stack"),
        ("hostile-log-flood", {ErrorKind.DEADLINE, ErrorKind.OUT_OF_FUEL, ErrorKind.QUOTA}, ""),
        ("hostile-giant-result", {ErrorKind.QUOTA}, ""),
        ("hostile-denied-publish", {ErrorKind.DENIED}, "forbidden.subject"),
    ],
)
def test_hostile_agent_is_contained(
    sandbox: Sandbox, agents: dict[str, AgentComponent], name: str, kind: set[ErrorKind], words: str
) -> None:
    outcome = invoke(sandbox, agents, name)
    assert outcome.status is Status.ERROR
    assert outcome.error is not None
    assert outcome.error.kind in kind, outcome.error
    assert words in outcome.error.message
    assert outcome.committable is False
    still_works(sandbox, agents)


def test_log_flood_is_capped(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    outcome = invoke(sandbox, agents, "hostile-log-flood")
    limit = load_manifest(ROOT / "agents" / "hostile-log-flood" / "dagr.toml").limits.max_log_bytes
    kept = sum(len(line.message.encode()) for line in outcome.logs)
    assert kept <= limit
    assert outcome.log_bytes_dropped > limit


def test_handled_denials_are_values(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    result = value(invoke(sandbox, agents, "hostile-handled-denied"))
    assert isinstance(result, dict)
    assert result["ok"] is True
    assert result["denied"] == ["denied", "denied"]


def test_no_files(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    marker = Path("/tmp/x")
    before = marker.stat().st_mtime_ns if marker.exists() else None
    result = value(invoke(sandbox, agents, "hostile-read-file"))
    assert isinstance(result, dict)
    assert set(result) == {"read", "listdir", "write", "read_relative"}
    for attempt in result.values():
        assert not attempt.startswith(("READ", "LISTED", "WROTE")), result
    assert "root:" not in repr(result)  # no line of /etc/passwd
    after = marker.stat().st_mtime_ns if marker.exists() else None
    assert after == before  # the write attempt touched nothing on the host
    still_works(sandbox, agents)


def test_no_network(sandbox: Sandbox, agents: dict[str, AgentComponent]) -> None:
    # Something listens on the port the agent dials, so a refusal proves the sandbox, not the host.
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 4222))
        listener.listen()
    except OSError:
        pass  # already taken: then something else is listening there
    try:
        result = value(invoke(sandbox, agents, "hostile-socket"))
    finally:
        listener.close()
    assert isinstance(result, dict)
    assert set(result) == {"connect", "connect_raw", "getaddrinfo"}
    for attempt in result.values():
        assert not attempt.startswith(("CONNECTED", "RESOLVED")), result
    still_works(sandbox, agents)


def test_no_environment(
    sandbox: Sandbox, agents: dict[str, AgentComponent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGR_TEST_SECRET", "hunter2")
    result = value(invoke(sandbox, agents, "hostile-env"))
    assert result == {"environ": {}, "argv": [], "cwd": "/"}
