"""Candles at coarser intervals than the data's own: ``aggregate_klines``, the bucket alignment
and the replay serving them (``MarketReplay.klines(interval=...)``).

Pure Python: no database, no network. Real data from ``execution/emulator/data``.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from execution.emulator.market import (
    DATA_DIR,
    MarketReplay,
    aggregate_klines,
    bucket_next_ms,
    bucket_open_ms,
    can_aggregate,
    load_candles,
)
from execution.venues.base import Kline

D = Decimal
MINUTE = 60_000
HOUR = 60 * MINUTE
START = 1_800_000_000_000 + 7 * MINUTE + 12_345  # the replay's wall start: mid-bucket on purpose


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def candle(open_ms: int, o: str, h: str, low: str, c: str, volume: str, trades: int = 1) -> Kline:
    return Kline(
        open_time_ms=open_ms,
        open=D(o),
        high=D(h),
        low=D(low),
        close=D(c),
        volume=D(volume),
        close_time_ms=open_ms + MINUTE - 1,
        quote_volume=D(volume) * D(c),
        trades=trades,
        taker_buy_base=D(volume) / 2,
        taker_buy_quote=D(volume) * D(c) / 2,
    )


@functools.cache
def btc_candles() -> list[Kline]:
    return load_candles(DATA_DIR / "BTCUSDT-1m-2022-01.csv")[1]


def btc_replay() -> MarketReplay:
    return MarketReplay(
        {"BTCUSDT": btc_candles()}, interval_ms={"BTCUSDT": MINUTE}, start_wall_ms=START
    )


def xrp_replay() -> MarketReplay:
    _, candles = load_candles(DATA_DIR / "XRPUSDT-5m-2021-11.csv")
    return MarketReplay(
        {"XRPUSDT": candles}, interval_ms={"XRPUSDT": 5 * MINUTE}, start_wall_ms=START
    )


# --- aggregate_klines --------------------------------------------------------------------------


def test_five_one_minute_candles_make_one_5m_candle_with_summed_volumes():
    t = ms("2024-01-10T12:00:00")
    ones = [
        candle(t, "100", "105", "99", "104", "1.5", trades=3),
        candle(t + MINUTE, "104", "110", "103", "109", "2.25", trades=4),
        candle(t + 2 * MINUTE, "109", "109", "95", "96", "0.25", trades=5),
        candle(t + 3 * MINUTE, "96", "101", "96", "100", "3", trades=6),
        candle(t + 4 * MINUTE, "100", "102", "98", "101", "1", trades=7),
    ]

    (five,) = aggregate_klines(ones, "5m")

    assert five == Kline(
        open_time_ms=t,
        open=D("100"),
        high=D("110"),
        low=D("95"),
        close=D("101"),
        volume=D("8.00"),
        close_time_ms=t + 5 * MINUTE - 1,
        quote_volume=sum((c.quote_volume for c in ones), D(0)),
        trades=25,
        taker_buy_base=D("4.000"),
        taker_buy_quote=sum((c.taker_buy_quote for c in ones), D(0)),
    )


def test_buckets_are_aligned_on_the_epoch_not_on_the_first_candle():
    t = ms("2024-01-10T12:03:00")
    ones = [candle(t + i * MINUTE, "10", "11", "9", "10", "1") for i in range(10)]  # 12:03-12:12

    fives = aggregate_klines(ones, "5m")

    assert [k.open_time_ms for k in fives] == [
        ms("2024-01-10T12:00:00"),
        ms("2024-01-10T12:05:00"),
        ms("2024-01-10T12:10:00"),
    ]
    assert [k.volume for k in fives] == [D(2), D(5), D(3)]  # the ends hold what there is
    assert [k.close_time_ms for k in fives] == [k.open_time_ms + 5 * MINUTE - 1 for k in fives]


def test_a_hole_in_the_data_leaves_its_bucket_out():
    t = ms("2024-01-10T12:00:00")
    ones = [
        candle(t, "10", "11", "9", "10", "1"),
        candle(t + 10 * MINUTE, "10", "12", "9", "11", "2"),
    ]

    fives = aggregate_klines(ones, "5m")

    assert [k.open_time_ms for k in fives] == [t, t + 10 * MINUTE]


def test_unsorted_candles_raise():
    t = ms("2024-01-10T12:00:00")
    later, earlier = candle(t + MINUTE, "1", "1", "1", "1", "1"), candle(t, "1", "1", "1", "1", "1")

    with pytest.raises(ValueError, match="sorted"):
        aggregate_klines([later, earlier], "5m")


def test_an_unknown_interval_raises():
    with pytest.raises(ValueError, match="unknown interval"):
        aggregate_klines([], "7m")


def test_weeks_open_on_monday_and_months_on_the_first():
    wednesday = ms("2024-01-10T15:30:00")

    assert bucket_open_ms(wednesday, "1w") == ms("2024-01-08T00:00:00")
    assert bucket_next_ms(wednesday, "1w") == ms("2024-01-15T00:00:00")
    assert bucket_open_ms(ms("2024-01-08T00:00:00"), "1w") == ms("2024-01-08T00:00:00")
    assert bucket_open_ms(wednesday, "1M") == ms("2024-01-01T00:00:00")
    assert bucket_next_ms(ms("2024-02-10T00:00:00"), "1M") == ms("2024-03-01T00:00:00")  # leap
    assert bucket_next_ms(ms("2024-12-31T23:59:00"), "1M") == ms("2025-01-01T00:00:00")
    assert bucket_open_ms(wednesday, "1h") == ms("2024-01-10T15:00:00")
    assert bucket_open_ms(wednesday, "1d") == ms("2024-01-10T00:00:00")


@pytest.mark.parametrize(
    ("native", "interval", "expected"),
    [
        ("1m", "1m", True), ("1m", "3m", True), ("1m", "5m", True), ("1m", "15m", True),
        ("1m", "1h", True), ("1m", "4h", True), ("1m", "1d", True), ("1m", "3d", True),
        ("1m", "1w", True), ("1m", "1M", True), ("5m", "15m", True), ("5m", "1h", True),
        ("1d", "1w", True), ("1d", "1M", True),
        ("1m", "2m", False),  # not a Binance interval: the platform derives it itself
        ("2m", "2m", False),
        ("5m", "1m", False), ("5m", "3m", False), ("15m", "5m", False), ("3d", "1w", False),
        ("1w", "1M", False), ("3d", "1M", False), ("1m", "7m", False), ("7m", "15m", False),
    ],
)  # fmt: skip
def test_can_aggregate_only_whole_aligned_multiples_binance_serves(native, interval, expected):
    assert can_aggregate(native, interval) is expected


# --- the replay --------------------------------------------------------------------------------


def test_replay_5m_from_1m_equals_the_aggregate_of_the_1m_candles_it_serves():
    replay = btc_replay()
    market = replay.market_ms(START + 90 * MINUTE + 17_000)

    fives = replay.klines("BTCUSDT", market, limit=20, interval="5m")
    ones = replay.klines("BTCUSDT", market, start_ms=fives[0].open_time_ms, limit=1500)

    assert fives == aggregate_klines(ones, "5m")
    assert len(fives) == 20
    assert all(k.open_time_ms % (5 * MINUTE) == 0 for k in fives)


def test_replay_open_aggregate_is_last_partial_and_closes_at_the_current_price():
    replay = btc_replay()
    market = replay.market_ms(START + 42 * MINUTE + 31_000)

    hours = replay.klines("BTCUSDT", market, limit=3, interval="1h")
    current = hours[-1]

    assert current.open_time_ms <= market <= current.close_time_ms
    assert current.close == replay.price("BTCUSDT", market)
    ones = replay.klines("BTCUSDT", market, start_ms=current.open_time_ms, limit=1500)
    assert current.volume == sum((k.volume for k in ones), D(0))
    assert current.volume < sum(  # the open minute counts only its elapsed part
        (
            k.volume
            for k in replay.klines("BTCUSDT", market + MINUTE, start_ms=current.open_time_ms)
        ),
        D(0),
    )


def test_replay_aggregate_built_bit_by_bit_equals_one_built_at_once():
    stepped = btc_replay()
    steps = [START + s * 7_919 for s in range(0, 600)]  # ~79 minutes of uneven steps

    for wall in steps:
        stepped.klines("BTCUSDT", stepped.market_ms(wall), limit=2, interval="15m")

    market = stepped.market_ms(steps[-1])
    assert stepped.klines("BTCUSDT", market, limit=10, interval="15m") == btc_replay().klines(
        "BTCUSDT", market, limit=10, interval="15m"
    )


def test_replay_aggregates_never_come_from_the_future():
    replay = btc_replay()
    market = replay.market_ms(START + 3 * HOUR)

    served = replay.klines(
        "BTCUSDT", market, start_ms=market - HOUR, end_ms=market + 10 * HOUR, interval="15m"
    )

    assert served[-1].open_time_ms == bucket_open_ms(market, "15m")
    assert [k.open_time_ms for k in served] == list(
        range(served[0].open_time_ms, served[-1].open_time_ms + 1, 15 * MINUTE)
    )
    assert served[0].open_time_ms >= market - HOUR  # the first bucket opening at or after start


def test_replay_aggregates_select_by_start_end_and_limit_like_binance():
    replay = btc_replay()
    market = replay.market_ms(START + 5 * HOUR)
    top = bucket_open_ms(market, "15m")

    last_four = replay.klines("BTCUSDT", market, limit=4, interval="15m")
    first_three = replay.klines(
        "BTCUSDT", market, start_ms=top - 10 * 15 * MINUTE + 1, limit=3, interval="15m"
    )
    up_to_end = replay.klines("BTCUSDT", market, end_ms=top - 1, limit=2, interval="15m")

    assert [k.open_time_ms for k in last_four] == [top - i * 15 * MINUTE for i in (3, 2, 1, 0)]
    assert [k.open_time_ms for k in first_three] == [top - i * 15 * MINUTE for i in (9, 8, 7)]
    assert [k.open_time_ms for k in up_to_end] == [top - i * 15 * MINUTE for i in (2, 1)]


def test_replay_closed_aggregates_leave_out_the_open_bucket():
    replay = btc_replay()
    market = replay.market_ms(START + 2 * HOUR + 5 * MINUTE)

    closed = replay.closed_klines("BTCUSDT", market, limit=3, interval="1h")
    served = replay.klines("BTCUSDT", market, limit=4, interval="1h")

    assert closed == served[:3]
    assert closed[-1].close_time_ms < market


def test_replay_starts_its_aggregates_with_the_data_it_has_no_earlier():
    replay = btc_replay()
    market = replay.market_ms(START)

    days = replay.klines("BTCUSDT", market, limit=500, interval="1d")

    first = replay.first_open_ms("BTCUSDT")  # 500 minutes of history before the start
    assert days[0].open_time_ms == bucket_open_ms(first, "1d")
    assert days[0].open == replay.klines("BTCUSDT", market, start_ms=first, limit=1)[0].open


def test_replay_15m_from_5m_data():
    replay = xrp_replay()
    market = replay.market_ms(START + 3 * HOUR)

    quarters = replay.klines("XRPUSDT", market, limit=8, interval="15m")
    fives = replay.klines("XRPUSDT", market, start_ms=quarters[0].open_time_ms, limit=1500)

    assert quarters == aggregate_klines(fives, "15m")
    assert replay.serves("XRPUSDT", "15m")
    assert not replay.serves("XRPUSDT", "1m")
    assert not replay.serves("XRPUSDT", "3m")


@pytest.mark.parametrize("interval", ["2m", "7m"])
def test_replay_refuses_an_interval_it_cannot_build(interval):
    replay = btc_replay()

    assert not replay.serves("BTCUSDT", interval)
    with pytest.raises(ValueError, match="cannot be built"):
        replay.klines("BTCUSDT", replay.market_ms(START), interval=interval)
