"""The order monitor (slow path) and restart reconciliation.

The user data stream is the fast path; the monitor polls what it may have missed, inside the
shared rate-limit budget: UNKNOWN and sent-but-PENDING legs by client id, open orders not
updated for a while, fills of recently active symbols, and stale entries. Reconciliation
compares an account's regular orders, algo orders and positions with the database and resolves
every difference by the same rules; it runs on worker start, on demand, and periodically.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from execution.lifecycle import fill_record, latest_legs, order_update, position_sync, react_to
from execution.models import Fill, Order, OrderLeg, Position, PositionStatus, SignalDelivery
from execution.states import LIVE, OPEN, OrderState
from execution.venues import errors
from trader.alerts import alert
from trader.models import Bot, BotStatus

log = logging.getLogger(__name__)
ZERO = Decimal(0)
MONITOR_LOCK = "execution:monitor:lock"
#: Set by the user data stream while an account's socket is connected (see execution.userstream).
STREAM_BEACON = "userstream:alive"
#: How far back user trades can be read from one start time (Binance: 7 days).
FILLS_MAX = timedelta(days=7) - timedelta(minutes=1)


@dataclass
class Report:
    """What a monitor pass or a reconciliation found and did (printed by ``reconcile``)."""

    accounts: int = 0
    checked: int = 0
    updated: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    position_mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    paused_bots: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"accounts {self.accounts}, orders checked {self.checked}"]
        for name in ("updated", "adopted", "foreign", "cancelled", "position_mismatches", "errors"):
            for item in getattr(self, name):
                out.append(f"{name.replace('_', ' ')}: {item}")
        if self.paused_bots:
            out.append(f"paused bots: {self.paused_bots}")
        return out


def _accounts(bots: list[Bot]) -> dict[str, list[Bot]]:
    from execution.services import account_key_for

    grouped: dict[str, list[Bot]] = {}
    for bot in bots:
        if settings.TRADING_MODE != "DRY_RUN" and bot.credential_id is None:
            continue
        grouped.setdefault(account_key_for(bot=bot), []).append(bot)
    return grouped


def _lookup(order: Order, venue: Any) -> Any:
    from execution.services import _lookup as lookup

    return lookup(order, venue)


def order_refresh(order: Order, venue: Any, report: Report) -> None:
    """Poll one order by client id and apply what the venue says."""
    report.checked += 1
    before = order.state
    if order.state in (OrderState.PENDING, OrderState.UNKNOWN):
        from execution.services import account_key_for, order_settle

        order = order_settle(
            order=order, venue=venue, account=account_key_for(bot=order.bot), attempts=0
        )
        if order.state != before:
            report.updated.append(f"{order.client_order_id}: {before} -> {order.state}")
            react_to(order=order)
        return
    found = _lookup(order, venue)
    if found is None:
        return  # NotFound for an order we believe live: reconciliation reports it
    order = order_update(order=order, venue_order=found, cause="monitor poll")
    if order.state != before:
        report.updated.append(f"{order.client_order_id}: {before} -> {order.state}")


def fills_sync(
    account: str, venue: Any, bots: list[Bot], symbols: set[str], since: datetime
) -> None:
    """Record the account's user trades of ``symbols`` since ``since``, each with its order.

    A trade names the order that traded by venue id. For a regular order of ours that is its
    ``venue_order_id``; a triggered stop-loss or take-profit trades through a child order with
    an id of its own (our row keeps the algo id), which carries the algo's client id: it is
    looked up once to find our row. Only this account's regular orders are matched by id:
    order ids are numbered per symbol across accounts, and algo ids are another sequence.
    """
    for symbol in sorted(symbols):
        trades = venue.user_trades(symbol=symbol, start_ms=int(since.timestamp() * 1000))
        attributed = set(
            Fill.objects.filter(
                account=account,
                symbol=symbol,
                venue_trade_id__in=[t.trade_id for t in trades],
                order__isnull=False,
            ).values_list("venue_trade_id", flat=True)
        )
        fresh = [t for t in trades if t.trade_id not in attributed]
        ours = Order.objects.filter(bot__in=bots, symbol=symbol)
        by_venue_id: dict[int | None, Order | None] = {
            o.venue_order_id: o
            for o in ours.filter(is_algo=False, venue_order_id__in={t.order_id for t in fresh})
        }
        for trade in fresh:
            if trade.order_id not in by_venue_id:
                by_venue_id[trade.order_id] = _order_of_child(venue, ours, symbol, trade.order_id)
            fill_record(account=account, trade=trade, order=by_venue_id[trade.order_id])


def _order_of_child(venue: Any, ours: Any, symbol: str, venue_id: int) -> Order | None:
    """Our order behind the venue's order ``venue_id`` by its client id (the child of a
    triggered algo order carries the algo's), or None (not ours)."""
    try:
        child = venue.get_order(symbol=symbol, venue_id=venue_id)
    except errors.NotFound:
        return None
    order: Order | None = ours.filter(client_order_id=child.client_id).first()
    return order


def stream_alive(account: str) -> bool:
    """Whether the user data stream of ``account`` is connected (its beacon is fresh)."""
    return cache.get(f"{STREAM_BEACON}:{account}") is not None


def monitor_pass(*, now: datetime | None = None, full: bool = False) -> Report:
    """One pass of the monitor over every account with work (see the module docstring)."""
    from execution.services import venue_for_bot

    now = now or timezone.now()
    report = Report()
    quiet = now - timedelta(seconds=settings.MONITOR_POLL_AFTER_S)
    busy = (
        Order.objects.filter(state__in=OPEN)
        .filter(
            Q(state__in=[OrderState.UNKNOWN])
            | Q(state=OrderState.PENDING, sent_at__isnull=False)
            | Q(updated_at__lt=quiet)
        )
        .filter(updated_at__lt=now - timedelta(seconds=settings.MONITOR_GRACE_S))
    )
    bot_ids = set(busy.values_list("bot_id", flat=True))
    # Every open position is checked for a live stop-loss, also when nothing of its bot is
    # open any more (a stop cancelled by hand, seen on the stream) and when the bot is paused.
    bot_ids |= set(
        Position.objects.filter(status=PositionStatus.OPEN).values_list("bot_id", flat=True)
    )
    if full:
        bot_ids |= set(Bot.objects.filter(status=BotStatus.ACTIVE).values_list("pk", flat=True))
    bots = list(Bot.objects.filter(pk__in=bot_ids).select_related("credential"))
    for account, account_bots in _accounts(bots).items():
        report.accounts += 1
        try:
            venue = venue_for_bot(bot=account_bots[0])
            streamed = stream_alive(account) and not full
            polled = busy.filter(bot__in=account_bots)
            if streamed:
                # The stream reports this account's orders and fills as they happen: poll only
                # what it cannot settle (ambiguous outcomes, sends a crash may have lost).
                polled = polled.filter(
                    Q(state=OrderState.UNKNOWN) | Q(state=OrderState.PENDING, sent_at__isnull=False)
                )
            for order in polled.select_related("bot"):
                order_refresh(order, venue, report)
            if not streamed:
                active = {
                    o.symbol
                    for o in Order.objects.filter(
                        bot__in=account_bots, updated_at__gte=now - timedelta(hours=1)
                    )
                }
                fills_sync(account, venue, account_bots, active, now - timedelta(hours=1))
            _cancel_stale_entries(account_bots, venue, now, report)
            _ensure_protected(account_bots, report)
            if full:
                reconcile_account(account=account, bots=account_bots, venue=venue, report=report)
        except errors.VenueError as exc:
            report.errors.append(f"{account}: {type(exc).__name__}: {exc}")
    return report


def _cancel_stale_entries(bots: list[Bot], venue: Any, now: datetime, report: Report) -> None:
    """Unfilled entries past their signal's expiry (or MONITOR_STALE_ENTRY_S) are withdrawn with
    their protective orders."""
    from execution.services import account_key_for, order_cancel

    bound = now - timedelta(seconds=settings.MONITOR_STALE_ENTRY_S)
    stale = Order.objects.filter(
        bot__in=bots, leg=OrderLeg.ENTRY, state__in=LIVE, filled_qty=0
    ).filter(Q(delivery__signal__expires_at__lt=now, type="LIMIT") | Q(created_at__lt=bound))
    for entry in stale.select_related("bot", "delivery"):
        account = account_key_for(bot=entry.bot)
        entry = order_cancel(order=entry, venue=venue, account=account, cause="stale entry")
        if entry.state == OrderState.CANCELED and not entry.filled_qty:
            report.cancelled.append(f"{entry.client_order_id} (stale)")
            for leg in latest_legs(entry.delivery_id or 0).values():
                if leg.pk != entry.pk and leg.state in OPEN:
                    order_cancel(order=leg, venue=venue, account=account, cause="stale entry")


def _ensure_protected(bots: list[Bot], report: Report) -> None:
    """Every open position has a live stop-loss: one cancelled or lost (by hand on the exchange,
    in a crash) is placed again now; failing that, the position is flattened and alerted."""
    from execution.lifecycle import protection_ensure

    for position in Position.objects.filter(bot__in=bots, status=PositionStatus.OPEN):
        legs = latest_legs(position.delivery_id or 0)
        stop, entry = legs.get(OrderLeg.STOP_LOSS), legs.get(OrderLeg.ENTRY)
        if entry is None or (stop is not None and stop.state in OPEN | {OrderState.FILLED}):
            continue
        report.updated.append(f"{entry.client_order_id}: open position without a live stop-loss")
        protection_ensure(entry=entry)


def _adopt(client_id: str, venue_order: Any, report: Report) -> None:
    """An order at the venue with our prefix that the database does not know (lost in a crash):
    adopt it into its delivery if that delivery exists."""
    prefix = settings.CLIENT_ID_PREFIX
    try:
        delivery_id = int(client_id[len(prefix) :].split("-", 1)[0])
    except ValueError:
        report.foreign.append(f"{client_id}: our prefix, unreadable delivery")
        return
    delivery = SignalDelivery.objects.select_related("bot").filter(pk=delivery_id).first()
    if delivery is None:
        report.foreign.append(f"{client_id}: our prefix, no such delivery")
        return
    suffix = client_id.rsplit("-", 1)[-1]
    leg = {"E": OrderLeg.ENTRY, "SL": OrderLeg.STOP_LOSS, "TP": OrderLeg.TAKE_PROFIT}.get(
        suffix.rstrip("0123456789"), OrderLeg.CLOSE
    )
    generation = int(suffix[2:] or 1) if leg in (OrderLeg.STOP_LOSS, OrderLeg.TAKE_PROFIT) else 1
    from execution.services import account_key_for

    order, created = Order.objects.get_or_create(
        client_order_id=client_id,
        defaults={
            "bot": delivery.bot,
            "delivery": delivery,
            "leg": leg,
            "generation": generation,
            "venue": "paper" if settings.TRADING_MODE == "DRY_RUN" else "binance",
            "credential_id": delivery.bot.credential_id,
            "symbol": venue_order.symbol,
            "side": venue_order.side,
            "type": venue_order.type,
            "is_algo": venue_order.is_algo,
            "reduce_only": venue_order.reduce_only,
            "quantity": venue_order.quantity,
            "price": venue_order.price or None,
            "trigger_price": venue_order.trigger_price,
            "state": OrderState.UNKNOWN,
            "sent_at": timezone.now(),
        },
    )
    if created:
        report.adopted.append(f"{client_id} ({account_key_for(bot=delivery.bot)})")
    order_update(order=order, venue_order=venue_order, cause="adopted by reconciliation")


def reconcile_account(
    *, account: str, bots: list[Bot], venue: Any, report: Report, dry_run: bool = False
) -> None:
    """Compare one account's regular orders, algo orders and positions with the database and
    resolve every difference; orders not ours are reported and, per
    RECONCILE_CANCEL_FOREIGN, cancelled."""
    prefix = settings.CLIENT_ID_PREFIX
    open_before = {
        o.pk: o
        for o in Order.objects.filter(bot__in=bots, state__in=OPEN).only(
            "client_order_id", "state", "symbol", "created_at"
        )
    }
    symbols = {b.symbol for b in bots} | {o.symbol for o in open_before.values()}
    venue_open = [o for o in venue.open_orders() if o.symbol in symbols]
    known = {
        o.client_order_id: o
        for o in Order.objects.filter(client_order_id__in=[v.client_id for v in venue_open])
    }
    for venue_order in venue_open:
        report.checked += 1
        order = known.get(venue_order.client_id)
        if order is not None:
            if not dry_run:
                order_update(order=order, venue_order=venue_order, cause="reconciliation")
            continue
        if venue_order.client_id.startswith(prefix):
            if dry_run:
                report.adopted.append(f"{venue_order.client_id} (would adopt)")
            else:
                _adopt(venue_order.client_id, venue_order, report)
            continue
        report.foreign.append(
            f"{venue_order.client_id} {venue_order.side} {venue_order.type} {venue_order.symbol}"
        )
        if settings.RECONCILE_CANCEL_FOREIGN and not dry_run:
            cancel = venue.cancel_algo_order if venue_order.is_algo else venue.cancel_order
            try:
                cancel(symbol=venue_order.symbol, venue_id=venue_order.venue_id)
                report.cancelled.append(f"{venue_order.client_id} (foreign)")
            except errors.VenueError as exc:
                report.errors.append(f"cancel foreign {venue_order.client_id}: {exc}")
    live_at_venue = {v.client_id for v in venue_open}
    for order in Order.objects.filter(bot__in=bots, state__in=OPEN).select_related("bot"):
        if order.client_order_id in live_at_venue:
            continue
        report.checked += 1
        if dry_run:
            report.updated.append(
                f"{order.client_order_id}: {order.state} in DB, not open at venue"
            )
            continue
        found = _lookup(order, venue)
        if found is not None:
            order_update(order=order, venue_order=found, cause="reconciliation")
        elif order.state in LIVE:
            from execution.services import order_transition

            order_transition(
                order_id=order.pk,
                to_state=OrderState.CANCELED,
                cause="reconciliation: absent at venue",
            )
    if not dry_run:
        # Every change of an order open before the pass, including those its reactions made
        # (the sibling of a filled exit cancelled at the venue).
        for pk, state in Order.objects.filter(pk__in=open_before).values_list("pk", "state"):
            if state != open_before[pk].state:
                report.updated.append(
                    f"{open_before[pk].client_order_id}: {open_before[pk].state} -> {state}"
                )
        # Fills the stream and the monitor missed, back to the oldest order open before the
        # pass (a day at least; Binance serves at most 7 days from a start time).
        now = timezone.now()
        oldest = min((o.created_at for o in open_before.values()), default=now)
        since = max(min(oldest - timedelta(minutes=1), now - timedelta(days=1)), now - FILLS_MAX)
        fills_sync(account, venue, bots, symbols, since)
        for delivery_id in (
            Order.objects.filter(bot__in=bots, leg=OrderLeg.ENTRY, filled_qty__gt=0)
            .values_list("delivery_id", flat=True)
            .distinct()
        ):
            if delivery_id:
                position_sync(delivery_id=delivery_id)
    _compare_positions(bots, venue, symbols, report)


def _compare_positions(bots: list[Bot], venue: Any, symbols: set[str], report: Report) -> None:
    """The venue's position per symbol against the sum of our open positions on this account
    (one-way mode: signed amounts). A difference is reported and alerted."""
    venue_amounts: dict[str, Decimal] = {}
    for position in venue.positions():
        if position.symbol in symbols:
            venue_amounts[position.symbol] = (
                venue_amounts.get(position.symbol, ZERO) + position.amount
            )
    ours: dict[str, Decimal] = {}
    for position in Position.objects.filter(bot__in=bots, status=PositionStatus.OPEN):
        sign = Decimal(1) if position.side == "LONG" else Decimal(-1)
        ours[position.symbol] = ours.get(position.symbol, ZERO) + sign * position.quantity
    for symbol in sorted(set(venue_amounts) | set(ours)):
        theirs, mine = venue_amounts.get(symbol, ZERO), ours.get(symbol, ZERO)
        if theirs != mine:
            report.position_mismatches.append(f"{symbol}: venue {theirs}, database {mine}")


def reconcile(*, bot_ids: list[int] | None = None, dry_run: bool = False) -> Report:
    """Reconcile every account (or those of ``bot_ids``). A bot whose reconciliation fails is
    paused with the reason, and trades nothing until a later one passes."""
    from execution.services import venue_for_bot

    report = Report()
    bots = Bot.objects.select_related("credential")
    if bot_ids:
        bots = bots.filter(pk__in=bot_ids)
    for account, account_bots in _accounts(list(bots)).items():
        report.accounts += 1
        try:
            venue = venue_for_bot(bot=account_bots[0])
            reconcile_account(
                account=account, bots=account_bots, venue=venue, report=report, dry_run=dry_run
            )
        except Exception as exc:  # any failure: the account's bots must not trade blind
            report.errors.append(f"{account}: {type(exc).__name__}: {exc}")
            if not dry_run:
                for bot in account_bots:
                    if bot.status == BotStatus.ACTIVE:
                        Bot.objects.filter(pk=bot.pk).update(status=BotStatus.PAUSED)
                        report.paused_bots.append(bot.pk)
                alert(
                    "CRITICAL",
                    f"reconcile_failed:{account}",
                    f"reconciliation of {account} failed ({type(exc).__name__}); "
                    "its bots are paused",
                    {"bots": [b.pk for b in account_bots]},
                    owner_id=account_bots[0].owner_id,
                )
    if not dry_run and (report.position_mismatches or report.foreign):  # dry run: no writes
        alert(
            "WARNING",
            "reconcile_differences",
            f"reconciliation: {len(report.position_mismatches)} position mismatch(es), "
            f"{len(report.foreign)} foreign order(s)",
            {"positions": report.position_mismatches[:20], "foreign": report.foreign[:20]},
        )
    return report


def monitor_run(*, full: bool = False) -> Report | None:
    """A monitor pass if no other process is running one (an atomic cache lock), else None."""
    if not cache.add(MONITOR_LOCK, "1", timeout=settings.MONITOR_LOCK_S):
        return None
    try:
        return monitor_pass(full=full)
    finally:
        cache.delete(MONITOR_LOCK)


def jitter_s() -> float:
    return random.uniform(0, settings.MONITOR_JITTER_S)  # noqa: S311 - spreading load, not crypto
