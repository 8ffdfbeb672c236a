"""``manual``: no parameters; its signals come only from the API and webhooks."""

from __future__ import annotations

from signals.strategies.base import Strategy
from signals.strategies.registry import register


@register
class ManualStrategy(Strategy):
    key = "manual"
