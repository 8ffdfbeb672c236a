"""Admin for credentials and bots. Secrets are write-only; every page shows the masked key only.

Writes go through the services, so the admin enforces exactly the API's rules.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from signals.selectors import StrategyInfo, strategies_info, strategy_info
from signals.strategies.registry import UnknownStrategyError
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


def _schema_type(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "")
    return " | ".join(map(str, kind)) if isinstance(kind, list) else str(kind)


def _schema_bound(spec: dict[str, Any], inclusive: str, exclusive: str, sign: str) -> str:
    if inclusive in spec:
        return str(spec[inclusive])
    return f"{sign} {spec[exclusive]}" if exclusive in spec else ""


def strategy_params_html(info: StrategyInfo) -> SafeString:
    """One strategy's description, defaults and a row per param (type, min, max, default,
    description); every value is escaped."""
    kind = "" if info.enabled else " (disabled)"
    head = format_html(
        "<p><strong>{}</strong>{}: {}<br>Warm-up (defaults): {} candles. Defaults: <code>{}</code>"
        "</p>",
        info.key,
        kind,
        info.description,
        info.warmup,
        json.dumps(info.defaults, sort_keys=True),
    )
    properties: dict[str, Any] = info.params_schema.get("properties", {})
    if not properties:
        return format_html("{}<p>No params: use {{}}.</p>", head)
    rows = (
        (
            name,
            _schema_type(spec),
            _schema_bound(spec, "minimum", "exclusiveMinimum", ">"),
            _schema_bound(spec, "maximum", "exclusiveMaximum", "<"),
            json.dumps(spec["default"]) if "default" in spec else "",
            spec.get("description", ""),
        )
        for name, spec in properties.items()
    )
    return format_html(
        "{}<table><thead><tr><th>Param</th><th>Type</th><th>Min</th><th>Max</th><th>Default</th>"
        "<th>Description</th></tr></thead><tbody>{}</tbody></table>",
        head,
        format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            rows,
        ),
    )


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotForm
    list_display = ["name", "owner", "symbol", "interval", "strategy", "environment", "status"]
    list_filter = ["status", "environment", "interval", "strategy"]
    search_fields = ["name", "symbol", "owner__username"]
    readonly_fields = ["strategy_params_schema", "created_at", "updated_at"]
    actions = ["pause_bots", "resume_bots"]

    def get_fields(self, request: HttpRequest, obj: Bot | None = None) -> Any:
        # The params schema right under the params it describes.
        fields = [f for f in super().get_fields(request, obj) if f != "strategy_params_schema"]
        at = fields.index("strategy_params") + 1 if "strategy_params" in fields else len(fields)
        return [*fields[:at], "strategy_params_schema", *fields[at:]]

    @admin.display(description="Strategy params schema")
    def strategy_params_schema(self, obj: Bot | None) -> SafeString:
        """The bot's strategy's params; for a new bot, every strategy's."""
        if obj is None or obj.pk is None:
            return format_html_join(
                "", "<div>{}</div>", ((strategy_params_html(i),) for i in strategies_info())
            )
        try:
            return strategy_params_html(strategy_info(obj.strategy))
        except UnknownStrategyError:
            return format_html("<p>Strategy {} is not registered.</p>", obj.strategy)

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
