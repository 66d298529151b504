"""The host's decisions, without NATS: which events run, park or drop; which errors are retried."""

from __future__ import annotations

import pytest

from dagr_wasm.invocation import ErrorKind, GuestError, Outcome, Status
from dagr_wasm.mesh._decide import EventDecision, JournalHead, Retry, decide_error, decide_event
from dagr_wasm.mesh._records import InstanceState, JournalRecord, Lineage
from dagr_wasm.mesh._tasks import Task


def task(kind: str, task_id: str = "w1") -> Task:
    return Task(task_id=task_id, kind=kind, instance_id="i1", specialist="s")  # type: ignore[arg-type]


def head(state: str, *, task: str, wake_task: str | None = None) -> JournalHead:
    record = JournalRecord(
        id="i1",
        specialist="s",
        version=1,
        state=InstanceState(state),
        task=task,
        attempt=1,
        updated_ms=1,
        lineage=Lineage(root="i1"),
        wake_task=wake_task,
    )
    return JournalHead(record, seq=7)


@pytest.mark.parametrize("state", ["finished", "failed", "dead", "cancelled"])
def test_nothing_runs_on_an_ended_instance_and_a_late_reply_is_kept(state: str) -> None:
    assert decide_event(task("wake"), head(state, task="t0")) is EventDecision.DROP
    # A child answering after its parent ended (an await that timed out): kept in the inbox.
    assert decide_event(task("reply"), head(state, task="t0")) is EventDecision.PARK


def test_the_pending_wake_runs_and_any_other_is_stale() -> None:
    pending = head("suspended", task="t0", wake_task="w1")
    assert decide_event(task("wake", "w1"), pending) is EventDecision.RUN
    assert decide_event(task("wake", "w0"), pending) is EventDecision.DROP


def test_a_wake_being_retried_or_running_runs_again_and_an_older_one_does_not() -> None:
    assert decide_event(task("wake", "w1"), head("retrying", task="w1")) is EventDecision.RUN
    assert decide_event(task("wake", "w1"), head("running", task="w1")) is EventDecision.RUN
    assert decide_event(task("wake", "w1"), head("running", task="t9")) is EventDecision.DROP


def test_a_suspended_record_of_an_older_host_accepts_any_wake() -> None:
    assert decide_event(task("wake", "w5"), head("suspended", task="t0")) is EventDecision.RUN


def test_a_reply_waits_for_a_suspended_parent_and_runs_on_a_live_one() -> None:
    assert decide_event(task("reply"), head("suspended", task="t0", wake_task="w1")) is EventDecision.PARK
    for state in ("queued", "running", "retrying"):
        assert decide_event(task("reply"), head(state, task="t0")) is EventDecision.RUN


def error(kind: ErrorKind) -> Outcome:
    return Outcome(status=Status.ERROR, error=GuestError(kind, "x"))


@pytest.mark.parametrize("kind", [ErrorKind.DENIED, ErrorKind.REFUSED])
def test_a_refusal_the_agent_did_not_handle_is_final_at_once(kind: ErrorKind) -> None:
    assert decide_error(error(kind), attempt=1, max_attempts=4, backoff_s=(0.5,)) is None


def test_other_errors_are_retried_with_backoff_until_the_last_attempt() -> None:
    backoff = (0.5, 2.0, 8.0)
    outcome = error(ErrorKind.DEADLINE)
    assert [decide_error(outcome, attempt=a, max_attempts=4, backoff_s=backoff) for a in (1, 2, 3, 4)] == [
        Retry(0.5),
        Retry(2.0),
        Retry(8.0),
        None,
    ]


def test_the_hosts_caches_keep_the_most_recently_used_within_their_bound() -> None:
    from dagr_wasm.mesh._catalog import Lru

    cache: Lru[str, int] = Lru(3)
    for i in range(10_000):
        cache.put(f"k{i}", i)
        if i % 2 == 0:
            assert cache.get("k0") == 0  # used again and again: kept
    assert len(cache) == 3
    assert "k0" in cache and "k9999" in cache and "k5000" not in cache
