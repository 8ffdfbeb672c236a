"""``bench_every_candle``: the strategy of ``bench/chain.py``, registered when this module is
imported (``STRATEGY_MODULES=bench.chain_strategy`` in a worker's environment).

On every closed candle, armed or not, it ARMs a MARKET BUY at the close: stop-loss
``stop_pct`` (0.3) % below, take-profit ``take_profit_pct`` (0.1) % above (tight, so that most
positions close again within a candle or two and the paper accounts' open orders stay few),
valid for ``expiry_candles`` (3) intervals of market time, on the candles opening at or after
``arm_from_ms`` (epoch ms; the bench moves it to its first measured candle, so that the warm-up
candles leave no work behind). Unlike
``tests.signals.scripted``'s ``test_cadence`` it never waits for an earlier ARM to expire, so
every candle of every pair gives one latency sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from signals.strategies.base import (
    Candles,
    Decision,
    Strategy,
    StrategyState,
    candle_interval,
    to_price,
)
from signals.strategies.registry import register


@register
class EveryCandleStrategy(Strategy):
    key = "bench_every_candle"
    warmup = 2
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "stop_pct": {"type": "number", "exclusiveMinimum": 0, "maximum": 50, "default": 0.3},
            "take_profit_pct": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 50,
                "default": 0.1,
            },
            "expiry_candles": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "arm_from_ms": {"type": "integer", "minimum": 0, "default": 0},
        },
        "additionalProperties": False,
    }

    def evaluate(
        self, *, candles: Candles, state: StrategyState, params: Mapping[str, Any], now: datetime
    ) -> list[Decision]:
        if int(candles.open_time_ms[-1]) < int(params.get("arm_from_ms", 0)):
            return []
        interval = candle_interval(candles, state.extra)
        close = to_price(float(candles.close[-1]))
        stop = Decimal(1) - Decimal(str(params.get("stop_pct", 0.3))) / 100
        take = Decimal(1) + Decimal(str(params.get("take_profit_pct", 0.1))) / 100
        number = int(candles.open_time_ms[-1]) // int(interval.total_seconds() * 1000)
        return [
            Decision.arm(
                side="BUY",
                entry_type="MARKET",
                reference_price=close,
                stop_price=close * stop,
                take_profit_price=close * take,
                reason=f"bench: candle {number} buys",
                expires_at=now + interval * int(params.get("expiry_candles", 3)),
            )
        ]
