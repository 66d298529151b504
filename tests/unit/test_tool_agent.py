"""``dagr_agent.ToolAgent`` and agents/assistant, built for real and run in the sandbox.

The model is scripted: each test feeds the loop ``Resumed`` events whose model resolutions carry
the tool calls a model would make, and checks what the loop did with them (the next request's
tool messages, spawns, HTTP calls, suspends, state, the published result). Children's answers
come from the real stock-analyst. Schema generation is checked on the host too, where the SDK
imports without the wasm bindings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cbor2
import pytest

from dagr_wasm.build import build_agent
from dagr_wasm.chat import ChatRequest, ChatResponse, FinishReason, ToolCall, Usage
from dagr_wasm.invocation import (
    Await,
    Event,
    HttpCall,
    HttpResponse,
    Invocation,
    ModelCall,
    Outcome,
    Publish,
    Resolution,
    Resumed,
    Spawn,
    Start,
    Status,
    Wake,
)
from dagr_wasm.local import LocalState
from dagr_wasm.manifest import Manifest, load_manifest
from dagr_wasm.policy import Capabilities
from dagr_wasm.sandbox import AgentComponent, Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest-sdk" / "python"))

import dagr_agent as dagr
from dagr_agent._tools import _problem

ROOT = Path(__file__).resolve().parents[2]
NOW_MS = 1_700_000_000_000
RESULTS = "agents.main.results"
GME_TASK = "Check GME sentiment on Reddit"
ASSISTANT_TIMEOUT_S = 300
TOOL_TEST_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def components(sandbox: Sandbox) -> dict[str, AgentComponent]:
    """The three agents these tests run (built and compiled once; cached by content hash)."""
    names = ("assistant", "tool-test", "stock-analyst")
    return {name: sandbox.load_file(build_agent(ROOT / "agents" / name).wasm) for name in names}


@dataclass
class Instance:
    """One agent instance driven event by event, its state carried between invocations as a host would."""

    sandbox: Sandbox
    component: AgentComponent
    manifest: Manifest
    specialist: str = ""
    capabilities: Capabilities | None = None
    state: LocalState = field(default_factory=lambda: LocalState(None))
    runs: int = 0

    def run(self, event: Event) -> Outcome:
        self.runs += 1
        invocation = Invocation(
            task_id=f"task-{self.manifest.name}-{self.runs}",
            instance_id=f"inst-{self.manifest.name}",
            specialist=self.specialist or self.manifest.name,
            event=event,
            capabilities=self.capabilities or Capabilities(own=self.manifest.grants),
            limits=self.manifest.limits,
            config_text=self.manifest.config_text,
            state=self.state,
            now_unix_ms=NOW_MS,
        )
        outcome = self.sandbox.run(self.component, invocation)
        assert outcome.status in (Status.OK, Status.SUSPENDED), (outcome.failure, outcome.error, outcome.logs)
        self.state.apply(outcome)
        return outcome

    def stored(self, key: str) -> Any:
        entry = self.state.get("instance", key)
        assert entry is not None and entry.value is not None, key
        return cbor2.loads(entry.value)


def instance(sandbox: Sandbox, components: dict[str, AgentComponent], name: str, **extra: Any) -> Instance:
    manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
    return Instance(sandbox, components[name], manifest, **extra)


def asked(outcome: Outcome, *, timeout_s: int) -> ModelCall:
    """The one model call of ``outcome``, which the instance awaits alone."""
    (call,) = [e for e in outcome.effects if isinstance(e, ModelCall)]
    assert outcome.status is Status.SUSPENDED
    assert outcome.awaiting == Await((call.handle,), "all", NOW_MS + timeout_s * 1000, "tool-agent:model")
    return call


def calls(*made: tuple[str, str, Any]) -> tuple[ToolCall, ...]:
    """Tool calls as a model makes them: (id, name, arguments: JSON-encoded unless a str)."""
    return tuple(ToolCall(i, n, a if isinstance(a, str) else json.dumps(a)) for i, n, a in made)


def answer(
    call: ModelCall, text: str = "", tool_calls: Sequence[ToolCall] = (), usage: tuple[int, int] = (100, 10)
) -> Resumed:
    reason = FinishReason.TOOL_CALLS if tool_calls else FinishReason.STOP
    chat = ChatResponse(text, tuple(tool_calls), reason, Usage(*usage), "scripted-1")
    return Resumed((Resolution(call.handle, "model", chat=chat, seq=1),), (), False, "tool-agent:model")


def tool_messages(request: ChatRequest) -> dict[str, str]:
    """The tool messages after the last assistant message, by the call id they answer."""
    last = max(i for i, m in enumerate(request.messages) if m.role == "assistant")
    tail = request.messages[last + 1 :]
    assert all(m.role == "tool" for m in tail)
    return {str(m.tool_call_id): m.text for m in tail}


def results(outcome: Outcome, subject: str = RESULTS) -> list[Any]:
    return [
        cbor2.loads(e.payload) for e in outcome.effects if isinstance(e, Publish) and e.subject == subject
    ]


def value(outcome: Outcome) -> Any:
    assert outcome.status is Status.OK, outcome
    assert outcome.result is not None
    return cbor2.loads(outcome.result)


def analyst(sandbox: Sandbox, components: dict[str, AgentComponent], spawn: Spawn, seq: int) -> Resolution:
    """The real stock-analyst run on a spawn's task, as the child's resolution."""
    manifest = load_manifest(ROOT / "agents" / "stock-analyst" / "dagr.toml")
    out = sandbox.run(
        components["stock-analyst"],
        Invocation(
            task_id=spawn.child_id,
            instance_id=spawn.child_id,
            specialist="stock-analyst",
            event=Start(spawn.context),
            capabilities=Capabilities(own=manifest.grants),
            config_text=manifest.config_text,
            now_unix_ms=NOW_MS,
        ),
    )
    assert out.status in (Status.OK, Status.FAILED), out
    ok = out.result if out.status is Status.OK else None
    return Resolution(spawn.child_id, "child", ok=ok, error=out.failure, source="stock-analyst", seq=seq)


SPAWN_SCHEMA = {
    "type": "object",
    "properties": {
        "specialist": {
            "type": "string",
            "description": "which specialist to ask.",
            "enum": ["stock-analyst"],
        },
        "task": {"type": "string", "description": "the task for it, in plain words."},
    },
    "required": ["specialist", "task"],
    "additionalProperties": False,
}


# --- agents/assistant: the seed's model-driven main agent ---------------------------------------------


def test_assistant_manifest() -> None:
    manifest = load_manifest(ROOT / "agents" / "assistant" / "dagr.toml")
    assert manifest.grants.spawn == ("stock-analyst",)
    assert manifest.grants.publish == (RESULTS,)
    assert manifest.grants.models == ("fast",)
    assert manifest.grants.max_suspend_s >= ASSISTANT_TIMEOUT_S
    assert "stock-analyst" in manifest.config_text
    assert "main agent" in manifest.config_text


def test_assistant_runs_the_gme_loop_and_publishes_its_report(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    main = instance(sandbox, components, "assistant")

    # Turn 1: the system prompt is the config, the context the user's message; it must call a tool.
    first = asked(main.run(Start(GME_TASK)), timeout_s=ASSISTANT_TIMEOUT_S)
    request = first.request
    assert request.model == "fast"
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", main.manifest.config_text),
        ("user", GME_TASK),
    ]
    assert [t.name for t in request.tools] == ["spawn"]
    assert json.loads(request.tools[0].parameters_json) == SPAWN_SCHEMA
    assert request.tool_choice == "required"
    assert request.max_output_tokens == 400

    # The model spawns an analyst: the instance awaits the child, no model call meanwhile.
    spawn_args = {"specialist": "stock-analyst", "task": GME_TASK}
    spawning = main.run(answer(first, "", calls(("c1", "spawn", spawn_args)), usage=(300, 20)))
    (spawn,) = [e for e in spawning.effects if isinstance(e, Spawn)]
    assert (spawn.specialist, spawn.context, spawn.reply_to) == ("stock-analyst", GME_TASK, None)
    assert not [e for e in spawning.effects if isinstance(e, ModelCall)]
    assert spawning.awaiting == Await(
        (spawn.child_id,), "all", NOW_MS + ASSISTANT_TIMEOUT_S * 1000, "tool-agent:tools"
    )
    assert main.stored("loop")["model_call"] is None
    assert main.stored("loop")["calls"] == [{"id": "c1", "handle": spawn.child_id}]

    # The analyst answers: its result, as JSON, is the tool message of turn 2.
    child = analyst(sandbox, components, spawn, seq=2)
    analysis = cbor2.loads(child.ok or b"")
    assert analysis["ticker"] == "GME"
    second = asked(main.run(Resumed((child,), (), False, "tool-agent:tools")), timeout_s=ASSISTANT_TIMEOUT_S)
    assert second.handle != first.handle
    assert second.request.tool_choice == "auto"
    roles = [m.role for m in second.request.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert second.request.messages[2].tool_calls == calls(("c1", "spawn", spawn_args))
    assert json.loads(tool_messages(second.request)["c1"]) == analysis

    # The final answer: published to agents.main.results, and the result.
    report = f"GME is {analysis['signal']}: {analysis['return_30d_pct']:+.2f} % over 30 days."
    done = main.run(answer(second, report, usage=(500, 40)))
    result = value(done)
    assert results(done) == [result]
    assert result == {
        "answer": report,
        "stopped": "answer",
        "reason": None,
        "turns": 2,
        "tool_calls": 1,
        "usage": [800, 60],
        "spawned": [
            {
                "specialist": "stock-analyst",
                "task": GME_TASK,
                "child_id": spawn.child_id,
                "turn": 1,
                "ok": True,
                "result": analysis,
            }
        ],
    }
    transcript = main.stored("loop.messages")
    assert [m["role"] for m in transcript] == ["system", "user", "assistant", "tool", "assistant"]
    assert transcript[-1]["content"] == report
    assert main.stored("loop")["result"] == result

    # An event after the end changes nothing: the same result, nothing published again.
    again = main.run(Resumed((), (), True, "tool-agent:tools"))
    assert value(again) == result
    assert results(again) == []


def test_assistant_registered_under_another_name_asks_the_same(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    """`dagr register specialist --name claude-code --module agents/assistant`: nothing depends on its name."""
    as_assistant = asked(instance(sandbox, components, "assistant").run(Start(GME_TASK)), timeout_s=300)
    renamed = instance(sandbox, components, "assistant", specialist="claude-code")
    as_claude = asked(renamed.run(Start(GME_TASK)), timeout_s=300)
    assert as_claude.request == as_assistant.request


def test_a_repeated_spawn_gets_the_answer_it_had(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    """A small model asking the same analyst the same thing again is not paid for twice."""
    main = instance(sandbox, components, "assistant")
    first = asked(main.run(Start(GME_TASK)), timeout_s=300)
    spawn_args = {"specialist": "stock-analyst", "task": "Analyze GME"}
    # Twice in one turn: one child, the second call told to wait for the first.
    spawning = main.run(answer(first, "", calls(("a", "spawn", spawn_args), ("b", "spawn", spawn_args))))
    (spawn,) = [e for e in spawning.effects if isinstance(e, Spawn)]
    child = analyst(sandbox, components, spawn, seq=2)
    second = asked(main.run(Resumed((child,), (), False, "tool-agent:tools")), timeout_s=300)
    told = tool_messages(second.request)
    assert json.loads(told["a"]) == cbor2.loads(child.ok or b"")
    assert told["b"].startswith("error: already asked in this turn")

    # Again in a later turn: the answer it had, at once (no spawn, no await on a child).
    third_turn = main.run(answer(second, "", calls(("c", "spawn", spawn_args))))
    assert not [e for e in third_turn.effects if isinstance(e, Spawn)]
    third = asked(third_turn, timeout_s=300)
    said = tool_messages(third.request)["c"]
    assert said.startswith("(asked before; the same answer) ")
    assert json.loads(said.removeprefix("(asked before; the same answer) ")) == cbor2.loads(child.ok or b"")
    assert len(main.stored("loop")["spawned"]) == 1


# --- the loop's ends ------------------------------------------------------------------------------------


def test_a_model_error_ends_the_loop_and_still_reports(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    main = instance(sandbox, components, "assistant")
    first = asked(main.run(Start(GME_TASK)), timeout_s=300)
    spawn_args = {"specialist": "stock-analyst", "task": GME_TASK}
    spawning = main.run(answer(first, "Asking the analyst.", calls(("c1", "spawn", spawn_args))))
    (spawn,) = [e for e in spawning.effects if isinstance(e, Spawn)]
    child = analyst(sandbox, components, spawn, seq=2)
    second = asked(main.run(Resumed((child,), (), False, "tool-agent:tools")), timeout_s=300)

    # The budget runs out before turn 2 is answered: the loop stops, saying why, with what it has.
    spent = Resolution(
        second.handle, "model", error="the swarm's token budget is spent", error_kind="quota-exceeded", seq=3
    )
    done = main.run(Resumed((spent,), (), False, "tool-agent:model"))
    result = value(done)
    assert results(done) == [result]
    assert result["stopped"] == "quota-exceeded"
    assert "the swarm's token budget is spent" in result["reason"]
    assert result["answer"] == "Asking the analyst."  # the text so far
    assert result["turns"] == 2
    assert result["usage"] == [100, 10]  # only the answered turn counts
    assert result["spawned"][0]["result"] == cbor2.loads(child.ok or b"")
    assert not [e for e in done.effects if isinstance(e, ModelCall)]
    assert any("quota-exceeded" in line.message for line in done.logs)


def test_a_refused_model_call_ends_the_loop_at_once(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    """An alias the manifest does not grant: model.chat raises Denied, and the loop stops cleanly."""
    manifest = load_manifest(ROOT / "agents" / "assistant" / "dagr.toml")
    no_models = Capabilities(own=manifest.grants.model_copy(update={"models": ()}))
    done = instance(sandbox, components, "assistant", capabilities=no_models).run(Start(GME_TASK))
    result = value(done)
    assert result["stopped"] == "denied"
    assert "grants.models" in result["reason"]
    assert (result["answer"], result["turns"], result["usage"]) == ("", 0, [0, 0])
    assert results(done) == [result]


def test_a_silent_model_is_awaited_once_more_then_the_loop_stops(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    main = instance(sandbox, components, "assistant")
    first = asked(main.run(Start(GME_TASK)), timeout_s=300)
    silent = Resumed((), (first.handle,), True, "tool-agent:model")

    # The same call awaited again: no second model call, which would be paid for twice.
    again = main.run(silent)
    assert not [e for e in again.effects if isinstance(e, ModelCall)]
    assert again.awaiting == Await((first.handle,), "all", NOW_MS + 300_000, "tool-agent:model")

    done = main.run(silent)
    result = value(done)
    assert result["stopped"] == "timeout"
    assert result["reason"] == "the model did not answer within 600 s"
    assert results(done) == [result]


def test_a_silent_child_is_a_tool_error_the_model_reads(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    main = instance(sandbox, components, "assistant")
    first = asked(main.run(Start(GME_TASK)), timeout_s=300)
    spawn_args = {"specialist": "stock-analyst", "task": GME_TASK}
    spawning = main.run(answer(first, "", calls(("c1", "spawn", spawn_args))))
    (spawn,) = [e for e in spawning.effects if isinstance(e, Spawn)]
    second = asked(main.run(Resumed((), (spawn.child_id,), True, "tool-agent:tools")), timeout_s=300)
    assert tool_messages(second.request) == {"c1": "error: no answer within 300 s"}
    assert "ok" not in main.stored("loop")["spawned"][0]


def test_max_iterations_forces_the_last_turn_to_answer(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    """tool-test allows 3 turns: the third is asked with tool_choice none; a model that calls a
    tool anyway ends the loop with stopped max-iterations."""
    loop = instance(sandbox, components, "tool-test")
    turn = asked(loop.run(Start("Add things up.")), timeout_s=TOOL_TEST_TIMEOUT_S)
    choices = [turn.request.tool_choice]
    for i in range(2):
        said = f"Adding, step {i + 1}."
        turn = asked(loop.run(answer(turn, said, calls((f"c{i}", "add", {"a": i, "b": 1})))), timeout_s=60)
        choices.append(turn.request.tool_choice)
        assert tool_messages(turn.request) == {f"c{i}": str(i + 1)}
    assert choices == ["auto", "auto", "none"]

    done = loop.run(answer(turn, "", calls(("c9", "add", {"a": 1, "b": 1}))))
    result = value(done)
    assert result["stopped"] == "max-iterations"
    assert result["turns"] == 3
    assert result["tool_calls"] == 2  # the last turn's call is not run
    assert result["answer"] == "Adding, step 2."
    assert result["usage"] == [300, 30]
    assert not [e for e in done.effects if isinstance(e, Publish)]  # no report_subject


def test_an_answer_on_the_last_turn_is_the_answer(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    turn = asked(loop.run(Start("Add 2 and 3.")), timeout_s=60)
    turn = asked(loop.run(answer(turn, "", calls(("c1", "add", {"a": 2, "b": 3})))), timeout_s=60)
    assert turn.request.tool_choice == "auto"
    result = value(loop.run(answer(turn, "2 + 3 = 5")))
    assert (result["answer"], result["stopped"], result["turns"], result["tool_calls"]) == (
        "2 + 3 = 5",
        "answer",
        2,
        1,
    )


# --- tools: plain functions, errors the model can correct, built-ins -----------------------------------


def test_plain_function_tools_get_schemas_from_their_type_hints(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    first = asked(instance(sandbox, components, "tool-test").run(Start("hi")), timeout_s=60)
    tools = {t.name: t for t in first.request.tools}
    assert list(tools) == [
        "remember",
        "recall",
        "publish",
        "fetch",
        "wait",
        "wait_until",
        "add",
        "quote",
        "explode",
        "whoami",
    ]
    assert tools["quote"].description == "The made-up change of a ticker's price over some days."
    assert json.loads(tools["quote"].parameters_json) == {
        "type": "object",
        "properties": {
            "ticker": {"enum": ["GME", "AMC"], "type": "string", "description": "which stock."},
            "days": {"type": "integer", "description": "how many trading days back."},
            "note": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "anything to echo back.",
            },
        },
        "required": ["ticker"],
        "additionalProperties": False,
    }
    assert json.loads(tools["add"].parameters_json)["required"] == ["a", "b"]
    # The context is injected, not asked of the model.
    assert json.loads(tools["whoami"].parameters_json)["properties"] == {}
    assert json.loads(tools["publish"].parameters_json)["properties"]["subject"]["enum"] == ["tool-test.out"]
    assert [(m.role, m.text) for m in first.request.messages] == [
        ("system", "You test tools. Call the tools you are asked to call, then say what they answered.\n"),
        ("user", "hi"),
    ]


def test_tool_calls_run_and_mistakes_become_tool_messages(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Try every tool.")), timeout_s=60)
    made = calls(
        ("c1", "add", {"a": 2, "b": 3}),
        ("c2", "quote", {"ticker": "GME"}),
        ("c3", "quote", {"ticker": "XYZ"}),
        ("c4", "add", '{"a": 2, "b":'),
        ("c5", "add", {"a": "2", "b": 3}),
        ("c6", "add", {"a": 2}),
        ("c7", "add", {"a": 2, "b": 3, "c": 4}),
        ("c8", "subtract", {"a": 2, "b": 3}),
        ("c9", "explode", {"reason": "on purpose"}),
        ("", "whoami", {}),  # no id: the loop names it
        ("c11", "remember", {"key": "favourite", "value": "GME"}),
        ("c12", "publish", {"subject": "tool-test.out", "text": "hello"}),
        ("c13", "publish", {"subject": "elsewhere", "text": "hello"}),
    )
    # Every call answered in the same invocation: the next turn is asked at once.
    ran = loop.run(answer(first, "", made))
    second = asked(ran, timeout_s=60)
    told = tool_messages(second.request)
    assert list(told) == [
        "c1",
        "c2",
        "c3",
        "c4",
        "c5",
        "c6",
        "c7",
        "c8",
        "c9",
        "call-1-9",
        "c11",
        "c12",
        "c13",
    ]
    assert told["c1"] == "5"
    assert json.loads(told["c2"]) == {"ticker": "GME", "days": 30, "change_pct": 15.0, "note": None}
    assert (
        told["c3"]
        == 'error: ticker must be one of ["GME", "AMC"], not "XYZ". Call quote again with arguments that fit.'
    )
    assert told["c4"].startswith("error: the arguments are not JSON (")
    assert told["c5"] == 'error: a should be an integer, not "2". Call add again with arguments that fit.'
    assert told["c6"] == "error: the arguments lack b. Call add again with arguments that fit."
    assert told["c7"].startswith("error: the arguments have unknown c (the parameters: a, b)")
    assert told["c8"].startswith("error: there is no tool named 'subtract'; the tools: remember, recall,")
    assert told["c9"] == "error: ValueError: exploded: on purpose"
    assert told["call-1-9"] == "inst-tool-test"
    assert told["c11"] == "remembered favourite"
    assert told["c12"] == "published to tool-test.out"
    assert told["c13"].startswith('error: subject must be one of ["tool-test.out"]')
    assert second.request.messages[-14].tool_calls[9].id == "call-1-9"  # the assistant message names it too
    assert results(ran, "tool-test.out") == ["hello"]
    assert loop.stored("loop.memory") == {"favourite": "GME"}
    assert loop.stored("loop")["tool_calls"] == 13

    third = asked(
        loop.run(
            answer(second, "", calls(("r1", "recall", {"key": "favourite"}), ("r2", "recall", {"key": "x"})))
        ),
        timeout_s=60,
    )
    assert tool_messages(third.request) == {
        "r1": "GME",
        "r2": "error: no note named 'x'; the notes: favourite",
    }


def test_fetch_awaits_granted_calls_and_reports_refused_ones_at_once(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Fetch.")), timeout_s=60)
    granted = "https://api.example.com/v1/page"
    fetching = loop.run(
        answer(
            first,
            "",
            calls(("f1", "fetch", {"url": granted}), ("f2", "fetch", {"url": "https://example.org/"})),
        )
    )
    (http,) = [e for e in fetching.effects if isinstance(e, HttpCall)]
    assert (http.request.method, http.request.url) == ("GET", granted)
    assert fetching.awaiting == Await((http.handle,), "all", NOW_MS + 60_000, "tool-agent:tools")

    page = "x" * 5000
    response = Resolution(http.handle, "http", response=HttpResponse(200, (), page.encode()), seq=2)
    second = asked(loop.run(Resumed((response,), (), False, "tool-agent:tools")), timeout_s=60)
    told = tool_messages(second.request)
    assert json.loads(told["f1"]) == {"status": 200, "text": "x" * 4000, "truncated": True}
    assert told["f2"].startswith("error: Denied: http.fetch(")


def test_wait_suspends_and_carries_on_when_woken(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Wait a bit.")), timeout_s=60)
    waiting = loop.run(
        answer(first, "", calls(("w1", "wait", {"seconds": 30}), ("a1", "add", {"a": 1, "b": 1})))
    )
    assert waiting.status is Status.SUSPENDED
    assert waiting.awaiting is None
    assert waiting.suspend is not None
    assert (waiting.suspend.wake_at_unix_ms, waiting.suspend.resume_context) == (
        NOW_MS + 30_000,
        "tool-agent:wait",
    )
    assert not [e for e in waiting.effects if isinstance(e, ModelCall)]

    second = asked(loop.run(Wake("tool-agent:wait")), timeout_s=60)
    assert tool_messages(second.request) == {"w1": "waited 30 s", "a1": "2"}


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (  # beyond grants.max_suspend_s (3600): the host refuses, the model is told
            calls(("w1", "wait", {"seconds": 99_999})),
            {"w1": "error: cannot wait: lifecycle.suspend() failed (denied)"},
        ),
        (calls(("w1", "wait", {"seconds": 0})), {"w1": "error: ValueError: seconds must be positive"}),
        (
            calls(("w1", "wait_until", {"time": "soon"})),
            {"w1": "error: ValueError: Invalid isoformat string"},
        ),
    ],
)
def test_a_wait_that_cannot_be_is_a_tool_error(
    sandbox: Sandbox,
    components: dict[str, AgentComponent],
    made: tuple[ToolCall, ...],
    expected: dict[str, str],
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Wait.")), timeout_s=60)
    second = asked(loop.run(answer(first, "", made)), timeout_s=60)
    told = tool_messages(second.request)
    assert list(told) == list(expected)
    for call_id, start in expected.items():
        assert told[call_id].startswith(start), told[call_id]


def test_a_wait_does_not_share_a_turn_with_calls_to_await(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Wait and fetch.")), timeout_s=60)
    made = calls(("w1", "wait", {"seconds": 5}), ("f1", "fetch", {"url": "https://api.example.com/v1/x"}))
    fetching = loop.run(answer(first, "", made))
    assert fetching.suspend is None
    (http,) = [e for e in fetching.effects if isinstance(e, HttpCall)]
    assert fetching.awaiting is not None and fetching.awaiting.handles == (http.handle,)
    response = Resolution(http.handle, "http", response=HttpResponse(404, (), b"no such page"), seq=2)
    second = asked(loop.run(Resumed((response,), (), False, "tool-agent:tools")), timeout_s=60)
    told = tool_messages(second.request)
    assert told["w1"] == "error: wait cannot share a turn with spawn, fetch or another wait; call it alone"
    assert json.loads(told["f1"]) == {"status": 404, "text": "no such page", "truncated": False}


def test_wait_until_a_time_suspends_until_then(
    sandbox: Sandbox, components: dict[str, AgentComponent]
) -> None:
    loop = instance(sandbox, components, "tool-test")
    first = asked(loop.run(Start("Wait.")), timeout_s=60)
    at_ms = NOW_MS + 1_800_000  # in half an hour
    at = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
    waiting = loop.run(answer(first, "", calls(("w1", "wait_until", {"time": at.replace("+00:00", "Z")}))))
    assert waiting.suspend is not None and waiting.suspend.wake_at_unix_ms == at_ms
    second = asked(loop.run(Wake("tool-agent:wait")), timeout_s=60)
    assert tool_messages(second.request) == {"w1": f"it is now {at}"}


# --- schema generation on the host ------------------------------------------------------------------


def test_tool_definition_from_type_hints_and_docstring() -> None:
    def search(
        query: str,
        tickers: list[Literal["GME", "AMC"]],
        limit: int = 10,
        weights: dict[str, float] | None = None,
        exact: bool = False,
        score: float | int = 0,
    ) -> list[str]:
        """Search the posts.

        Only the first paragraph is the description.

        Args:
            query: words to look for,
                over two lines.
            limit: at most this many.
        """
        return []

    assert dagr.tool_definition(search) == {
        "name": "search",
        "description": "Search the posts.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "words to look for, over two lines."},
                "tickers": {"type": "array", "items": {"enum": ["GME", "AMC"], "type": "string"}},
                "limit": {"type": "integer", "description": "at most this many."},
                "weights": {
                    "anyOf": [
                        {"type": "object", "additionalProperties": {"type": "number"}},
                        {"type": "null"},
                    ]
                },
                "exact": {"type": "boolean"},
                "score": {"anyOf": [{"type": "number"}, {"type": "integer"}]},
            },
            "required": ["query", "tickers"],
            "additionalProperties": False,
        },
    }


def no_doc(a: int) -> int:
    return a


def no_hint(a) -> int:  # type: ignore[no-untyped-def]
    """No hint."""
    return int(a)


def bad_type(a: set[int]) -> int:
    """A set is not JSON."""
    return len(a)


def star_args(*a: int) -> int:
    """Varargs."""
    return len(a)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_doc, "give it a docstring"),
        (no_hint, "parameter a: give it a type hint"),
        (bad_type, "cannot describe"),
        (star_args, "named parameters only"),
    ],
)
def test_tool_definition_refuses_what_it_cannot_describe(fn: Callable[..., Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        dagr.tool_definition(fn)


def test_a_tool_agent_is_checked_when_defined() -> None:
    with pytest.raises(TypeError, match="no built-in tool teleport"):
        type("A", (dagr.ToolAgent,), {"dagr_tools": ("teleport",)})
    with pytest.raises(TypeError, match="the spawn tool needs specialists"):
        type("B", (dagr.ToolAgent,), {"dagr_tools": ("spawn",)})
    with pytest.raises(TypeError, match="the spawn tool needs specialists"):
        type("C", (dagr.ToolAgent,), {"specialists": ("stock-analyst",)})
    with pytest.raises(TypeError, match="first_tool_choice 'search'"):
        type("D", (dagr.ToolAgent,), {"first_tool_choice": "search"})
    with pytest.raises(TypeError, match="needs tools"):
        type("E", (dagr.ToolAgent,), {"first_tool_choice": "required"})

    def recall(key: str) -> str:
        """Mine."""
        return key

    with pytest.raises(TypeError, match="two tools named recall"):
        type("F", (dagr.ToolAgent,), {"dagr_tools": ("recall",), "tools": (recall,)})


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"a": 1, "b": 2}, None),
        ({"a": 1.0, "b": 2}, "a should be an integer, not 1.0"),
        ({"a": True, "b": 2}, "a should be an integer, not true"),
        ({"a": 1, "b": 2, "tags": ["x", 3]}, "tags[1] should be a string, not 3"),
        ({"a": 1, "b": 2, "tags": None}, None),
        ("x", 'args should be an object, not "x"'),
    ],
)
def test_arguments_are_checked_against_the_schema(arguments: Any, problem: str | None) -> None:
    def f(a: int, b: float, tags: list[str] | None = None) -> None:
        """F."""

    schema = dagr.tool_definition(f)["parameters"]
    assert _problem(schema, arguments, "args") == problem


@pytest.fixture(autouse=True)
def _no_bindings_on_the_host() -> Iterator[None]:
    yield
    assert "wit_world" not in sys.modules
