"""Read-side queries of execution: open trades, exposure, realized PnL, kill switches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import DecimalField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from execution.models import Cooldown, KillScope, KillSwitch, Order, OrderLeg, SignalDelivery
from execution.risk import KillState
from execution.states import OPEN, OrderState
from trader.models import Bot

ZERO = Decimal(0)
EXIT_LEGS = (OrderLeg.STOP_LOSS, OrderLeg.TAKE_PROFIT, OrderLeg.CLOSE)


@dataclass(frozen=True)
class OpenTrade:
    """An entry that is still pending, or filled and not fully exited."""

    entry_id: int
    bot_id: int
    owner_id: int
    credential_id: int | None
    symbol: str
    side: str
    pending_qty: Decimal  # not yet filled (an open entry order)
    position_qty: Decimal  # filled and not exited
    price: Decimal  # average fill, else the entry's price or trigger

    @property
    def notional(self) -> Decimal:
        return (self.pending_qty + self.position_qty) * self.price


def open_trades(
    *, bots: QuerySet[Bot] | None = None, bot_ids: list[int] | None = None
) -> list[OpenTrade]:
    exited = (
        Order.objects.filter(delivery=OuterRef("delivery"), leg__in=EXIT_LEGS)
        .values("delivery")
        .annotate(total=Sum("filled_qty"))
        .values("total")
    )
    entries = Order.objects.filter(leg=OrderLeg.ENTRY).annotate(
        exited=Coalesce(
            Subquery(exited),
            Value(ZERO),
            output_field=DecimalField(max_digits=28, decimal_places=10),
        )
    )
    if bots is not None:
        entries = entries.filter(bot__in=bots)
    if bot_ids is not None:
        entries = entries.filter(bot_id__in=bot_ids)
    entries = entries.filter(
        Q(state__in=OPEN) | Q(filled_qty__gt=Coalesce(Subquery(exited), Value(ZERO)))
    )
    result = []
    for entry in entries.select_related("bot", "delivery"):
        open_state = entry.state in OPEN
        pending = max(ZERO, entry.quantity - entry.filled_qty) if open_state else ZERO
        position = max(ZERO, entry.filled_qty - entry.exited)
        price = entry.avg_price or entry.price or entry.trigger_price or _sized_price(entry)
        result.append(
            OpenTrade(
                entry.pk,
                entry.bot_id,
                entry.bot.owner_id,
                entry.credential_id,
                entry.symbol,
                entry.side,
                pending,
                position,
                price,
            )
        )
    return result


def _sized_price(entry: Order) -> Decimal:
    """The price an entry was sized at. A MARKET entry has no price of its own until it
    fills: while it is in flight or UNKNOWN, its notional must not count as zero, or a second
    signal would pass the exposure caps on the same headroom."""
    sizing = entry.delivery.decision.get("sizing", {}) if entry.delivery is not None else {}
    raw = sizing.get("entry_price") if isinstance(sizing, dict) else None
    return Decimal(str(raw)) if raw else ZERO


def realized_pnl_since(*, bot_ids: list[int], since: datetime) -> Decimal:
    """Realized PnL net of fees of the bots' positions closed since ``since``, plus what open
    positions have realized so far (partial exits). From ``Position``, whose figures come from
    the venue's user trades when known (daily/weekly loss limits read this)."""
    from execution.models import Position, PositionStatus

    closed = Position.objects.filter(
        bot_id__in=bot_ids, status=PositionStatus.CLOSED, closed_at__gte=since
    )
    still_open = Position.objects.filter(bot_id__in=bot_ids, status=PositionStatus.OPEN)
    return sum((p.realized_pnl - p.fees for p in [*closed, *still_open]), ZERO)


def kill_state(*, bot: Bot) -> KillState:
    engaged = KillSwitch.objects.filter(released_at__isnull=True).filter(
        Q(scope=KillScope.GLOBAL)
        | Q(scope=KillScope.USER, user_id=bot.owner_id)
        | Q(scope=KillScope.BOT, bot_id=bot.pk)
    )
    scopes = set(engaged.values_list("scope", flat=True))
    return KillState(
        global_on=KillScope.GLOBAL in scopes,
        user_on=KillScope.USER in scopes,
        bot_on=KillScope.BOT in scopes,
        file_on=file_switch_on(),
    )


def file_switch_on() -> bool:
    """The operator's switch outside the database: KILL_SWITCH=1 or the KILL_SWITCH_FILE."""
    return bool(settings.KILL_SWITCH) or Path(settings.KILL_SWITCH_FILE).exists()


def cooldown_until(*, bot_id: int, symbol: str, now: datetime) -> datetime | None:
    until = (
        Cooldown.objects.filter(bot_id=bot_id, symbol=symbol, until__gt=now)
        .values_list("until", flat=True)
        .first()
    )
    return until


def day_and_week_start(now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day - timedelta(days=day.weekday())


def orders_for_user(*, user: Any) -> QuerySet[Order]:
    return Order.objects.filter(bot__owner=user).select_related("bot")


def deliveries_for_user(*, user: Any) -> QuerySet[SignalDelivery]:
    return SignalDelivery.objects.filter(bot__owner=user).select_related("signal", "bot")


def unfilled_entries(
    *, bot_ids: list[int], symbol: str | None = None, strategy: str | None = None
) -> QuerySet[Order]:
    """Entries still open at the venue (or possibly: UNKNOWN/PENDING) with nothing filled."""
    qs = Order.objects.filter(
        bot_id__in=bot_ids, leg=OrderLeg.ENTRY, state__in=OPEN, filled_qty=0
    ).exclude(state=OrderState.PARTIALLY_FILLED)
    if symbol is not None:
        qs = qs.filter(symbol=symbol)
    if strategy is not None:
        qs = qs.filter(delivery__signal__strategy=strategy)
    return qs.select_related("bot", "delivery")


def bot_performance(*, bot_id: int) -> dict[str, Any]:
    """Realized PnL (net of fees), fees, win rate, open exposure, and the same by day."""
    from execution.models import Position, PositionStatus

    closed = list(Position.objects.filter(bot_id=bot_id, status=PositionStatus.CLOSED))
    wins = [p for p in closed if p.realized_pnl - p.fees > 0]
    by_day: dict[str, dict[str, Any]] = {}
    for position in closed:
        day = (position.closed_at or position.opened_at).date().isoformat()
        row = by_day.setdefault(day, {"day": day, "trades": 0, "realized_pnl": ZERO, "fees": ZERO})
        row["trades"] += 1
        row["realized_pnl"] += position.realized_pnl
        row["fees"] += position.fees
    trades = open_trades(bot_ids=[bot_id])
    peak = running = drawdown = ZERO
    for position in sorted(closed, key=lambda p: p.closed_at or p.opened_at):
        running += position.realized_pnl - position.fees
        peak = max(peak, running)
        drawdown = max(drawdown, peak - running)
    return {
        "bot": bot_id,
        "trades": len(closed),
        "realized_pnl": sum((p.realized_pnl for p in closed), ZERO),
        "fees": sum((p.fees for p in closed), ZERO),
        "net_pnl": sum((p.realized_pnl - p.fees for p in closed), ZERO),
        "win_rate": (Decimal(len(wins)) / len(closed)).quantize(Decimal("0.0001"))
        if closed
        else None,
        "max_drawdown": drawdown,
        "open_positions": Position.objects.filter(
            bot_id=bot_id, status=PositionStatus.OPEN
        ).count(),
        "open_exposure": sum((t.notional for t in trades), ZERO),
        "by_day": sorted(by_day.values(), key=lambda r: r["day"]),
    }
