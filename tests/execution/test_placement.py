"""Placement of the entry / stop-loss / take-profit trio, with the emulator as the exchange
(TESTNET mode, real HTTP on 127.0.0.1) and the paper venue (DRY_RUN): confirmation, DISARM,
compensation when a protective order is refused, ambiguous outcomes, redelivery, and every
risk rule that blocks a delivery before anything is sent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from execution.circuit import record_error
from execution.lifecycle import position_sync
from execution.models import (
    Cooldown,
    DeliveryStatus,
    KillScope,
    KillSwitch,
    Order,
    OrderLeg,
    PaperAccount,
    SignalDelivery,
)
from execution.services import delivery_execute
from execution.states import OrderState
from execution.venues import errors as venue_errors
from execution.venues.binance import BinanceFuturesVenue
from execution.venues.paper_store import PersistentPaperVenue
from ingest.models import Kline
from signals.models import SignalSource
from signals.services import params_hash, signal_create, signal_fan_out
from tests.execution import placement_fixtures as pf
from tests.factories import BotFactory, UserFactory, make_credential
from trader.domain import INTERVAL_SECONDS
from trader.models import Alert, BotStatus

pytestmark = pytest.mark.django_db

NEW, FILLED, CANCELED, REJECTED = (
    OrderState.NEW,
    OrderState.FILLED,
    OrderState.CANCELED,
    OrderState.REJECTED,
)


@pytest.fixture
def env(emu: Any, settings: Any, tmp_path: Any) -> Any:
    """The module's emulator with limits and faults reset; TESTNET mode against it."""
    emu.reset()
    pf.use_emulator(emu, settings, tmp_path)
    return emu


@pytest.fixture
def spec(env: Any) -> Any:
    """An emulator account nobody has used: flat, no orders, 10000 USDT."""
    return env.fresh_account()


@pytest.fixture
def bot(spec: Any) -> Any:
    return pf.emulator_bot(spec)


def legs(delivery: SignalDelivery) -> dict[str, Order]:
    return {o.leg: o for o in Order.objects.filter(delivery=delivery)}


def transitions(order: Order) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in order.events.all()]


def state_changes(order: Order) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in order.events.all() if e.from_state != e.to_state]


# --- the trio, confirmed ----------------------------------------------------------------------


def test_market_trio_is_placed_filled_and_protected_at_the_emulator(env, spec, bot):
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    entry, stop, take = (legs(delivery)[leg] for leg in ("ENTRY", "STOP_LOSS", "TAKE_PROFIT"))
    qty = entry.quantity
    assert qty > 0
    assert (entry.client_order_id, entry.state, entry.filled_qty) == (
        pf.client_id(delivery, "E"),
        FILLED,
        qty,
    )
    assert (entry.type, entry.is_algo, entry.reduce_only) == ("MARKET", False, False)
    for order, code, kind in ((stop, "SL", "STOP_MARKET"), (take, "TP", "TAKE_PROFIT_MARKET")):
        assert (order.client_order_id, order.state, order.type) == (
            pf.client_id(delivery, code),
            NEW,
            kind,
        )
        assert (order.is_algo, order.reduce_only, order.side, order.quantity) == (
            True,
            True,
            "SELL",
            qty,
        )
    assert transitions(entry) == [("PENDING", "FILLED")]
    assert transitions(stop) == [("PENDING", "NEW")]
    assert transitions(take) == [("PENDING", "NEW")]
    # The emulator holds exactly this: a long of qty, two reduce-only algo orders, no order.
    assert pf.position_amount(env, spec) == qty
    assert pf.open_orders(env, spec) == []
    algos = {a.client_algo_id: a for a in pf.open_algos(env, spec)}
    assert set(algos) == {pf.client_id(delivery, "SL"), pf.client_id(delivery, "TP")}
    for algo, order in ((algos[stop.client_order_id], stop), (algos[take.client_order_id], take)):
        assert (algo.status, algo.reduce_only, algo.side, algo.quantity) == (
            "NEW",
            True,
            "SELL",
            qty,
        )
        assert algo.trigger_price == order.trigger_price
    [placed] = pf.all_orders(env, spec)
    assert (placed.client_id, placed.status, placed.executed_qty) == (
        entry.client_order_id,
        "FILLED",
        qty,
    )
    # The decision: every risk check (all passed) and the sizing behind the quantity.
    risk, sizing = delivery.decision["risk"], delivery.decision["sizing"]
    assert risk["allowed"] is True
    assert [c["code"] for c in risk["checks"]] == [
        "KILL_SWITCH",
        "BOT_NOT_ACTIVE",
        "TRADING_MODE",
        "SYMBOL_NOT_TRADABLE",
        "STALE_DATA",
        "COOLDOWN",
        "MAX_OPEN_POSITIONS",
        "EXPOSURE_BOT",
        "EXPOSURE_SYMBOL",
        "EXPOSURE_USER",
        "EXPOSURE_ACCOUNT",
        "DAILY_LOSS",
        "WEEKLY_LOSS",
        "CIRCUIT_OPEN",
    ]
    assert all(c["passed"] for c in risk["checks"])
    assert Decimal(sizing["quantity"]) == qty
    assert Decimal(sizing["equity"]) == Decimal(10000)
    assert Decimal(sizing["notional"]) == qty * Decimal(sizing["entry_price"])
    assert delivery.decision["orders"] == {
        "entry": "FILLED",
        "filled": str(qty),
        "stop_loss": "NEW",
        "take_profit": "NEW",
    }


def test_sell_trio_is_protected_by_buy_orders_above_and_below(env, spec, bot):
    delivery = pf.arm_trio(env, bot, side="SELL")

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert delivery.status == DeliveryStatus.EXECUTED
    orders = legs(delivery)
    entry, stop, take = orders["ENTRY"], orders["STOP_LOSS"], orders["TAKE_PROFIT"]
    assert (entry.side, entry.state, stop.side, take.side) == ("SELL", FILLED, "BUY", "BUY")
    assert stop.trigger_price is not None
    assert take.trigger_price is not None
    assert stop.trigger_price > entry.avg_price > take.trigger_price
    assert pf.position_amount(env, spec) == -entry.quantity
    assert {(a.client_algo_id, a.side, a.reduce_only) for a in pf.open_algos(env, spec)} == {
        (pf.client_id(delivery, "SL"), "BUY", True),
        (pf.client_id(delivery, "TP"), "BUY", True),
    }


def test_trio_without_a_take_profit_is_entry_and_stop_only(env, spec, bot):
    delivery = pf.arm_trio(env, bot, take_profit=False)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert delivery.status == DeliveryStatus.EXECUTED
    assert {leg: o.state for leg, o in legs(delivery).items()} == {
        "ENTRY": FILLED,
        "STOP_LOSS": NEW,
    }
    assert delivery.decision["orders"]["take_profit"] is None
    assert [a.client_algo_id for a in pf.open_algos(env, spec)] == [pf.client_id(delivery, "SL")]


def test_limit_trio_rests_at_the_emulator_with_both_protective_orders(env, spec, bot):
    delivery = pf.arm_trio(env, bot, entry_type="LIMIT")

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert delivery.status == DeliveryStatus.EXECUTED
    entry, stop, take = (legs(delivery)[leg] for leg in ("ENTRY", "STOP_LOSS", "TAKE_PROFIT"))
    assert (entry.state, entry.filled_qty, entry.type) == (NEW, 0, "LIMIT")
    assert entry.price == pf.prices(env, entry_type="LIMIT")["entry"]
    assert (stop.state, take.state) == (NEW, NEW)
    assert stop.quantity == take.quantity == entry.quantity
    assert transitions(entry) == [("PENDING", "NEW")]
    [resting] = pf.open_orders(env, spec)
    assert (resting.client_id, resting.status, resting.type, resting.reduce_only) == (
        pf.client_id(delivery, "E"),
        "NEW",
        "LIMIT",
        False,
    )
    assert {a.client_algo_id for a in pf.open_algos(env, spec)} == {
        pf.client_id(delivery, "SL"),
        pf.client_id(delivery, "TP"),
    }
    assert pf.position_amount(env, spec) == 0


# --- DISARM -----------------------------------------------------------------------------------


def test_disarm_cancels_an_unfilled_limit_entry_and_both_algo_orders(env, spec, bot):
    armed = delivery_execute(delivery_id=pf.arm_trio(env, bot, entry_type="LIMIT").pk)

    disarmed = delivery_execute(delivery_id=pf.deliver(pf.disarm(bot), bot).pk)

    assert (disarmed.status, disarmed.reason_code, disarmed.reason) == (
        DeliveryStatus.EXECUTED,
        "DISARMED",
        "cancelled 1 unfilled entries",
    )
    assert {leg: o.state for leg, o in legs(armed).items()} == {
        "ENTRY": CANCELED,
        "STOP_LOSS": CANCELED,
        "TAKE_PROFIT": CANCELED,
    }
    assert pf.open_orders(env, spec) == []
    assert pf.open_algos(env, spec) == []
    assert {a.status for a in pf.all_algos(env, spec)} == {"CANCELED"}
    assert not Order.objects.filter(delivery=disarmed).exists()


def test_disarm_leaves_a_filled_trio_protected(env, spec, bot):
    armed = delivery_execute(delivery_id=pf.arm_trio(env, bot).pk)

    disarmed = delivery_execute(delivery_id=pf.deliver(pf.disarm(bot), bot).pk)

    assert (disarmed.status, disarmed.reason) == (
        DeliveryStatus.EXECUTED,
        "cancelled 0 unfilled entries",
    )
    assert {leg: o.state for leg, o in legs(armed).items()} == {
        "ENTRY": FILLED,
        "STOP_LOSS": NEW,
        "TAKE_PROFIT": NEW,
    }
    assert {a.client_algo_id for a in pf.open_algos(env, spec)} == {
        pf.client_id(armed, "SL"),
        pf.client_id(armed, "TP"),
    }
    assert pf.position_amount(env, spec) == legs(armed)["ENTRY"].quantity


# --- compensation: a protective order the venue refuses ---------------------------------------


def test_stop_loss_refused_after_market_fill_flattens_the_position_and_alerts(env, spec, bot):
    delivery = pf.arm_trio(env, bot)
    pf.inject(env, "ok", "5xx", "5xx")  # entry passes; both stop-loss sends are refused

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.FAILED, "STOP_LOSS_FAILED")
    orders = legs(delivery)
    entry, stop, take = orders["ENTRY"], orders["STOP_LOSS"], orders["TAKE_PROFIT"]
    assert (entry.state, entry.filled_qty) == (FILLED, entry.quantity)
    assert (stop.state, stop.attempts) == (REJECTED, 2)
    assert take.state == CANCELED
    assert take.sent_at is None  # never sent
    [close] = Order.objects.filter(delivery=delivery, leg=OrderLeg.CLOSE)
    assert (close.client_order_id, close.type, close.side, close.reduce_only) == (
        pf.client_id(delivery, "X1"),
        "MARKET",
        "SELL",
        True,
    )
    assert (close.state, close.filled_qty) == (FILLED, entry.quantity)
    assert pf.position_amount(env, spec) == 0
    assert pf.open_algos(env, spec) == []
    assert [a.client_algo_id for a in pf.all_algos(env, spec)] == []  # none ever placed
    [critical] = Alert.objects.filter(key=f"stop_loss_failed:{delivery.pk}")
    assert (critical.severity, critical.owner_id) == ("CRITICAL", bot.owner_id)
    assert "closed" in critical.message
    assert "UNPROTECTED" not in critical.message


def test_stop_loss_and_close_both_refused_leave_the_position_and_say_so(env, spec, bot):
    delivery = pf.arm_trio(env, bot)
    pf.inject(env, "ok", "5xx", "5xx", "5xx", "5xx")  # entry; 2 stop-loss sends; 2 close sends

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.FAILED, "STOP_LOSS_FAILED")
    orders = legs(delivery)
    [close] = Order.objects.filter(delivery=delivery, leg=OrderLeg.CLOSE)
    assert (close.state, close.attempts, close.filled_qty) == (REJECTED, 2, 0)
    assert (orders["STOP_LOSS"].state, orders["TAKE_PROFIT"].state) == (REJECTED, CANCELED)
    assert pf.position_amount(env, spec) == orders["ENTRY"].quantity
    [critical] = Alert.objects.filter(key=f"stop_loss_failed:{delivery.pk}")
    assert critical.severity == "CRITICAL"
    assert "POSITION UNPROTECTED: closing it failed" in critical.message


def test_stop_loss_refused_with_a_resting_limit_entry_cancels_it_and_closes_nothing(env, spec, bot):
    delivery = pf.arm_trio(env, bot, entry_type="LIMIT")
    pf.inject(env, "ok", "5xx", "5xx")

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.FAILED, "STOP_LOSS_FAILED")
    assert {leg: o.state for leg, o in legs(delivery).items()} == {
        "ENTRY": CANCELED,
        "STOP_LOSS": REJECTED,
        "TAKE_PROFIT": CANCELED,
    }
    assert not Order.objects.filter(delivery=delivery, leg=OrderLeg.CLOSE).exists()
    assert pf.open_orders(env, spec) == []
    assert [o.status for o in pf.all_orders(env, spec)] == ["CANCELED"]
    assert pf.open_algos(env, spec) == []
    assert pf.position_amount(env, spec) == 0
    [critical] = Alert.objects.filter(key=f"stop_loss_failed:{delivery.pk}")
    assert critical.severity == "CRITICAL"
    assert "(nothing to close)" in critical.message


def test_take_profit_refused_keeps_the_stop_loss_and_warns(env, spec, bot, settings):
    assert settings.TAKE_PROFIT_RETRIES == 2
    delivery = pf.arm_trio(env, bot)
    pf.inject(env, "ok", "ok", "5xx", "5xx", "5xx")

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    orders = legs(delivery)
    assert (orders["ENTRY"].state, orders["STOP_LOSS"].state) == (FILLED, NEW)
    take = orders["TAKE_PROFIT"]
    assert (take.state, take.attempts) == (REJECTED, 1 + settings.TAKE_PROFIT_RETRIES)
    # Each send: unknown outcome, looked up by client id, absent, so sent again; then given up.
    assert state_changes(take) == [
        ("PENDING", "UNKNOWN"),
        ("UNKNOWN", "PENDING"),
        ("PENDING", "UNKNOWN"),
        ("UNKNOWN", "PENDING"),
        ("PENDING", "UNKNOWN"),
        ("UNKNOWN", "REJECTED"),
    ]
    assert [a.client_algo_id for a in pf.open_algos(env, spec)] == [pf.client_id(delivery, "SL")]
    assert not Order.objects.filter(delivery=delivery, leg=OrderLeg.CLOSE).exists()
    assert pf.position_amount(env, spec) == orders["ENTRY"].quantity
    [warning] = Alert.objects.filter(key=f"take_profit_failed:{delivery.pk}")
    assert warning.severity == "WARNING"
    assert not Alert.objects.filter(key=f"stop_loss_failed:{delivery.pk}").exists()


# --- ambiguous outcomes of the entry ----------------------------------------------------------


@pytest.mark.parametrize("fault", ["timeout", "drop"])  # 408 -1007 / connection reset
def test_entry_executed_without_an_answer_is_resolved_by_client_id_without_a_second_order(
    env, spec, bot, fault
):
    delivery = pf.arm_trio(env, bot)
    pf.inject(env, fault)  # executed at the emulator, outcome unknown to the caller

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert delivery.status == DeliveryStatus.EXECUTED
    orders = legs(delivery)
    entry = orders["ENTRY"]
    assert (entry.state, entry.attempts) == (FILLED, 1)
    assert state_changes(entry) == [("PENDING", "UNKNOWN"), ("UNKNOWN", "FILLED")]
    assert [e.cause for e in entry.events.all()] == ["unknown outcome", "resolved by client id"]
    assert (orders["STOP_LOSS"].state, orders["TAKE_PROFIT"].state) == (NEW, NEW)
    [placed] = pf.all_orders(env, spec)
    assert (placed.client_id, placed.status) == (entry.client_order_id, "FILLED")
    assert sum(t.qty for t in pf.trades(env, spec)) == entry.quantity
    assert pf.position_amount(env, spec) == entry.quantity
    assert len(pf.open_algos(env, spec)) == 2


def test_entry_refused_with_5xx_is_rejected_and_nothing_else_is_sent(env, spec, bot):
    delivery = pf.arm_trio(env, bot)
    pf.inject(env, "5xx")  # refused before execution

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.FAILED, "ENTRY_REJECTED")
    orders = legs(delivery)
    assert state_changes(orders["ENTRY"]) == [("PENDING", "UNKNOWN"), ("UNKNOWN", "REJECTED")]
    assert orders["ENTRY"].attempts == 1
    for leg in ("STOP_LOSS", "TAKE_PROFIT"):
        assert (orders[leg].state, orders[leg].sent_at, orders[leg].attempts) == (CANCELED, None, 0)
    assert pf.all_orders(env, spec) == []
    assert pf.all_algos(env, spec) == []
    assert pf.position_amount(env, spec) == 0


# --- redelivery --------------------------------------------------------------------------------


class WorkerLost(BaseException):
    """The worker dies mid-task (not an Exception: nothing in the task catches it)."""


def test_running_a_delivery_twice_places_one_trio(env, spec, bot):
    delivery = pf.arm_trio(env, bot)
    first = delivery_execute(delivery_id=delivery.pk)

    second = delivery_execute(delivery_id=delivery.pk)

    assert (first.status, second.status) == (DeliveryStatus.EXECUTED, DeliveryStatus.EXECUTED)
    assert second.attempts == 1  # the second call saw a finished delivery and did nothing
    assert Order.objects.filter(delivery=delivery).count() == 3
    assert [o.client_id for o in pf.all_orders(env, spec)] == [pf.client_id(delivery, "E")]
    assert sorted(a.client_algo_id for a in pf.all_algos(env, spec)) == [
        pf.client_id(delivery, "SL"),
        pf.client_id(delivery, "TP"),
    ]


def test_redelivery_of_a_finished_delivery_settles_its_orders_and_sends_nothing(env, spec, bot):
    delivery = delivery_execute(delivery_id=pf.arm_trio(env, bot).pk)
    SignalDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING)

    again = delivery_execute(delivery_id=delivery.pk)

    assert (again.status, again.attempts) == (DeliveryStatus.EXECUTED, 2)
    assert {leg: o.attempts for leg, o in legs(delivery).items()} == {
        "ENTRY": 1,
        "STOP_LOSS": 1,
        "TAKE_PROFIT": 1,
    }
    assert len(pf.all_orders(env, spec)) == 1
    assert len(pf.all_algos(env, spec)) == 2


def test_redelivery_after_a_crash_once_the_entry_was_sent_places_only_the_missing_legs(
    env, spec, bot, monkeypatch
):
    delivery = pf.arm_trio(env, bot)
    original = BinanceFuturesVenue.place_order

    def send_then_die(self: Any, request: Any) -> Any:
        original(self, request)  # reaches the exchange and executes
        raise WorkerLost

    monkeypatch.setattr(BinanceFuturesVenue, "place_order", send_then_die)
    with pytest.raises(WorkerLost):
        delivery_execute(delivery_id=delivery.pk)
    crashed = legs(delivery)
    assert crashed["ENTRY"].state == OrderState.PENDING
    assert crashed["ENTRY"].sent_at is not None
    assert [crashed[leg].sent_at for leg in ("STOP_LOSS", "TAKE_PROFIT")] == [None, None]
    monkeypatch.setattr(BinanceFuturesVenue, "place_order", original)

    again = delivery_execute(delivery_id=delivery.pk)  # the broker redelivers the task

    assert (again.status, again.attempts) == (DeliveryStatus.EXECUTED, 2)
    orders = legs(delivery)
    assert (orders["ENTRY"].state, orders["ENTRY"].attempts) == (FILLED, 1)
    assert [e.cause for e in orders["ENTRY"].events.all()] == ["resolved by client id"]
    assert (orders["STOP_LOSS"].state, orders["TAKE_PROFIT"].state) == (NEW, NEW)
    assert [o.client_id for o in pf.all_orders(env, spec)] == [pf.client_id(delivery, "E")]
    assert sorted(a.client_algo_id for a in pf.all_algos(env, spec)) == [
        pf.client_id(delivery, "SL"),
        pf.client_id(delivery, "TP"),
    ]
    assert pf.position_amount(env, spec) == orders["ENTRY"].quantity


def test_redelivery_after_a_crash_once_the_stop_loss_was_sent_places_only_the_take_profit(
    env, spec, bot, monkeypatch
):
    delivery = pf.arm_trio(env, bot)
    original = BinanceFuturesVenue.place_algo_order

    def send_then_die(self: Any, request: Any) -> Any:
        original(self, request)
        raise WorkerLost

    monkeypatch.setattr(BinanceFuturesVenue, "place_algo_order", send_then_die)
    with pytest.raises(WorkerLost):
        delivery_execute(delivery_id=delivery.pk)
    monkeypatch.setattr(BinanceFuturesVenue, "place_algo_order", original)
    assert legs(delivery)["STOP_LOSS"].state == OrderState.PENDING

    again = delivery_execute(delivery_id=delivery.pk)

    assert again.status == DeliveryStatus.EXECUTED
    orders = legs(delivery)
    assert {leg: (o.state, o.attempts) for leg, o in orders.items()} == {
        "ENTRY": (FILLED, 1),
        "STOP_LOSS": (NEW, 1),
        "TAKE_PROFIT": (NEW, 1),
    }
    assert [e.cause for e in orders["STOP_LOSS"].events.all()] == ["resolved by client id"]
    assert len(pf.all_orders(env, spec)) == 1
    assert sorted(a.client_algo_id for a in pf.all_algos(env, spec)) == [
        pf.client_id(delivery, "SL"),
        pf.client_id(delivery, "TP"),
    ]


def test_redelivery_after_the_signal_expired_still_protects_the_sent_entry(
    env, spec, bot, monkeypatch
):
    delivery = pf.arm_trio(env, bot)
    original = BinanceFuturesVenue.place_order

    def send_then_die(self: Any, request: Any) -> Any:
        original(self, request)
        raise WorkerLost

    monkeypatch.setattr(BinanceFuturesVenue, "place_order", send_then_die)
    with pytest.raises(WorkerLost):
        delivery_execute(delivery_id=delivery.pk)
    monkeypatch.setattr(BinanceFuturesVenue, "place_order", original)
    late = delivery.signal.expires_at + timedelta(minutes=5)

    again = delivery_execute(delivery_id=delivery.pk, now=late)

    assert again.status == DeliveryStatus.EXECUTED
    assert {leg: o.state for leg, o in legs(delivery).items()} == {
        "ENTRY": FILLED,
        "STOP_LOSS": NEW,
        "TAKE_PROFIT": NEW,
    }
    assert len(pf.open_algos(env, spec)) == 2


def test_expired_signal_is_skipped_and_nothing_is_sent(env, spec, bot):
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(
        delivery_id=delivery.pk, now=delivery.signal.expires_at + timedelta(seconds=1)
    )

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.SKIPPED, "STALE_SIGNAL")
    assert not Order.objects.filter(delivery=delivery).exists()
    assert pf.all_orders(env, spec) == []


# --- risk rules: skipped before anything is sent ----------------------------------------------


def assert_skipped(delivery: SignalDelivery, code: str, env: Any, spec: Any) -> None:
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.SKIPPED, code)
    assert delivery.finished_at is not None
    assert not Order.objects.filter(delivery=delivery).exists()
    assert pf.all_orders(env, spec) == []
    assert pf.all_algos(env, spec) == []


def failed_checks(delivery: SignalDelivery) -> list[str]:
    return [c["code"] for c in delivery.decision["risk"]["checks"] if not c["passed"]]


def test_kill_switch_row_skips_the_delivery(env, spec, bot):
    KillSwitch.objects.create(scope=KillScope.BOT, bot=bot)
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "KILL_SWITCH", env, spec)
    assert delivery.reason == "kill switch on: bot"
    assert failed_checks(delivery) == ["KILL_SWITCH"]


def test_kill_switch_file_skips_the_delivery(env, spec, bot, settings):
    Path(settings.KILL_SWITCH_FILE).touch()
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "KILL_SWITCH", env, spec)
    assert delivery.reason == "kill switch on: file"


def test_paused_bot_gets_no_delivery_at_fan_out(env, spec, bot):
    bot.status = BotStatus.PAUSED
    bot.save()
    p = pf.prices(env)

    signal = pf.arm(bot, stop_price=p["stop"], reference_price=p["market"])

    assert signal_fan_out(signal=signal) == []
    assert not SignalDelivery.objects.filter(signal=signal).exists()


def test_bot_paused_after_fan_out_is_skipped_bot_not_active(env, spec, bot):
    delivery = pf.arm_trio(env, bot)
    bot.status = BotStatus.PAUSED
    bot.save()

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "BOT_NOT_ACTIVE", env, spec)


def test_live_bot_in_testnet_mode_is_skipped_trading_mode(env, spec):
    owner = UserFactory.create()
    credential = make_credential(
        owner=owner, environment="LIVE", api_key=spec.api_key, api_secret=spec.api_secret
    )
    live_bot = BotFactory.create(owner=owner, credential=credential, environment="LIVE")
    delivery = pf.arm_trio(env, live_bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "TRADING_MODE", env, spec)
    assert delivery.reason.startswith("refusing a LIVE venue: TRADING_MODE=TESTNET")


def test_strategy_signal_on_an_old_candle_is_skipped_stale_data(env, spec, bot):
    p = pf.prices(env)
    signal = pf.arm(
        bot,
        source=SignalSource.STRATEGY,
        key=f"strategy:manual:{params_hash({})}",
        params={},
        stop_price=p["stop"],
        reference_price=p["market"],
        candle_time=timezone.now() - timedelta(hours=5),
    )
    delivery = pf.deliver(signal, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "STALE_DATA", env, spec)
    assert failed_checks(delivery) == ["STALE_DATA"]


def test_cooldown_skips_the_delivery(env, spec, bot):
    Cooldown.objects.create(bot=bot, symbol=bot.symbol, until=timezone.now() + timedelta(hours=1))
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "COOLDOWN", env, spec)


def test_stale_market_data_for_the_bots_feed_skips_even_a_manual_signal(env, spec, bot):
    # Ingestion of the bot's feed stopped a day ago: its newest candle closed then.
    length = timedelta(seconds=INTERVAL_SECONDS[bot.interval])
    opened = timezone.now() - timedelta(days=1) - length
    price = Decimal(100)
    Kline.objects.create(
        symbol=bot.symbol, interval=bot.interval, open_time=opened,
        close_time=opened + length - timedelta(milliseconds=1),
        open=price, high=price, low=price, close=price, volume=Decimal(1),
    )  # fmt: skip
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "STALE_DATA", env, spec)
    assert delivery.reason.startswith(f"market data {bot.symbol} {bot.interval} stale: ")


def test_resting_entry_fills_the_open_position_slot(env, spec, bot):
    first = delivery_execute(delivery_id=pf.arm_trio(env, bot, entry_type="LIMIT").pk)
    assert first.status == DeliveryStatus.EXECUTED
    second = pf.arm_trio(env, bot, key=f"second:{bot.owner_id}")

    second = delivery_execute(delivery_id=second.pk)

    second.refresh_from_db()
    assert (second.status, second.reason_code, second.reason) == (
        DeliveryStatus.SKIPPED,
        "MAX_OPEN_POSITIONS",
        "open positions 1 >= max 1",
    )
    assert not Order.objects.filter(delivery=second).exists()
    assert [o.client_id for o in pf.all_orders(env, spec)] == [pf.client_id(first, "E")]


def test_unfilled_limit_entry_counts_towards_the_bot_exposure_cap(env, spec):
    bot = pf.emulator_bot(spec, max_open_positions=2)
    first = delivery_execute(delivery_id=pf.arm_trio(env, bot, entry_type="LIMIT").pk)
    entry = legs(first)["ENTRY"]
    assert (entry.state, entry.filled_qty) == (NEW, 0)
    second = pf.arm_trio(env, bot, entry_type="LIMIT", key=f"second:{bot.owner_id}")

    second = delivery_execute(delivery_id=second.pk)

    second.refresh_from_db()
    assert (second.status, second.reason_code) == (DeliveryStatus.SKIPPED, "EXPOSURE_BOT")
    assert entry.price is not None
    pending = entry.quantity * entry.price
    assert second.reason.startswith(f"bot exposure {pending.normalize():f} + new ")
    assert not Order.objects.filter(delivery=second).exists()
    assert len(pf.all_orders(env, spec)) == 1


def test_limit_entry_not_yet_sent_counts_towards_the_bot_exposure_cap(env, spec):
    # Another delivery of the bot is mid-flight: its LIMIT entry row exists, not sent yet.
    bot = pf.emulator_bot(spec, max_open_positions=2)
    p = pf.prices(env, entry_type="LIMIT")
    other = pf.arm_trio(env, bot, entry_type="LIMIT", key=f"other:{bot.owner_id}")
    Order.objects.create(
        bot=bot, delivery=other, leg=OrderLeg.ENTRY, client_order_id=pf.client_id(other, "E"),
        venue="binance", symbol=bot.symbol, side="BUY", type="LIMIT",
        quantity=Decimal("0.02"), price=p["entry"],
    )  # fmt: skip
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "EXPOSURE_BOT", env, spec)
    pending = Decimal("0.02") * p["entry"]
    assert delivery.reason.startswith(f"bot exposure {pending.normalize():f} + new ")
    assert Order.objects.get(delivery=other).state == OrderState.PENDING


def test_market_entry_of_unknown_outcome_counts_towards_the_bot_exposure_cap(
    env, spec, monkeypatch
):
    # The first entry times out (executed at the exchange) and cannot be looked up: it stays
    # UNKNOWN, protected, for the monitor. It may be a position, so it uses the bot's headroom.
    bot = pf.emulator_bot(spec, max_open_positions=2)

    def unreachable(self: Any, **kwargs: Any) -> Any:
        raise venue_errors.UnknownOutcome("ConnectionError calling order")

    monkeypatch.setattr(BinanceFuturesVenue, "get_order", unreachable)
    pf.inject(env, "timeout")
    first = delivery_execute(delivery_id=pf.arm_trio(env, bot).pk)
    monkeypatch.undo()
    entry = legs(first)["ENTRY"]
    assert (first.status, entry.state, entry.filled_qty) == (
        DeliveryStatus.EXECUTED,
        OrderState.UNKNOWN,
        0,
    )
    sized = Decimal(first.decision["sizing"]["notional"])

    second = delivery_execute(delivery_id=pf.arm_trio(env, bot, key=f"2:{bot.owner_id}").pk)

    second.refresh_from_db()
    assert (second.status, second.reason_code) == (DeliveryStatus.SKIPPED, "EXPOSURE_BOT")
    assert second.reason.startswith(f"bot exposure {sized.normalize():f} + new ")
    assert not Order.objects.filter(delivery=second).exists()
    assert [o.client_id for o in pf.all_orders(env, spec)] == [entry.client_order_id]
    assert pf.position_amount(env, spec) == entry.quantity


def test_open_circuit_breaker_skips_the_delivery(env, spec, bot, settings):
    for _ in range(settings.CIRCUIT_ERRORS):
        record_error(f"credential-{bot.credential_id}", reason="test burst")
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "CIRCUIT_OPEN", env, spec)
    assert failed_checks(delivery) == ["CIRCUIT_OPEN"]


def record_loss_today(bot: Any, *, loss: Decimal) -> None:
    """An earlier trade of the bot, filled and stopped out today: long 0.02 at 50000, exited
    ``loss`` USDT lower in total."""
    earlier, _ = signal_create(
        source=SignalSource.MANUAL,
        source_key=f"earlier:{bot.owner_id}",
        owner=bot.owner,
        symbol=bot.symbol,
        interval=bot.interval,
        kind="ARM",
        side="BUY",
        entry_type="MARKET",
        stop_price=Decimal(20000),
    )
    done = SignalDelivery.objects.create(signal=earlier, bot=bot, status=DeliveryStatus.EXECUTED)
    common = {"bot": bot, "delivery": done, "venue": "binance", "symbol": bot.symbol}
    qty = Decimal("0.02")
    Order.objects.create(
        **common, leg=OrderLeg.ENTRY, client_order_id=f"old-{done.pk}-E", side="BUY",
        type="MARKET", quantity=qty, state=FILLED, filled_qty=qty, avg_price=Decimal(50000),
    )  # fmt: skip
    Order.objects.create(
        **common, leg=OrderLeg.STOP_LOSS, client_order_id=f"old-{done.pk}-SL", side="SELL",
        type="STOP_MARKET", is_algo=True, reduce_only=True, quantity=qty, state=FILLED,
        filled_qty=qty, avg_price=Decimal(50000) - loss / qty,
    )  # fmt: skip
    position_sync(delivery_id=done.pk)  # as the lifecycle derives it from the fills


def test_realized_loss_today_beyond_the_daily_limit_skips_the_delivery(env, spec, bot):
    record_loss_today(bot, loss=Decimal(600))  # beyond 5 % of the 10000 USDT equity
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "DAILY_LOSS", env, spec)
    assert delivery.reason == "daily loss 600 >= limit 5% of equity 10000 = 500 USDT"


def test_realized_loss_within_the_daily_limit_lets_the_delivery_through(env, spec, bot):
    record_loss_today(bot, loss=Decimal(400))

    delivery = delivery_execute(delivery_id=pf.arm_trio(env, bot).pk)

    assert delivery.status == DeliveryStatus.EXECUTED
    [daily] = [c for c in delivery.decision["risk"]["checks"] if c["code"] == "DAILY_LOSS"]
    assert daily == {
        "code": "DAILY_LOSS",
        "passed": True,
        "detail": "daily loss 400 < limit 5% of equity 10000 = 500 USDT",
    }


def test_realized_loss_this_week_beyond_the_weekly_limit_skips_the_delivery(
    env, spec, bot, settings
):
    settings.WEEKLY_LOSS_LIMIT_PCT = "1"
    record_loss_today(bot, loss=Decimal(200))  # within the daily 5 %, beyond the weekly 1 %
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "WEEKLY_LOSS", env, spec)
    assert failed_checks(delivery) == ["WEEKLY_LOSS"]


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("MAX_SYMBOL_NOTIONAL_USDT", "EXPOSURE_SYMBOL"),
        ("MAX_USER_NOTIONAL_USDT", "EXPOSURE_USER"),
        ("MAX_ACCOUNT_NOTIONAL_USDT", "EXPOSURE_ACCOUNT"),
    ],
)
def test_platform_exposure_cap_below_the_sized_order_skips_it(
    env, spec, bot, settings, setting, code
):
    setattr(settings, setting, "500")
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, code, env, spec)
    assert failed_checks(delivery) == [code]
    assert delivery.reason.endswith("> cap 500 USDT")


def test_symbol_the_exchange_does_not_list_is_skipped(env, spec):
    bot = pf.emulator_bot(spec, symbol="SOLUSDT")
    signal = pf.arm(bot, stop_price=Decimal(90), reference_price=Decimal(100))

    delivery = delivery_execute(delivery_id=pf.deliver(signal, bot).pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason_code, delivery.reason) == (
        DeliveryStatus.SKIPPED,
        "SYMBOL_NOT_TRADABLE",
        "exchange rules unknown for SOLUSDT",
    )
    assert not Order.objects.filter(delivery=delivery).exists()


def test_risk_budget_too_small_for_the_minimum_notional_skips_the_delivery(env, spec):
    bot = pf.emulator_bot(spec, risk_per_trade_pct=Decimal("0.01"))
    delivery = pf.arm_trio(env, bot)

    delivery = delivery_execute(delivery_id=delivery.pk)

    assert_skipped(delivery, "BELOW_MIN_NOTIONAL", env, spec)
    assert delivery.reason.startswith("notional ")
    assert "< min notional 50 USDT" in delivery.reason
    assert delivery.decision["risk"]["allowed"] is True


# --- DRY_RUN: the paper venue, shared through the database ------------------------------------


def test_dry_run_without_any_price_is_skipped(settings, tmp_path):
    settings.TRADING_MODE = "DRY_RUN"
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL")
    paper_bot = BotFactory.create()
    signal = pf.arm(paper_bot, stop_price=Decimal(49000))  # no reference price

    delivery = delivery_execute(delivery_id=pf.deliver(signal, paper_bot).pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.SKIPPED, "NO_MARKET_PRICE")
    assert not Order.objects.filter(delivery=delivery).exists()


def test_dry_run_trio_persists_in_the_paper_account_and_the_stop_fills(settings, tmp_path):
    settings.TRADING_MODE = "DRY_RUN"
    settings.KILL_SWITCH_FILE = str(tmp_path / "KILL")
    paper_bot = BotFactory.create()  # no credential: paper only
    signal = pf.arm(
        paper_bot,
        stop_price=Decimal(49000),
        take_profit_price=Decimal(52000),
        reference_price=Decimal(50000),
    )
    delivery = delivery_execute(delivery_id=pf.deliver(signal, paper_bot).pk)

    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    orders = legs(delivery)
    assert {leg: (o.state, o.venue) for leg, o in orders.items()} == {
        "ENTRY": (FILLED, "paper"),
        "STOP_LOSS": (NEW, "paper"),
        "TAKE_PROFIT": (NEW, "paper"),
    }
    assert PaperAccount.objects.filter(bot=paper_bot).count() == 1
    # Another process: a new venue object, rebuilt from the database row.
    other = PersistentPaperVenue(bot_id=paper_bot.pk)
    resting = other.open_orders(symbol=pf.SYMBOL)
    assert sorted((o.client_id, o.is_algo, o.status) for o in resting) == [
        (pf.client_id(delivery, "SL"), True, "NEW"),
        (pf.client_id(delivery, "TP"), True, "NEW"),
    ]
    [long] = other.positions(symbol=pf.SYMBOL)
    assert long.amount == orders["ENTRY"].quantity

    PersistentPaperVenue(bot_id=paper_bot.pk).feed_price(pf.SYMBOL, Decimal(48500))

    later = PersistentPaperVenue(bot_id=paper_bot.pk)
    stop = later.get_algo_order(symbol=pf.SYMBOL, client_id=pf.client_id(delivery, "SL"))
    assert stop.status == "FINISHED"
    [exit_trade] = [t for t in later.user_trades(symbol=pf.SYMBOL) if t.side == "SELL"]
    assert exit_trade.qty == orders["ENTRY"].quantity
    assert exit_trade.realized_pnl < 0
    assert [p.amount for p in later.positions(symbol=pf.SYMBOL) if p.amount] == []
