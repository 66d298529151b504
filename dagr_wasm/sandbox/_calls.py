"""Calls across the component boundary with their types resolved once, not at every call.

wasmtime-py's ``Func.__call__`` asks the function for its type at every call, then each variant,
result and option type for its cases, every one through several ctypes calls whose objects are
freed again one by one: py-spy on a host working through trivial invocations found ~40 % of the
wasm threads' samples there (benchmarks/profile_host.py), all of it Python holding the GIL the
event loop needs. The handler's parameter and result types are the same for every call of one
component, so ``HandlerCall`` resolves them once per component and keeps them; the cases of a
variant-like type, and whether a list type is a byte list, are remembered on the type object
(types are immutable). Host functions, the
other direction, are registered with ``add_host_func``: its trampoline reads a function's types at
its first call and keeps them (a Python agent makes ~20 host calls an invocation, each of which
had its types rebuilt and freed: ~20 % of a Python echo's wasm-thread samples). The conversions
themselves stay wasmtime-py's, and so does the exception handling (``catch_exceptions``).

``install()`` puts the memo in place once, at import of ``dagr_wasm.sandbox`` (wasmtime-py 50 is
pinned; ``tests/unit/test_calls.py`` checks the memoized cases against wasmtime-py's own).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, TypeVar

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Func, LinkerInstance
from wasmtime.component import _types as types_mod
from wasmtime.component._enter import catch_exceptions, enter_wasm

__all__ = ["HandlerCall", "add_host_func", "install"]

T = TypeVar("T")

_installed = False
_CASES = "_dagr_cases"
_TAGGED = "_dagr_tagged"
_BYTES = "_dagr_bytes"


def _remembered(original: Callable[[Any], T], key: str) -> Callable[[Any], T]:
    """``original`` (a method of an immutable type) answered once per object, kept under ``key``."""

    def remembered(self: Any) -> T:
        found: T | None = self.__dict__.get(key)
        if found is None:
            found = self.__dict__[key] = original(self)
        return found

    return remembered


def install() -> None:
    """Remember the cases of variant, result and option types, and whether a list type holds
    bytes, on the type object; idempotent."""
    global _installed
    if _installed:
        return
    for cls in (types_mod.VariantType, types_mod.ResultType, types_mod.OptionType):
        cls._cases = _remembered(cls._cases, _CASES)  # type: ignore[method-assign,assignment]
    types_mod.VariantLikeType._tagged = _remembered(types_mod.VariantLikeType._tagged, _TAGGED)  # type: ignore[method-assign,assignment]
    # Whether a list is a byte list: asked at every lift and lower of one (each WASI random call's
    # answer, every payload), each time through a new element type made and freed.
    types_mod.ListType._is_bytes = _remembered(types_mod.ListType._is_bytes, _BYTES)  # type: ignore[method-assign,assignment]
    _installed = True


class HandlerCall:
    """The exported ``handle`` function's types, resolved once for one component, and a call
    through them. Safe to share between threads: nothing in it changes after construction."""

    __slots__ = ("_func_type", "_param", "_result")

    def __init__(self, func: Func, store: Any) -> None:
        # Kept: the parameter and result types are handles of their own, but the function type
        # is what they were read from.
        self._func_type = func.type(store)
        params = self._func_type.params
        if len(params) != 1 or self._func_type.result is None:
            raise TypeError("the handler takes one event and returns a result")
        self._param = params[0][1]
        self._result = self._func_type.result

    def __call__(self, func: Func, store: Any, event: Any) -> Any:
        """What ``func(store, event)`` does, with the types already known."""
        params = (ffi.wasmtime_component_val_t * 1)()
        self._param.convert_to_c(store, event, ctypes.pointer(params[0]))
        try:
            result = ffi.wasmtime_component_val_t()

            def run() -> Any:
                return ffi.wasmtime_component_func_call(
                    ctypes.byref(func._func), store._context(), params, 1, ctypes.byref(result), 1
                )

            enter_wasm(run)
            return self._result.convert_from_c(result)
        finally:
            ffi.wasmtime_component_val_delete(ctypes.byref(params[0]))


class _HostFunc:
    """One registered host function and, once it has been called, its parameter and result types."""

    __slots__ = ("fn", "params", "result")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.params: list[Any] | None = None
        self.result: Any = None


#: Every host function registered through ``add_host_func``, by index (linkers live as long as
#: their sandbox, which lives as long as the process in a host: entries are never removed).
_HOST_FUNCS: list[_HostFunc] = []


@ffi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _host_trampoline(
    idx: Any, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int
) -> Any:
    entry = _HOST_FUNCS[idx or 0]

    def run(store: Any) -> None:
        params = entry.params
        if params is None:
            # Borrowed from the call (owner: the store); the value types read from it are handles
            # of their own, valid after it.
            with types_mod.FuncType._from_ptr(ty_raw, owner=store) as func_type:
                entry.result = func_type.result
                params = entry.params = [ty for _name, ty in func_type.params]
        if len(params) != nargs or (entry.result is None) != (nresults == 0):
            raise WasmtimeError("a host function was called with a type it was not registered with")
        value = entry.fn(store, *(ty.convert_from_c(args[i]) for i, ty in enumerate(params)))
        if entry.result is not None:
            entry.result.convert_to_c(store, value, results)

    return catch_exceptions(context, run)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # type: ignore[untyped-decorator]
def _keep(idx: Any) -> None:
    """Entries stay: an index is never reused, so a late call can never reach another function."""


def add_host_func(instance: LinkerInstance, name: str, fn: Callable[..., Any]) -> None:
    """``instance.add_func(name, fn)``, through the trampoline that keeps the function's types."""
    _HOST_FUNCS.append(_HostFunc(fn))
    raw_name = name.encode("utf-8")
    buffer = ctypes.create_string_buffer(raw_name)
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), buffer, len(raw_name), _host_trampoline, len(_HOST_FUNCS) - 1, _keep
    )
    if error:
        raise WasmtimeError._from_ptr(error)
