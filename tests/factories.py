"""factory_boy factories. Credentials are created through the service, so they are encrypted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth.models import User

from signals.models import Evaluation, EvaluationStatus
from signals.services import params_hash
from trader import services
from trader.models import ApiCredential, Bot, Environment

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)


def make_credential(
    *,
    owner: Any = None,
    label: str | None = None,
    environment: str = Environment.TESTNET,
    api_key: str = "AKEYfor-testing-0001",
    api_secret: str = "TopSecretValue-DoNotLeak-9f83",  # noqa: S107
) -> ApiCredential:
    owner = owner or UserFactory.create()
    return services.credential_create(
        owner=owner,
        label=label or f"key-{ApiCredential.objects.count() + 1}",
        environment=environment,
        api_key=api_key,
        api_secret=api_secret,
    )


class BotFactory(factory.django.DjangoModelFactory[Bot]):
    class Meta:
        model = Bot

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"bot{n}")
    credential = None
    environment = Environment.TESTNET
    symbol = "BTCUSDT"
    interval = "1h"
    strategy = "manual"
    strategy_params = factory.LazyFunction(dict)
    risk_per_trade_pct = Decimal("1")
    leverage = 2
    max_position_notional = Decimal("1000")
    max_open_positions = 1
    daily_loss_limit_pct = Decimal("5")


class EvaluationFactory(factory.django.DjangoModelFactory[Evaluation]):
    """An evaluation of ``strategy``/``params`` on a 1h BTCUSDT candle; ``params_hash`` follows
    ``params`` as the chain computes it."""

    class Meta:
        model = Evaluation

    symbol = "BTCUSDT"
    interval = "1h"
    candle_time = factory.Sequence(lambda n: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n))
    strategy = "trend_breakout"
    params = factory.LazyFunction(dict)
    params_hash = factory.LazyAttribute(lambda o: params_hash(o.params))
    status = EvaluationStatus.EVALUATED
    regime = "ranging"
    candles = 120
