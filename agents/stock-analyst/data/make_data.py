"""Regenerate the stock-analyst's made-up data: ``python agents/stock-analyst/data/make_data.py``.

Not part of the agent (app.py never imports it); it documents where the files came from and makes
them reproducible. Everything is invented: no prices or posts were downloaded.

- ``prices.csv``: 60 trading days of daily closes for five tickers, a seeded geometric random walk
  per ticker with its own drift, volatility and (for the meme stocks) a few jump days, so the
  tickers end up with different trends. Weekends and NYSE holidays are skipped.
- ``posts.json``: 100 short Reddit-style posts, hand-written below, with seeded dates, authors,
  subreddits and scores.
- ``lexicon.csv``: word -> sentiment score in [-3, 3], in the spirit of AFINN, plus WSB slang.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261892
LAST_DAY = dt.date(2026, 1, 16)
TRADING_DAYS = 60
HOLIDAYS = {dt.date(2025, 11, 27), dt.date(2025, 12, 25), dt.date(2026, 1, 1)}

# ticker: (first close, daily drift, daily volatility, {trading day index: jump as a fraction})
SERIES: dict[str, tuple[float, float, float, dict[int, float]]] = {
    "GME": (22.40, 0.0025, 0.034, {41: 0.14, 42: 0.06, 47: -0.08}),
    "AMC": (3.62, -0.0040, 0.038, {35: -0.10, 50: 0.06}),
    "TSLA": (438.10, 0.0, 0.029, {44: -0.06, 52: 0.05}),
    "AAPL": (254.80, 0.0006, 0.012, {}),
    "NVDA": (181.30, 0.0020, 0.024, {38: 0.04}),
}

LEXICON: dict[str, int] = {
    # positive
    "moon": 3, "mooning": 3, "rocket": 2, "squeeze": 2, "tendies": 2, "bullish": 2, "bull": 1,
    "calls": 1, "buy": 1, "buying": 1, "bought": 1, "hold": 1, "holding": 1, "hodl": 1,
    "strong": 2, "stronger": 2, "beat": 2, "beats": 2, "record": 2, "growth": 2, "undervalued": 2,
    "cheap": 1, "love": 2, "great": 2, "good": 1, "solid": 1, "green": 1, "rally": 2, "breakout": 2,
    "winning": 2, "gains": 2, "profit": 2, "upgrade": 2, "upside": 2, "ath": 2, "printing": 2,
    "confident": 2, "happy": 2, "excited": 2, "best": 2, "impressive": 2, "demand": 1,
    # negative
    "crash": -3, "crashing": -3, "dump": -2, "dumping": -2, "dumped": -2, "bearish": -2, "bear": -1,
    "puts": -1, "sell": -1, "selling": -1, "sold": -1, "weak": -2, "miss": -2, "missed": -2,
    "overvalued": -2, "expensive": -1, "bubble": -2, "red": -1, "drop": -2, "dropping": -2,
    "loss": -2, "losses": -2, "lost": -2, "bagholder": -2, "bagholding": -2, "bags": -1, "rug": -3,
    "scam": -3, "dilution": -2, "dilute": -2, "bankrupt": -3, "bankruptcy": -3, "debt": -2,
    "fear": -2, "worried": -2, "worry": -2, "ugly": -2, "terrible": -3, "awful": -3,
    "downgrade": -2, "hate": -2, "pain": -2, "fraud": -3, "risky": -1, "dead": -3, "panic": -2,
    "tanking": -3, "tanked": -3, "disappointing": -2, "disappointed": -2, "worst": -3,
}  # fmt: skip

POSTS = [
    # GME
    "GME breakout today, volume is insane. Holding my shares, this squeeze is not done 🚀",
    "Bought more GME on the dip. Cash pile is strong and the balance sheet has no debt.",
    "GME to the moon? Probably not, but I love this stock and I will hold.",
    "$GME green three days in a row. Shorts are sweating, tendies incoming",
    "Is anyone else worried GME will dump after this run? Took some profit at 28.",
    "GME earnings beat on cost cuts. Solid quarter, bullish long term.",
    "DRS'd another 20 GME shares. Diamond hands, hodl forever",
    "GME calls printing this week, best trade of my year",
    "Sold my GME at a loss in October, now watching it rally without me. Pain.",
    "GME is a meme, the valuation is a bubble and the retail business is dead.",
    "$GME squeeze 2.0 loading? Borrow fee up, options chain lit up green",
    "GME holders: what is your exit plan? Asking for a friend who is bagholding since 2021",
    "Happy GME holder, cost basis 17. Not selling.",
    "GME rally is impressive, but I am worried about another share offering and dilution",
    "New GME ATH for this quarter, I am excited. Buy and hold",
    "Bought GME calls on Friday. Either tendies or ramen.",
    "GME management is confident, cash is strong, that is good enough for me",
    "GME vs AMC: one has cash, one has debt. Easy choice, buying GME.",
    "GME chart: breakout above the 50 day line, very bullish",
    "Honestly GME is overvalued at these levels, took profit and will buy back lower",
    "GME up 9% premarket, holding strong 🚀🚀",
    "Anyone else buying GME every payday? Slow and steady gains",
    "GME puts are free money said nobody who tried it. Shorts lost again.",
    "GME squeeze talk is back on the front page. Great day to be a holder",
    "Watching GME and TSLA today, both moving, GME looks stronger",
    "GME gains paid for my holiday, love this stock",
    "My wife's boyfriend says GME is a scam. He sold at the bottom.",
    "GME pulled back 8% after the run, healthy. Still bullish.",
    "GME: the fundamentals are better than people think, undervalued on cash alone",
    "Down bad on GME calls that expired yesterday. Awful timing.",
    # AMC
    "AMC another share offering. Dilution again, bagholders get wrecked",
    "$AMC red again, I am bagholding at 5. This is pain.",
    "AMC debt wall is ugly. Bankruptcy risk is real.",
    "AMC box office numbers were disappointing this weekend",
    "Still holding AMC, the movies are back and Q4 should be strong",
    "AMC apes, is it over? Down 30% since October",
    "Sold AMC today, took the loss, moving to AAPL. Done with dilution.",
    "AMC is a scam on retail, management dumped shares on us again",
    "AMC popcorn sales at record levels, bullish on the turnaround",
    "AMC tanking after the offering. Awful.",
    "AMC short interest still high, squeeze possible? I doubt it",
    "AMC weekly chart is the worst I have seen, every rally gets sold",
    "Bought a few AMC for fun, cheap lottery ticket",
    "AMC fear in the daily thread today, people panic selling",
    "AMC vs GME is no contest, AMC burns cash and adds debt",
    "My AMC position is down 60%. Lost faith.",
    "AMC: the dilution never ends. Bearish.",
    "AMC holders still confident? Genuine question, not FUD",
    "AMC bounce today, green for once, enjoy it",
    "AMC earnings missed again, terrible guidance",
    # TSLA
    "TSLA robotaxi hype again, calls printing for now",
    "TSLA deliveries missed estimates. Bearish near term.",
    "$TSLA is overvalued by any metric but the chart does not care",
    "Bought TSLA puts before the delivery numbers, easy profit",
    "TSLA energy storage growth is impressive, record quarter",
    "TSLA dropping after the Musk news, panic selling in the premarket",
    "Long TSLA since 2019, still holding, still confident",
    "TSLA margins weak, price cuts everywhere. Worried.",
    "TSLA breakout incoming? Triangle on the daily",
    "TSLA down 6% today, ugly candle",
    "TSLA FSD demand looks strong in China, bullish",
    "Sold half my TSLA, too risky at this valuation",
    "TSLA vs NVDA for 2026? I'd buy NVDA, TSLA is a bubble",
    "TSLA is the best company in the world and I will die on this hill",
    "TSLA puts paid, thanks Elon",
    "TSLA rally today on the robotaxi update, nice gains",
    "TSLA downgrade by two banks this week, fear is back",
    "TSLA: great product, expensive stock",
    "TSLA chart looks like it wants to crash back to 380",
    "Holding TSLA calls through the weekend, wish me luck",
    "TSLA is a meme stock with a car company attached",
    "TSLA bounce from support, bullish if it holds 420",
    # NVDA
    "NVDA record data center revenue, beat on every line",
    "$NVDA demand for Blackwell is insane, bullish into earnings",
    "NVDA new ATH today, my calls are printing",
    "NVDA is in a bubble, every AI stock is overvalued",
    "Bought more NVDA on the dip, long term growth story intact",
    "NVDA guidance strong, margins impressive, buying",
    "NVDA selling off on China export news, worried",
    "NVDA up again, tendies for the whole family",
    "Holding NVDA since 2022, best decision I ever made",
    "NVDA: expensive but the growth justifies it, confident",
    "NVDA dropping 4% on a downgrade, buy the dip",
    "NVDA is the AI trade, solid and strong",
    "Took profit on NVDA, will buy back on a pullback",
    "NVDA gains are carrying my portfolio this year",
    "NVDA breakout to a new high, good volume",
    "NVDA and AAPL are my two core holdings, happy with both",
    "NVDA fear of an AI bubble is overdone, upside remains",
    "NVDA calls after earnings, let's go 🚀",
    # AAPL
    "AAPL iPhone upgrade cycle looks solid, steady holder",
    "$AAPL is boring but the buybacks are great",
    "AAPL services growth beat, good quarter",
    "AAPL expensive at 33x earnings for low growth",
    "Bought AAPL for my kids' accounts, hold forever",
    "AAPL slow grind to a new ATH, love it",
    "AAPL AI story is weak compared to NVDA",
    "AAPL China sales missed, a bit disappointing",
    "AAPL is the safest stock in my portfolio, holding",
    "AAPL dividend and buybacks, solid as always",
    "Trimmed AAPL, rotating some into GME for fun",
    "AAPL up on the services numbers, strong quarter",
]

SUBREDDITS = {
    "GME": ["wallstreetbets", "Superstonk", "GME", "stocks"],
    "AMC": ["wallstreetbets", "amcstock", "stocks"],
    "TSLA": ["wallstreetbets", "teslainvestorsclub", "stocks", "investing"],
    "NVDA": ["wallstreetbets", "NVDA_Stock", "stocks", "investing"],
    "AAPL": ["stocks", "investing", "apple", "wallstreetbets"],
}
AUTHOR_PARTS = (
    ["diamond", "tendie", "smooth", "bagholder", "yolo", "theta", "dip", "apefree", "chart", "value"],
    ["hands", "king", "brain", "lord", "trader", "gang", "ape", "buyer", "wizard", "dad"],
)


def trading_days() -> list[dt.date]:
    days: list[dt.date] = []
    day = LAST_DAY
    while len(days) < TRADING_DAYS:
        if day.weekday() < 5 and day not in HOLIDAYS:
            days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def write_prices(rng: random.Random, days: list[dt.date]) -> None:
    rows = []
    for ticker, (first, drift, vol, jumps) in SERIES.items():
        close = first
        for i, day in enumerate(days):
            if i:
                close *= math.exp(drift + vol * rng.gauss(0, 1) + math.log1p(jumps.get(i, 0.0)))
            rows.append((day.isoformat(), ticker, f"{close:.2f}"))
    with (HERE / "prices.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["date", "ticker", "close"])
        out.writerows(rows)


def write_posts(rng: random.Random, days: list[dt.date]) -> None:
    posts = []
    for i, text in enumerate(POSTS):
        ticker = next(t for t in sorted(SUBREDDITS, key=text.find) if t in text)
        day = rng.choice(days[-30:])
        stamp = dt.datetime.combine(day, dt.time(13, 30)) + dt.timedelta(minutes=rng.randrange(420))
        posts.append(
            {
                "id": f"t3_{rng.getrandbits(40):010x}",
                "subreddit": rng.choice(SUBREDDITS[ticker]),
                "author": rng.choice(AUTHOR_PARTS[0]) + "_" + rng.choice(AUTHOR_PARTS[1]) + str(i % 97),
                "created_utc": stamp.isoformat() + "Z",
                "score": int(rng.paretovariate(1.3) * 12),
                "text": text,
            }
        )
    posts.sort(key=lambda p: p["created_utc"])
    (HERE / "posts.json").write_text(json.dumps(posts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_lexicon() -> None:
    with (HERE / "lexicon.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["word", "score"])
        out.writerows(sorted(LEXICON.items()))


def main() -> None:
    rng = random.Random(SEED)
    days = trading_days()
    write_prices(rng, days)
    write_posts(rng, days)
    write_lexicon()


if __name__ == "__main__":
    main()
