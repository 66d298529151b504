"""The arena: a live deployment that hostile agents are thrown at, and the means to check from outside.

One nats-server of its own (hostile specialists must not mix with the other suites' agents) and one
in-process host with the shared sandbox, as `dagr up` runs them, but with quick retries so that a
hostile task reaches its dead letter in well under a second. Every attack is checked from outside
the runtime: the streams and buckets are read directly (``Arena.snapshot``), and a benign agent
must still be served afterwards (``Arena.benign_still_served``).

WAT attackers are built by ``tests/watkit.py``; those that need WASI or a look-alike contract get
a WIT package of their own from ``attacker_wit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import watkit

from dagr_wasm.errors import ModuleError
from dagr_wasm.manifest import Manifest
from dagr_wasm.mesh import EmbeddedServer, Host, HostConfig, Layout, Mesh, Role, ServerConfig
from dagr_wasm.mesh._layout import INSTANCES_STREAM
from dagr_wasm.payload import decode_map
from dagr_wasm.policy import Grants, Limits
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("finished", "failed", "dead", "cancelled")

#: The streams whose contents say what agents did (the journal is checked per instance instead).
WATCHED_STREAMS = ("KV_dagr-state", "DAGR_AGENTS", "DAGR_INBOX", "DAGR_SCHEDULES", "DAGR_DEAD")

ECHO_WAT = "(call $ok (local.get $p1) (local.get $p2))"


@dataclass(frozen=True)
class Snapshot:
    """What the watched streams hold: message counts and the subjects in use."""

    counts: dict[str, int]
    subjects: dict[str, frozenset[str]]

    def new_subjects(self, later: Snapshot) -> dict[str, set[str]]:
        return {
            stream: set(later.subjects[stream]) - set(self.subjects.get(stream, frozenset()))
            for stream in later.subjects
            if set(later.subjects[stream]) - set(self.subjects.get(stream, frozenset()))
        }


class Arena:
    def __init__(self, server: EmbeddedServer, mesh: Mesh, host: Host, sandbox: Sandbox) -> None:
        self.server = server
        self.mesh = mesh
        self.host = host
        self.sandbox = sandbox
        self._benign_ready = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def cli_flags(self) -> list[str]:
        """``--nats URL --creds admin.nk``: the CLI against the arena, as its operator."""
        credentials = self.server.credentials
        assert credentials is not None
        return ["--nats", self.url, "--creds", str(credentials.seed_file(Role.ADMIN))]

    async def deploy(
        self,
        wasm: bytes,
        *,
        name: str | None = None,
        grants: Grants | None = None,
        limits: Limits | None = None,
    ) -> str:
        """Deploy ``wasm`` as a new specialist (a fresh name unless given); returns the name."""
        name = name or f"attack-{uuid.uuid4().hex[:10]}"
        manifest = Manifest(name=name, grants=grants or Grants(), limits=limits or Limits())
        # Compiled into the shared cache first, as `dagr deploy` does, so timings exclude compiling;
        # a module that does not load is deployed anyway (straight into the registry, as an attacker
        # with write access could), which is what some attacks are about.
        with contextlib.suppress(ModuleError):
            await asyncio.to_thread(self.sandbox.load, wasm, limits=manifest.limits)
        await self.mesh.deploy(manifest, wasm)
        return name

    async def run(self, specialist: str, context: str = "", *, timeout_s: float = 30.0) -> dict[str, Any]:
        """Spawn ``specialist`` and wait until the instance is finished, failed or dead."""
        instance = await self.mesh.spawn(specialist, context)
        return await self.settled(instance, timeout_s=timeout_s)

    async def settled(self, instance: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The instance's last journal record, read straight from the stream, once it has ended."""
        deadline = time.monotonic() + timeout_s
        while True:
            journal = await self.journal(instance)
            status = journal[-1] if journal else None
            if status is not None and status.get("state") in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{instance} did not settle within {timeout_s} s: {status}")
            await asyncio.sleep(0.05)

    async def snapshot(self) -> Snapshot:
        counts, subjects = {}, {}
        for stream in WATCHED_STREAMS:
            info = await self.mesh.js.stream_info(stream, subjects_filter=">")
            counts[stream] = info.state.messages
            subjects[stream] = frozenset(info.state.subjects or {})
        return Snapshot(counts, subjects)

    async def journal(self, instance: str) -> list[dict[str, Any]]:
        """Every record of the instance's journal, read straight from the stream."""
        return await self._stored(INSTANCES_STREAM, f"dagr.inst.{instance}")

    async def state_keys(self, instance: str) -> set[str]:
        info = await self.mesh.js.stream_info(
            "KV_dagr-state", subjects_filter=f"$KV.dagr-state.i.{instance}.>"
        )
        return set(info.state.subjects or {})

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, read straight from the stream."""
        return await self._stored("DAGR_DEAD", "dagr.dead.>")

    async def _stored(self, stream: str, subject: str) -> list[dict[str, Any]]:
        """Every message ``stream`` holds on ``subject`` (a pattern), decoded, oldest first."""
        from nats.js.errors import NotFoundError

        records, seq = [], 0
        while True:
            try:
                msg = await self.mesh.js.get_msg(stream, seq=seq + 1, subject=subject, next=True, direct=True)
            except NotFoundError:
                return records
            seq = int(msg.seq or 0)
            record = decode_map(msg.data)
            assert record is not None
            records.append(record)

    async def dead_letter(self, instance: str) -> dict[str, Any]:
        for record in await self.dead_letters():
            task = decode_map(record.get("task")) or {}
            if task.get("instance") == instance:
                return record
        raise AssertionError(f"no dead letter for {instance}")

    async def benign_still_served(self) -> None:
        """A benign agent deployed next to the attackers still gets its answer, promptly."""
        if not self._benign_ready:
            await self.deploy(watkit.component(ECHO_WAT), name="benign")
            self._benign_ready = True
        token = uuid.uuid4().hex
        started = time.monotonic()
        status = await self.run("benign", token, timeout_s=20)
        assert status["state"] == "finished", status
        assert status["ok"] == token.encode()
        assert time.monotonic() - started < 20


async def assert_contained(
    arena: Arena,
    status: dict[str, Any],
    *,
    before: Snapshot,
    reason: str | tuple[str, ...],
    state: str = "dead",
) -> None:
    """The attack ended ``state`` with ``reason`` recorded, changed nothing outside its own records,
    and the host still serves a benign agent."""
    reasons = (reason,) if isinstance(reason, str) else reason
    assert status["state"] == state, status
    assert any(r.lower() in str(status.get("error")).lower() for r in reasons), status.get("error")
    instance = status["id"]
    assert await arena.state_keys(instance) == set(), "an attacker's state was committed"
    after = await arena.snapshot()
    new = before.new_subjects(after)
    # The runtime's own bookkeeping of tasks (this one's and those of attacks still settling beside
    # it): commit markers, failure counts, spawn-tree counts, hosts' announcements, dead letters.
    # Anything else new is a leak.
    bookkeeping = (
        "$KV.dagr-state.x.",
        "$KV.dagr-state.f.",
        "$KV.dagr-state.t.",
        "$KV.dagr-state.h.",
        "dagr.dead.",
    )
    leaked = {
        stream: {s for s in subjects if not s.startswith(bookkeeping)}
        for stream, subjects in new.items()
        if any(not s.startswith(bookkeeping) for s in subjects)
    }
    assert leaked == {}, f"the attack reached subjects outside its grants: {leaked}"
    if state == "dead":
        dead = await arena.dead_letter(instance)
        assert any(r.lower() in str(dead.get("error")).lower() for r in reasons), dead
    await arena.benign_still_served()


@pytest.fixture
async def fresh_admin(fresh_nats_server: EmbeddedServer) -> AsyncIterator[Mesh]:
    """An admin of a server of the test's own, with the layout in place."""
    mesh = await Mesh.connect(fresh_nats_server.options(Role.ADMIN))
    await mesh.ensure_layout()
    yield mesh
    await mesh.close()


@pytest.fixture(scope="session")
def arena_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("arena")
    config = ServerConfig(store_dir=root / "store", credentials_dir=root / "credentials")
    with EmbeddedServer(config=config) as server:  # authorization on, as `dagr up` runs
        yield server


@pytest.fixture(scope="session")
async def arena(arena_server: EmbeddedServer, sandbox: Sandbox) -> AsyncIterator[Arena]:
    layout = Layout(max_attempts=2)
    mesh = await Mesh.connect(arena_server.options(Role.ADMIN), layout=layout)
    await mesh.ensure_layout()
    host_client = await Mesh.connect(arena_server.options(Role.HOST), layout=layout)
    config = HostConfig(layout=layout, concurrency=8, retry_backoff_s=(0.05,), host_id="arena")
    host = Host(host_client.nc, host_client.js, sandbox, config)
    task = asyncio.create_task(host.run())
    await asyncio.wait_for(host.ready.wait(), timeout=30)
    try:
        yield Arena(arena_server, mesh, host, sandbox)
    finally:
        await host.stop()
        await task
        await host_client.close()
        await mesh.close()


# --- WIT packages for attackers that import WASI or a look-alike of the contract ------------------

WASI_WIT = """
package wasi:io@0.2.0 {
  interface poll {
    resource pollable { block: func(); ready: func() -> bool; }
    poll: func(in: list<borrow<pollable>>) -> list<u32>;
  }
}
package wasi:clocks@0.2.0 {
  interface monotonic-clock {
    use wasi:io/poll@0.2.0.{pollable};
    type instant = u64;
    type duration = u64;
    now: func() -> instant;
    subscribe-duration: func(when: duration) -> pollable;
  }
}
package wasi:random@0.2.0 {
  interface random { get-random-bytes: func(len: u64) -> list<u8>; }
}
package wasi:cli@0.2.0 {
  interface exit { exit: func(status: result); }
}
"""


def attacker_wit(tmp_path: Path, *, contract: str | None = None, imports: str = "", extra: str = "") -> Path:
    """A WIT file for a world like ``agent`` plus ``imports``; ``contract`` replaces agent.wit's text."""
    agent = contract if contract is not None else (watkit.WIT / "agent.wit").read_text()
    world = agent.replace("    export handler;", f"{imports}    export handler;")
    path = tmp_path / f"attacker-{uuid.uuid4().hex[:8]}.wit"
    path.write_text(world + WASI_WIT + extra)
    return path


def wat_agent(
    body: str, *, imports: str = "", extra: str = "", wit: Path | None = None, **kwargs: Any
) -> bytes:
    """A WAT agent component; ``imports`` are core imports placed first (WAT needs them there)."""
    core = watkit.core_module(body, extra=extra, **kwargs)
    core = core.replace("(module\n", "(module\n" + imports, 1)
    return watkit.component_from_core_wat(core, wit=wit or watkit.WIT)


CLOCK_IMPORTS = """
  (import "wasi:clocks/monotonic-clock@0.2.0" "subscribe-duration" (func $subscribe (param i64) (result i32)))
  (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.0" "poll" (func $poll (param i32 i32 i32)))
"""
CLOCK_WORLD = """    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:io/poll@0.2.0;
"""
