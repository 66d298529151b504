"""The list<u8> fast path converts exactly like wasmtime-py's own conversion, in both directions."""

from __future__ import annotations

import random

import pytest
from wasmtime import Config, Engine, Store
from wasmtime.component import Component, Linker, ListType

from dagr_wasm.sandbox import _bytes, bytes_fastpath_installed

# give(n): returns n bytes of memory starting at 4096 (filled by the caller through take).
# take(b): copies b to 4096 and returns the sum of its bytes.
WAT = r"""
(component
  (core module $m
    (memory (export "mem") 64)
    (global $bump (mut i32) (i32.const 1048576))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (local.get 3)))
      (local.get $p))
    (func (export "give") (param $n i32) (result i32)
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (local.get $n))
      (i32.const 0))
    (func (export "take") (param $ptr i32) (param $len i32) (result i32)
      (local $i i32) (local $sum i32)
      (memory.copy (i32.const 4096) (local.get $ptr) (local.get $len))
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (local.get $sum)))
  (core instance $i (instantiate $m))
  (func (export "give") (param "n" u32) (result (list u8))
    (canon lift (core func $i "give") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
  (func (export "take") (param "b" (list u8)) (result u32)
    (canon lift (core func $i "take") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
)
"""


@pytest.fixture(scope="module")
def roundtrip() -> object:
    config = Config()
    config.wasm_component_model = True
    engine = Engine(config)
    component = Component(engine, WAT)
    linker = Linker(engine)

    def run(payload: bytes) -> tuple[bytes, int]:
        store = Store(engine)
        instance = linker.instantiate(store, component)
        take = instance.get_func(store, "take")
        total = take(store, payload)
        take.post_return(store)
        give = instance.get_func(store, "give")
        back = give(store, len(payload))
        give.post_return(store)
        store.close()
        return back, total

    return run


def test_the_fast_path_is_installed() -> None:
    assert bytes_fastpath_installed()


@pytest.mark.parametrize("size", [0, 1, 2, 31, 32, 33, 1000, 65_537])
def test_fast_path_matches_the_original(
    roundtrip: object, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = random.Random(size).randbytes(size)
    fast = roundtrip(payload)  # type: ignore[operator]
    assert fast == (payload, sum(payload))

    lift, lower = _bytes.original_conversions()
    monkeypatch.setattr(ListType, "convert_from_c", lift)
    monkeypatch.setattr(ListType, "convert_to_c", lower)
    assert roundtrip(payload) == fast  # type: ignore[operator]


def test_lowering_rejects_what_is_not_bytes(roundtrip: object) -> None:
    with pytest.raises(TypeError, match="expected bytes"):
        roundtrip([1, 2, 3])  # type: ignore[operator]
