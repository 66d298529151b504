"""Every per-invocation limit, at its edge: exactly at the limit passes, one over fails.

The agents are tiny WAT components of the real dagr:agent world (see watkit.py). The context
string of the start event doubles as the test's knob: its length is how many times a body loops.
"""

from __future__ import annotations

import pytest
import watkit

from dagr_wasm.sandbox import (
    AgentComponent,
    Capabilities,
    ErrorKind,
    Grants,
    Invocation,
    Limits,
    Outcome,
    Publish,
    Sandbox,
    Spawn,
    Start,
    StatePut,
    Status,
)

# --- bodies ------------------------------------------------------------------------------------

ECHO = "(call $ok (local.get $p1) (local.get $p2))"

LOG_CONTEXT = """
    (call $log (i32.const 1) (local.get $p1) (local.get $p2))
    (call $ok (i32.const 0) (i32.const 0))
"""

# Loops len(context) times; $i counts down.
LOOP = """
    (local.set $i (local.get $p2))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $i)))
        {step}
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br $again)))
    (call $ok (i32.const 0) (i32.const 0))
"""

# After a call with a retptr, return the host's error message if it refused.
RETURN_IF_REFUSED = """
        (if (i32.load8_u (global.get $retarea))
          (then (return (call $err (i32.load offset=8 (global.get $retarea))
                                   (i32.load offset=12 (global.get $retarea))))))
"""

PUT_CONTEXT = (
    """
    (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (local.get $p1) (local.get $p2)
                     (global.get $retarea))
"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.const 0) (i32.const 0))"
)

PUT_STEP = (
    """
        (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                         (global.get $retarea))"""
    + RETURN_IF_REFUSED
)

PUBLISH_STEP = (
    """
        (call $publish (i32.const 1040) (i32.const 3) (i32.const 1024) (i32.const 1) (global.get $retarea))"""
    + RETURN_IF_REFUSED
)

SPAWN_STEP = (
    """
        (call $spawn (i32.const 1056) (i32.const 5) (i32.const 1024) (i32.const 1)
                     (i32.const 0) (i32.const 0) (i32.const 0) (global.get $retarea))"""
    + RETURN_IF_REFUSED
)

STRINGS = watkit.data(1024, "k") + watkit.data(1040, "a.b") + watkit.data(1056, "child")


def build(sandbox: Sandbox, body: str, **kwargs: object) -> AgentComponent:
    extra = str(kwargs.pop("extra", "")) + STRINGS
    return sandbox.load(watkit.component(body, extra=extra, locals_="(local $i i32)", **kwargs))


def run(
    sandbox: Sandbox,
    agent: AgentComponent,
    context: str = "",
    *,
    limits: Limits | None = None,
    grants: Grants | None = None,
) -> Outcome:
    invocation = Invocation(
        task_id="task-1",
        instance_id="inst-1",
        specialist="wat",
        event=Start(context),
        limits=limits or Limits(),
        capabilities=Capabilities(own=grants or Grants()),
        now_unix_ms=1_000_000,
    )
    return sandbox.run(agent, invocation)


# --- fuel --------------------------------------------------------------------------------------


def test_fuel_exactly_at_limit_passes_one_less_fails(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOOP.format(step="(nop)"))
    used = run(sandbox, agent, "x" * 500).fuel_used
    assert used > 500

    # wasmtime checks fuel at loop back-edges and calls, not after the last block, so the least
    # fuel that completes can sit a little under what a run reports as used: find the edge.
    def passes(fuel: int) -> bool:
        return run(sandbox, agent, "x" * 500, limits=Limits(fuel=fuel)).status is Status.OK

    low, high = 1, used
    while low < high:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid + 1
    edge = low
    assert used - 20 <= edge <= used

    at_limit = run(sandbox, agent, "x" * 500, limits=Limits(fuel=edge))
    assert at_limit.status is Status.OK

    over = run(sandbox, agent, "x" * 500, limits=Limits(fuel=edge - 1))
    assert over.status is Status.ERROR
    assert over.error is not None and over.error.kind is ErrorKind.OUT_OF_FUEL
    assert f"limit {edge - 1}" in over.error.message
    assert over.committable is False


def test_infinite_loop_stops_on_fuel_and_the_engine_runs_on(sandbox: Sandbox) -> None:
    spin = build(sandbox, "(loop $l (br $l)) (call $ok (i32.const 0) (i32.const 0))")
    out = run(sandbox, spin, limits=Limits(fuel=50_000_000, timeout_ms=60_000))
    assert out.error is not None and out.error.kind is ErrorKind.OUT_OF_FUEL
    echo = build(sandbox, ECHO)
    assert run(sandbox, echo, "still alive").result == b"still alive"


# --- wall clock --------------------------------------------------------------------------------


def test_deadline_stops_a_loop_that_fuel_would_allow(sandbox: Sandbox) -> None:
    spin = build(sandbox, "(loop $l (br $l)) (call $ok (i32.const 0) (i32.const 0))")
    out = run(sandbox, spin, limits=Limits(fuel=10**15, timeout_ms=150))
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.DEADLINE
    assert "150 ms" in out.error.message
    # Epoch deadlines are never early: the run lasted at least the timeout.
    assert out.wall_time_s >= 0.150


def test_finite_work_within_the_deadline_passes(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOOP.format(step="(nop)"))
    out = run(sandbox, agent, "x" * 1000, limits=Limits(timeout_ms=5_000))
    assert out.status is Status.OK


# --- memory ------------------------------------------------------------------------------------

GROW = """
    (if (i32.eq (memory.grow (local.get $p2)) (i32.const -1))
      (then (return (call $err (i32.const 1024) (i32.const 1)))))
    (call $ok (i32.const 0) (i32.const 0))
"""


def test_memory_growth_exactly_to_the_limit_passes_one_page_more_is_refused(sandbox: Sandbox) -> None:
    agent = build(sandbox, GROW, pages=2)
    page = 65536
    limits = Limits(memory_bytes=6 * page)
    at_limit = run(sandbox, agent, "x" * 4, limits=limits)  # 2 + 4 pages = the limit
    assert at_limit.status is Status.OK

    over = run(sandbox, agent, "x" * 5, limits=limits)  # one page more: memory.grow returns -1
    assert over.status is Status.FAILED
    assert over.failure == "k"


def test_initial_memory_over_the_limit_fails_to_instantiate(sandbox: Sandbox) -> None:
    agent = build(sandbox, ECHO, pages=8)
    page = 65536
    assert run(sandbox, agent, "ok", limits=Limits(memory_bytes=8 * page)).status is Status.OK
    out = run(sandbox, agent, "ok", limits=Limits(memory_bytes=7 * page))
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.MEMORY_LIMIT
    assert "memory_bytes=458752" in out.error.message


# --- instances, tables, memories ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_instances", "max_tables", "max_memories", "max_table_elements"])
def test_structural_caps_exactly_at_the_need_pass_one_less_fails(sandbox: Sandbox, field: str) -> None:
    agent = build(sandbox, PUT_CONTEXT)
    # Find the least value that instantiates; the component's real need, whatever wit-component made.
    need = next(n for n in range(0, 200) if _instantiates(sandbox, agent, **{field: n}))
    if need == 0:
        pytest.skip(f"this component needs no {field}")
    out = run(sandbox, agent, "v", limits=Limits(**{field: need - 1}))  # type: ignore[arg-type]
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.QUOTA
    assert run(sandbox, agent, "v", limits=Limits(**{field: need})).status is Status.OK  # type: ignore[arg-type]


def _instantiates(sandbox: Sandbox, agent: AgentComponent, **limit: int) -> bool:
    try:
        limits = Limits(**limit)  # type: ignore[arg-type]
    except ValueError:
        return False
    return run(sandbox, agent, "v", limits=limits).status is Status.OK


# --- host calls --------------------------------------------------------------------------------


def test_host_calls_exactly_at_the_limit_pass_one_more_is_refused(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOOP.format(step=PUT_STEP))
    ok = run(sandbox, agent, "x" * 7, limits=Limits(max_host_calls=7))
    assert ok.status is Status.OK
    assert ok.host_calls == 7
    assert len([e for e in ok.effects if isinstance(e, StatePut)]) == 7

    over = run(sandbox, agent, "x" * 8, limits=Limits(max_host_calls=7))
    assert over.status is Status.FAILED  # the guest handled the refusal by returning err
    assert over.failure is not None and "max_host_calls=7" in over.failure


def test_a_refused_call_the_guest_does_not_handle_is_a_quota_error(sandbox: Sandbox) -> None:
    body = """
        (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                         (global.get $retarea))
        (if (i32.load8_u (global.get $retarea)) (then unreachable))
        (call $ok (i32.const 0) (i32.const 0))
    """
    agent = build(sandbox, body)
    out = run(sandbox, agent, limits=Limits(max_host_calls=0))
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.QUOTA
    assert "max_host_calls=0" in out.error.message
    assert out.committable is False


# --- bytes: logs, results, writes ----------------------------------------------------------------


def test_log_bytes_exactly_at_the_limit_are_kept_one_more_is_dropped(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOG_CONTEXT)
    kept = run(sandbox, agent, "0123456789", limits=Limits(max_log_bytes=10))
    assert [line.message for line in kept.logs] == ["0123456789"]
    assert kept.log_bytes_dropped == 0

    dropped = run(sandbox, agent, "0123456789A", limits=Limits(max_log_bytes=10))
    assert dropped.status is Status.OK  # a log flood is contained, not fatal
    assert dropped.logs == ()
    assert dropped.log_bytes_dropped == 11


def test_result_bytes_exactly_at_the_limit_pass_one_more_fails(sandbox: Sandbox) -> None:
    agent = build(sandbox, ECHO)
    ok = run(sandbox, agent, "x" * 100, limits=Limits(max_result_bytes=100))
    assert ok.status is Status.OK and ok.result == b"x" * 100

    over = run(sandbox, agent, "x" * 101, limits=Limits(max_result_bytes=100))
    assert over.status is Status.ERROR
    assert over.error is not None and over.error.kind is ErrorKind.QUOTA
    assert "101 bytes" in over.error.message


def test_write_bytes_exactly_at_the_limit_pass_one_more_is_refused(sandbox: Sandbox) -> None:
    agent = build(sandbox, PUT_CONTEXT)
    # A put costs len(key) + len(value): key "k" is 1 byte.
    ok = run(sandbox, agent, "v" * 9, limits=Limits(max_write_bytes=10))
    assert ok.status is Status.OK
    over = run(sandbox, agent, "v" * 10, limits=Limits(max_write_bytes=10))
    assert over.status is Status.FAILED
    assert over.failure is not None and "max_write_bytes=10" in over.failure


def test_spawns_exactly_at_the_limit_pass_one_more_is_refused(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOOP.format(step=SPAWN_STEP))
    grants = Grants(spawn=("child",))
    ok = run(sandbox, agent, "xxx", limits=Limits(max_spawns=3), grants=grants)
    assert ok.status is Status.OK
    spawns = [e for e in ok.effects if isinstance(e, Spawn)]
    assert [s.specialist for s in spawns] == ["child"] * 3
    assert len({s.child_id for s in spawns}) == 3

    over = run(sandbox, agent, "xxxx", limits=Limits(max_spawns=3), grants=grants)
    assert over.status is Status.FAILED
    assert over.failure is not None and "max_spawns=3" in over.failure


def test_publishes_exactly_at_the_limit_pass_one_more_is_refused(sandbox: Sandbox) -> None:
    agent = build(sandbox, LOOP.format(step=PUBLISH_STEP))
    grants = Grants(publish=("a.*",))
    ok = run(sandbox, agent, "xx", limits=Limits(max_publishes=2), grants=grants)
    assert [e for e in ok.effects if isinstance(e, Publish)] == [Publish("a.b", b"k")] * 2
    over = run(sandbox, agent, "xxx", limits=Limits(max_publishes=2), grants=grants)
    assert over.status is Status.FAILED
    assert over.failure is not None and "max_publishes=2" in over.failure


# --- measured memory (the `dagr run` engine) ---------------------------------------------------------


@pytest.fixture(scope="module")
def measuring() -> object:
    from dagr_wasm.sandbox import EngineSettings

    with Sandbox(settings=EngineSettings(measure_memory=True)) as sandbox:
        yield sandbox


def test_measured_peak_memory_is_exact_and_a_refused_growth_is_named(measuring: Sandbox) -> None:
    page = 65536
    agent = build(measuring, GROW, pages=2)
    limits = Limits(memory_bytes=6 * page)
    at_limit = run(measuring, agent, "x" * 4, limits=limits)
    assert at_limit.status is Status.OK
    assert at_limit.peak_memory_bytes == 6 * page

    over = run(measuring, agent, "x" * 5, limits=limits)
    assert over.status is Status.FAILED  # the guest saw memory.grow fail and said so
    assert over.peak_memory_bytes == 2 * page


def test_measured_memory_over_the_limit_at_start_is_a_memory_limit_error(measuring: Sandbox) -> None:
    page = 65536
    agent = build(measuring, ECHO, pages=8)
    out = run(measuring, agent, "ok", limits=Limits(memory_bytes=7 * page))
    assert out.error is not None and out.error.kind is ErrorKind.MEMORY_LIMIT
    assert f"asked for {8 * page} bytes" in out.error.message


def test_hosts_do_not_measure(sandbox: Sandbox) -> None:
    agent = build(sandbox, ECHO)
    assert run(sandbox, agent, "x").peak_memory_bytes is None
