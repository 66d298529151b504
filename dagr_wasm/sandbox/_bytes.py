"""A fast path for ``list<u8>`` values crossing the wasmtime-py boundary.

wasmtime-py converts a ``list<u8>`` one element at a time through Python: measured on this machine,
lifting 1 MB takes 0.64 s and lowering it 0.87 s, with the GIL held the whole time. Every payload in
the dagr contract is a ``list<u8>`` (results, state values, publishes), so an agent returning a
large result would stall the host's event loop. This module replaces the two conversions for byte
lists with bulk copies over the C value array (``wasmtime_component_val_t`` is 32 bytes: a kind
byte, then the payload at offset 8).

It is installed once, at import of ``dagr_wasm.sandbox``, only if the layout is exactly the one
this code was written against (wasmtime-py 50, pinned in pyproject.toml); otherwise wasmtime-py's
own conversion stays in place and ``installed()`` says so. ``tests/unit/test_bytes_fastpath.py``
checks both directions against the original implementation.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _types as ctypes_mod

_VAL_SIZE = 32
_PAYLOAD_OFFSET = 8

_original_from_c: Callable[..., Any] = ctypes_mod.ListType.convert_from_c
_original_to_c: Callable[..., Any] = ctypes_mod.ListType.convert_to_c
_installed = False


def _layout_matches() -> bool:
    val_t = ffi.wasmtime_component_val_t
    return (
        ctypes.sizeof(val_t) == _VAL_SIZE
        and val_t.of.offset == _PAYLOAD_OFFSET
        and val_t.kind.offset == 0
        and ffi.WASMTIME_COMPONENT_U8.value == 2
        and ctypes.sizeof(ffi.wasmtime_component_vallist_t) == 16
    )


def _convert_from_c(self: Any, c: Any) -> Any:
    if not self._is_bytes():
        return _original_from_c(self, c)
    assert c.kind == ffi.WASMTIME_COMPONENT_LIST.value
    vallist = c.of.list
    try:
        size = vallist.size
        if size == 0:
            return b""
        raw = ctypes.string_at(vallist.data, size * _VAL_SIZE)
        return raw[_PAYLOAD_OFFSET::_VAL_SIZE]
    finally:
        # The elements are plain u8 values: nothing inside them to free one by one.
        ffi.wasmtime_component_vallist_delete(ctypes.byref(vallist))


def _convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if not self._is_bytes():
        _original_to_c(self, store, val, ptr)
        return
    if not isinstance(val, bytes | bytearray | memoryview):
        raise TypeError("expected bytes value")
    data = bytes(val)
    size = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, size)
    if size:
        image = bytearray(size * _VAL_SIZE)
        image[0::_VAL_SIZE] = bytes([ffi.WASMTIME_COMPONENT_U8.value]) * size
        image[_PAYLOAD_OFFSET::_VAL_SIZE] = data
        ctypes.memmove(raw.data, (ctypes.c_char * len(image)).from_buffer(image), len(image))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def install() -> bool:
    """Install the fast path if the value layout is the expected one; idempotent."""
    global _installed
    if _installed:
        return True
    if not _layout_matches():
        return False
    ctypes_mod.ListType.convert_from_c = _convert_from_c  # type: ignore[method-assign]
    ctypes_mod.ListType.convert_to_c = _convert_to_c  # type: ignore[method-assign]
    _installed = True
    return True


def installed() -> bool:
    """Whether byte lists take the fast path in this process."""
    return _installed


def original_conversions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """wasmtime-py's own (lift, lower) for lists, for tests that compare against them."""
    return _original_from_c, _original_to_c
