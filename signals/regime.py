"""Market regime of a candle window (pure: no Django, no clock, no network).

Readings, all TA-Lib (``signals.indicators``), at the newest candle:

* ``adx``: ADX(``adx_period``), trend strength, 0..100;
* ``atr_pct``: ATR(``atr_period``) as a percentage of the close;
* ``ema_fast`` / ``ema_slow``: EMA(``ema_fast_period``) and EMA(``ema_slow_period``) of the close;
* ``ema_slope_pct``: the slope of the slow EMA in percent per candle, measured over the last
  ``slope_lookback`` candles: ``(ema_slow[-1] / ema_slow[-1 - lookback] - 1) * 100 / lookback``.

Rules, first match wins:

1. ``HIGH_VOLATILITY`` when ``atr_pct > atr_pct_high``: the candles swing too wide for either
   trend or range logic, whatever the other readings say.
2. ``TRENDING_UP`` when ``adx >= adx_trend`` and ``ema_slope_pct > +ema_slope_min_pct`` and
   ``ema_fast > ema_slow``.
3. ``TRENDING_DOWN`` when ``adx >= adx_trend`` and ``ema_slope_pct < -ema_slope_min_pct`` and
   ``ema_fast < ema_slow``.
4. Hysteresis (only with ``previous`` given): a trend already established holds while ADX stays
   at or above ``adx_range`` (instead of ``adx_trend``) and the slope and EMA order still point
   its way, so an ADX wobbling around ``adx_trend`` does not flip trend <-> range every candle.
5. ``RANGING`` otherwise: ADX below ``adx_range``, ADX between ``adx_range`` and ``adx_trend``
   with no trend to hold, no slope, or slope and EMA order disagreeing. The ``why`` of the
   reading says which.

While any reading is still NaN (fewer candles than ``RegimeThresholds.warmup``) there is no
regime: ``classify`` returns None.

Defaults are calibrated on 1h candles (BTC/XRP USD-M futures, 2021-2022): ADX 25/20 are
Wilder's classic trend/no-trend levels and do not depend on the interval; ATR % and slope % grow
about with the square root of the interval, so ``RegimeThresholds.scaled_to_interval`` rescales
them for other intervals if wanted (1m: ATR high 0.32 %, slope 0.0039 %/candle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

from signals import indicators as ind
from signals.strategies.base import Candles

__all__ = ["Regime", "RegimeReading", "RegimeThresholds", "classify"]

HOUR_MS = 3_600_000


class Regime(StrEnum):
    TRENDING_UP = "trending_up"
    TRENDING_DOWN = "trending_down"
    RANGING = "ranging"
    HIGH_VOLATILITY = "high_volatility"


#: Settings names (Django side) -> field names, accepted by ``RegimeThresholds.from_mapping``.
SETTINGS_ALIASES = {
    "REGIME_ADX_TREND": "adx_trend",
    "REGIME_ADX_RANGE": "adx_range",
    "REGIME_ATR_PCT_HIGH": "atr_pct_high",
    "REGIME_EMA_SLOPE_MIN_PCT": "ema_slope_min_pct",
}


@dataclass(frozen=True)
class RegimeThresholds:
    """Where the regimes begin. Defaults for 1h candles (see the module docstring)."""

    #: ADX at or above which a sloped market is a trend (Wilder's 25).
    adx_trend: float = 25.0
    #: ADX below which there is no trend at all (Wilder's 20); between the two, an established
    #: trend holds (hysteresis) and anything else is ranging.
    adx_range: float = 20.0
    #: ATR as % of the close above which the market is too wild: ~99th percentile of BTC 1h ATR
    #: (BTC 1h median ~0.95 %, 99th ~2.3 %; XRP 1h 99th ~2.0 %) so it marks real turmoil.
    atr_pct_high: float = 2.5
    #: |slow EMA slope| in % per candle below which the market is flat: about the median
    #: |slope| of BTC's 1h EMA(50), i.e. it keeps the flatter half of the candles out of trends.
    ema_slope_min_pct: float = 0.03
    ema_fast_period: int = 20
    ema_slow_period: int = 50
    adx_period: int = 14
    atr_period: int = 14
    #: Candles the slope is measured over.
    slope_lookback: int = 5

    def __post_init__(self) -> None:
        for name in ("ema_fast_period", "ema_slow_period", "adx_period", "atr_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name}: must be an integer >= 2, got {value!r}")
        if isinstance(self.slope_lookback, bool) or not isinstance(self.slope_lookback, int):
            raise ValueError(f"slope_lookback: must be an integer, got {self.slope_lookback!r}")
        if self.slope_lookback < 1:
            raise ValueError(f"slope_lookback: must be >= 1, got {self.slope_lookback}")
        if self.ema_fast_period >= self.ema_slow_period:
            raise ValueError(
                f"ema_fast_period: must be below ema_slow_period ({self.ema_slow_period}),"
                f" got {self.ema_fast_period}"
            )
        for name in ("adx_trend", "adx_range", "atr_pct_high", "ema_slope_min_pct"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if not 0 < self.adx_range <= self.adx_trend <= 100:
            raise ValueError(
                f"adx_range: must satisfy 0 < adx_range <= adx_trend <= 100,"
                f" got adx_range={self.adx_range}, adx_trend={self.adx_trend}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RegimeThresholds:
        """Thresholds from field names (``adx_trend``) or the settings names
        (``REGIME_ADX_TREND``, see ``SETTINGS_ALIASES``); missing or None keys keep the
        default; an unknown key is an error (a typo must not silently mean the default)."""
        types = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = SETTINGS_ALIASES.get(key, key)
            if name not in types:
                raise ValueError(f"{key}: unknown regime threshold")
            if value is None:
                continue
            if isinstance(value, bool):
                raise ValueError(f"{key}: must be a number, got {value!r}")
            if types[name] in (int, "int"):
                if float(value) != int(float(value)):
                    raise ValueError(f"{key}: must be an integer, got {value!r}")
                kwargs[name] = int(float(value))
            else:
                kwargs[name] = float(value)
        return cls(**kwargs)

    def scaled_to_interval(self, interval_ms: int, reference_ms: int = HOUR_MS) -> RegimeThresholds:
        """These thresholds, taken as meant for ``reference_ms`` candles, for ``interval_ms``
        candles: ATR % and slope % scale with sqrt(interval / reference); ADX does not."""
        if interval_ms <= 0 or reference_ms <= 0:
            raise ValueError("intervals must be positive")
        factor = math.sqrt(interval_ms / reference_ms)
        return replace(
            self,
            atr_pct_high=self.atr_pct_high * factor,
            ema_slope_min_pct=self.ema_slope_min_pct * factor,
        )

    @property
    def warmup(self) -> int:
        """Candles needed before the first regime."""
        return 1 + max(
            ind.ema_lookback(self.ema_slow_period) + self.slope_lookback,
            ind.ema_lookback(self.ema_fast_period),
            ind.adx_lookback(self.adx_period),
            ind.atr_lookback(self.atr_period),
        )


@dataclass(frozen=True)
class RegimeReading:
    """The regime of the newest candle and the readings it was decided on (the readings are
    typed None-able for display; ``classify`` only returns a reading once all are known)."""

    regime: Regime
    adx: float | None
    atr_pct: float | None
    ema_slope_pct: float | None
    ema_fast: float | None
    ema_slow: float | None
    why: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``Evaluation.regime_detail``)."""
        data = asdict(self)
        data["regime"] = self.regime.value
        return data


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def classify(
    candles: Candles, thresholds: RegimeThresholds, *, previous: str | None = None
) -> RegimeReading | None:
    """The regime reading of the newest candle, or None while any indicator is warming up.
    ``previous``: the regime of the candle before (``StrategyState.previous_regime``), for the
    hysteresis rule; without it a trend needs ``adx_trend`` on every candle."""
    t = thresholds
    close = ind.last(candles.close)
    adx = ind.last(ind.adx(candles, t.adx_period))
    atr = ind.last(ind.atr(candles, t.atr_period))
    fast = ind.last(ind.ema(candles.close, t.ema_fast_period))
    slow_series = ind.ema(candles.close, t.ema_slow_period)
    slow = ind.last(slow_series)
    slow_before = ind.last(slow_series, t.slope_lookback)

    atr_pct = atr / close * 100 if atr is not None and close else None
    slope = (
        (slow / slow_before - 1) * 100 / t.slope_lookback
        if slow is not None and slow_before
        else None
    )

    if adx is None or atr_pct is None or slope is None or fast is None or slow is None:
        return None

    def reading(regime: Regime, why: str) -> RegimeReading:
        return RegimeReading(regime, adx, atr_pct, slope, fast, slow, why)

    if atr_pct > t.atr_pct_high:
        return reading(
            Regime.HIGH_VOLATILITY,
            f"ATR {_fmt(atr_pct)}% of price > {_fmt(t.atr_pct_high)}%",
        )

    slope_up = slope > t.ema_slope_min_pct
    slope_down = slope < -t.ema_slope_min_pct
    detail = (
        f"ADX {_fmt(adx)}, EMA{t.ema_slow_period} slope {slope:+.4g}%/candle"
        f" (min ±{_fmt(t.ema_slope_min_pct)}), EMA{t.ema_fast_period} {_fmt(fast)}"
        f" {'>' if fast > slow else '=' if fast == slow else '<'} EMA{t.ema_slow_period}"
        f" {_fmt(slow)}"
    )
    up = slope_up and fast > slow
    down = slope_down and fast < slow
    if adx >= t.adx_trend and up:
        return reading(Regime.TRENDING_UP, f"{detail}; ADX >= {_fmt(t.adx_trend)}: trend up")
    if adx >= t.adx_trend and down:
        return reading(Regime.TRENDING_DOWN, f"{detail}; ADX >= {_fmt(t.adx_trend)}: trend down")
    if adx >= t.adx_range and previous == Regime.TRENDING_UP and up:
        return reading(Regime.TRENDING_UP, f"{detail}; ADX >= {_fmt(t.adx_range)}: up-trend holds")
    if adx >= t.adx_range and previous == Regime.TRENDING_DOWN and down:
        return reading(
            Regime.TRENDING_DOWN, f"{detail}; ADX >= {_fmt(t.adx_range)}: down-trend holds"
        )

    if adx < t.adx_range:
        because = f"ADX < {_fmt(t.adx_range)}: no trend strength"
    elif not (slope_up or slope_down):
        because = "slow EMA flat: no direction"
    elif not (up or down):
        because = "slope and EMA order disagree"
    else:
        because = f"ADX between {_fmt(t.adx_range)} and {_fmt(t.adx_trend)}, no trend to hold"
    return reading(Regime.RANGING, f"{detail}; {because}")
