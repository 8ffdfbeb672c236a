"""Fetching candles from the venue: closed candles only, paginated, weighed and paced.

``klines_fetch`` is the one way market data comes in over REST. Binance's last candle of a
response reaching the present is the one still open (reference §8.1): it is dropped here, by the
market clock (``trader.clock``), so nothing downstream ever sees a candle that has not closed.
Ranges are read in pages of the endpoint maximum (1500 candles, weight 10); each request's
weight (by its ``limit``) is counted, and the venue's ``X-MBX-USED-WEIGHT-1M`` is shown when the
venue exposes it. Requests draw on the shared rate governor (``execution.services.rate_governor``)
through the venue, like every other Binance call of the platform.

``ingest_latest`` is the beat's fetch (newest candles since the last stored one);
``klines_backfill`` the resumable bulk load behind ``manage.py backfill_klines``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from django.conf import settings

from execution.venues.base import Kline as VenueKline
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.errors import RateLimited
from ingest import metrics
from ingest.derive import (
    candle_open_ms,
    candles_between,
    newest_closed_open_ms,
    next_open_ms,
    to_dt,
    to_ms,
)
from ingest.feeds import is_derived
from ingest.models import Kline
from ingest.services import IngestOutcome, klines_ingest
from trader.clock import market_now_ms
from trader.domain import DERIVED_ONLY_INTERVALS, INTERVAL_MS, interval_problem

log = logging.getLogger(__name__)

#: ``GET /fapi/v1/klines`` serves at most this many candles per request.
MAX_LIMIT = 1500
#: What the beat asks for when nothing is stored: 98 closed candles for weight 1.
LATEST_LIMIT = 99
#: A backfill gives up after this many rate-limit refusals in a row.
BACKFILL_MAX_WAITS = 30


class KlineSource(Protocol):
    """What ``klines_fetch`` needs of a venue (``BinanceFuturesVenue``, ``PaperVenue``)."""

    def klines(
        self,
        *,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[VenueKline]: ...


class BackfillError(ValueError):
    """A backfill that cannot start (unknown or derived interval, empty range)."""


def request_weight(limit: int) -> int:
    """IP weight of one klines request (reference §6): [1,100) 1, [100,500) 2, [500,1000] 5,
    more 10."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def market_data_environment() -> str:
    """Where market data comes from: ``INGEST_ENVIRONMENT``, else LIVE when trading live and
    TESTNET otherwise (``BINANCE_BASE_URL``, the emulator, wins over both)."""
    configured = str(getattr(settings, "INGEST_ENVIRONMENT", "") or "").upper()
    if configured:
        return configured
    return "LIVE" if settings.TRADING_MODE == "LIVE" else "TESTNET"


def market_data_venue(*, environment: str | None = None) -> BinanceFuturesVenue:
    """A keyless venue for public market data on ``base_url_for(environment)`` (the emulator
    when ``BINANCE_BASE_URL`` is set), sharing the process-wide rate governor. One per process
    and configuration: its HTTP session is reused."""
    from execution.services import base_url_for, rate_governor

    environment = environment or market_data_environment()
    return _venue(base_url_for(environment), environment, rate_governor())


@functools.lru_cache(maxsize=8)
def _venue(base: str, environment: str, governor: Any) -> BinanceFuturesVenue:
    """Keyed by the base URL too: ``venue_settings`` reads it from the settings."""
    from execution.services import venue_settings

    return BinanceFuturesVenue(
        api_key="",
        api_secret="",
        settings=venue_settings(environment=environment),
        governor=governor,
        account_key="public",
    )


def klines_fetch(
    *,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int | None = None,
    venue: KlineSource | None = None,
    purpose: str = "fetch",
    now_ms: int | None = None,
) -> list[VenueKline]:
    """Closed candles of ``symbol`` at ``interval``, oldest first.

    * Without ``start_ms``: one request for the newest ``limit`` (default ``LATEST_LIMIT``)
      candles up to ``end_ms`` (or now); the still-open one is dropped.
    * With ``start_ms``: every closed candle opening in ``[start_ms, end_ms]`` (``end_ms``
      defaults to now), in pages of up to 1500, stopping after ``limit`` candles if given. Each
      page asks for no more than the range can hold, so a short range stays at weight 1.

    A candle is closed when its close time is before the market clock's now (``now_ms``).
    ``purpose`` labels the weight metric (``beat``, ``repair``, ``backfill``...). Venue errors
    (``execution.venues.errors``) propagate; a ``RateLimited`` says when to come back."""
    if problem := interval_problem(interval):
        raise ValueError(problem)
    if interval in DERIVED_ONLY_INTERVALS:
        raise ValueError(f"Binance does not serve {interval} candles: they are derived from 1m")
    source: KlineSource = venue if venue is not None else market_data_venue()
    now = market_now_ms() if now_ms is None else now_ms
    if start_ms is None:
        want = min(limit or LATEST_LIMIT, MAX_LIMIT)
        page = _request(source, symbol, interval, None, end_ms, want, purpose)
        return [k for k in page if k.close_time_ms < now]
    stop = now if end_ms is None else min(end_ms, now)
    step = INTERVAL_MS[interval]
    found: list[VenueKline] = []
    cursor = start_ms
    while cursor <= stop and (limit is None or len(found) < limit):
        # +2: the range's bounds are both inclusive, and the still-open candle may come too.
        want = min(MAX_LIMIT, (stop - cursor) // step + 2)
        if limit is not None:
            want = min(want, limit - len(found) + 1)
        page = _request(source, symbol, interval, cursor, end_ms, want, purpose)
        closed = [k for k in page if k.close_time_ms < now and k.open_time_ms >= cursor]
        found.extend(closed)
        if len(page) < want or len(closed) < len(page) or page[-1].open_time_ms < cursor:
            break  # the range is exhausted, the present reached, or the venue misbehaves
        cursor = page[-1].open_time_ms + 1
    return found if limit is None else found[:limit]


def _request(
    venue: KlineSource,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    purpose: str,
) -> list[VenueKline]:
    limit = max(1, limit)
    page = venue.klines(
        symbol=symbol, interval=interval, start_ms=start_ms, end_ms=end_ms, limit=limit
    )
    metrics.REQUEST_WEIGHT.labels(purpose).inc(request_weight(limit))
    used = _used_weight_header(venue)
    if used is not None:
        metrics.WEIGHT_USED_1M.set(used)
    return sorted(page, key=lambda k: k.open_time_ms)


def _used_weight_header(venue: KlineSource) -> int | None:
    response = getattr(getattr(venue, "client", None), "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --- the beat's fetch -------------------------------------------------------------------------


def ingest_latest(
    *,
    symbol: str,
    interval: str,
    path: str = "beat",
    venue: KlineSource | None = None,
    now_ms: int | None = None,
) -> IngestOutcome:
    """Fetch the candles closed since the newest stored one (that one included, so a late
    correction of it lands) and ingest them (``klines_ingest``: validate, store, repair holes,
    derive, hand off the newest). Nothing stored yet: the newest ``LATEST_LIMIT - 1``. More
    than 1500 behind: the newest 1500, and the in-line gap repair fetches what lies between.
    Makes no request when the newest closed candle is already stored."""
    now = market_now_ms() if now_ms is None else now_ms
    newest_closed = newest_closed_open_ms(interval, now)
    last = _newest_stored_ms(symbol, interval)
    if last is not None and last >= newest_closed:
        return IngestOutcome(symbol=symbol, interval=interval, stored=0, updated=0)
    if last is None:
        bars = klines_fetch(symbol=symbol, interval=interval, venue=venue, purpose=path, now_ms=now)
    elif candles_between(last, newest_closed, interval) + 1 <= MAX_LIMIT:
        bars = klines_fetch(
            symbol=symbol, interval=interval, start_ms=last, venue=venue, purpose=path, now_ms=now
        )
    else:
        bars = klines_fetch(
            symbol=symbol,
            interval=interval,
            limit=MAX_LIMIT,
            venue=venue,
            purpose=path,
            now_ms=now,
        )
    return klines_ingest(
        symbol=symbol, interval=interval, bars=bars, path=path, now_ms=now, venue=venue
    )


def _newest_stored_ms(
    symbol: str, interval: str, *, lo: int | None = None, hi: int | None = None
) -> int | None:
    candles = Kline.objects.filter(symbol=symbol, interval=interval)
    if lo is not None:
        candles = candles.filter(open_time__gte=to_dt(lo))
    if hi is not None:
        candles = candles.filter(open_time__lt=to_dt(hi))
    newest = candles.order_by("-open_time").values_list("open_time", flat=True).first()
    return None if newest is None else to_ms(newest)


# --- backfill ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillProgress:
    """Where a backfill stands: ``done`` of ``total`` candle slots of the range covered."""

    symbol: str
    interval: str
    done: int
    total: int
    stored: int
    elapsed_s: float
    cursor_ms: int
    fetched: int

    @property
    def percent(self) -> float:
        return 100.0 if self.total <= 0 else min(100.0, 100.0 * self.done / self.total)

    @property
    def rate(self) -> float:
        """Candles fetched per second in this run."""
        return self.fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.rate <= 0:
            return None
        return max(0, self.total - self.done) / self.rate


@dataclass(frozen=True)
class BackfillResult:
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    #: Where this run started when it resumed after candles already stored (else None).
    resumed_from_ms: int | None
    fetched: int
    stored: int
    updated: int
    bad: int
    requests: int
    #: Candles missing in the range before ``resumed_from_ms`` (not looked for by a resumed
    #: run: ``ingest.gaps.gaps_repair`` fills them).
    missing_before: int = 0


def klines_backfill(
    *,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int | None = None,
    venue: KlineSource | None = None,
    progress: Callable[[BackfillProgress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillResult:
    """Load the closed candles opening in ``[start_ms, end_ms)`` (``end_ms`` exclusive,
    default now), 1500 per request, paced by the shared rate governor (a refusal is waited out).

    Resumable: the run starts after the newest candle already stored in the range, so an
    interrupted backfill continues where it stopped. Holes *before* that candle are not fetched
    (they are counted in ``missing_before``): that is gap repair's job (``ingest.gaps.
    gaps_repair``, ``manage.py kline_gaps --repair``). Note that candles the beat already stored
    at the range's end make a first backfill "resume" after them. Pages go through
    ``klines_ingest`` (path ``backfill``: validated, stored, derived intervals of active feeds
    built; no hand-off to the chain). ``progress`` is called after every page."""
    if problem := interval_problem(interval):
        raise BackfillError(problem)
    if is_derived(interval):
        raise BackfillError(
            f"{interval} candles are derived from 1m candles, not fetched: backfill 1m "
            "(the derived candles of active bots' feeds are built as the 1m candles land)"
        )
    now = market_now_ms()
    present = candle_open_ms(now, interval)  # only candles opening before it have closed
    end = present if end_ms is None else min(end_ms, present)
    if end_ms is not None and end_ms <= start_ms:
        raise BackfillError(f"end {_iso(end_ms)} is not after start {_iso(start_ms)}")
    if end <= start_ms:
        raise BackfillError(
            f"no candle opening at or after {_iso(start_ms)} has closed yet "
            f"(market now {_iso(now)})"
        )
    first_open = candle_open_ms(start_ms, interval)
    if first_open < start_ms:
        first_open = next_open_ms(first_open, interval)
    last_open = candle_open_ms(end - 1, interval)
    total = candles_between(first_open, last_open, interval)
    newest = _newest_stored_ms(symbol, interval, lo=first_open, hi=end)
    cursor = first_open if newest is None else next_open_ms(newest, interval)
    resumed = None if newest is None else cursor
    missing_before = 0
    if newest is not None:
        from ingest.gaps import kline_gaps

        missing_before = sum(
            g.count
            for g in kline_gaps(
                symbol=symbol, interval=interval, start=first_open, end=newest, now_ms=now
            )
        )
        log.info(
            "backfill %s %s resumes at %s, after the newest candle stored in the range; "
            "%d candle(s) missing before it are left to gap repair",
            symbol, interval, _iso(cursor), missing_before,
        )  # fmt: skip
    started = time.monotonic()
    fetched = stored = updated = bad = requests = waits = 0
    source: KlineSource = venue if venue is not None else market_data_venue()
    while cursor < end:
        try:
            page = klines_fetch(
                symbol=symbol,
                interval=interval,
                start_ms=cursor,
                end_ms=end - 1,
                limit=MAX_LIMIT,
                venue=source,
                purpose="backfill",
                now_ms=now,
            )
        except RateLimited as exc:
            waits += 1
            if waits > BACKFILL_MAX_WAITS:
                raise
            wait = min(max(exc.retry_after_s or 1.0, 0.5), 300.0)
            log.warning("backfill %s %s: %s; waiting %.1fs", symbol, interval, exc, wait)
            sleep(wait)
            continue
        waits = 0
        requests += 1
        if not page:
            break
        outcome = klines_ingest(
            symbol=symbol,
            interval=interval,
            bars=page,
            path="backfill",
            now_ms=now,
            hand_off=False,
            repair=False,
            venue=source,
        )
        fetched += len(page)
        stored += outcome.stored
        updated += outcome.updated
        bad += len(outcome.bad)
        cursor = next_open_ms(page[-1].open_time_ms, interval)
        if progress is not None:
            progress(
                BackfillProgress(
                    symbol=symbol,
                    interval=interval,
                    done=candles_between(
                        first_open, min(page[-1].open_time_ms, last_open), interval
                    ),
                    total=total,
                    stored=stored,
                    elapsed_s=time.monotonic() - started,
                    cursor_ms=cursor,
                    fetched=fetched,
                )
            )
    return BackfillResult(
        symbol=symbol,
        interval=interval,
        start_ms=first_open,
        end_ms=end,
        resumed_from_ms=resumed,
        fetched=fetched,
        stored=stored,
        updated=updated,
        bad=bad,
        requests=requests,
        missing_before=missing_before,
    )


def parse_utc(value: str) -> datetime:
    """A command-line time: ``2024-01-01`` (midnight UTC) or an ISO datetime (UTC unless it
    carries an offset). ``ValueError`` with a readable message otherwise."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (2024-01-01) or an ISO datetime (2024-01-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(ms: int) -> str:
    return to_dt(ms).isoformat().replace("+00:00", "Z")
