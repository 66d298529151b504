"""The classics, on a live host: loops, bombs, floods, probes, refused calls, malformed modules. Each
is contained with its reason recorded, commits nothing, and the host keeps serving.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import watkit
from arena import Arena, assert_contained, attacker_wit, wat_agent
from attacks import PUBLISH_TO_CONTEXT, SPAWN_REPLY_TO_CONTEXT, agent
from wasmtime import wat2wasm

from dagr_wasm.errors import ModuleError
from dagr_wasm.invocation import ErrorKind, Invocation, Start, Status
from dagr_wasm.manifest import load_manifest
from dagr_wasm.payload import decode_cbor
from dagr_wasm.policy import Limits
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]

PYTHON_ATTACKS: dict[str, str | tuple[str, ...]] = {
    "hostile-loop": ("deadline", "fuel"),
    "hostile-memory": "memory",
    "hostile-recursion": "stack",
    "hostile-log-flood": "",
    "hostile-giant-result": ("max_result_bytes", "too much data"),
    "hostile-denied-publish": "not granted",
}


@pytest.mark.parametrize("name", list(PYTHON_ATTACKS))
async def test_a_python_attacker_is_contained_on_a_live_host(
    arena: Arena, built: dict[str, Path], name: str
) -> None:
    manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
    specialist = await arena.deploy(built[name].read_bytes(), grants=manifest.grants, limits=manifest.limits)
    before = await arena.snapshot()
    status = await arena.run(specialist, timeout_s=60)
    await assert_contained(arena, status, before=before, reason=PYTHON_ATTACKS[name])


@pytest.mark.parametrize("name", ["hostile-read-file", "hostile-socket", "hostile-env"])
async def test_wasi_probes_find_nothing(arena: Arena, built: dict[str, Path], name: str) -> None:
    specialist = await arena.deploy(built[name].read_bytes())
    status = await arena.run(specialist)
    assert status["state"] == "finished", status
    found = decode_cbor(status["ok"])
    text = repr(found)
    for leak in ("READ:", "LISTED:", "WROTE", "CONNECTED", "RESOLVED", "root:", "PATH", "HOME"):
        assert leak not in text, text
    await arena.benign_still_served()


WAT_ATTACKS = {
    "infinite loop": (
        "(loop $l (br $l)) (call $ok (i32.const 0) (i32.const 0))",
        Limits(timeout_ms=300),
        "deadline",
    ),
    "fuel bomb": (
        "(loop $l (br $l)) (call $ok (i32.const 0) (i32.const 0))",
        Limits(fuel=10_000_000),
        "fuel",
    ),
    "memory bomb": (
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
        Limits(memory_bytes=32 * 1024 * 1024),
        "",
    ),
    "log flood": (
        "(loop $l (call $log (i32.const 1) (i32.const 1024) (i32.const 1)) (br $l)) unreachable",
        Limits(),
        "max_host_calls",
    ),
    "stack overflow": ("(call $recurse) (call $ok (i32.const 0) (i32.const 0))", Limits(), "call stack"),
}

RECURSE = "  (func $recurse (call $recurse))\n"


@pytest.mark.parametrize("case", list(WAT_ATTACKS))
async def test_a_wat_attacker_is_contained(arena: Arena, case: str) -> None:
    body, limits, reason = WAT_ATTACKS[case]
    name = await arena.deploy(agent(body, extra=RECURSE), limits=limits)
    before = await arena.snapshot()
    status = await arena.run(name)
    await assert_contained(arena, status, before=before, reason=reason)


async def test_an_ungranted_publish_and_spawn_are_refused(arena: Arena) -> None:
    for wasm, context, reason in (
        (agent(PUBLISH_TO_CONTEXT), "agents.main.elsewhere", "not granted"),
        (agent(SPAWN_REPLY_TO_CONTEXT), "agents.main.x", "not granted"),
    ):
        name = await arena.deploy(wasm)
        before = await arena.snapshot()
        status = await arena.run(name, context)
        await assert_contained(arena, status, before=before, reason=reason, state="failed")


EXIT_IMPORT = '  (import "wasi:cli/exit@0.2.0" "exit" (func $exit (param i32)))\n'
RANDOM_IMPORT = '  (import "wasi:random/random@0.2.0" "get-random-bytes" (func $random (param i64 i32)))\n'


def test_exit_ends_the_invocation_with_nothing_committed(sandbox: Sandbox, tmp_path: Path) -> None:
    wit = attacker_wit(tmp_path, imports="    import wasi:cli/exit@0.2.0;\n")
    body = """
        (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                         (global.get $retarea))
        (call $exit (i32.const 0))
        (call $ok (i32.const 0) (i32.const 0))
    """
    out = sandbox.run(
        sandbox.load(wat_agent(body, imports=EXIT_IMPORT, extra=watkit.data(1024, "k"), wit=wit)),
        Invocation(task_id="t", instance_id="i", specialist="s", event=Start("")),
    )
    assert out.status is Status.ERROR and out.error is not None and "called exit" in out.error.message
    assert out.committable is False


def test_a_huge_random_request_is_refused_without_allocating(sandbox: Sandbox, tmp_path: Path) -> None:
    wit = attacker_wit(tmp_path, imports="    import wasi:random/random@0.2.0;\n")
    body = "(call $random (i64.const 1099511627776) (global.get $retarea)) (call $ok (i32.const 0) (i32.const 0))"
    started = time.monotonic()
    out = sandbox.run(
        sandbox.load(wat_agent(body, imports=RANDOM_IMPORT, wit=wit)),
        Invocation(task_id="t", instance_id="i", specialist="s", event=Start("")),
    )
    assert out.status is Status.ERROR and out.error is not None and out.error.kind is ErrorKind.QUOTA
    assert "random bytes" in out.error.message
    assert time.monotonic() - started < 1


MALFORMED = {
    "not wasm": (b"#!/bin/sh\nrm -rf /\n", "not WebAssembly"),
    "empty": (b"", "not WebAssembly"),
    "a core module": (wat2wasm("(module)"), "core wasm module"),
    "truncated component": (
        watkit.component("(call $ok (i32.const 0) (i32.const 0))")[:200],
        "does not compile",
    ),
    "garbage after a component header": (b"\x00asm\x0d\x00\x01\x00" + b"\xff" * 4096, "does not compile"),
    "oversized": (b"\x00asm\x0d\x00\x01\x00" + b"\x00" * (65 * 1024 * 1024), "more than the"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_module_is_refused_with_the_reason(sandbox: Sandbox, case: str) -> None:
    wasm, reason = MALFORMED[case]
    with pytest.raises(ModuleError, match=reason) as refused:
        sandbox.load(wasm, source=case)
    assert refused.value.exit_code == 2


async def test_a_flood_of_one_specialist_leaves_room_for_another(
    arena: Arena, built: dict[str, Path]
) -> None:
    # 40 slow tasks of one specialist: it may hold at most half the host's slots.
    slow = await arena.deploy(built["hostile-sleep"].read_bytes(), limits=Limits(timeout_ms=2000))
    await arena.benign_still_served()
    flood = [await arena.mesh.spawn(slow, "naps:1.9") for _ in range(40)]
    started = time.monotonic()
    await arena.benign_still_served()
    assert time.monotonic() - started < 2, "the flood held every slot"
    for instance in flood:
        await arena.settled(instance, timeout_s=120)
