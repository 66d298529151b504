"""What to do with one delivery: pure functions of the task, the instance's journal and the outcome.

No NATS here and no wasm: the host gathers the facts (the journal's last record, the attempt, the
outcome), these functions decide, the host carries the decision out. Unit-tested without a server
(tests/unit/test_decide.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..invocation import Outcome, Status
from ._records import InstanceState, JournalRecord
from ._tasks import Task

__all__ = ["EventDecision", "JournalHead", "Retry", "await_satisfied", "decide_error", "decide_event"]


@dataclass(frozen=True, slots=True)
class JournalHead:
    """The last record of an instance's journal and its stream sequence (for guarded appends)."""

    record: JournalRecord
    seq: int


class EventDecision(enum.Enum):
    RUN = "run"
    #: A reply for a suspended parent: stored in its inbox, read when it wakes.
    PARK = "park"
    #: Not for this instance any more (a stale wake, an event for an ended instance): acked, not run.
    DROP = "drop"


def decide_event(task: Task, head: JournalHead | None) -> EventDecision:
    """Whether a wake or reply event may run on the instance whose journal ends with ``head``.

    - an instance that has ended runs nothing again: a wake moved by `dagr suspend` after the wake
      had fired, or a reply that comes after the parent finished, is dropped;
    - a wake runs only if it is the instance's pending wake (the suspended record names it), or
      this very wake is being retried or was running: an old schedule re-created by a late replay
      of a committed outbox is stale and dropped (it would run `on_wake` twice);
    - a reply for a suspended or ended parent waits in its inbox.
    """
    if head is None:
        return EventDecision.RUN  # no journal yet (written by older hosts, or lost): run as before
    record = head.record
    if task.kind == "reply" and (record.ended or record.state is InstanceState.SUSPENDED):
        # Kept, never lost: read when it wakes, or by lifecycle.results() if it ever runs again
        # (a child that answers after its parent's await timed out and the parent finished).
        return EventDecision.PARK
    if record.ended:
        return EventDecision.DROP
    if task.kind == "wake":
        if record.state is InstanceState.SUSPENDED:
            expected = record.wake_task
            return EventDecision.RUN if expected in (None, task.task_id) else EventDecision.DROP
        return EventDecision.RUN if record.task == task.task_id else EventDecision.DROP
    return EventDecision.RUN


def await_satisfied(awaiting: tuple[str, ...], mode: str, resolved: set[str]) -> bool:
    """Whether an await on ``awaiting`` (``all`` or ``any``) is over, given the handles resolved."""
    if not awaiting:
        return False
    if mode == "any":
        return any(handle in resolved for handle in awaiting)
    return all(handle in resolved for handle in awaiting)


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the task again after ``delay_s``."""

    delay_s: float


def decide_error(
    outcome: Outcome, *, attempt: int, max_attempts: int, backoff_s: tuple[float, ...]
) -> Retry | None:
    """After an invocation that ended in an error: retry it (``Retry``), or None to give up now.

    An error that running again cannot change (a refused call the agent did not handle) is final at
    once; any other is retried with backoff until ``max_attempts``.
    """
    assert outcome.status is Status.ERROR
    if outcome.error is not None and outcome.error.kind.final:
        return None
    if attempt >= max_attempts:
        return None
    return Retry(backoff_s[min(max(attempt, 1), len(backoff_s)) - 1])
