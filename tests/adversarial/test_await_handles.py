"""An await names only handles its instance holds: never another instance's child, a made-up
HTTP call, nothing at all, a result already read, or a deadline outside (0, max_suspend_s].

agents/hostile-await tries each on a real mesh (the arena: authorization on, one host) and
returns the refusal it got. Checked from the outside: it never suspended (its journal, read from
the stream), nothing reached its inbox, and the victim's inbox is untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from arena import Arena

from dagr_wasm.manifest import load_manifest
from dagr_wasm.mesh._layout import INBOX_STREAM, inbox_subject

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def attacker(arena: Arena, built: dict[str, Path]) -> str:
    for name in ("echo", "gatherer", "hostile-await"):
        grants = load_manifest(ROOT / "agents" / name / "dagr.toml").grants
        await arena.deploy(built[name].read_bytes(), name=name, grants=grants)
    return "hostile-await"


async def inbox(arena: Arena, instance: str) -> int:
    """How many results the instance's inbox has ever held (read or not)."""
    subject = inbox_subject(instance)
    info = await arena.mesh.js.stream_info(INBOX_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def attack(arena: Arena, spec: dict[str, Any]) -> tuple[str, list[dict[str, Any]], Any]:
    instance = await arena.mesh.spawn("hostile-await", json.dumps(spec))
    status = await arena.settled(instance, timeout_s=60)
    assert status["state"] == "finished", status
    return instance, await arena.journal(instance), cbor2.loads(status["ok"])


async def test_an_await_on_handles_it_never_held_is_invalid_and_waits_for_nothing(
    arena: Arena, attacker: str
) -> None:
    victim = await arena.mesh.spawn(
        "gatherer", json.dumps({"contexts": ["secret-a", "secret-b"], "timeout_s": 60})
    )
    answer = cbor2.loads((await arena.settled(victim, timeout_s=60))["ok"])
    victims_children = sorted(answer["answers"])
    assert len(victims_children) == 2
    victims_inbox = await inbox(arena, victim)
    assert victims_inbox == 2

    attempts = {
        "another instance's children": ({"handles": victims_children}, "never issued to this instance"),
        "a made-up HTTP call": ({"handles": ["http-" + "0" * 20]}, "never issued to this instance"),
        "a made-up child": ({"handles": ["f" * 20]}, "never issued to this instance"),
        "its own child and a stranger": (
            {"handles": [victims_children[0]], "spawn": True},
            victims_children[0],
        ),
        "nothing at all": ({"handles": []}, "at least one handle"),
        "a deadline beyond max_suspend_s": ({"handles": ["signal-go"], "timeout_s": 3600}, "horizon"),
        "a deadline already passed": ({"handles": ["signal-go"], "timeout_s": 0}, "must be positive"),
    }
    for what, (spec, reason) in attempts.items():
        instance, journal, result = await attack(arena, spec)
        assert result.get("refused") == "invalid", (what, result)
        assert reason in result["error"], (what, result)
        # Refused at the call: the instance never suspended on it, and nothing came to it (but
        # the answer of its own child, if it spawned one: kept, as a late reply always is).
        assert [r["state"] for r in journal if r["state"] != "queued"] == ["finished"], (what, journal)
        assert await inbox(arena, instance) <= int(bool(spec.get("spawn"))), what
    # The victim's results stayed where they were, read once, by the victim.
    assert await inbox(arena, victim) == victims_inbox
    await arena.benign_still_served()


async def test_a_held_handle_is_awaited_once_and_refused_after_its_result_is_read(
    arena: Arena, attacker: str
) -> None:
    spec = {"handles": ["signal-never"], "mode": "any", "spawn": True, "timeout_s": 30}
    _, journal, result = await attack(arena, spec)
    assert result.get("resumed"), result
    (child,) = list(result["resumed"])
    assert result["resumed"][child] == {"echo": "held"}
    # Awaiting the handle it has just read would wait for nothing: refused, and it ended.
    assert result["again"]["refused"] == "invalid"
    assert child in result["again"]["error"]
    assert [r["state"] for r in journal if r["state"] != "queued"] == ["suspended", "finished"]
