"""The whole chain, live: beat -> ingest -> signals -> deliveries -> orders -> fills ->
positions, with a real Celery worker and beat on Postgres and Redis, against the exchange
emulator replaying the bundled real BTCUSDT candles 30 times faster than real time (a 1m candle
closes every 2 s).

The bots run ``test_cadence`` (tests/signals/scripted.py), which decides by candle number, so the
replay of real prices gives a known rhythm: a MARKET bot buys every 4th candle (and its stop
or take-profit closes the position), a LIMIT bot bids far below the market and is DISARMed two
candles later, and a paused bot with the same strategy receives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db.models import Count

from execution.models import DeliveryStatus, Fill, Order, OrderLeg, Position, SignalDelivery
from execution.states import OrderState
from ingest.feeds import fetched_feeds, needed_feeds
from ingest.fetch import klines_backfill
from ingest.models import Kline
from signals.models import Evaluation, EvaluationStatus, Signal
from tests.execution.worker_fixtures import (
    PY,
    EmulatorProcess,
    Proc,
    account_specs,
    process_env,
    wait_until,
)
from tests.factories import BotFactory, UserFactory
from trader import clock
from trader.domain import INTERVAL_MS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_URL = "redis://127.0.0.1:6379/5"
SPEED = "30"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    exchange = EmulatorProcess(
        tmp_path, account_specs("E2e", 1), "--speed", SPEED, "--history", "300"
    )
    try:
        yield exchange
    finally:
        exchange.stop()


@pytest.fixture
def platform_env(tmp_path: Path, emulator: EmulatorProcess, settings: Any) -> Iterator[dict]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    settings.BINANCE_BASE_URL = emulator.base_url + "/fapi"
    settings.MARKET_CLOCK = "emulator"
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL_SWITCH")
    clock.reset()
    env = process_env(
        tmp_path,
        redis_url=REDIS_URL,
        TRADING_MODE="DRY_RUN",
        BINANCE_BASE_URL=emulator.base_url + "/fapi",
        MARKET_CLOCK="emulator",
        STRATEGY_MODULES="tests.signals.scripted",
        INGEST_TICK_S="1",
        INGEST_JITTER_S="0.2",
        MONITOR_INTERVAL_S="3",
        EXCHANGE_INFO_REFRESH_S="0",
    )
    try:
        yield env
    finally:
        clock.reset()
        client.flushdb()
        client.close()


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def start(env: dict[str, str], name: str, argv: list[str]) -> Proc:
    return Proc([PY, *argv], env, name)


def test_replayed_candles_drive_signals_orders_fills_positions_and_disarm(
    platform_env: dict[str, str], processes: list[Proc], settings: Any
) -> None:
    settings.STRATEGY_MODULES = ("tests.signals.scripted",)
    owner = UserFactory.create()
    common = {"owner": owner, "symbol": "BTCUSDT", "interval": "1m", "strategy": "test_cadence"}
    buyer = BotFactory.create(name="buyer", strategy_params={"mode": "market"}, **common)
    bidder = BotFactory.create(name="bidder", strategy_params={"mode": "limit"}, **common)
    paused = BotFactory.create(
        name="paused", strategy_params={"mode": "market"}, status="PAUSED", **common
    )
    # Warm-up history, as make run does, then the live processes.
    now_ms = clock.market_now_ms()
    for feed in fetched_feeds(needed_feeds()):
        klines_backfill(
            symbol=feed.symbol,
            interval=feed.interval,
            start_ms=now_ms - 60 * INTERVAL_MS[feed.interval],
            end_ms=now_ms,
        )
    assert Kline.objects.filter(symbol="BTCUSDT", interval="1m").count() >= 55
    queues = "ingest,signals,execution,monitor,default"
    worker = start(
        platform_env,
        "worker",
        ["-m", "celery", "-A", "config", "worker", "-Q", queues, "--concurrency", "3",
         "-n", "e2e@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
    )  # fmt: skip
    processes.append(worker)
    worker.wait_for_line(" ready.", timeout=60)
    beat = start(
        platform_env, "beat", ["-m", "celery", "-A", "config", "beat", "--pidfile=", "-l", "INFO"]
    )
    processes.append(beat)

    def progressed() -> bool:
        filled_entry = Order.objects.filter(
            bot=buyer, leg=OrderLeg.ENTRY, state=OrderState.FILLED
        ).exists()
        cancelled_bid = Order.objects.filter(
            bot=bidder, leg=OrderLeg.ENTRY, state=OrderState.CANCELED
        ).exists()
        # The entry of a closed position with its fill recorded: a fill is written by the
        # sync after the order's state, so wait for it rather than for the state alone.
        closed_with_fill = Fill.objects.filter(
            order__leg=OrderLeg.ENTRY,
            order__delivery__position__bot=buyer,
            order__delivery__position__status="CLOSED",
        ).exists()
        # The DISARM delivery is finished after its cancels: wait for it too.
        disarmed = SignalDelivery.objects.filter(
            bot=bidder, signal__kind="DISARM", status=DeliveryStatus.EXECUTED
        ).exists()
        return filled_entry and cancelled_bid and closed_with_fill and disarmed

    try:
        wait_until(progressed, timeout=240, step=1)
    except AssertionError:
        orders = list(
            Order.objects.order_by("id").values_list("bot__name", "leg", "type", "state", "price")
        )
        positions = list(Position.objects.values_list("bot__name", "status", "entry_qty"))
        raise AssertionError(
            f"pipeline did not progress:\norders {orders}\npositions {positions}\n"
            f"worker:\n{worker.output(80)}"
        ) from None

    # Signals -> deliveries -> orders -> fills -> positions, for the MARKET bot.
    arm = Signal.objects.filter(kind="ARM", strategy="test_cadence").first()
    assert arm is not None
    assert arm.source == "STRATEGY"
    executed = SignalDelivery.objects.filter(bot=buyer, status=DeliveryStatus.EXECUTED)
    assert executed.exists()
    closed = Position.objects.filter(bot=buyer, status="CLOSED").first()
    assert closed is not None
    entry = Order.objects.get(delivery=closed.delivery, leg=OrderLeg.ENTRY)
    assert entry.state == OrderState.FILLED
    assert entry.filled_qty > 0
    legs = set(Order.objects.filter(delivery=entry.delivery).values_list("leg", flat=True))
    assert {OrderLeg.ENTRY, OrderLeg.STOP_LOSS} <= legs
    assert Fill.objects.filter(order=entry).exists()
    assert closed.exit_qty == closed.entry_qty > 0
    # DISARM cancelled the LIMIT bot's unfilled entry.
    disarmed = SignalDelivery.objects.filter(bot=bidder, signal__kind="DISARM")
    assert disarmed.filter(status=DeliveryStatus.EXECUTED, reason_code="DISARMED").exists()
    assert not Fill.objects.filter(order__bot=bidder).exists()
    # Nothing reaches the paused bot.
    assert not SignalDelivery.objects.filter(bot=paused).exists()
    assert not Order.objects.filter(bot=paused).exists()
    # Each candle was evaluated at most once per (strategy, params), and live (not refused).
    per_candle = Evaluation.objects.values("candle_time", "params_hash").annotate(n=Count("id"))
    assert max(row["n"] for row in per_candle) == 1
    assert Evaluation.objects.filter(status=EvaluationStatus.EVALUATED).count() >= 4
