"""range_reversion on hand-built candles (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import talib

from signals.regime import RegimeThresholds, classify
from signals.strategies import get_strategy
from signals.strategies.base import Action, Candles, Decision, StrategyState, to_price
from tests.signals.support import flat, from_closes, make_candles, mirrored, sideways_closes

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
STRATEGY = get_strategy("range_reversion")


def regime_of(candles: Candles) -> str | None:
    reading = classify(candles, RegimeThresholds())
    return reading.regime.value if reading else None


def evaluate(
    candles: Candles,
    *,
    regime: str | None = "auto",
    armed: str | None = None,
    params: dict | None = None,
) -> list[Decision]:
    state = StrategyState(
        regime=regime_of(candles) if regime == "auto" else regime,
        armed_side=armed,
        extra={"interval_ms": 60_000},
    )
    return STRATEGY().evaluate(candles=candles, state=state, params=params or {}, now=NOW)


def drop_closes() -> list[float]:
    """A sideways market, then two candles falling through the lower band."""
    return [*sideways_closes(80), 99.0, 98.0]


def spike_closes() -> list[float]:
    return mirrored(drop_closes())


def test_close_below_the_lower_band_with_oversold_rsi_in_a_range_arms_a_buy():
    candles = from_closes(drop_closes())
    assert regime_of(candles) == "ranging"
    close = candles.close
    _upper, middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
    rsi = talib.RSI(close, timeperiod=14)
    assert close[-1] < lower[-1]
    assert rsi[-1] < 30
    [arm] = evaluate(candles)
    assert arm.action == Action.ARM
    assert arm.side == "BUY"
    assert arm.entry_type == "MARKET"
    atr = float(talib.ATR(candles.high, candles.low, close, timeperiod=14)[-1])
    assert arm.reference_price == to_price(float(close[-1]))
    assert arm.stop_price == to_price(float(close[-1]) - 1.0 * atr)
    assert arm.take_profit_price == to_price(float(middle[-1]))
    assert arm.stop_price < arm.reference_price < arm.take_profit_price
    assert arm.expires_at == NOW + timedelta(minutes=3)
    assert "ranging" in arm.reason


def test_close_above_the_upper_band_with_overbought_rsi_in_a_range_arms_a_sell():
    candles = from_closes(spike_closes())
    assert regime_of(candles) == "ranging"
    [arm] = evaluate(candles, params={"atr_stop_mult": 0.5})
    assert arm.side == "SELL"
    atr = float(talib.ATR(candles.high, candles.low, candles.close, timeperiod=14)[-1])
    middle = talib.BBANDS(candles.close, timeperiod=20)[1][-1]
    assert arm.reference_price == to_price(float(candles.close[-1]))
    assert arm.stop_price == to_price(float(candles.close[-1]) + 0.5 * atr)
    assert arm.take_profit_price == to_price(float(middle))
    assert arm.stop_price > arm.reference_price > arm.take_profit_price


def test_rsi_that_does_not_confirm_the_band_break_does_not_arm():
    candles = from_closes(drop_closes())
    rsi = float(talib.RSI(candles.close, timeperiod=14)[-1])
    assert 20 < rsi < 30
    assert evaluate(candles, params={"rsi_oversold": 20}) == []


def test_a_close_inside_wider_bands_does_not_arm():
    candles = from_closes(drop_closes())
    assert evaluate(candles, params={"bb_std": 3.5}) == []


def test_a_band_break_outside_the_ranging_regime_does_not_arm():
    candles = from_closes(drop_closes())
    for regime in ("trending_up", "trending_down", "high_volatility", None):
        assert evaluate(candles, regime=regime) == [], regime


def test_armed_buy_does_not_arm_buy_again():
    assert evaluate(from_closes(drop_closes()), armed="BUY") == []


def test_armed_sell_is_replaced_by_a_buy_setup():
    decisions = evaluate(from_closes(drop_closes()), armed="SELL")
    assert [(d.action, d.side) for d in decisions] == [(Action.DISARM, ""), (Action.ARM, "BUY")]


def test_armed_side_is_disarmed_when_the_regime_leaves_the_range():
    candles = from_closes(sideways_closes(80))
    for regime in ("trending_up", "trending_down", "high_volatility"):
        decisions = evaluate(candles, regime=regime, armed="SELL")
        assert [d.action for d in decisions] == [Action.DISARM]
        assert regime in decisions[0].reason
        assert "ranging" in decisions[0].reason


def test_armed_side_stays_armed_in_the_range_or_with_an_unknown_regime():
    candles = from_closes(sideways_closes(80))
    assert evaluate(candles, regime="ranging", armed="BUY") == []
    assert evaluate(candles, regime=None, armed="BUY") == []


def test_a_quiet_sideways_market_does_not_arm():
    closes = sideways_closes(120)
    for n in range(STRATEGY.warmup_for({}), len(closes) + 1):
        assert evaluate(from_closes(closes[:n]), regime="ranging") == []


@pytest.mark.parametrize("price", [100.0, 46123.7, 0.1234567])
def test_a_flat_market_never_arms(price):
    # TA-Lib's bands on constant prices are off the price by float noise and its RSI is 0
    # there: the strategy must not read that as a band break.
    candles = flat(price, 120)
    for regime in ("ranging", "trending_up", None):
        assert evaluate(candles, regime=regime) == []


@pytest.mark.parametrize("price", [100.0, 46123.7, 0.1234567, 9876543.21])
def test_constant_closes_with_wicks_never_arm(price):
    # ATR > 0 from the wicks, but the bands have collapsed onto the close; at 9876543.21
    # TA-Lib's lower band and mean sit ~4e-9 above the close, enough to look like a break.
    n = 120
    candles = make_candles([price] * n, [price * 1.001] * n, [price * 0.999] * n, [price] * n)
    assert evaluate(candles, regime="ranging") == []


def test_fewer_candles_than_the_warmup_give_no_decision():
    closes = drop_closes()
    warmup = STRATEGY.warmup_for({})
    assert warmup == 20  # BB20 needs 20 candles; RSI14 and ATR14 15
    for n in range(1, warmup):
        candles = from_closes(closes[-n:])
        assert evaluate(candles, regime="ranging") == []
        assert evaluate(candles, regime="trending_up", armed="BUY") == []
    assert STRATEGY.warmup_for({"bb_period": 50, "rsi_period": 60}) == 61


def test_the_same_candles_give_the_same_decisions_every_time():
    first = evaluate(from_closes(drop_closes()))
    assert first
    for _ in range(3):
        assert evaluate(from_closes(drop_closes())) == first


def test_prices_are_decimals():
    [arm] = evaluate(from_closes(drop_closes()))
    for value in (arm.reference_price, arm.stop_price, arm.take_profit_price):
        assert isinstance(value, Decimal)
