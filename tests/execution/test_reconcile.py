"""Reconciliation (``manage.py reconcile``) against the emulator: after a downtime in which a
stop-loss and a take-profit filled, one pass brings the database to the exchange's truth;
orders the database does not know are adopted (our client id) or reported (foreign); a dry run
changes nothing; an account that cannot be reconciled has its bots paused."""

from __future__ import annotations

import socket
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from execution.models import (
    Cooldown,
    DeliveryStatus,
    Fill,
    Order,
    OrderEvent,
    Position,
    SignalDelivery,
)
from execution.services import delivery_execute
from execution.states import OrderState
from tests.execution import lifecycle_fixtures as lf
from tests.execution import placement_fixtures as pf
from trader.models import Alert, Bot, BotStatus

pytestmark = pytest.mark.django_db

NEW, FILLED, CANCELED = OrderState.NEW, OrderState.FILLED, OrderState.CANCELED


@pytest.fixture
def env(emu: Any, settings: Any, tmp_path: Any) -> Any:
    """The module's emulator (limits and faults reset), TESTNET against it."""
    emu.reset()
    pf.use_emulator(emu, settings, tmp_path)
    return emu


def reconcile(*args: str) -> list[str]:
    """Run ``manage.py reconcile`` and return the lines it printed."""
    out = StringIO()
    call_command("reconcile", *args, stdout=out)
    return out.getvalue().splitlines()


def codes(delivery: Any) -> dict[str, Order]:
    return {
        o.client_order_id.rsplit("-", 1)[-1]: o for o in Order.objects.filter(delivery=delivery)
    }


def algo_statuses(env: Any, spec: Any) -> dict[str, str]:
    return {a.client_algo_id.rsplit("-", 1)[-1]: a.status for a in pf.all_algos(env, spec)}


def market_trio(env: Any, bot: Any, exit_: lf.Exit) -> SignalDelivery:
    signal = pf.arm(
        bot, stop_price=exit_.stop, take_profit_price=exit_.take_profit, reference_price=env.price()
    )
    delivery = delivery_execute(delivery_id=pf.deliver(signal, bot).pk)
    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    return delivery


def database_rows() -> dict[str, list[Any]]:
    """Every row reconciliation could touch, as plain values."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Order, OrderEvent, Position, Fill, Cooldown, Alert, Bot, SignalDelivery)
    }


def place_by_hand(env: Any, spec: Any, client_id: str, price: Decimal) -> dict[str, Any]:
    """A resting LIMIT BUY of 0.010 placed on the exchange's website (not by the platform)."""
    client = env.client(spec)
    try:
        return dict(
            client.futures_create_order(
                symbol=pf.SYMBOL,
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.010",
                price=f"{price:f}",
                newClientOrderId=client_id,
            )
        )
    finally:
        client.close_connection()


# --- after a downtime --------------------------------------------------------------------------


def test_one_pass_after_a_downtime_brings_the_database_to_the_exchange_truth(env):
    spec_s, spec_t = env.fresh_account(), env.fresh_account()
    bot_s, bot_t = pf.emulator_bot(spec_s), pf.emulator_bot(spec_t)
    (stop_exit, take_exit), advance_s = lf.plan_exits(
        env, entry=env.price(), legs=["STOP_LOSS", "TAKE_PROFIT"]
    )
    d_s, d_t = market_trio(env, bot_s, stop_exit), market_trio(env, bot_t, take_exit)
    qty = codes(d_s)["E"].quantity
    # The platform is down: nothing hears the stream, nothing polls.
    lf.advance(env, advance_s)
    assert algo_statuses(env, spec_s) == {"SL": "FINISHED", "TP": "NEW"}
    assert algo_statuses(env, spec_t) == {"SL": "NEW", "TP": "FINISHED"}
    assert (pf.position_amount(env, spec_s), pf.position_amount(env, spec_t)) == (0, 0)
    assert {o.state for o in Order.objects.filter(delivery__in=[d_s, d_t])} == {FILLED, NEW}

    lines = reconcile()

    assert lines[0] == "accounts 2, orders checked 4"
    assert sorted(lines[1:]) == sorted(
        [
            f"updated: tr-{d_s.pk}-SL: NEW -> FILLED",
            f"updated: tr-{d_s.pk}-TP: NEW -> CANCELED",
            f"updated: tr-{d_t.pk}-TP: NEW -> FILLED",
            f"updated: tr-{d_t.pk}-SL: NEW -> CANCELED",
        ]
    )
    # The exchange: no protective order left for the closed positions.
    assert algo_statuses(env, spec_s) == {"SL": "FINISHED", "TP": "CANCELED"}
    assert algo_statuses(env, spec_t) == {"SL": "CANCELED", "TP": "FINISHED"}
    assert pf.open_algos(env, spec_s) == pf.open_algos(env, spec_t) == []
    # The database: the same, with the fills and the exchange's PnL and fees.
    for delivery, spec, exit_code, sibling in (
        (d_s, spec_s, "SL", "TP"),
        (d_t, spec_t, "TP", "SL"),
    ):
        orders = codes(delivery)
        assert {c: o.state for c, o in orders.items()} == {
            "E": FILLED,
            exit_code: FILLED,
            sibling: CANCELED,
        }
        assert orders[exit_code].filled_qty == qty
        trades = pf.trades(env, spec)
        assert sorted(
            (f.order.client_order_id if f.order else "", f.venue_trade_id, f.qty)
            for f in Fill.objects.filter(bot=delivery.bot).select_related("order")
        ) == sorted(
            (orders["E" if t.side == "BUY" else exit_code].client_order_id, t.trade_id, t.qty)
            for t in trades
        )
        position = Position.objects.get(delivery=delivery)
        assert (position.status, position.quantity, position.exit_qty) == ("CLOSED", 0, qty)
        assert position.realized_pnl == sum(t.realized_pnl for t in trades)
        assert position.fees == sum(t.commission for t in trades)
    assert (
        Position.objects.get(delivery=d_s).realized_pnl
        < 0
        < (Position.objects.get(delivery=d_t).realized_pnl)
    )
    assert list(Cooldown.objects.values_list("bot_id", flat=True)) == [bot_s.pk]  # stop-out only
    assert not Alert.objects.filter(key__startswith="reconcile").exists()

    rows = database_rows()
    assert reconcile() == ["accounts 2, orders checked 0"]  # nothing new
    assert database_rows() == rows


# --- orders the database does not know ---------------------------------------------------------


@pytest.mark.parametrize("cancel_foreign", [False, True], ids=["left-alone", "cancelled"])
def test_foreign_order_is_reported_and_alerted_and_cancelled_only_when_configured(
    env, settings, cancel_foreign
):
    settings.RECONCILE_CANCEL_FOREIGN = cancel_foreign
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    placed = place_by_hand(env, spec, "by-hand-1", pf.on_tick(env.price() * Decimal("0.9")))

    lines = reconcile()

    assert lines == [
        "accounts 1, orders checked 1",
        "foreign: by-hand-1 BUY LIMIT BTCUSDT",
        *(["cancelled: by-hand-1 (foreign)"] if cancel_foreign else []),
    ]
    [order] = [o for o in pf.all_orders(env, spec) if o.order_id == placed["orderId"]]
    assert order.status == ("CANCELED" if cancel_foreign else "NEW")
    assert not Order.objects.exists()  # never taken for ours
    assert Bot.objects.get(pk=bot.pk).status == BotStatus.ACTIVE
    [warning] = Alert.objects.filter(key="reconcile_differences")
    assert (warning.severity, warning.context["foreign"]) == (
        "WARNING",
        ["by-hand-1 BUY LIMIT BTCUSDT"],
    )


def test_order_with_our_client_id_unknown_to_the_database_is_adopted_into_its_delivery(env):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    delivery = pf.arm_trio(env, bot, entry_type="LIMIT")  # its rows were lost (a restore)
    entry_price = pf.on_tick(env.price() * Decimal("0.97"))
    placed = place_by_hand(env, spec, pf.client_id(delivery, "E"), entry_price)
    assert not Order.objects.exists()

    lines = reconcile()

    assert lines == [
        "accounts 1, orders checked 1",
        f"adopted: tr-{delivery.pk}-E (credential-{bot.credential_id})",
    ]
    [order] = Order.objects.all()
    assert (order.delivery_id, order.bot_id, order.leg, order.generation) == (
        delivery.pk,
        bot.pk,
        "ENTRY",
        1,
    )
    assert (order.state, order.venue_order_id, order.quantity, order.price, order.side) == (
        NEW,
        placed["orderId"],
        Decimal("0.010"),
        entry_price,
        "BUY",
    )
    assert [(e.from_state, e.to_state) for e in order.events.all()] == [("UNKNOWN", "NEW")]
    assert not Alert.objects.filter(key="reconcile_differences").exists()
    assert reconcile() == ["accounts 1, orders checked 1"]  # known now: nothing to adopt


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_reports_what_differs_and_changes_nothing(env, settings):
    settings.RECONCILE_CANCEL_FOREIGN = True  # even so: a dry run cancels nothing
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    (exit_,), advance_s = lf.plan_exits(env, entry=env.price(), legs=["STOP_LOSS"])
    stopped = market_trio(env, bot, exit_)
    lost = pf.arm_trio(env, bot, entry_type="LIMIT", key="lost-rows")
    place_by_hand(env, spec, pf.client_id(lost, "E"), pf.on_tick(env.price() * Decimal("0.97")))
    place_by_hand(env, spec, "by-hand-2", pf.on_tick(env.price() * Decimal("0.9")))
    lf.advance(env, advance_s)  # the stop fills while nobody listens
    rows = database_rows()
    venue_before = (pf.open_orders(env, spec), pf.open_algos(env, spec), pf.all_algos(env, spec))

    lines = reconcile("--dry-run")

    assert lines[0] == "accounts 1, orders checked 4"
    assert sorted(lines[1:]) == sorted(
        [
            f"updated: tr-{stopped.pk}-SL: NEW in DB, not open at venue",
            f"adopted: tr-{lost.pk}-E (would adopt)",
            "foreign: by-hand-2 BUY LIMIT BTCUSDT",
            # The trade's Position exists from placement; the venue's position closed meanwhile.
            "position mismatches: BTCUSDT: venue 0.000, database 0.0210000000",
        ]
    )
    assert database_rows() == rows
    assert (pf.open_orders(env, spec), pf.open_algos(env, spec), pf.all_algos(env, spec)) == (
        venue_before
    )


# --- an account that cannot be reconciled ------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


def test_unreachable_exchange_pauses_the_active_bots_alerts_critically_and_exits_nonzero(
    env, settings
):
    specs = [env.fresh_account() for _ in range(3)]
    active = [pf.emulator_bot(spec) for spec in specs[:2]]
    stopped = pf.emulator_bot(specs[2], status=BotStatus.STOPPED)
    settings.BINANCE_BASE_URL = f"http://127.0.0.1:{closed_port()}/fapi"
    out = StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("reconcile", stdout=out)

    assert exited.value.code == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "accounts 3, orders checked 0"
    failed = sorted(line.split(":", 2)[1].strip() for line in lines if line.startswith("errors:"))
    assert failed == sorted(f"credential-{b.credential_id}" for b in [*active, stopped])
    assert lines[-1] == f"paused bots: {sorted(b.pk for b in active)}"
    assert {b.pk: b.status for b in Bot.objects.all()} == {
        active[0].pk: BotStatus.PAUSED,
        active[1].pk: BotStatus.PAUSED,
        stopped.pk: BotStatus.STOPPED,
    }
    critical = Alert.objects.filter(severity="CRITICAL", key__startswith="reconcile_failed:")
    assert sorted((a.key, a.owner_id) for a in critical) == sorted(
        (f"reconcile_failed:credential-{b.credential_id}", b.owner_id) for b in [*active, stopped]
    )
