"""Class 5: keys, subjects and ids are matched whole, and no control character gets through.

Before: the patterns used ``$``, which matches before a trailing newline, so ``k\\n`` and ``a.b\\n``
passed: commits opened atomic batches and abandoned them (the server allows 50 open per stream, and
all state shares one: other specialists' commits took 24-40 s instead of 0.1 s), and outboxes were
stored that could never be published.
"""

from __future__ import annotations

import time

import pytest
from arena import Arena, assert_contained
from attacks import PUBLISH_TO_CONTEXT, PUT_CONTEXT_KEY, SPAWN_REPLY_TO_CONTEXT, agent

from dagr_wasm.mesh._layout import task_subject
from dagr_wasm.policy import Grants, is_valid_subject, is_valid_subject_pattern

BAD_ENDINGS = ["\n", "\r\n", "\x00", "\t", "\x7f", "\x1b[0m", "\u0085", " "]


@pytest.mark.parametrize("ending", BAD_ENDINGS)
async def test_a_state_key_with_a_control_character_is_invalid(arena: Arena, ending: str) -> None:
    name = await arena.deploy(agent(PUT_CONTEXT_KEY))
    before = await arena.snapshot()
    status = await arena.run(name, "k" + ending)
    await assert_contained(arena, status, before=before, reason="bad key", state="failed")


@pytest.mark.parametrize("ending", BAD_ENDINGS)
async def test_a_subject_with_a_control_character_is_invalid(arena: Arena, ending: str) -> None:
    name = await arena.deploy(agent(PUBLISH_TO_CONTEXT), grants=Grants(publish=("agents.main.>",)))
    before = await arena.snapshot()
    status = await arena.run(name, "agents.main.x" + ending)
    await assert_contained(arena, status, before=before, reason="not a valid NATS subject", state="failed")


async def test_a_reply_to_with_a_newline_is_invalid(arena: Arena) -> None:
    name = await arena.deploy(
        agent(SPAWN_REPLY_TO_CONTEXT), grants=Grants(publish=("agents.main.>",), spawn=("benign",))
    )
    await arena.benign_still_served()
    before = await arena.snapshot()
    status = await arena.run(name, "agents.main.x\n")
    await assert_contained(arena, status, before=before, reason="not a valid NATS subject", state="failed")


@pytest.mark.parametrize("text", ["a.b\n", "a\n.b", "a.b\x00", "a.*\n", "a.>\n", "\na.b"])
def test_patterns_and_subjects_are_matched_whole(text: str) -> None:
    assert not is_valid_subject(text)
    assert not is_valid_subject_pattern(text)


async def test_a_forged_task_with_a_newline_in_its_ids_is_dead_lettered_untouched(arena: Arena) -> None:
    import cbor2

    await arena.benign_still_served()
    before = await arena.snapshot()
    forged = cbor2.dumps(
        {"v": 1, "id": "t\n1", "kind": "start", "instance": "i\nx", "specialist": "benign", "context": "x"}
    )
    await arena.mesh.js.publish(task_subject("benign"), forged, headers={"Dagr-Task": "1"})
    deadline = time.monotonic() + 10
    while True:
        dead = [d for d in await arena.dead_letters() if d.get("raw") == forged]
        if dead:
            break
        assert time.monotonic() < deadline, "the forged task was not dead-lettered"
        await arena.mesh.js.stream_info("DAGR_DEAD")
    assert "not an id" in dead[0]["error"]
    after = await arena.snapshot()
    assert after.counts["KV_dagr-state"] == before.counts["KV_dagr-state"]
    await arena.benign_still_served()


async def test_refused_keys_leave_no_batch_open_and_other_commits_stay_fast(arena: Arena) -> None:
    hostile = await arena.deploy(agent(PUT_CONTEXT_KEY))
    writer = await arena.deploy(agent(PUT_CONTEXT_KEY))
    instances = [await arena.mesh.spawn(hostile, "k\n") for _ in range(60)]
    for instance in instances:
        await arena.settled(instance)
    started = time.monotonic()
    status = await arena.run(writer, "fine")
    assert status["state"] == "finished"
    assert time.monotonic() - started < 2, "a state commit was held up"
    assert await arena.state_keys(status["id"]) == {f"$KV.dagr-state.i.{status['id']}.fine"}
