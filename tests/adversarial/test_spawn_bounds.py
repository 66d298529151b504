"""Issue 9, attenuation without gaps: a spawn tree is bounded in depth and in size.

Before: ``MAX_DEPTH`` existed and was never checked (a chain reached depth 40), and nothing bounded a
tree's size (one spawn became 259 instances, and could become ``max_spawns ** depth``). Now a spawn
past ``MAX_SPAWN_DEPTH`` and a spawn past the root's ``limits.max_tree_instances`` are refused
(``quota-exceeded``), counted per tree in a guarded commit, whatever the agent does.

Counted from the instances stream itself: every instance has a journal subject, every journal
record names its root and depth.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest
from arena import Arena

from dagr_wasm.manifest import load_manifest
from dagr_wasm.policy import MAX_SPAWN_DEPTH

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]


async def _deploy_fork(arena: Arena, built: dict[str, Path], *, max_tree_instances: int) -> None:
    manifest = load_manifest(ROOT / "agents" / "hostile-fork" / "dagr.toml")
    limits = manifest.limits.model_copy(update={"max_tree_instances": max_tree_instances})
    await arena.deploy(
        built["hostile-fork"].read_bytes(), name="hostile-fork", grants=manifest.grants, limits=limits
    )


async def _tree(arena: Arena, root: str) -> list[dict[str, Any]]:
    """The last journal record of every instance whose root is ``root``, read from the stream."""
    info = await arena.mesh.js.stream_info("DAGR_INSTANCES", subjects_filter="dagr.inst.*")
    found = []
    for subject in info.state.subjects or {}:
        msg = await arena.mesh.js.get_msg("DAGR_INSTANCES", subject=subject, direct=True)
        record = cbor2.loads(msg.data or b"")
        if record.get("root") == root:
            found.append(record)
    return found


async def _settled_tree(
    arena: Arena, root: str, *, quiet_s: float = 3.0, timeout_s: float = 240
) -> list[dict[str, Any]]:
    """The tree once nothing in it has changed for ``quiet_s`` and every instance has ended."""
    deadline, last, quiet_since = time.monotonic() + timeout_s, None, time.monotonic()
    while True:
        tree = await _tree(arena, root)
        shape = sorted((r["id"], r["state"]) for r in tree)
        if shape != last:
            last, quiet_since = shape, time.monotonic()
        elif time.monotonic() - quiet_since > quiet_s and all(r["state"] == "finished" for r in tree):
            return tree
        assert time.monotonic() < deadline, f"the tree did not settle: {len(tree)} instances"
        await asyncio.sleep(0.25)


async def test_a_fork_bomb_stops_at_its_trees_budget(arena: Arena, built: dict[str, Path]) -> None:
    await _deploy_fork(arena, built, max_tree_instances=25)
    root = await arena.mesh.spawn("hostile-fork", "fork 4")  # 4 ** depth without a bound
    tree = await _settled_tree(arena, root)
    assert len(tree) == 25, f"{len(tree)} instances in a tree whose budget is 25"
    refused = [r for r in tree if cbor2.loads(r["ok"])["refused"]]
    assert refused, "no spawn was refused"
    assert all(r["ceilings"] for r in tree if r["id"] != root)  # every child under its parent's grants
    counted = await arena.mesh.js.get_msg("KV_dagr-state", subject=f"$KV.dagr-state.t.{root}", direct=True)
    assert int(counted.data or b"0") == 24  # the root's tree holds 24 besides the root
    await arena.benign_still_served()


async def test_a_chain_stops_at_the_spawn_depth(arena: Arena, built: dict[str, Path]) -> None:
    await _deploy_fork(arena, built, max_tree_instances=1000)
    root = await arena.mesh.spawn("hostile-fork", "chain")
    tree = await _settled_tree(arena, root)
    depths = sorted(r["depth"] for r in tree)
    assert depths == list(range(MAX_SPAWN_DEPTH + 1)), depths  # 0 .. 32, one instance at each
    deepest = next(r for r in tree if r["depth"] == MAX_SPAWN_DEPTH)
    assert cbor2.loads(deepest["ok"]) == {"spawned": 0, "refused": 1}
    await arena.benign_still_served()
