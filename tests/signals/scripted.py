"""``test_cadence``: a strategy for end-to-end tests and benchmarks, registered when this module
is imported (``STRATEGY_MODULES=tests.signals.scripted`` in a worker's environment).

It decides by the candle's number (open time / interval), so a replay of real data gives a
known rhythm of decisions whatever the prices do:

* ``mode=market``: every ``every``-th candle, ARM a MARKET BUY (stop 0.3 % below, take-profit
  0.1 % above) unless armed;
* ``mode=limit``: every ``every``-th candle, ARM a LIMIT BUY 5 % below the close (it will not
  fill), and DISARM it two candles later.
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
class CadenceStrategy(Strategy):
    key = "test_cadence"
    warmup = 3
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "mode": {"enum": ["market", "limit"], "default": "market"},
            "every": {"type": "integer", "minimum": 1, "maximum": 100, "default": 4},
        },
        "additionalProperties": False,
    }

    def evaluate(
        self, *, candles: Candles, state: StrategyState, params: Mapping[str, Any], now: datetime
    ) -> list[Decision]:
        interval = candle_interval(candles, state.extra)
        number = int(candles.open_time_ms[-1]) // int(interval.total_seconds() * 1000)
        every = int(params.get("every", 4))
        close = to_price(float(candles.close[-1]))
        if params.get("mode", "market") == "limit":
            if number % every == 2 % every and state.armed_side:
                return [Decision.disarm(f"cadence: candle {number} withdraws the limit entry")]
            if number % every == 0 and not state.armed_side:
                entry = close * Decimal("0.95")
                return [
                    Decision.arm(
                        side="BUY",
                        entry_type="LIMIT",
                        entry_price=entry,
                        reference_price=close,
                        stop_price=entry * Decimal("0.99"),
                        take_profit_price=close * Decimal("1.01"),
                        reason=f"cadence: candle {number} bids 5% below",
                        expires_at=now + interval * 10,
                    )
                ]
            return []
        if number % every == 0 and not state.armed_side:
            return [
                Decision.arm(
                    side="BUY",
                    entry_type="MARKET",
                    reference_price=close,
                    stop_price=close * Decimal("0.997"),
                    take_profit_price=close * Decimal("1.001"),
                    reason=f"cadence: candle {number} buys",
                    expires_at=now + interval * 2,
                )
            ]
        return []
