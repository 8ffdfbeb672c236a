"""DRY_RUN's market: closed candles walked through the paper accounts, then their orders synced.

In DRY_RUN every bot trades on its own paper account (``PersistentPaperVenue``), whose matching
engine only moves when it is fed prices. Each closed candle of a symbol's finest fetched
interval is fed, once, to the paper account of every bot on that symbol (paused bots too: a
paper stop-loss must still trigger), along the intrabar path the emulator uses. The paper
venue emits no user-data events, so right after the walk the bot's open orders are polled and
its fills recorded: that is DRY_RUN's stream.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from execution.models import Order
from execution.states import OPEN
from execution.venues.base import Kline as VenueKline
from execution.venues.paper_store import PersistentPaperVenue
from ingest.feeds import fetched_feeds, is_derived, needed_feeds
from ingest.models import Kline
from trader.domain import INTERVAL_MS, to_dt
from trader.models import Bot

log = logging.getLogger(__name__)


def finest_interval(symbol: str) -> str | None:
    """The finest interval fetched for ``symbol`` (what paper accounts are fed with)."""
    intervals = [f.interval for f in fetched_feeds(needed_feeds()) if f.symbol == symbol]
    return min(intervals, key=lambda i: INTERVAL_MS[i]) if intervals else None


def paper_feed_candle(*, symbol: str, interval: str, open_ms: int) -> int:
    """Feed the stored candle to every paper account on ``symbol``; returns how many accounts
    walked it (0 outside DRY_RUN, for a coarser interval, or when already fed)."""
    if settings.TRADING_MODE != "DRY_RUN" or is_derived(interval):
        return 0
    if finest_interval(symbol) != interval:
        return 0
    row = Kline.objects.filter(symbol=symbol, interval=interval, open_time=to_dt(open_ms)).first()
    if row is None:
        return 0
    candle = VenueKline(
        open_time_ms=open_ms,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        close_time_ms=open_ms + INTERVAL_MS[interval] - 1,
    )
    fed = 0
    for bot in Bot.objects.filter(symbol=symbol).select_related("credential"):
        venue = PersistentPaperVenue(bot_id=bot.pk)
        try:
            walked = venue.feed_closed(symbol, candle)
        except ValueError as exc:  # a symbol without paper rules: nothing can trade there
            log.warning("paper feed of bot %s skipped: %s", bot.pk, exc)
            continue
        if walked:
            fed += 1
            paper_orders_sync(bot=bot, venue=venue)
    return fed


def paper_orders_sync(*, bot: Bot, venue: PersistentPaperVenue) -> None:
    """Apply the paper venue's view of the bot's open orders, and record its fills."""
    from execution.monitor import Report, fills_sync, order_refresh
    from execution.services import account_key_for

    orders = list(Order.objects.filter(bot=bot, state__in=OPEN).select_related("bot"))
    if not orders:
        return
    report = Report()
    for order in orders:
        order_refresh(order, venue, report)
    since = timezone.now() - timedelta(hours=1)
    fills_sync(account_key_for(bot=bot), venue, [bot], {bot.symbol}, since)
    for line in report.updated:
        log.info("paper bot %s: %s", bot.pk, line)
