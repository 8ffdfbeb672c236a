"""``range_reversion``: in a ranging market, fade a close beyond the Bollinger Bands.

ARM BUY when, on the candle that just closed, the chain's regime (``state.regime``) is
``ranging``, the close is below the lower Bollinger Band (``bb_period``, ``bb_std``) and
RSI(``rsi_period``) < ``rsi_oversold``; ARM SELL on a close above the upper band with RSI >
``rsi_overbought``. The entry is MARKET at the close (``reference_price``); the stop is tight,
``atr_stop_mult`` x ATR beyond the entry; the take-profit is the middle band (the mean the price
is expected to return to). The ARM expires ``expiry_candles`` intervals after ``now`` (the
interval as in ``trend_breakout``: ``state.extra["interval_ms"]``, else the candle spacing).

DISARM when armed and the regime is known and no longer ``ranging`` (a breakout is not a
range to fade); the reason names the regime. No second ARM on the side already armed; a setup
on the other side first DISARMs the armed one. Without a regime (None) it never arms. Bands
that have collapsed (a market that does not move: their width is only float noise) and a zero
ATR never give a decision.
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

#: Bands narrower than this fraction of the middle band are float noise, not a range.
MIN_BAND_WIDTH = 1e-9

PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "range_reversion params",
    "description": "Every field optional; {} means all defaults.",
    "properties": {
        "bb_period": {
            "type": "integer",
            "minimum": 5,
            "maximum": 200,
            "default": 20,
            "description": "Bollinger Bands period (SMA and deviation window). Default 20.",
        },
        "bb_std": {
            "type": "number",
            "minimum": 1,
            "maximum": 4,
            "default": 2.0,
            "description": "Band distance in standard deviations. Default 2.",
        },
        "rsi_period": {
            "type": "integer",
            "minimum": 2,
            "maximum": 100,
            "default": 14,
            "description": "RSI period (Wilder). Default 14.",
        },
        "rsi_oversold": {
            "type": "number",
            "minimum": 5,
            "maximum": 45,
            "default": 30,
            "description": "RSI below which a close under the lower band is bought. Default 30.",
        },
        "rsi_overbought": {
            "type": "number",
            "minimum": 55,
            "maximum": 95,
            "default": 70,
            "description": "RSI above which a close over the upper band is sold. Default 70.",
        },
        "atr_period": {
            "type": "integer",
            "minimum": 2,
            "maximum": 100,
            "default": 14,
            "description": "ATR period for the stop distance. Default 14.",
        },
        "atr_stop_mult": {
            "type": "number",
            "minimum": 0.25,
            "maximum": 5,
            "default": 1.0,
            "description": "Stop distance in ATRs beyond the entry. Default 1.",
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
        ind.bollinger_lookback(int(p["bb_period"])),
        ind.rsi_lookback(int(p["rsi_period"])),
        ind.atr_lookback(int(p["atr_period"])),
    )


def _g(value: float) -> str:
    return f"{value:.6g}"


@register
class RangeReversionStrategy(Strategy):
    key = "range_reversion"
    params_schema = PARAMS_SCHEMA
    warmup = _warmup({name: spec["default"] for name, spec in PARAMS_SCHEMA["properties"].items()})

    @classmethod
    def warmup_for(cls, params: Mapping[str, Any]) -> int:
        return _warmup(cls.resolved_params(params))

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
        armed = state.armed_side if state.armed_side in ("BUY", "SELL") else None
        if armed is not None and state.regime is not None and state.regime != Regime.RANGING:
            decisions.append(Decision.disarm(f"regime {state.regime} left ranging (armed {armed})"))
            armed = None

        bands = ind.bollinger(candles.close, int(p["bb_period"]), float(p["bb_std"]))
        close = ind.last(candles.close)
        upper, middle, lower = ind.last(bands.upper), ind.last(bands.middle), ind.last(bands.lower)
        rsi = ind.last(ind.rsi(candles.close, int(p["rsi_period"])))
        atr = ind.last(ind.atr(candles, int(p["atr_period"])))
        if close is None or upper is None or middle is None or lower is None or rsi is None:
            return decisions  # warming up
        if atr is None or atr <= 0 or upper - lower <= MIN_BAND_WIDTH * abs(middle):
            return decisions  # warming up, or a market that does not move

        if close < lower and rsi < float(p["rsi_oversold"]):
            side = "BUY"
            why = f"close {_g(close)} < lower band {_g(lower)}, RSI {_g(rsi)} < {p['rsi_oversold']}"
        elif close > upper and rsi > float(p["rsi_overbought"]):
            side = "SELL"
            why = (
                f"close {_g(close)} > upper band {_g(upper)}, RSI {_g(rsi)} > {p['rsi_overbought']}"
            )
        else:
            return decisions
        if state.regime != Regime.RANGING or armed == side:
            return decisions

        sign = 1 if side == "BUY" else -1
        reference = to_price(close)
        stop = to_price(close - sign * float(p["atr_stop_mult"]) * atr)
        take_profit = to_price(middle)
        if not protective_prices_ok(side, reference=reference, stop=stop, take_profit=take_profit):
            return decisions
        if armed is not None:
            decisions.append(Decision.disarm(f"{side} setup replaces the {armed} arm"))
        decisions.append(
            Decision.arm(
                side=side,
                entry_type="MARKET",
                reference_price=reference,
                stop_price=stop,
                take_profit_price=take_profit,
                expires_at=now + int(p["expiry_candles"]) * candle_interval(candles, state.extra),
                reason=(
                    f"{side} range fade: {why}; TP middle band {_g(middle)}; regime ranging;"
                    f" ATR {_g(atr)}"
                ),
            )
        )
        return decisions
