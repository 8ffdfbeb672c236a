from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from signals.models import Signal


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
