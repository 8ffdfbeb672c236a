"""``trend_breakout``: join a trend when price breaks out of its Donchian channel.

ARM BUY when, on the candle that just closed:

* the chain's regime (``state.regime``) is ``trending_up``,
* EMA(``ema_fast``) > EMA(``ema_slow``) and ADX(``adx_period``) >= ``adx_min`` (the strategy's
  own trend filter, with its own params, on top of the platform-wide regime), and
* the close is above the highest high of the ``donchian_period`` candles *before* it (the
  channel excludes the current candle, which could not break its own high).

ARM SELL is the mirror: ``trending_down``, fast EMA under slow, ADX >= ``adx_min``, close
below the previous ``donchian_period``-candle low. The entry is MARKET at the close
(``reference_price``); stop ``atr_stop_mult`` x ATR against the trade, take-profit
``atr_tp_mult`` x ATR in favour; the ARM expires ``expiry_candles`` intervals after ``now``.
The interval is ``state.extra["interval_ms"]`` when the chain passes it (it does), else the
smallest spacing of the candles' open times.

DISARM when armed (``state.armed_side``) and the regime is known and no longer the trend of
the armed side; the reason names the regime. No second ARM on the side already armed. Without
a regime (``state.regime`` None: the chain could not classify yet) the strategy never arms.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from signals import indicators as ind
from signals.regime import Regime
from signals.strategies.base import (
    Candles,
    Decision,
    Strategy,
    StrategyState,
    candle_interval,
    protective_prices_ok,
    to_price,
)
from signals.strategies.registry import register

#: The regime a side trades with.
TREND_OF = {"BUY": Regime.TRENDING_UP, "SELL": Regime.TRENDING_DOWN}

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "trend_breakout params",
    "description": "Every field optional; {} means all defaults.",
    "properties": {
        "ema_fast": {
            "type": "integer",
            "minimum": 2,
            "maximum": 200,
            "default": 20,
            "description": "Fast EMA period (must be below ema_slow). Default 20.",
        },
        "ema_slow": {
            "type": "integer",
            "minimum": 3,
            "maximum": 400,
            "default": 50,
            "description": "Slow EMA period. Default 50.",
        },
        "adx_period": {
            "type": "integer",
            "minimum": 2,
            "maximum": 100,
            "default": 14,
            "description": "ADX period (Wilder). Default 14.",
        },
        "adx_min": {
            "type": "number",
            "minimum": 10,
            "maximum": 60,
            "default": 25,
            "description": "Least ADX to trade a breakout (trend strength). Default 25.",
        },
        "donchian_period": {
            "type": "integer",
            "minimum": 2,
            "maximum": 200,
            "default": 20,
            "description": "Candles of the channel the close must break (current excluded)."
            " Default 20.",
        },
        "atr_period": {
            "type": "integer",
            "minimum": 2,
            "maximum": 100,
            "default": 14,
            "description": "ATR period for stop and take-profit distances. Default 14.",
        },
        "atr_stop_mult": {
            "type": "number",
            "minimum": 0.25,
            "maximum": 10,
            "default": 2.0,
            "description": "Stop distance in ATRs from the close. Default 2.",
        },
        "atr_tp_mult": {
            "type": "number",
            "minimum": 0.25,
            "maximum": 20,
            "default": 3.0,
            "description": "Take-profit distance in ATRs from the close. Default 3.",
        },
        "expiry_candles": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": 3,
            "description": "Intervals after which an unfilled ARM lapses. Default 3.",
        },
    },
    "additionalProperties": False,
}


def _warmup(p: Mapping[str, Any]) -> int:
    return 1 + max(
        ind.ema_lookback(int(p["ema_slow"])),
        ind.ema_lookback(int(p["ema_fast"])),
        # ADX's lookback is already ~2 x period; one more period lets its seed fade.
        ind.adx_lookback(int(p["adx_period"])) + int(p["adx_period"]),
        ind.atr_lookback(int(p["atr_period"])),
        ind.donchian_lookback(int(p["donchian_period"]), exclude_current=True),
    )


def _g(value: float) -> str:
    return f"{value:.6g}"


@register
class TrendBreakoutStrategy(Strategy):
    key = "trend_breakout"
    params_schema = PARAMS_SCHEMA
    warmup = _warmup({name: spec["default"] for name, spec in PARAMS_SCHEMA["properties"].items()})

    @classmethod
    def warmup_for(cls, params: Mapping[str, Any]) -> int:
        return _warmup(cls.resolved_params(params))

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> list[str]:
        p = cls.resolved_params(params)
        if p["ema_fast"] >= p["ema_slow"]:
            return [f"ema_fast: must be below ema_slow ({p['ema_slow']}), got {p['ema_fast']}"]
        return []

    def evaluate(
        self,
        *,
        candles: Candles,
        state: StrategyState,
        params: Mapping[str, Any],
        now: datetime,
    ) -> list[Decision]:
        p = self.resolved_params(params)
        if len(candles) < _warmup(p):
            return []
        decisions: list[Decision] = []
        armed = state.armed_side if state.armed_side in TREND_OF else None
        if armed is not None and state.regime is not None and state.regime != TREND_OF[armed]:
            decisions.append(
                Decision.disarm(
                    f"regime {state.regime} left {TREND_OF[armed].value} (armed {armed})"
                )
            )
            armed = None

        fast_n, slow_n, channel_n = (
            int(p["ema_fast"]),
            int(p["ema_slow"]),
            int(p["donchian_period"]),
        )
        close = ind.last(candles.close)
        fast = ind.last(ind.ema(candles.close, fast_n))
        slow = ind.last(ind.ema(candles.close, slow_n))
        adx = ind.last(ind.adx(candles, int(p["adx_period"])))
        atr = ind.last(ind.atr(candles, int(p["atr_period"])))
        channel = ind.donchian(candles, channel_n, exclude_current=True)
        high = ind.last(channel.upper)
        low = ind.last(channel.lower)
        if close is None or fast is None or slow is None or high is None or low is None:
            return decisions  # warming up
        if adx is None or atr is None or adx < float(p["adx_min"]) or atr <= 0:
            return decisions  # warming up, no trend strength, or a market that does not move

        if close > high and fast > slow:
            side, why = "BUY", f"close {_g(close)} > {channel_n}-candle high {_g(high)}"
            ema_order = f"EMA{fast_n} {_g(fast)} > EMA{slow_n} {_g(slow)}"
        elif close < low and fast < slow:
            side, why = "SELL", f"close {_g(close)} < {channel_n}-candle low {_g(low)}"
            ema_order = f"EMA{fast_n} {_g(fast)} < EMA{slow_n} {_g(slow)}"
        else:
            return decisions
        if state.regime != TREND_OF[side] or armed == side:
            return decisions

        sign = 1 if side == "BUY" else -1
        reference = to_price(close)
        stop = to_price(close - sign * float(p["atr_stop_mult"]) * atr)
        take_profit = to_price(close + sign * float(p["atr_tp_mult"]) * atr)
        if not protective_prices_ok(side, reference=reference, stop=stop, take_profit=take_profit):
            return decisions
        decisions.append(
            Decision.arm(
                side=side,
                entry_type="MARKET",
                reference_price=reference,
                stop_price=stop,
                take_profit_price=take_profit,
                expires_at=now + int(p["expiry_candles"]) * candle_interval(candles, state.extra),
                reason=(
                    f"{side} breakout: {why}; {ema_order}; ADX {_g(adx)} >= {_g(p['adx_min'])};"
                    f" regime {state.regime}; ATR {_g(atr)}"
                ),
            )
        )
        return decisions
