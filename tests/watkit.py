"""Tiny agents written in WAT, made into real dagr:agent components with wasm-tools.

A test writes the body of the core function behind ``handler.handle`` (plus any helpers); this
module wraps it in a core module that speaks the canonical ABI of ``wit/agent.wit``, then runs
``wasm-tools component embed`` + ``component new`` against the real WIT, so every WAT agent is a
component of exactly the world real agents target. Results are cached by content hash.

The core ``handle`` has 8 i32 parameters (the flattened ``event`` variant: discriminant, then the
joined payload slots) and returns a pointer to a return area holding ``result<list<u8>, string>``.
Helpers available to a body:

- ``$ok (ptr len) -> i32`` / ``$err (ptr len) -> i32``: build the return area;
- ``$log (level ptr len)``: ``log.log``; ``$retarea``: a 64-byte scratch area for host results;
- ``$alloc (size) -> ptr``: bump allocation, also used by ``cabi_realloc``;
- data strings are placed with ``(data (i32.const N) "...")`` by the test (use offsets >= 1024).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wasmtime import wat2wasm

ROOT = Path(__file__).resolve().parents[1]
WIT = ROOT / "wit" / "0.1.0"  # the 0.1.0 contract: WAT agents also prove it keeps working
_CACHE = Path(tempfile.gettempdir()) / "dagr-test-wat"

# Imports a body may use; unused ones are dropped by `component new`.
IMPORTS = """
  (import "dagr:agent/log@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "dagr:agent/state@0.1.0" "put" (func $state_put (param i32 i32 i32 i32 i32 i32)))
  (import "dagr:agent/state@0.1.0" "get" (func $state_get (param i32 i32 i32 i32)))
  (import "dagr:agent/messaging@0.1.0" "publish" (func $publish (param i32 i32 i32 i32 i32)))
  (import "dagr:agent/swarm@0.1.0" "spawn" (func $spawn (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "dagr:agent/lifecycle@0.1.0" "suspend" (func $suspend (param i32 i64 i32 i32 i32)))
  (import "dagr:agent/config@0.1.0" "get" (func $config_get (param i32)))
"""

PRELUDE = """
  (memory (export "memory") {pages} {max_pages})
  (global $heap (mut i32) (i32.const 32768))
  (global $retarea i32 (i32.const 256))
  (global $out i32 (i32.const 512))
  (func $alloc (param $size i32) (result i32)
    (local $p i32)
    ;; 8-byte alignment is enough for every type in the contract.
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.div_u (i32.sub (global.get $heap)
                  (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1)))
                  (i32.const -1)) (then unreachable))))
    (local.get $p))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (call $alloc (local.get 3)))
  (func $ok (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (global.get $out) (i32.const 0))
    (i32.store offset=4 (global.get $out) (local.get $ptr))
    (i32.store offset=8 (global.get $out) (local.get $len))
    (global.get $out))
  (func $err (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (global.get $out) (i32.const 1))
    (i32.store offset=4 (global.get $out) (local.get $ptr))
    (i32.store offset=8 (global.get $out) (local.get $len))
    (global.get $out))
"""

HANDLE = """
  (func (export "dagr:agent/handler@0.1.0#handle")
        (param $tag i32) (param $p1 i32) (param $p2 i32) (param $p3 i32)
        (param $p4 i32) (param $p5 i32) (param $p6 i32) (param $p7 i32) (result i32)
    {locals}
    {body})
"""


def core_module(
    body: str, *, extra: str = "", locals_: str = "", pages: int = 1, max_pages: int | None = None
) -> str:
    """The WAT text of a core module implementing ``handle`` with ``body``."""
    return (
        "(module\n"
        + IMPORTS
        + PRELUDE.format(pages=pages, max_pages="" if max_pages is None else max_pages)
        + extra
        + HANDLE.format(body=body, locals=locals_)
        + ")\n"
    )


def wasm_tools() -> str:
    beside = Path(sys.executable).parent / "wasm-tools"
    found = str(beside) if beside.is_file() else shutil.which("wasm-tools")
    if found is None:
        raise RuntimeError("wasm-tools not found: install the dev extra (pip install -e '.[dev]')")
    return found


def component(body: str, **kwargs: object) -> bytes:
    """A dagr:agent component whose ``handle`` runs ``body`` (see module docstring)."""
    wat = core_module(body, **kwargs)  # type: ignore[arg-type]
    return component_from_core_wat(wat)


def component_from_core_wat(wat: str, *, world: str = "agent", wit: Path = WIT) -> bytes:
    key = hashlib.sha256(f"{world}\n{wit}\n{_wit_digest(wit)}\n{wat}".encode()).hexdigest()[:24]
    _CACHE.mkdir(parents=True, exist_ok=True)
    out = _CACHE / f"{key}.wasm"
    if out.exists():
        return out.read_bytes()
    core = _CACHE / f"{key}.core.wasm"
    embedded = _CACHE / f"{key}.embed.wasm"
    core.write_bytes(wat2wasm(wat))
    tool = wasm_tools()
    subprocess.run(
        [tool, "component", "embed", str(wit), str(core), "--world", world, "-o", str(embedded)],
        check=True,
        capture_output=True,
    )
    tmp = _CACHE / f"{key}.tmp.wasm"
    subprocess.run([tool, "component", "new", str(embedded), "-o", str(tmp)], check=True, capture_output=True)
    tmp.replace(out)
    return out.read_bytes()


def _wit_digest(wit: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(wit.rglob("*.wit")) if wit.is_dir() else [wit]:
        h.update(path.read_bytes())
    return h.hexdigest()


def data(offset: int, text: str | bytes) -> str:
    """A ``(data ...)`` segment placing ``text`` at ``offset``; escape every byte."""
    raw = text.encode() if isinstance(text, str) else text
    escaped = "".join(f"\\{b:02x}" for b in raw)
    return f'  (data (i32.const {offset}) "{escaped}")\n'
