"""Admin for deliveries (with their risk decision), orders (with their history), kill switches."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from execution.models import Cooldown, KillSwitch, Order, OrderEvent, SignalDelivery


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
