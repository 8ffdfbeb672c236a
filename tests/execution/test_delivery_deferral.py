"""A delivery refused by the shared rate budget before anything was sent waits and retries; out
of retries its outcome is recorded (RATE_LIMITED), never dropped."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis

from execution.models import DeliveryStatus, Order, SignalDelivery
from execution.services import DeliveryDeferred, delivery_execute, rate_governor
from execution.tasks import execute_delivery
from signals.services import signal_create, signal_fan_out
from tests.factories import BotFactory, make_credential

GOVERNOR_REDIS = "redis://127.0.0.1:6379/8"


@pytest.fixture
def banned_venue(settings, db):
    settings.TRADING_MODE = "TESTNET"
    settings.BINANCE_BASE_URL = "http://127.0.0.1:9/fapi"  # never reached: the ban stops it first
    settings.RATE_GOVERNOR_REDIS_URL = GOVERNOR_REDIS
    redis.Redis.from_url(GOVERNOR_REDIS).flushdb()
    banned_until = int(time.time() * 1000) + 60_000
    governor = rate_governor()
    assert governor is not None
    governor.observe(
        headers={}, status=418, body_code=-1003, body_msg=f"IP banned until {banned_until}"
    )
    yield
    redis.Redis.from_url(GOVERNOR_REDIS).flushdb()


def _delivery() -> int:
    credential = make_credential()
    bot = BotFactory.create(owner=credential.owner, credential=credential)
    signal, _ = signal_create(
        source="MANUAL",
        source_key=f"manual:{bot.owner_id}",
        owner=bot.owner,
        symbol=bot.symbol,
        interval=bot.interval,
        kind="ARM",
        side="BUY",
        entry_type="MARKET",
        stop_price=Decimal("45000"),
        reference_price=Decimal("47000"),
    )
    return signal_fan_out(signal=signal)[0]


def test_rate_limited_delivery_is_deferred_with_nothing_sent(banned_venue):
    delivery_id = _delivery()
    with pytest.raises(DeliveryDeferred) as excinfo:
        delivery_execute(delivery_id=delivery_id)
    assert excinfo.value.delivery_id == delivery_id
    assert "banned" in excinfo.value.reason
    delivery = SignalDelivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.PENDING
    assert not Order.objects.exists()


def test_deferred_delivery_out_of_retries_records_rate_limited(banned_venue, settings):
    settings.DELIVERY_DEFER_RETRIES = 2
    settings.CELERY_TASK_ALWAYS_EAGER = True
    delivery_id = _delivery()
    execute_delivery.apply(args=(delivery_id,))  # eager: each retry runs at once
    delivery = SignalDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.FAILED, "RATE_LIMITED")
    assert delivery.attempts == 3  # the first run and two retries
    assert not Order.objects.exists()
