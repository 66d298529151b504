"""Benchmark: what the runtime adds to an agent's model turn, and what agents waiting on a model cost.

Issue 11. One real ``dagr host`` process (``--concurrency`` 16, printed with its call slots) on an
embedded nats-server (fsync on, the default); its models file maps alias ``fast`` to a scripted
OpenAI-compatible provider in a process of its own (this file run with ``--serve-provider``:
asyncio, HTTP/1.1 keep-alive, an answer at once unless told to hold), so the host's process is
measured alone. The agent is ``agents/bench-turns``: on start it asks ``fast`` and awaits the
handle; ``on_resumed`` asks again until it has done 5 turns; each question names its instance and
turn, so the provider can link the turns of one agent.

1. **turn overhead**: the provider stamps each request with ``time.monotonic`` (on Linux one clock
   for every process) when it has read it whole, and again when it has written the answer; per
   agent, turn k's answer written -> turn k+1's request read is what the runtime took to store the
   answer, wake the agent, run ``on_resumed`` in a fresh instance, commit the next call and make
   it. p50/p99/max with 1 agent (25 in a row), 100 and 1,000 agents at once, and turns/s (every
   turn of a level over the time from its spawns to its last answer). The floor, same server,
   same run, before and after the agents: bare ``httpx.AsyncClient`` loops doing the same turns
   (the host's request body; the next request as soon as an answer is parsed), one loop and as
   many loops as agents; the provider measures their gap the same way, the loops their round trip.
   The gap is also cut where this process saw each step (core deliveries of the inbox entry, the
   poke's cancel of the await's deadline, the wake it sends, and the next `suspended` record).
   Per turn: CPU of the host (event loop, other threads), nats-server, the
   provider and this process, and the messages JetStream stored; the disk's fsync rate beside it.
2. **agents awaiting a model**: the provider holds every request; N agents (10,000; quick 2,000)
   each start and await one call, spawned in two steps (1,000, then the rest). After each step,
   once the agents reached `suspended` (or nothing moved for 30 s) and the calls stopped moving:
   the ``dagr host`` process's RSS (VmRSS of /proc/<pid>/status), nats-server's, the requests the
   provider holds, the tasks left in JetStream and fetched by the host. Then the provider answers
   everything and the host stops.

The figures go to docs/bench/models.json (a quick run writes them to the temp dir and says where).
Run with ``just bench-models`` (quick: 1 and 100 agents, 2,000 waiting, about 2 minutes on 2 cores)
or ``just bench-models --full`` (1, 100 and 1,000 agents, 10,000 waiting, under 10 minutes). The
machine has 2 vCPUs shared by nats-server, the host, the provider and this process: compare
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
from bench_mesh import (
    CLK_TCK,
    HostGroup,
    Journals,
    console,
    disk_floor,
    machine_line,
    percentile,
    rss_mib,
    sample_cpu,
    say,
    spawn_many,
    stored_total,
)
from rich.table import Table

from dagr_wasm.build import build_agent
from dagr_wasm.manifest import load_manifest
from dagr_wasm.mesh import (
    ConnectOptions,
    EmbeddedServer,
    HostConfig,
    InstanceState,
    JournalRecord,
    Mesh,
    ServerConfig,
)
from dagr_wasm.mesh._layout import (
    call_consumer_name,
    consumer_name,
    inbox_subject,
    record_subject,
    task_subject,
    tasks_stream,
)
from dagr_wasm.mesh._tasks import TaskError, decode_task
from dagr_wasm.paths import compiled_cache_dir
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
AGENT = "bench-turns"
TURNS = 5
# The host's wasm slots: bench_mesh's awaits use the same, so the two compare.
HOST_CONCURRENCY = 16
# Per alias, calls in flight per host (the models file's ceiling).
ALIAS_CONCURRENCY = 1024
# A held call must outlive the waiting section: one attempt may last this long (the ceiling).
CALL_TIMEOUT_S = 600
# Agents one after another at 1 agent, so that its percentiles rest on 100 gaps.
SOLO_ROUNDS = 25
WARMUP_AGENTS = 5
# A level or a pile-up that has not moved for this long is reported as it is.
STALL_S = 30.0
JSON_PATH = ROOT / "docs" / "bench" / "models.json"


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (ms); nan when there are none."""
    nan = float("nan")
    if not samples:
        return {"p50": nan, "p99": nan, "max": nan, "n": 0}
    return {
        "p50": percentile(samples, 0.5),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
        "n": len(samples),
    }


# -- the scripted provider: a process of its own -----------------------------------------------------

_QUESTION = re.compile(r"(\S+) turn (\d+)")
_ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "scripted-bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1},
    }
).encode()


class _Provider:
    """``POST /v1/chat/completions`` answers at once (or holds until released); ``/control/*``
    steers it. Per request: (who, turn, read at, answer written at), ``time.monotonic`` s."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, float, float]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = self.peak_in_flight = 0
        self.connections = self.peak_connections = 0
        self.received = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.peak_connections = max(self.peak_connections, self.connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, path, _ = lines[0].split(" ", 2)
                    headers = {
                        name.strip().lower(): value.strip()
                        for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
                    }
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
                    return
                read_at = time.monotonic()
                if path.startswith("/control/"):
                    await self._send(writer, 200, json.dumps(self._control(method, path)).encode())
                elif path != "/v1/chat/completions":
                    await self._send(writer, 404, b'{"error": {"message": "no such route"}}')
                else:
                    await self._answer(writer, body, read_at)
                if headers.get("connection", "").lower() == "close":
                    return
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, body: bytes, read_at: float) -> None:
        doc = json.loads(body)
        found = _QUESTION.search(str(doc["messages"][-1]["content"]))
        who, turn = (found.group(1), int(found.group(2))) if found else ("?", 0)
        self.received += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            await self._send(writer, 200, _ANSWER)
            self.records.append((who, turn, read_at, time.monotonic()))
        finally:
            self.in_flight -= 1

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, data: bytes) -> None:
        reason = "OK" if status == 200 else "Not Found"
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    def _control(self, method: str, path: str) -> dict[str, Any]:
        if path == "/control/hold":  # requests from now on wait for /control/release
            if self.gate.is_set():
                self.gate = asyncio.Event()
        elif path == "/control/release":
            self.gate.set()
        elif path == "/control/reset":
            self.records.clear()
            self.peak_in_flight, self.peak_connections = self.in_flight, self.connections
        stats = {
            "received": self.received,
            "answered": len(self.records),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "connections": self.connections,
            "peak_connections": self.peak_connections,
        }
        return {"stats": stats, "records": self.records if path == "/control/records" else []}


async def serve_provider() -> None:
    """What ``--serve-provider`` runs: the provider on 127.0.0.1, port 0; prints the port."""
    provider = _Provider()
    server = await asyncio.start_server(provider.serve, "127.0.0.1", 0, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


class ProviderProcess:
    """The scripted provider in its own process, steered over HTTP."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._control: httpx.AsyncClient | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> None:
        """Start the process and read its port (blocking: ``__aenter__`` runs it in a thread)."""
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-provider"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the scripted provider did not start (it said {line!r})")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    async def __aenter__(self) -> ProviderProcess:
        await asyncio.to_thread(self.start)
        self._control = httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._control is not None:
            await self._control.aclose()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)

    async def control(self, what: str) -> dict[str, Any]:
        assert self._control is not None
        response = await self._control.post(f"/control/{what}")
        response.raise_for_status()
        doc: dict[str, Any] = response.json()
        return doc

    async def records(self) -> list[tuple[str, int, float, float]]:
        return _records(await self.control("records"))


def _records(doc: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    return [
        (str(who), int(turn), float(read_at), float(sent_at))
        for who, turn, read_at, sent_at in doc["records"]
    ]


def turn_gaps(records: list[tuple[str, int, float, float]], who: set[str]) -> list[float]:
    """Per agent in ``who``: turn k's answer written -> turn k+1's request read, ms."""
    turns: dict[str, dict[int, tuple[float, float]]] = {}
    for name, turn, read_at, sent_at in records:
        if name in who:
            turns.setdefault(name, {}).setdefault(turn, (read_at, sent_at))  # the first, if retried
    gaps = []
    for by_turn in turns.values():
        for turn, (_, sent_at) in by_turn.items():
            following = by_turn.get(turn + 1)
            if following is not None:
                gaps.append((following[0] - sent_at) * 1000)
    return gaps


def chat_body(text: str) -> dict[str, Any]:
    """What the host sends for bench-turns' question (dagr_wasm/models/_wire.py's openai_request)."""
    return {
        "model": "scripted-bench",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 16,
    }


# -- measurements ------------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU ms per turn over a level: the host's event loop and its other threads, nats-server,
    the provider, this process."""

    host_loop_ms: float = float("nan")
    host_threads_ms: float = float("nan")
    server_ms: float = float("nan")
    provider_ms: float = float("nan")
    bench_ms: float = float("nan")  # this process: spawns, and following every journal record


@dataclass
class Bare:
    gap_ms: list[float] = field(default_factory=list)  # the provider's answer -> next request
    rtt_ms: list[float] = field(default_factory=list)  # the loop's own post -> parsed answer
    seconds: float = 0.0
    requests: int = 0


class Trail:
    """Per instance, when this process saw each step of its turns (``time.monotonic`` s): an
    answer stored in its inbox (core delivery of ``dagr.inbox.<i>``), a message on its schedule
    subject (``dagr.sched.<s>.<i>``: an await's deadline, or the poke cancelling it), the wake the
    poke sends (core delivery of the wake task on ``dagr.task.<s>``), a `suspended` record (its
    invocation committed an await: the next call is queued)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.inbox: dict[str, list[float]] = {}
        self.suspended: dict[str, list[float]] = {}
        self.scheduled: dict[str, list[float]] = {}
        self.woken: dict[str, list[float]] = {}
        self._subscriptions: list[Any] = []

    async def __aenter__(self) -> Trail:
        async def on_inbox(msg: Any) -> None:
            self.inbox.setdefault(msg.subject.rsplit(".", 1)[-1], []).append(time.monotonic())

        async def on_record(msg: Any) -> None:
            at = time.monotonic()
            if JournalRecord.decode(msg.data).state is InstanceState.SUSPENDED:
                self.suspended.setdefault(msg.subject.rsplit(".", 1)[-1], []).append(at)

        async def on_schedule(msg: Any) -> None:
            self.scheduled.setdefault(msg.subject.rsplit(".", 1)[-1], []).append(time.monotonic())

        async def on_task(msg: Any) -> None:
            at = time.monotonic()
            with contextlib.suppress(TaskError):
                task = decode_task(msg.data, msg.headers, specialist=AGENT, stream_seq=0, stream="", now_ms=0)
                if task.kind == "wake":
                    self.woken.setdefault(task.instance_id, []).append(at)

        nc = self.mesh.nc
        self._subscriptions = [
            await nc.subscribe(f"dagr.sched.{AGENT}.*", cb=on_schedule),
            await nc.subscribe(task_subject(AGENT), cb=on_task),
            await nc.subscribe(inbox_subject("*"), cb=on_inbox),
            await nc.subscribe(record_subject("*"), cb=on_record),
        ]
        await nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()


STRETCHES = (
    "answer written -> stored in the inbox (the call's commit: record, inbox entry, poke task)",
    "-> the await's deadline cancelled (the poke task: fetched, journal and inbox read, publish)",
    "-> the wake sent to the specialist's tasks (the poke's second publish)",
    "-> `suspended` record of the next turn (the wake task: on_resumed, its commit, the next call queued)",
    "-> the next request read (the model task: fetched, budget held, the HTTP call)",
)


async def stretches(
    trail: Trail, records: list[tuple[str, int, float, float]], instances: set[str]
) -> list[list[float]]:
    """Each turn's gap cut into ``STRETCHES`` (ms), for the turns where every step was seen."""
    fired = trail.woken
    read: dict[tuple[str, int], float] = {}
    sent: dict[tuple[str, int], float] = {}
    for name, turn, read_at, sent_at in records:
        if name in instances:
            read.setdefault((name, turn), read_at)
            sent.setdefault((name, turn), sent_at)
    cut: list[list[float]] = [[] for _ in STRETCHES]
    for instance in instances:
        inbox, wakes = trail.inbox.get(instance, []), sorted(fired.get(instance, []))
        suspended = trail.suspended.get(instance, [])
        scheduled = trail.scheduled.get(instance, [])
        for turn in range(1, len(inbox)):
            following = turn + 1
            if following > len(suspended) or turn > len(wakes) or (instance, following) not in read:
                continue
            moved = next((at for at in scheduled if inbox[turn - 1] <= at <= wakes[turn - 1]), None)
            if moved is None:
                continue
            points = [
                sent[(instance, turn)],
                inbox[turn - 1],
                moved,
                wakes[turn - 1],
                suspended[turn],
                read[(instance, following)],
            ]
            for index in range(len(STRETCHES)):
                cut[index].append((points[index + 1] - points[index]) * 1000)
    return cut


@dataclass
class Level:
    agents: int  # at once
    rounds: int  # of that many agents, one round after another
    turns: int
    gap_ms: list[float] = field(default_factory=list)
    stretch_ms: list[list[float]] = field(default_factory=list)  # the gaps cut in STRETCHES
    first_ms: list[float] = field(default_factory=list)  # spawn published -> turn 1's request read
    seconds: float = 0.0  # spawns -> last answer written, summed over rounds
    done: int = 0  # agents that ended with every turn done
    failed: list[str] = field(default_factory=list)  # the others' results
    peak_connections: int = 0  # open to the provider at once (the host's, as the bare loops had ended)
    stored_per_turn: float = float("nan")  # messages JetStream stored (every stream's last_seq moved)
    cpu: Cpu = field(default_factory=Cpu)
    bare: Bare = field(default_factory=Bare)

    @property
    def turns_per_s(self) -> float:
        return self.agents * self.rounds * self.turns / self.seconds if self.seconds else float("nan")


async def bare_loops(
    provider: ProviderProcess, count: int, rounds: int, turns: int, tag: str, bare: Bare
) -> None:
    """``count`` loops at once (``rounds`` times), each posting ``turns`` questions one after the
    other to the provider, as an agent's turns would; adds their round trips and gaps to ``bare``."""
    url = f"{provider.base_url}/chat/completions"
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    names: set[str] = set()
    async with httpx.AsyncClient(trust_env=False, timeout=60, limits=limits) as client:

        async def loop(name: str, rtt_ms: list[float]) -> None:
            for turn in range(1, turns + 1):
                began = time.monotonic()
                response = await client.post(url, json=chat_body(f"{name} turn {turn}"))
                response.raise_for_status()
                response.json()
                rtt_ms.append((time.monotonic() - began) * 1000)

        await loop(f"warm-{tag}", [])  # a connection, and the client's first use
        await provider.control("reset")
        began = time.monotonic()
        for round_ in range(rounds):
            async with asyncio.TaskGroup() as group:
                for index in range(count):
                    names.add(name := f"bare-{tag}-{round_}-{index}")
                    group.create_task(loop(name, bare.rtt_ms))
        bare.seconds += time.monotonic() - began
        bare.requests += count * rounds * turns
    bare.gap_ms += turn_gaps(await provider.records(), names)


async def run_agents(
    mesh: Mesh, journals: Journals, provider: ProviderProcess, version: int, count: int, turns: int
) -> tuple[list[str], float]:
    """Spawn ``count`` bench-turns agents at once; wait until each has ended, or until nothing has
    moved (no agent ended, no request reached the provider) for ``STALL_S``. (ids, spawned at)."""
    context = json.dumps({"turns": turns, "timeout_s": CALL_TIMEOUT_S})
    spawned = time.monotonic()
    ids = await spawn_many(mesh.js, AGENT, version, count, context=context)
    moved, seen, looked = time.monotonic(), (-1, -1), 0.0
    while (ended := sum(1 for i in ids if i in journals.ended)) < count:
        if time.monotonic() - looked >= 1.0:  # the provider's count: once a second, not to load it
            looked = time.monotonic()
            now = (ended, (await provider.control("stats"))["stats"]["received"])
            if now != seen:
                moved, seen = looked, now
            elif looked - moved > STALL_S:
                say(f"[yellow]{AGENT}: {ended} of {count} ended; nothing moved for {STALL_S:.0f} s[/yellow]")
                break
        await asyncio.sleep(0.02 if count < 100 else 0.5)
    return ids, spawned


async def until_suspended(journals: Journals, count: int) -> float | None:
    """Until ``count`` instances have had a `suspended` record: when the last one came; None if
    nothing moved for ``STALL_S`` before."""
    moved, seen = time.monotonic(), -1
    while (now := journals.counts[InstanceState.SUSPENDED]) < count:
        if now != seen:
            moved, seen = time.monotonic(), now
        elif time.monotonic() - moved > STALL_S:
            return None
        await asyncio.sleep(0.2)
    return time.monotonic()


async def measure_level(
    mesh: Mesh,
    server: EmbeddedServer,
    hosts: HostGroup,
    provider: ProviderProcess,
    journals: Journals,
    trail: Trail,
    version: int,
    agents: int,
    turns: int,
) -> Level:
    """``agents`` bench-turns agents at once (one at a time: ``SOLO_ROUNDS`` of them in a row),
    between two passes of the bare loops of the same shape."""
    rounds = SOLO_ROUNDS if agents == 1 else 1
    level = Level(agents=agents, rounds=rounds, turns=turns)
    shape = f"{agents:,} at once x {rounds} round(s), {turns} turns each"
    say(f"{shape}: bare httpx loops ...")
    await bare_loops(provider, agents, rounds, turns, "before", level.bare)
    say(f"{shape}: {AGENT} agents ...")
    await provider.control("reset")
    cpu_before, provider_before = sample_cpu(hosts, server.pid), _proc_cpu_s(provider.pid)
    stored_before = await stored_total(mesh.js)
    spawned: dict[str, float] = {}
    for _ in range(rounds):
        ids, at = await run_agents(mesh, journals, provider, version, agents, turns)
        spawned.update(dict.fromkeys(ids, at))
        mine = set(ids)
        last = max((sent for name, _, _, sent in await provider.records() if name in mine), default=at)
        level.seconds += last - at
    cpu_after, provider_cpu = sample_cpu(hosts, server.pid), _proc_cpu_s(provider.pid) - provider_before
    level.stored_per_turn = (await stored_total(mesh.js) - stored_before) / max(1, agents * rounds * turns)
    doc = await provider.control("records")
    records = _records(doc)
    level.peak_connections = doc["stats"]["peak_connections"]
    level.gap_ms = turn_gaps(records, set(spawned))
    level.stretch_ms = await stretches(trail, records, set(spawned))
    level.first_ms = [
        (read_at - spawned[name]) * 1000
        for name, turn, read_at, _ in records
        if turn == 1 and name in spawned
    ]
    for instance in spawned:
        record = journals.ended.get(instance)
        result = cbor2.loads(record.ok) if record is not None and record.ok else None
        if isinstance(result, dict) and result.get("turns") == turns and "error" not in result:
            level.done += 1
        elif len(level.failed) < 3:
            level.failed.append(repr(result if record is None or record.ok else record.error))
    per_turn = 1000 / max(1, agents * rounds * turns)
    whole = sum(a[0] - b[0] for a, b in zip(cpu_after.procs, cpu_before.procs, strict=True))
    loop = sum(a[1] - b[1] for a, b in zip(cpu_after.procs, cpu_before.procs, strict=True))
    level.cpu = Cpu(
        host_loop_ms=loop * per_turn,
        host_threads_ms=(whole - loop) * per_turn,
        server_ms=(cpu_after.server - cpu_before.server) * per_turn,
        provider_ms=provider_cpu * per_turn,
        bench_ms=(cpu_after.bench - cpu_before.bench) * per_turn,
    )
    say(f"{shape}: bare httpx loops again ...")
    await bare_loops(provider, agents, rounds, turns, "after", level.bare)
    return level


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Waiting:
    points: list[dict[str, Any]] = field(default_factory=list)
    start_rate: float = float("nan")  # agents that reached `suspended` per second, until the last did
    stalled: bool = False  # some never did: nothing moved for STALL_S


async def queued_calls(mesh: Mesh) -> tuple[int, int]:
    """Tasks of bench-turns (starts and wakes, and its calls' own consumer): (still in the stream,
    fetched by the host and not yet acked)."""
    pending = unacked = 0
    for consumer in (consumer_name(AGENT), call_consumer_name(AGENT)):
        info = await mesh.js.consumer_info(tasks_stream(AGENT), consumer)
        pending, unacked = pending + info.num_pending, unacked + info.num_ack_pending
    return pending, unacked


async def settled(
    mesh: Mesh, provider: ProviderProcess, *, quiet_s: float = 3.0, cap_s: float = 60.0
) -> None:
    """Until the calls stop moving (the requests the provider holds, the tasks queued and fetched
    unchanged for ``quiet_s``), at most ``cap_s``: where the host leaves them once it has caught up."""
    began, moved, seen = time.monotonic(), time.monotonic(), None
    while time.monotonic() - began < cap_s:
        now = ((await provider.control("stats"))["stats"]["in_flight"], *await queued_calls(mesh))
        if now != seen:
            moved, seen = time.monotonic(), now
        elif time.monotonic() - moved >= quiet_s:
            return
        await asyncio.sleep(0.5)


async def measure_waiting(
    mesh: Mesh,
    server: EmbeddedServer,
    hosts: HostGroup,
    provider: ProviderProcess,
    journals: Journals,
    version: int,
    steps: tuple[int, ...],
) -> Waiting:
    """Agents piling up, each awaiting one call the provider holds; RSS at each of ``steps``."""
    (pid,) = hosts.pids()
    waiting = Waiting()

    async def point(what: str, spawned: int, reached: int) -> None:
        stats = (await provider.control("stats"))["stats"]
        pending, unacked = await queued_calls(mesh)
        waiting.points.append(
            {
                "what": what,
                "spawned": spawned,
                "waiting": reached,
                "host_rss_mib": rss_mib(pid),
                "nats_server_rss_mib": rss_mib(server.pid),
                "provider_holding": stats["in_flight"],
                "provider_connections": stats["connections"],
                "tasks_in_stream": pending,
                "tasks_fetched_unacked": unacked,
            }
        )

    await point("before (after the turn levels)", 0, 0)
    await provider.control("hold")
    context = json.dumps({"turns": 1, "timeout_s": 3600})
    suspended_before = journals.counts[InstanceState.SUSPENDED]
    began, last, total = time.monotonic(), time.monotonic(), 0
    for step in steps:
        count = step - total
        say(f"{count:,} more agents, each awaiting a model call the provider holds ...")
        await spawn_many(mesh.js, AGENT, version, count, context=context)
        total = step
        reached_at = await until_suspended(journals, suspended_before + total)
        reached = journals.counts[InstanceState.SUSPENDED] - suspended_before
        if reached_at is None:
            waiting.stalled = True
            say(
                f"[yellow]{reached:,} of {total:,} agents reached `suspended`; nothing moved for "
                f"{STALL_S:.0f} s[/yellow]"
            )
        else:
            last = reached_at
        await settled(mesh, provider)
        await point(f"{total:,} spawned", total, reached)
    reached = journals.counts[InstanceState.SUSPENDED] - suspended_before
    waiting.start_rate = reached / (last - began) if last > began else float("nan")
    say("the provider answers every held call; the host stops ...")
    await provider.control("release")
    return waiting


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Settings:
    full: bool
    agents: tuple[int, ...]
    waiting: tuple[int, ...]
    turns: int
    concurrency: int


def models_file(path: Path, base_url: str) -> Path:
    path.write_text(
        "[models.fast]\n"
        'provider = "openai"\n'
        'model = "scripted-bench"\n'
        f'base_url = "{base_url}"\n'
        f"concurrency = {ALIAS_CONCURRENCY}\n"
        f"timeout_s = {CALL_TIMEOUT_S}\n"
        "max_output_tokens = 16\n"
    )
    return path


def host_slots(concurrency: int) -> str:
    """What this code's host does with a model call's task, from its HostConfig (the same code the
    ``dagr host`` processes run)."""
    calls = getattr(HostConfig(), "call_concurrency", None)
    if isinstance(calls, int):
        return (
            f"{concurrency} wasm slots (a specialist at most {max(1, concurrency // 2)}); model calls in "
            f"call slots: {calls} (a specialist at most {max(1, calls // 2)})"
        )
    return (
        f"{concurrency} slots (a specialist at most {max(1, concurrency // 2)}), model calls included: "
        f"at most {max(1, concurrency // 2)} calls of {AGENT} in flight"
    )


async def amain(settings: Settings) -> dict[str, Any]:
    load_before = os.getloadavg()
    figures: dict[str, Any] = {"mode": "full" if settings.full else "quick"}
    with tempfile.TemporaryDirectory(prefix="dagr-bench-models-") as tmp:
        workdir = Path(tmp)
        say(f"building {AGENT} (cached by source hash) ...")
        built = await asyncio.to_thread(build_agent, ROOT / "agents" / AGENT)
        wasm = built.wasm.read_bytes()
        manifest = load_manifest(ROOT / "agents" / AGENT / "dagr.toml")
        with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
            await asyncio.to_thread(sandbox.load, wasm, source=AGENT)  # the host loads it compiled
        disk = await asyncio.to_thread(disk_floor, workdir)
        server = EmbeddedServer(config=ServerConfig(store_dir=workdir / "store", sync_always=True))
        await asyncio.to_thread(server.start)
        try:
            async with (
                ProviderProcess() as provider,
                await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh,
                Journals(mesh.nc) as journals,
                Trail(mesh) as trail,
            ):
                await mesh.ensure_layout()
                version = (await mesh.deploy(manifest, wasm)).version
                models = models_file(workdir / "models.toml", provider.base_url)
                hosts = HostGroup(
                    server.url, 1, settings.concurrency, workdir, flags=("--models", str(models))
                )
                slots = host_slots(settings.concurrency)
                figures["host"] = {
                    "processes": 1,
                    "slots": slots,
                    "concurrency": settings.concurrency,
                    "alias_concurrency": ALIAS_CONCURRENCY,
                    "fsync": True,
                    "disk_fsync_per_s": disk,
                }
                say(f"1 dagr host: {slots}; alias fast: {ALIAS_CONCURRENCY} calls in flight")
                hosts.start()
                try:
                    await hosts.wait_started()
                    say(f"warm-up: {WARMUP_AGENTS} agents, one at a time ...")
                    for _ in range(WARMUP_AGENTS):
                        await run_agents(mesh, journals, provider, version, 1, settings.turns)
                    levels = [
                        await measure_level(
                            mesh, server, hosts, provider, journals, trail, version, n, settings.turns
                        )
                        for n in settings.agents
                    ]
                    waiting = await measure_waiting(
                        mesh, server, hosts, provider, journals, version, settings.waiting
                    )
                finally:
                    stats = await asyncio.to_thread(hosts.stop)
                figures["host"]["stopped"] = stats[0] if stats else {}
        finally:
            await asyncio.to_thread(server.stop)
        render(levels, waiting, settings, figures["host"])
        machine = machine_line(workdir, load_before)
        console.print(f"[dim]{machine}[/dim]")
    figures["machine"] = machine
    figures["turns"] = [level_json(level) for level in levels]
    figures["waiting"] = dataclasses.asdict(waiting)
    return figures


def level_json(level: Level) -> dict[str, Any]:
    return {
        "agents": level.agents,
        "rounds": level.rounds,
        "turns_per_agent": level.turns,
        "agents_done": level.done,
        "failed_examples": level.failed,
        "turn_overhead_ms": spread(level.gap_ms),
        "stretches_ms": {what: spread(cut) for what, cut in zip(STRETCHES, level.stretch_ms, strict=True)},
        "first_request_ms": spread(level.first_ms),
        "turns_per_s": level.turns_per_s,
        "provider_peak_connections": level.peak_connections,
        "cpu_ms_per_turn": dataclasses.asdict(level.cpu),
        "jetstream_stored_per_turn": level.stored_per_turn,
        "bare_httpx": {
            "gap_ms": spread(level.bare.gap_ms),
            "round_trip_ms": spread(level.bare.rtt_ms),
            "requests_per_s": level.bare.requests / level.bare.seconds if level.bare.seconds else None,
        },
    }


def render(levels: list[Level], waiting: Waiting, settings: Settings, host: dict[str, Any]) -> None:
    table = Table(
        title=f"a model turn: the provider's answer written -> the same agent's next request read (ms, the "
        f"provider's clock); {AGENT}, {settings.turns} turns per agent; 1 dagr host: {host['slots']}; "
        "fsync on"
    )
    for column in ("agents at once", "what", "n", "p50", "p99", "max", "turns/s", "round trip p50 / p99"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for level in levels:
        at_once = f"{level.agents:,}" + (f" x {level.rounds} rounds" if level.rounds > 1 else "")
        done = "" if level.done == level.agents * level.rounds else f" ({level.done} done)"
        gap, first = spread(level.gap_ms), spread(level.first_ms)
        table.add_row(
            at_once,
            f"{AGENT} agents: turn overhead{done}",
            f"{gap['n']:,}",
            f"{gap['p50']:,.1f}",
            f"{gap['p99']:,.1f}",
            f"{gap['max']:,.1f}",
            f"{level.turns_per_s:,.0f}",
            "",
        )
        table.add_row(
            "",
            "  spawn -> turn 1's request read",
            f"{first['n']:,}",
            f"{first['p50']:,.1f}",
            f"{first['p99']:,.1f}",
            f"{first['max']:,.1f}",
            "",
            "",
        )
        bare, rtt = spread(level.bare.gap_ms), spread(level.bare.rtt_ms)
        rate = level.bare.requests / level.bare.seconds if level.bare.seconds else float("nan")
        table.add_row(
            "",
            f"floor: bare httpx, {level.agents:,} loop(s), same turns",
            f"{bare['n']:,}",
            f"{bare['p50']:,.2f}",
            f"{bare['p99']:,.2f}",
            f"{bare['max']:,.2f}",
            f"{rate:,.0f}",
            f"{rtt['p50']:,.2f} / {rtt['p99']:,.2f}",
        )
    console.print(table)

    table = Table(title="the turn overhead cut where this process saw each step (ms: p50 / p99)")
    table.add_column("stretch")
    for level in levels:
        table.add_column(f"{level.agents:,} at once", justify="right")
    for index, what in enumerate(STRETCHES):
        cells = []
        for level in levels:
            cut = spread(level.stretch_ms[index]) if level.stretch_ms else spread([])
            cells.append(f"{cut['p50']:,.1f} / {cut['p99']:,.1f}")
        table.add_row(what, *cells)
    console.print(table)
    for level in levels:
        cpu = level.cpu
        console.print(
            f"- {level.agents:,} at once: the host's calls came on {level.peak_connections:,} connections at "
            f"most; CPU per turn: host event loop "
            f"{cpu.host_loop_ms:.2f} ms, other host threads {cpu.host_threads_ms:.2f} ms, nats-server "
            f"{cpu.server_ms:.2f} ms, provider {cpu.provider_ms:.2f} ms, this process {cpu.bench_ms:.2f} "
            f"ms (host: at most {1000 / (cpu.host_loop_ms + cpu.host_threads_ms):,.0f} turns/s per busy "
            f"core); JetStream stored "
            f"{level.stored_per_turn:.1f} messages per turn (the disk did {host['disk_fsync_per_s']:,.0f} "
            f"write+fsync/s, back to back: {host['disk_fsync_per_s'] / level.stored_per_turn:,.0f} turns/s "
            "if each is fsynced alone)." + (f" Not done: {'; '.join(level.failed)}" if level.failed else "")
        )

    table = Table(
        title="agents awaiting a model call the provider holds: RSS MiB (VmRSS); 1 dagr host: "
        f"{host['slots']}"
    )
    for column in (
        "when",
        "awaiting (`suspended`)",
        "host RSS",
        "vs before",
        "nats-server RSS",
        "vs before ",
        "requests the provider holds",
        "tasks and calls in JetStream / fetched by the host",
    ):
        table.add_column(column, justify="left" if column == "when" else "right")
    first = waiting.points[0]
    for p in waiting.points:
        table.add_row(
            p["what"],
            f"{p['waiting']:,}",
            f"{p['host_rss_mib']:,.1f}",
            f"{p['host_rss_mib'] - first['host_rss_mib']:+,.1f}",
            f"{p['nats_server_rss_mib']:,.1f}",
            f"{p['nats_server_rss_mib'] - first['nats_server_rss_mib']:+,.1f}",
            f"{p['provider_holding']:,}",
            f"{p['tasks_in_stream']:,} / {p['tasks_fetched_unacked']:,}",
        )
    console.print(table)
    low, high = waiting.points[1], waiting.points[-1]
    if high["waiting"] > low["waiting"]:
        per = (high["host_rss_mib"] - low["host_rss_mib"]) * 1024 * 1024 / (high["waiting"] - low["waiting"])
        console.print(
            f"- host: {per:+,.0f} bytes per awaiting agent between {low['waiting']:,} and "
            f"{high['waiting']:,}."
        )
    console.print(
        f"- {waiting.start_rate:,.0f} agents reached `suspended` per second while they piled up"
        + (
            f"; [yellow]stalled[/yellow]: {high['waiting']:,} of {high['spawned']:,} did, then nothing moved "
            f"for {STALL_S:.0f} s; then {high['tasks_fetched_unacked']:,} tasks were fetched by the host "
            f"and not acked (the provider held {high['provider_holding']:,} requests), "
            f"{high['tasks_in_stream']:,} were left in JetStream (starts and calls)."
            if waiting.stalled
            else "."
        )
    )


def _finite(value: Any) -> Any:
    """``value`` with every nan as None (JSON has no nan) and floats to 3 decimals."""
    if isinstance(value, float):
        return None if value != value else round(value, 3)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="1, 100 and 1,000 agents; 10,000 waiting (under 10 minutes on 2 cores); writes "
        "docs/bench/models.json",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 and 100 agents; 2,000 waiting (the default; about 3 minutes)"
    )
    parser.add_argument("--agents", help="comma-separated agents at once, e.g. 1,100 (overrides the mode's)")
    parser.add_argument("--waiting", type=int, help="agents waiting at the end (overrides the mode's)")
    parser.add_argument("--turns", type=int, default=TURNS, help=f"model turns per agent (default {TURNS})")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=HOST_CONCURRENCY,
        help=f"the host's slots (default {HOST_CONCURRENCY})",
    )
    parser.add_argument("--json", type=Path, help="where to write the figures (default: see the docstring)")
    parser.add_argument("--serve-provider", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_provider:
        asyncio.run(serve_provider())
        return
    if args.full and args.quick:
        parser.error("--full or --quick, not both")
    full = args.full
    agents = (
        tuple(int(n) for n in args.agents.split(",")) if args.agents else (1, 100, 1000) if full else (1, 100)
    )
    most = args.waiting or (10_000 if full else 2_000)
    steps = (1000, most) if most > 1000 else (most,)
    json_path = args.json or (
        JSON_PATH if full else Path(tempfile.gettempdir()) / "dagr-bench-models-quick.json"
    )
    settings = Settings(
        full=full,
        agents=agents,
        waiting=steps,
        turns=args.turns,
        concurrency=args.concurrency,
    )
    started = time.monotonic()
    figures = asyncio.run(amain(settings))
    figures["seconds"] = time.monotonic() - started
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_finite(figures), indent=2, default=str) + "\n")
    console.print(f"[dim]figures written to {json_path} ({figures['seconds']:.0f} s in all)[/dim]")


if __name__ == "__main__":
    main()
