"""``Agent``, the base class of an agent, and ``handler``, which turns one into the exported
``Handler`` class componentize-py instantiates.

The wrapper owns the mapping onto the WIT ``handler.handle`` result:

* the callback's return value, CBOR-encoded, is ``ok`` (always CBOR, bytes included);
* ``Fail(message)`` is ``err(message)``;
* anything else that escapes (``HostError``, bugs, an unencodable result) is left to propagate:
  componentize-py prints the traceback to stderr and traps, and the host retries the event or
  dead-letters it with nothing committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, overload

from . import _cbor
from ._await import Resumed
from ._context import Context, Reply, SuspendAccepted
from ._errors import Fail, from_wit

if TYPE_CHECKING:
    from wit_world.imports.types import Event

__all__ = ["Agent", "EventHandler", "handler"]


class Agent:
    """Base class of an agent: override the ``on_*`` callbacks for the events it handles.

    A fresh object is created for every event (instances never outlive an invocation), so keep
    anything that must last in ``ctx.state``. Each callback returns the result (any
    CBOR-encodable value; ``None`` is fine) or raises ``Fail`` to fail deliberately.
    """

    def on_start(self, ctx: Context, context: str) -> object:
        """The instance was spawned with ``context`` (e.g. a task description)."""
        raise Fail(f"{type(self).__name__} does not handle start events")

    def on_wake(self, ctx: Context, resume_context: str) -> object:
        """A ``ctx.suspend(...)`` came due; ``resume_context`` is what was given to it."""
        raise Fail(f"{type(self).__name__} does not handle wake events")

    def on_reply(self, ctx: Context, reply: Reply) -> object:
        """A child replied. The default ignores it and returns None."""
        return None

    def on_message(self, ctx: Context, subject: str, payload: bytes) -> object:
        """A message arrived on a subject this instance listens on. The default ignores it."""
        return None

    def on_resumed(self, ctx: Context, resumed: Resumed) -> object:
        """A ``ctx.await_all`` / ``await_any`` ended: ``resumed`` has the results, the handles
        still pending and whether the deadline passed."""
        raise Fail(f"{type(self).__name__} does not handle resumed events")


class EventHandler(Protocol):
    """What ``handler`` returns: a class matching the generated ``wit_world.exports.Handler``."""

    def handle(self, event: Event) -> bytes: ...


StartFn = Callable[[Context, str], object]
WakeFn = Callable[[Context, str], object]
ReplyFn = Callable[[Context, Reply], object]
MessageFn = Callable[[Context, str, bytes], object]


@overload
def handler(agent: type[Agent], /) -> type[EventHandler]: ...


@overload
def handler(
    *,
    start: StartFn | None = None,
    wake: WakeFn | None = None,
    reply: ReplyFn | None = None,
    message: MessageFn | None = None,
) -> type[EventHandler]: ...


def handler(
    agent: type[Agent] | None = None,
    /,
    *,
    start: StartFn | None = None,
    wake: WakeFn | None = None,
    reply: ReplyFn | None = None,
    message: MessageFn | None = None,
) -> type[EventHandler]:
    """Build the ``Handler`` class for ``app.py``: ``Handler = dagr.handler(MyAgent)``.

    Give an ``Agent`` subclass, or plain functions for the events to handle
    (``dagr.handler(start=lambda ctx, context: ...)``); events without a function behave as in
    ``Agent``. Call it at module level: it runs when the component is built, not per event.
    """
    callbacks = {"start": start, "wake": wake, "reply": reply, "message": message}
    if agent is not None:
        if any(fn is not None for fn in callbacks.values()):
            raise TypeError("handler() takes an Agent subclass or event functions, not both")
        if not (isinstance(agent, type) and issubclass(agent, Agent)):
            raise TypeError(
                f"handler() needs an Agent subclass (the class, not an instance), got {agent!r}; "
                "write `class MyAgent(dagr.Agent): ...` and `Handler = dagr.handler(MyAgent)`"
            )
        agent_cls: type[Agent] = agent
    elif any(fn is not None for fn in callbacks.values()):
        agent_cls = _function_agent(start, wake, reply, message)
    else:
        raise TypeError(
            "handler() needs an Agent subclass or at least one of start=, wake=, reply=, message="
        )

    _preload_bindings()
    _preload_lazy_stdlib()

    class Handler:
        """The exported ``dagr:agent/handler`` implementation; componentize-py instantiates it."""

        def handle(self, event: Event) -> bytes:
            return _handle(agent_cls, event)

    Handler.__qualname__ = f"Handler[{agent_cls.__qualname__}]"
    return Handler


def _function_agent(
    start: StartFn | None, wake: WakeFn | None, reply: ReplyFn | None, message: MessageFn | None
) -> type[Agent]:
    """An ``Agent`` subclass whose callbacks are the given functions."""

    class FunctionAgent(Agent):
        def on_start(self, ctx: Context, context: str) -> object:
            return start(ctx, context) if start is not None else super().on_start(ctx, context)

        def on_wake(self, ctx: Context, resume_context: str) -> object:
            return wake(ctx, resume_context) if wake is not None else super().on_wake(ctx, resume_context)

        def on_reply(self, ctx: Context, r: Reply) -> object:
            return reply(ctx, r) if reply is not None else super().on_reply(ctx, r)

        def on_message(self, ctx: Context, subject: str, payload: bytes) -> object:
            return message(ctx, subject, payload) if message is not None else None

    names = [n for n, fn in (("start", start), ("wake", wake), ("reply", reply), ("message", message)) if fn]
    FunctionAgent.__qualname__ = FunctionAgent.__name__ = f"FunctionAgent({', '.join(names)})"
    return FunctionAgent


#: Standard-library modules other standard-library code imports lazily, inside a function. At run
#: time an instance has no filesystem, so such an import fails there; importing them while the agent
#: is built puts them in the snapshot. Keyed by the module that imports them lazily.
_LAZY_STDLIB = {
    "collections": ("heapq",),  # Counter.most_common(n)
    "datetime": ("_strptime",),  # datetime.strptime
    "time": ("_strptime",),  # time.strptime
    "socket": ("encodings.idna",),  # name resolution
    "json": ("json.decoder", "json.encoder"),
    "decimal": ("numbers",),
    "fractions": ("decimal",),
    "inspect": ("dis", "tokenize"),
    "traceback": ("linecache", "textwrap"),
}


def _preload_lazy_stdlib() -> None:
    import contextlib
    import importlib
    import sys

    for module, lazy in _LAZY_STDLIB.items():
        if module in sys.modules:
            for name in lazy:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)


def _preload_bindings() -> None:
    """Import everything ``handle`` needs while the component is being built.

    componentize-py snapshots the interpreter after importing the app, so modules imported now
    cost nothing per invocation; on the host (no bindings) this is a no-op.
    """
    try:
        import componentize_py_types  # noqa: F401
        import wit_world.imports.config
        import wit_world.imports.http
        import wit_world.imports.identity
        import wit_world.imports.lifecycle
        import wit_world.imports.log
        import wit_world.imports.messaging
        import wit_world.imports.model
        import wit_world.imports.signals
        import wit_world.imports.state
        import wit_world.imports.swarm
        import wit_world.imports.types  # noqa: F401
    except ImportError:
        pass


def _dispatch(agent: Agent, ctx: Context, event: Event) -> object:
    from wit_world.imports.types import Event_Message, Event_Reply, Event_Resumed, Event_Start, Event_Wake

    if isinstance(event, Event_Start):
        return agent.on_start(ctx, event.value)
    if isinstance(event, Event_Wake):
        return agent.on_wake(ctx, event.value)
    if isinstance(event, Event_Reply):
        return agent.on_reply(ctx, Reply._from_wit(event.value))
    if isinstance(event, Event_Message):
        return agent.on_message(ctx, event.value.subject, bytes(event.value.payload))
    if isinstance(event, Event_Resumed):
        return agent.on_resumed(ctx, Resumed._from_wit(event.value))
    raise TypeError(f"unknown event {event!r}; this SDK speaks dagr:agent@0.3.0")


def _handle(agent_cls: type[Agent], event: Event) -> bytes:
    """One invocation: dispatch ``event`` to a fresh agent and map the outcome onto the result."""
    from componentize_py_types import Err

    ctx = Context()
    try:
        result: Any = _dispatch(agent_cls(), ctx, event)
    except Fail as exc:
        raise Err(str(exc.message)) from None
    except SuspendAccepted:
        # The host took the suspend but let us run on: end now, the payload is not delivered.
        return _cbor.dumps(None)
    except Err as exc:
        # An agent that called the bindings directly and let a refused call escape. Left alone,
        # componentize-py would try to return the binding's error object as the `err` string and
        # abort with a confusing message; make it the same trap as any unhandled HostError.
        if not isinstance(exc.value, str):
            raise from_wit(exc.value, "a direct host call") from exc
        raise
    try:
        return _cbor.dumps(result)
    except ValueError as exc:
        raise TypeError(
            f"{agent_cls.__qualname__} returned a result that is not CBOR-encodable: {exc}"
        ) from exc
