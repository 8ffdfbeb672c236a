"""The order lifecycle after placement: every update, from the user data stream (fast path) or
from polling (the monitor, reconciliation), goes through here and the same state machine.

- Idempotent and monotonic: an update carries the venue's update time; one older than what is
  recorded changes nothing, and the same update twice changes nothing.
- Reactions: an entry's fills are covered by protective orders of exactly the filled quantity
  (a missing stop is placed now; failing that, the position is flattened and a critical alert
  raised); when a stop-loss or take-profit fills, its sibling is cancelled (Binance does not
  link them), the position is closed with realized PnL and fees from the fills, and a stop-out
  sets the bot's cooldown on the symbol.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from execution.models import (
    Fill,
    Order,
    OrderLeg,
    Position,
    PositionStatus,
    SignalDelivery,
)
from execution.states import LIVE, OPEN, OrderState, is_legal
from execution.venues import errors
from execution.venues.base import OrderType, PositionSide, Side, UserTrade, VenueOrder

log = logging.getLogger(__name__)
ZERO = Decimal(0)
PROTECTIVE = (OrderLeg.STOP_LOSS, OrderLeg.TAKE_PROFIT)


# --- parsing venue events ----------------------------------------------------------------------


def _order_type(raw: str) -> OrderType:
    """Binance's order type; those we never send (LIQUIDATION, ADL closes) read as MARKET,
    which is what they are: the real type stays in the event."""
    try:
        return OrderType(raw)
    except ValueError:
        return OrderType.MARKET


def _dec(raw: Any) -> Decimal:
    return Decimal(str(raw)) if raw not in (None, "") else ZERO


def venue_order_from_event(event: dict[str, Any]) -> tuple[VenueOrder, UserTrade | None] | None:
    """An ORDER_TRADE_UPDATE or ALGO_UPDATE as (VenueOrder, the trade it reports or None)."""
    kind = event.get("e")
    o = event.get("o") or {}
    if kind == "ORDER_TRADE_UPDATE":
        order = VenueOrder(
            symbol=o["s"],
            client_id=o["c"],
            venue_id=int(o["i"]),
            is_algo=False,
            status=o["X"],
            side=Side(o["S"]),
            type=_order_type(o.get("ot") or o["o"]),
            quantity=_dec(o["q"]),
            price=_dec(o.get("p")),
            trigger_price=_dec(o.get("sp")) or None,
            executed_qty=_dec(o.get("z")),
            avg_price=_dec(o.get("ap")),
            reduce_only=bool(o.get("R")),
            close_position=bool(o.get("cp")),
            position_side=PositionSide(o.get("ps") or "BOTH"),
            update_time_ms=int(o.get("T") or event.get("T") or 0),
            raw=event,
        )
        trade = None
        if o.get("x") == "TRADE" and int(o.get("t") or 0):
            trade = UserTrade(
                symbol=o["s"],
                trade_id=int(o["t"]),
                order_id=int(o["i"]),
                side=Side(o["S"]),
                price=_dec(o["L"]),
                qty=_dec(o["l"]),
                quote_qty=_dec(o["L"]) * _dec(o["l"]),
                commission=_dec(o.get("n")),
                commission_asset=o.get("N") or "USDT",
                realized_pnl=_dec(o.get("rp")),
                maker=bool(o.get("m")),
                position_side=PositionSide(o.get("ps") or "BOTH"),
                time_ms=int(o.get("T") or 0),
            )
        return order, trade
    if kind == "ALGO_UPDATE":
        order = VenueOrder(
            symbol=o["s"],
            client_id=o["caid"],
            venue_id=int(o["aid"]),
            is_algo=True,
            status=o["X"],
            side=Side(o["S"]),
            type=_order_type(o["o"]),
            quantity=_dec(o.get("q")),
            price=_dec(o.get("p")),
            trigger_price=_dec(o.get("tp")) or None,
            executed_qty=_dec(o.get("aq")),
            avg_price=_dec(o.get("ap")),
            reduce_only=bool(o.get("R")),
            close_position=bool(o.get("cp")),
            position_side=PositionSide(o.get("ps") or "BOTH"),
            update_time_ms=int(event.get("T") or event.get("E") or 0),
            actual_order_id=int(o["ai"]) if o.get("ai") else None,
            raw=event,
        )
        return order, None
    return None


# --- applying updates --------------------------------------------------------------------------


def _child_report(order: Order, venue_order: VenueOrder) -> VenueOrder:
    """A triggered algo order's child (a regular order carrying the clientAlgoId) reports the
    fill of our algo row: seen as the algo's state."""
    status = {"FILLED": "FINISHED", "PARTIALLY_FILLED": "TRIGGERED", "NEW": "TRIGGERED"}.get(
        venue_order.status, "FINISHED" if venue_order.executed_qty else venue_order.status
    )
    return VenueOrder(
        symbol=venue_order.symbol,
        client_id=order.client_order_id,
        venue_id=order.venue_order_id or venue_order.venue_id,
        is_algo=True,
        status=status,
        side=venue_order.side,
        type=OrderType(order.type),
        quantity=order.quantity,
        price=venue_order.price,
        trigger_price=order.trigger_price,
        executed_qty=venue_order.executed_qty,
        avg_price=venue_order.avg_price,
        reduce_only=order.reduce_only,
        close_position=False,
        position_side=venue_order.position_side,
        update_time_ms=venue_order.update_time_ms,
        actual_order_id=venue_order.venue_id,
        raw=venue_order.raw,
    )


def order_update(*, order: Order, venue_order: VenueOrder, cause: str, react: bool = True) -> Order:
    """Apply a venue report to ``order``: ignored if older than the recorded one (an earlier
    update time, or a state the recorded one cannot go back to), otherwise through the state
    machine; then react to what changed."""
    from execution.services import _state_of, order_apply_venue

    if order.is_algo and not venue_order.is_algo:
        venue_order = _child_report(order, venue_order)
    stamp = venue_order.update_time_ms
    if stamp and stamp < order.venue_update_ms:
        log.info(
            "older report of %s ignored (%s < %s)",
            order.client_order_id,
            stamp,
            order.venue_update_ms,
        )
        return order
    before = (order.state, order.filled_qty)
    if venue_order.is_algo and venue_order.status == "FINISHED" and not venue_order.avg_price:
        # ALGO_UPDATE FINISHED carries the child's fill in ap/aq; a poll may not: keep what the
        # child reported (the state machine never moves FILLED backwards anyway).
        venue_order = _with_fill(venue_order, order)
    state = _state_of(venue_order)
    if state != order.state and not is_legal(order.state, state):
        # Older than what is recorded, with the same update time: a MARKET order's NEW and
        # TRADE events share one, and the placement reply already said FILLED. Ignored like
        # any older report (noting it would add history on every replay).
        log.info(
            "stale report of %s ignored (%s after %s)", order.client_order_id, state, order.state
        )
        return order
    updated = order_apply_venue(order=order, venue_order=venue_order, cause=cause)
    if stamp > updated.venue_update_ms:
        Order.objects.filter(pk=updated.pk).update(venue_update_ms=stamp)
        updated.venue_update_ms = stamp
    if react and (updated.state, updated.filled_qty) != before:
        react_to(order=updated)
    return updated


def _with_fill(venue_order: VenueOrder, order: Order) -> VenueOrder:
    from dataclasses import replace

    if order.filled_qty and order.avg_price:
        return replace(venue_order, executed_qty=order.filled_qty, avg_price=order.avg_price)
    return venue_order


def fill_record(*, account: str, trade: UserTrade, order: Order | None) -> Fill | None:
    """Record a user trade once (unique per account, symbol and trade id)."""
    try:
        with transaction.atomic():
            fill, created = Fill.objects.get_or_create(
                account=account,
                symbol=trade.symbol,
                venue_trade_id=trade.trade_id,
                defaults={
                    "order": order,
                    "bot_id": order.bot_id if order else None,
                    "venue_order_id": trade.order_id,
                    "side": trade.side,
                    "price": trade.price,
                    "qty": trade.qty,
                    "quote_qty": trade.quote_qty,
                    "commission": trade.commission,
                    "commission_asset": trade.commission_asset,
                    "realized_pnl": trade.realized_pnl,
                    "maker": trade.maker,
                    "time": datetime.fromtimestamp(trade.time_ms / 1000, tz=UTC),
                },
            )
    except IntegrityError:
        return Fill.objects.filter(
            account=account, symbol=trade.symbol, venue_trade_id=trade.trade_id
        ).first()
    attributed = created
    if not created and fill.order_id is None and order is not None:
        # Recorded before its order was known (adopted later, or a stop's child order seen
        # first): attach it now, so the position counts it.
        attributed = bool(
            Fill.objects.filter(pk=fill.pk, order__isnull=True).update(
                order=order, bot_id=order.bot_id
            )
        )
        fill.order, fill.bot_id = order, order.bot_id
    if attributed and order is not None and order.delivery_id:
        position_sync(delivery_id=order.delivery_id)
    return fill


def event_apply(*, account: str, event: dict[str, Any]) -> Order | None:
    """Apply one user-data-stream event (ORDER_TRADE_UPDATE, ALGO_UPDATE); others are ignored
    (ACCOUNT_UPDATE is informational: positions are derived from order fills). Returns the
    order it concerned, or None for an order that is not ours (reconciliation reports those)."""
    parsed = venue_order_from_event(event)
    if parsed is None:
        return None
    venue_order, trade = parsed
    order = (
        Order.objects.filter(client_order_id=venue_order.client_id).select_related("bot").first()
    )
    if order is not None:
        from execution.services import account_key_for

        if account_key_for(bot=order.bot) != account:  # same id on another account: not ours
            log.warning(
                "event for %s from %s ignored: the order belongs to another account",
                venue_order.client_id,
                account,
            )
            order = None
    if trade is not None:
        fill_record(account=account, trade=trade, order=order)
    if order is None:
        return None
    return order_update(order=order, venue_order=venue_order, cause=f"stream {event.get('e')}")


# --- reactions ---------------------------------------------------------------------------------


def latest_legs(delivery_id: int) -> dict[str, Order]:
    """Each leg's latest generation (a resized protective order replaces the earlier one)."""
    legs: dict[str, Order] = {}
    for order in (
        Order.objects.filter(delivery_id=delivery_id)
        .exclude(leg=OrderLeg.CLOSE)
        .order_by("generation")
    ):
        legs[order.leg] = order
    return legs


def react_to(*, order: Order) -> None:
    """What an order's new state requires (see the module docstring)."""
    if order.delivery_id is None:
        return
    if order.leg == OrderLeg.ENTRY and order.filled_qty > 0:
        protection_ensure(entry=order)
    elif order.leg in PROTECTIVE and order.state == OrderState.FILLED:
        exit_filled(exit_order=order)
    elif order.leg == OrderLeg.CLOSE and order.state == OrderState.FILLED:
        for leg in latest_legs(order.delivery_id).values():
            if leg.leg in PROTECTIVE and leg.state in OPEN:
                _cancel(leg, cause="position closed")
    position_sync(delivery_id=order.delivery_id)


def _venue(order: Order) -> tuple[Any, str]:
    from execution.services import account_key_for, venue_for_bot

    return venue_for_bot(bot=order.bot), account_key_for(bot=order.bot)


def _cancel(order: Order, *, cause: str) -> Order:
    from execution.services import order_cancel

    venue, account = _venue(order)
    try:
        return order_cancel(order=order, venue=venue, account=account, cause=cause)
    except errors.VenueError as exc:
        log.warning("cancel of %s failed: %s", order.client_order_id, exc)
        return order


def protection_ensure(*, entry: Order) -> None:
    """The protective orders of an entry cover exactly its filled quantity; a missing stop-loss
    is placed now, and if that fails the position is flattened and a critical alert raised."""
    from execution.services import _stop_loss_emergency, order_settle

    legs = latest_legs(entry.delivery_id or 0)
    exits = Order.objects.filter(delivery_id=entry.delivery_id).exclude(leg=OrderLeg.ENTRY)
    need = entry.filled_qty - sum((o.filled_qty for o in exits), ZERO)
    if need <= 0:
        return  # nothing open: the position was closed (by an exit, a flatten)
    venue, account = _venue(entry)
    for leg_name in PROTECTIVE:
        leg = legs.get(leg_name)
        if leg is None:
            continue
        if leg.state in (OrderState.PENDING, OrderState.UNKNOWN):
            continue  # being placed (or resolved) by its task: resized, if needed, once live
        live = leg.state in LIVE
        covers = leg.quantity == need or (entry.state == OrderState.FILLED and leg.quantity >= need)
        if live and covers:
            continue
        if leg.state == OrderState.FILLED:
            continue  # it already closed the position
        if not live and leg_name == OrderLeg.TAKE_PROFIT:
            continue  # a dead take-profit was retried and alerted at placement; the stop stays
        if live:  # resize: cancel, then the next generation for the filled quantity
            leg = _cancel(leg, cause=f"resize to filled {need}")
            if leg.state not in (OrderState.CANCELED, OrderState.EXPIRED, OrderState.REJECTED):
                continue  # could not cancel (it may have filled): the next update decides
        replacement = _next_generation(leg, quantity=need)
        placed = order_settle(
            order=replacement,
            venue=venue,
            account=account,
            attempts=2 if leg_name == OrderLeg.STOP_LOSS else 1,
        )
        if leg_name == OrderLeg.STOP_LOSS and placed.state not in LIVE | {OrderState.FILLED}:
            delivery = SignalDelivery.objects.select_related("bot").get(pk=entry.delivery_id or 0)
            _stop_loss_emergency(
                delivery, entry, placed, legs.get(OrderLeg.TAKE_PROFIT), venue, account
            )
            return


def _next_generation(leg: Order, *, quantity: Decimal) -> Order:
    generation = leg.generation + 1
    code = {"STOP_LOSS": "SL", "TAKE_PROFIT": "TP"}[leg.leg]
    return Order.objects.create(
        bot_id=leg.bot_id,
        delivery_id=leg.delivery_id,
        leg=leg.leg,
        venue=leg.venue,
        credential_id=leg.credential_id,
        symbol=leg.symbol,
        side=leg.side,
        type=leg.type,
        is_algo=leg.is_algo,
        reduce_only=True,
        quantity=quantity,
        trigger_price=leg.trigger_price,
        price=leg.price,
        generation=generation,
        client_order_id=f"{leg.client_order_id.rsplit('-', 1)[0]}-{code}{generation}",
    )


def exit_filled(*, exit_order: Order) -> None:
    """A stop-loss or take-profit filled: cancel the sibling, close the position, and after a
    stop-out pause the bot on the symbol."""
    from execution.services import cooldown_set

    for leg in latest_legs(exit_order.delivery_id or 0).values():
        if leg.pk != exit_order.pk and leg.leg in PROTECTIVE and leg.state in OPEN:
            _cancel(leg, cause=f"{exit_order.leg} filled")
    if exit_order.leg == OrderLeg.STOP_LOSS:
        cooldown_set(
            bot_id=exit_order.bot_id,
            symbol=exit_order.symbol,
            reason=f"stop-out {exit_order.client_order_id}",
        )


def position_sync(*, delivery_id: int) -> Position | None:
    """Derive the trade's Position from its orders' fills (and realized PnL and fees from the
    venue's user trades when known)."""
    orders = list(Order.objects.filter(delivery_id=delivery_id))
    entry = next((o for o in orders if o.leg == OrderLeg.ENTRY), None)
    if entry is None or entry.filled_qty <= 0:
        return None
    exits = [o for o in orders if o.leg != OrderLeg.ENTRY and o.filled_qty > 0]
    exit_qty = sum((o.filled_qty for o in exits), ZERO)
    exit_value = sum((o.filled_qty * o.avg_price for o in exits), ZERO)
    fills = list(Fill.objects.filter(order__in=orders))
    direction = Decimal(1) if entry.side == "BUY" else Decimal(-1)
    exit_price = exit_value / exit_qty if exit_qty else ZERO
    if fills:
        realized = sum((f.realized_pnl for f in fills), ZERO)
        fees = sum((f.commission for f in fills if f.commission_asset == "USDT"), ZERO)
    else:
        realized = (exit_price - entry.avg_price) * exit_qty * direction if exit_qty else ZERO
        fees = ZERO
    quantity = max(ZERO, entry.filled_qty - exit_qty)
    closed = quantity == 0 and entry.state not in LIVE
    defaults = {
        "bot_id": entry.bot_id,
        "symbol": entry.symbol,
        "side": "LONG" if entry.side == "BUY" else "SHORT",
        "quantity": quantity,
        "entry_qty": entry.filled_qty,
        "entry_price": entry.avg_price,
        "exit_qty": exit_qty,
        "exit_price": exit_price,
        "realized_pnl": realized,
        "fees": fees,
        "status": PositionStatus.CLOSED if closed else PositionStatus.OPEN,
    }
    position, created = Position.objects.get_or_create(delivery_id=delivery_id, defaults=defaults)
    if not created:
        for name, value in defaults.items():
            setattr(position, name, value)
    if closed and position.closed_at is None:
        position.closed_at = timezone.now()
    position.save()
    return position
