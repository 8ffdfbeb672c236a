"""Admin for credentials and bots. Secrets are write-only; every page shows the masked key only.

Writes go through the services, so the admin enforces exactly the API's rules.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from trader import services
from trader.models import Alert, ApiCredential, Bot, BotStatus, Heartbeat


def _secret_input(label: str, *, required: bool) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=required,
        strip=False,
        max_length=256,
        # render_value=False: the page never carries a value back, not even the one just typed.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave both empty to keep the stored pair." if not required else "",
    )


class ApiCredentialForm(forms.ModelForm):
    api_key = _secret_input("API key", required=False)
    api_secret = _secret_input("API secret", required=False)

    class Meta:
        model = ApiCredential
        fields = ["owner", "label", "environment", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adding = self.instance.pk is None
        self.fields["api_key"].required = adding
        self.fields["api_secret"].required = adding

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk is not None:
            errors = services.credential_update_errors(
                credential=self.instance,
                environment=data.get("environment"),
                api_key=data.get("api_key") or None,
                api_secret=data.get("api_secret") or None,
            )
            if errors:
                raise ValidationError(errors)
        return data


@admin.register(ApiCredential)
class ApiCredentialAdmin(admin.ModelAdmin):
    form = ApiCredentialForm
    list_display = ["label", "owner", "environment", "api_key_masked", "is_active", "rotated_at"]
    list_filter = ["environment", "is_active"]
    search_fields = ["label", "owner__username"]
    readonly_fields = ["api_key_masked", "created_at", "rotated_at", "updated_at"]

    @admin.display(description="API key")
    def api_key_masked(self, obj: ApiCredential) -> str:
        return obj.api_key_masked

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiCredential]:
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(owner=request.user)

    def save_model(self, request: HttpRequest, obj: ApiCredential, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.credential_update(
                credential=obj,
                label=data["label"],
                environment=data["environment"],
                is_active=data["is_active"],
                api_key=data.get("api_key") or None,
                api_secret=data.get("api_secret") or None,
            )
        else:
            created = services.credential_create(
                owner=data["owner"],
                label=data["label"],
                environment=data["environment"],
                api_key=data["api_key"],
                api_secret=data["api_secret"],
                is_active=data["is_active"],
            )
            obj.pk = created.pk
            obj.refresh_from_db()


class BotForm(forms.ModelForm):
    class Meta:
        model = Bot
        fields = [
            "owner",
            "name",
            "credential",
            "environment",
            "symbol",
            "interval",
            "strategy",
            "strategy_params",
            "risk_per_trade_pct",
            "leverage",
            "max_position_notional",
            "max_open_positions",
            "daily_loss_limit_pct",
            "status",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        owner = data.get("owner")
        if owner is not None:
            errors = services.bot_config_errors(
                owner_id=owner.pk,
                environment=data.get("environment", ""),
                credential=data.get("credential"),
                strategy=data.get("strategy", ""),
                strategy_params=data.get("strategy_params", {}),
                symbol=data.get("symbol", ""),
                leverage=data.get("leverage") or 1,
                bot_id=self.instance.pk,
            )
            if errors:
                raise ValidationError(errors)
        return data


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotForm
    list_display = ["name", "owner", "symbol", "interval", "strategy", "environment", "status"]
    list_filter = ["status", "environment", "interval", "strategy"]
    search_fields = ["name", "symbol", "owner__username"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["pause_bots", "resume_bots"]

    def save_model(self, request: HttpRequest, obj: Bot, form: Any, change: bool) -> None:
        services.bot_save(bot=obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Bot]:
        qs = super().get_queryset(request).select_related("owner", "credential")
        return qs if request.user.is_superuser else qs.filter(owner=request.user)

    @admin.action(description="Pause selected bots")
    def pause_bots(self, request: HttpRequest, queryset: QuerySet[Bot]) -> None:
        for bot in queryset:
            services.bot_set_status(bot=bot, status=BotStatus.PAUSED)
        self.message_user(request, f"Paused {queryset.count()} bot(s).")

    @admin.action(description="Resume selected bots")
    def resume_bots(self, request: HttpRequest, queryset: QuerySet[Bot]) -> None:
        for bot in queryset:
            services.bot_set_status(bot=bot, status=BotStatus.ACTIVE)
        self.message_user(request, f"Resumed {queryset.count()} bot(s).")


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seen", "hostname", "pid"]
    readonly_fields = ["name", "last_seen", "hostname", "pid"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alerts are raised by ``trader.alerts.alert`` only: here they are read, filtered, deleted."""

    list_display = ["severity", "key", "owner", "count", "last_at", "escalated", "delivered"]
    list_filter = ["severity", "escalated"]
    list_select_related = ["owner"]
    search_fields = ["key", "owner__username"]
    date_hierarchy = "last_at"
    readonly_fields = [
        "owner",
        "severity",
        "key",
        "message",
        "context",
        "count",
        "first_at",
        "last_at",
        "escalated",
        "delivered",
        "delivery_error",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        qs = super().get_queryset(request)
        # Platform-wide alerts (no owner) are for superusers only.
        return qs if request.user.is_superuser else qs.filter(owner=request.user)
