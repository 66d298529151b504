"""Class 4: blocking WASI calls. No guest runs past its deadline whatever it waits on, and a waiting
or spinning agent does not hold up the agents of other specialists.

Before: ``time.sleep(4)`` ran 4 s against a 1 s deadline, a blocking poll 3 s against 200 ms, and
with one wasm thread per host a single sleeping task stalled every specialist (an echo waited 11 s).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from arena import CLOCK_IMPORTS, CLOCK_WORLD, Arena, assert_contained, attacker_wit, wat_agent

from dagr_wasm.invocation import ErrorKind, Invocation, Start, Status
from dagr_wasm.manifest import load_manifest
from dagr_wasm.policy import Limits
from dagr_wasm.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]

# subscribe-duration(1 hour), then block on it.
BLOCK_AN_HOUR = """
    (call $block (call $subscribe (i64.const 3600000000000)))
    (call $ok (i32.const 0) (i32.const 0))
"""
# poll([subscribe-duration(1 hour)])
POLL_AN_HOUR = """
    (i32.store (i32.const 2048) (call $subscribe (i64.const 3600000000000)))
    (call $poll (i32.const 2048) (i32.const 1) (global.get $retarea))
    (call $ok (i32.const 0) (i32.const 0))
"""
# Many short blocks, each within the deadline, together far past it.
MANY_NAPS = """
    (local.set $i (i32.const 1000))
    (loop $again
      (call $block (call $subscribe (i64.const 50000000)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $again (local.get $i)))
    (call $ok (i32.const 0) (i32.const 0))
"""


def _clock_agent(tmp_path: Path, body: str) -> bytes:
    return wat_agent(
        body, imports=CLOCK_IMPORTS, wit=attacker_wit(tmp_path, imports=CLOCK_WORLD), locals_="(local $i i32)"
    )


@pytest.mark.parametrize(
    ("body", "what"), [(BLOCK_AN_HOUR, "block"), (POLL_AN_HOUR, "poll"), (MANY_NAPS, "naps")]
)
def test_a_wasi_wait_never_outlives_the_deadline(
    sandbox: Sandbox, tmp_path: Path, body: str, what: str
) -> None:
    agent = sandbox.load(_clock_agent(tmp_path, body), source=what)
    started = time.monotonic()
    out = sandbox.run(
        agent,
        Invocation(
            task_id="t", instance_id="i", specialist="s", event=Start(""), limits=Limits(timeout_ms=300)
        ),
    )
    elapsed = time.monotonic() - started
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.DEADLINE, out.error
    assert "deadline" in out.error.message
    assert elapsed < 0.6, f"{what}: ran {elapsed:.2f} s against a 300 ms deadline"
    assert out.effects == ()


def test_a_wait_within_the_deadline_is_served(sandbox: Sandbox, tmp_path: Path) -> None:
    body = """
        (call $block (call $subscribe (i64.const 20000000)))
        (call $ok (i32.const 0) (i32.const 0))
    """
    agent = sandbox.load(_clock_agent(tmp_path, body))
    started = time.monotonic()
    out = sandbox.run(agent, Invocation(task_id="t", instance_id="i", specialist="s", event=Start("")))
    assert out.status is Status.OK, out.error
    assert time.monotonic() - started >= 0.02


@pytest.mark.parametrize("context", ["sleep:4", "select:4", "naps:4"])
async def test_python_sleep_and_select_stop_at_the_deadline(
    arena: Arena, built: dict[str, Path], context: str
) -> None:
    manifest = load_manifest(ROOT / "agents" / "hostile-sleep" / "dagr.toml")
    name = await arena.deploy(built["hostile-sleep"].read_bytes(), limits=manifest.limits)
    before = await arena.snapshot()
    started = time.monotonic()
    status = await arena.run(name, context)
    # Two attempts of at most 1 s each (the deadline), and the retry in between.
    assert time.monotonic() - started < 6
    await assert_contained(arena, status, before=before, reason="deadline")
    for record in await arena.journal(status["id"]):
        assert record.get("wall_ms", 0) < 1500, record  # no attempt ran past 1 s by much


async def test_sleepers_and_spinners_do_not_hold_up_another_specialist(
    arena: Arena, built: dict[str, Path]
) -> None:
    sleeper = await arena.deploy(built["hostile-sleep"].read_bytes(), limits=Limits(timeout_ms=3000))
    spinner = await arena.deploy(built["hostile-loop"].read_bytes(), limits=Limits(timeout_ms=3000))
    await arena.benign_still_served()  # compiled and warm
    # Four hostile invocations at once, each holding a worker for its whole 3 s deadline.
    hostile = [await arena.mesh.spawn(sleeper, "naps:2.9") for _ in range(2)]
    hostile += [await arena.mesh.spawn(spinner, "") for _ in range(2)]
    await asyncio.sleep(0.3)  # they are running
    started = time.monotonic()
    await arena.benign_still_served()
    waited = time.monotonic() - started
    assert waited < 1.5, f"a benign agent waited {waited:.2f} s behind four hostile ones"
    for instance in hostile:
        status = await arena.mesh.status(instance)
        assert status is not None and status.state != "finished", status
