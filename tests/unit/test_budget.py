"""Model budgets as plain data: what fits, what is left, what a call is held at (dagr_wasm.budget)."""

from __future__ import annotations

import json

import pytest

from dagr_wasm.budget import (
    TEMPLATE_TOKENS,
    TOOL_PREAMBLE_TOKENS,
    BudgetLeft,
    BudgetNode,
    Spend,
    call_estimate,
)
from dagr_wasm.chat import ChatMessage, ChatRequest, ToolDefinition, request_doc
from dagr_wasm.policy import Limits


def test_a_spend_fits_up_to_and_including_its_budget() -> None:
    budget = Spend(3, 100, 10, 0.30)
    assert Spend(3, 100, 10, 0.30).over(budget) is None
    assert Spend(4, 0, 0, 0).over(budget) == "4 calls needed, 3 calls allowed"
    assert Spend(0, 101, 0, 0).over(budget) == "101 input tokens needed, 100 input tokens allowed"
    assert Spend(0, 0, 11, 0).over(budget) == "11 output tokens needed, 10 output tokens allowed"
    assert Spend(0, 0, 0, 0.300001).over(budget) == "$0.300001 needed, $0.300000 allowed"
    # Float sums that land on the budget are a fit, not a refusal by rounding.
    assert (Spend(cost_usd=0.1) + Spend(cost_usd=0.2)).over(Spend(1, 1, 1, 0.3)) is None


def test_a_hold_released_twice_does_not_become_credit() -> None:
    held = Spend(1, 50, 10, 0.01)
    assert (held - held - held).floored() == Spend()
    assert Spend.of_doc(held.to_doc()) == held
    with pytest.raises(ValueError, match="not a spend record"):
        Spend.of_doc(["x"])


def test_what_is_left_is_the_tightest_ancestor_in_each_dimension() -> None:
    own = BudgetNode("child", Spend(10, 1000, 100, 1.0))
    parent = BudgetNode("parent", Spend(10, 1000, 100, 1.0))
    left = BudgetLeft.of([(own, Spend(2, 100, 90, 0.1)), (parent, Spend(9, 200, 20, 0.2))])
    assert left.left == Spend(1, 800, 10, pytest.approx(0.8))  # type: ignore[arg-type]
    limited_by = dict(left.limited_by)
    assert (limited_by["calls"], limited_by["input_tokens"], limited_by["output_tokens"]) == (
        "parent", "parent", "child",
    )  # fmt: skip
    assert left.refusal(queued_calls=0) is None
    assert left.refusal(queued_calls=1) == "no model calls left in the budget of instance parent"
    spent = BudgetLeft.of([(own, Spend(1, 1000, 0, 0))])
    assert spent.refusal(queued_calls=0) == "no input tokens left in the budget of instance child"


def test_a_call_is_held_at_an_upper_bound_of_what_it_can_cost() -> None:
    request = ChatRequest(
        model="fast",
        messages=(ChatMessage("user", ("héllo " * 50,)),),
        max_output_tokens=64,
    )
    held = call_estimate(request, max_output_tokens=1024, input_usd_per_mtok=2.0, output_usd_per_mtok=8.0)
    size = len(json.dumps(request_doc(request), ensure_ascii=False).encode())
    assert held.calls == 1
    assert held.input_tokens == size + TEMPLATE_TOKENS  # at least one byte a token: a bound
    assert held.output_tokens == 64  # the request's own bound wins over the alias default
    assert held.cost_usd == pytest.approx((held.input_tokens * 2.0 + 64 * 8.0) / 1e6)
    with_tools = ChatRequest(
        model="fast",
        messages=request.messages,
        tools=(ToolDefinition("t", "d", '{"type": "object"}'),),
    )
    bound = call_estimate(with_tools, max_output_tokens=1024, input_usd_per_mtok=0, output_usd_per_mtok=0)
    assert bound.output_tokens == 1024 and bound.input_tokens > size + TOOL_PREAMBLE_TOKENS


def test_a_childs_budget_is_capped_by_its_parents() -> None:
    parent = Limits(budget_model_calls=5, budget_usd=0.5)
    child = Limits(budget_model_calls=50, budget_usd=0.1).capped_by(parent)
    assert child.model_budget == Spend(5, 2_000_000, 200_000, 0.1)
