"""Where a host's time goes: py-spy samples one real ``dagr host`` process working through a backlog.

A fresh embedded nats-server (fsync on), one ``dagr host --concurrency N``, a backlog of M start
tasks of an agent (the trivial WAT component of bench_mesh, or the Python echo) queued while the
consumer is paused; then the consumer resumes and py-spy records the host (``--threads``, raw
collapsed stacks) until the backlog is drained. Prints the rate, then the functions with the most
samples, by thread role (the event loop, the wasm workers, the rest), self and inclusive, and
writes the collapsed stacks (for flamegraph.pl or speedscope) next to the summary.

    python benchmarks/profile_host.py [--agent trivial|echo|counter|writer] [--tasks 3000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mesh import (
    ROOT,
    WARMUP_TASKS,
    Agent,
    HostGroup,
    _rfc3339,
    drained,
    prepare_agents,
    spawn_many,
)

from dagr_wasm.build import build_agent
from dagr_wasm.manifest import Manifest, load_manifest
from dagr_wasm.mesh import EmbeddedServer, Mesh, ServerConfig
from dagr_wasm.mesh._client import ConnectOptions
from dagr_wasm.mesh._layout import consumer_name, tasks_stream
from dagr_wasm.paths import compiled_cache_dir
from dagr_wasm.sandbox import Sandbox

OUT = Path(__file__).resolve().parents[1] / "docs" / "bench"
#: Puts "k" = "k" in its instance's state, then returns its context.
WRITER_BODY = """
    (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                     (global.get $retarea))
    (call $ok (local.get $p1) (local.get $p2))
"""


def summarize(raw: Path, top: int) -> str:
    """Self and inclusive samples per function, per thread role, from py-spy's collapsed stacks."""
    by_role: dict[str, tuple[collections.Counter[str], collections.Counter[str], list[int]]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        count = int(count_text)
        names = [f.split(" (")[0] for f in frames[1:]]
        joined = ";".join(frames)
        if "_run_once" in joined or "run_forever" in joined:
            who = "event loop"
        elif "_worker" in joined or "WorkerPool" in joined or "ThreadPoolExecutor" in joined:
            who = "wasm workers"
        else:
            who = "other threads"
        self_counts, inclusive, total = by_role.setdefault(
            who, (collections.Counter(), collections.Counter(), [0])
        )
        total[0] += count
        if names:
            self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    lines = []
    for who, (self_counts, inclusive, total) in sorted(by_role.items(), key=lambda kv: -kv[1][2][0]):
        lines.append(f"\n{who}: {total[0]:,} samples")
        lines.append("  self:")
        for name, count in self_counts.most_common(top):
            lines.append(f"    {count / total[0]:6.1%}  {name}")
        lines.append("  inclusive:")
        for name, count in inclusive.most_common(top):
            lines.append(f"    {count / total[0]:6.1%}  {name}")
    return "\n".join(lines)


def py_spy(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    """py-spy recording every thread of ``pid`` into ``raw`` (collapsed stacks) until SIGINT."""
    command = ["py-spy", "record", "--pid", str(pid), "--threads", "--nonblocking", "--rate", "200"]
    return subprocess.Popen(
        [*command, "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def amain(
    agent: str, tasks: int, concurrency: int, top: int, *, profile: bool = True, stub: bool = False
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dagr-profile-"))
    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        agents = prepare_agents(sandbox)
        if agent == "writer":  # the trivial WAT agent writing one state key: an atomic batch each
            import watkit  # on the path once prepare_agents ran

            wasm = watkit.component(WRITER_BODY, extra=watkit.data(1024, "k"))
            sandbox.load(wasm)
            agents["writer"] = Agent("writer", "trivial WAT writing state", wasm, Manifest(name="writer"))
        if agent == "counter":  # a Python agent writing state: its commit is an atomic batch
            wasm = build_agent(ROOT / "agents" / "counter").wasm.read_bytes()
            sandbox.load(wasm)
            manifest = load_manifest(ROOT / "agents" / "counter" / "dagr.toml")
            agents["counter"] = Agent("counter", "Python counter (writes state)", wasm, manifest)
    chosen = agents[agent]
    with EmbeddedServer(config=ServerConfig(store_dir=workdir / "store", port=0, monitor_port=0)) as server:
        async with await Mesh.connect(ConnectOptions(servers=(server.url,))) as mesh:
            await mesh.ensure_layout()
            version = (await mesh.deploy(chosen.manifest, chosen.wasm)).version
            hosts = HostGroup(server.url, 1, concurrency, workdir, null=stub)
            hosts.start()
            try:
                await hosts.wait_started()
                js = mesh.js
                await spawn_many(js, chosen.name, version, WARMUP_TASKS)
                await drained(js, chosen.name, 120)
                stream, durable = tasks_stream(chosen.name), consumer_name(chosen.name)
                await js.pause_consumer(stream, durable, _rfc3339(datetime.now(UTC) + timedelta(hours=1)))
                await spawn_many(js, chosen.name, version, tasks)
                label = f"{agent}{'-stub' if stub else ''}"
                raw = OUT / f"profile-{label}.collapsed"
                OUT.mkdir(parents=True, exist_ok=True)
                spy = py_spy(hosts.pids()[0], raw) if profile else None
                await asyncio.sleep(1.0)  # py-spy attached
                started = time.monotonic()
                await js.resume_consumer(stream, durable)
                await drained(js, chosen.name, 600)
                seconds = time.monotonic() - started
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
            finally:
                await asyncio.to_thread(hosts.stop)
    head = (
        f"{chosen.label}{' (stub executor: no wasm)' if stub else ''}: {tasks:,} tasks in {seconds:.2f} s = "
        f"{tasks / seconds:,.0f} inv/s"
        f"{' under py-spy' if profile else ''} (1 host x {concurrency} slots, fsync on)"
    )
    if not profile:
        print(head)
        return
    summary = summarize(raw, top)
    text = f"{head}\n{summary}\n"
    (OUT / f"profile-{label}.txt").write_text(text)
    print(text)
    print(f"collapsed stacks: {raw}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", choices=("trivial", "echo", "counter", "writer"), default="trivial")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate-only", action="store_true", help="no py-spy: just the rate")
    parser.add_argument("--stub", action="store_true", help="the host with bench_mesh's stub executor")
    args = parser.parse_args()
    asyncio.run(
        amain(args.agent, args.tasks, args.concurrency, args.top, profile=not args.rate_only, stub=args.stub)
    )


if __name__ == "__main__":
    main()
