"""stock-analyst: one ticker's trend from daily closes and its mood on Reddit, from shipped data.

Start context: free text naming a ticker ("Analyze TSLA", "Check GME sentiment on Reddit"). The
first word of 1-5 capital letters (optionally with a `$`) that is a known ticker is analysed; if
no capitalised word is known, a known ticker written in lower case is accepted too. No known
ticker is a `Fail` that lists the ones there is data for.

The data lives in data/ next to this file and is read when the module is imported, which is at
build time: componentize-py snapshots the interpreter after importing app, so the parsed tables
are part of the component and nothing is read at run time (there is no filesystem then). The
figures themselves are computed per request:

- ``last_close``: the last close; ``as_of`` its date.
- ``sma_20``: the mean of the last 20 closes.
- ``volatility_20d``: the sample standard deviation of the last 20 daily log returns, times
  sqrt(252) (annualised; 0.35 means 35 %).
- ``return_30d_pct``: the change from the close 30 trading days before the last one, in percent.
- ``mentions``: posts naming the ticker (capitals, optionally with `$`: "GME", "$GME").
- ``sentiment_mean``: the mean over those posts of each post's score, the sum of the lexicon
  scores of its words (lower-cased runs of letters and apostrophes; unknown words count 0);
  0.0 when no post mentions it.
- ``trend``: "up" if the last close is above the SMA and the 30-day return is positive, "down" if
  below and negative, else "mixed". ``mood``: "positive" if sentiment_mean >= 0.5, "negative" if
  <= -0.5, else "neutral".
- ``signal``: trend (+1 up, -1 down, 0 mixed) plus mood (+1 positive, -1 negative, 0 neutral):
  "bullish" above 0, "bearish" below 0, "neutral" at 0. Sentiment can tip a mixed trend, and a
  trend contradicted by the crowd is neutral.
- ``analyst``: the first non-blank line of the registered config (markdown `#` stripped), so the
  config's path from `dagr register --config` to the agent shows in every result.

Floats are rounded to 4 decimals.
"""

import csv
import itertools
import json
import math
import re
import statistics
from pathlib import Path

import dagr_agent as dagr

DATA = Path(__file__).parent / "data"
SMA_DAYS = 20
VOLATILITY_DAYS = 20
RETURN_DAYS = 30
TRADING_DAYS_PER_YEAR = 252
MOOD_THRESHOLD = 0.5
DECIMALS = 4

_TICKER_WORD = re.compile(r"\$?\b([A-Za-z]{1,5})\b")
_WORD = re.compile(r"[a-z']+")


def _load_prices(path: Path) -> dict[str, tuple[tuple[str, float], ...]]:
    """ticker -> ((date, close), ...) in date order."""
    series: dict[str, list[tuple[str, float]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["ticker"], []).append((row["date"], float(row["close"])))
    needed = max(SMA_DAYS, VOLATILITY_DAYS + 1, RETURN_DAYS + 1)
    for ticker, rows in series.items():
        rows.sort()
        if len(rows) < needed:
            raise ValueError(f"{path}: {ticker} has {len(rows)} closes, the analysis needs {needed}")
    return {ticker: tuple(rows) for ticker, rows in series.items()}


def _load_posts(path: Path) -> tuple[str, ...]:
    return tuple(post["text"] for post in json.loads(path.read_text(encoding="utf-8")))


def _load_lexicon(path: Path) -> dict[str, int]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["word"]: int(row["score"]) for row in csv.DictReader(f)}


PRICES = _load_prices(DATA / "prices.csv")
POSTS = _load_posts(DATA / "posts.json")
LEXICON = _load_lexicon(DATA / "lexicon.csv")
KNOWN = tuple(sorted(PRICES))


def find_ticker(text: str) -> str | None:
    words = _TICKER_WORD.findall(text)
    for word in words:
        if word.isupper() and word in PRICES:
            return word
    return next((word.upper() for word in words if word.upper() in PRICES), None)


def mentioned(ticker: str, text: str) -> bool:
    return ticker in _TICKER_WORD.findall(text)


def post_score(text: str) -> int:
    return sum(LEXICON.get(word, 0) for word in _WORD.findall(text.lower()))


def price_figures(closes: list[float]) -> dict[str, float]:
    last = closes[-1]
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes[-VOLATILITY_DAYS - 1 :])]
    return {
        "last_close": last,
        "sma_20": statistics.fmean(closes[-SMA_DAYS:]),
        "volatility_20d": statistics.stdev(returns) * math.sqrt(TRADING_DAYS_PER_YEAR),
        "return_30d_pct": (last / closes[-RETURN_DAYS - 1] - 1) * 100,
    }


def classify(last_close: float, sma: float, return_pct: float, sentiment: float) -> tuple[str, str, str]:
    """(trend, mood, signal) by the rule in the module docstring."""
    if last_close > sma and return_pct > 0:
        trend, t = "up", 1
    elif last_close < sma and return_pct < 0:
        trend, t = "down", -1
    else:
        trend, t = "mixed", 0
    if sentiment >= MOOD_THRESHOLD:
        mood, m = "positive", 1
    elif sentiment <= -MOOD_THRESHOLD:
        mood, m = "negative", -1
    else:
        mood, m = "neutral", 0
    score = t + m
    return trend, mood, "bullish" if score > 0 else "bearish" if score < 0 else "neutral"


def config_title(config: str) -> str:
    line = next((line for line in config.splitlines() if line.strip()), "")
    return line.strip().lstrip("#").strip()


def _no_ticker_message(context: str) -> str:
    unknown = [word for word in _TICKER_WORD.findall(context) if word.isupper()]
    what = f"unknown ticker {unknown[0]!r}" if unknown else "no ticker"
    return (
        f"{what} in {context!r}: there is data for {', '.join(KNOWN)} only; "
        f"name one of them, e.g. 'Analyze {KNOWN[0]}'"
    )


class StockAnalyst(dagr.Agent):
    def on_start(self, ctx: dagr.Context, context: str) -> object:
        ticker = find_ticker(context)
        if ticker is None:
            raise dagr.Fail(_no_ticker_message(context))
        ctx.log.info(f"ticker {ticker} from {context!r}")

        dated = PRICES[ticker]
        closes = [close for _, close in dated]
        as_of = dated[-1][0]
        ctx.log.info(f"prices: {len(closes)} closes from {dated[0][0]} to {as_of}")
        figures = price_figures(closes)
        ctx.log.info(
            f"trend: last {figures['last_close']:.2f}, SMA20 {figures['sma_20']:.2f}, "
            f"30-day return {figures['return_30d_pct']:+.2f} %, "
            f"volatility {figures['volatility_20d'] * 100:.1f} % a year"
        )

        scores = [post_score(text) for text in POSTS if mentioned(ticker, text)]
        sentiment = statistics.fmean(scores) if scores else 0.0
        ctx.log.info(
            f"reddit: {len(scores)} of {len(POSTS)} posts mention {ticker}, mean sentiment {sentiment:+.2f}"
        )

        trend, mood, signal = classify(
            figures["last_close"], figures["sma_20"], figures["return_30d_pct"], sentiment
        )
        ctx.log.info(f"signal: {signal} (trend {trend}, mood {mood})")
        return {
            "ticker": ticker,
            "as_of": as_of,
            **{name: round(value, DECIMALS) for name, value in figures.items()},
            "mentions": len(scores),
            "sentiment_mean": round(sentiment, DECIMALS),
            "trend": trend,
            "mood": mood,
            "signal": signal,
            "analyst": config_title(ctx.config),
        }


Handler = dagr.handler(StockAnalyst)
