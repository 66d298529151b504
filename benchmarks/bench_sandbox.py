"""Benchmark: what the sandbox costs per invocation, next to bare wasmtime-py (the floor).

For a trivial WAT component and for the Python ``echo`` agent, measured in the same run:

- floor: a new Store (fuel and epoch deadline set, as this engine requires), instantiate, call
  ``handle``, ``post_return`` — the least a host must do per fresh instance;
- sandbox: ``Sandbox.run`` — the same plus limits, an empty WASI context, the capability recorder,
  log capture and the ``Outcome``.

Run with ``just bench-sandbox`` (or ``python benchmarks/bench_sandbox.py [--iterations N]``).
Targets (issue 2): sandbox p50 <= 1.25x floor for the trivial component; Python agent p50 < 3.5 ms.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import watkit  # noqa: E402  (test tooling: builds WAT agents of the real world)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from wasmtime import Store, WasiConfig  # noqa: E402
from wasmtime.component import ComponentInstanceType, FuncType, Linker, Variant  # noqa: E402

from dagr_wasm.build import build_agent  # noqa: E402
from dagr_wasm.paths import compiled_cache_dir  # noqa: E402
from dagr_wasm.sandbox import AgentComponent, Invocation, Sandbox, Start, Status  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(fn: Callable[[], None], iterations: int) -> list[float]:
    for _ in range(min(200, iterations // 5)):
        fn()  # warm up: caches, allocator, branch predictors
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def floor_linker(sandbox: Sandbox, agents: list[AgentComponent]) -> Linker:
    """WASI plus do-nothing dagr imports: instantiable, but none of the sandbox's bookkeeping.

    The dagr functions each agent imports are read from its component type, so the floor links any
    contract version (a stub is only ever instantiated, never called, by a start that returns)."""
    engine = sandbox._engine
    linker = Linker(engine)
    linker.add_wasip2()
    wanted: dict[str, set[str]] = {}
    for agent in agents:
        for name, item in agent.component.type.imports(engine).items():
            if not name.startswith("dagr:agent/"):
                continue
            ty = item.ty
            if isinstance(ty, ComponentInstanceType):
                functions = wanted.setdefault(name, set())
                functions.update(n for n, e in ty.exports(engine).items() if isinstance(e.ty, FuncType))
    with linker.root() as root:
        for interface, names in wanted.items():
            with root.add_instance(interface) as instance:
                for function in sorted(names):
                    instance.add_func(function, lambda _store, *_args: None)
    return linker


def floor_call(sandbox: Sandbox, linker: Linker, agent: AgentComponent, context: str, *, wasi: bool) -> None:
    store = Store(sandbox._engine)
    if wasi:
        store.set_wasi(WasiConfig())
    store.set_fuel(10_000_000_000)
    store.set_epoch_deadline(1_000_000)
    instance = linker.instantiate(store, agent.component)
    handle = instance.get_func(store, agent.handle_index)
    assert handle is not None
    handle(store, Variant("start", context))
    handle.post_return(store)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="invocations per measurement")
    args = parser.parse_args()
    console = Console(width=150)

    with Sandbox(cache_dir=compiled_cache_dir()) as sandbox:
        trivial = sandbox.load(
            watkit.component("(call $ok (local.get $p1) (local.get $p2))"), source="trivial"
        )
        console.print("[dim]building agents/echo (cached by source hash) ...[/dim]")
        echo = sandbox.load_file(build_agent(ROOT / "agents" / "echo").wasm)
        linker = floor_linker(sandbox, [trivial, echo])
        rows = []
        for name, agent, wasi, iterations in (
            ("trivial WAT component", trivial, False, args.iterations),
            ("Python echo agent", echo, True, max(200, args.iterations // 3)),
        ):
            invocation = Invocation(
                task_id="bench", instance_id="bench", specialist="echo", event=Start("hi")
            )
            check = sandbox.run(agent, invocation)
            assert check.status is Status.OK, check
            floor = measure(lambda a=agent, w=wasi: floor_call(sandbox, linker, a, "hi", wasi=w), iterations)
            runs = measure(lambda a=agent, inv=invocation: (sandbox.run(a, inv), None)[1], iterations)
            rows.append((name, floor, runs))

    table = Table(title="dagr sandbox: one fresh instance per invocation (single thread)")
    for column in ("component", "floor p50", "floor p99", "floor inv/s", "sandbox p50", "sandbox p99",
                   "sandbox inv/s", "p50 ratio"):  # fmt: skip
        table.add_column(column, justify="right" if column != "component" else "left")
    for name, floor, runs in rows:
        f50, r50 = statistics.median(floor), statistics.median(runs)
        table.add_row(
            name,
            f"{f50 * 1e6:.0f} us",
            f"{percentile(floor, 0.99) * 1e6:.0f} us",
            f"{len(floor) / sum(floor):,.0f}",
            f"{r50 * 1e6:.0f} us",
            f"{percentile(runs, 0.99) * 1e6:.0f} us",
            f"{len(runs) / sum(runs):,.0f}",
            f"{r50 / f50:.2f}x",
        )
    console.print(table)
    trivial_ratio = statistics.median(rows[0][2]) / statistics.median(rows[0][1])
    python_p50_ms = statistics.median(rows[1][2]) * 1000
    console.print(
        f"targets: trivial p50 ratio {trivial_ratio:.2f}x (<= 1.25x: "
        f"{'met' if trivial_ratio <= 1.25 else 'MISSED'}); Python agent p50 {python_p50_ms:.2f} ms "
        f"(< 3.5 ms: {'met' if python_p50_ms < 3.5 else 'MISSED'})"
    )
    console.print(f"[dim]machine: {platform.machine()}, {platform.processor() or 'cpu n/a'}, "
                  f"Python {platform.python_version()}, {_cpu_model()}[/dim]")  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


if __name__ == "__main__":
    main()
