"""orchestrator: one stock-analyst per ticker, a nap, then one report of what they found.

Start context: the tickers to analyse, as words of 1-5 capital letters ("GME TSLA NVDA", "$AMC,
AAPL"); anything else in the text is ignored, and with no such word it asks about every ticker
in ``TICKERS``. Unknown tickers are sent anyway: the analyst owns the data and says what it does
not know, and the report lists them under ``failed``.

1. start: spawn ``stock-analyst`` with "Analyze T" for each ticker T (replies come to this
   instance's inbox), keep the child ids in instance state, suspend for 3 s.
2. wake (resume context "aggregate", or whatever an operator gave `dagr suspend`): move the new replies from the inbox into state (a reply read is gone from
   the inbox once the invocation commits, so they must be kept across the waits). While some
   analyst has not answered, suspend again for 2 s, at most 5 times; then build the report, publish
   it to ``agents.main.results`` and return it. An analyst still silent by then is reported failed.

The report (field names are stable; the CLI and the demo test read them):

- ``tickers``: the tickers asked about, in order; ``as_of``: the latest date in the analyses.
- ``rows``: the analysts' results, one dict per ticker that succeeded, in the order asked.
- ``ranking``: ``{rank, ticker, return_30d_pct}`` by 30-day return, best first.
- ``signals``: ``{bullish, bearish, neutral}`` counts.
- ``most_positive`` / ``most_negative``: ``{ticker, sentiment_mean, mentions}`` of the rows with
  the highest / lowest mean Reddit sentiment (the first in asking order on a tie), or None.
- ``failed``: ``{ticker, child_id, error}`` for each analyst that failed or never answered.
- ``waited_s``: how long the orchestrator slept in total; ``summary``: a paragraph built from the above.
"""

import re
from typing import Any

import dagr_agent as dagr

ANALYST = "stock-analyst"
RESULTS = "agents.main.results"
# The tickers the analyst has data for: the default request, not a result.
TICKERS = ("GME", "AMC", "TSLA", "AAPL", "NVDA")
MAX_TICKERS = 20
FIRST_WAIT_S = 3
RETRY_WAIT_S = 2
MAX_RETRIES = 5
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
        ctx.state.put("replies", {})
        ctx.state.put("retries", 0)
        ctx.log.info(f"waiting {FIRST_WAIT_S} s for {len(children)} analysts: {' '.join(tickers)}")
        ctx.suspend(after=FIRST_WAIT_S, resume_context=AGGREGATE)

    def on_wake(self, ctx: dagr.Context, resume_context: str) -> object:
        if resume_context != AGGREGATE:
            # Moved by an operator (`dagr suspend --resume-context "Check for stock analyst
            # results"`, as in the original DAgR): any wake means "aggregate what has come".
            ctx.log.info(f"woken with {resume_context!r}: aggregating the replies so far")
        children: list[list[str]] = ctx.state.get("children", [])
        if not children:
            raise dagr.Fail("woke to aggregate, but no analysts were spawned: start the orchestrator first")
        replies = _collect(ctx, children)
        missing = [ticker for child_id, ticker in children if child_id not in replies]
        retries: int = ctx.state.get("retries", 0)
        if missing and retries < MAX_RETRIES:
            ctx.state.put("retries", retries + 1)
            ctx.log.info(
                f"{len(replies)} of {len(children)} analysts answered; still waiting for "
                f"{' '.join(missing)} (wait {retries + 1} of {MAX_RETRIES}, {RETRY_WAIT_S} s)"
            )
            ctx.suspend(after=RETRY_WAIT_S, resume_context=AGGREGATE)
        if missing:
            ctx.log.warn(f"giving up on {' '.join(missing)} after {MAX_RETRIES} extra waits")
        report = build_report(children, replies, waited_s=FIRST_WAIT_S + retries * RETRY_WAIT_S)
        ctx.state.put("report", report)
        ctx.publish(RESULTS, report)
        ctx.log.info(f"published the report to {RESULTS}: {report['summary']}")
        return report

    def on_reply(self, ctx: dagr.Context, reply: dagr.Reply) -> object:
        # Replies normally wait in the inbox while this instance is suspended; one arrives as an
        # event only when the instance is not suspended, i.e. after the report (too late) or in a race.
        report = ctx.state.get("report")
        if report is not None:
            ctx.log.warn(f"late reply from {reply.child_id} after the report; it is not in it")
            return report
        replies = ctx.state.get("replies", {})
        replies[reply.child_id] = _stored(reply)
        ctx.state.put("replies", replies)
        ctx.suspend(after=RETRY_WAIT_S, resume_context=AGGREGATE)


def _stored(reply: dagr.Reply) -> Row:
    if reply.ok:
        return {"ok": True, "value": reply.value, "error": None}
    return {"ok": False, "value": None, "error": reply.error or "failed without a message"}


def _collect(ctx: dagr.Context, children: list[list[str]]) -> dict[str, Row]:
    """Move the unread replies of our children into state; return all kept so far."""
    ticker_of = {child_id: ticker for child_id, ticker in children}
    replies: dict[str, Row] = ctx.state.get("replies", {})
    new = ctx.replies()
    for reply in new:
        if reply.child_id not in ticker_of:
            ctx.log.warn(f"ignoring a reply from {reply.child_id}, which is not one of our analysts")
            continue
        replies[reply.child_id] = _stored(reply)
        outcome = "ok" if reply.ok else f"failed: {reply.error}"
        ctx.log.info(f"reply from {ticker_of[reply.child_id]} ({reply.child_id}): {outcome}")
    if new:
        ctx.state.put("replies", replies)
    return replies


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


def build_report(children: list[list[str]], replies: dict[str, Row], *, waited_s: int) -> Row:
    rows: list[Row] = []
    failed: list[Row] = []
    for child_id, ticker in children:
        reply = replies.get(child_id)
        if reply is None:
            error: str | None = f"no reply after {waited_s} s"
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
        "waited_s": waited_s,
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
