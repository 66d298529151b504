"""Model budgets as plain data: what a call costs (``Spend``), what each instance of a spawn tree
was given (``BudgetNode``), and what is left of it (``BudgetLeft``).

An instance's budget covers itself *and everything it spawns*: a model call is admitted only if it
fits the budget of the calling instance and of every ancestor, after what their subtrees have spent
and hold for calls in flight. So a child's spending comes out of its parent's, and a spawn tree
never spends more than its root was given, however many children share it.

Neither NATS nor wasmtime here: the mesh keeps the counters (``mesh/_budget.py``), the sandbox
refuses a call at once when nothing is left, and both read these records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .chat import ChatRequest, request_doc

__all__ = ["BudgetLeft", "BudgetNode", "Spend", "call_estimate"]

#: Input tokens reserved on top of the request's bytes when it offers tools: providers add their
#: own tool-use instructions to the prompt (Anthropic documents several hundred tokens).
TOOL_PREAMBLE_TOKENS = 1024
#: And for every call: the chat template's role markers and the model's turn prefix.
TEMPLATE_TOKENS = 16

_DIMENSIONS = ("calls", "input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True, slots=True)
class Spend:
    """An amount of model use: calls, input and output tokens, and their cost in US dollars.

    Used for what was spent, what is held for calls in flight, and what a budget allows."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
        )

    def __sub__(self, other: Spend) -> Spend:
        return Spend(
            self.calls - other.calls,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cost_usd - other.cost_usd,
        )

    def floored(self) -> Spend:
        """No dimension below zero (a hold released twice must not turn into credit)."""
        return Spend(
            max(self.calls, 0),
            max(self.input_tokens, 0),
            max(self.output_tokens, 0),
            max(self.cost_usd, 0.0),
        )

    def over(self, budget: Spend) -> str | None:
        """The first dimension in which this exceeds ``budget``, said as people read it; None if it fits.

        Cost is compared to the micro-dollar, so float rounding never refuses an exact fit."""
        for name in _DIMENSIONS:
            mine, allowed = getattr(self, name), getattr(budget, name)
            exceeds = round(mine * 1e6) > round(allowed * 1e6) if name == "cost_usd" else mine > allowed
            if exceeds:
                return f"{_said(name, mine)} needed, {_said(name, allowed)} allowed"
        return None

    def to_doc(self) -> list[Any]:
        return [self.calls, self.input_tokens, self.output_tokens, round(self.cost_usd, 9)]

    @classmethod
    def of_doc(cls, doc: Any) -> Spend:
        """From ``to_doc``'s list; ``ValueError`` when it is not one."""
        try:
            calls, input_tokens, output_tokens, cost = doc
            return cls(int(calls), int(input_tokens), int(output_tokens), float(cost))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a spend record: {doc!r:.80}") from exc

    def __str__(self) -> str:
        return (
            f"{self.calls} calls, {self.input_tokens:,} in / {self.output_tokens:,} out tokens, "
            f"${self.cost_usd:.4f}"
        )


def _said(dimension: str, value: float) -> str:
    if dimension == "cost_usd":
        return f"${value:.6f}"
    return f"{int(value):,} {dimension.replace('_', ' ')}"


@dataclass(frozen=True, slots=True)
class BudgetNode:
    """One instance of a spawn tree and the budget it was given (for itself and its subtree)."""

    instance: str
    budget: Spend

    def to_doc(self) -> list[Any]:
        return [self.instance, self.budget.to_doc()]

    @classmethod
    def of_doc(cls, doc: Any) -> BudgetNode:
        instance, budget = doc
        return cls(str(instance), Spend.of_doc(budget))


@dataclass(frozen=True, slots=True)
class BudgetLeft:
    """What an instance may still spend: the least left in each dimension over it and its
    ancestors, and which instance's budget is the tightest there."""

    left: Spend
    #: dimension -> the instance whose budget leaves the least of it.
    limited_by: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, nodes: list[tuple[BudgetNode, Spend]]) -> BudgetLeft:
        """From each node of a chain with what its subtree has spent and holds."""
        least: dict[str, tuple[float, str]] = {}
        for node, used in nodes:
            remaining = node.budget - used
            for name in _DIMENSIONS:
                value = getattr(remaining, name)
                if name not in least or value < least[name][0]:
                    least[name] = (value, node.instance)
        if not least:
            return cls(Spend(10**12, 10**15, 10**15, 1e12))
        left = Spend(
            int(least["calls"][0]),
            int(least["input_tokens"][0]),
            int(least["output_tokens"][0]),
            float(least["cost_usd"][0]),
        )
        return cls(left, tuple((name, least[name][1]) for name in _DIMENSIONS))

    def refusal(self, *, queued_calls: int) -> str | None:
        """Why one more call cannot be queued (``queued_calls`` already are in this invocation), or None.

        Only an exhausted dimension refuses here; whether the call fits is decided when the host
        reserves it, with the request's size and the provider's prices."""
        by = dict(self.limited_by)
        if self.left.calls - queued_calls <= 0:
            return f"no model calls left in the budget of instance {by.get('calls', '?')}"
        for name in ("input_tokens", "output_tokens", "cost_usd"):
            if getattr(self.left, name) <= 0:
                return f"no {name.replace('_', ' ')} left in the budget of instance {by.get(name, '?')}"
        return None


def call_estimate(
    request: ChatRequest,
    *,
    max_output_tokens: int,
    input_usd_per_mtok: float,
    output_usd_per_mtok: float,
) -> Spend:
    """What a call is held at until its usage is known: an upper bound, so a tree cannot spend
    more than its budget by admitting calls whose cost turns out larger than guessed.

    Input: the request's UTF-8 bytes (a byte-level tokenizer makes at most one token per byte),
    plus the template's and the provider's tool instructions. Output: the most the provider may
    write (``max_output_tokens``, which it enforces)."""
    size = len(json.dumps(request_doc(request), ensure_ascii=False).encode())
    input_tokens = size + TEMPLATE_TOKENS + (TOOL_PREAMBLE_TOKENS if request.tools else 0)
    output_tokens = request.max_output_tokens or max_output_tokens
    cost = (input_tokens * input_usd_per_mtok + output_tokens * output_usd_per_mtok) / 1e6
    return Spend(1, input_tokens, output_tokens, cost)
