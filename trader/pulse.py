"""What ``make run`` prints about the platform's work: new signals, orders and fills as they
happen, and a one-line summary whenever the counts change. Reads the database only."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Sum

from execution.models import Fill, Order, Position, PositionStatus
from ingest.models import Kline
from signals.models import Evaluation, Signal


@dataclass
class Pulse:
    """Remembers what it has shown; ``lines()`` returns what is new since the last call."""

    last_signal: int = 0
    last_fill: int = 0
    order_states: dict[int, str] = field(default_factory=dict)
    summary: str = ""
    started: bool = False

    def lines(self) -> list[str]:
        out: list[str] = []
        if not self.started:
            # Show only what happens from now on (a restart does not replay history).
            self.last_signal = Signal.objects.aggregate(m=Max("id"))["m"] or 0
            self.last_fill = Fill.objects.aggregate(m=Max("id"))["m"] or 0
            self.order_states = dict(Order.objects.values_list("id", "state"))
            self.started = True
        for signal in Signal.objects.filter(id__gt=self.last_signal).order_by("id"):
            self.last_signal = signal.pk
            out.append(_signal_line(signal))
        for order in Order.objects.order_by("id").only(
            "id", "state", "leg", "side", "symbol", "quantity", "avg_price", "bot_id"
        ):
            if self.order_states.get(order.pk) != order.state:
                self.order_states[order.pk] = order.state
                out.append(
                    f"order  bot {order.bot_id} {order.leg} {order.side} {order.quantity} "
                    f"{order.symbol}: {order.state}"
                    + (f" @ {order.avg_price}" if order.avg_price else "")
                )
        for fill in Fill.objects.filter(id__gt=self.last_fill).order_by("id"):
            self.last_fill = fill.pk
            out.append(
                f"fill   {fill.side} {fill.qty} {fill.symbol} @ {fill.price} "
                f"(fee {fill.commission} {fill.commission_asset}, realized {fill.realized_pnl})"
            )
        summary = _summary()
        if summary != self.summary:
            self.summary = summary
            out.append(summary)
        return out


def _signal_line(signal: Signal) -> str:
    if signal.kind == "DISARM":
        return (
            f"signal DISARM {signal.symbol} {signal.interval} ({signal.strategy}): {signal.reason}"
        )
    return (
        f"signal ARM {signal.side} {signal.symbol} {signal.interval} ({signal.strategy}) "
        f"ref {signal.reference_price} stop {signal.stop_price} tp {signal.take_profit_price}: "
        f"{signal.reason}"
    )


def _summary() -> str:
    candles = Kline.objects.count()
    evaluations = Evaluation.objects.count()
    signals = Signal.objects.count()
    orders = dict(Order.objects.values_list("state").annotate(n=Count("id")))
    fills = Fill.objects.count()
    positions = Position.objects.values("status").annotate(n=Count("id"))
    by_status: dict[str, Any] = {row["status"]: row["n"] for row in positions}
    pnl = Position.objects.aggregate(p=Sum("realized_pnl"), f=Sum("fees"))
    realized = (pnl["p"] or Decimal(0)) - (pnl["f"] or Decimal(0))
    order_text = ", ".join(f"{n} {state.lower()}" for state, n in sorted(orders.items())) or "0"
    return (
        f"pulse  candles {candles} | evaluations {evaluations} | signals {signals} | "
        f"orders {order_text} | fills {fills} | positions "
        f"{by_status.get(PositionStatus.OPEN, 0)} open, "
        f"{by_status.get(PositionStatus.CLOSED, 0)} closed | realized PnL {realized:.2f} USDT"
    )
