"""signals.regime: classification of hand-built markets, thresholds from settings."""

from __future__ import annotations

import json
import math

import pytest

from signals.regime import Regime, RegimeThresholds, classify
from tests.signals.support import (
    breakout_up_closes,
    btc_candles,
    from_closes,
    mirrored,
    sideways_closes,
    uptrend_closes,
)

DEFAULTS = RegimeThresholds()


def test_steady_uptrend_is_trending_up():
    reading = classify(from_closes(uptrend_closes(120)), DEFAULTS)
    assert reading is not None
    assert reading.regime == Regime.TRENDING_UP
    assert reading.adx is not None
    assert reading.adx >= DEFAULTS.adx_trend
    assert reading.ema_slope_pct is not None
    assert reading.ema_slope_pct > 0.1
    assert reading.ema_fast is not None
    assert reading.ema_slow is not None
    assert reading.ema_fast > reading.ema_slow
    assert "trend up" in reading.why


def test_steady_downtrend_is_trending_down():
    reading = classify(from_closes(mirrored(uptrend_closes(120))), DEFAULTS)
    assert reading is not None
    assert reading.regime == Regime.TRENDING_DOWN
    assert reading.ema_slope_pct is not None
    assert reading.ema_slope_pct < -0.1
    assert "trend down" in reading.why


def test_sideways_oscillation_is_ranging_for_lack_of_adx():
    reading = classify(from_closes(sideways_closes(120)), DEFAULTS)
    assert reading is not None
    assert reading.regime == Regime.RANGING
    assert reading.adx is not None
    assert reading.adx < DEFAULTS.adx_range
    assert "no trend strength" in reading.why


def test_big_swings_are_high_volatility():
    swings = [100 + (3 if k % 2 else -3) for k in range(80)]
    reading = classify(from_closes(swings), DEFAULTS)
    assert reading is not None
    assert reading.regime == Regime.HIGH_VOLATILITY
    assert reading.atr_pct is not None
    assert reading.atr_pct > DEFAULTS.atr_pct_high
    assert "ATR" in reading.why


def test_high_volatility_wins_over_a_trend():
    candles = from_closes(uptrend_closes(120))
    trending = classify(candles, DEFAULTS)
    assert trending is not None
    assert trending.regime == Regime.TRENDING_UP
    assert trending.atr_pct is not None
    wild = RegimeThresholds(atr_pct_high=trending.atr_pct / 2)
    reading = classify(candles, wild)
    assert reading is not None
    assert reading.regime == Regime.HIGH_VOLATILITY


def test_a_strong_adx_without_slope_is_ranging():
    candles = from_closes(uptrend_closes(120))
    reading = classify(candles, RegimeThresholds(ema_slope_min_pct=5.0))
    assert reading is not None
    assert reading.regime == Regime.RANGING
    assert "flat" in reading.why


def test_regime_is_none_before_the_warmup_and_known_from_it():
    closes = uptrend_closes(120)
    warmup = DEFAULTS.warmup
    assert warmup == 55  # EMA50 lookback 49 + slope over 5 candles + 1
    assert classify(from_closes(closes[: warmup - 1]), DEFAULTS) is None
    assert classify(from_closes(closes[:warmup]), DEFAULTS) is not None


def test_an_established_trend_holds_between_adx_range_and_adx_trend():
    candles = from_closes(breakout_up_closes())
    plain = classify(candles, DEFAULTS)
    assert plain is not None
    assert plain.adx is not None
    # Put the current ADX inside the hysteresis band.
    band = RegimeThresholds(adx_trend=plain.adx + 1, adx_range=plain.adx - 1)
    fresh = classify(candles, band)
    assert fresh is not None
    assert fresh.regime == Regime.RANGING
    assert "no trend to hold" in fresh.why
    held = classify(candles, band, previous=Regime.TRENDING_UP)
    assert held is not None
    assert held.regime == Regime.TRENDING_UP
    assert "holds" in held.why
    # a down-trend cannot hold on a market going up
    other = classify(candles, band, previous="trending_down")
    assert other is not None
    assert other.regime == Regime.RANGING


def test_regime_on_real_btc_candles_gives_every_reading():
    candles = btc_candles()
    reading = classify(candles, DEFAULTS.scaled_to_interval(60_000))
    assert reading is not None
    assert reading.regime in set(Regime)
    for value in (reading.adx, reading.atr_pct, reading.ema_slope_pct):
        assert value is not None
        assert math.isfinite(value)


def test_reading_as_dict_is_json_ready():
    reading = classify(from_closes(uptrend_closes(120)), DEFAULTS)
    assert reading is not None
    data = json.loads(json.dumps(reading.as_dict()))
    assert data["regime"] == "trending_up"
    assert set(data) >= {"regime", "adx", "atr_pct", "ema_slope_pct", "why"}


def test_regime_values_are_lower_case_names():
    assert [r.value for r in Regime] == [
        "trending_up",
        "trending_down",
        "ranging",
        "high_volatility",
    ]


def test_thresholds_from_settings_names_and_field_names():
    thresholds = RegimeThresholds.from_mapping(
        {
            "REGIME_ADX_TREND": 30,
            "REGIME_ADX_RANGE": "18",
            "REGIME_ATR_PCT_HIGH": 3.0,
            "ema_slope_min_pct": 0.05,
            "adx_period": 10.0,
        }
    )
    assert thresholds == RegimeThresholds(
        adx_trend=30.0, adx_range=18.0, atr_pct_high=3.0, ema_slope_min_pct=0.05, adx_period=10
    )
    assert isinstance(thresholds.adx_period, int)


def test_thresholds_from_an_empty_mapping_or_nones_are_the_defaults():
    assert RegimeThresholds.from_mapping({}) == DEFAULTS
    assert RegimeThresholds.from_mapping({"REGIME_ADX_TREND": None}) == DEFAULTS


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"REGIME_ADX_TRND": 25}, "REGIME_ADX_TRND"),
        ({"adx_period": 14.5}, "adx_period"),
        ({"adx_period": True}, "adx_period"),
        ({"adx_range": 30, "adx_trend": 25}, "adx_range"),
        ({"atr_pct_high": -1}, "atr_pct_high"),
        ({"ema_fast_period": 60}, "ema_fast_period"),
        ({"slope_lookback": 0}, "slope_lookback"),
        ({"atr_period": 1}, "atr_period"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_field(values, named):
    with pytest.raises(ValueError, match=named):
        RegimeThresholds.from_mapping(values)


def test_thresholds_scale_with_the_square_root_of_the_interval():
    minute = DEFAULTS.scaled_to_interval(60_000)
    assert minute.atr_pct_high == pytest.approx(DEFAULTS.atr_pct_high / math.sqrt(60))
    assert minute.ema_slope_min_pct == pytest.approx(DEFAULTS.ema_slope_min_pct / math.sqrt(60))
    assert minute.adx_trend == DEFAULTS.adx_trend
    assert DEFAULTS.scaled_to_interval(3_600_000) == DEFAULTS
