"""The live paths: ``klines_ingest`` (upsert, bad ticks, in-line gap repair, derived hand-off,
price cache) and the beat tasks ``ingest_due`` / ``ingest_klines``, against real Postgres, the
project's exchange emulator over HTTP (frozen market, moved only by ``/_emulator/advance``) and
real Redis (DB 7) as the Celery broker where an enqueue is asserted."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from execution.services import market_price
from execution.venues.base import Kline as VenueKline
from ingest import fetch
from ingest.derive import to_dt, to_ms
from ingest.gaps import kline_gaps
from ingest.handoff import candle_closed
from ingest.models import Kline
from ingest.services import klines_ingest
from ingest.tasks import ingest_due, ingest_klines
from tests.execution.emulator_fixtures import Harness, running_emulator
from tests.execution.worker_fixtures import celery_publishing_to
from tests.factories import BotFactory
from trader import clock

D = Decimal
MINUTE = 60_000
REDIS_7 = "redis://127.0.0.1:6379/7"
QUEUES = ("ingest", "signals", "execution")


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Harness]:
    with running_emulator("ingest") as harness:
        yield harness


def use_emulator(settings: Any, harness: Harness) -> Harness:
    """Market data and the market clock from ``harness`` (no governor: the tests pace nothing)."""
    settings.BINANCE_BASE_URL = harness.base_url + "/fapi"
    settings.MARKET_CLOCK = "emulator"
    settings.RATE_GOVERNOR_REDIS_URL = ""
    clock.reset()
    fetch._venue.cache_clear()
    return harness


@pytest.fixture
def market(emulator: Harness, settings: Any) -> Iterator[Harness]:
    """The module's emulator (its market is never advanced by the tests using this)."""
    yield use_emulator(settings, emulator)
    clock.reset()


@pytest.fixture
def own_market(settings: Any) -> Iterator[Harness]:
    """An emulator of this test's own, whose market the test may advance."""
    with running_emulator("own") as harness:
        yield use_emulator(settings, harness)
    clock.reset()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """This process's Celery app publishing to Redis DB 7, whose queues start empty."""
    client = redis.Redis.from_url(REDIS_7)
    client.delete(*QUEUES)
    with celery_publishing_to(REDIS_7):
        yield client
    client.delete(*QUEUES)
    client.close()


def queued(client: redis.Redis, queue: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(task name, args, headers) of every message waiting in ``queue``."""
    found = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], args, message["headers"]))
    return found


def present_open_ms(harness: Harness) -> int:
    """Open time of the candle the emulator is in the middle of (served last, partial)."""
    now = harness.state()["market_time_ms"]
    return now - now % MINUTE


def replay_closed(harness: Harness, start_ms: int, end_ms: int) -> list[VenueKline]:
    """What the emulator holds as closed candles opening in ``[start_ms, end_ms]``."""
    replay = harness.emulator.replay
    now = harness.state()["market_time_ms"]
    return harness.call(
        lambda: replay.closed_klines("BTCUSDT", now, start_ms=start_ms, end_ms=end_ms, limit=1500)
    )


def values(candle: Kline) -> tuple[Any, ...]:
    return (
        to_ms(candle.open_time),
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        to_ms(candle.close_time),
    )


def venue_values(k: VenueKline) -> tuple[Any, ...]:
    return (k.open_time_ms, k.open, k.high, k.low, k.close, k.volume, k.close_time_ms)


def bar(open_ms: int, o: str, h: str, lo: str, c: str, v: str = "10") -> VenueKline:
    return VenueKline(
        open_time_ms=open_ms,
        open=D(o),
        high=D(h),
        low=D(lo),
        close=D(c),
        volume=D(v),
        close_time_ms=open_ms + MINUTE - 1,
    )


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
AFTER = T0 + 60 * MINUTE  # a market "now" after every synthetic candle below


# --- upsert -------------------------------------------------------------------------------------


def test_same_candle_twice_is_one_row_and_a_late_correction_wins(db):
    candle = bar(T0, "100", "101", "99", "100.5")

    first = klines_ingest(symbol="XUSDT", interval="1m", bars=[candle], path="beat", now_ms=AFTER)
    again = klines_ingest(symbol="XUSDT", interval="1m", bars=[candle], path="beat", now_ms=AFTER)
    corrected = klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0, "100", "101", "99", "100.75")],
        path="beat",
        now_ms=AFTER,
    )

    assert (first.stored, first.updated) == (1, 0)
    assert (again.stored, again.updated) == (0, 0)
    assert (corrected.stored, corrected.updated) == (0, 1)
    stored = Kline.objects.get(symbol="XUSDT")
    assert stored.close == D("100.75")
    assert stored.close_time == to_dt(T0 + MINUTE - 1)


def test_repeated_open_time_in_one_batch_keeps_the_last_bar(db):
    outcome = klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0, "100", "101", "99", "100"), bar(T0, "100", "101", "99", "100.25")],
        path="stream",
        now_ms=AFTER,
        hand_off=False,
    )
    assert (outcome.stored, outcome.updated) == (1, 0)
    assert Kline.objects.get().close == D("100.25")


# --- closed candles only ------------------------------------------------------------------------


def test_a_candle_still_open_at_market_now_is_never_stored(db):
    outcome = klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0, "100", "101", "99", "100"), bar(T0 + MINUTE, "100", "102", "99", "101")],
        path="beat",
        now_ms=T0 + MINUTE + 30_000,  # the second candle is half-way through
        hand_off=False,
    )
    assert outcome.newest_open_ms == T0
    assert [to_ms(o) for o in Kline.objects.values_list("open_time", flat=True)] == [T0]


def test_the_emulators_open_candle_is_dropped_and_stored_once_it_has_closed(db, own_market):
    present = present_open_ms(own_market)

    klines = fetch.klines_fetch(symbol="BTCUSDT", interval="1m")
    raw = fetch.market_data_venue().klines(symbol="BTCUSDT", interval="1m", limit=3)
    assert raw[-1].open_time_ms == present  # Binance (and the emulator) serve it last...
    assert klines[-1].open_time_ms == present - MINUTE  # ...and it never gets through
    ingest_klines("BTCUSDT", "1m")
    assert not Kline.objects.filter(open_time=to_dt(present)).exists()
    assert Kline.objects.filter(symbol="BTCUSDT").count() == fetch.LATEST_LIMIT - 1

    own_market.control("advance", seconds=60)
    clock.reset()
    ingest_klines("BTCUSDT", "1m")

    closed = Kline.objects.get(symbol="BTCUSDT", interval="1m", open_time=to_dt(present))
    (expected,) = replay_closed(own_market, present, present)
    assert values(closed) == venue_values(expected)


# --- the beat tasks and the hand-off ------------------------------------------------------------


def test_ingest_due_enqueues_the_newest_closed_candle_once_with_jitter(
    db, market, broker, settings
):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    BotFactory.create(symbol="BTCUSDT", interval="1h")  # derived: fetched as 1m, not twice
    BotFactory.create(symbol="ETHUSDT", interval="5m", status="PAUSED")  # not needed
    settings.INGEST_JITTER_S = 2.0
    newest = present_open_ms(market) - MINUTE

    assert ingest_due() == 1
    assert ingest_due() == 0  # already dispatched

    ((task, args, headers),) = queued(broker, "ingest")
    assert task == "ingest.tasks.ingest_klines"
    assert args == ["BTCUSDT", "1m", newest]
    eta = datetime.fromisoformat(headers["eta"])
    assert timedelta(0) <= eta - datetime.now(UTC) <= timedelta(seconds=2.5)


def test_ingest_due_skips_a_candle_already_stored(db, market, broker):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    ingest_klines("BTCUSDT", "1m")

    assert ingest_due() == 0
    assert queued(broker, "ingest") == []


def test_ingest_due_looks_up_all_feeds_of_an_interval_in_one_query(db, market, broker):
    for symbol in ("BTCUSDT", "ETHUSDT", "XRPUSDT"):
        BotFactory.create(symbol=symbol, interval="1m")
    newest = present_open_ms(market) - MINUTE
    klines_ingest(
        symbol="ETHUSDT", interval="1m", bars=[bar(newest, "2000", "2010", "1990", "2005")],
        path="stream", now_ms=newest + MINUTE,
    )  # fmt: skip

    with CaptureQueriesContext(connection) as queries:
        assert ingest_due() == 2

    assert sorted(args[0] for _, args, _ in queued(broker, "ingest")) == ["BTCUSDT", "XRPUSDT"]
    assert len([q for q in queries if '"ingest_kline"' in q["sql"]]) == 1


def test_beat_task_fetches_nothing_for_a_candle_the_stream_already_handed_off(db, market):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    newest = present_open_ms(market) - MINUTE
    klines_ingest(
        symbol="BTCUSDT", interval="1m", bars=replay_closed(market, newest, newest),
        path="stream", now_ms=newest + MINUTE,
    )  # fmt: skip
    candles = Kline.objects.filter(symbol="BTCUSDT", interval="1m")
    assert candles.exclude(chain_started_at=None).count() == 1

    ingest_klines("BTCUSDT", "1m", newest)  # dispatched before the stream stored it

    assert candles.count() == 1  # a fetch would have stored the candles before it too


def test_beat_task_stores_and_hands_off_the_newest_closed_candle_exactly_once(
    db, market, broker, django_capture_on_commit_callbacks
):
    BotFactory.create(symbol="BTCUSDT", interval="1m")
    newest = present_open_ms(market) - MINUTE

    with django_capture_on_commit_callbacks() as callbacks:
        ingest_klines("BTCUSDT", "1m", newest)

    candles = Kline.objects.filter(symbol="BTCUSDT", interval="1m")
    assert candles.count() == fetch.LATEST_LIMIT - 1
    handed = candles.exclude(chain_started_at=None)
    assert [to_ms(k.open_time) for k in handed] == [newest]
    assert len(callbacks) == 1
    callbacks[0]()  # what the commit would run: enqueue the signals stage
    assert [(t, a) for t, a, _ in queued(broker, "signals")] == [
        ("signals.tasks.evaluate_candle", ["BTCUSDT", "1m", newest])
    ]
    assert market_price(symbol="BTCUSDT") == candles.get(open_time=to_dt(newest)).close
    started_at = handed.get().chain_started_at

    with django_capture_on_commit_callbacks() as again:
        ingest_klines("BTCUSDT", "1m", newest)  # a redelivery, or the next tick

    assert again == []
    assert candles.count() == fetch.LATEST_LIMIT - 1
    assert candles.exclude(chain_started_at=None).get().chain_started_at == started_at
    assert not candle_closed(
        symbol="BTCUSDT", interval="1m", open_time=to_dt(newest), path="stream"
    )


def test_beat_fetch_after_a_pause_catches_up_from_the_last_stored_candle(db, own_market):
    ingest_klines("BTCUSDT", "1m")
    before = Kline.objects.count()

    own_market.control("advance", seconds=5 * 60)
    clock.reset()
    outcome = fetch.ingest_latest(symbol="BTCUSDT", interval="1m")

    assert outcome.stored == 5
    assert outcome.updated == 0  # the last stored candle came again, unchanged
    assert Kline.objects.count() == before + 5
    assert kline_gaps(symbol="BTCUSDT", interval="1m") == []


# --- bad ticks ----------------------------------------------------------------------------------


def test_bad_ticks_in_a_live_batch_are_rejected_logged_and_counted_by_rule(db, caplog):
    klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0 + i * MINUTE, "100", "101", "99", "100", v="50") for i in range(5)],
        path="beat",
        now_ms=AFTER,
        hand_off=False,
    )
    high_below_low = metric(
        "trader_ingest_bad_ticks_total", {"path": "beat", "rule": "high_below_low"}
    )
    unconfirmed = metric(
        "trader_ingest_bad_ticks_total", {"path": "beat", "rule": "move_unconfirmed"}
    )
    batch = [
        bar(T0 + 5 * MINUTE, "100", "99", "101", "100"),  # high below low
        bar(T0 + 6 * MINUTE, "100", "130", "100", "130", v="1"),  # +30% on 1 vs median 50
        bar(T0 + 7 * MINUTE, "100", "102", "99", "101"),
    ]

    with caplog.at_level(logging.WARNING, logger="ingest.live"):
        outcome = klines_ingest(
            symbol="XUSDT", interval="1m", bars=batch, path="beat", now_ms=AFTER, hand_off=False
        )

    assert [b.rule for b in outcome.bad] == ["high_below_low", "move_unconfirmed"]
    assert outcome.stored == 1
    assert outcome.newest_open_ms == T0 + 7 * MINUTE
    assert not Kline.objects.filter(open_time__in=[to_dt(T0 + 5 * MINUTE), to_dt(T0 + 6 * MINUTE)])
    assert (
        metric("trader_ingest_bad_ticks_total", {"path": "beat", "rule": "high_below_low"})
        == high_below_low + 1
    )
    assert (
        metric("trader_ingest_bad_ticks_total", {"path": "beat", "rule": "move_unconfirmed"})
        == unconfirmed + 1
    )
    logged = [r.getMessage() for r in caplog.records]
    assert any("rule=high_below_low" in m and "h=99 l=101" in m for m in logged)
    assert any("rule=move_unconfirmed" in m and "previous_close=100" in m for m in logged)


def test_a_spike_confirmed_by_the_stored_candles_volume_passes(db):
    klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0 + i * MINUTE, "100", "101", "99", "100", v="50") for i in range(5)],
        path="beat",
        now_ms=AFTER,
        hand_off=False,
    )
    outcome = klines_ingest(
        symbol="XUSDT",
        interval="1m",
        bars=[bar(T0 + 5 * MINUTE, "100", "130", "100", "130", v="40")],  # 40 >= 0.1 * 50
        path="beat",
        now_ms=AFTER,
        hand_off=False,
    )
    assert outcome.bad == []
    assert outcome.stored == 1


# --- in-line gap repair -------------------------------------------------------------------------


def test_a_hole_before_the_new_candles_is_refetched_once_as_repair(db, market):
    newest = present_open_ms(market) - MINUTE
    old = replay_closed(market, newest - 19 * MINUTE, newest - 10 * MINUTE)
    klines_ingest(symbol="BTCUSDT", interval="1m", bars=old, path="beat", hand_off=False)
    stored_before = metric(
        "trader_ingest_candles_stored_total", {"path": "repair", "interval": "1m"}
    )

    latest = replay_closed(market, newest - 2 * MINUTE, newest)
    outcome = klines_ingest(
        symbol="BTCUSDT", interval="1m", bars=latest, path="beat", hand_off=False
    )

    assert outcome.stored == 3
    assert outcome.repaired == 7
    assert kline_gaps(symbol="BTCUSDT", interval="1m") == []
    expected = replay_closed(market, newest - 19 * MINUTE, newest)
    stored = Kline.objects.filter(symbol="BTCUSDT").order_by("open_time")
    assert [values(k) for k in stored] == [venue_values(k) for k in expected]
    assert (
        metric("trader_ingest_candles_stored_total", {"path": "repair", "interval": "1m"})
        == stored_before + 7
    )


# --- derived intervals --------------------------------------------------------------------------


def test_a_1m_batch_builds_and_hands_off_the_derived_candle_it_completes(
    db, own_market, settings, django_capture_on_commit_callbacks
):
    BotFactory.create(symbol="BTCUSDT", interval="5m")
    # Put the market one minute into a 5m window: the 1m candle that just closed ends one.
    now = own_market.state()["market_time_ms"]
    to_next = (5 * MINUTE - now % (5 * MINUTE)) + MINUTE // 2
    own_market.control("advance", seconds=to_next / 1000)
    clock.reset()
    window = present_open_ms(own_market) - 5 * MINUTE

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = fetch.ingest_latest(symbol="BTCUSDT", interval="1m")

    assert outcome.derived_handed_off == ("5m",)
    five = Kline.objects.filter(symbol="BTCUSDT", interval="5m").order_by("open_time")
    assert outcome.derived["5m"] == five.count() > 0
    newest = five.last()
    assert newest is not None
    assert to_ms(newest.open_time) == window
    assert list(five.exclude(chain_started_at=None)) == [newest]
    minutes = replay_closed(own_market, window, window + 4 * MINUTE)
    assert (newest.open, newest.close) == (minutes[0].open, minutes[-1].close)
    assert newest.high == max(k.high for k in minutes)
    assert newest.volume == sum(k.volume for k in minutes)
    assert len(callbacks) == 2  # the 1m candle and the 5m one it completed

    with django_capture_on_commit_callbacks() as again:
        fetch.ingest_latest(symbol="BTCUSDT", interval="1m")
    assert again == []
