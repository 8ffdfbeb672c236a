"""Celery tasks of ``ingest`` (routed to the ``ingest`` queue).

The beat path: ``ingest_due`` runs every ``INGEST_TICK_S``; for each fetched feed (active bots'
feeds, derived intervals fetched as 1m) it works out from the market clock which candle closed
last and, unless it is stored or already dispatched, enqueues ``ingest_klines`` for it after a
random ``0..INGEST_JITTER_S`` (market-speed scaled): the exchange needs a moment to finalise a
candle, and many feeds should not fire together. No network call in ``ingest_due``.

Dispatch is deduplicated by an atomic ``cache.add`` per (symbol, interval, open time) that
expires after about one interval, and by the stored candle itself (the cache may be per process,
as locmem is in ``make run``): nothing is kept per tick beyond those expiring keys. Both tasks are
idempotent (``acks_late``): a redelivered ``ingest_klines`` upserts the same candles and hands
nothing off twice (``ingest.handoff.candle_closed`` is once per candle).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from celery import Task, shared_task
from django.conf import settings
from django.core.cache import cache

from execution.venues.errors import VenueError
from ingest.derive import newest_closed_open_ms, to_dt
from ingest.feeds import fetched_feeds, needed_feeds
from ingest.models import Kline
from trader.clock import MarketClockError, market_now_ms, market_speed
from trader.domain import DERIVED_ONLY_INTERVALS, INTERVAL_MS, INTERVAL_SECONDS

log = logging.getLogger(__name__)

#: ``ingest_klines`` retries a failed fetch (or a candle not yet closed at the venue) this often.
RETRIES = 3


def due_key(symbol: str, interval: str, open_ms: int) -> str:
    return f"ingest:due:{symbol}:{interval}:{open_ms}"


@shared_task(acks_late=True, ignore_result=True)
def ingest_due() -> int:
    """Enqueue ``ingest_klines`` for every fetched feed whose newest closed candle is neither
    stored nor dispatched; returns how many were enqueued."""
    feeds = fetched_feeds(needed_feeds())
    if not feeds:
        return 0
    try:
        now = market_now_ms()
    except MarketClockError as exc:
        log.warning("ingest_due: %s", exc)
        return 0
    jitter = max(0.0, float(settings.INGEST_JITTER_S))
    by_interval: dict[str, list[str]] = defaultdict(list)
    for feed in feeds:
        if feed.interval in INTERVAL_MS and feed.interval not in DERIVED_ONLY_INTERVALS:
            by_interval[feed.interval].append(feed.symbol)
    sent = 0
    for interval, symbols in by_interval.items():
        open_ms = newest_closed_open_ms(interval, now)
        # One query per interval: the feeds whose newest closed candle is already stored.
        stored = set(
            Kline.objects.filter(
                interval=interval, open_time=to_dt(open_ms), symbol__in=symbols
            ).values_list("symbol", flat=True)
        )
        for symbol in symbols:
            if symbol not in stored:
                sent += _dispatch(symbol, interval, open_ms, jitter)
    return sent


def _dispatch(symbol: str, interval: str, open_ms: int, jitter: float) -> int:
    """Enqueue one jittered ``ingest_klines`` unless it was already dispatched; 1 if sent."""
    timeout = INTERVAL_SECONDS[interval] + 60
    if not cache.add(due_key(symbol, interval, open_ms), 1, timeout):
        return 0
    countdown = random.uniform(0.0, jitter) / _speed() if jitter else 0.0  # noqa: S311
    ingest_klines.apply_async((symbol, interval, open_ms), countdown=countdown)
    return 1


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=RETRIES)
def ingest_klines(self: Task, symbol: str, interval: str, open_ms: int | None = None) -> None:
    """Fetch and ingest the newest closed candles of ``symbol``/``interval`` (``ingest.fetch.
    ingest_latest``, path ``beat``). ``open_ms``: the candle ``ingest_due`` expects; while it is
    not stored (the venue failed, or has not closed it yet) the task retries, and after the last
    retry releases the dispatch key so a later tick tries again."""
    from ingest.fetch import ingest_latest

    problem: str | None = None
    try:
        outcome = ingest_latest(symbol=symbol, interval=interval, path="beat")
    except (VenueError, MarketClockError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        log.debug(
            "ingest %s %s: stored %d, updated %d, bad %d, repaired %d, handed off %s",
            symbol, interval, outcome.stored, outcome.updated, len(outcome.bad),
            outcome.repaired, outcome.handed_off,
        )  # fmt: skip
        if open_ms is not None and not _stored(symbol, interval, open_ms):
            problem = f"candle {to_dt(open_ms).isoformat()} not served closed yet"
    if problem is None:
        return
    if self.request.called_directly:
        log.warning("ingest %s %s: %s", symbol, interval, problem)
        return
    if self.request.retries < RETRIES:
        countdown = max(0.2, 2**self.request.retries / _speed())
        log.info("ingest %s %s: %s; retrying in %.1fs", symbol, interval, problem, countdown)
        raise self.retry(countdown=countdown)
    log.warning("ingest %s %s: %s; giving up until the next tick", symbol, interval, problem)
    if open_ms is not None:
        cache.delete(due_key(symbol, interval, open_ms))


def _stored(symbol: str, interval: str, open_ms: int) -> bool:
    return Kline.objects.filter(symbol=symbol, interval=interval, open_time=to_dt(open_ms)).exists()


def _speed() -> float:
    """Market seconds per wall second (retries and jitter are scaled by it), 1 if unknown."""
    try:
        return float(market_speed()) or 1.0
    except MarketClockError:
        return 1.0
