"""Derived intervals built from stored 1m candles (real Postgres, the project's real data)."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.derive import (
    candle_open_ms,
    derive_bars,
    derive_klines,
    newest_closed_open_ms,
    next_open_ms,
    to_dt,
    to_ms,
)
from ingest.models import Kline
from ingest.services import klines_import_file

DATA = Path(__file__).resolve().parents[2] / "execution" / "emulator" / "data"
BTC = DATA / "BTCUSDT-1m-2022-01.csv"  # the shared BTCPERP-1m-2022-01.csv
MINUTE = 60_000
D = Decimal

pytestmark = pytest.mark.django_db(transaction=True)


def by_hand(path: Path, minutes: int) -> dict[int, tuple[Decimal, ...]]:
    """Complete ``minutes``-long windows of the CSV, aggregated the plain way:
    open_ms -> (open, high, low, close, volume)."""
    windows: dict[int, list[list[str]]] = defaultdict(list)
    with path.open() as handle:
        for row in csv.DictReader(handle):
            opened = int(row["open_time"])
            windows[opened - opened % (minutes * MINUTE)].append(
                [row["open"], row["high"], row["low"], row["close"], row["volume"]]
            )
    result: dict[int, tuple[Decimal, ...]] = {}
    for start, rows in windows.items():
        if len(rows) != minutes:
            continue
        result[start] = (
            D(rows[0][0]),
            max(D(r[1]) for r in rows),
            min(D(r[2]) for r in rows),
            D(rows[-1][3]),
            sum((D(r[4]) for r in rows), D(0)),
        )
    return result


def stored(symbol: str, interval: str) -> dict[int, tuple[Decimal, ...]]:
    return {
        to_ms(k.open_time): (k.open, k.high, k.low, k.close, k.volume)
        for k in Kline.objects.filter(symbol=symbol, interval=interval)
    }


def test_derived_5m_and_4h_from_the_real_month_equal_a_by_hand_aggregation():
    klines_import_file(path=BTC, symbol="BTCPERP", interval="1m")
    first = to_ms(Kline.objects.order_by("open_time").values_list("open_time", flat=True)[0])
    last = to_ms(Kline.objects.order_by("-open_time").values_list("open_time", flat=True)[0])

    built_5m = derive_klines(symbol="BTCPERP", interval="5m", start_ms=first, end_ms=last)
    built_4h = derive_klines(symbol="BTCPERP", interval="4h", start_ms=first, end_ms=last)

    expected_5m, expected_4h = by_hand(BTC, 5), by_hand(BTC, 240)
    # 45031 minutes from 2021-12-31 23:00: 9006 whole 5m windows and one lone minute; the 4h
    # windows lose the partial one at each end.
    assert built_5m == len(expected_5m) == 9006
    assert stored("BTCPERP", "5m") == expected_5m
    assert built_4h == len(expected_4h) == 187
    assert stored("BTCPERP", "4h") == expected_4h
    candle = Kline.objects.get(symbol="BTCPERP", interval="5m", open_time=to_dt(first))
    assert candle.close_time == to_dt(first + 5 * MINUTE - 1)


def test_derived_candle_sums_every_volume_column_and_the_trades():
    klines_import_file(path=DATA / "binance-dumps" / "ADABTC-1m-2021-11-27.csv")
    minutes = list(Kline.objects.filter(symbol="ADABTC").order_by("open_time"))
    start = to_ms(minutes[0].open_time)
    window = [m for m in minutes if start <= to_ms(m.open_time) < start + 2 * MINUTE]
    assert len(window) == 2

    (two,) = [
        b
        for b in derive_bars(symbol="ADABTC", interval="2m", start_ms=start, end_ms=start)
        if b.open_time_ms == start
    ]

    assert two.trades == sum(m.trades for m in window)
    assert two.quote_volume == sum(m.quote_volume for m in window)
    assert two.taker_buy_base == sum(m.taker_buy_base for m in window)
    assert two.taker_buy_quote == sum(m.taker_buy_quote for m in window)
    assert two.close_time_ms == start + 2 * MINUTE - 1


def test_a_5m_window_missing_one_1m_candle_gets_no_5m_candle():
    klines_import_file(path=BTC, symbol="BTCPERP", interval="1m")
    first = to_ms(Kline.objects.order_by("open_time").values_list("open_time", flat=True)[0])
    hole = first + 7 * MINUTE  # inside the second 5m window
    Kline.objects.filter(symbol="BTCPERP", open_time=to_dt(hole)).delete()

    built = derive_klines(
        symbol="BTCPERP", interval="5m", start_ms=first, end_ms=first + 14 * MINUTE
    )

    assert built == 2
    assert sorted(stored("BTCPERP", "5m")) == [first, first + 10 * MINUTE]


def test_deriving_twice_changes_nothing():
    klines_import_file(path=DATA / "binance-dumps" / "ADABTC-1m-2021-11-28.csv")
    first = to_ms(Kline.objects.order_by("open_time").values_list("open_time", flat=True)[0])
    once = derive_klines(symbol="ADABTC", interval="2m", start_ms=first, end_ms=first + 30 * MINUTE)
    rows = stored("ADABTC", "2m")
    twice = derive_klines(
        symbol="ADABTC", interval="2m", start_ms=first, end_ms=first + 30 * MINUTE
    )
    assert once == twice == len(rows) > 0
    assert stored("ADABTC", "2m") == rows


@pytest.mark.parametrize(
    ("moment", "interval", "opened"),
    [
        ("2024-01-03T10:07:31", "5m", "2024-01-03T10:05:00"),
        ("2024-01-03T10:07:31", "2m", "2024-01-03T10:06:00"),
        ("2024-01-03T10:07:31", "4h", "2024-01-03T08:00:00"),
        ("2024-01-03T10:07:31", "1d", "2024-01-03T00:00:00"),
        ("2024-01-03T10:07:31", "1w", "2024-01-01T00:00:00"),  # a Monday
        ("2024-02-29T23:59:59", "1M", "2024-02-01T00:00:00"),
    ],
)
def test_candle_windows_are_aligned_as_binance_aligns_them(moment, interval, opened):
    def ms(text: str) -> int:
        return to_ms(datetime.fromisoformat(text).replace(tzinfo=UTC))

    assert candle_open_ms(ms(moment), interval) == ms(opened)


def test_newest_closed_candle_is_the_one_before_the_open_one():
    now = to_ms(datetime(2024, 3, 1, 10, 7, 31, tzinfo=UTC))
    assert newest_closed_open_ms("1m", now) == now - 31_000 - MINUTE
    assert newest_closed_open_ms("1h", now) == to_ms(datetime(2024, 3, 1, 9, tzinfo=UTC))
    feb = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    assert newest_closed_open_ms("1M", now) == feb
    assert next_open_ms(feb, "1M") == to_ms(datetime(2024, 3, 1, tzinfo=UTC))
