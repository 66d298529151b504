"""Issue 11: model budgets flow down the spawn tree; a tree never spends more than its root was given.

A tree of three levels of agents/model-tree (seven instances, each asking the model twice: fourteen
calls wanted) whose budget is five calls, against a real local provider server. Checked from the
outside: the provider's request count, the accounts in the state bucket, the call records in the
instances stream, and what each instance got.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from meshkit import RunHost, deploying
from modelkit import KEY, Reply, scripted_provider
from test_mesh import result_value
from test_models import KEY_ENV, models_for

from dagr_wasm.mesh import EmbeddedServer, Mesh

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUDGET_CALLS = 5  # agents/model-tree/dagr.toml


model_tree = deploying("model-tree")


def walk(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every instance's result in the tree, root first."""
    return [result, *(node for child in result["children"] for node in walk(child))]


async def test_a_tree_of_three_levels_spends_no_more_than_its_roots_budget(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, model_tree: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider("openai", Reply(text="ok", usage=(20, 3))) as provider:
        await run_host(nats_server, models=models_for(provider))
        root = await mesh.spawn("model-tree", json.dumps({"levels": 3, "children": 2, "calls": 2}))
        result = await result_value(mesh, root, timeout_s=120)

        nodes = walk(result)
        assert len(nodes) == 7 and not any(n["timed_out"] for n in nodes)
        answered = sum(n["answered"] for n in nodes)
        refused = [kind for n in nodes for kind in n["refused"]]
        # Fourteen calls wanted, five fit: exactly five were made, the other nine refused as quota.
        assert answered == BUDGET_CALLS
        assert len(provider.requests) == BUDGET_CALLS
        assert refused == ["quota-exceeded"] * 9
        reasons = [r for n in nodes for r in n["reasons"]]
        assert all("budget" in r for r in reasons), reasons

        # The accounts, read from the state bucket: the root's tree holds every call, nothing is
        # held any more, and each instance's own spending adds up to it.
        accounts = {n["id"]: await mesh.model_account(n["id"]) for n in nodes}
        assert accounts[root].tree.calls == BUDGET_CALLS
        assert accounts[root].tree.input_tokens == 20 * BUDGET_CALLS
        assert accounts[root].tree.cost_usd == pytest.approx(BUDGET_CALLS * (20 * 1.0 + 3 * 2.0) / 1e6)
        assert sum(a.own.calls for a in accounts.values()) == BUDGET_CALLS
        assert all(a.held.calls == 0 and a.held.input_tokens == 0 for a in accounts.values())
        for node in nodes:  # a subtree's total is its own plus its children's
            children = [c["id"] for c in node["children"]]
            own, tree = accounts[node["id"]].own, accounts[node["id"]].tree
            assert tree.calls == own.calls + sum(accounts[c].tree.calls for c in children)

        # The call records: one per call made, and one per call the host refused with its reason.
        records = [c for n in nodes for c in await mesh.model_calls(n["id"])]
        made = [c for c in records if c.error_type is None]
        assert len(made) == BUDGET_CALLS
        assert {(c.input_tokens, c.output_tokens, c.finish_reason) for c in made} == {(20, 3, "stop")}
        assert all(c.request_model == "provider-model-x" and c.provider == "openai" for c in made)
        refused_by_host = [c for c in records if c.error_type is not None]
        assert all(c.error_type == "quota-exceeded" and "budget" in (c.error or "") for c in refused_by_host)
        assert len(made) + len(refused_by_host) + sum(1 for r in reasons if "no model calls left" in r) == 14

        # `dagr status` shows the tree's spending on the root and each instance's own.
        tree = (await mesh.tree(root)).to_doc()
        assert tree["model"]["tree"]["calls"] == BUDGET_CALLS
        assert tree["model"]["tree"]["gen_ai.usage.input_tokens"] == 20 * BUDGET_CALLS


async def test_a_call_that_does_not_fit_the_token_budget_is_refused_before_it_is_made(
    mesh: Mesh, nats_server: EmbeddedServer, run_host: RunHost, model_tree: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Held at its bound (the request's bytes, the max output tokens), a call must fit before it
    goes: an alias whose answers may be longer than the budget's output tokens gets nothing."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with scripted_provider("openai") as provider:
        config = models_for(provider)
        # model-tree asks for 16 output tokens; the budget's default is 200,000. A prompt of ~2 MB
        # would be needed to break the input budget, so break the cost budget instead: $1 at
        # $1,000,000 per million output tokens is one token.
        pricey = config.models["fast"].model_copy(update={"output_usd_per_mtok": 1_000_000.0})
        await run_host(nats_server, models=config.model_copy(update={"models": {"fast": pricey}}))
        root = await mesh.spawn("model-tree", json.dumps({"levels": 1, "calls": 1}))
        result = await result_value(mesh, root)
        assert result["answered"] == 0 and result["refused"] == ["quota-exceeded"]
        assert (
            "does not cover this call" in result["reasons"][0] and "$1.000000 allowed" in result["reasons"][0]
        )
        assert provider.requests == []
        account = await mesh.model_account(root)
        assert account.tree.calls == 0 and account.held.calls == 0
