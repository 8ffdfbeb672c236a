"""Helpers of the strategy contract: interval, protective prices, params defaults."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from signals.strategies.base import Candles, candle_interval, protective_prices_ok


def candles_at(*times_ms: int) -> Candles:
    ones = np.ones(len(times_ms), dtype=np.float64)
    return Candles(np.asarray(times_ms, dtype=np.int64), ones, ones, ones, ones, ones)


def test_interval_is_the_smallest_spacing_so_a_gap_does_not_stretch_it():
    candles = candles_at(0, 60_000, 120_000, 600_000, 660_000)
    assert candle_interval(candles) == timedelta(minutes=1)


def test_interval_from_the_chain_wins_over_the_spacing():
    candles = candles_at(0, 60_000, 120_000)
    assert candle_interval(candles, {"interval_ms": 300_000}) == timedelta(minutes=5)
    assert candle_interval(candles, {"symbol": "BTCUSDT"}) == timedelta(minutes=1)


@pytest.mark.parametrize("bad", [0, -60_000, "60000", 1.5, True])
def test_a_bad_interval_from_the_chain_is_refused(bad):
    with pytest.raises(ValueError, match="interval_ms"):
        candle_interval(candles_at(0, 60_000), {"interval_ms": bad})


def test_one_candle_time_gives_no_interval():
    with pytest.raises(ValueError, match="interval"):
        candle_interval(candles_at(5, 5))


@pytest.mark.parametrize(
    ("side", "stop", "tp", "ok"),
    [
        ("BUY", "99", "102", True),
        ("BUY", "99", None, True),
        ("BUY", "100", "102", False),
        ("BUY", "99", "100", False),
        ("BUY", "-1", "102", False),
        ("SELL", "101", "98", True),
        ("SELL", "99", "98", False),
        ("SELL", "101", "100", False),
        ("SELL", "101", "-5", False),
        ("HOLD", "99", "102", False),
    ],
)
def test_protective_prices_must_straddle_the_reference(side, stop, tp, ok):
    take_profit = Decimal(tp) if tp is not None else None
    assert (
        protective_prices_ok(
            side, reference=Decimal(100), stop=Decimal(stop), take_profit=take_profit
        )
        is ok
    )
