"""``manual``: no parameters; its signals come only from the API and webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from signals.strategies.base import Candles, Decision, Strategy, StrategyState
from signals.strategies.registry import register


@register
class ManualStrategy(Strategy):
    key = "manual"
    evaluated = False

    def evaluate(
        self,
        *,
        candles: Candles,
        state: StrategyState,
        params: Mapping[str, Any],
        now: datetime,
    ) -> list[Decision]:
        return []
