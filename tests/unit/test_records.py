"""Stored records: one typed definition each, the same wire form both ways, strict about what they
read, tolerant of what a newer host may add."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest

from dagr_wasm.errors import RecordError
from dagr_wasm.invocation import LogLine
from dagr_wasm.mesh import (
    DeadLetter,
    InstanceState,
    InvocationLog,
    JournalRecord,
    Lineage,
    SpawnEdge,
)
from dagr_wasm.mesh._tasks import Task, wake_from_record
from dagr_wasm.policy import Grants, Limits

LINEAGE = Lineage(
    root="r1",
    parent="p1",
    parent_specialist="orchestrator",
    parent_version=3,
    reply_to="agents.main.results",
    depth=2,
    ceilings=(Grants(spawn=("echo",)),),
    limit_ceiling=Limits(fuel=10**8),
)


def record(state: InstanceState, **fields: object) -> JournalRecord:
    base = JournalRecord(
        id="i1",
        specialist="echo",
        version=2,
        state=state,
        task="t1",
        attempt=1,
        updated_ms=1_700_000_000_000,
        lineage=LINEAGE,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        record(InstanceState.QUEUED),
        record(
            InstanceState.FINISHED,
            ok=b"\xa1aa\x01",
            invocation=InvocationLog(host="h1", lines=(LogLine("info", "hi"),), fuel=12, wall_ms=0.5),
        ),
        record(InstanceState.SUSPENDED, wake_at_ms=1_800_000_000_000, wake_task="w1", resume_context="go on"),
        record(InstanceState.DEAD, error="gave up: trap"),
    ],
)
def test_journal_records_round_trip(value: JournalRecord) -> None:
    assert JournalRecord.decode(value.encode()) == value


def test_unknown_keys_from_a_newer_host_are_ignored() -> None:
    doc = record(InstanceState.RUNNING).to_doc() | {"tokens": 12}
    assert JournalRecord.decode(cbor2.dumps(doc)).state is InstanceState.RUNNING


@pytest.mark.parametrize(
    "broken",
    [
        b"\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"id": "i1", "specialist": "echo"}),  # no state
        cbor2.dumps({"id": "i1", "specialist": "echo", "state": "sleeping"}),
        cbor2.dumps({"id": 7, "specialist": "echo", "state": "queued"}),
        cbor2.dumps({"id": "i1", "specialist": "echo", "state": "finished", "ok": "not bytes"}),
        cbor2.dumps({"id": "i1", "specialist": "echo", "state": "queued", "ceilings": [{"spawn": 3}]}),
    ],
)
def test_a_record_that_does_not_decode_is_an_error_not_a_half_filled_object(broken: bytes) -> None:
    with pytest.raises(RecordError):
        JournalRecord.decode(broken)


def test_only_ended_records_carry_a_result_and_a_cancelled_one_carries_no_value() -> None:
    assert record(InstanceState.SUSPENDED, ok=b"x").result() is None
    finished = record(InstanceState.FINISHED, ok=b"x").result()
    assert finished is not None and finished.ok == b"x"
    cancelled = record(InstanceState.CANCELLED, ok=b"x").result()
    assert cancelled is not None and cancelled.ok is None and "cancel" in (cancelled.error or "")


def test_a_wake_built_from_a_record_keeps_the_whole_lineage() -> None:
    wake = wake_from_record(record(InstanceState.SUSPENDED), now_ms=5)
    assert wake.kind == "wake" and wake.instance_id == "i1" and wake.version == 2
    assert (
        JournalRecord.of(wake, version=2, state=InstanceState.QUEUED, attempt=0, now_ms=5).lineage == LINEAGE
    )


def test_a_reply_event_takes_its_lineage_from_the_journal() -> None:
    reply = Task(task_id="rp", kind="reply", instance_id="i1", specialist="echo")
    assert Lineage.of(reply.with_lineage(LINEAGE)) == LINEAGE


def test_dead_letters_and_spawn_edges_round_trip() -> None:
    letter = DeadLetter(task=b"\xa0", error="gave up", kind="trap", attempts=4, at_ms=9)
    back = DeadLetter.decode(letter.encode(), seq=3, subject="dagr.dead.echo.t9")
    assert (back.error, back.attempts, back.task, back.seq) == ("gave up", 4, b"\xa0", 3)
    assert (back.specialist, back.task_id) == ("echo", "t9")
    edge = SpawnEdge(child="c1", specialist="echo", at_ms=1, index=2)
    assert SpawnEdge.decode(edge.encode()) == edge
