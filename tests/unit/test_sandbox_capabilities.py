"""Grants, buffered effects and suspend: what a guest may do and how it is recorded."""

from __future__ import annotations

import pytest
import watkit
from test_sandbox_limits import RETURN_IF_REFUSED, STRINGS, run

from dagr_wasm.sandbox import (
    AgentComponent,
    Capabilities,
    ErrorKind,
    Grants,
    Invocation,
    Limits,
    Publish,
    Sandbox,
    Spawn,
    Start,
    StateEntry,
    StatePut,
    Status,
    Suspend,
    child_instance_id,
    subject_matches,
)

OK = "(call $ok (i32.const 0) (i32.const 0))"


def agent(sandbox: Sandbox, body: str, extra: str = "") -> AgentComponent:
    return sandbox.load(watkit.component(body, extra=extra + STRINGS, locals_="(local $i i32)"))


def publish_to_context(handle_refusal: bool) -> str:
    on_refusal = (
        RETURN_IF_REFUSED if handle_refusal else "(if (i32.load8_u (global.get $retarea)) (then unreachable))"
    )
    return (
        "(call $publish (local.get $p1) (local.get $p2) (i32.const 1024) (i32.const 1) (global.get $retarea))"
        + on_refusal
        + OK
    )


def test_publish_is_buffered_not_sent(sandbox: Sandbox) -> None:
    a = agent(sandbox, publish_to_context(True))
    out = run(sandbox, a, "agents.main.results", grants=Grants(publish=("agents.main.>",)))
    assert out.status is Status.OK
    assert out.effects == (Publish("agents.main.results", b"k"),)


def test_denied_publish_handled_by_the_guest_is_a_value(sandbox: Sandbox) -> None:
    a = agent(sandbox, publish_to_context(True))
    out = run(sandbox, a, "forbidden.subject", grants=Grants(publish=("agents.main.>",)))
    assert out.status is Status.FAILED
    assert out.failure == "publishing to 'forbidden.subject' is not granted: grants.publish"
    assert out.effects == ()


def test_denied_publish_not_handled_is_a_denied_error_and_nothing_commits(sandbox: Sandbox) -> None:
    body = (
        "(call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)"
        " (global.get $retarea))" + publish_to_context(False)
    )
    a = agent(sandbox, body)
    out = run(sandbox, a, "forbidden.subject")
    assert out.status is Status.ERROR
    assert out.error is not None and out.error.kind is ErrorKind.DENIED
    assert "forbidden.subject" in out.error.message
    assert out.committable is False


@pytest.mark.parametrize("subject", ["a.*", "a.>", "a..b", "", "has space", "a.b."])
def test_publish_to_a_malformed_subject_is_invalid(sandbox: Sandbox, subject: str) -> None:
    a = agent(sandbox, publish_to_context(True))
    # Even a grant of everything (refused at deploy; here as a tampered registry would hold it).
    out = run(sandbox, a, subject, grants=Grants.model_construct(publish=(">",)))
    assert out.status is Status.FAILED
    assert out.failure is not None and "not a valid NATS subject" in out.failure


def test_a_child_never_gets_more_than_its_parent(sandbox: Sandbox) -> None:
    a = agent(sandbox, publish_to_context(True))
    own = Grants(publish=("agents.main.>", "agents.other.>"))
    parent = Grants(publish=("agents.main.*",))
    invocation = Invocation(
        task_id="t",
        instance_id="i",
        specialist="s",
        event=Start("agents.other.x"),
        capabilities=Capabilities(own=own, ceilings=(parent,)),
    )
    out = sandbox.run(a, invocation)
    assert out.status is Status.FAILED and out.failure is not None and "not granted" in out.failure
    allowed = sandbox.run(a, Invocation(**{**_fields(invocation), "event": Start("agents.main.x")}))
    assert allowed.status is Status.OK


def _fields(inv: Invocation) -> dict[str, object]:
    return {name: getattr(inv, name) for name in inv.__dataclass_fields__}


SPAWN_WITH_REPLY_TO = (
    """
    (call $spawn (i32.const 1056) (i32.const 5) (i32.const 1024) (i32.const 1)
                 (i32.const 1) (local.get $p1) (local.get $p2) (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.load offset=4 (global.get $retarea)) (i32.load offset=8 (global.get $retarea)))"
)


def test_spawn_returns_a_deterministic_child_id_and_records_the_effect(sandbox: Sandbox) -> None:
    a = agent(sandbox, SPAWN_WITH_REPLY_TO)
    grants = Grants(spawn=("child",), publish=("agents.main.results",))
    out = run(sandbox, a, "agents.main.results", grants=grants)
    assert out.status is Status.OK
    child = child_instance_id("task-1", 0)
    assert out.result == child.encode()
    assert out.effects == (Spawn(child, "child", "k", "agents.main.results"),)


def test_spawn_of_an_ungranted_specialist_is_denied(sandbox: Sandbox) -> None:
    a = agent(sandbox, SPAWN_WITH_REPLY_TO)
    out = run(sandbox, a, "agents.main.results", grants=Grants(spawn=("other",), publish=("agents.main.>",)))
    assert out.status is Status.FAILED
    assert out.failure == "spawning 'child' is not granted: grants.spawn"


def test_reply_to_is_a_publish_by_proxy_and_needs_the_publish_grant(sandbox: Sandbox) -> None:
    a = agent(sandbox, SPAWN_WITH_REPLY_TO)
    out = run(sandbox, a, "elsewhere.results", grants=Grants(spawn=("child",), publish=("agents.main.>",)))
    assert out.status is Status.FAILED
    assert out.failure == "reply-to 'elsewhere.results' is not granted: grants.publish"


# --- state -------------------------------------------------------------------------------------

# put k=context, then get k and return what was read.
PUT_THEN_GET = (
    """
    (call $state_put (local.get $p3) (i32.const 1024) (i32.const 1) (local.get $p1) (local.get $p2)
                     (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + """
    (call $state_get (local.get $p3) (i32.const 1024) (i32.const 1) (global.get $retarea))"""
    + RETURN_IF_REFUSED
    + "(call $ok (i32.load offset=4 (global.get $retarea)) (i32.load offset=8 (global.get $retarea)))"
)

GET_ONLY = (
    "(call $state_get (i32.const 0) (i32.const 1024) (i32.const 1) (global.get $retarea))"
    + RETURN_IF_REFUSED
    + "(call $ok (i32.load offset=4 (global.get $retarea)) (i32.load offset=8 (global.get $retarea)))"
)


class DictState:
    def __init__(self, values: dict[str, tuple[bytes, int]]) -> None:
        self.values = values
        self.gets = 0

    def get(self, scope: str, key: str) -> StateEntry | None:
        self.gets += 1
        found = self.values.get(f"{scope}/{key}")
        return StateEntry(*found) if found else None

    def keys(self, scope: str, prefix: str) -> list[str]:
        return [k.split("/", 1)[1] for k in self.values if k.startswith(f"{scope}/{prefix}")]


def test_reads_see_the_invocations_own_writes(sandbox: Sandbox) -> None:
    a = agent(sandbox, PUT_THEN_GET.replace("(local.get $p3)", "(i32.const 0)"))
    state = DictState({"instance/k": (b"old", 5)})
    inv = Invocation(task_id="t", instance_id="i", specialist="s", event=Start("new"), state=state)
    out = sandbox.run(a, inv)
    assert out.result == b"new"
    assert out.effects == (StatePut("instance", "k", b"new"),)
    assert state.gets == 0  # answered from the overlay


def test_reads_record_the_revision_they_saw(sandbox: Sandbox) -> None:
    a = agent(sandbox, GET_ONLY)
    state = DictState({"instance/k": (b"stored", 42)})
    out = sandbox.run(
        a, Invocation(task_id="t", instance_id="i", specialist="s", event=Start(""), state=state)
    )
    assert out.result == b"stored"
    assert out.reads == (("instance", "k", 42),)


def test_a_missing_key_is_not_found_and_recorded_as_revision_zero(sandbox: Sandbox) -> None:
    a = agent(sandbox, GET_ONLY)
    out = sandbox.run(a, Invocation(task_id="t", instance_id="i", specialist="s", event=Start("")))
    assert out.status is Status.FAILED
    assert out.failure == "no value under 'k'"
    assert out.reads == (("instance", "k", 0),)


def test_shared_state_needs_the_specialist_scope_grant(sandbox: Sandbox) -> None:
    a = agent(sandbox, PUT_THEN_GET.replace("(local.get $p3)", "(i32.const 1)"))
    denied = run(sandbox, a, "v")
    assert denied.status is Status.FAILED
    assert denied.failure is not None and "grants.kv_scope" in denied.failure
    allowed = run(sandbox, a, "v", grants=Grants(kv_scope="specialist"))
    assert allowed.effects == (StatePut("specialist", "k", b"v"),)


# --- suspend -----------------------------------------------------------------------------------

SUSPEND_AFTER_CONTEXT_LEN_SECONDS = (
    """
    (call $state_put (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                     (global.get $retarea))
    (call $suspend (i32.const 1) (i64.mul (i64.extend_i32_u (local.get $p2)) (i64.const 1000))
                   (i32.const 1040) (i32.const 3) (global.get $retarea))"""
    + RETURN_IF_REFUSED
    # Reached only if the host let the guest run on after a successful suspend.
    + "unreachable"
)


def test_suspend_ends_the_invocation_and_keeps_the_effects(sandbox: Sandbox) -> None:
    a = agent(sandbox, SUSPEND_AFTER_CONTEXT_LEN_SECONDS)
    out = run(sandbox, a, "xx")
    assert out.status is Status.SUSPENDED
    assert out.committable
    assert out.effects == (StatePut("instance", "k", b"k"), Suspend(1_000_000 + 2_000, "a.b"))
    assert out.suspend == Suspend(1_002_000, "a.b")


def test_suspend_beyond_the_horizon_is_denied_and_the_guest_runs_on(sandbox: Sandbox) -> None:
    a = agent(sandbox, SUSPEND_AFTER_CONTEXT_LEN_SECONDS)
    out = run(sandbox, a, "x" * 11, grants=Grants(max_suspend_s=10))
    assert out.status is Status.FAILED
    assert out.failure is not None and "beyond the granted horizon of 10 s" in out.failure
    assert out.suspend is None


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("a.*", "a.b")
    assert not subject_matches("a.*", "a.b.c")
    assert subject_matches("a.>", "a.b.c")
    assert not subject_matches("a.>", "a")
    assert subject_matches(">", "x")
    assert subject_matches("*.b.>", "a.b.c.d")
    assert not subject_matches("a.b", "a.b.c")


def test_grants_reject_malformed_patterns() -> None:
    with pytest.raises(ValueError, match="not valid NATS subject patterns"):
        Grants(publish=("a.>.b",))
    with pytest.raises(ValueError, match="not valid specialist names"):
        Grants(spawn=("Bad Name",))


def test_limits_of_a_child_are_capped_by_the_parent() -> None:
    child = Limits(fuel=10, timeout_ms=99_999).capped_by(Limits(fuel=100, timeout_ms=1000))
    assert (child.fuel, child.timeout_ms) == (10, 1000)
