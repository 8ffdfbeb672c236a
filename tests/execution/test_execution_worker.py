"""Execution through a real Celery worker on Redis: fan-out, redelivery after a worker is
killed, and the kill switch, in DRY_RUN and against the exchange emulator in its own process.

Each test starts its worker(s) against the pytest-django test database and Redis database
``WORKER_REDIS_URL`` (flushed before and after), so they run beside other test sessions.
Measured timings are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import re
import signal as signal_module
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from execution.models import DeliveryStatus, KillScope, KillSwitch, Order, SignalDelivery
from execution.services import kill_switch_engage
from execution.states import OrderState
from execution.tasks import execute_delivery
from signals.models import Signal
from signals.services import signal_create, signal_fan_out
from tests.execution.worker_fixtures import (
    EmulatorProcess,
    Proc,
    account_specs,
    celery_publishing_to,
    process_env,
    start_worker,
    wait_until,
)
from tests.factories import make_credential
from trader.models import Bot, Environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKER_REDIS_URL = "redis://127.0.0.1:6379/11"
FINAL = (DeliveryStatus.EXECUTED, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED)
TICK = Decimal("0.1")
TASK_DONE = re.compile(r"execute_delivery\[[0-9a-f-]+\] (succeeded|raised)")


@pytest.fixture
def broker() -> Iterator[str]:
    """Redis database of our own for broker, cache and rate governor; this process publishes
    there too."""
    client = redis.Redis.from_url(WORKER_REDIS_URL)
    client.flushdb()
    try:
        with celery_publishing_to(WORKER_REDIS_URL):
            yield WORKER_REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def no_file_switch(settings: Any, tmp_path: Path) -> None:
    """A kill-switch file of this test only (an operator's real one must not stop it)."""
    settings.KILL_SWITCH = False
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL_SWITCH")


@pytest.fixture
def workers(tmp_path: Path, broker: str, no_file_switch: None) -> Iterator[list[Proc]]:
    """Started workers are appended here and stopped at the end, even on failure."""
    started: list[Proc] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator process for the module: frozen market, Binance's default limits."""
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator"), account_specs("wrk", 40))
    yield emu
    emu.stop()


@pytest.fixture
def emu(emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    emulator.control("reset_limits")
    emulator.control("faults", latency_ms=0, rate_5xx=0, rate_timeout=0, rate_drop=0, next=[])
    yield emulator
    emulator.control("faults", latency_ms=0)


def emulator_env(tmp_path: Path, emu: EmulatorProcess, **extra: str) -> dict[str, str]:
    return process_env(
        tmp_path,
        redis_url=WORKER_REDIS_URL,
        TRADING_MODE="TESTNET",
        BINANCE_BASE_URL=emu.base_url + "/fapi",
        **extra,
    )


def bulk_bots(count: int, *, prefix: str, **fields: Any) -> list[Bot]:
    """``count`` users with one active bot each, in two INSERTs."""
    users = User.objects.bulk_create(
        [User(username=f"{prefix}{n}", password="!") for n in range(count)]
    )
    defaults: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "strategy": "manual",
        "risk_per_trade_pct": Decimal("1"),
        "leverage": 2,
        "max_position_notional": Decimal("1000"),
        "max_open_positions": 1,
        "environment": Environment.TESTNET,
    }
    defaults.update(fields)
    return Bot.objects.bulk_create([Bot(owner=u, name=f"{prefix}-bot", **defaults) for u in users])


def bot_on_account(account: dict[str, Any], name: str, strategy: str = "manual") -> Bot:
    """A bot trading on ``account`` of the emulator through an encrypted credential."""
    credential = make_credential(api_key=account["api_key"], api_secret=account["api_secret"])
    return Bot.objects.create(
        owner=credential.owner,
        name=name,
        credential=credential,
        environment=Environment.TESTNET,
        symbol="BTCUSDT",
        interval="1h",
        strategy=strategy,
        leverage=2,
        max_position_notional=Decimal("1000"),
    )


def to_tick(value: Decimal) -> Decimal:
    return (value / TICK).to_integral_value() * TICK


def limit_buy_terms(mark: Decimal) -> dict[str, Any]:
    """A LIMIT BUY 3 % under the market (rests unfilled on a frozen market), stop 5 % under,
    take-profit 5 % over."""
    return {
        "side": "BUY",
        "entry_type": "LIMIT",
        "entry_price": to_tick(mark * Decimal("0.97")),
        "stop_price": to_tick(mark * Decimal("0.95")),
        "take_profit_price": to_tick(mark * Decimal("1.05")),
    }


def manual_signal(owner: Any, key: str, **terms: Any) -> Signal:
    signal, _ = signal_create(
        source="MANUAL",
        source_key=key,
        owner=owner,
        symbol="BTCUSDT",
        interval="1h",
        kind="ARM",
        **terms,
    )
    return signal


def strategy_signal(key: str, strategy: str, **terms: Any) -> Signal:
    """An ARM signal of ``strategy`` on the last closed 1h candle of BTCUSDT."""
    signal, _ = signal_create(
        source="STRATEGY",
        source_key=key,
        strategy=strategy,
        params={},
        symbol="BTCUSDT",
        interval="1h",
        candle_time=timezone.now() - timedelta(hours=1),
        kind="ARM",
        **terms,
    )
    return signal


def fan_out_committed(signal: Signal) -> list[int]:
    """Fan out in a transaction of its own: the group is published when it commits."""
    with transaction.atomic():
        return signal_fan_out(signal=signal)


def all_final(signal: Signal, expected: int) -> bool:
    done = SignalDelivery.objects.filter(signal=signal, status__in=FINAL).count()
    return done == expected


def legs_per_delivery(signal: Signal) -> Counter[tuple[str, ...]]:
    """How many deliveries have each (sorted) set of order legs."""
    legs: dict[int, list[str]] = {}
    for delivery_id, leg in Order.objects.filter(delivery__signal=signal).values_list(
        "delivery_id", "leg"
    ):
        legs.setdefault(delivery_id, []).append(leg)
    return Counter(tuple(sorted(v)) for v in legs.values())


TRIO = ("ENTRY", "STOP_LOSS", "TAKE_PROFIT")


# --- 1. fan-out ----------------------------------------------------------------------------------


def test_fan_out_of_one_signal_to_200_bots_in_dry_run_records_200_outcomes(tmp_path, workers):
    bulk_bots(200, prefix="fan", strategy="fanout", max_position_notional=Decimal("5000"))
    signal = strategy_signal(
        "fanout",
        "fanout",
        side="BUY",
        entry_type="MARKET",
        reference_price=Decimal("47000"),
        stop_price=Decimal("46000"),
        take_profit_price=Decimal("49000"),
    )
    env = process_env(tmp_path, redis_url=WORKER_REDIS_URL, TRADING_MODE="DRY_RUN")
    workers.append(start_worker(env, name="fanout", concurrency=2))

    started = time.monotonic()
    fresh = fan_out_committed(signal)
    wait_until(lambda: all_final(signal, 200), timeout=120, step=0.25)
    elapsed = time.monotonic() - started

    deliveries = SignalDelivery.objects.filter(signal=signal)
    print(f"\nfan-out to 200 paper bots: all final in {elapsed:.1f} s ({200 / elapsed:.1f}/s)")
    assert len(fresh) == 200
    assert deliveries.count() == 200
    assert Counter(deliveries.values_list("status", "reason_code")) == {
        (DeliveryStatus.EXECUTED, "PLACED"): 200
    }
    assert legs_per_delivery(signal) == {TRIO: 200}
    assert Counter(Order.objects.filter(delivery__signal=signal).values_list("leg", "state")) == {
        ("ENTRY", OrderState.FILLED): 200,
        ("STOP_LOSS", OrderState.NEW): 200,
        ("TAKE_PROFIT", OrderState.NEW): 200,
    }


# --- 2. redelivery and duplicates ----------------------------------------------------------------


def venue_view(emu: EmulatorProcess, account: dict[str, Any]) -> dict[str, list[str]]:
    """Client ids of every regular and algo order the emulator holds for ``account``, and of
    the open ones, read with an unmodified python-binance client."""
    client = emu.client(account)
    try:
        return {
            "orders": sorted(
                o["clientOrderId"] for o in client.futures_get_all_orders(symbol="BTCUSDT")
            ),
            "algos": sorted(
                a["clientAlgoId"]
                for a in client.futures_get_all_orders(symbol="BTCUSDT", conditional=True)
            ),
            "open_orders": sorted(
                o["clientOrderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT")
            ),
            "open_algos": sorted(
                a["clientAlgoId"]
                for a in client.futures_get_open_orders(symbol="BTCUSDT", conditional=True)
            ),
        }
    finally:
        client.close_connection()


def delivery_final(delivery_id: int) -> bool:
    return SignalDelivery.objects.filter(pk=delivery_id, status__in=FINAL).exists()


def place_as_the_lost_request_would(emu: EmulatorProcess, account: dict, entry: Order) -> int:
    """The entry as the venue holds it when a request the dead worker had in flight was
    completed there after the worker was gone (a real exchange finishes a request it has
    received; the emulator instead drops one whose connection closed)."""
    assert entry.price is not None
    client = emu.client(account)
    try:
        placed = client.futures_create_order(
            symbol=entry.symbol,
            side=entry.side,
            type="LIMIT",
            timeInForce="GTC",
            quantity=f"{entry.quantity.normalize():f}",
            price=f"{entry.price.normalize():f}",
            newClientOrderId=entry.client_order_id,
        )
    finally:
        client.close_connection()
    return int(placed["orderId"])


@pytest.mark.parametrize("entry_landed", [False, True], ids=["entry-lost", "entry-landed"])
def test_redelivered_delivery_after_a_worker_kill_places_exactly_one_trio(
    tmp_path, workers, emu, entry_landed
):
    (account,) = emu.take_accounts(1)
    bot = bot_on_account(account, "redelivered")
    signal = manual_signal(bot.owner, "redelivery", **limit_buy_terms(emu.price()))
    # Redis hands an unacknowledged message to another worker after the visibility timeout.
    visibility_s = 5
    env = emulator_env(tmp_path, emu, CELERY_VISIBILITY_TIMEOUT_S=str(visibility_s))
    emu.control("faults", latency_ms=1500)  # every venue call takes 1.5 s: A dies mid-way
    worker_a = start_worker(env, name="worker-a", concurrency=1)
    workers.append(worker_a)

    (delivery_id,) = fan_out_committed(signal)
    published = time.monotonic()
    entry = wait_until(
        lambda: Order.objects.filter(
            delivery_id=delivery_id, leg="ENTRY", sent_at__isnull=False
        ).first(),
        timeout=60,
        step=0.05,
    )
    assert entry is not None
    worker_a.kill_group()  # the entry is on its way: claimed as sent, no answer recorded
    killed = time.monotonic()
    emu.control("faults", latency_ms=0)
    assert sorted(Order.objects.filter(delivery_id=delivery_id).values_list("leg", "state")) == [
        ("ENTRY", OrderState.PENDING),
        ("STOP_LOSS", OrderState.PENDING),
        ("TAKE_PROFIT", OrderState.PENDING),
    ]
    landed_id = place_as_the_lost_request_would(emu, account, entry) if entry_landed else None
    # A starting worker restores messages unacknowledged for longer than the visibility
    # timeout (later, kombu sweeps only every ~100 s): start B once that holds.
    time.sleep(max(0.0, published + visibility_s + 0.5 - time.monotonic()))
    workers.append(start_worker(env, name="worker-b", concurrency=1))
    wait_until(lambda: delivery_final(delivery_id), timeout=60)
    print(f"\nredelivery ({'entry landed' if entry_landed else 'entry lost'}): delivery final "
          f"{time.monotonic() - killed:.1f} s after worker A was killed")  # fmt: skip

    delivery = SignalDelivery.objects.get(pk=delivery_id)
    prefix = f"tr-{delivery_id}-"
    assert (delivery.status, delivery.reason_code, delivery.attempts) == (
        DeliveryStatus.EXECUTED,
        "PLACED",
        2,  # worker A's run and worker B's
    )
    assert venue_view(emu, account) == {
        "orders": [f"{prefix}E"],
        "algos": [f"{prefix}SL", f"{prefix}TP"],
        "open_orders": [f"{prefix}E"],
        "open_algos": [f"{prefix}SL", f"{prefix}TP"],
    }
    orders = Order.objects.filter(delivery_id=delivery_id)
    assert sorted(orders.values_list("leg", "state")) == [
        ("ENTRY", OrderState.NEW),
        ("STOP_LOSS", OrderState.NEW),
        ("TAKE_PROFIT", OrderState.NEW),
    ]
    entry.refresh_from_db()
    if entry_landed:  # adopted by client id, not placed a second time
        assert (entry.venue_order_id, entry.attempts) == (landed_id, 1)
    else:  # looked up, absent, sent again with the same client id
        assert entry.attempts == 2


def tasks_done(worker: Proc) -> int:
    """How many ``execute_delivery`` runs the worker has logged as finished."""
    return sum(TASK_DONE.search(line) is not None for line in worker.lines)


@pytest.mark.parametrize("concurrency", [1, 2], ids=["one-after-the-other", "at-the-same-time"])
def test_delivery_enqueued_twice_places_exactly_one_trio(tmp_path, workers, emu, concurrency):
    (account,) = emu.take_accounts(1)
    bot = bot_on_account(account, f"twice-{concurrency}")
    mark = emu.price()
    # A MARKET entry: the venue refuses a duplicate client id only among OPEN orders, so a
    # second send of a filled MARKET entry would fill again. Latency keeps the runs long.
    signal = manual_signal(
        bot.owner,
        "twice",
        side="BUY",
        entry_type="MARKET",
        reference_price=mark,
        stop_price=to_tick(mark * Decimal("0.95")),
        take_profit_price=to_tick(mark * Decimal("1.05")),
    )
    emu.control("faults", latency_ms=300)
    worker = start_worker(emulator_env(tmp_path, emu), name="twice", concurrency=concurrency)
    workers.append(worker)

    with transaction.atomic():
        (delivery_id,) = signal_fan_out(signal=signal)
        transaction.on_commit(lambda: execute_delivery.apply_async((delivery_id,)))
    wait_until(lambda: tasks_done(worker) == 2, timeout=60)
    emu.control("faults", latency_ms=0)

    prefix = f"tr-{delivery_id}-"
    assert venue_view(emu, account) == {
        "orders": [f"{prefix}E"],  # filled once
        "algos": [f"{prefix}SL", f"{prefix}TP"],
        "open_orders": [],
        "open_algos": [f"{prefix}SL", f"{prefix}TP"],
    }
    assert sorted(Order.objects.filter(delivery_id=delivery_id).values_list("leg", "state")) == [
        ("ENTRY", OrderState.FILLED),
        ("STOP_LOSS", OrderState.NEW),
        ("TAKE_PROFIT", OrderState.NEW),
    ]
    delivery = SignalDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.reason_code, delivery.attempts) == (
        DeliveryStatus.EXECUTED,
        "PLACED",
        1,  # the second run found it final, or running and left it to the first
    )
    overlapped = any(
        f"delivery {delivery_id} is being executed by another run" in line for line in worker.lines
    )
    assert overlapped == (concurrency == 2)


# --- 3. kill switch ------------------------------------------------------------------------------


def test_kill_switch_stops_new_entries_within_one_second_and_cancels_20_bots_open_entries(
    tmp_path, workers, emu
):
    accounts = {bot_on_account(a, "ks", strategy="ks").pk: a for a in emu.take_accounts(20)}
    terms = limit_buy_terms(emu.price())
    armed = strategy_signal("ks-first", "ks", **terms)
    after = strategy_signal("ks-second", "ks", **terms)
    workers.append(start_worker(emulator_env(tmp_path, emu), name="ks", concurrency=2))
    fan_out_committed(armed)
    wait_until(lambda: all_final(armed, 20), timeout=60)
    assert Counter(
        SignalDelivery.objects.filter(signal=armed).values_list("status", flat=True)
    ) == {DeliveryStatus.EXECUTED: 20}
    assert Order.objects.filter(delivery__signal=armed, state=OrderState.NEW).count() == 60

    switch = kill_switch_engage(scope=KillScope.GLOBAL, reason="worker test")
    fan_out_committed(after)  # right after the switch's commit
    wait_until(lambda: all_final(after, 20), timeout=30, step=0.05)
    wait_until(
        lambda: (
            not Order.objects.filter(delivery__signal=armed)
            .exclude(state=OrderState.CANCELED)
            .exists()
        ),
        timeout=30,
        step=0.05,
    )
    # The sweep records what it did once it has cancelled everything: wait for that record,
    # not just for the last cancel, which lands a moment before it.
    wait_until(
        lambda: len(KillSwitch.objects.get(pk=switch.pk).actions) >= 20, timeout=30, step=0.05
    )
    switch.refresh_from_db()
    refusals = SignalDelivery.objects.filter(signal=after)
    first_refusal = refusals.aggregate(t=Min("finished_at"))["t"] - switch.engaged_at
    last_cancel = (
        Order.objects.filter(delivery__signal=armed).aggregate(t=Max("updated_at"))["t"]
        - switch.engaged_at
    )
    print(
        f"\nkill switch: first new entry refused {first_refusal.total_seconds() * 1000:.0f} ms "
        f"after engage; 20 entries and their 40 SL/TP cancelled at the venue "
        f"{last_cancel.total_seconds():.2f} s after engage"
    )

    assert Counter(refusals.values_list("status", "reason_code")) == {
        (DeliveryStatus.SKIPPED, "KILL_SWITCH"): 20
    }
    assert not Order.objects.filter(delivery__signal=after).exists()
    assert first_refusal < timedelta(seconds=1)
    assert last_cancel < timedelta(seconds=10)
    assert sorted(a.get("state") for a in switch.actions) == [OrderState.CANCELED] * 20
    assert all("error" not in a for a in switch.actions)
    for bot_id, account in accounts.items():
        view = venue_view(emu, account)
        delivery_id = SignalDelivery.objects.get(signal=armed, bot_id=bot_id).pk
        assert view == {
            "orders": [f"tr-{delivery_id}-E"],
            "algos": [f"tr-{delivery_id}-SL", f"tr-{delivery_id}-TP"],
            "open_orders": [],
            "open_algos": [],
        }


def test_sigterm_lets_the_in_flight_delivery_finish_and_the_worker_exit_cleanly(
    tmp_path, workers, emu
):
    """Graceful shutdown: SIGTERM mid-placement lets the running task finish its trio (warm
    shutdown), the worker exits 0 within a bound, and the protective orders stay live at the
    exchange, protecting the position while the platform is down."""
    (account,) = emu.take_accounts(1)
    bot = bot_on_account(account, "graceful")
    signal = manual_signal(bot.owner, "graceful", **limit_buy_terms(emu.price()))
    emu.control("faults", latency_ms=700)  # each venue call is slow: SIGTERM lands mid-task
    worker = start_worker(emulator_env(tmp_path, emu), name="worker-g", concurrency=1)
    workers.append(worker)
    (delivery_id,) = fan_out_committed(signal)
    wait_until(
        lambda: Order.objects.filter(
            delivery_id=delivery_id, leg="ENTRY", sent_at__isnull=False
        ).exists(),
        timeout=60,
        step=0.05,
    )
    signalled = time.monotonic()
    # To the main process, as Docker and Kubernetes do (PID 1): it stops taking work and waits
    # for the running task (warm shutdown). A signal to every pool child would kill the task
    # mid-way; acks_late + reject_on_worker_lost then hands it back (redelivered, settled by
    # client id) - safe, but not graceful: use KillMode=mixed under systemd.
    worker.popen.send_signal(signal_module.SIGTERM)
    code = worker.popen.wait(timeout=60)
    took = time.monotonic() - signalled
    emu.control("faults", latency_ms=0)
    print(f"\ngraceful shutdown: worker exited {code} {took:.1f} s after SIGTERM")
    assert code == 0, worker.output()
    assert took < 30
    delivery = SignalDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.reason_code, delivery.attempts) == (
        DeliveryStatus.EXECUTED,
        "PLACED",
        1,  # finished by the run that was in flight, not redelivered
    )
    prefix = f"tr-{delivery_id}-"
    assert venue_view(emu, account)["open_algos"] == [f"{prefix}SL", f"{prefix}TP"]
