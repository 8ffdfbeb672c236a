"""Indicators: thin wrappers over TA-Lib (pure: no Django, no clock, no network).

Every function takes float64 arrays (or a ``Candles`` window) oldest first and returns arrays of
the same length, aligned with the input: element ``i`` is the indicator at candle ``i``, and the
first ``*_lookback(...)`` elements are NaN (TA-Lib's warm-up). Nothing here computes an
indicator by hand; TA-Lib does, and the lookbacks come from TA-Lib's own lookback functions
(``talib.abstract.Function(name, **params).lookback``), so they stay right if TA-Lib's
unstable-period settings change.

``last(values)`` reads the newest value as a ``float``, or ``None`` while it is NaN: strategies
read indicators only through it, so a warm-up NaN can never turn into a decision.

The exponentially smoothed indicators (EMA, RSI, ATR, ADX, MACD) are seeded from the first
candles of the window, so their values depend a little on where the window starts: the same
window always gives the same values, a longer window slightly different early ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import talib
from talib import abstract

from signals.strategies.base import Candles

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Bands",
    "Channel",
    "FloatArray",
    "Macd",
    "adx",
    "adx_lookback",
    "atr",
    "atr_lookback",
    "bollinger",
    "bollinger_lookback",
    "donchian",
    "donchian_lookback",
    "ema",
    "ema_lookback",
    "last",
    "macd",
    "macd_lookback",
    "rsi",
    "rsi_lookback",
    "sma",
    "sma_lookback",
]


def _f64(values: npt.ArrayLike) -> FloatArray:
    """TA-Lib wants contiguous float64; Candles already are, so this is normally a no-op."""
    return np.ascontiguousarray(values, dtype=np.float64)


def _out(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _lookback(function: str, **params: float) -> int:
    """Leading NaNs TA-Lib emits for ``function`` with ``params`` (its own lookback)."""
    # talib's abstract.pyi does not declare Function (it exists at runtime).
    return int(abstract.Function(function, **params).lookback)  # type: ignore[attr-defined]


# -- moving averages and oscillators on one series ------------------------------------------


def ema(values: FloatArray, period: int) -> FloatArray:
    """Exponential moving average (TA-Lib seeds it with the SMA of the first ``period``)."""
    return _out(talib.EMA(_f64(values), timeperiod=period))


def ema_lookback(period: int) -> int:
    return _lookback("EMA", timeperiod=period)


def sma(values: FloatArray, period: int) -> FloatArray:
    """Simple moving average."""
    return _out(talib.SMA(_f64(values), timeperiod=period))


def sma_lookback(period: int) -> int:
    return _lookback("SMA", timeperiod=period)


def rsi(values: FloatArray, period: int = 14) -> FloatArray:
    """Wilder's RSI, 0..100 (TA-Lib gives 0 on a series that never moves)."""
    return _out(talib.RSI(_f64(values), timeperiod=period))


def rsi_lookback(period: int = 14) -> int:
    return _lookback("RSI", timeperiod=period)


@dataclass(frozen=True, eq=False)
class Bands:
    """Bollinger Bands: ``middle`` is the SMA, ``upper``/``lower`` ``num_std`` deviations off."""

    upper: FloatArray
    middle: FloatArray
    lower: FloatArray


def bollinger(values: FloatArray, period: int = 20, num_std: float = 2.0) -> Bands:
    upper, middle, lower = talib.BBANDS(
        _f64(values), timeperiod=period, nbdevup=num_std, nbdevdn=num_std
    )
    return Bands(upper=_out(upper), middle=_out(middle), lower=_out(lower))


def bollinger_lookback(period: int = 20) -> int:
    return _lookback("BBANDS", timeperiod=period)


@dataclass(frozen=True, eq=False)
class Macd:
    """MACD line (fast EMA - slow EMA), its signal EMA, and the histogram (macd - signal)."""

    macd: FloatArray
    signal: FloatArray
    hist: FloatArray


def macd(values: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    line, signal_line, hist = talib.MACD(
        _f64(values), fastperiod=fast, slowperiod=slow, signalperiod=signal
    )
    return Macd(macd=_out(line), signal=_out(signal_line), hist=_out(hist))


def macd_lookback(fast: int = 12, slow: int = 26, signal: int = 9) -> int:
    return _lookback("MACD", fastperiod=fast, slowperiod=slow, signalperiod=signal)


# -- indicators on candles (high/low/close) -------------------------------------------------


def atr(candles: Candles, period: int = 14) -> FloatArray:
    """Wilder's Average True Range, in price units."""
    return _out(
        talib.ATR(_f64(candles.high), _f64(candles.low), _f64(candles.close), timeperiod=period)
    )


def atr_lookback(period: int = 14) -> int:
    return _lookback("ATR", timeperiod=period)


def adx(candles: Candles, period: int = 14) -> FloatArray:
    """Wilder's Average Directional Index, 0..100: trend strength, not direction."""
    return _out(
        talib.ADX(_f64(candles.high), _f64(candles.low), _f64(candles.close), timeperiod=period)
    )


def adx_lookback(period: int = 14) -> int:
    """2 x period - 1 with TA-Lib's defaults: DX needs a smoothed period, ADX smooths DX."""
    return _lookback("ADX", timeperiod=period)


@dataclass(frozen=True, eq=False)
class Channel:
    """Donchian channel: ``upper`` the highest high, ``lower`` the lowest low of the window."""

    upper: FloatArray
    lower: FloatArray


def donchian(candles: Candles, period: int = 20, *, exclude_current: bool = False) -> Channel:
    """Highest high / lowest low over ``period`` candles (TA-Lib MAX/MIN).

    With ``exclude_current`` element ``i`` covers candles ``i - period .. i - 1``: the channel
    a breakout at candle ``i`` is measured against (a candle cannot break its own high)."""
    upper = _out(talib.MAX(_f64(candles.high), timeperiod=period))
    lower = _out(talib.MIN(_f64(candles.low), timeperiod=period))
    if exclude_current:
        upper = np.concatenate(([np.nan], upper[:-1])) if len(upper) else upper
        lower = np.concatenate(([np.nan], lower[:-1])) if len(lower) else lower
    return Channel(upper=upper, lower=lower)


def donchian_lookback(period: int = 20, *, exclude_current: bool = False) -> int:
    return _lookback("MAX", timeperiod=period) + (1 if exclude_current else 0)


# -- reading ---------------------------------------------------------------------------------


def last(values: FloatArray, ago: int = 0) -> float | None:
    """The value ``ago`` candles before the newest (0: the newest), or None if there is none
    yet or it is NaN/inf (warm-up)."""
    if ago < 0:
        raise ValueError("ago must be >= 0")
    if len(values) <= ago:
        return None
    value = float(values[len(values) - 1 - ago])
    return value if math.isfinite(value) else None
