"""Benchmark: the mesh end to end, real host processes on a real nats-server, next to its floors.

For a trivial WAT component (the cheapest possible agent: returns its start context) and the Python
``echo`` agent (agents/echo, the cheapest componentize-py agent), measured in one run:

1. **throughput**: M start tasks are queued on the specialist's topic while its consumer is *paused*,
   then the consumer is resumed; from the first result stored to the last (the stored times of the
   invocation records in DAGR_INSTANCES: after a resume, the hosts' pulls may first wait out a
   fetch timeout), with 1 and 2 ``dagr host --concurrency N`` processes (warmed up on 100 tasks
   first). N comes from a sweep (full mode) or ``--concurrency``. CPU per invocation of the host
   processes (event-loop thread vs the other threads, where wasm runs) and of nats-server is read
   from /proc over the same interval: that is where the time goes; so is the number of messages
   JetStream stored per invocation (each one an fsync when fsync is on).
2. **spawn-to-reply latency**, open loop: spawns published at a fixed rate of half the measured
   1-host maximum (fsync on), 1 host; latency = core arrival of the ``finished`` record on
   ``dagr.inst.<id>`` minus the spawn publish. Repeated at the same rate with fsync off: the
   difference is what fsync costs.
3. **wake lateness**: N agents suspend until one absolute instant (a WAT and a Python ``waker``
   built here: start context = due Unix ms, ``suspend(at=...)``), 2 hosts; lateness = the wake
   invocation's result time (``at_ms`` of its result, taken as it commits) minus due; also when
   nats-server fired each schedule (stored time of ``dagr.wake.*``), to split server from host.
4. **floors**, same run, same server: a nats-py loop that fetches, acks and publishes a reply; one
   doing the stored writes a commit makes today (``kv.create`` marker, journal record, ack); the dagr
   ``Host`` itself with a stub executor (no wasm: the host's own NATS and Python cost); and
   ``Sandbox.run`` alone (1 and 2 threads).
5. **durability**: throughput and floors with ``sync_always=True`` (fsync before ack, the default)
   and ``sync_always=False``.
6. **awaits** (issue 10; a fresh server, fsync on, ``--awaits-only`` runs just these): one HTTP GET
   to a local server (tests/httpkit.py) made by agents/fetcher (``http.fetch`` + await), spawn to
   result, in four stretches, interleaved with the same GET made by the host's ``OutboundHttp.call``
   alone and by a bare ``httpx.AsyncClient``, both in this process, and a Python echo spawn to
   result; then N agents/signal-waiter instances awaiting a signal on 1 host (10,000; quick 2,000),
   the host's RSS (VmRSS) before, at N/2 and at N; then a burst of signals sent at once to 1,000
   (quick 500) of them with concurrent ``Mesh.signal`` calls, and 20 one at a time: latency from
   each call to nats-server firing the wake, to ``on_resumed`` running (its own clock), to its
   result here.

Run with ``just bench-mesh`` (``python benchmarks/bench_mesh.py [--quick]``). Targets (issue 3): one
host process >= 1,500 inv/s; two >= 1.6x one; p99 spawn-to-reply < 20 ms at half the max rate; wake
lateness p99 < 500 ms for 5,000 agents due at once. The machine has 2 vCPUs shared with nats-server,
the hosts and this process; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import cbor2  # noqa: E402
import httpx  # noqa: E402
from nats.aio.client import Client as NATS  # noqa: E402
from nats.js import JetStreamContext  # noqa: E402
from nats.js.api import (  # noqa: E402
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from dagr_wasm.build import build_agent  # noqa: E402
from dagr_wasm.invocation import HttpRequest, Outcome, Status  # noqa: E402
from dagr_wasm.manifest import Manifest, load_manifest  # noqa: E402
from dagr_wasm.mesh import (  # noqa: E402
    ConnectOptions,
    EmbeddedServer,
    Host,
    HostConfig,
    HttpPolicy,
    InstanceState,
    JournalRecord,
    Mesh,
    ServerConfig,
    find_nats_server,
)
from dagr_wasm.mesh._layout import (  # noqa: E402
    INSTANCES_STREAM,
    SCHEDULES_STREAM,
    consumer_name,
    inbox_subject,
    task_subject,
    tasks_stream,
)
from dagr_wasm.mesh._tasks import TASK_HEADER, Task, encode_task, new_instance_id  # noqa: E402
from dagr_wasm.outbound import OutboundHttp  # noqa: E402
from dagr_wasm.paths import compiled_cache_dir  # noqa: E402
from dagr_wasm.policy import Capabilities, Grants, HttpGrant, Limits  # noqa: E402
from dagr_wasm.sandbox import Invocation, Sandbox, Start  # noqa: E402

TARGET_ONE_HOST = 1500.0
TARGET_SPEEDUP = 1.6
TARGET_P99_MS = 20.0
TARGET_WAKE_P99_MS = 500.0
TARGET_WAKE_N = 5000

WARMUP_TASKS = 100
SIGNALS_ALONE = 20  # signals sent one at a time, after the burst: resolve-to-wake with no queue
HTTP_WARMUP = 5  # rounds of HTTP calls not counted (connections, the fetcher's first load)
# Slots of the awaits' host: the default, not the sweep's pick, so that full and quick runs compare
# (its specialist cap is half, 8: one specialist runs at a time there).
AWAITS_CONCURRENCY = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
console = Console(width=160)


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')} {message}[/dim]")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- agents ------------------------------------------------------------------------------------------

# The trivial agent: ok(start context), in WAT. The waker: parse the context's decimal digits as the
# due time (Unix ms), suspend until then with the same text as resume context; on wake return it.
TRIVIAL_BODY = "(call $ok (local.get $p1) (local.get $p2))"
WAKER_BODY = """
    (if (i32.eq (local.get $tag) (i32.const 1)) (then (return (call $ok (local.get $p1) (local.get $p2)))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $p2)))
        (local.set $due (i64.add (i64.mul (local.get $due) (i64.const 10))
          (i64.extend_i32_u (i32.sub (i32.load8_u (i32.add (local.get $p1) (local.get $i))) (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $suspend (i32.const 0) (local.get $due) (local.get $p1) (local.get $p2) (global.get $retarea))
    (if (i32.load8_u (global.get $retarea))
      (then (return (call $err (i32.load offset=8 (global.get $retarea))
                               (i32.load offset=12 (global.get $retarea))))))
    unreachable"""

PY_WAKER_APP = '''"""waker (built by benchmarks/bench_mesh.py): sleeps until an absolute time."""

from datetime import UTC, datetime, timedelta

import dagr_agent as dagr

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Waker(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        due = _EPOCH + timedelta(milliseconds=int(context))
        ctx.suspend(at=due, resume_context=context)

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        return {"due_ms": int(resume_context)}


Handler = dagr.handler(Waker)
'''
PY_WAKER_TOML = 'name = "waker"\ndescription = "Suspends until the Unix ms in its start context"\n'
# Issue 10: an instance awaiting a signal (its result: when on_resumed ran), and one HTTP call.
AWAIT_AGENTS = ("signal-waiter", "fetcher")


@dataclass
class Agent:
    name: str  # the specialist
    label: str
    wasm: bytes
    manifest: Manifest


def prepare_agents(sandbox: Sandbox) -> dict[str, Agent]:
    """Build and compile (into the shared cache, so host processes load them in ms) every agent."""
    # Test tooling that builds WAT agents of the real world (tests/watkit.py; tests/unit/ before).
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "unit")]
    import watkit

    say("building agents (cached by source hash) ...")
    echo = build_agent(ROOT / "agents" / "echo").wasm.read_bytes()
    waker_dir = Path(tempfile.gettempdir()) / "dagr-bench-agents" / "waker"
    waker_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("app.py", PY_WAKER_APP), ("dagr.toml", PY_WAKER_TOML)):
        if not (waker_dir / name).is_file() or (waker_dir / name).read_text() != text:
            (waker_dir / name).write_text(text)
    py_waker = build_agent(waker_dir).wasm.read_bytes()
    awaiters = {name: build_agent(ROOT / "agents" / name).wasm.read_bytes() for name in AWAIT_AGENTS}
    agents = {
        "trivial": Agent("trivial", "trivial WAT", watkit.component(TRIVIAL_BODY), Manifest(name="trivial")),
        "echo": Agent("echo", "Python echo", echo, load_manifest(ROOT / "agents" / "echo" / "dagr.toml")),
        "trivial-waker": Agent(
            "trivial-waker",
            "trivial WAT",
            watkit.component(WAKER_BODY, locals_="(local $i i32) (local $due i64)"),
            Manifest(name="trivial-waker"),
        ),
        "waker": Agent("waker", "Python waker", py_waker, load_manifest(waker_dir / "dagr.toml")),
        **{
            name: Agent(name, f"Python {name}", wasm, load_manifest(ROOT / "agents" / name / "dagr.toml"))
            for name, wasm in awaiters.items()
        },
    }
    for agent in agents.values():
        sandbox.load(agent.wasm, source=agent.name)
    return agents


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class CpuSample:
    wall: float
    procs: list[tuple[float, float]]  # per host process: (whole process, event-loop thread), CPU s
    server: float
    bench: float


def _cpu_s(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HostGroup:
    """``count`` host processes: real ``dagr host``, or the stub-executor host (``null=True``)."""

    def __init__(
        self,
        url: str,
        count: int,
        concurrency: int,
        workdir: Path,
        *,
        null: bool = False,
        flags: tuple[str, ...] = (),
    ) -> None:
        self.url, self.count, self.concurrency, self.null, self.flags = url, count, concurrency, null, flags
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._files: list[Any] = []
        self._workdir = workdir

    def start(self) -> None:
        for index in range(self.count):
            log = self._workdir / f"host-{time.monotonic_ns()}-{index}.log"
            handle = log.open("wb")
            if self.null:
                command = [sys.executable, str(Path(__file__).resolve()), "--null-host", self.url]
            else:
                command = [str(Path(sys.executable).parent / "dagr"), "host", "--nats", self.url]
            self.procs.append(
                subprocess.Popen(
                    [*command, "--concurrency", str(self.concurrency), *self.flags],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
            self.logs.append(log)
            self._files.append(handle)

    async def wait_started(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all("host on" in log.read_text(errors="replace") for log in self.logs):
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"host exited early:\n{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("hosts did not start in time")
            await asyncio.sleep(0.05)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM every host, wait, and return the stats line each prints as it stops."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stats = []
        for proc, log, handle in zip(self.procs, self.logs, self._files, strict=True):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            handle.close()
            for line in reversed(log.read_text(errors="replace").splitlines()):
                if line.startswith("host stopped: "):
                    stats.append(json.loads(line.removeprefix("host stopped: ")))
                    break
            else:
                stats.append({})
        return stats


def sample_cpu(hosts: HostGroup, server_pid: int | None) -> CpuSample:
    procs = [(_cpu_s(f"/proc/{pid}/stat"), _cpu_s(f"/proc/{pid}/task/{pid}/stat")) for pid in hosts.pids()]
    server = _cpu_s(f"/proc/{server_pid}/stat") if server_pid else 0.0
    return CpuSample(time.time(), procs, server, _self_cpu())


# -- the null host: the dagr Host with an executor that runs nothing ------------------------------------

_NULL_RESULT = cbor2.dumps({"echo": "hi"})


class _NullExecutor:
    def load_cached(self, digest: str, *, source: str | None = None, limits: Limits | None = None) -> Any:
        return digest

    def load(
        self,
        wasm: bytes,
        *,
        source: str = "",
        expected_digest: str | None = None,
        limits: Limits | None = None,
    ) -> Any:
        return expected_digest

    def run(self, agent: Any, invocation: Any) -> Outcome:
        return Outcome(status=Status.OK, result=_NULL_RESULT)


async def serve_null_host(url: str, concurrency: int) -> None:
    """What ``--null-host`` runs: like ``dagr host``, same log lines, but no wasm at all."""
    mesh = await Mesh.connect(ConnectOptions(servers=(url,)))
    host = Host(mesh.nc, mesh.js, _NullExecutor(), HostConfig(concurrency=concurrency, host_id="null"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(host.run())
    print(f"host on {url} (stub executor), {concurrency} slots", flush=True)
    await stop.wait()
    await host.stop()
    await runner
    stats = host.stats
    print("host stopped: " + json.dumps({"invocations": stats.invocations, "committed": stats.committed}))
    await mesh.close()


# -- driving the mesh --------------------------------------------------------------------------------


async def spawn_many(
    js: JetStreamContext, spec: str, version: int, count: int, context: str = "hi"
) -> list[str]:
    """Queue ``count`` start tasks, exactly as ``Mesh.spawn`` writes them; returns the instance ids."""
    ids = []
    now_ms = int(time.time() * 1000)
    for _ in range(count):
        instance = new_instance_id()
        task = Task(
            task_id=f"bench-{instance}",
            kind="start",
            instance_id=instance,
            specialist=spec,
            version=version,
            root_id=instance,
            context=context,
            created_ms=now_ms,
        )
        await js.publish_async(
            task_subject(spec), encode_task(task), headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id}
        )
        ids.append(instance)
    await js.publish_async_completed()
    return ids


async def drained(js: JetStreamContext, spec: str, timeout_s: float) -> None:
    """Until every task on ``spec``'s topic has been acked (its effects are then stored)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = await js.consumer_info(tasks_stream(spec), consumer_name(spec))
        if not info.num_pending and not info.num_ack_pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{spec}: {info.num_pending} pending, {info.num_ack_pending} unacked")
        await asyncio.sleep(0.02)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Throughput:
    agent: str
    sync: bool
    hosts: int
    concurrency: int
    count: int
    seconds: float
    host_loop_ms: float  # CPU per invocation, summed over host processes: event-loop thread
    host_threads_ms: float  # the other threads (wasm workers, epoch ticker, resolver)
    server_ms: float
    bench_ms: float
    stored_per_inv: float  # messages JetStream stored per invocation (every stream's last_seq moved)
    split: list[int] = field(default_factory=list)
    # The resume -> the first result stored: the hosts' pulls, waiting out their fetch timeout (up to
    # 1 s) on a consumer that was paused; not counted in ``seconds`` (a live consumer has no pause).
    idle_s: float = 0.0

    @property
    def rate(self) -> float:
        """Results per second from the first stored to the last (count - 1 intervals)."""
        return (self.count - 1) / self.seconds


async def measure_throughput(
    mesh: Mesh, server: EmbeddedServer, hosts: HostGroup, agent: str, version: int, count: int, *, sync: bool
) -> Throughput:
    js = mesh.js
    await spawn_many(js, agent, version, WARMUP_TASKS)
    await drained(js, agent, 120)
    stream, durable = tasks_stream(agent), consumer_name(agent)
    await js.pause_consumer(stream, durable, _rfc3339(datetime.now(UTC) + timedelta(hours=1)))
    await spawn_many(js, agent, version, count)
    state = (await js.stream_info(INSTANCES_STREAM)).state
    results_before, first_seq = state.messages, state.last_seq + 1
    stored_before = await stored_total(js)
    before = sample_cpu(hosts, server.pid)
    started = time.time()
    await js.resume_consumer(stream, durable)
    await drained(js, agent, 60 + count / 20)
    after = sample_cpu(hosts, server.pid)
    stored = await stored_total(js) - stored_before
    info = await js.stream_info(INSTANCES_STREAM)
    if info.state.messages - results_before != count:
        say(f"[yellow]{agent}: {info.state.messages - results_before} results for {count} tasks[/yellow]")
    first = await js.get_msg(INSTANCES_STREAM, seq=first_seq)
    last = await js.get_msg(INSTANCES_STREAM, seq=info.state.last_seq)
    assert first.time is not None and last.time is not None
    seconds = last.time.timestamp() - first.time.timestamp()
    whole = sum(a[0] - b[0] for a, b in zip(after.procs, before.procs, strict=True))
    loop = sum(a[1] - b[1] for a, b in zip(after.procs, before.procs, strict=True))
    per = 1000 / count
    return Throughput(
        agent=agent,
        sync=sync,
        hosts=hosts.count,
        concurrency=hosts.concurrency,
        count=count,
        seconds=seconds,
        host_loop_ms=loop * per,
        host_threads_ms=(whole - loop) * per,
        server_ms=(after.server - before.server) * per,
        bench_ms=(after.bench - before.bench) * per,
        stored_per_inv=stored / count,
        idle_s=first.time.timestamp() - started,
    )


async def stored_total(js: JetStreamContext) -> int:
    """Messages ever stored, over every stream (acked work-queue messages included)."""
    return sum(info.state.last_seq for info in await js.streams_info())


async def run_throughput(
    mesh: Mesh,
    server: EmbeddedServer,
    workdir: Path,
    agent: str,
    version: int,
    count: int,
    *,
    hosts: int,
    concurrency: int,
    sync: bool,
    null: bool = False,
) -> Throughput:
    group = HostGroup(server.url, hosts, concurrency, workdir, null=null)
    group.start()
    try:
        await group.wait_started()
        result = await measure_throughput(mesh, server, group, agent, version, count, sync=sync)
    finally:
        stats = await asyncio.to_thread(group.stop)
    result.split = [s.get("per_specialist", {}).get(agent, s.get("invocations", 0)) for s in stats]
    if null:
        result.agent = f"{agent} (stub executor)"
    say(
        f"{result.agent}, fsync {'on' if sync else 'off'}, {hosts} host(s) x {concurrency}: "
        f"{result.rate:,.0f} inv/s ({count} in {result.seconds:.2f} s)"
    )
    return result


@dataclass
class Latency:
    agent: str
    rate: float
    sent: int
    samples: list[float]  # ms
    sync: bool = True

    def p(self, q: float) -> float:
        return percentile(self.samples, q) if self.samples else float("nan")


async def measure_latency(mesh: Mesh, agent: str, version: int, rate: float, seconds: float) -> Latency:
    """Open loop: spawn at ``rate``/s for ``seconds``; latency of each to its result on the wire."""
    nc, js = mesh.nc, mesh.js
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    total = max(1, int(rate * seconds))

    async def on_result(msg: Any) -> None:
        arrived = time.perf_counter()
        if cbor2.loads(msg.data).get("state") != "finished":
            return
        started = sent.pop(msg.subject.rsplit(".", 1)[-1], None)
        if started is not None:
            latencies.append((arrived - started) * 1000)
            if len(latencies) == total:
                done.set()

    subscription = await nc.subscribe("dagr.inst.>", cb=on_result)
    await nc.flush()
    begin = time.perf_counter() + 0.05
    for index in range(total):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        instance = new_instance_id()
        task = Task(
            task_id=f"bench-{instance}",
            kind="start",
            instance_id=instance,
            specialist=agent,
            version=version,
            root_id=instance,
            context="hi",
            created_ms=int(time.time() * 1000),
        )
        sent[instance] = time.perf_counter()
        await js.publish_async(
            task_subject(agent), encode_task(task), headers={TASK_HEADER: "1", "Nats-Msg-Id": task.task_id}
        )
    await js.publish_async_completed()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=30)
    await subscription.unsubscribe()
    return Latency(agent, rate, total, latencies)


@dataclass
class Wakes:
    agent: str
    count: int
    hosts: int
    concurrency: int
    slack_s: float  # how long before the due instant every start had committed (negative: after)
    fired_ms: list[float]  # server: schedule fired (stored) minus due
    ran_ms: list[float]  # the wake invocation's result time minus due
    starts_rate: float
    sync: bool = True


async def measure_wakes(
    mesh: Mesh, agent: str, version: int, count: int, start_rate_guess: float, hosts: HostGroup
) -> Wakes:
    nc, js = mesh.nc, mesh.js
    ran: dict[str, float] = {}
    complete = asyncio.Event()
    wanted: set[str] = set()

    async def on_result(msg: Any) -> None:
        instance = msg.subject.rsplit(".", 1)[-1]
        record = cbor2.loads(msg.data)
        if instance in wanted and instance not in ran and record.get("state") == "finished":
            ran[instance] = float(record["updated_ms"])
            if len(ran) == count:
                complete.set()

    subscription = await nc.subscribe("dagr.inst.>", cb=on_result)
    await nc.flush()
    # Due once every start has run: 1.5x the expected start phase, plus two seconds.
    began = time.time()
    due_ms = int((began + 2.0 + 1.5 * count / start_rate_guess) * 1000)
    wanted.update(await spawn_many(js, agent, version, count, context=str(due_ms)))
    await drained(js, agent, 60 + count / 10)
    starts_done = time.time()
    slack = due_ms / 1000 - starts_done
    if slack < 0:
        say(
            f"[yellow]{agent}: the starts ran {-slack:.1f} s past the due time: lateness is inflated[/yellow]"
        )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            complete.wait(), timeout=max(0.0, due_ms / 1000 - time.time()) + 60 + count / 20
        )
    await subscription.unsubscribe()
    fired = await fired_times(js, agent, wanted)
    return Wakes(
        agent=agent,
        count=count,
        hosts=hosts.count,
        concurrency=hosts.concurrency,
        slack_s=slack,
        fired_ms=[t - due_ms for t in fired.values()],
        ran_ms=[t - due_ms for t in ran.values()],
        starts_rate=count / (starts_done - began),
    )


async def fired_times(js: JetStreamContext, agent: str, instances: set[str]) -> dict[str, float]:
    """When nats-server fired each instance's wake: the stored time of its ``dagr.wake.*`` message."""
    subscription = await js.pull_subscribe(
        f"dagr.wake.{agent}.>",
        stream=SCHEDULES_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    found: dict[str, float] = {}
    with contextlib.suppress(TimeoutError):
        while len(found) < len(instances):
            for msg in await subscription.fetch(1000, timeout=2):
                instance = msg.subject.rsplit(".", 1)[-1]
                if instance in instances:
                    found[instance] = msg.metadata.timestamp.timestamp() * 1000
    await subscription.unsubscribe()
    return found


# -- awaits (issue 10): instances waiting, signals waking them, one HTTP call ------------------------


def rss_mib(pid: int | None) -> float:
    """VmRSS of process ``pid`` (/proc/<pid>/status), MiB; nan if unknown."""
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Journals:
    """Journal records as they arrive on ``dagr.inst.>`` (core), every instance's (a server of the
    measurement's own): the wall-clock arrival (s) of its first record of each state, its ending one."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.arrived: dict[str, dict[InstanceState, float]] = {}
        self.ended: dict[str, JournalRecord] = {}
        self.counts: dict[InstanceState, int] = dict.fromkeys(InstanceState, 0)
        self._changed = asyncio.Event()
        self._subscription: Any = None

    async def __aenter__(self) -> Journals:
        self._subscription = await self.nc.subscribe("dagr.inst.>", cb=self._on_record)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._subscription.unsubscribe()

    async def _on_record(self, msg: Any) -> None:
        at = time.time()
        instance = msg.subject.rsplit(".", 1)[-1]
        record = JournalRecord.decode(msg.data)
        states = self.arrived.setdefault(instance, {})
        if record.state not in states:
            states[record.state] = at
            self.counts[record.state] += 1
            if record.ended:
                self.ended[instance] = record
            self._changed.set()

    async def until(self, state: InstanceState, count: int, timeout_s: float) -> bool:
        """Until ``count`` instances have had a record of ``state``; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.counts[state] < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def ran_ms(self, instance: str) -> float | None:
        """When the ending invocation ran, by the instance's clock (a signal-waiter's result)."""
        record = self.ended.get(instance)
        if record is None or record.ok is None:
            return None
        return float(cbor2.loads(record.ok)["ran_ms"])


@dataclass
class Waiting:
    """Host (and nats-server) RSS as instances pile up awaiting a signal, 1 host process."""

    points: list[tuple[str, int, float, float]] = field(default_factory=list)  # what, waiting, host, server
    suspended: int = 0  # instances whose `suspended` record arrived
    start_rate: float = 0.0  # awaiting starts committed per second
    cost: Cost | None = None  # per start


@dataclass
class Cost:
    """Per unit of work over an interval: CPU ms (host event loop, other host threads, nats-server)
    and messages JetStream stored (every stream's last_seq moved, acked work-queue tasks included)."""

    host_loop_ms: float
    host_threads_ms: float
    server_ms: float
    stored: float

    @classmethod
    async def since(
        cls,
        js: JetStreamContext,
        hosts: HostGroup,
        server: EmbeddedServer,
        start: tuple[CpuSample, int],
        units: int,
    ) -> Cost:
        before, stored_before = start
        after, stored = sample_cpu(hosts, server.pid), await stored_total(js)
        whole = sum(a[0] - b[0] for a, b in zip(after.procs, before.procs, strict=True))
        loop = sum(a[1] - b[1] for a, b in zip(after.procs, before.procs, strict=True))
        per = 1000 / max(units, 1)
        return cls(
            loop * per,
            (whole - loop) * per,
            (after.server - before.server) * per,
            (stored - stored_before) / max(units, 1),
        )

    @staticmethod
    async def mark(js: JetStreamContext, hosts: HostGroup, server: EmbeddedServer) -> tuple[CpuSample, int]:
        return sample_cpu(hosts, server.pid), await stored_total(js)


@dataclass
class Woken:
    """Per signalled instance, ms after its ``Mesh.signal`` call began: nats-server fired its wake
    (stored the schedule's message: the poke had moved the await's deadline to now), the resumed
    invocation ran (by the instance's own clock), its finished record arrived here."""

    sent: int = 0
    fired_ms: list[float] = field(default_factory=list)
    ran_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)

    @classmethod
    async def of(cls, js: JetStreamContext, journals: Journals, spec: str, sent: dict[str, float]) -> Woken:
        fired = await fired_times(js, spec, set(sent))
        woken = cls(sent=len(sent))
        for instance, at in sent.items():
            ran_ms = journals.ran_ms(instance)
            finished = journals.arrived.get(instance, {}).get(InstanceState.FINISHED)
            if ran_ms is not None and finished is not None:
                # A satisfied await's wake is sent at once (issue 12): no schedule fires for it.
                if instance in fired:
                    woken.fired_ms.append(fired[instance] - at * 1000)
                woken.ran_ms.append(ran_ms - at * 1000)
                woken.done_ms.append((finished - at) * 1000)
        return woken


@dataclass
class Wakeups:
    """Signals to instances awaiting them: a burst of ``count`` at once, then some one at a time."""

    count: int
    waiting: int  # instances awaiting when the burst was sent (the burst's own included)
    returned_s: float = 0.0  # until every Mesh.signal call of the burst had returned
    cost: Cost | None = None  # per signal of the burst, until every one had woken and finished
    burst: Woken = field(default_factory=Woken)
    alone: Woken = field(default_factory=Woken)


async def spawn_waiting(
    js: JetStreamContext, journals: Journals, spec: str, version: int, count: int, *, deadline_s: int
) -> list[str]:
    """``count`` signal-waiters; returns once every start is acked and its `suspended` record came."""
    before = journals.counts[InstanceState.SUSPENDED]
    ids = await spawn_many(js, spec, version, count, context=str(deadline_s))
    await drained(js, spec, 60 + count / 20)
    if not await journals.until(InstanceState.SUSPENDED, before + count, 10):
        got = journals.counts[InstanceState.SUSPENDED] - before
        say(f"[yellow]{spec}: {got} of {count} started instances suspended[/yellow]")
    return ids


async def signal_all(
    mesh: Mesh, journals: Journals, ids: list[str], timeout_s: float
) -> tuple[float, dict[str, float]]:
    """Send `go` to every one of ``ids`` at once (concurrent ``Mesh.signal`` calls) and wait until
    each has finished: (seconds until every call had returned, when each call began)."""
    sent: dict[str, float] = {}

    async def one(instance: str) -> None:
        sent[instance] = time.time()
        await mesh.signal(instance, "go")

    before = journals.counts[InstanceState.FINISHED]
    began = time.time()
    async with asyncio.TaskGroup() as group:
        for instance in ids:
            group.create_task(one(instance))
    returned = time.time() - began
    if not await journals.until(InstanceState.FINISHED, before + len(ids), timeout_s):
        woke = journals.counts[InstanceState.FINISHED] - before
        say(f"[yellow]signals: {woke} of {len(ids)} instances woke in {timeout_s:.0f} s[/yellow]")
    return returned, sent


async def measure_awaits(
    mesh: Mesh, server: EmbeddedServer, workdir: Path, version: int, settings: Settings
) -> tuple[Waiting, Wakeups]:
    """N signal-waiters awaiting on 1 host (RSS as they pile up); then signals to some of them."""
    spec, n, burst = "signal-waiter", settings.await_waiting, settings.await_signals
    group = HostGroup(server.url, 1, AWAITS_CONCURRENCY, workdir)
    group.start()
    waiting = Waiting()
    try:
        await group.wait_started()
        (pid,) = group.pids()
        async with Journals(mesh.nc) as journals:
            # Warm-up: the component loaded, a start, a signal and a resume run, all settled.
            warm = await spawn_waiting(mesh.js, journals, spec, version, WARMUP_TASKS, deadline_s=3600)
            await signal_all(mesh, journals, warm, 60)
            await drained(mesh.js, spec, 60)
            waiting.points.append(
                (f"before (after a warm-up of {WARMUP_TASKS})", 0, rss_mib(pid), rss_mib(server.pid))
            )
            began, mark = time.time(), await Cost.mark(mesh.js, group, server)
            awaiting: list[str] = []
            for total, count in ((n // 2, n // 2), (n, n - n // 2)):
                say(f"{spec}: {count:,} more instances awaiting a signal (1 host) ...")
                awaiting += await spawn_waiting(mesh.js, journals, spec, version, count, deadline_s=3600)
                waiting.points.append((f"{total:,} awaiting", total, rss_mib(pid), rss_mib(server.pid)))
            waiting.start_rate = n / (time.time() - began)
            waiting.cost = await Cost.since(mesh.js, group, server, mark, n)
            waiting.suspended = sum(
                1 for i in awaiting if InstanceState.SUSPENDED in journals.arrived.get(i, {})
            )

            wakeups = Wakeups(count=burst, waiting=len(awaiting))
            say(f"{spec}: {burst} signals at once, {len(awaiting):,} awaiting ...")
            mark = await Cost.mark(mesh.js, group, server)
            wakeups.returned_s, sent = await signal_all(mesh, journals, awaiting[:burst], 60 + burst / 10)
            await drained(mesh.js, spec, 60)
            wakeups.cost = await Cost.since(mesh.js, group, server, mark, burst)
            wakeups.burst = await Woken.of(mesh.js, journals, spec, sent)
            say(f"{spec}: {SIGNALS_ALONE} signals one at a time ...")
            sent = {}
            for instance in awaiting[burst : burst + SIGNALS_ALONE]:
                sent.update((await signal_all(mesh, journals, [instance], 30))[1])
            wakeups.alone = await Woken.of(mesh.js, journals, spec, sent)
            left = sum(1 for i in awaiting if i not in journals.ended)
            waiting.points.append(
                (f"after the signals ({left:,} still awaiting)", left, rss_mib(pid), rss_mib(server.pid))
            )
    finally:
        await asyncio.to_thread(group.stop)
    return waiting, wakeups


@dataclass
class HttpCalls:
    """One GET to the same local server, one at a time, interleaved: bare httpx, the host's
    OutboundHttp.call alone, a fetcher agent end to end (and its four stretches), an echo."""

    count: int
    bare_ms: list[float] = field(default_factory=list)
    host_call_ms: list[float] = field(default_factory=list)
    agent_ms: list[float] = field(default_factory=list)
    to_suspended_ms: list[float] = field(default_factory=list)  # spawn -> `suspended` record
    to_response_ms: list[float] = field(default_factory=list)  # `suspended` -> response in the inbox
    to_fired_ms: list[float] = field(default_factory=list)  # response in the inbox -> wake fired
    to_finished_ms: list[float] = field(default_factory=list)  # wake fired -> `finished`
    # Response in the inbox -> `finished` when no schedule fired: the poke sent the wake itself.
    early_ms: list[float] = field(default_factory=list)
    echo_ms: list[float] = field(default_factory=list)


async def measure_http(
    mesh: Mesh, server: EmbeddedServer, workdir: Path, agents: dict[str, Agent], settings: Settings
) -> HttpCalls:
    import httpkit  # tests/httpkit.py, on sys.path since prepare_agents

    calls = HttpCalls(count=settings.http_calls)
    with httpkit.local_http() as local:
        url = f"{local.url}/echo"
        base = agents["fetcher"].manifest
        grants = Grants(http=(HttpGrant(url=url),))
        manifest = Manifest(name="fetcher", description=base.description, grants=grants, limits=base.limits)
        await mesh.deploy(manifest, agents["fetcher"].wasm)
        capabilities = Capabilities(own=grants)
        request = HttpRequest(method="GET", url=url)
        group = HostGroup(server.url, 1, AWAITS_CONCURRENCY, workdir, flags=("--http-allow-private",))
        group.start()
        outbound = OutboundHttp(HttpPolicy(allow_private=True))
        try:
            await group.wait_started()
            async with httpx.AsyncClient(trust_env=False) as bare, Journals(mesh.nc) as journals:
                inbox: dict[str, float] = {}
                stretches: dict[str, tuple[float, float]] = {}  # response stored, finished (s)

                async def on_inbox(msg: Any) -> None:
                    inbox.setdefault(msg.subject.rsplit(".", 1)[-1], time.time())

                subscription = await mesh.nc.subscribe(inbox_subject("*"), cb=on_inbox)
                await mesh.nc.flush()

                async def agent_call(specialist: str, context: str) -> str:
                    instance = new_instance_id()
                    done = journals.counts[InstanceState.FINISHED]
                    await mesh.spawn(specialist, context, instance_id=instance)
                    if not await journals.until(InstanceState.FINISHED, done + 1, 30):
                        raise RuntimeError(f"{specialist} {instance} did not finish in 30 s")
                    return instance

                say(f"HTTP: {calls.count} calls each way, one at a time, interleaved ...")
                fetch = json.dumps({"url": url, "timeout_s": 30})
                for index in range(calls.count + HTTP_WARMUP):
                    began = time.time()
                    response = await bare.get(url)
                    response.raise_for_status()
                    bare_ms = (time.time() - began) * 1000
                    began = time.time()
                    resolution = await outbound.call(
                        f"http-bench-{index}", request, capabilities, max_body_bytes=1 << 20
                    )
                    host_ms = (time.time() - began) * 1000
                    if resolution.response is None or resolution.response.status != 200:
                        raise RuntimeError(f"OutboundHttp.call: {resolution.error_kind}: {resolution.error}")
                    spawned = time.time()
                    instance = await agent_call("fetcher", fetch)
                    report = cbor2.loads(journals.ended[instance].ok or b"\xf6")
                    if not (isinstance(report, dict) and report.get("status") == 200):
                        raise RuntimeError(f"fetcher: {report!r}")
                    seen = journals.arrived[instance]
                    spawned_echo = time.time()
                    echo = await agent_call("echo", "hi")
                    if index < HTTP_WARMUP:
                        continue
                    suspended, finished = seen[InstanceState.SUSPENDED], seen[InstanceState.FINISHED]
                    calls.bare_ms.append(bare_ms)
                    calls.host_call_ms.append(host_ms)
                    calls.agent_ms.append((finished - spawned) * 1000)
                    calls.to_suspended_ms.append((suspended - spawned) * 1000)
                    calls.to_response_ms.append((inbox[instance] - suspended) * 1000)
                    stretches[instance] = (inbox[instance], finished)
                    calls.echo_ms.append(
                        (journals.arrived[echo][InstanceState.FINISHED] - spawned_echo) * 1000
                    )
                await subscription.unsubscribe()
            # When nats-server fired each wake: known from what it stored, after the fact.
            fired = await fired_times(mesh.js, "fetcher", set(stretches))
            for instance, (stored, finished) in stretches.items():
                if instance in fired:
                    calls.to_fired_ms.append(fired[instance] - stored * 1000)
                    calls.to_finished_ms.append(finished * 1000 - fired[instance])
                else:
                    calls.early_ms.append((finished - stored) * 1000)
        finally:
            await outbound.aclose()
            await asyncio.to_thread(group.stop)
    return calls


# -- floors ------------------------------------------------------------------------------------------


async def nats_floor(
    nc: NATS, js: JetStreamContext, *, tag: str, count: int, in_flight: int, commit: bool
) -> tuple[float, float]:
    """(msgs/s, CPU ms per msg of this process) of a loop doing per task the least a host must do.

    ``commit=False``: fetch, publish one reply (awaiting its ack), ack. ``commit=True``: the stored
    writes a commit makes today for a task that returns without a parent (dagr_wasm/mesh/_commit.py):
    ``kv.create`` of the marker holding the outbox, the journal record published with its id
    (awaited), the ack; payloads of the real sizes (a planned outbox). Same pull loop shape as the host.
    """
    tasks, out = f"FLOOR_{tag}_T", f"FLOOR_{tag}_R"
    await js.add_stream(
        StreamConfig(
            name=tasks,
            subjects=[f"floor.{tag}.t"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_stream(StreamConfig(name=out, subjects=[f"floor.{tag}.r.>"], storage=StorageType.FILE))
    await js.add_consumer(
        tasks, ConsumerConfig(durable_name="floor", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000)
    )
    kv = (
        await js.create_key_value(KeyValueConfig(bucket=f"floor-{tag}", storage=StorageType.FILE))
        if commit
        else None
    )
    body = encode_task(
        Task(task_id="x" * 26, kind="start", instance_id="y" * 20, specialist="echo", context="hi")
    )
    small = b"s" * 200
    marker, record = commit_payloads()
    for index in range(count):
        await js.publish_async(f"floor.{tag}.t", body, headers={"Nats-Msg-Id": f"t{index}"})
    await js.publish_async_completed()
    subscription = await js.pull_subscribe_bind("floor", stream=tasks)
    slots = asyncio.Semaphore(in_flight)
    finished = asyncio.Event()
    done = 0
    serial = 0

    async def one(msg: Any, n: int) -> None:
        nonlocal done
        try:
            if kv is not None:
                await kv.create(f"x.{n}", marker)
                await js.publish(f"floor.{tag}.r.{n}", record, headers={"Nats-Msg-Id": f"{n}.o0"})
            else:
                await js.publish(f"floor.{tag}.r.{n}", small)
            await msg.ack()
        finally:
            slots.release()
            done += 1
            if done == count:
                finished.set()

    started, cpu = time.perf_counter(), _self_cpu()
    fetched = 0
    while fetched < count:
        await slots.acquire()
        slots.release()
        try:
            messages = await subscription.fetch(64, timeout=1.0)
        except TimeoutError:
            continue
        for msg in messages:
            await slots.acquire()
            serial += 1
            asyncio.get_running_loop().create_task(one(msg, serial))
        fetched += len(messages)
    await finished.wait()
    return count / (time.perf_counter() - started), (_self_cpu() - cpu) * 1000 / count


def commit_payloads() -> tuple[bytes, bytes]:
    """(marker, journal record) as a commit stores them for an echo's start task that returned
    ``{"echo": "hi"}``: the outbox planned by the runtime's own code, so the sizes are the real ones."""
    from dagr_wasm.mesh._commit import CommitContext, plan_outbox

    instance, now_ms = new_instance_id(), int(time.time() * 1000)
    task = Task(
        task_id=f"bench-{instance}",
        kind="start",
        instance_id=instance,
        specialist="echo",
        version=1,
        root_id=instance,
        context="hi",
        created_ms=now_ms,
    )
    ctx = CommitContext(task=task, version=1, attempt=1, now_ms=now_ms, host="floor:1")
    outbox = plan_outbox(ctx, Outcome(status=Status.OK, result=cbor2.dumps({"echo": "hi"})))
    return outbox.encode(), outbox.messages[-1].payload


def sandbox_floor(sandbox: Sandbox, wasm: bytes, iterations: int, threads: int) -> tuple[float, float]:
    """Sandbox.run of a start event, back to back on ``threads`` threads: (inv/s, CPU ms per inv)."""
    agent = sandbox.load(wasm)
    invocation = Invocation(task_id="bench", instance_id="bench", specialist="bench", event=Start("hi"))
    for _ in range(max(20, iterations // 10)):
        assert sandbox.run(agent, invocation).status is Status.OK
    barrier = threading.Barrier(threads + 1)
    cpu: list[float] = []

    def work() -> None:
        barrier.wait()
        begin = time.thread_time()
        for _ in range(iterations):
            sandbox.run(agent, invocation)
        cpu.append(time.thread_time() - begin)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return iterations * threads / (time.perf_counter() - started), sum(cpu) * 1000 / (iterations * threads)


def disk_floor(directory: Path, seconds: float = 1.0) -> float:
    """write(300 B) + fsync per record in ``directory``, back to back: records/s."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            os.write(fd, b"x" * 300)
            os.fsync(fd)
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    tasks: int
    sweep_tasks: int
    sweep: tuple[int, ...]
    concurrency: dict[str, int]
    latency_s: float
    wake_counts: tuple[int, ...]
    sandbox_iterations: dict[str, int]
    await_waiting: int  # signal-waiters awaiting at once on 1 host
    await_signals: int  # of them signalled at once
    http_calls: int  # of each kind: bare httpx, OutboundHttp.call, fetcher agent, echo
    awaits_only: bool = False


@dataclass
class Report:
    floors: dict[tuple[str, bool], tuple[float, float]] = field(default_factory=dict)
    sandbox: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    disk_fsync: float = float("nan")
    sweep: dict[tuple[str, int], float] = field(default_factory=dict)
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    wakes: list[Wakes] = field(default_factory=list)
    waiting: Waiting | None = None
    wakeups: Wakeups | None = None
    http: HttpCalls | None = None

    def rate(self, agent: str, hosts: int, sync: bool = True) -> float:
        for t in self.throughput:
            if t.agent == agent and t.hosts == hosts and t.sync == sync:
                return t.rate
        return float("nan")


async def deploy(mesh: Mesh, agents: dict[str, Agent], names: tuple[str, ...]) -> dict[str, int]:
    await mesh.ensure_layout()
    versions = {}
    for name in names:
        versions[name] = (await mesh.deploy(agents[name].manifest, agents[name].wasm)).version
    return versions


async def run_mode(
    sync: bool, settings: Settings, agents: dict[str, Agent], report: Report, workdir: Path
) -> None:
    store = Path(tempfile.mkdtemp(prefix=f"store-{'sync' if sync else 'nosync'}-", dir=workdir))
    server = EmbeddedServer(config=ServerConfig(store_dir=store, sync_always=sync))
    await asyncio.to_thread(server.start)
    mode = "fsync on" if sync else "fsync off"
    try:
        async with await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh:
            names = (
                ("trivial", "echo", "trivial-waker", "waker")
                if sync
                else ("trivial", "echo", "trivial-waker")
            )
            versions = await deploy(mesh, agents, names)

            if sync and settings.sweep:
                # Concurrency per host: sweep one host, keep the best per agent.
                for n in settings.sweep:
                    for agent in ("trivial", "echo"):
                        t = await run_throughput(
                            mesh,
                            server,
                            workdir,
                            agent,
                            versions[agent],
                            settings.sweep_tasks,
                            hosts=1,
                            concurrency=n,
                            sync=sync,
                        )
                        report.sweep[(agent, n)] = t.rate
                for agent in ("trivial", "echo"):
                    rates = {n: report.sweep[(agent, n)] for n in settings.sweep}
                    settings.concurrency[agent] = max(rates, key=rates.__getitem__)
                say(f"concurrency per host: {settings.concurrency}")

            n_floor = settings.concurrency["trivial"]
            say(f"{mode}: NATS floors ({n_floor} in flight) ...")
            tag = "s" if sync else "n"
            report.floors[("reply", sync)] = await nats_floor(
                mesh.nc, mesh.js, tag=f"{tag}a", count=settings.tasks * 2, in_flight=n_floor, commit=False
            )
            report.floors[("commit", sync)] = await nats_floor(
                mesh.nc, mesh.js, tag=f"{tag}c", count=settings.tasks, in_flight=n_floor, commit=True
            )
            null = await run_throughput(
                mesh,
                server,
                workdir,
                "trivial",
                versions["trivial"],
                settings.tasks,
                hosts=1,
                concurrency=n_floor,
                sync=sync,
                null=True,
            )
            report.floors[("null-host", sync)] = (null.rate, null.host_loop_ms + null.host_threads_ms)
            report.throughput.append(null)

            for agent in ("trivial", "echo"):
                for hosts in (1, 2):
                    report.throughput.append(
                        await run_throughput(
                            mesh,
                            server,
                            workdir,
                            agent,
                            versions[agent],
                            settings.tasks,
                            hosts=hosts,
                            concurrency=settings.concurrency[agent],
                            sync=sync,
                        )
                    )

            # Spawn-to-reply at half the 1-host max with fsync on; the fsync-off run repeats it at the
            # same rate, so the difference is what fsync costs on the critical path.
            for agent in ("trivial", "echo"):
                rate = 0.5 * report.rate(agent, 1, True)
                group = HostGroup(server.url, 1, settings.concurrency[agent], workdir)
                group.start()
                try:
                    await group.wait_started()
                    await spawn_many(mesh.js, agent, versions[agent], WARMUP_TASKS)
                    await drained(mesh.js, agent, 120)
                    say(f"{agent}, {mode}: open loop at {rate:,.0f}/s for {settings.latency_s:.0f} s ...")
                    latency = await measure_latency(mesh, agent, versions[agent], rate, settings.latency_s)
                    latency.sync = sync
                    report.latency.append(latency)
                finally:
                    await asyncio.to_thread(group.stop)

            # Python wakers with fsync on only: the fsync-off run is there to split server from host.
            wakers = (
                (("trivial-waker", "trivial"), ("waker", "echo")) if sync else (("trivial-waker", "trivial"),)
            )
            for waker, family in wakers:
                group = HostGroup(server.url, 2, settings.concurrency[family], workdir)
                group.start()
                try:
                    await group.wait_started()
                    # A start commits more than an echo (schedule, status): guess low, then learn.
                    guess = 0.4 * report.rate(family, 2, sync)
                    for count in settings.wake_counts:
                        say(f"{waker}, {mode}: {count} agents due at once (2 hosts) ...")
                        wakes = await measure_wakes(mesh, waker, versions[waker], count, guess, group)
                        wakes.sync = sync
                        report.wakes.append(wakes)
                        guess = wakes.starts_rate
                finally:
                    await asyncio.to_thread(group.stop)
    finally:
        await asyncio.to_thread(server.stop)


async def run_awaits(settings: Settings, agents: dict[str, Agent], report: Report, workdir: Path) -> None:
    """Issue 10's figures, on a fresh server with fsync on (the default): HTTP calls first, then
    instances piling up awaiting a signal, and signals waking them."""
    store = Path(tempfile.mkdtemp(prefix="store-awaits-", dir=workdir))
    server = EmbeddedServer(config=ServerConfig(store_dir=store, sync_always=True))
    await asyncio.to_thread(server.start)
    try:
        async with await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh:
            versions = await deploy(mesh, agents, ("echo", "signal-waiter"))
            report.http = await measure_http(mesh, server, workdir, agents, settings)
            report.waiting, report.wakeups = await measure_awaits(
                mesh, server, workdir, versions["signal-waiter"], settings
            )
    finally:
        await asyncio.to_thread(server.stop)


def render(report: Report, settings: Settings, agents: dict[str, Agent]) -> None:
    label = {name: agent.label for name, agent in agents.items()}
    nan = float("nan")

    floors = Table(title="floors, measured in this run: no wasm, or no NATS (CPU: of the process doing it)")
    for column in ("floor", "fsync on /s", "CPU ms/task", "fsync off /s", "CPU ms/task "):
        floors.add_column(column, justify="left" if column == "floor" else "right")
    n = settings.concurrency["trivial"]
    floors.add_row(
        "disk: write 300 B + fsync, back to back (store dir)", f"{report.disk_fsync:,.0f}", "", "", ""
    )
    for key, text in (
        ("reply", f"nats-py loop: fetch, publish a reply, ack ({n} in flight)"),
        ("commit", f"nats-py loop: a commit's stored writes: kv.create marker, record, ack ({n} in flight)"),
        ("null-host", f"dagr Host process, stub executor (no wasm), {n} slots"),
    ):
        cells = []
        for sync in (True, False):
            rate, cpu = report.floors.get((key, sync), (nan, nan))
            cells += [f"{rate:,.0f}", f"{cpu:.2f}"]
        floors.add_row(text, *cells)
    for agent in ("trivial", "echo"):
        (one, cpu1), (two, cpu2) = report.sandbox[(agent, 1)], report.sandbox[(agent, 2)]
        floors.add_row(f"Sandbox.run alone, {label[agent]}: 1 thread", f"{one:,.0f}", f"{cpu1:.2f}", "", "")
        floors.add_row(f"Sandbox.run alone, {label[agent]}: 2 threads", f"{two:,.0f}", f"{cpu2:.2f}", "", "")
    console.print(floors)

    if report.sweep:
        sweep = Table(title="concurrency sweep: 1 host process, fsync on, inv/s")
        sweep.add_column("agent", justify="left")
        for n in settings.sweep:
            sweep.add_column(f"N={n}", justify="right")
        for agent in ("trivial", "echo"):
            sweep.add_row(label[agent], *(f"{report.sweep[(agent, n)]:,.0f}" for n in settings.sweep))
        console.print(sweep)

    table = Table(
        title=f"throughput: {settings.tasks} queued start tasks, consumer resumed -> last result stored "
        "(CPU ms per invocation: host event-loop thread, other host threads, nats-server)"
    )
    for column in (
        "agent",
        "fsync",
        "hosts x N",
        "inv/s",
        "vs 1 host",
        "host loop",
        "host threads",
        "server",
        "stored msgs/inv",
        "split (+100 warm-up)",
    ):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for t in report.throughput:
        base = label.get(t.agent.split(" ")[0], t.agent)
        name = base + (" (stub executor)" if "stub" in t.agent else "")
        one = report.rate(t.agent, 1, t.sync)
        table.add_row(
            name,
            "on" if t.sync else "off",
            f"{t.hosts} x {t.concurrency}",
            f"{t.rate:,.0f}",
            f"{t.rate / one:.2f}x" if t.hosts > 1 else "",
            f"{t.host_loop_ms:.2f}",
            f"{t.host_threads_ms:.2f}",
            f"{t.server_ms:.2f}",
            f"{t.stored_per_inv:.1f}",
            "/".join(str(s) for s in t.split),
        )
    console.print(table)

    lat = Table(title="spawn-to-reply latency, open loop at half the 1-host max with fsync on (1 host)")
    for column in ("agent", "fsync", "rate/s", "replies", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        lat.add_column(column, justify="left" if column == "agent" else "right")
    for item in report.latency:
        lat.add_row(
            label[item.agent],
            "on" if item.sync else "off",
            f"{item.rate:,.0f}",
            f"{len(item.samples)}/{item.sent}",
            *(f"{item.p(q):.1f}" for q in (0.5, 0.9, 0.99, 1.0)),
        )
    console.print(lat)

    wakes = Table(
        title="wake lateness: N agents suspended until one instant, 2 hosts (fired: nats-server stored the "
        "wake; ran: the wake invocation committed; both minus due)"
    )
    for column in (
        "agent",
        "fsync",
        "N",
        "hosts x N",
        "starts/s",
        "slack s",
        "fired p50/p99 ms",
        "ran p50 ms",
        "ran p99 ms",
        "last ran ms",
        "wakes/s",
    ):
        wakes.add_column(column, justify="left" if column == "agent" else "right")
    for w in report.wakes:
        last = max(w.ran_ms) if w.ran_ms else nan
        wakes.add_row(
            label[w.agent],
            "on" if w.sync else "off",
            f"{w.count}" + ("" if len(w.ran_ms) == w.count else f" ({len(w.ran_ms)} woke)"),
            f"{w.hosts} x {w.concurrency}",
            f"{w.starts_rate:,.0f}",
            f"{w.slack_s:.1f}",
            f"{percentile(w.fired_ms, 0.5):,.0f} / {percentile(w.fired_ms, 0.99):,.0f}"
            if w.fired_ms
            else "n/a",
            f"{percentile(w.ran_ms, 0.5):,.0f}" if w.ran_ms else "n/a",
            f"{percentile(w.ran_ms, 0.99):,.0f}" if w.ran_ms else "n/a",
            f"{last:,.0f}",
            f"{w.count / max(last / 1000, 1e-3):,.0f}",
        )
    console.print(wakes)

    targets = Table(title="targets (issue 3)")
    for column in ("target", *(label[a] for a in ("trivial", "echo"))):
        targets.add_column(column, justify="left" if column == "target" else "right")

    def verdict(value: float, ok: bool, fmt: str) -> str:
        return f"{fmt.format(value)} {'[green]met[/green]' if ok else '[red]MISSED[/red]'}"

    rows: list[tuple[str, Callable[[str], str]]] = [
        (
            "one host process >= 1,500 inv/s (fsync on)",
            lambda a: verdict(report.rate(a, 1), report.rate(a, 1) >= TARGET_ONE_HOST, "{:,.0f}"),
        ),
        (
            "two processes >= 1.6x one (fsync on)",
            lambda a: verdict(
                report.rate(a, 2) / report.rate(a, 1),
                report.rate(a, 2) / report.rate(a, 1) >= TARGET_SPEEDUP,
                "{:.2f}x",
            ),
        ),
        (
            "p99 spawn-to-reply < 20 ms at half max rate",
            lambda a: next(
                (
                    verdict(x.p(0.99), x.p(0.99) < TARGET_P99_MS, "{:.1f} ms")
                    for x in report.latency
                    if x.agent == a and x.sync
                ),
                "n/a",
            ),
        ),
    ]
    waker_of = {"trivial": "trivial-waker", "echo": "waker"}
    wake_n = max(settings.wake_counts)

    def wake_verdict(a: str) -> str:
        for w in report.wakes:
            if w.agent == waker_of[a] and w.sync and w.count == wake_n and w.ran_ms:
                p99 = percentile(w.ran_ms, 0.99)
                ok = p99 < TARGET_WAKE_P99_MS and len(w.ran_ms) == w.count and wake_n >= TARGET_WAKE_N
                text = verdict(p99, ok, "{:,.0f} ms")
                return text if wake_n >= TARGET_WAKE_N else text + f" (N={wake_n})"
        return "n/a"

    rows.append((f"wake lateness p99 < 500 ms, {TARGET_WAKE_N:,} due at once", wake_verdict))
    for text, cell in rows:
        targets.add_row(text, cell("trivial"), cell("echo"))
    console.print(targets)
    notes(report, label)


def render_awaits(report: Report) -> None:
    """Issue 10's tables: memory with instances awaiting, resolve-to-wake, one HTTP call."""
    nan = float("nan")

    def p(samples: list[float], q: float) -> float:
        return percentile(samples, q) if samples else nan

    def cost_text(cost: Cost | None, unit: str) -> str:
        if cost is None:
            return ""
        return (
            f"CPU per {unit}: host event loop {cost.host_loop_ms:.2f} ms, other host threads "
            f"{cost.host_threads_ms:.2f} ms, nats-server {cost.server_ms:.2f} ms; JetStream stored "
            f"{cost.stored:.1f} messages per {unit}"
        )

    waiting = report.waiting
    if waiting is not None and len(waiting.points) >= 3:
        table = Table(
            title=f"instances awaiting a signal (agents/signal-waiter, 1 h deadline), 1 host process x "
            f"{AWAITS_CONCURRENCY}, fsync on: RSS (VmRSS of /proc/<pid>/status)"
        )
        for column in ("when", "awaiting", "host RSS MiB", "vs before", "nats-server RSS MiB", "vs before "):
            table.add_column(column, justify="left" if column == "when" else "right")
        _, _, host0, server0 = waiting.points[0]
        for what, count, host, server in waiting.points:
            table.add_row(
                what,
                f"{count:,}",
                f"{host:,.1f}",
                f"{host - host0:+,.1f}",
                f"{server:,.1f}",
                f"{server - server0:+,.1f}",
            )
        console.print(table)
        (_, half, host_half, _), (_, full, host_full, _) = waiting.points[1], waiting.points[2]
        per = (host_full - host_half) * 1024 * 1024 / max(full - half, 1)
        console.print(
            f"- host RSS {host0:,.1f} MiB before, {host_full:,.1f} MiB with {full:,} awaiting: "
            f"{host_full - host0:+,.1f} MiB, of which {host_full - host_half:+,.1f} MiB over the second "
            f"{full - half:,} ({per:+,.0f} bytes per awaiting instance). {waiting.suspended:,} of {full:,} "
            f"reached `suspended`; {waiting.start_rate:,.0f} awaiting starts/s; "
            f"{cost_text(waiting.cost, 'start')}."
        )

    wakeups = report.wakeups
    if wakeups is not None:
        table = Table(
            title="resolve-to-wake: ms after each Mesh.signal call began, until nats-server fired the "
            "instance's wake / the resumed invocation ran (on_resumed's own clock) / its finished record "
            "arrived here; 1 host"
        )
        for column in (
            "signals",
            "woke",
            "fired p50",
            "fired p99",
            "ran p50",
            "ran p90",
            "ran p99",
            "ran max",
            "finished p99",
        ):
            table.add_column(column, justify="left" if column == "signals" else "right")

        def row(what: str, woken: Woken) -> None:
            table.add_row(
                what,
                f"{len(woken.ran_ms)}" + ("" if len(woken.ran_ms) == woken.sent else f" of {woken.sent}"),
                f"{p(woken.fired_ms, 0.5):,.0f}",
                f"{p(woken.fired_ms, 0.99):,.0f}",
                *(f"{p(woken.ran_ms, q):,.0f}" for q in (0.5, 0.9, 0.99, 1.0)),
                f"{p(woken.done_ms, 0.99):,.0f}",
            )

        row(
            f"{wakeups.count:,} at once to {wakeups.count:,} of {wakeups.waiting:,} awaiting (every "
            f"call returned after {wakeups.returned_s * 1000:,.0f} ms)",
            wakeups.burst,
        )
        row(f"{wakeups.alone.sent} one at a time, after the burst", wakeups.alone)
        for w in report.wakes:
            if w.agent == "waker" and w.sync and w.ran_ms:
                table.add_row(
                    f"for comparison: {w.count:,} Python wakers due at once (suspend until an instant, "
                    "2 hosts; ms after due; ran = committed)",
                    f"{len(w.ran_ms)}",
                    f"{p(w.fired_ms, 0.5):,.0f}",
                    f"{p(w.fired_ms, 0.99):,.0f}",
                    f"{p(w.ran_ms, 0.5):,.0f}",
                    f"{p(w.ran_ms, 0.9):,.0f}",
                    f"{p(w.ran_ms, 0.99):,.0f}",
                    f"{p(w.ran_ms, 1.0):,.0f}",
                    "",
                )
        console.print(table)
        if wakeups.burst.ran_ms:
            last = max(wakeups.burst.ran_ms) / 1000
            console.print(
                f"- the burst: {wakeups.count / last:,.0f} wakes/s (its last resumed invocation ran "
                f"{last:.1f} s after the signals); {cost_text(wakeups.cost, 'signal')} (the signal, the "
                "poke and the wake tasks, the resumed invocation)."
            )

    http = report.http
    if http is not None and http.agent_ms:
        table = Table(
            title=f"one HTTP GET to a local server (tests/httpkit.py, HTTP/1.0: a new connection per "
            f"request), {len(http.agent_ms)} of each, one at a time, interleaved; ms"
        )
        for column in ("what", "p50", "p99", "minus the row compared, p50 / p99", "compared with"):
            table.add_column(column, justify="left" if column in ("what", "compared with") else "right")

        def http_row(
            what: str, samples: list[float], base: list[float] | None = None, against: str = ""
        ) -> None:
            diff = (
                f"{p(samples, 0.5) - p(base, 0.5):+,.2f} / {p(samples, 0.99) - p(base, 0.99):+,.2f}"
                if base
                else ""
            )
            table.add_row(what, f"{p(samples, 0.5):,.2f}", f"{p(samples, 0.99):,.2f}", diff, against)

        http_row("bare httpx.AsyncClient GET, in this process", http.bare_ms)
        http_row(
            "OutboundHttp.call alone (the host's code for an agent's call: grant check, resolve, "
            "address check, send, read), in this process",
            http.host_call_ms,
            http.bare_ms,
            "bare httpx",
        )
        http_row(
            "fetcher agent (http.fetch, await, on_resumed), end to end: Mesh.spawn -> its finished "
            f"record here; 1 host x {AWAITS_CONCURRENCY}, fsync on",
            http.agent_ms,
            http.host_call_ms,
            "OutboundHttp.call alone",
        )
        http_row("  1. spawn -> `suspended` record (the start invocation, its commit)", http.to_suspended_ms)
        http_row(
            "  2. -> response in the inbox (the http task: delivery, the call, storing it)",
            http.to_response_ms,
        )
        if http.to_fired_ms:
            http_row(
                "  3. -> nats-server fired the wake (the poke task, the schedule moved to now)",
                http.to_fired_ms,
            )
            http_row("  4. -> `finished` record (the wake task: on_resumed, its commit)", http.to_finished_ms)
        if http.early_ms:
            http_row(
                "  3. -> `finished` record (no schedule fired: the poke sends the wake; on_resumed, commit)",
                http.early_ms,
            )
        http_row(
            "Python echo, end to end: Mesh.spawn -> its finished record (one invocation, no await)",
            http.echo_ms,
        )
        more = [p(http.agent_ms, q) - p(http.echo_ms, q) for q in (0.5, 0.99)]
        table.add_row(
            "fetcher vs echo: the call, the await and the second invocation",
            "",
            "",
            f"{more[0]:+,.2f} / {more[1]:+,.2f}",
            "Python echo",
        )
        console.print(table)


def notes(report: Report, label: dict[str, str]) -> None:
    """The arithmetic behind the misses, from this run's own figures."""

    def find(agent: str, hosts: int, sync: bool) -> Throughput | None:
        return next(
            (t for t in report.throughput if (t.agent, t.hosts, t.sync) == (agent, hosts, sync)), None
        )

    stub = find("trivial (stub executor)", 1, True)
    if stub is not None:
        fsyncs = stub.stored_per_inv + 1  # + the ack, which deletes the task from its work queue
        console.print(
            f"- fsync on: an invocation stores {stub.stored_per_inv:.0f} messages and acks 1 work-queue "
            f"message, each fsynced alone: {fsyncs:.0f} fsyncs; the disk did {report.disk_fsync:,.0f} "
            f"fsync/s when probed (one file, back to back), so no host can get past about "
            f"{report.disk_fsync / fsyncs:,.0f} inv/s (the stub host, no wasm, made {stub.rate:,.0f} inv/s)."
        )
    for agent in ("trivial", "echo"):
        run = find(agent, 1, False)
        if run is None:
            continue
        alone = report.sandbox[(agent, 1)][1]
        total = run.host_loop_ms + run.host_threads_ms
        console.print(
            f"- fsync off, {label[agent]}, 1 host: {total:.2f} ms host CPU per invocation (event loop "
            f"{run.host_loop_ms:.2f}, wasm threads {run.host_threads_ms:.2f} vs {alone:.2f} for Sandbox.run "
            f"alone), i.e. at most {1000 / total:,.0f} inv/s per fully busy core; 2 threads of Sandbox.run "
            f"alone: {report.sandbox[(agent, 2)][0] / report.sandbox[(agent, 1)][0]:.2f}x one thread."
        )
    best = max((w.count / (max(w.ran_ms) / 1000) for w in report.wakes if w.ran_ms), default=float("nan"))
    console.print(
        f"- wakes: {TARGET_WAKE_N:,} due at once with p99 under {TARGET_WAKE_P99_MS:.0f} ms needs about "
        f"{0.99 * TARGET_WAKE_N / (TARGET_WAKE_P99_MS / 1000):,.0f} wakes/s; the best batch here ran "
        f"{best:,.0f}/s."
    )


def machine_line(workdir: Path, load_before: tuple[float, ...]) -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        server = subprocess.run([str(find_nats_server()), "--version"], capture_output=True, text=True).stdout
    except Exception:
        server = "nats-server ?"
    fs = "?"
    with contextlib.suppress(OSError):
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if str(workdir).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], f"{parts[2]} on {parts[0]}"
    v = importlib.metadata.version
    load_after = os.getloadavg()
    return (
        f"machine: {cpu}, {os.cpu_count()} cpus, {platform.machine()}; store {fs}; load avg "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; Python {platform.python_version()}, "
        f"dagr-wasm {v('dagr-wasm')}, wasmtime {v('wasmtime')}, nats-py {v('nats-py')}, {server.strip()}"
    )


async def amain(settings: Settings) -> None:
    load_before = os.getloadavg()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="dagr-bench-mesh-") as tmp:
        workdir = Path(tmp)
        with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
            agents = await asyncio.to_thread(prepare_agents, sandbox)
            say("sandbox floors ...")
            for agent in () if settings.awaits_only else ("trivial", "echo"):
                for threads in (1, 2):
                    report.sandbox[(agent, threads)] = await asyncio.to_thread(  # (inv/s, CPU ms/inv)
                        sandbox_floor,
                        sandbox,
                        agents[agent].wasm,
                        settings.sandbox_iterations[agent],
                        threads,
                    )
        if not settings.awaits_only:
            report.disk_fsync = await asyncio.to_thread(disk_floor, workdir)
            await run_mode(True, settings, agents, report, workdir)
            await run_mode(False, settings, agents, report, workdir)
        await run_awaits(settings, agents, report, workdir)
        if not settings.awaits_only:
            render(report, settings, agents)
        render_awaits(report)
        console.print(f"[dim]{machine_line(workdir, load_before)}[/dim]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small counts, no sweep (about 5 minutes on 2 cores)"
    )
    parser.add_argument(
        "--tasks", type=int, help="tasks per throughput measurement (default 3000; quick 1000)"
    )
    parser.add_argument("--concurrency", type=int, help="slots per host; skips the sweep")
    parser.add_argument(
        "--awaits-only", action="store_true", help="only issue 10's measurements (awaits, signals, HTTP)"
    )
    parser.add_argument("--null-host", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_host:
        asyncio.run(serve_null_host(args.null_host, args.concurrency or 8))
        return
    quick = args.quick
    sweep: tuple[int, ...] = () if quick or args.concurrency else (4, 8, 16, 32)
    default_n = args.concurrency or 16
    settings = Settings(
        quick=quick,
        tasks=args.tasks or (1000 if quick else 3000),
        sweep_tasks=1500,
        sweep=sweep,
        concurrency={"trivial": default_n, "echo": default_n},
        latency_s=4.0 if quick else 10.0,
        wake_counts=(1000,) if quick else (1000, 5000),
        sandbox_iterations={"trivial": 1000 if quick else 3000, "echo": 200 if quick else 600},
        await_waiting=2000 if quick else 10_000,
        await_signals=500 if quick else 1000,
        http_calls=50 if quick else 100,
        awaits_only=args.awaits_only,
    )
    asyncio.run(amain(settings))


if __name__ == "__main__":
    main()
