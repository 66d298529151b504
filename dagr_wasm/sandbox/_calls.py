"""Calls into a component with its types resolved once, not at every call.

wasmtime-py's ``Func.__call__`` asks the function for its type at every call, then each variant,
result and option type for its cases, every one through several ctypes calls whose objects are
freed again one by one: py-spy on a host working through trivial invocations found ~40 % of the
wasm threads' samples there (benchmarks/profile_host.py), all of it Python holding the GIL the
event loop needs. The handler's parameter and result types are the same for every call of one
component, so ``HandlerCall`` resolves them once per component and keeps them; the cases of a
variant-like type are remembered on the type object (types are immutable). The conversions
themselves stay wasmtime-py's.

``install()`` puts the memo in place once, at import of ``dagr_wasm.sandbox`` (wasmtime-py 50 is
pinned; ``tests/unit/test_calls.py`` checks the memoized cases against wasmtime-py's own).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import Func
from wasmtime.component import _types as types_mod
from wasmtime.component._enter import enter_wasm

__all__ = ["HandlerCall", "install"]

_installed = False
_MEMO = "_dagr_cases"
_TAGGED = "_dagr_tagged"


def _memoized(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def cases(self: Any) -> Any:
        found = self.__dict__.get(_MEMO)
        if found is None:
            found = self.__dict__[_MEMO] = original(self)
        return found

    return cases


def _tagged_memo(original: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def tagged(self: Any) -> bool:
        found = self.__dict__.get(_TAGGED)
        if found is None:
            found = self.__dict__[_TAGGED] = original(self)
        return bool(found)

    return tagged


def install() -> None:
    """Remember the cases of variant, result and option types on the type object; idempotent."""
    global _installed
    if _installed:
        return
    for cls in (types_mod.VariantType, types_mod.ResultType, types_mod.OptionType):
        cls._cases = _memoized(cls._cases)  # type: ignore[method-assign,assignment]
    types_mod.VariantLikeType._tagged = _tagged_memo(types_mod.VariantLikeType._tagged)  # type: ignore[method-assign,assignment]
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
