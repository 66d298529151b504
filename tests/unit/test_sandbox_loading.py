"""Loading components: the compiled cache (hit, miss, corrupt, foreign) and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import watkit
from wasmtime import wat2wasm

from dagr_wasm.errors import ModuleError
from dagr_wasm.sandbox import Invocation, Sandbox, Start, Status, digest_of

ECHO = watkit.component("(call $ok (local.get $p1) (local.get $p2))")


def start(text: str) -> Invocation:
    return Invocation(task_id="t", instance_id="i", specialist="s", event=Start(text))


def test_first_load_compiles_and_writes_the_cache_then_a_new_host_hits_it(fresh_cache_dir: Path) -> None:
    with Sandbox(cache_dir=fresh_cache_dir) as first:
        agent = first.load(ECHO)
        assert (first.cache.stats.compiles, first.cache.stats.disk_hits) == (1, 0)
        first.load(ECHO)
        assert first.cache.stats.memory_hits == 1
        entry = first.cache.entry_path(agent.digest)
        assert entry is not None and entry.exists()
    with Sandbox(cache_dir=fresh_cache_dir) as second:
        agent = second.load(ECHO)
        assert (second.cache.stats.compiles, second.cache.stats.disk_hits) == (0, 1)
        assert second.run(agent, start("cached")).result == b"cached"


def test_load_cached_never_compiles(fresh_cache_dir: Path) -> None:
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        assert sb.load_cached(digest_of(ECHO)) is None
        sb.load(ECHO)
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        agent = sb.load_cached(digest_of(ECHO))
        assert agent is not None and sb.cache.stats.compiles == 0
        assert sb.run(agent, start("x")).status is Status.OK


def test_a_corrupt_entry_is_recompiled_not_trusted(fresh_cache_dir: Path) -> None:
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        entry = sb.cache.entry_path(sb.load(ECHO).digest)
    assert entry is not None
    blob = bytearray(entry.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    entry.write_bytes(bytes(blob))
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        agent = sb.load(ECHO)
        assert sb.cache.stats.rejected_entries == 1
        assert sb.cache.stats.compiles == 1
        assert sb.run(agent, start("healed")).result == b"healed"
    # The recompiled entry replaced the corrupt one.
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        sb.load(ECHO)
        assert (sb.cache.stats.disk_hits, sb.cache.stats.rejected_entries) == (1, 0)


def test_a_foreign_entry_sealed_by_another_host_is_recompiled(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with Sandbox(cache_dir=theirs) as other_host:
        other_entry = other_host.cache.entry_path(other_host.load(ECHO).digest)
    with Sandbox(cache_dir=ours) as sb:
        our_entry = sb.cache.entry_path(digest_of(ECHO))
    assert other_entry is not None and our_entry is not None
    our_entry.parent.mkdir(parents=True, exist_ok=True)
    our_entry.write_bytes(other_entry.read_bytes())  # a valid artifact, but not sealed by us
    with Sandbox(cache_dir=ours) as sb:
        sb.load(ECHO)
        assert sb.cache.stats.rejected_entries == 1
        assert sb.cache.stats.compiles == 1


def test_the_host_key_is_private(fresh_cache_dir: Path) -> None:
    with Sandbox(cache_dir=fresh_cache_dir) as sb:
        sb.load(ECHO)
    assert (fresh_cache_dir / "host.key").stat().st_mode & 0o077 == 0


def test_a_digest_mismatch_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ModuleError, match="not the expected"):
        sandbox.load(ECHO, expected_digest="0" * 64)


# --- what is not an agent ----------------------------------------------------------------------


def test_not_wasm_at_all(sandbox: Sandbox) -> None:
    with pytest.raises(ModuleError, match=r"not WebAssembly") as info:
        sandbox.load(b"#!/bin/sh\necho hi\n", source="script.sh")
    assert info.value.exit_code == 2
    assert "script.sh" in str(info.value)


def test_a_core_module_is_not_a_component(sandbox: Sandbox) -> None:
    with pytest.raises(ModuleError, match="core wasm module, not a component") as info:
        sandbox.load(wat2wasm("(module)"), source="core.wasm")
    assert "dagr build" in str(info.value)


def test_truncated_component_does_not_compile(sandbox: Sandbox) -> None:
    with pytest.raises(ModuleError, match="does not compile"):
        sandbox.load(ECHO[: len(ECHO) // 2], source="half.wasm")


def test_a_component_of_another_world_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    wit = tmp_path / "other.wit"
    wit.write_text(
        "package acme:thing@1.0.0;\ninterface run { go: func() -> u32; }\nworld thing { export run; }\n"
    )
    other = watkit.component_from_core_wat(
        '(module (memory (export "memory") 1) (func (export "acme:thing/run@1.0.0#go") (result i32) i32.const 7))',
        world="thing",
        wit=wit,
    )
    with pytest.raises(ModuleError, match=r"does not export exactly one of dagr:agent/handler@0\.1\.0"):
        sandbox.load(other, source="other.wasm")


def test_a_component_importing_what_the_host_does_not_provide_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    wit = tmp_path / "greedy.wit"
    agent_wit = (watkit.WIT / "agent.wit").read_text()
    wit.write_text(
        agent_wit.replace("    export handler;", "    import acme:secrets/vault@1.0.0;\n    export handler;")
        + "\npackage acme:secrets@1.0.0 { interface vault { read: func() -> u32; } }\n"
    )
    core = watkit.core_module(
        "(drop (call $read)) (call $ok (i32.const 0) (i32.const 0))",
        extra='  (import "acme:secrets/vault@1.0.0" "read" (func $read (result i32)))\n',
    )
    # Imports must come first in a core module: move the extra import up.
    core = core.replace(
        '  (import "acme:secrets/vault@1.0.0" "read" (func $read (result i32)))\n', ""
    ).replace(
        "(module\n", '(module\n  (import "acme:secrets/vault@1.0.0" "read" (func $read (result i32)))\n'
    )
    greedy = watkit.component_from_core_wat(core, wit=wit)
    with pytest.raises(
        ModuleError, match=r"imports acme:secrets/vault@1\.0\.0, which a dagr host does not provide"
    ):
        sandbox.load(greedy, source="greedy.wasm")


def test_a_missing_file_is_a_clear_error(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="does not exist"):
        sandbox.load_file(tmp_path / "nope.wasm")
