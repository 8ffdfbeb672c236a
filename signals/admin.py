from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from signals.models import Evaluation, Signal
from signals.selectors import evaluations_for_user


@admin.register(Signal)
class SignalAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "source",
        "strategy",
        "kind",
        "side",
        "symbol",
        "interval",
        "candle_time",
        "entry_type",
        "stop_price",
        "expires_at",
    ]
    list_filter = ["source", "kind", "symbol", "interval"]
    readonly_fields = [f.name for f in Signal._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Signal]:
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(owner=request.user)


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    """Written by the signal chain only: read here, never added, changed or deleted."""

    list_display = ["candle_time", "symbol", "interval", "strategy", "status", "regime", "reason"]
    list_filter = ["status", "regime", "strategy", "interval"]
    search_fields = ["symbol"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Evaluation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Evaluation | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Evaluation]:
        if request.user.is_superuser:
            return super().get_queryset(request)
        # Staff see the evaluations of their own bots' (strategy, params, symbol, interval).
        return evaluations_for_user(user=request.user)
