"""The order lifecycle after placement, with the emulator as the exchange: the user data stream
(its real websocket, events fed to ``event_apply``) and polling alone (``monitor_pass``) record
the same thing; repeated and out-of-order events change nothing; a stop-out cancels the
take-profit and closes the position with the exchange's PnL and fees; partial entry fills are
covered exactly; a stop lost at the exchange is replaced."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from execution.lifecycle import event_apply
from execution.models import Cooldown, DeliveryStatus, Fill, Order, OrderEvent, Position
from execution.monitor import monitor_pass
from execution.services import delivery_execute
from execution.states import OrderState
from tests.execution import lifecycle_fixtures as lf
from tests.execution import placement_fixtures as pf
from trader.models import Bot, BotStatus

pytestmark = pytest.mark.django_db

NEW, FILLED, CANCELED, PARTIAL = (
    OrderState.NEW,
    OrderState.FILLED,
    OrderState.CANCELED,
    OrderState.PARTIALLY_FILLED,
)
LOT = Decimal("0.001")


@pytest.fixture
def env(emu: Any, settings: Any, tmp_path: Any) -> Any:
    """The module's emulator (limits and faults reset), TESTNET against it, and a monitor that
    polls at once (no grace for just-touched orders, no quiet period)."""
    emu.reset()
    pf.use_emulator(emu, settings, tmp_path)
    settings.MONITOR_GRACE_S = 0
    settings.MONITOR_POLL_AFTER_S = 0
    return emu


@pytest.fixture
def taps() -> Any:
    """Stream taps opened by a test, closed at its end."""
    opened: list[lf.StreamTap] = []
    yield opened
    for tap in opened:
        tap.close()


def open_tap(env: Any, spec: Any, taps: list[lf.StreamTap]) -> lf.StreamTap:
    tap = lf.StreamTap(env, spec)
    taps.append(tap)
    return tap


def legs(delivery: Any) -> dict[str, Order]:
    """Every order of the delivery, by its code (E, SL, SL2, TP, ...)."""
    return {
        o.client_order_id.rsplit("-", 1)[-1]: o for o in Order.objects.filter(delivery=delivery)
    }


def live_algos(env: Any, spec: Any) -> dict[str, tuple[str, Decimal]]:
    """Open algo orders at the emulator: code -> (type, quantity)."""
    return {
        a.client_algo_id.rsplit("-", 1)[-1]: (a.order_type, a.quantity)
        for a in pf.open_algos(env, spec)
    }


def algo_statuses(env: Any, spec: Any) -> dict[str, str]:
    return {a.client_algo_id.rsplit("-", 1)[-1]: a.status for a in pf.all_algos(env, spec)}


def half_of(qty: Decimal) -> Decimal:
    return (qty / 2).quantize(LOT)


def limit_trio(env: Any, bot: Any, *, entry: Decimal, stop: Decimal, take: Decimal) -> Any:
    signal = pf.arm(
        bot,
        entry_type="LIMIT",
        entry_price=entry,
        stop_price=stop,
        take_profit_price=take,
        reference_price=env.price(),
    )
    delivery = delivery_execute(delivery_id=pf.deliver(signal, bot).pk)
    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    return delivery


def market_trio(env: Any, bot: Any, exit_: lf.Exit) -> Any:
    signal = pf.arm(
        bot,
        stop_price=exit_.stop,
        take_profit_price=exit_.take_profit,
        reference_price=env.price(),
    )
    delivery = delivery_execute(delivery_id=pf.deliver(signal, bot).pk)
    assert (delivery.status, delivery.reason_code) == (DeliveryStatus.EXECUTED, "PLACED")
    return delivery


# --- stream and polling agree ------------------------------------------------------------------


def test_fill_through_the_stream_and_through_polling_alone_give_the_same_records(env, taps):
    spec_a, spec_b = env.fresh_account(), env.fresh_account()
    bot_a, bot_b = pf.emulator_bot(spec_a), pf.emulator_bot(spec_b)
    tap = open_tap(env, spec_a, taps)
    entry = pf.on_tick(env.price() * Decimal("0.999"))  # rests: the market is frozen
    (exit_,), advance_s = lf.plan_exits(env, entry=entry, legs=["STOP_LOSS"])
    deliveries = {
        bot.pk: limit_trio(env, bot, entry=entry, stop=exit_.stop, take=exit_.take_profit)
        for bot in (bot_a, bot_b)
    }
    d_a, d_b = deliveries[bot_a.pk], deliveries[bot_b.pk]
    qty = legs(d_a)["E"].quantity
    assert legs(d_b)["E"].quantity == qty

    def step() -> None:
        """A learns from its stream only; then B from a monitor pass, which must find nothing
        to change for A."""
        lf.apply_stream(tap, account=lf.account_key(bot_a))
        before = lf.bot_footprint(bot_a)
        report = monitor_pass()
        assert lf.bot_footprint(bot_a) == before
        assert not [u for u in report.updated if u.startswith(f"tr-{d_a.pk}-")]
        assert report.errors == []

    step()
    for spec, delivery in ((spec_a, d_a), (spec_b, d_b)):
        lf.fill(env, spec, pf.client_id(delivery, "E"), half_of(qty))
    step()
    for spec, delivery in ((spec_a, d_a), (spec_b, d_b)):
        lf.fill(env, spec, pf.client_id(delivery, "E"), qty - half_of(qty))
    step()
    lf.advance(env, advance_s)  # the stop-loss (third generation) fills at the emulator
    step()

    records_a, records_b = lf.trade_records(d_a), lf.trade_records(d_b)
    assert records_a == records_b
    # ... and they are the right records, not merely equal ones.
    half = half_of(qty)
    assert [(o[0], o[3], o[6]) for o in records_a["orders"]] == [
        ("E", FILLED, qty),
        ("SL", CANCELED, qty),
        ("SL2", CANCELED, half),
        ("SL3", FILLED, qty),
        ("TP", CANCELED, qty),
        ("TP2", CANCELED, half),
        ("TP3", CANCELED, qty),
    ]
    assert records_a["position"][:4] == ("LONG", "CLOSED", 0, qty)
    assert [(f[0], f[1], f[3]) for f in records_a["fills"]] == [
        ("E", "BUY", half),
        ("E", "BUY", qty - half),
        ("SL3", "SELL", qty),
    ]
    assert (records_a["unattributed_fills"], records_a["cooldown"]) == (0, True)
    for spec in (spec_a, spec_b):
        assert pf.position_amount(env, spec) == 0
        assert pf.open_algos(env, spec) == []


# --- idempotent and monotonic -----------------------------------------------------------------


ORDERINGS = {
    "in-order": ["placed", "filled"],
    "each-twice": ["placed", "placed", "filled", "filled"],
    "filled-then-older-new": ["filled", "placed"],
    "filled-twice-around-older-new": ["filled", "placed", "filled"],
}


@pytest.mark.parametrize("ordering", sorted(ORDERINGS))
def test_repeated_and_out_of_order_events_leave_the_same_final_state(env, taps, ordering):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    tap = open_tap(env, spec, taps)
    p = pf.prices(env, entry_type="LIMIT")  # 3 % under the market: rests for minutes
    delivery = limit_trio(env, bot, entry=p["entry"], stop=p["stop"], take=p["take_profit"])
    entry = legs(delivery)["E"]
    placed = tap.take()  # NEW of the entry, of the stop-loss and of the take-profit
    lf.advance(env, Decimal(60))  # later venue times for what follows
    lf.fill(env, spec, entry.client_order_id, entry.quantity)
    filled = tap.take()  # the entry's TRADE (FILLED) and the ACCOUNT_UPDATE
    assert [e["e"] for e in placed] == ["ORDER_TRADE_UPDATE", "ALGO_UPDATE", "ALGO_UPDATE"]
    assert [(e["e"], e.get("o", {}).get("X")) for e in filled] == [
        ("ORDER_TRADE_UPDATE", "FILLED"),
        ("ACCOUNT_UPDATE", None),
    ]
    assert filled[0]["T"] > placed[0]["T"]
    batches = {"placed": placed, "filled": filled}
    account = lf.account_key(bot)
    events_after: list[int] = []

    for name in ORDERINGS[ordering]:
        for event in batches[name]:
            event_apply(account=account, event=event)
        events_after.append(OrderEvent.objects.filter(order__delivery=delivery).count())

    # The entry's history is placement then fill, whatever came twice or late; the
    # protective orders were placed for the full quantity and are left as they are.
    assert [(e.from_state, e.to_state) for e in OrderEvent.objects.filter(order=entry)] == [
        ("PENDING", "NEW"),
        ("NEW", "FILLED"),
    ]
    assert events_after[-1] == 4  # entry x2, stop-loss x1, take-profit x1
    assert events_after[ORDERINGS[ordering].index("filled") :] == [4] * (
        len(ORDERINGS[ordering]) - ORDERINGS[ordering].index("filled")
    )
    now = legs(delivery)
    assert (now["E"].state, now["E"].filled_qty, now["E"].avg_price) == (
        FILLED,
        entry.quantity,
        p["entry"],
    )
    assert now["E"].venue_update_ms == filled[0]["T"]
    assert {code: (o.state, o.quantity) for code, o in now.items() if code != "E"} == {
        "SL": (NEW, entry.quantity),
        "TP": (NEW, entry.quantity),
    }
    [fill] = Fill.objects.filter(order=entry)
    assert (fill.qty, fill.price, fill.venue_trade_id) == (
        entry.quantity,
        p["entry"],
        filled[0]["o"]["t"],
    )
    position = Position.objects.get(delivery=delivery)
    assert (position.status, position.quantity, position.entry_price, position.fees) == (
        "OPEN",
        entry.quantity,
        p["entry"],
        fill.commission,
    )
    assert live_algos(env, spec) == {
        "SL": ("STOP_MARKET", entry.quantity),
        "TP": ("TAKE_PROFIT_MARKET", entry.quantity),
    }


# --- exits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("learned_from", ["stream", "polling"])
def test_stop_fill_cancels_the_take_profit_and_closes_with_the_exchange_pnl_and_fees(
    env, taps, settings, learned_from
):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    tap = open_tap(env, spec, taps)
    (exit_,), advance_s = lf.plan_exits(env, entry=env.price(), legs=["STOP_LOSS"])
    delivery = market_trio(env, bot, exit_)
    qty = legs(delivery)["E"].quantity

    def learn() -> None:
        if learned_from == "stream":
            lf.apply_stream(tap, account=lf.account_key(bot))
        else:
            assert monitor_pass().errors == []

    learn()
    assert Position.objects.get(delivery=delivery).status == "OPEN"
    lf.advance(env, advance_s)
    learn()
    stopped_at = timezone.now()

    now = legs(delivery)
    assert (now["SL"].state, now["SL"].filled_qty, now["TP"].state) == (FILLED, qty, CANCELED)
    assert algo_statuses(env, spec) == {"SL": "FINISHED", "TP": "CANCELED"}
    assert pf.position_amount(env, spec) == 0
    account = pf.account_of(env, spec)
    child = env.call(
        lambda: env.emulator.engine.get_algo(account, client_id=now["SL"].client_order_id)
    ).actual_order_id
    trades = env.client(spec).futures_account_trades(symbol=pf.SYMBOL)  # userTrades
    exits = [t for t in trades if t["orderId"] == child]  # the stop's market order
    assert [t["orderId"] for t in trades] == [now["E"].venue_order_id, child]
    position = Position.objects.get(delivery=delivery)
    assert (position.status, position.quantity, position.exit_qty) == ("CLOSED", 0, qty)
    assert position.realized_pnl == sum(Decimal(t["realizedPnl"]) for t in exits)
    assert position.realized_pnl < 0
    assert position.fees == sum(Decimal(t["commission"]) for t in trades)
    assert position.exit_price == Decimal(exits[0]["price"])
    cooldown = Cooldown.objects.get(bot=bot, symbol=pf.SYMBOL)
    assert cooldown.reason == f"stop-out {pf.client_id(delivery, 'SL')}"
    expected_until = stopped_at + timedelta(seconds=settings.COOLDOWN_AFTER_STOP_S)
    assert expected_until - timedelta(seconds=30) <= cooldown.until <= expected_until


@pytest.mark.parametrize("learned_from", ["stream", "polling"])
def test_partial_entry_fills_are_covered_by_protective_orders_of_exactly_the_filled_quantity(
    env, taps, learned_from
):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    tap = open_tap(env, spec, taps)
    p = pf.prices(env, entry_type="LIMIT")
    delivery = limit_trio(env, bot, entry=p["entry"], stop=p["stop"], take=p["take_profit"])
    entry = legs(delivery)["E"]
    qty, half = entry.quantity, half_of(entry.quantity)

    def learn() -> None:
        if learned_from == "stream":
            lf.apply_stream(tap, account=lf.account_key(bot))
        else:
            assert monitor_pass().errors == []

    learn()
    lf.fill(env, spec, entry.client_order_id, half)
    learn()

    assert live_algos(env, spec) == {
        "SL2": ("STOP_MARKET", half),
        "TP2": ("TAKE_PROFIT_MARKET", half),
    }
    assert algo_statuses(env, spec) == {
        "SL": "CANCELED",
        "TP": "CANCELED",
        "SL2": "NEW",
        "TP2": "NEW",
    }
    now = legs(delivery)
    assert {c: (o.state, o.quantity, o.trigger_price) for c, o in now.items()} == {
        "E": (PARTIAL, qty, None),
        "SL": (CANCELED, qty, p["stop"]),
        "TP": (CANCELED, qty, p["take_profit"]),
        "SL2": (NEW, half, p["stop"]),
        "TP2": (NEW, half, p["take_profit"]),
    }
    assert now["E"].filled_qty == half
    assert Position.objects.get(delivery=delivery).quantity == half

    lf.fill(env, spec, entry.client_order_id, qty - half)
    learn()

    assert live_algos(env, spec) == {
        "SL3": ("STOP_MARKET", qty),
        "TP3": ("TAKE_PROFIT_MARKET", qty),
    }
    assert algo_statuses(env, spec) == {
        "SL": "CANCELED",
        "TP": "CANCELED",
        "SL2": "CANCELED",
        "TP2": "CANCELED",
        "SL3": "NEW",
        "TP3": "NEW",
    }
    now = legs(delivery)
    assert {c: (o.state, o.quantity) for c, o in now.items() if c != "E"} == {
        "SL": (CANCELED, qty),
        "TP": (CANCELED, qty),
        "SL2": (CANCELED, half),
        "TP2": (CANCELED, half),
        "SL3": (NEW, qty),
        "TP3": (NEW, qty),
    }
    assert (now["E"].state, now["E"].filled_qty) == (FILLED, qty)
    assert Position.objects.get(delivery=delivery).quantity == qty
    assert pf.position_amount(env, spec) == qty


def test_stop_cancelled_at_the_exchange_is_replaced_by_the_monitor_with_the_next_generation(env):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    delivery = pf.arm_trio(env, bot)
    delivery = delivery_execute(delivery_id=delivery.pk)
    placed = legs(delivery)
    qty = placed["E"].quantity
    account = pf.account_of(env, spec)
    env.call(
        lambda: env.emulator.engine.cancel_algo(account, client_id=placed["SL"].client_order_id)
    )  # by hand, on the exchange's website
    assert set(live_algos(env, spec)) == {"TP"}

    report = monitor_pass()

    assert report.errors == []
    assert f"{placed['SL'].client_order_id}: NEW -> CANCELED" in report.updated
    assert f"{placed['E'].client_order_id}: open position without a live stop-loss" in (
        report.updated
    )
    now = legs(delivery)
    assert (now["SL"].state, now["SL2"].state, now["SL2"].generation) == (CANCELED, NEW, 2)
    assert (now["SL2"].quantity, now["SL2"].trigger_price) == (qty, placed["SL"].trigger_price)
    assert live_algos(env, spec) == {
        "SL2": ("STOP_MARKET", qty),
        "TP": ("TAKE_PROFIT_MARKET", qty),
    }
    [stop] = [a for a in pf.open_algos(env, spec) if a.client_algo_id.endswith("-SL2")]
    assert (stop.trigger_price, stop.reduce_only, stop.side) == (
        placed["SL"].trigger_price,
        True,
        "SELL",
    )
    assert pf.position_amount(env, spec) == qty
    # A second pass finds the position protected and places nothing more.
    assert monitor_pass().updated == []
    assert set(live_algos(env, spec)) == {"SL2", "TP"}


@pytest.mark.parametrize("bot_status", [BotStatus.ACTIVE, BotStatus.PAUSED])
def test_stop_cancelled_by_hand_and_seen_on_the_stream_is_replaced_at_the_next_monitor_pass(
    env, taps, bot_status
):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    tap = open_tap(env, spec, taps)
    delivery = delivery_execute(delivery_id=pf.arm_trio(env, bot, take_profit=False).pk)
    lf.apply_stream(tap, account=lf.account_key(bot))
    Bot.objects.filter(pk=bot.pk).update(status=bot_status)  # paused: its position still counts
    placed = legs(delivery)
    account = pf.account_of(env, spec)
    env.call(
        lambda: env.emulator.engine.cancel_algo(account, client_id=placed["SL"].client_order_id)
    )
    lf.apply_stream(tap, account=lf.account_key(bot))
    assert {c: o.state for c, o in legs(delivery).items()} == {"E": FILLED, "SL": CANCELED}

    report = monitor_pass()  # nothing of the bot is open any more but its position

    assert report.updated == [
        f"{placed['E'].client_order_id}: open position without a live stop-loss"
    ]
    now = legs(delivery)
    assert (now["SL2"].state, now["SL2"].quantity) == (NEW, placed["E"].quantity)
    assert live_algos(env, spec) == {"SL2": ("STOP_MARKET", placed["E"].quantity)}


def test_market_entry_events_replayed_after_the_placement_reply_add_no_history(env, taps):
    spec = env.fresh_account()
    bot = pf.emulator_bot(spec)
    tap = open_tap(env, spec, taps)
    delivery = delivery_execute(delivery_id=pf.arm_trio(env, bot).pk)
    entry = legs(delivery)["E"]
    events = tap.take()  # NEW then TRADE of the entry at the same venue time, after its reply
    entry_events = [e for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert [e["o"]["X"] for e in entry_events] == ["NEW", "FILLED"]
    assert entry_events[0]["T"] == entry_events[1]["T"]
    history = [(e.from_state, e.to_state, e.cause) for e in OrderEvent.objects.filter(order=entry)]
    assert history == [("PENDING", "FILLED", "placed")]

    for _ in range(2):
        for event in events:
            event_apply(account=lf.account_key(bot), event=event)

    assert [
        (e.from_state, e.to_state, e.cause) for e in OrderEvent.objects.filter(order=entry)
    ] == history
    entry.refresh_from_db()
    assert (entry.state, entry.filled_qty, entry.venue_update_ms) == (
        FILLED,
        entry.quantity,
        entry_events[1]["T"],
    )
    assert Fill.objects.filter(order=entry).count() == 1


def test_monitor_polls_little_while_the_stream_is_connected(settings):
    """With a live stream beacon the monitor leaves quiet open orders to the stream; without
    it, it polls them (the stream may have missed something)."""
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    from execution.models import Order
    from execution.monitor import STREAM_BEACON, monitor_pass
    from tests.factories import BotFactory

    settings.TRADING_MODE = "DRY_RUN"
    settings.MONITOR_GRACE_S = 0
    settings.MONITOR_POLL_AFTER_S = 0
    bot = BotFactory.create()
    order = Order.objects.create(
        bot=bot,
        leg="ENTRY",
        client_order_id="tr-quiet-E",
        venue="paper",
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity=1,
        price=100,
        state="NEW",
    )
    Order.objects.filter(pk=order.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    cache.set(f"{STREAM_BEACON}:paper-bot-{bot.pk}", 1, 60)
    assert monitor_pass().checked == 0
    cache.delete(f"{STREAM_BEACON}:paper-bot-{bot.pk}")
    assert monitor_pass().checked == 1
