"""The demo of ``make run``: a demo user and a few paper bots on the emulator's replayed data.

Idempotent: running it again keeps what exists (bots are matched by owner and name).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

from trader.models import Bot, BotStatus, Environment

DEMO_USERNAME = "demo"


@dataclass(frozen=True)
class DemoBot:
    name: str
    symbol: str
    interval: str
    strategy: str
    params: dict[str, Any]


#: The emulator replays real BTCUSDT 1m candles; the 5m bot reads 5m candles the platform
#: derives from them (the emulator's other symbols have 5m data only, and 5m is derived).
#: Params a little more eager than the defaults, so a few minutes of replay show trades.
DEMO_BOTS = (
    DemoBot(
        "demo-btc-trend-1m",
        "BTCUSDT",
        "1m",
        "trend_breakout",
        {"adx_min": 20, "donchian_period": 10},
    ),
    DemoBot(
        "demo-btc-range-1m",
        "BTCUSDT",
        "1m",
        "range_reversion",
        {"bb_std": 1.5, "rsi_oversold": 40, "rsi_overbought": 60},
    ),
    DemoBot("demo-btc-range-5m", "BTCUSDT", "5m", "range_reversion", {"bb_std": 1.5}),
)


def demo_user_ensure(*, password: str | None = None) -> tuple[Any, str | None]:
    """The demo user, created if missing; its password is returned only when it was created."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=DEMO_USERNAME).first()
    if user is not None:
        return user, None
    password = password or secrets.token_urlsafe(12)
    user = user_model.objects.create_user(username=DEMO_USERNAME, email="", password=password)
    return user, password


def demo_bots_ensure(*, owner: Any) -> list[Bot]:
    """The demo bots of ``owner`` (paper-trading in DRY_RUN), created if missing."""
    bots = []
    for spec in DEMO_BOTS:
        bot, _ = Bot.objects.get_or_create(
            owner=owner,
            name=spec.name,
            defaults={
                "environment": Environment.TESTNET,
                "symbol": spec.symbol,
                "interval": spec.interval,
                "strategy": spec.strategy,
                "strategy_params": spec.params,
                "risk_per_trade_pct": Decimal("1"),
                "leverage": 2,
                "max_position_notional": Decimal("5000"),
                "status": BotStatus.ACTIVE,
            },
        )
        bots.append(bot)
    return bots
