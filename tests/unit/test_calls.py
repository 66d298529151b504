"""Calls with their types resolved once (dagr_wasm/sandbox/_calls.py): the same values as
wasmtime-py's own path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import watkit
from wasmtime import Store
from wasmtime.component import U8, Func

from dagr_wasm.invocation import Start
from dagr_wasm.policy import Limits
from dagr_wasm.sandbox import Sandbox
from dagr_wasm.sandbox._calls import HandlerCall
from dagr_wasm.sandbox._runner import _limit_store, _to_wit

#: Returns its start context as its result.
ECHO_WAT = watkit.component("(call $ok (local.get $p1) (local.get $p2))")


@contextmanager
def handler(sandbox: Sandbox) -> Iterator[tuple[Func, Store, str]]:
    """The echo component's handler in a fresh store: (its function, the store, its contract)."""
    agent = sandbox.load(ECHO_WAT, source="echo-wat")
    store = Store(sandbox._engine)
    try:
        _limit_store(store, Limits(), tick_ms=sandbox.settings.epoch_tick_ms)
        instance = sandbox._linker.instantiate(store, agent.component)
        handle = instance.get_func(store, agent.handle_index)
        assert handle is not None
        yield handle, store, agent.contract
    finally:
        store.close()


def test_a_handler_call_returns_what_the_plain_call_returns(sandbox: Sandbox) -> None:
    for context in ("", "hello", "ünïcode " * 100):
        values = []
        for prepared in (False, True):
            with handler(sandbox) as (handle, store, contract):
                event = _to_wit(Start(context), contract)
                values.append(
                    HandlerCall(handle, store)(handle, store, event) if prepared else handle(store, event)
                )
                handle.post_return(store)
        assert values == [context.encode()] * 2


def test_the_cases_of_a_variant_are_wasmtime_pys_and_are_kept_on_the_type(sandbox: Sandbox) -> None:
    with handler(sandbox) as (handle, store, _contract):
        event_type = handle.type(store).params[0][1]
        first = event_type._cases()
        assert first is event_type._cases()  # remembered, not asked again
        assert [name for name, _ in first] == [name for name, _ in event_type.cases]
        assert event_type._tagged() is True  # start and wake both carry a string


def test_whether_a_list_holds_bytes_is_wasmtime_pys_answer_and_is_kept_on_the_type(
    sandbox: Sandbox,
) -> None:
    with handler(sandbox) as (handle, store, _contract):
        payload_type = handle.type(store).result.ok  # result<list<u8>, string>
        assert isinstance(payload_type.element, U8)
        assert payload_type._is_bytes() is True
        assert payload_type.__dict__["_dagr_bytes"] is True  # remembered, not asked again
        assert payload_type._is_bytes() is True
