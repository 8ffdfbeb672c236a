"""Admin for deliveries (with their risk decision), orders (with their history), kill switches."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from execution.models import (
    Cooldown,
    Fill,
    KillSwitch,
    Order,
    OrderEvent,
    Position,
    SignalDelivery,
)


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SignalDelivery)
class SignalDeliveryAdmin(_ReadOnly):
    list_display = ["id", "signal", "bot", "status", "reason_code", "created_at", "finished_at"]
    list_filter = ["status", "reason_code"]
    search_fields = ["bot__name", "signal__symbol"]
    readonly_fields = ["risk_decision"]
    exclude = ["decision"]

    @admin.display(description="Risk decision and sizing")
    def risk_decision(self, obj: SignalDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.decision, indent=2, sort_keys=True))

    def get_queryset(self, request: HttpRequest) -> QuerySet[SignalDelivery]:
        qs = super().get_queryset(request).select_related("signal", "bot")
        return qs if request.user.is_superuser else qs.filter(bot__owner=request.user)


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    readonly_fields = ["from_state", "to_state", "cause", "detail", "created_at"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(_ReadOnly):
    list_display = [
        "client_order_id",
        "bot",
        "leg",
        "symbol",
        "side",
        "type",
        "quantity",
        "state",
        "filled_qty",
        "avg_price",
        "updated_at",
    ]
    list_filter = ["state", "leg", "venue", "symbol"]
    search_fields = ["client_order_id", "bot__name"]
    inlines = [OrderEventInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        qs = super().get_queryset(request).select_related("bot")
        return qs if request.user.is_superuser else qs.filter(bot__owner=request.user)


@admin.register(KillSwitch)
class KillSwitchAdmin(_ReadOnly):
    list_display = ["id", "scope", "user", "bot", "flatten", "engaged_at", "released_at", "reason"]
    list_filter = ["scope", "flatten"]


@admin.register(Cooldown)
class CooldownAdmin(admin.ModelAdmin):
    list_display = ["bot", "symbol", "until", "reason"]


class PositionOrderInline(admin.TabularInline):
    """The trade's orders, with their state; each links to its full event history."""

    model = Order
    fk_name = "delivery"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "client_order_id",
        "leg",
        "generation",
        "side",
        "type",
        "quantity",
        "state",
        "filled_qty",
        "avg_price",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Position)
class PositionAdmin(_ReadOnly):
    list_display = [
        "id",
        "bot",
        "symbol",
        "side",
        "status",
        "quantity",
        "entry_price",
        "realized_pnl",
        "fees",
        "opened_at",
        "closed_at",
    ]
    list_filter = ["status", "side", "symbol"]
    readonly_fields = ["orders"]

    @admin.display(description="Orders and their events")
    def orders(self, obj: Position) -> str:
        rows = []
        for order in Order.objects.filter(delivery_id=obj.delivery_id).prefetch_related("events"):
            events = "; ".join(
                f"{e.from_state}->{e.to_state} ({e.cause})" for e in order.events.all()
            )
            rows.append(
                format_html(
                    "<li><b>{}</b> {} {} {}: {}</li>",
                    order.client_order_id,
                    order.leg,
                    order.state,
                    order.filled_qty,
                    events,
                )
            )
        return format_html("<ul>{}</ul>", format_html("".join(str(r) for r in rows)))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Position]:
        qs = super().get_queryset(request).select_related("bot")
        return qs if request.user.is_superuser else qs.filter(bot__owner=request.user)


@admin.register(Fill)
class FillAdmin(_ReadOnly):
    list_display = [
        "venue_trade_id",
        "bot",
        "symbol",
        "side",
        "qty",
        "price",
        "commission",
        "realized_pnl",
        "time",
    ]
    list_filter = ["symbol", "side"]
