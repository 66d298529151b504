"""orchestrator: one stock-analyst per ticker, an await on all of them, then one report.

Start context: the tickers to analyse, as words of 1-5 capital letters ("GME TSLA NVDA", "$AMC,
AAPL"); anything else in the text is ignored, and with no such word it asks about every ticker
in ``TICKERS``. Unknown tickers are sent anyway: the analyst owns the data and says what it does
not know, and the report lists them under ``failed``.

1. start: spawn ``stock-analyst`` with "Analyze T" for each ticker T, keep the children in
   instance state, and await all of them for at most ``DEADLINE_S``. Nothing runs while it waits:
   the host wakes a fresh instance as soon as the last analyst has answered.
2. resumed (resume context "aggregate", or whatever an operator gave `dagr suspend`, which moves
   the deadline): build the report from the answers, publish it to ``agents.main.results`` and
   return it. An analyst still silent at the deadline is reported failed; its answer, if it ever
   comes, is kept in the inbox and not in the report.

The report (field names are stable; the CLI and the demo test read them):

- ``tickers``: the tickers asked about, in order; ``as_of``: the latest date in the analyses.
- ``rows``: the analysts' results, one dict per ticker that succeeded, in the order asked.
- ``ranking``: ``{rank, ticker, return_30d_pct}`` by 30-day return, best first.
- ``signals``: ``{bullish, bearish, neutral}`` counts.
- ``most_positive`` / ``most_negative``: ``{ticker, sentiment_mean, mentions}`` of the rows with
  the highest / lowest mean Reddit sentiment (the first in asking order on a tie), or None.
- ``failed``: ``{ticker, child_id, error}`` for each analyst that failed or never answered.
- ``deadline_s``: how long it was prepared to wait; ``timed_out``: whether the deadline passed
  (or an operator cut the wait short) before every analyst answered.
- ``summary``: a paragraph built from the above.
"""

import re
from typing import Any

import dagr_agent as dagr

ANALYST = "stock-analyst"
RESULTS = "agents.main.results"
# The tickers the analyst has data for: the default request, not a result.
TICKERS = ("GME", "AMC", "TSLA", "AAPL", "NVDA")
MAX_TICKERS = 20
# An upper bound, not a guess: the wait ends when the last analyst answers (well under a second
# each); the deadline only bounds a swarm whose analysts are stuck or not deployed.
DEADLINE_S = 60
AGGREGATE = "aggregate"
SIGNALS = ("bullish", "bearish", "neutral")
ROW_FIELDS = ("ticker", "last_close", "return_30d_pct", "mentions", "sentiment_mean", "signal")

_TICKER_WORD = re.compile(r"\$?\b([A-Z]{1,5})\b")

Row = dict[str, Any]  # an analyst's result, a report entry: CBOR maps


def parse_tickers(context: str) -> list[str]:
    return list(dict.fromkeys(_TICKER_WORD.findall(context))) or list(TICKERS)


class Orchestrator(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        tickers = parse_tickers(context)
        if len(tickers) > MAX_TICKERS:
            raise dagr.Fail(f"{len(tickers)} tickers asked for; ask for at most {MAX_TICKERS} at once")
        children = []
        for ticker in tickers:
            try:
                child_id = ctx.spawn(ANALYST, f"Analyze {ticker}")
            except (dagr.Denied, dagr.NotFound, dagr.Invalid, dagr.QuotaExceeded) as exc:
                # Retrying will not make these work: say what to fix instead of trapping.
                raise dagr.Fail(
                    f"cannot spawn {ANALYST} for {ticker}: {exc}; "
                    f"deploy {ANALYST} and grant spawn = [{ANALYST!r}] in dagr.toml"
                ) from None
            children.append([child_id, ticker])
            ctx.log.info(f"spawned {ANALYST} {child_id} for {ticker}")
        ctx.state.put("children", children)
        ctx.log.info(f"awaiting {len(children)} analysts (at most {DEADLINE_S} s): {' '.join(tickers)}")
        ctx.await_all([child_id for child_id, _ in children], timeout_s=DEADLINE_S, resume_context=AGGREGATE)

    def on_resumed(self, ctx: dagr.Context, resumed: dagr.Resumed) -> object:
        return self._report(ctx, list(resumed), resumed.resume_context, timed_out=resumed.timed_out)

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        # Only an instance started before the orchestrator awaited (it used to suspend) wakes
        # this way; it aggregates what its inbox holds, as a resume would.
        results = ctx.results()
        return self._report(ctx, results, resume_context, timed_out=True)

    def on_reply(self, ctx: dagr.Context, reply: dagr.Reply) -> object:
        # An answer arrives as an event only when this instance is neither awaiting nor ended: it
        # has nothing to add to a report already made, and is kept for one still to come.
        report = ctx.state.get("report")
        if report is not None:
            ctx.log.warn(f"late reply from {reply.child_id} after the report; it is not in it")
            return report
        early: dict[str, Row] = ctx.state.get("early", {})
        early[reply.child_id] = _stored(reply.ok, reply.value, reply.error)
        ctx.state.put("early", early)
        children: list[list[str]] = ctx.state.get("children", [])
        missing = [child_id for child_id, _ in children if child_id not in early]
        if not missing:
            return self._report(ctx, [], AGGREGATE, timed_out=False)
        ctx.await_all(missing, timeout_s=DEADLINE_S, resume_context=AGGREGATE)

    def _report(self, ctx: dagr.Context, results: list[dagr.Result], context: str, *, timed_out: bool) -> Row:
        if context != AGGREGATE:
            # Moved by an operator (`dagr suspend --resume-context "Check for stock analyst
            # results"`, as in the original DAgR): any wake means "aggregate what has come".
            ctx.log.info(f"woken with {context!r}: aggregating the replies so far")
        children: list[list[str]] = ctx.state.get("children", [])
        if not children:
            raise dagr.Fail("woke to aggregate, but no analysts were spawned: start the orchestrator first")
        ticker_of = {child_id: ticker for child_id, ticker in children}
        replies: dict[str, Row] = ctx.state.get("early", {})
        for result in results:
            if result.handle not in ticker_of:
                ctx.log.warn(f"ignoring a result for {result.handle}, which is not one of our analysts")
                continue
            replies[result.handle] = _stored(result.ok, result.value, result.error)
            outcome = "ok" if result.ok else f"failed: {result.error}"
            ctx.log.info(f"reply from {ticker_of[result.handle]} ({result.handle}): {outcome}")
        missing = [ticker for child_id, ticker in children if child_id not in replies]
        if missing:
            ctx.log.warn(f"no answer from {' '.join(missing)}: reported as failed")
        report = build_report(children, replies, deadline_s=DEADLINE_S, timed_out=timed_out and bool(missing))
        ctx.state.put("report", report)
        ctx.publish(RESULTS, report)
        ctx.log.info(f"published the report to {RESULTS}: {report['summary']}")
        return report


def _stored(ok: bool, value: object, error: str | None) -> Row:
    if ok:
        return {"ok": True, "value": value, "error": None}
    return {"ok": False, "value": None, "error": error or "failed without a message"}


def _row_problem(value: object, ticker: str) -> str | None:
    if not isinstance(value, dict):
        return f"the analyst returned {type(value).__name__}, not a dict"
    absent = [name for name in ROW_FIELDS if name not in value]
    if absent:
        return f"the analyst's result lacks {', '.join(absent)}"
    not_numbers = [
        name
        for name in ("last_close", "return_30d_pct", "sentiment_mean", "mentions")
        if isinstance(value[name], bool) or not isinstance(value[name], int | float)
    ]
    if not_numbers:
        return f"the analyst's {', '.join(not_numbers)} should be numbers"
    if value["ticker"] != ticker:
        return f"asked about {ticker}, the analyst answered about {value['ticker']}"
    return None


def build_report(
    children: list[list[str]], replies: dict[str, Row], *, deadline_s: int, timed_out: bool
) -> Row:
    rows: list[Row] = []
    failed: list[Row] = []
    for child_id, ticker in children:
        reply = replies.get(child_id)
        if reply is None:
            error: str | None = f"no reply within {deadline_s} s"
        elif not reply["ok"]:
            error = str(reply["error"])
        else:
            error = _row_problem(reply["value"], ticker)
        if error is None:
            assert reply is not None
            rows.append(reply["value"])
        else:
            failed.append({"ticker": ticker, "child_id": child_id, "error": error})

    ranked = sorted(rows, key=lambda row: -float(row["return_30d_pct"]))
    signals = {name: sum(1 for row in rows if row["signal"] == name) for name in SIGNALS}
    dates = [str(row["as_of"]) for row in rows if row.get("as_of")]
    report: Row = {
        "tickers": [ticker for _, ticker in children],
        "as_of": max(dates) if dates else None,
        "rows": rows,
        "ranking": [
            {"rank": i, "ticker": row["ticker"], "return_30d_pct": row["return_30d_pct"]}
            for i, row in enumerate(ranked, start=1)
        ],
        "signals": signals,
        "most_positive": _mood(max(rows, key=_sentiment, default=None)),
        "most_negative": _mood(min(rows, key=_sentiment, default=None)),
        "failed": failed,
        "deadline_s": deadline_s,
        "timed_out": timed_out,
    }
    report["summary"] = _summary(report, ranked, rows)
    return report


def _sentiment(row: Row) -> float:
    return float(row["sentiment_mean"])


def _mood(row: Row | None) -> Row | None:
    if row is None:
        return None
    return {"ticker": row["ticker"], "sentiment_mean": row["sentiment_mean"], "mentions": row["mentions"]}


def _summary(report: Row, ranked: list[Row], rows: list[Row]) -> str:
    failed: list[Row] = report["failed"]
    asked = len(rows) + len(failed)
    parts = [f"{len(rows)} of {asked} analysts answered"]
    if report["as_of"]:
        parts[0] += f" (data as of {report['as_of']})"
    parts[0] += "."
    if ranked:
        best, worst = ranked[0], ranked[-1]
        if len(ranked) == 1:
            parts.append(f"{best['ticker']} moved {best['return_30d_pct']:+.2f} % over 30 trading days.")
        else:
            parts.append(
                f"Over 30 trading days {best['ticker']} did best ({best['return_30d_pct']:+.2f} %) "
                f"and {worst['ticker']} worst ({worst['return_30d_pct']:+.2f} %)."
            )
        by_signal = []
        for name in SIGNALS:
            names = [str(row["ticker"]) for row in rows if row["signal"] == name]
            if names:
                by_signal.append(f"{len(names)} {name} ({', '.join(names)})")
        parts.append(f"Signals: {', '.join(by_signal)}.")
        up: Row = report["most_positive"]
        down: Row = report["most_negative"]
        mood = (
            f"Reddit is most upbeat on {up['ticker']} (mean sentiment {up['sentiment_mean']:+.2f} "
            f"over {up['mentions']} posts)"
        )
        if down["ticker"] != up["ticker"]:
            mood += (
                f" and gloomiest on {down['ticker']} "
                f"({down['sentiment_mean']:+.2f} over {down['mentions']} posts)"
            )
        parts.append(mood + ".")
    if failed:
        parts.append(
            "Failed: " + "; ".join(f"{f['ticker']} ({_short(str(f['error']))})" for f in failed) + "."
        )
    else:
        parts.append("No analyst failed.")
    return " ".join(parts)


def _short(error: str, limit: int = 100) -> str:
    """The error's first clause, for the summary (the whole error is in ``failed``)."""
    text = (error.strip().splitlines() or [""])[0].split("; ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


Handler = dagr.handler(Orchestrator)
