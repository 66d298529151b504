"""Classes 1 and 3: linear memory and loading. No guest reaches host memory, a manifest cannot ask for
more than the host allows, and loading a module costs a host a moment, never an invocation's worth.

Before: in measured-memory mode (``dagr run``) a memory grew by ``mprotect`` past the mapping it
had reserved, so a 64-bit memory with a large ``memory_bytes`` wrote into the host's heap; and the
trial instantiation at load ran without limits (2 x 512 MiB touched inside ``Sandbox.load``, 5 s
burned at every load, on every host at once).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import watkit
from arena import Arena, wat_agent
from wasmtime import Module, WasmtimeError, wat2wasm

from dagr_wasm.errors import ModuleError
from dagr_wasm.invocation import Invocation, Start, Status
from dagr_wasm.policy import GIB, HOST_CEILING, MIB, Limits
from dagr_wasm.sandbox import EngineSettings, Sandbox

PAGE = 65536

# memory.grow by the context's length in pages; err "k" if refused; else write a marker at the top
# of the new memory and read it back.
GROW_AND_TOUCH = """
    (local.set $i (memory.grow (local.get $p2)))
    (if (i32.eq (local.get $i) (i32.const -1))
      (then (return (call $err (i32.const 1024) (i32.const 1)))))
    (i32.store (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4)) (i32.const 0x64616772))
    (if (i32.ne (i32.load (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4)))
                (i32.const 0x64616772))
      (then unreachable))
    (call $ok (i32.const 0) (i32.const 0))
"""


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _grow(sandbox: Sandbox, pages: int, limits: Limits) -> Status:
    agent = sandbox.load(wat_agent(GROW_AND_TOUCH, extra=watkit.data(1024, "k"), locals_="(local $i i32)"))
    invocation = Invocation(
        task_id="t", instance_id="i", specialist="s", event=Start("x" * pages), limits=limits
    )
    return sandbox.run(agent, invocation).status


def test_the_engine_refuses_64_bit_memories(sandbox: Sandbox) -> None:
    with pytest.raises(WasmtimeError, match="memory64"):
        Module(sandbox._engine, wat2wasm("(module (memory i64 1))"))


@pytest.mark.parametrize("measure", [False, True])
def test_a_manifest_cannot_raise_memory_past_the_host_ceiling(tmp_path: Path, measure: bool) -> None:
    settings = EngineSettings(measure_memory=measure)
    with Sandbox(
        cache_dir=tmp_path,
        settings=settings,
        ceiling=HOST_CEILING.model_copy(update={"memory_bytes": 64 * MIB}),
    ) as sb:
        greedy = Limits(memory_bytes=4 * GIB)
        assert _grow(sb, 1000, greedy) is Status.OK  # 1 + 1000 pages: ~62.6 MiB, within the ceiling
        assert _grow(sb, 1024, greedy) is Status.FAILED  # 1 + 1024 pages > 64 MiB: refused to the guest


def test_measured_memory_grows_only_inside_its_own_mapping(tmp_path: Path) -> None:
    # A tiny reservation makes every memory "dynamic": the meter must reserve the limit itself and
    # never grow in place past what it mapped (the old meter mprotected whatever came next).
    settings = EngineSettings(measure_memory=True)
    with Sandbox(cache_dir=tmp_path, settings=settings) as sb:
        limits = Limits(memory_bytes=256 * MIB)
        assert _grow(sb, 4000, limits) is Status.OK  # the marker at the very top reads back
        assert _grow(sb, 4096, limits) is Status.FAILED


START_SPINS = """
(module
  (memory (export "memory") 1)
  (func $spin (loop $l (br $l)))
  (start $spin)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
  (func (export "dagr:agent/handler@0.1.0#handle")
        (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 0)))
"""

START_TOUCHES = """
(module
  (memory (export "memory") 1)
  (func $touch
    (drop (memory.grow (i32.const 8192)))
    (i32.store (i32.const 536805376) (i32.const 1))
    (drop (memory.grow (i32.const 8192)))
    (i32.store (i32.const 1073676288) (i32.const 1)))
  (start $touch)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
  (func (export "dagr:agent/handler@0.1.0#handle")
        (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 0)))
"""

HUGE_INITIAL = START_SPINS.replace('(memory (export "memory") 1)', '(memory (export "memory") 4096)').replace(
    "(start $spin)", ""
)


@pytest.mark.parametrize(
    ("wat", "why"),
    [
        (START_SPINS, "spins in its start function"),
        (START_TOUCHES, "touches 1 GiB at start"),
        (HUGE_INITIAL, "starts with 256 MiB"),
    ],
)
def test_loading_is_bounded_in_time_and_memory(sandbox: Sandbox, wat: str, why: str) -> None:
    wasm = watkit.component_from_core_wat(wat)
    rss = _rss_bytes()
    started = time.monotonic()
    with pytest.raises(ModuleError, match="within the limits of a load"):
        sandbox.load(wasm, source=why)
    assert time.monotonic() - started < 3, f"{why}: the load took too long"
    assert _rss_bytes() - rss < 200 * MIB, f"{why}: the load made the host touch memory"


async def test_a_module_that_spins_at_load_does_not_stall_a_host(arena: Arena) -> None:
    # Deployed straight into the registry (as an attacker with write access would): every host
    # loads it when it sees the deploy. The host must shrug it off and keep serving.
    await arena.deploy(watkit.component_from_core_wat(START_SPINS))
    started = time.monotonic()
    await arena.benign_still_served()
    assert time.monotonic() - started < 5
