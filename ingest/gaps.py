"""Missing candles: finding runs of them, and re-fetching them from the venue.

``kline_gaps`` compares consecutive stored open times: on Postgres with one ``LEAD`` window
function over the ``(symbol, interval, open_time)`` index, elsewhere (SQLite) by walking the open
times in Python. Within ``[start, end]`` the edges count too: a range that should begin (or end)
with a candle it lacks has a gap there. Without ``start``/``end`` the stored series' own ends
bound the search, so a feed nobody follows does not show an ever-growing gap.

Binance itself has holes in its history (exchange outages): a gap that a re-fetch cannot fill
stays reported (``gaps_repair`` returns it in ``remaining``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from django.db import connection

from ingest import metrics
from ingest.derive import (
    candle_open_ms,
    candles_between,
    derive_klines,
    newest_closed_open_ms,
    next_open_ms,
    to_dt,
    to_ms,
)
from ingest.feeds import BASE_INTERVAL, is_derived
from ingest.models import Kline
from trader.domain import INTERVAL_MS, interval_problem

log = logging.getLogger(__name__)

_SQL_GAPS = """
SELECT open_ms, next_ms FROM (
    SELECT ROUND(EXTRACT(EPOCH FROM open_time) * 1000)::bigint AS open_ms,
           ROUND(EXTRACT(EPOCH FROM LEAD(open_time) OVER (ORDER BY open_time)) * 1000)::bigint
               AS next_ms
    FROM ingest_kline
    WHERE symbol = %s AND interval = %s AND open_time >= %s AND open_time <= %s
) AS steps
WHERE next_ms - open_ms > %s
ORDER BY open_ms
"""


@dataclass(frozen=True)
class Gap:
    """A run of missing candles: the first and last missing open times and how many."""

    first_open_ms: int
    last_open_ms: int
    count: int

    def __str__(self) -> str:
        first = to_dt(self.first_open_ms).isoformat().replace("+00:00", "Z")
        last = to_dt(self.last_open_ms).isoformat().replace("+00:00", "Z")
        return f"{first} .. {last} ({self.count} candle{'s' if self.count != 1 else ''})"


@dataclass(frozen=True)
class RepairResult:
    """``found``: the gaps before the repair; ``repaired``: candles stored by it;
    ``remaining``: the gaps after it (what the venue could not fill)."""

    symbol: str
    interval: str
    found: list[Gap] = field(default_factory=list)
    repaired: int = 0
    remaining: list[Gap] = field(default_factory=list)


def kline_gaps(
    *,
    symbol: str,
    interval: str,
    start: datetime | int | None = None,
    end: datetime | int | None = None,
    now_ms: int | None = None,
) -> list[Gap]:
    """The runs of candles missing for ``symbol`` at ``interval`` among the candles opening in
    ``[start, end]`` (aware datetimes or epoch ms), oldest first.

    Without ``start`` the search begins at the first stored candle, without ``end`` it stops at
    the newest stored one; with them, missing candles at the range's edges count, up to the
    newest candle closed at market time ``now_ms`` (default the market clock)."""
    if problem := interval_problem(interval):
        raise ValueError(problem)
    lo = None if start is None else _as_ms(start)
    hi = None if end is None else _as_ms(end)
    candles = Kline.objects.filter(symbol=symbol, interval=interval)
    if lo is not None:
        candles = candles.filter(open_time__gte=to_dt(lo))
    if hi is not None:
        candles = candles.filter(open_time__lte=to_dt(hi))
    first_stored = candles.order_by("open_time").values_list("open_time", flat=True).first()
    expected_first = None if lo is None else _aligned_up(lo, interval)

    def expected_last() -> int:
        from trader.clock import market_now_ms

        now = market_now_ms() if now_ms is None else now_ms
        newest = newest_closed_open_ms(interval, now)
        return newest if hi is None else min(candle_open_ms(hi, interval), newest)

    if first_stored is None:
        if expected_first is None or hi is None:
            return []
        return _gap_between(expected_first, expected_last(), interval)
    last_stored = candles.order_by("-open_time").values_list("open_time", flat=True).first()
    first_ms = to_ms(first_stored)
    last_ms = first_ms if last_stored is None else to_ms(last_stored)
    gaps: list[Gap] = []
    if expected_first is not None and first_ms > expected_first:
        gaps += _gap_between(expected_first, _previous_open(first_ms, interval), interval)
    if connection.vendor == "postgresql" and interval != "1M":
        steps = _steps_sql(symbol, interval, first_ms, last_ms)
    else:
        steps = _steps_python(symbol, interval, first_ms, last_ms)
    for before, after in steps:
        gaps += _gap_between(
            next_open_ms(before, interval), _previous_open(after, interval), interval
        )
    if hi is not None and last_ms < hi:
        gaps += _gap_between(next_open_ms(last_ms, interval), expected_last(), interval)
    return gaps


def gaps_repair(
    *,
    symbol: str,
    interval: str,
    start: datetime | int | None = None,
    end: datetime | int | None = None,
    venue: Any = None,
    now_ms: int | None = None,
) -> RepairResult:
    """Re-fetch the candles ``kline_gaps`` finds missing (``ingest.fetch.klines_fetch`` from
    ``venue``, default ``market_data_venue()``) and store them (``klines_ingest``, path
    ``repair``, no hand-off). For a derived interval the 1m candles of the gaps are repaired
    and the derived candles rebuilt. Counts gaps found, gaps repaired and candles stored."""
    from trader.clock import market_now_ms

    now = market_now_ms() if now_ms is None else now_ms
    found = kline_gaps(symbol=symbol, interval=interval, start=start, end=end, now_ms=now)
    if found:
        metrics.GAPS_FOUND.labels(symbol, interval).inc(len(found))
    repaired = 0
    for gap in found:
        if is_derived(interval):
            window_end = next_open_ms(gap.last_open_ms, interval) - INTERVAL_MS[BASE_INTERVAL]
            base = repair_range(
                symbol=symbol,
                interval=BASE_INTERVAL,
                first_ms=gap.first_open_ms,
                last_ms=window_end,
                venue=venue,
                now_ms=now,
            )
            built = derive_klines(
                symbol=symbol, interval=interval, start_ms=gap.first_open_ms, end_ms=window_end
            )
            log.info(
                "%s %s gap %s: %d 1m candle(s) re-fetched, %d %s candle(s) built",
                symbol, interval, gap, base, built, interval,
            )  # fmt: skip
            repaired += built
            continue
        stored = _gap_refetch(symbol=symbol, interval=interval, gap=gap, venue=venue, now_ms=now)
        log.info("%s %s gap %s: stored %d", symbol, interval, gap, stored)
        repaired += stored
    remaining = (
        kline_gaps(symbol=symbol, interval=interval, start=start, end=end, now_ms=now)
        if found
        else []
    )
    if found:
        metrics.GAP_CANDLES_REPAIRED.labels(symbol, interval).inc(repaired)
        filled = len(found) - len(remaining)
        if filled > 0:
            metrics.GAPS_REPAIRED.labels(symbol, interval).inc(filled)
    return RepairResult(
        symbol=symbol, interval=interval, found=found, repaired=repaired, remaining=remaining
    )


def repair_range(
    *, symbol: str, interval: str, first_ms: int, last_ms: int, venue: Any, now_ms: int
) -> int:
    """Re-fetch the gaps of ``[first_ms, last_ms]`` at ``interval``; candles stored."""
    gaps = kline_gaps(symbol=symbol, interval=interval, start=first_ms, end=last_ms, now_ms=now_ms)
    return sum(
        _gap_refetch(symbol=symbol, interval=interval, gap=gap, venue=venue, now_ms=now_ms)
        for gap in gaps
    )


def _gap_refetch(*, symbol: str, interval: str, gap: Gap, venue: Any, now_ms: int) -> int:
    """Fetch one gap's candles and store them (path ``repair``, no hand-off, no nested
    repair); candles stored."""
    from ingest.fetch import klines_fetch
    from ingest.services import klines_ingest

    bars = klines_fetch(
        symbol=symbol,
        interval=interval,
        start_ms=gap.first_open_ms,
        end_ms=gap.last_open_ms,
        venue=venue,
        purpose="repair",
        now_ms=now_ms,
    )
    return klines_ingest(
        symbol=symbol,
        interval=interval,
        bars=bars,
        path="repair",
        now_ms=now_ms,
        hand_off=False,
        repair=False,
        venue=venue,
    ).stored


def _steps_sql(symbol: str, interval: str, first_ms: int, last_ms: int) -> list[tuple[int, int]]:
    """Consecutive stored open times further apart than one interval (Postgres)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_GAPS,
            [symbol, interval, to_dt(first_ms), to_dt(last_ms), INTERVAL_MS[interval]],
        )
        return [(int(a), int(b)) for a, b in cursor.fetchall()]


def _steps_python(symbol: str, interval: str, first_ms: int, last_ms: int) -> list[tuple[int, int]]:
    """The same walk in Python (any database; calendar months)."""
    opens = (
        Kline.objects.filter(
            symbol=symbol,
            interval=interval,
            open_time__gte=to_dt(first_ms),
            open_time__lte=to_dt(last_ms),
        )
        .order_by("open_time")
        .values_list("open_time", flat=True)
        .iterator(chunk_size=10_000)
    )
    return [
        (before, after)
        for before, after in pairwise(to_ms(o) for o in opens)
        if after > next_open_ms(before, interval)
    ]


def _gap_between(first_ms: int, last_ms: int, interval: str) -> list[Gap]:
    count = candles_between(first_ms, last_ms, interval)
    return [Gap(first_ms, last_ms, count)] if count > 0 else []


def _previous_open(open_ms: int, interval: str) -> int:
    return candle_open_ms(open_ms - 1, interval)


def _aligned_up(moment_ms: int, interval: str) -> int:
    opened = candle_open_ms(moment_ms, interval)
    return opened if opened == moment_ms else next_open_ms(opened, interval)


def _as_ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else to_ms(value)
