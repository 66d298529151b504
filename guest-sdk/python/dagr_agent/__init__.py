"""dagr_agent: write dagr agents in plain Python; build them into components with componentize-py.

An agent is an ``Agent`` subclass (or plain functions) turned into the exported ``Handler``::

    import dagr_agent as dagr

    class Counter(dagr.Agent):
        def on_start(self, ctx: dagr.Context, context: str) -> object:
            n = ctx.state.get("count", 0) + 1
            ctx.state.put("count", n)
            return {"count": n}

    Handler = dagr.handler(Counter)

Results are CBOR-encoded into the ``ok`` payload; ``raise Fail(msg)`` is the ``err`` result; a
refused host call raises a ``HostError`` subclass, which traps the instance unless caught. See
README.md next to this package for the whole API and how it maps onto ``dagr:agent@0.3.0``.
"""

from __future__ import annotations

from ._agent import Agent, handler
from ._await import Handle, Http, HttpResponse, Result, Resumed, Signals
from ._context import Context, Log, Reply, State
from ._errors import Conflict, Denied, Fail, HostError, Invalid, NotFound, QuotaExceeded, Unavailable
from ._model import ChatResponse, Model, ToolCall
from ._tools import ToolAgent, tool_definition

__all__ = [
    "Agent",
    "ChatResponse",
    "Conflict",
    "Context",
    "Denied",
    "Fail",
    "Handle",
    "HostError",
    "Http",
    "HttpResponse",
    "Invalid",
    "Log",
    "Model",
    "NotFound",
    "QuotaExceeded",
    "Reply",
    "Result",
    "Resumed",
    "Signals",
    "State",
    "ToolAgent",
    "ToolCall",
    "Unavailable",
    "handler",
    "tool_definition",
]
