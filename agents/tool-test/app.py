"""tool-test: a ``ToolAgent`` exercising plain-function tools and the built-in dagr tools.

For tests/unit/test_tool_agent.py, which scripts the model's answers: ``add`` and ``quote`` have
schemas generated from their type hints, ``explode`` raises, ``whoami`` gets the context
injected; the built-in remember, recall, publish, fetch, wait and wait_until are offered too.
Three turns at most; the result is not published anywhere (no ``report_subject``).
"""

from typing import Any, Literal

import dagr_agent as dagr


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def quote(ticker: Literal["GME", "AMC"], days: int = 30, note: str | None = None) -> dict[str, Any]:
    """The made-up change of a ticker's price over some days.

    Args:
        ticker: which stock.
        days: how many trading days back.
        note: anything to echo back.
    """
    return {"ticker": ticker, "days": days, "change_pct": round(days * 0.5, 2), "note": note}


def explode(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(f"exploded: {reason}")


def whoami(ctx: dagr.Context) -> str:
    """The id of the instance running the tools."""
    return ctx.id


class ToolTest(dagr.ToolAgent):
    tools = (add, quote, explode, whoami)
    dagr_tools = ("remember", "recall", "publish", "fetch", "wait", "wait_until")
    publish_subjects = ("tool-test.out",)
    max_iterations = 3
    turn_timeout_s = 60


Handler = dagr.handler(ToolTest)
