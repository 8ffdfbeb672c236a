"""Feed freshness on the market clock (frozen with freezegun) and its report in /readyz."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from freezegun import freeze_time
from prometheus_client import REGISTRY

from execution.venues.base import Kline as VenueKline
from ingest.derive import to_dt, to_ms
from ingest.feeds import Feed
from ingest.selectors import feed_freshness
from ingest.services import klines_store_live
from tests.factories import BotFactory
from trader.models import BotStatus

MINUTE = 60_000
OPENED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CLOSED = OPENED + timedelta(milliseconds=MINUTE - 1)


def store(symbol: str, interval: str, open_ms: int, length_ms: int) -> None:
    klines_store_live(
        symbol=symbol,
        interval=interval,
        bars=[
            VenueKline(
                open_time_ms=open_ms,
                open=Decimal(100),
                high=Decimal(101),
                low=Decimal(99),
                close=Decimal(100),
                volume=Decimal(1),
                close_time_ms=open_ms + length_ms - 1,
            )
        ],
    )


def test_a_feed_is_fresh_until_its_newest_close_is_three_intervals_old(db, settings):
    settings.MARKET_CLOCK = "wall"
    settings.INGEST_STALE_INTERVALS = 3.0
    store("BTCUSDT", "1m", to_ms(OPENED), MINUTE)
    feeds = [Feed("BTCUSDT", "1m")]

    with freeze_time(CLOSED + timedelta(seconds=30)):
        (fresh,) = feed_freshness(feeds=feeds)
    with freeze_time(CLOSED + timedelta(seconds=180)):
        (edge,) = feed_freshness(feeds=feeds)
    with freeze_time(CLOSED + timedelta(seconds=181)):
        (stale,) = feed_freshness(feeds=feeds)

    assert (fresh.newest_close_time, fresh.age_seconds, fresh.stale) == (CLOSED, 30.0, False)
    assert (edge.age_seconds, edge.stale) == (180.0, False)
    assert (stale.age_seconds, stale.stale) == (181.0, True)
    assert (
        REGISTRY.get_sample_value(
            "trader_ingest_lag_seconds", {"symbol": "BTCUSDT", "interval": "1m"}
        )
        == 181.0
    )


def test_staleness_is_counted_in_the_feeds_own_intervals(db, settings):
    settings.MARKET_CLOCK = "wall"
    settings.INGEST_STALE_INTERVALS = 2.0
    store("BTCUSDT", "1h", to_ms(OPENED), 60 * MINUTE)
    hour_closed = OPENED + timedelta(hours=1, milliseconds=-1)

    with freeze_time(hour_closed + timedelta(minutes=90)):
        (row,) = feed_freshness(feeds=[Feed("BTCUSDT", "1h")])
    assert (row.age_seconds, row.stale) == (5400.0, False)

    with freeze_time(hour_closed + timedelta(hours=2, seconds=1)):
        (row,) = feed_freshness(feeds=[Feed("BTCUSDT", "1h")])
    assert row.stale


def test_a_feed_without_any_candle_is_stale(db):
    (row,) = feed_freshness(feeds=[Feed("ETHUSDT", "5m")], now=OPENED)
    assert (row.newest_close_time, row.age_seconds, row.stale) == (None, None, True)


def test_by_default_only_the_feeds_of_active_bots_are_judged(db):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    BotFactory.create(symbol="ETHUSDT", interval="1h", status=BotStatus.PAUSED)

    rows = feed_freshness(now=OPENED)

    assert [(r.symbol, r.interval) for r in rows] == [("BTCUSDT", "1m")]


def test_readyz_reports_stale_feeds_of_active_bots_and_stays_ready(client, db):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    BotFactory.create(symbol="ETHUSDT", interval="1h")
    now_ms = int(time.time() * 1000)
    store("BTCUSDT", "1m", now_ms - now_ms % MINUTE - MINUTE, MINUTE)  # closed just now

    response = client.get("/readyz")

    assert response.status_code == 200, response.json()
    market = response.json()["market_data"]
    assert market["stale"] == ["ETHUSDT 1h"]
    assert market["feeds"]["ETHUSDT 1h"] == {"age_s": None, "stale": True}
    assert market["feeds"]["BTCUSDT 1m"]["stale"] is False
    assert 0 <= market["feeds"]["BTCUSDT 1m"]["age_s"] < 120


def test_readyz_with_no_active_bot_reports_no_feeds(client, db):
    body = client.get("/readyz").json()
    assert body["market_data"] == {"stale": [], "feeds": {}}
    assert body["checks"] == {"database": "ok", "migrations": "ok", "broker": "ok"}


def test_freshness_reads_the_stored_close_time_not_the_open_time(db):
    store("BTCUSDT", "4h", to_ms(OPENED), 4 * 60 * MINUTE)
    (row,) = feed_freshness(feeds=[Feed("BTCUSDT", "4h")], now=to_dt(to_ms(OPENED) + 5 * 3600_000))
    assert row.age_seconds == 3600.001
