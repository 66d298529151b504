"""Measured linear memory: a wasmtime memory creator that knows every memory's size.

wasmtime-py exposes no resource-limiter callbacks, so the only way to learn how much memory an
invocation used (and whether a ``memory.grow`` was refused) is to own the memories: this module
allocates them (mmap, grown with mprotect) and reports the high-water mark to the invocation's
recorder. Owning memories rules out copy-on-write initialisation, which makes instantiating an
18 MB Python agent ~6 ms instead of ~0.7 ms, so it is a mode: ``dagr run`` (the author's inner loop)
measures; hosts do not, and report ``peak_memory_bytes = None``.

In this mode the creator also enforces ``Limits.memory_bytes`` per memory (the store limiter is not
given a memory limit), so it can record a refused growth: the guest sees ``memory.grow`` fail as
under the limiter, and the outcome is classified as ``memory-limit`` with certainty.

Safety: a memory is one mapping, reserved up front (``PROT_NONE``) at least as large as wasmtime
asks (its reservation plus guard, which compiled code relies on to elide bounds checks), and it is
never moved. Growth only ever commits pages *inside* that mapping: a growth past the reservation is
refused, whatever the limit says, so a guest can never make the host commit memory it does not
own. 64-bit memories are refused by the engine (``_engine.py``); a memory with no owner (a trial
instantiation) is held to ``UNOWNED_LIMIT_BYTES``.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections.abc import Callable
from typing import Any

from wasmtime import Config
from wasmtime import _bindings as native
from wasmtime import _ffi as ffi

__all__ = ["MemoryMeter", "MeteredMemories"]

_PROT_NONE = 0
_PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
_MAP_PRIVATE_ANON_NORESERVE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value

#: The most a memory created outside any invocation (a load's trial instantiation) may hold.
UNOWNED_LIMIT_BYTES = 64 * 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int


class MeteredMemories:
    """The memories of one Store: their sizes now, the peak of their sum, a refused size."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.sizes: dict[int, int] = {}
        self.peak_bytes = 0
        self.refused: int | None = None

    def total(self) -> int:
        return sum(self.sizes.values())


class _Memory:
    __slots__ = ("base", "capacity", "length", "maximum", "owner", "size")

    def __init__(
        self, base: int, length: int, capacity: int, size: int, maximum: int, owner: MeteredMemories | None
    ) -> None:
        self.base = base
        #: The whole mapping, guard included (what munmap releases).
        self.length = length
        #: The bytes it may ever commit: the mapping without its guard.
        self.capacity = capacity
        self.size = size
        self.maximum = maximum
        self.owner = owner


class MemoryMeter:
    """Installs itself into an engine ``Config``; attributes memories to the running invocation.

    ``current`` returns the ``MeteredMemories`` of the invocation running on the calling thread (the
    thread that instantiates is the thread whose store gets the memory).
    """

    def __init__(self, current: Callable[[], MeteredMemories | None]) -> None:
        self._current = current
        self._memories: dict[int, _Memory] = {}
        self._lock = threading.Lock()
        self._next = 1
        # ctypes callbacks must stay referenced for as long as the engine lives.
        self._get = native.wasmtime_memory_get_callback_t(self._get_memory)
        self._grow = native.wasmtime_memory_grow_callback_t(self._grow_memory)
        self._free = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._finalize)
        self._new = native.wasmtime_new_memory_callback_t(self._new_memory)
        self._noop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)
        self._creator = native.wasmtime_memory_creator_t(None, self._new, self._noop)

    def install(self, config: Config) -> None:
        # Memories we own cannot be copy-on-write images; wasmtime panics if asked to try.
        config.memory_init_cow = False
        ffi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(self._creator))

    # -- callbacks (called by wasmtime, on the thread running the guest) ---------------------------

    def _new_memory(
        self, _env: Any, _ty: Any, minimum: int, maximum: int, reserved: int, guard: int, out: Any
    ) -> int:
        try:
            owner = self._current()
            limit = owner.limit_bytes if owner is not None else UNOWNED_LIMIT_BYTES
            if minimum > limit:
                if owner is not None:
                    owner.refused = minimum
                return _error("dagr: memory limit")
            # At least what wasmtime reserves (compiled code may skip bounds checks within it), and
            # room to grow to the limit in place: the memory never moves.
            capacity = max(reserved, minimum, min(maximum or limit, limit))
            length = capacity + guard
            base = _libc.mmap(None, length, _PROT_NONE, _MAP_PRIVATE_ANON_NORESERVE, -1, 0)
            if base is None or base == _MAP_FAILED:
                return _error("dagr: could not reserve linear memory")
            if minimum and _libc.mprotect(base, minimum, _PROT_RW) != 0:
                _libc.munmap(base, length)
                return _error("dagr: could not commit linear memory")
            ceiling = min(maximum or capacity, capacity)
            with self._lock:
                key = self._next
                self._next += 1
                self._memories[key] = _Memory(base, length, capacity, minimum, ceiling, owner)
            if owner is not None:
                owner.sizes[key] = minimum
                owner.peak_bytes = max(owner.peak_bytes, owner.total())
            out.contents.env = key
            out.contents.get_memory = self._get
            out.contents.grow_memory = self._grow
            out.contents.finalizer = self._free
            return 0
        except Exception:  # never let a Python exception unwind into wasmtime
            return _error("dagr: memory creator failed")

    def _get_memory(self, env: Any, size_out: Any, max_out: Any) -> int:
        memory = self._memories[int(env)]
        size_out[0] = memory.size
        max_out[0] = memory.maximum
        return memory.base

    def _grow_memory(self, env: Any, new_size: int) -> int:
        try:
            key = int(env)
            memory = self._memories[key]
            owner = memory.owner
            limit = owner.limit_bytes if owner is not None else UNOWNED_LIMIT_BYTES
            # Per memory, like the store limiter a host uses: the limit is what each may grow to.
            if new_size > limit:
                if owner is not None:
                    owner.refused = new_size
                return _error("dagr: memory limit")
            # Never past the mapping, whatever the limit: beyond it lies memory the host owns.
            if new_size > memory.capacity or new_size > memory.maximum:
                if owner is not None:
                    owner.refused = new_size
                return _error("dagr: growth past the memory's reservation")
            if new_size > memory.size and _libc.mprotect(memory.base, new_size, _PROT_RW) != 0:
                return _error("dagr: could not commit linear memory")
            memory.size = new_size
            if owner is not None:
                owner.sizes[key] = new_size
                owner.peak_bytes = max(owner.peak_bytes, owner.total())
            return 0
        except Exception:
            return _error("dagr: memory grow failed")

    def _finalize(self, env: Any) -> None:
        with self._lock:
            memory = self._memories.pop(int(env), None)
        if memory is not None:
            _libc.munmap(memory.base, memory.length)


def _error(message: str) -> int:
    pointer = ffi.wasmtime_error_new(message.encode())
    value = ctypes.cast(pointer, ctypes.c_void_p).value
    return int(value or 0)
