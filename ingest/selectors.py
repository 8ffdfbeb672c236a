"""Read-only questions about stored market data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from ingest import metrics
from ingest.feeds import Feed, needed_feeds
from ingest.models import Kline
from trader.domain import INTERVAL_SECONDS


@dataclass(frozen=True)
class FeedFreshness:
    """How old a feed's newest stored candle is on the market clock. ``stale``: no candle at
    all, or the newest closed more than ``INGEST_STALE_INTERVALS`` intervals ago."""

    symbol: str
    interval: str
    newest_close_time: datetime | None
    age_seconds: float | None
    stale: bool

    @property
    def name(self) -> str:
        return f"{self.symbol} {self.interval}"


def feed_freshness(
    *, feeds: Iterable[Feed] | None = None, now: datetime | None = None
) -> list[FeedFreshness]:
    """The freshness of ``feeds`` (default: every feed an ACTIVE bot reads), at market time
    ``now`` (default ``trader.clock.market_now()``). A derived feed (e.g. 1h built from 1m) is
    judged on its own candles. Also sets the ``trader_ingest_lag_seconds`` gauge."""
    from trader.clock import market_now

    chosen = sorted(set(needed_feeds() if feeds is None else feeds))
    if not chosen:
        return []
    moment = market_now() if now is None else now
    limit = float(settings.INGEST_STALE_INTERVALS)
    found: list[FeedFreshness] = []
    for feed in chosen:
        newest = (
            Kline.objects.filter(symbol=feed.symbol, interval=feed.interval)
            .order_by("-open_time")
            .values_list("close_time", flat=True)
            .first()
        )
        if newest is None:
            found.append(FeedFreshness(feed.symbol, feed.interval, None, None, True))
            continue
        age = max(0.0, (moment - newest).total_seconds())
        stale = age > limit * INTERVAL_SECONDS[feed.interval]
        found.append(FeedFreshness(feed.symbol, feed.interval, newest, age, stale))
        metrics.INGEST_LAG.labels(feed.symbol, feed.interval).set(age)
    return found
