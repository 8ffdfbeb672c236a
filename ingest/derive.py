"""Candles of longer intervals built from the stored 1m candles, and candle-time arithmetic.

A derived candle covers the 1m candles of its window: open = the first one's open, close = the
last one's close, high = max, low = min, volumes, quote volume, trades and taker volumes summed.
Windows are aligned as Binance aligns its own candles: on the epoch for fixed intervals (a 5m
candle opens on a multiple of 5 minutes, a 4h one at 00:00, 04:00, ... UTC), on Monday 00:00 UTC
for ``1w``, on the first of the month for ``1M``; ``close_time = next open - 1 ms``. A derived
candle exists only when every 1m candle of its window is stored: a window with a hole is left
out (and built by a later call, once gap repair has filled the hole).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

from execution.venues.base import Kline as VenueKline
from ingest.feeds import BASE_INTERVAL
from ingest.models import Kline
from ingest.normalize import close_time_ms_for
from trader.domain import INTERVAL_MS, interval_problem, to_dt, to_ms

_BASE_MS = INTERVAL_MS[BASE_INTERVAL]
#: 1970-01-01 was a Thursday; Binance's weekly candles open on Monday 00:00 UTC.
_WEEK_OFFSET_MS = 4 * 86_400_000
#: Rows read per round trip when a long range is derived.
_CHUNK = 5000


def candle_open_ms(moment_ms: int, interval: str) -> int:
    """Open time of the ``interval`` candle that contains ``moment_ms`` (Binance's alignment)."""
    if interval == "1M":
        moment = to_dt(moment_ms)
        return to_ms(datetime(moment.year, moment.month, 1, tzinfo=UTC))
    if problem := interval_problem(interval):
        raise ValueError(problem)
    step = INTERVAL_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return (moment_ms - offset) // step * step + offset


def next_open_ms(open_ms: int, interval: str) -> int:
    """Open time of the candle after the one opening at ``open_ms``."""
    return close_time_ms_for(open_ms, interval) + 1


def newest_closed_open_ms(interval: str, now_ms: int) -> int:
    """Open time of the newest ``interval`` candle that has closed at ``now_ms`` (its close time,
    next open - 1 ms, is before ``now_ms``)."""
    return candle_open_ms(candle_open_ms(now_ms, interval) - 1, interval)


def candles_between(first_open_ms: int, last_open_ms: int, interval: str) -> int:
    """How many ``interval`` candles open in ``[first_open_ms, last_open_ms]`` (both aligned)."""
    if last_open_ms < first_open_ms:
        return 0
    if interval != "1M":
        return (last_open_ms - first_open_ms) // INTERVAL_MS[interval] + 1
    first, last = to_dt(first_open_ms), to_dt(last_open_ms)
    return (last.year - first.year) * 12 + last.month - first.month + 1


def derive_bars(*, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[VenueKline]:
    """The complete ``interval`` candles of ``symbol`` whose windows overlap ``[start_ms,
    end_ms]``, built from the stored 1m candles (nothing is written)."""
    if interval == BASE_INTERVAL or interval not in INTERVAL_MS:
        raise ValueError(f"cannot derive {interval!r} from {BASE_INTERVAL} candles")
    if end_ms < start_ms:
        return []
    first = candle_open_ms(start_ms, interval)
    stop = next_open_ms(candle_open_ms(end_ms, interval), interval)
    rows = (
        Kline.objects.filter(
            symbol=symbol,
            interval=BASE_INTERVAL,
            open_time__gte=to_dt(first),
            open_time__lt=to_dt(stop),
        )
        .order_by("open_time")
        .values_list(
            "open_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
            "taker_buy_base",
            "taker_buy_quote",
        )
        .iterator(chunk_size=_CHUNK)
    )
    return list(_aggregate(rows, interval))


def derive_klines(*, symbol: str, interval: str, start_ms: int, end_ms: int) -> int:
    """Build and store (upsert) the complete ``interval`` candles of ``symbol`` whose windows
    overlap ``[start_ms, end_ms]``; returns how many complete candles were built. Candles whose
    window misses a 1m candle are not built. Idempotent."""
    return len(derive_store(symbol=symbol, interval=interval, start_ms=start_ms, end_ms=end_ms))


def derive_store(*, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[VenueKline]:
    """``derive_klines`` returning the candles built (counted under path ``derived``)."""
    from ingest import metrics
    from ingest.services import klines_store_live

    bars = derive_bars(symbol=symbol, interval=interval, start_ms=start_ms, end_ms=end_ms)
    stored = updated = 0
    for index in range(0, len(bars), _CHUNK):
        new, changed = klines_store_live(
            symbol=symbol, interval=interval, bars=bars[index : index + _CHUNK]
        )
        stored, updated = stored + new, updated + changed
    if stored:
        metrics.CANDLES_STORED.labels("derived", interval).inc(stored)
    if updated:
        metrics.CANDLES_UPDATED.labels("derived", interval).inc(updated)
    return bars


_Row = tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal, Decimal]


def _aggregate(rows: Iterable[_Row], interval: str) -> Iterator[VenueKline]:
    window: int | None = None
    members: list[_Row] = []
    for row in rows:
        start = candle_open_ms(to_ms(row[0]), interval)
        if start != window:
            if window is not None:
                built = _complete(window, members, interval)
                if built is not None:
                    yield built
            window, members = start, []
        members.append(row)
    if window is not None:
        built = _complete(window, members, interval)
        if built is not None:
            yield built


def _complete(window: int, members: list[_Row], interval: str) -> VenueKline | None:
    """The derived candle of ``window``, or None unless every 1m candle of it is in
    ``members`` (open times are unique, so the right count of aligned ones is all of them)."""
    close_ms = close_time_ms_for(window, interval)
    expected = (close_ms + 1 - window) // _BASE_MS
    if len(members) != expected:
        return None
    if any((to_ms(m[0]) - window) % _BASE_MS for m in members):
        return None
    return VenueKline(
        open_time_ms=window,
        open=members[0][1],
        high=max(m[2] for m in members),
        low=min(m[3] for m in members),
        close=members[-1][4],
        volume=sum((m[5] for m in members), Decimal(0)),
        close_time_ms=close_ms,
        quote_volume=sum((m[6] for m in members), Decimal(0)),
        trades=sum(m[7] for m in members),
        taker_buy_base=sum((m[8] for m in members), Decimal(0)),
        taker_buy_quote=sum((m[9] for m in members), Decimal(0)),
    )
