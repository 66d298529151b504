"""The demo's agents, agents/stock-analyst and agents/orchestrator, built for real and run in the sandbox.

The analyst's figures are checked against a computation written here from its documented rules,
reading the same data files with the standard library. The orchestrator is driven through its
start and its wakes, with inboxes made of real analyst outcomes from the sandbox.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cbor2
import pytest

from dagr_wasm.invocation import (
    Await,
    ChildReply,
    Event,
    Invocation,
    Outcome,
    Publish,
    RepliesConsumed,
    Reply,
    Resolution,
    Resumed,
    Spawn,
    Start,
    Status,
    Wake,
)
from dagr_wasm.local import LocalState
from dagr_wasm.manifest import load_manifest
from dagr_wasm.policy import Capabilities
from dagr_wasm.sandbox import AgentComponent, Sandbox

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "agents" / "stock-analyst" / "data"
TICKERS = ("GME", "AMC", "TSLA", "AAPL", "NVDA")  # the orchestrator's default, in its order
NOW_MS = 1_700_000_000_000
RESULTS = "agents.main.results"
DEADLINE_S = 60  # the orchestrator's bound on its await
DECIMALS = 4
ROUNDING = 0.5 * 10**-DECIMALS + 1e-12


@pytest.fixture(scope="session")
def demo(built: dict[str, Path], sandbox: Sandbox) -> dict[str, AgentComponent]:
    return {name: sandbox.load_file(built[name]) for name in ("stock-analyst", "orchestrator")}


def invoke(
    sandbox: Sandbox,
    demo: dict[str, AgentComponent],
    name: str,
    event: Event,
    *,
    config_text: str | None = None,
    task_id: str | None = None,
    **extra: Any,
) -> Outcome:
    manifest = load_manifest(ROOT / "agents" / name / "dagr.toml")
    invocation = Invocation(
        task_id=task_id or f"test-{name}",
        instance_id=f"inst-{name}",
        specialist=manifest.name,
        event=event,
        capabilities=Capabilities(own=manifest.grants),
        limits=manifest.limits,
        config_text=manifest.config_text if config_text is None else config_text,
        now_unix_ms=NOW_MS,
        **extra,
    )
    return sandbox.run(demo[name], invocation)


def value(outcome: Outcome) -> Any:
    assert outcome.status is Status.OK, outcome
    assert outcome.result is not None
    return cbor2.loads(outcome.result)


# --- the reference computation, from the data files and the rules in the analyst's docstring -------


def closes(ticker: str) -> list[float]:
    with (DATA / "prices.csv").open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["ticker"] == ticker]
    return [float(row["close"]) for row in sorted(rows, key=lambda row: row["date"])]


def posts() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((DATA / "posts.json").read_text(encoding="utf-8"))
    return loaded


def lexicon() -> dict[str, int]:
    with (DATA / "lexicon.csv").open(newline="", encoding="utf-8") as f:
        return {row["word"]: int(row["score"]) for row in csv.DictReader(f)}


def reference(ticker: str) -> dict[str, Any]:
    c = closes(ticker)
    last = c[-1]
    sma = sum(c[-20:]) / 20
    returns = [math.log(c[i] / c[i - 1]) for i in range(len(c) - 20, len(c))]
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    volatility = math.sqrt(variance) * math.sqrt(252)
    return_30d = (last / c[-31] - 1) * 100

    words = lexicon()
    scores = []
    for post in posts():
        # A mention is the ticker as a whole word in capitals, "$" allowed in front.
        if ticker in re.split(r"[^A-Za-z0-9_]+", post["text"]):
            scores.append(sum(words.get(w, 0) for w in re.findall(r"[a-z']+", post["text"].lower())))
    sentiment = sum(scores) / len(scores) if scores else 0.0

    trend = 1 if last > sma and return_30d > 0 else -1 if last < sma and return_30d < 0 else 0
    mood = 1 if sentiment >= 0.5 else -1 if sentiment <= -0.5 else 0
    signal = {1: "bullish", -1: "bearish"}.get((trend + mood > 0) - (trend + mood < 0), "neutral")
    return {
        "last_close": last,
        "sma_20": sma,
        "volatility_20d": volatility,
        "return_30d_pct": return_30d,
        "mentions": len(scores),
        "sentiment_mean": sentiment,
        "trend": {1: "up", -1: "down", 0: "mixed"}[trend],
        "mood": {1: "positive", -1: "negative", 0: "neutral"}[mood],
        "signal": signal,
    }


def config_first_line() -> str:
    return (ROOT / "agents" / "stock-analyst" / "config.md").read_text(encoding="utf-8").splitlines()[0]


# --- the data ------------------------------------------------------------------------------------


def test_data_is_small_and_complete() -> None:
    with (DATA / "prices.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    dates = {t: [r["date"] for r in rows if r["ticker"] == t] for t in TICKERS}
    assert {r["ticker"] for r in rows} == set(TICKERS)
    assert all(len(d) == 60 for d in dates.values())
    assert len({tuple(sorted(d)) for d in dates.values()}) == 1  # the same trading days for all
    assert all(float(r["close"]) > 0 for r in rows)

    shipped = posts()
    assert 90 <= len(shipped) <= 120
    for post in shipped:
        assert set(post) == {"id", "subreddit", "author", "created_utc", "score", "text"}
        assert any(t in re.split(r"[^A-Za-z0-9_]+", post["text"]) for t in TICKERS), post
    assert all(-3 <= score <= 3 for score in lexicon().values())


def test_shipped_data_gives_the_demo_every_signal() -> None:
    signals = {t: reference(t)["signal"] for t in TICKERS}
    assert set(signals.values()) == {"bullish", "bearish", "neutral"}, signals


# --- stock-analyst ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "ticker"),
    [
        ("Check GME sentiment on Reddit", "GME"),
        ("Analyze TSLA", "TSLA"),
        ("what about $AMC today?", "AMC"),
        ("analyze nvda", "NVDA"),  # no capitalised ticker: a known one in lower case will do
    ],
)
def test_analyst_figures_match_an_independent_computation(
    sandbox: Sandbox, demo: dict[str, AgentComponent], context: str, ticker: str
) -> None:
    outcome = invoke(sandbox, demo, "stock-analyst", Start(context))
    result = value(outcome)
    expected = reference(ticker)

    assert set(result) == {"ticker", "as_of", "analyst", *expected}
    assert result["ticker"] == ticker
    assert result["as_of"] == "2026-01-16"
    for name in ("last_close", "sma_20", "volatility_20d", "return_30d_pct", "sentiment_mean"):
        assert result[name] == round(result[name], DECIMALS), name
        assert abs(result[name] - expected[name]) <= ROUNDING, (name, result[name], expected[name])
    for name in ("mentions", "trend", "mood", "signal"):
        assert result[name] == expected[name], name
    assert result["analyst"] == config_first_line()

    assert outcome.effects == ()  # it only computes: no state, no publishes
    steps = [line.message for line in outcome.logs if line.level == "info"]
    assert len(steps) == 5
    assert all(word in " ".join(steps) for word in (ticker, "prices", "trend", "reddit", "signal"))


@pytest.mark.parametrize(
    ("context", "words"),
    [
        ("Analyze XYZ", ["unknown ticker 'XYZ'", "AAPL, AMC, GME, NVDA, TSLA"]),
        ("How is the market doing?", ["no ticker", "AAPL, AMC, GME, NVDA, TSLA", "e.g. 'Analyze AAPL'"]),
        ("", ["no ticker"]),
    ],
)
def test_analyst_fails_clearly_without_a_known_ticker(
    sandbox: Sandbox, demo: dict[str, AgentComponent], context: str, words: list[str]
) -> None:
    outcome = invoke(sandbox, demo, "stock-analyst", Start(context))
    assert outcome.status is Status.FAILED, outcome
    assert outcome.failure is not None
    for word in words:
        assert word in outcome.failure
    assert outcome.effects == ()


@pytest.mark.parametrize(
    ("config", "analyst"),
    [
        ("# Contrarian analyst\n\nDistrust the crowd.", "Contrarian analyst"),
        ("\n\n  Plain first line  \nsecond", "Plain first line"),
        ("", ""),
    ],
)
def test_analyst_echoes_the_first_line_of_its_config(
    sandbox: Sandbox, demo: dict[str, AgentComponent], config: str, analyst: str
) -> None:
    result = value(invoke(sandbox, demo, "stock-analyst", Start("Analyze AAPL"), config_text=config))
    assert result["analyst"] == analyst


def test_analyst_manifest() -> None:
    manifest = load_manifest(ROOT / "agents" / "stock-analyst" / "dagr.toml")
    assert manifest.name == "stock-analyst"
    assert manifest.topic == "agents.specialist.stock-analyst"
    assert manifest.config_text.splitlines()[0] == config_first_line()
    assert manifest.grants.publish == (RESULTS,)  # so --reply-to agents.main.results is allowed
    assert manifest.grants.spawn == ()
    assert manifest.grants.max_suspend_s == 0


# --- orchestrator ---------------------------------------------------------------------------------


def test_orchestrator_manifest() -> None:
    grants = load_manifest(ROOT / "agents" / "orchestrator" / "dagr.toml").grants
    assert grants.spawn == ("stock-analyst",)
    assert grants.publish == (RESULTS,)
    assert grants.max_suspend_s == 300


def start(
    sandbox: Sandbox, demo: dict[str, AgentComponent], context: str
) -> tuple[Outcome, list[Spawn], LocalState]:
    outcome = invoke(sandbox, demo, "orchestrator", Start(context))
    assert outcome.status is Status.SUSPENDED, outcome
    state = LocalState(None)
    state.apply(outcome)
    return outcome, [e for e in outcome.effects if isinstance(e, Spawn)], state


@pytest.mark.parametrize(
    ("context", "tickers"),
    [
        ("", TICKERS),
        ("Check for stock analyst results", TICKERS),
        ("GME TSLA NVDA", ("GME", "TSLA", "NVDA")),
        ("$AMC, AAPL and AMC again", ("AMC", "AAPL")),
        ("GME XYZ", ("GME", "XYZ")),  # the analyst, who owns the data, judges unknown tickers
    ],
)
def test_orchestrator_start_spawns_one_analyst_per_ticker_and_awaits_them_all(
    sandbox: Sandbox, demo: dict[str, AgentComponent], context: str, tickers: Sequence[str]
) -> None:
    outcome, spawns, state = start(sandbox, demo, context)
    assert [(s.specialist, s.context, s.reply_to) for s in spawns] == [
        ("stock-analyst", f"Analyze {t}", None) for t in tickers
    ]
    assert len({s.child_id for s in spawns}) == len(tickers)
    # No guessed sleep: one await on exactly its children, bounded by a deadline.
    assert outcome.suspend is None
    assert outcome.awaiting == Await(
        tuple(s.child_id for s in spawns), "all", NOW_MS + DEADLINE_S * 1000, "aggregate"
    )
    assert not [e for e in outcome.effects if isinstance(e, Publish)]
    assert stored(state, "children") == [[s.child_id, t] for s, t in zip(spawns, tickers, strict=True)]


def test_orchestrator_refuses_too_many_tickers(sandbox: Sandbox, demo: dict[str, AgentComponent]) -> None:
    many = " ".join(f"T{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(21))
    outcome = invoke(sandbox, demo, "orchestrator", Start(many))
    assert outcome.status is Status.FAILED
    assert outcome.failure == "21 tickers asked for; ask for at most 20 at once"
    assert outcome.effects == ()


def as_event(result: Resolution) -> Reply:
    """A stored reply as the reply event it is when the orchestrator is neither awaiting nor ended."""
    return Reply(
        ChildReply(result.handle, result.source, ok=result.ok, error=None if result.ok else result.error)
    )


def analyst_replies(
    sandbox: Sandbox, demo: dict[str, AgentComponent], spawns: Sequence[Spawn], *, first_seq: int = 1
) -> list[Resolution]:
    """Run the analyst on each spawn's context, as the mesh would, and wrap its outcome as a reply."""
    inbox = []
    for i, spawn in enumerate(spawns):
        out = invoke(sandbox, demo, "stock-analyst", Start(spawn.context), task_id=spawn.child_id)
        assert out.status in (Status.OK, Status.FAILED), out
        inbox.append(
            Resolution(
                handle=spawn.child_id,
                kind="child",
                source="stock-analyst",
                ok=out.result if out.status is Status.OK else None,
                error=out.failure if out.status is Status.FAILED else None,
                seq=first_seq + i,
            )
        )
    return inbox


def resume(
    sandbox: Sandbox,
    demo: dict[str, AgentComponent],
    state: LocalState,
    spawns: Sequence[Spawn],
    resolved: Sequence[Resolution],
    *,
    context: str = "aggregate",
) -> Outcome:
    """The resume the host delivers when the await ends: what resolved, what is still pending."""
    done = {r.handle for r in resolved}
    pending = tuple(s.child_id for s in spawns if s.child_id not in done)
    event = Resumed(tuple(resolved), pending, timed_out=bool(pending), resume_context=context)
    outcome = invoke(sandbox, demo, "orchestrator", event, state=state)
    state.apply(outcome)
    return outcome


def stored(state: LocalState, key: str) -> Any:
    entry = state.get("instance", key)
    assert entry is not None and entry.value is not None, key
    return cbor2.loads(entry.value)


def published(outcome: Outcome) -> list[Any]:
    return [
        cbor2.loads(e.payload) for e in outcome.effects if isinstance(e, Publish) and e.subject == RESULTS
    ]


def test_orchestrator_resumed_with_every_reply_publishes_one_report(
    sandbox: Sandbox, demo: dict[str, AgentComponent]
) -> None:
    _, spawns, state = start(sandbox, demo, "GME AMC TSLA AAPL NVDA XYZ")
    inbox = analyst_replies(sandbox, demo, spawns)
    outcome = resume(sandbox, demo, state, spawns, list(reversed(inbox)))  # arrival order is not asking order

    report = value(outcome)
    assert published(outcome) == [report]
    assert len([e for e in outcome.effects if isinstance(e, Publish)]) == 1
    assert set(report) == {
        "tickers", "as_of", "rows", "ranking", "signals", "most_positive", "most_negative",
        "failed", "deadline_s", "timed_out", "summary",
    }  # fmt: skip

    results = {r.handle: cbor2.loads(r.ok) for r in inbox if r.ok is not None}
    assert report["tickers"] == [*TICKERS, "XYZ"]
    assert report["rows"] == [results[s.child_id] for s in spawns if s.child_id in results]
    assert [row["ticker"] for row in report["rows"]] == list(TICKERS)
    for row in report["rows"]:  # the rows are the analysts' figures, which match the data
        assert abs(row["return_30d_pct"] - reference(row["ticker"])["return_30d_pct"]) <= ROUNDING

    by_return = sorted(TICKERS, key=lambda t: reference(t)["return_30d_pct"], reverse=True)
    assert report["ranking"] == [
        {"rank": i, "ticker": t, "return_30d_pct": round(reference(t)["return_30d_pct"], DECIMALS)}
        for i, t in enumerate(by_return, start=1)
    ]
    signals = [reference(t)["signal"] for t in TICKERS]
    assert report["signals"] == {s: signals.count(s) for s in ("bullish", "bearish", "neutral")}
    sentiment = {t: reference(t)["sentiment_mean"] for t in TICKERS}
    assert report["most_positive"]["ticker"] == max(sentiment, key=lambda t: sentiment[t])
    assert report["most_negative"]["ticker"] == min(sentiment, key=lambda t: sentiment[t])
    assert report["most_positive"]["mentions"] == reference(report["most_positive"]["ticker"])["mentions"]

    xyz = next(s for s in spawns if s.context == "Analyze XYZ")
    (failed,) = report["failed"]
    assert failed["ticker"] == "XYZ"
    assert failed["child_id"] == xyz.child_id
    assert failed["error"].startswith("unknown ticker 'XYZ'")
    assert report["deadline_s"] == DEADLINE_S
    assert report["timed_out"] is False
    assert report["as_of"] == "2026-01-16"

    summary = report["summary"]
    assert summary.startswith("5 of 6 analysts answered (data as of 2026-01-16).")
    assert f"{by_return[0]} did best ({reference(by_return[0])['return_30d_pct']:+.2f} %)" in summary
    assert f"{by_return[-1]} worst" in summary
    assert f"Reddit is most upbeat on {report['most_positive']['ticker']}" in summary
    assert "Failed: XYZ (unknown ticker 'XYZ'" in summary

    assert stored(state, "report") == report


def test_orchestrator_at_the_deadline_reports_the_silent_analysts_failed(
    sandbox: Sandbox, demo: dict[str, AgentComponent]
) -> None:
    _, spawns, state = start(sandbox, demo, "GME AMC NVDA")
    gme, amc, _nvda = analyst_replies(sandbox, demo, spawns)

    outcome = resume(sandbox, demo, state, spawns, [gme, amc])
    report = value(outcome)
    assert published(outcome) == [report]
    assert [row["ticker"] for row in report["rows"]] == ["GME", "AMC"]
    assert report["failed"] == [
        {"ticker": "NVDA", "child_id": spawns[2].child_id, "error": f"no reply within {DEADLINE_S} s"}
    ]
    assert report["timed_out"] is True
    assert [entry["ticker"] for entry in report["ranking"]] == sorted(
        ["GME", "AMC"], key=lambda t: reference(t)["return_30d_pct"], reverse=True
    )
    assert sum(report["signals"].values()) == 2
    assert report["summary"].startswith("2 of 3 analysts answered")
    assert report["summary"].endswith(f"Failed: NVDA (no reply within {DEADLINE_S} s).")


def test_orchestrator_keeps_a_reply_event_and_awaits_only_the_others(
    sandbox: Sandbox, demo: dict[str, AgentComponent]
) -> None:
    _, spawns, state = start(sandbox, demo, "GME AMC")
    gme, amc = analyst_replies(sandbox, demo, spawns)

    # A reply as an event (the instance was not awaiting when it came): kept, and the rest awaited.
    early = invoke(sandbox, demo, "orchestrator", as_event(gme), state=state)
    assert early.status is Status.SUSPENDED, early
    assert early.awaiting is not None and early.awaiting.handles == (spawns[1].child_id,)
    state.apply(early)
    report = value(resume(sandbox, demo, state, spawns[1:], [amc]))
    assert [row["ticker"] for row in report["rows"]] == ["GME", "AMC"]
    assert report["failed"] == []
    assert report["summary"].endswith("No analyst failed.")

    # After the report, a late reply changes nothing: no publish, the same result.
    late = invoke(sandbox, demo, "orchestrator", as_event(amc), state=state)
    assert value(late) == report
    assert published(late) == []
    assert any("late reply" in line.message for line in late.logs)


@pytest.mark.parametrize("event", [Wake("aggregate"), Resumed((), (), timed_out=True, resume_context="x")])
def test_orchestrator_fails_clearly_on_a_wake_before_any_start(
    sandbox: Sandbox, demo: dict[str, AgentComponent], event: Event
) -> None:
    outcome = invoke(sandbox, demo, "orchestrator", event)
    assert outcome.status is Status.FAILED
    assert outcome.failure is not None
    assert "start the orchestrator first" in outcome.failure


def test_orchestrator_moved_by_the_original_suspend_command_aggregates(
    sandbox: Sandbox, demo: dict[str, AgentComponent]
) -> None:
    """`dagr suspend --resume-context "Check for stock analyst results"` (the original DAgR's
    example) on an awaiting orchestrator moves its deadline: it resumes with that context and
    reports what has come, not fails."""
    _, spawns, state = start(sandbox, demo, "GME TSLA")
    gme, _tsla = analyst_replies(sandbox, demo, spawns)
    outcome = resume(sandbox, demo, state, spawns, [gme], context="Check for stock analyst results")
    assert outcome.status is Status.OK, outcome.failure
    report = value(outcome)
    assert published(outcome) == [report]
    assert [row["ticker"] for row in report["rows"]] == ["GME"]
    assert [f["ticker"] for f in report["failed"]] == ["TSLA"]


def test_orchestrator_woken_by_an_old_suspend_aggregates_its_inbox(
    sandbox: Sandbox, demo: dict[str, AgentComponent]
) -> None:
    """An instance started by the orchestrator's earlier version (it suspended): a plain wake
    reads the inbox and reports, with the results marked read."""
    _, spawns, state = start(sandbox, demo, "GME TSLA")
    inbox = analyst_replies(sandbox, demo, spawns)
    outcome = invoke(sandbox, demo, "orchestrator", Wake("aggregate"), state=state, inbox=inbox)
    report = value(outcome)
    assert [row["ticker"] for row in report["rows"]] == ["GME", "TSLA"]
    assert RepliesConsumed(tuple(r.seq for r in inbox)) in outcome.effects
