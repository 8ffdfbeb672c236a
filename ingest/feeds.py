"""Which candles the platform must keep: the feeds active bots read, and what to fetch for them.

A feed is one (symbol, interval). Active bots need their own feed; every symbol is fetched once
whatever number of bots read it. Intervals in ``settings.INGEST_DERIVED_INTERVALS`` (and
``2m``, which Binance does not serve) are not fetched: they are built from the stored 1m
candles (``ingest.derive``), so their feed fetches 1m instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from trader.domain import DERIVED_ONLY_INTERVALS
from trader.models import Bot, BotStatus

BASE_INTERVAL = "1m"


@dataclass(frozen=True, order=True)
class Feed:
    symbol: str
    interval: str

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval}"


def is_derived(interval: str) -> bool:
    """Whether ``interval`` is built from 1m candles rather than fetched."""
    return interval in DERIVED_ONLY_INTERVALS or interval in settings.INGEST_DERIVED_INTERVALS


def needed_feeds() -> list[Feed]:
    """The distinct (symbol, interval) of every ACTIVE bot, sorted."""
    pairs = Bot.objects.filter(status=BotStatus.ACTIVE).values_list("symbol", "interval").distinct()
    return sorted({Feed(symbol, interval) for symbol, interval in pairs})


def fetched_feeds(feeds: Iterable[Feed]) -> list[Feed]:
    """What to fetch from the venue for ``feeds``: derived intervals become their symbol's 1m."""
    return sorted({Feed(f.symbol, BASE_INTERVAL) if is_derived(f.interval) else f for f in feeds})


def derived_of(feeds: Iterable[Feed], symbol: str) -> list[str]:
    """The derived intervals of ``symbol`` among ``feeds`` (built after each 1m upsert)."""
    return sorted({f.interval for f in feeds if f.symbol == symbol and is_derived(f.interval)})
