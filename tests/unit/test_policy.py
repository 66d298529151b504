"""Grants compared across versions: what a deploy would add, which then needs approval."""

from __future__ import annotations

from dagr_wasm.policy import Grants


def test_grant_escalations_are_what_the_new_grants_add() -> None:
    old = Grants(publish=("agents.main.>", "metrics.cpu"), spawn=("echo",), max_suspend_s=60)
    assert (
        Grants(
            publish=("agents.main.results", "metrics.cpu"), spawn=("echo",), max_suspend_s=60
        ).escalations_over(old)
        == []
    )
    assert Grants(publish=("metrics.>",), max_suspend_s=60).escalations_over(old) == ["publish metrics.>"]
    assert Grants(publish=("metrics.*",), max_suspend_s=60).escalations_over(old) == ["publish metrics.*"]
    wider = Grants(spawn=("echo", "sleeper"), kv_scope="specialist", max_suspend_s=3600)
    assert wider.escalations_over(old) == [
        "spawn sleeper",
        "kv_scope specialist (shared state of every instance)",
        "max_suspend_s 60 -> 3600",
    ]
