"""signals.indicators: TA-Lib wrappers, aligned with the input, NaN during warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib
from numpy.lib.stride_tricks import sliding_window_view

from signals import indicators as ind
from tests.signals.support import btc_candles, make_candles


def assert_warmup(values: np.ndarray, lookback: int, length: int) -> None:
    """Same length as the input; NaN exactly for the first ``lookback`` elements."""
    assert len(values) == length
    assert np.isnan(values[:lookback]).all()
    assert not np.isnan(values[lookback:]).any()


def test_btc_candles_load_as_float64_arrays_of_one_length():
    candles = btc_candles()
    assert len(candles) > 40_000
    assert candles.close.dtype == np.float64
    assert candles.open_time_ms.dtype == np.int64
    assert len(candles.high) == len(candles.low) == len(candles.open) == len(candles)


@pytest.mark.parametrize("period", [9, 50, 200])
def test_ema_on_btc_candles_matches_talib_and_its_lookback(period):
    candles = btc_candles()
    result = ind.ema(candles.close, period)
    np.testing.assert_allclose(result, talib.EMA(candles.close, timeperiod=period))
    assert_warmup(result, ind.ema_lookback(period), len(candles))
    assert ind.ema_lookback(period) == period - 1


@pytest.mark.parametrize("period", [5, 30])
def test_sma_on_btc_candles_matches_talib_and_its_lookback(period):
    candles = btc_candles()
    result = ind.sma(candles.close, period)
    np.testing.assert_allclose(result, talib.SMA(candles.close, timeperiod=period))
    assert_warmup(result, ind.sma_lookback(period), len(candles))


@pytest.mark.parametrize("period", [7, 14])
def test_rsi_on_btc_candles_matches_talib_and_its_lookback(period):
    candles = btc_candles()
    result = ind.rsi(candles.close, period)
    np.testing.assert_allclose(result, talib.RSI(candles.close, timeperiod=period))
    assert_warmup(result, ind.rsi_lookback(period), len(candles))
    assert np.nanmin(result) >= 0
    assert np.nanmax(result) <= 100


@pytest.mark.parametrize("period", [10, 14])
def test_atr_on_btc_candles_matches_talib_and_its_lookback(period):
    c = btc_candles()
    result = ind.atr(c, period)
    np.testing.assert_allclose(result, talib.ATR(c.high, c.low, c.close, timeperiod=period))
    assert_warmup(result, ind.atr_lookback(period), len(c))


@pytest.mark.parametrize("period", [10, 14])
def test_adx_on_btc_candles_matches_talib_with_a_two_period_lookback(period):
    c = btc_candles()
    result = ind.adx(c, period)
    np.testing.assert_allclose(result, talib.ADX(c.high, c.low, c.close, timeperiod=period))
    assert_warmup(result, ind.adx_lookback(period), len(c))
    assert ind.adx_lookback(period) == 2 * period - 1


def test_bollinger_on_btc_candles_matches_talib_with_non_default_params():
    close = btc_candles().close
    bands = ind.bollinger(close, period=10, num_std=1.5)
    upper, middle, lower = talib.BBANDS(close, timeperiod=10, nbdevup=1.5, nbdevdn=1.5)
    np.testing.assert_allclose(bands.upper, upper)
    np.testing.assert_allclose(bands.middle, middle)
    np.testing.assert_allclose(bands.lower, lower)
    for series in (bands.upper, bands.middle, bands.lower):
        assert_warmup(series, ind.bollinger_lookback(10), len(close))


def test_macd_on_btc_candles_matches_talib_with_non_default_params():
    close = btc_candles().close
    result = ind.macd(close, fast=8, slow=21, signal=5)
    line, signal, hist = talib.MACD(close, fastperiod=8, slowperiod=21, signalperiod=5)
    np.testing.assert_allclose(result.macd, line)
    np.testing.assert_allclose(result.signal, signal)
    np.testing.assert_allclose(result.hist, hist)
    for series in (result.macd, result.signal, result.hist):
        assert_warmup(series, ind.macd_lookback(8, 21, 5), len(close))


def test_donchian_on_btc_candles_is_the_rolling_high_and_low():
    c = btc_candles()
    channel = ind.donchian(c, 20)
    np.testing.assert_allclose(channel.upper, talib.MAX(c.high, timeperiod=20))
    np.testing.assert_allclose(channel.lower, talib.MIN(c.low, timeperiod=20))
    # An independent oracle: the max/min of each 20-candle window ending at i.
    np.testing.assert_allclose(channel.upper[19:], sliding_window_view(c.high, 20).max(axis=1))
    np.testing.assert_allclose(channel.lower[19:], sliding_window_view(c.low, 20).min(axis=1))
    assert_warmup(channel.upper, ind.donchian_lookback(20), len(c))


def test_donchian_excluding_current_covers_the_candles_before_each_one():
    c = btc_candles()
    channel = ind.donchian(c, 20, exclude_current=True)
    # element i is the max/min of candles i-20 .. i-1
    np.testing.assert_allclose(channel.upper[20:], sliding_window_view(c.high, 20).max(axis=1)[:-1])
    np.testing.assert_allclose(channel.lower[20:], sliding_window_view(c.low, 20).min(axis=1)[:-1])
    assert_warmup(channel.upper, ind.donchian_lookback(20, exclude_current=True), len(c))
    assert_warmup(channel.lower, 20, len(c))


def test_donchian_excluding_current_on_no_candles_is_empty():
    empty = make_candles([], [], [], [])
    channel = ind.donchian(empty, 5, exclude_current=True)
    assert len(channel.upper) == len(channel.lower) == 0


def test_indicators_on_fewer_candles_than_their_lookback_are_all_nan():
    c = make_candles([1.0] * 5, [2.0] * 5, [0.5] * 5, [1.5] * 5)
    for series in (ind.ema(c.close, 10), ind.adx(c, 14), ind.atr(c, 14), ind.rsi(c.close, 14)):
        assert len(series) == 5
        assert np.isnan(series).all()
        assert ind.last(series) is None


def test_last_reads_the_newest_value_or_none_while_nan():
    values = np.array([np.nan, np.nan, 1.5, 2.5])
    assert ind.last(values) == 2.5
    assert ind.last(values, 1) == 1.5
    assert ind.last(values, 2) is None
    assert ind.last(values, 4) is None
    assert ind.last(np.array([], dtype=np.float64)) is None
    assert ind.last(np.array([1.0, math.inf])) is None
    assert isinstance(ind.last(values), float)


def test_last_refuses_a_negative_offset():
    with pytest.raises(ValueError, match="ago"):
        ind.last(np.array([1.0]), -1)
