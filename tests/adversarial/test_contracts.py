"""Class 7: look-alike contracts. A component whose imports or handler have any other type than the
host's is refused at load, and nothing of it is stored.

Before: host functions were linked untyped, so a component declaring ``enum scope`` with an extra
case linked, and reached specialist-shared state without the grant (instance A wrote, B read).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import watkit
from arena import WASI_WIT, Arena, attacker_wit, wat_agent

from dagr_wasm.errors import ModuleError
from dagr_wasm.sandbox import Sandbox

AGENT_WIT = (watkit.WIT / "agent.wit").read_text()

# state.put(scope, "k", "k") with the scope index from the context's length, then ok.
PUT_WITH_SCOPE = """
    (call $state_put (local.get $p2) (i32.const 1024) (i32.const 1) (i32.const 1024) (i32.const 1)
                     (global.get $retarea))
    (call $ok (i32.const 0) (i32.const 0))
"""


def _look_alike(tmp_path: Path, old: str, new: str) -> Path:
    assert old in AGENT_WIT, old
    return attacker_wit(tmp_path, contract=AGENT_WIT.replace(old, new))


CASES = {
    "an enum with an extra case": (
        "        specialist,\n    }",
        "        specialist,\n        everyone,\n    }",
        r"state@0\.1\.0: it imports `\w+` as func\(scope: enum\{instance, specialist, everyone\}",
    ),
    "a renamed enum case": (
        "        instance,\n",
        "        everyone,\n",
        r"imports `\w+` as func\(scope: enum\{everyone, specialist\}",
    ),
    "a parameter of another type": (
        "put: func(scope: scope, key: string, value: list<u8>)",
        "put: func(scope: scope, key: string, value: string)",
        r"imports `put` as",
    ),
    "an error variant with an extra case": (
        "        unavailable(string),\n    }",
        "        unavailable(string),\n        granted(string),\n    }",
        r"but the host provides",
    ),
    "a handler of another type": (
        "handle: func(event: event) -> result<list<u8>, string>;",
        "handle: func(event: event) -> result<string, string>;",
        r"handler@0\.1\.0#handle is func\(event: .*\) -> result<string, string>, not the contract's",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_look_alike_contract_is_refused_at_load_and_never_stored(
    arena: Arena, sandbox: Sandbox, tmp_path: Path, case: str
) -> None:
    old, new, message = CASES[case]
    wasm = wat_agent(PUT_WITH_SCOPE, wit=_look_alike(tmp_path, old, new))
    with pytest.raises(ModuleError, match=message) as refused:
        sandbox.load(wasm, source=case)
    assert refused.value.exit_code == 2
    # `dagr deploy` loads before it stores: the registry and the modules bucket are untouched.
    name = f"look-alike-{uuid.uuid4().hex[:8]}"
    registry_before = await arena.mesh.js.stream_info("KV_dagr-registry")
    modules_before = await arena.mesh.js.stream_info("OBJ_dagr-modules")
    code = _deploy(arena, tmp_path, wasm, name)
    assert code == 2
    assert await arena.mesh.registry.current(name) is None
    assert (
        await arena.mesh.js.stream_info("KV_dagr-registry")
    ).state.messages == registry_before.state.messages
    assert (
        await arena.mesh.js.stream_info("OBJ_dagr-modules")
    ).state.messages == modules_before.state.messages


def _deploy(arena: Arena, tmp_path: Path, wasm: bytes, name: str) -> int:
    import subprocess
    import sys

    module = tmp_path / f"{name}.wasm"
    module.write_bytes(wasm)
    manifest = tmp_path / f"{name}.toml"
    manifest.write_text(f'name = "{name}"\n')
    dagr = Path(sys.executable).parent / "dagr"
    done = subprocess.run(
        [str(dagr), "deploy", str(module), "--manifest", str(manifest), *arena.cli_flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "not a dagr agent component" in done.stderr, done.stderr
    return done.returncode


WASI_LOOK_ALIKES = {
    "random bytes with a string length": (
        "get-random-bytes: func(len: u64) -> list<u8>;",
        "get-random-bytes: func(len: string) -> list<u8>;",
        '(import "wasi:random/random@0.2.0" "get-random-bytes" (func (param i32 i32 i32)))',
        "    import wasi:random/random@0.2.0;\n",
        r"random@0\.2\.0: it imports `get-random-bytes` as func\(len: string\)",
    ),
    "a WASI version the host does not provide": (
        "package wasi:random@0.2.0 {",
        "package wasi:random@0.3.0 {",
        '(import "wasi:random/random@0.3.0" "get-random-bytes" (func (param i64 i32)))',
        "    import wasi:random/random@0.3.0;\n",
        r"wasi:random/random@0\.3\.0, but this host provides WASI 0\.2\.0 to 0\.2\.9",
    ),
    "a resource the host does not define there": (
        "interface random { get-random-bytes: func(len: u64) -> list<u8>; }",
        "interface random { resource vault { open: func() -> u32; } get-random-bytes: func(len: u64) -> list<u8>; }",
        '(import "wasi:random/random@0.2.0" "[method]vault.open" (func (param i32) (result i32)))',
        "    import wasi:random/random@0.2.0;\n",
        r"declares resources vault",
    ),
}


@pytest.mark.parametrize("case", list(WASI_LOOK_ALIKES))
def test_a_look_alike_wasi_import_is_refused(sandbox: Sandbox, tmp_path: Path, case: str) -> None:
    old, new, core_import, world_import, message = WASI_LOOK_ALIKES[case]
    wit = attacker_wit(tmp_path, imports=world_import)
    wit.write_text(wit.read_text().replace(WASI_WIT, WASI_WIT.replace(old, new)))
    wasm = wat_agent("(call $ok (i32.const 0) (i32.const 0))", imports=f"  {core_import}\n", wit=wit)
    with pytest.raises(ModuleError, match=message):
        sandbox.load(wasm, source=case)


def test_an_import_of_an_unknown_interface_version_of_the_contract_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    wit = attacker_wit(
        tmp_path, contract=AGENT_WIT.replace("package dagr:agent@0.1.0;", "package dagr:agent@0.1.1;")
    )
    body = "(call $ok (i32.const 0) (i32.const 0))"
    core = watkit.core_module(body).replace("@0.1.0", "@0.1.1")
    wasm = watkit.component_from_core_wat(core, wit=wit)
    with pytest.raises(ModuleError, match=r"does not export exactly one of dagr:agent/handler@0\.1\.0 or "):
        sandbox.load(wasm)


def test_imports_of_another_contract_version_than_the_handler_are_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # A 0.1.0 handler reaching for 0.2.0's http.fetch: one component, one contract.
    extra = """
package dagr:agent@0.2.0 {
  interface http { fetch: func(url: string) -> string; }
}
"""
    wit = attacker_wit(tmp_path, imports="    import dagr:agent/http@0.2.0;\n", extra=extra)
    imports = '  (import "dagr:agent/http@0.2.0" "fetch" (func $fetch (param i32 i32 i32)))\n'
    wasm = wat_agent("(call $ok (i32.const 0) (i32.const 0))", imports=imports, wit=wit)
    with pytest.raises(ModuleError, match=r"exports the handler of contract 0\.1\.0"):
        sandbox.load(wasm)
