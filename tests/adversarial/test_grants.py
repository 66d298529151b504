"""Class 11: grants that reach the runtime. No manifest may grant publishing onto the runtime's own
subjects, JetStream's API or the server's, and no agent publishes there whatever its registry entry
says.

Before: ``publish = [">"]``, ``["agents.>"]``, ``["$KV.>"]`` and ``["dagr.>"]`` were accepted
silently and let an agent write other instances' state, start tasks with forged authority, or cancel
instances.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from arena import Arena
from attacks import PUBLISH_TO_CONTEXT, agent

from dagr_wasm.errors import NotFoundError
from dagr_wasm.invocation import Invocation, Start, Status
from dagr_wasm.mesh._layout import REGISTRY_BUCKET, topic
from dagr_wasm.policy import Capabilities, Grants
from dagr_wasm.sandbox import Sandbox

DAGR = str(Path(sys.executable).parent / "dagr")

REFUSED = [">", "*.>", "agents.>", "agents.*.>", "agents.specialist.echo", "$KV.>", "$KV.dagr-state.>",
           "$JS.API.>", "$SYS.>", "dagr.>", "dagr.cancel.*", "_INBOX.>", "*.*.*"]  # fmt: skip


@pytest.mark.parametrize("pattern", REFUSED)
async def test_a_grant_that_reaches_the_runtime_is_refused_at_deploy(
    arena: Arena, tmp_path: Path, pattern: str
) -> None:
    name = f"greedy-{abs(hash(pattern)) % 10**8}"
    module = tmp_path / "a.wasm"
    module.write_bytes(agent(PUBLISH_TO_CONTEXT))
    manifest = tmp_path / "dagr.toml"
    manifest.write_text(f'name = "{name}"\n[grants]\npublish = [{json.dumps(pattern)}]\n')
    registry_before = (await arena.mesh.js.stream_info(f"KV_{REGISTRY_BUCKET}")).state.messages
    done = await asyncio.to_thread(
        subprocess.run,
        [DAGR, "deploy", str(module), "--manifest", str(manifest), *arena.cli_flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "reach subjects of the runtime or the server" in done.stderr
    assert (await arena.mesh.js.stream_info(f"KV_{REGISTRY_BUCKET}")).state.messages == registry_before
    assert await arena.mesh.registry.current(name) is None


def test_a_broad_grant_is_allowed_with_a_warning(tmp_path: Path) -> None:
    manifest = tmp_path / "dagr.toml"
    manifest.write_text('name = "broad"\n[grants]\npublish = ["reports.>"]\n')
    module = tmp_path / "a.wasm"
    module.write_bytes(agent(PUBLISH_TO_CONTEXT))
    done = subprocess.run(
        [DAGR, "deploy", str(module), "--manifest", str(manifest), "--nats", "nats://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "warning: grants.publish 'reports.>' is broad" in done.stderr
    assert done.returncode == 1  # no server there: it got past validation


VICTIM_SUBJECTS = ["$KV.dagr-state.i.victim.secret", "dagr.cancel.victim", "agents.specialist.benign",
                   "$JS.API.STREAM.DELETE.DAGR_AGENTS", "dagr.inst.victim", "_INBOX.x"]  # fmt: skip


@pytest.mark.parametrize("subject", VICTIM_SUBJECTS)
def test_no_grant_reaches_the_runtime_even_if_the_sandbox_is_handed_one(
    sandbox: Sandbox, subject: str
) -> None:
    # As if a registry entry had been rewritten to grant everything: the sandbox refuses anyway.
    everything = Capabilities(own=Grants.model_construct(publish=(">",)))
    out = sandbox.run(
        sandbox.load(agent(PUBLISH_TO_CONTEXT)),
        Invocation(
            task_id="t", instance_id="i", specialist="s", event=Start(subject), capabilities=everything
        ),
    )
    assert out.status is Status.FAILED and out.failure is not None, out
    assert "belongs to the runtime" in out.failure
    assert out.effects == ()


async def test_a_tampered_registry_entry_is_never_run(arena: Arena) -> None:
    # Someone with write access to the registry grants a specialist everything. Hosts refuse to
    # read the entry (it does not validate), so nothing runs under it, and the rest works on.
    name = f"tampered-{int(time.time() * 1000)}"
    await arena.deploy(agent(PUBLISH_TO_CONTEXT), name=name)
    spec = await arena.mesh.registry.current(name)
    assert spec is not None
    doc = spec.to_json()
    doc["grants"]["publish"] = [">"]
    kv = await arena.mesh.js.key_value(REGISTRY_BUCKET)
    await kv.put(f"spec.{name}", json.dumps(doc).encode())
    await kv.put(f"ver.{name}.{spec.version}", json.dumps(doc).encode())
    before = await arena.snapshot()
    with pytest.raises(NotFoundError):
        await arena.mesh.spawn(name, "dagr.cancel.victim")
    await arena.mesh.js.publish(topic(name), b"$KV.dagr-state.i.victim.secret")  # a plain start message
    await asyncio.sleep(2.0)
    after = await arena.snapshot()
    # At most the bookkeeping of a run under the entry as deployed (the host ignored the rewrite).
    new = before.new_subjects(after)
    assert {
        s
        for subjects in new.values()
        for s in subjects
        if not s.startswith(("$KV.dagr-state.x.", "$KV.dagr-state.f."))
    } == set(), new
    assert await arena.state_keys("victim") == set()
    await arena.benign_still_served()
