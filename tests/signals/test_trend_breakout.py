"""trend_breakout on hand-built candles (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
import talib

from signals import indicators as ind
from signals.regime import RegimeThresholds, classify
from signals.strategies import get_strategy
from signals.strategies.base import Action, Candles, Decision, StrategyState, to_price
from tests.signals.support import (
    breakout_up_closes,
    flat,
    from_closes,
    mirrored,
    random_walk_closes,
)

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
STRATEGY = get_strategy("trend_breakout")


def regime_of(candles: Candles) -> str | None:
    reading = classify(candles, RegimeThresholds())
    return reading.regime.value if reading else None


def evaluate(
    candles: Candles,
    *,
    regime: str | None = "auto",
    armed: str | None = None,
    params: dict | None = None,
    extra: dict | None = None,
) -> list[Decision]:
    state = StrategyState(
        regime=regime_of(candles) if regime == "auto" else regime,
        armed_side=armed,
        extra={"interval_ms": 60_000} if extra is None else extra,
    )
    return STRATEGY().evaluate(candles=candles, state=state, params=params or {}, now=NOW)


def test_upside_breakout_in_an_uptrend_arms_a_market_buy_with_atr_stop_and_tp():
    candles = from_closes(breakout_up_closes())
    assert regime_of(candles) == "trending_up"
    decisions = evaluate(candles)
    assert len(decisions) == 1
    arm = decisions[0]
    assert arm.action == Action.ARM
    assert arm.side == "BUY"
    assert arm.entry_type == "MARKET"
    assert arm.entry_price is None
    close = float(candles.close[-1])
    atr = float(talib.ATR(candles.high, candles.low, candles.close, timeperiod=14)[-1])
    assert arm.reference_price == to_price(close)
    assert arm.stop_price == to_price(close - 2.0 * atr)
    assert arm.take_profit_price == to_price(close + 3.0 * atr)
    assert arm.stop_price < arm.reference_price < arm.take_profit_price
    assert arm.expires_at == NOW + timedelta(minutes=3)
    assert isinstance(arm.stop_price, Decimal)
    assert "breakout" in arm.reason
    assert "trending_up" in arm.reason


def test_downside_breakout_in_a_downtrend_arms_a_market_sell():
    candles = from_closes(mirrored(breakout_up_closes()))
    assert regime_of(candles) == "trending_down"
    decisions = evaluate(candles, params={"atr_stop_mult": 1.5, "atr_tp_mult": 4})
    assert [d.side for d in decisions] == ["SELL"]
    arm = decisions[0]
    close = float(candles.close[-1])
    atr = float(talib.ATR(candles.high, candles.low, candles.close, timeperiod=14)[-1])
    assert arm.reference_price == to_price(close)
    assert arm.stop_price == to_price(close + 1.5 * atr)
    assert arm.take_profit_price == to_price(close - 4 * atr)
    assert arm.stop_price > arm.reference_price > arm.take_profit_price


def test_the_channel_excludes_the_breakout_candle_itself():
    candles = from_closes(breakout_up_closes())
    # The breakout candle's own high is above its close: a channel including it could never
    # be broken by the close.
    assert candles.high[-1] > candles.close[-1]
    channel = ind.donchian(candles, 20, exclude_current=True)
    assert candles.close[-1] > channel.upper[-1]
    assert [d.side for d in evaluate(candles)] == ["BUY"]


def test_a_pullback_inside_the_channel_does_not_arm():
    closes = breakout_up_closes()[:-1]  # ends on the pull-back
    candles = from_closes(closes)
    assert regime_of(candles) == "trending_up"
    assert evaluate(candles) == []


def test_a_breakout_against_the_chain_regime_does_not_arm():
    candles = from_closes(breakout_up_closes())
    for regime in ("ranging", "high_volatility", "trending_down", None):
        assert evaluate(candles, regime=regime) == [], regime


def test_armed_buy_does_not_arm_buy_again():
    candles = from_closes(breakout_up_closes())
    assert evaluate(candles, armed="BUY") == []


def test_armed_buy_is_disarmed_when_the_regime_leaves_the_uptrend():
    candles = from_closes(breakout_up_closes()[:-1])
    decisions = evaluate(candles, regime="ranging", armed="BUY")
    assert [d.action for d in decisions] == [Action.DISARM]
    assert "ranging" in decisions[0].reason
    assert "trending_up" in decisions[0].reason


def test_armed_sell_is_disarmed_then_buy_armed_on_an_uptrend_breakout():
    candles = from_closes(breakout_up_closes())
    decisions = evaluate(candles, armed="SELL")
    assert [(d.action, d.side) for d in decisions] == [(Action.DISARM, ""), (Action.ARM, "BUY")]
    assert "trending_up" in decisions[0].reason


def test_armed_buy_stays_armed_while_the_uptrend_lasts_or_the_regime_is_unknown():
    candles = from_closes(breakout_up_closes()[:-1])
    assert evaluate(candles, regime="trending_up", armed="BUY") == []
    assert evaluate(candles, regime=None, armed="BUY") == []


@pytest.mark.parametrize("price", [100.0, 46123.7, 0.1234567])
def test_a_flat_market_never_arms(price):
    candles = flat(price, 120)
    for regime in ("trending_up", "trending_down", "ranging", None):
        assert evaluate(candles, regime=regime) == []


def test_a_random_walk_arms_only_where_adx_reaches_the_threshold():
    closes = random_walk_closes(200, seed=11)
    low_adx_breakouts = 0
    for n in range(STRATEGY.warmup_for({}), len(closes) + 1):
        candles = from_closes(closes[:n], wick=0.1)
        adx = ind.last(ind.adx(candles, 14))
        channel = ind.donchian(candles, 20, exclude_current=True)
        breakout = candles.close[-1] > channel.upper[-1] or candles.close[-1] < channel.lower[-1]
        # the most permissive chain: whatever regime suits the breakout
        decisions = evaluate(candles, regime="trending_up") + evaluate(
            candles, regime="trending_down"
        )
        assert adx is not None
        if adx < 25:
            low_adx_breakouts += breakout
            assert decisions == [], n
        # and with the regime the chain would really classify: only trends arm
        if evaluate(candles):
            assert regime_of(candles) in ("trending_up", "trending_down")
    assert low_adx_breakouts > 0  # the walk does break out with a weak ADX


def test_a_breakout_arms_only_with_adx_at_or_above_adx_min():
    closes = random_walk_closes(200, seed=11)
    checked = 0
    for n in range(STRATEGY.warmup_for({}), len(closes) + 1):
        candles = from_closes(closes[:n], wick=0.1)
        adx = ind.last(ind.adx(candles, 14))
        assert adx is not None
        if not 11 <= adx <= 59:
            continue
        decisions = evaluate(candles, regime="trending_up", params={"adx_min": adx - 1})
        if not decisions:  # not an up breakout with the EMAs in order
            continue
        checked += 1
        assert evaluate(candles, regime="trending_up", params={"adx_min": adx + 1}) == []
    assert checked > 0


def test_fewer_candles_than_the_warmup_give_no_decision():
    closes = breakout_up_closes()
    warmup = STRATEGY.warmup_for({})
    assert warmup == 50  # EMA50 needs 50 candles; ADX14 needs 27 + 14 of settling
    for n in range(1, warmup):
        candles = from_closes(closes[-n:])
        # even with a regime that would disarm and one that would arm
        assert evaluate(candles, regime="trending_up") == []
        assert evaluate(candles, regime="ranging", armed="BUY") == []
    assert [d.side for d in evaluate(from_closes(closes[-warmup:]), regime="trending_up")] == [
        "BUY"
    ]


def test_longer_lookbacks_need_a_longer_warmup():
    assert STRATEGY.warmup_for({"ema_slow": 200}) == 200
    # ADX30: lookback 59, + 30 of settling, + 1 for the value itself
    assert STRATEGY.warmup_for({"adx_period": 30, "ema_slow": 60}) == 90
    assert STRATEGY.warmup_for({"donchian_period": 80}) == 81
    assert STRATEGY.warmup == STRATEGY.warmup_for({})


def test_the_same_candles_give_the_same_decisions_every_time():
    closes = breakout_up_closes()
    first = evaluate(from_closes(closes))
    for _ in range(3):
        assert evaluate(from_closes(list(closes))) == first
    assert first


def test_expiry_uses_the_candle_spacing_without_interval_ms():
    closes = breakout_up_closes()
    candles = from_closes(closes, interval_ms=300_000)
    [arm] = evaluate(candles, extra={}, params={"expiry_candles": 4})
    assert arm.expires_at == NOW + timedelta(minutes=20)
    [arm] = evaluate(candles, extra={"interval_ms": 3_600_000})
    assert arm.expires_at == NOW + timedelta(hours=3)


def test_decision_prices_are_decimals_on_the_right_sides_for_every_breakout_on_a_walk():
    closes = random_walk_closes(300, seed=3)
    seen = 0
    for n in range(STRATEGY.warmup_for({}), len(closes) + 1):
        candles = from_closes(closes[:n], wick=0.1)
        for decision in evaluate(candles):
            seen += 1
            ref, stop, tp = (
                decision.reference_price,
                decision.stop_price,
                decision.take_profit_price,
            )
            assert ref is not None
            assert stop is not None
            assert tp is not None
            assert all(isinstance(v, Decimal) for v in (ref, stop, tp))
            if decision.side == "BUY":
                assert stop < ref < tp
            else:
                assert stop > ref > tp
    assert seen > 0
    assert np.isfinite(closes).all()
