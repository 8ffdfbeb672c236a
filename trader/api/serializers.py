"""Serializers validate and shape; the services decide and write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from signals.strategies import strategy_keys
from trader import domain, services
from trader.models import ApiCredential, Bot


class StrictSerializer(serializers.ModelSerializer):
    """Rejects fields it does not know, instead of silently ignoring a typo."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def _secret_field(label: str) -> serializers.CharField:
    return serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        max_length=256,
        style={"input_type": "password"},
        help_text=f"{label}. Write-only: it is encrypted at rest and never returned.",
    )


class ApiCredentialSerializer(StrictSerializer):
    api_key = _secret_field("Binance API key")
    api_secret = _secret_field("Binance API secret")
    api_key_masked = serializers.CharField(read_only=True)

    class Meta:
        model = ApiCredential
        fields = [
            "id",
            "label",
            "environment",
            "api_key",
            "api_secret",
            "api_key_masked",
            "is_active",
            "created_at",
            "rotated_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "rotated_at", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None:
            missing = {
                name: ["This field is required."]
                for name in ("api_key", "api_secret")
                if not attrs.get(name)
            }
            if missing:
                raise serializers.ValidationError(missing)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> ApiCredential:
        return services.credential_create(**validated_data)

    def update(self, instance: ApiCredential, validated_data: dict[str, Any]) -> ApiCredential:
        return services.credential_update(credential=instance, **validated_data)


class _OwnCredentialField(serializers.PrimaryKeyRelatedField):
    """A credential id, looked up among the requesting user's credentials only."""

    default_error_messages = {"does_not_exist": "No such credential."}

    def get_queryset(self) -> Any:
        request = self.context.get("request")
        if request is None or not request.user.is_authenticated:
            return ApiCredential.objects.none()
        return ApiCredential.objects.filter(owner=request.user)


class BotSerializer(StrictSerializer):
    credential = _OwnCredentialField(allow_null=True, required=False)
    # Declared here so that lower case input is normalised before the format check.
    symbol = serializers.CharField(max_length=32, help_text="Binance USD-M symbol, e.g. BTCUSDT.")
    strategy = serializers.ChoiceField(choices=strategy_keys(), default="manual")
    strategy_params = serializers.JSONField(
        required=False, help_text="Checked against the strategy's params schema."
    )

    class Meta:
        model = Bot
        fields = [
            "id",
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "created_at", "updated_at"]

    def validate_symbol(self, value: str) -> str:
        value = value.strip().upper()
        problem = domain.symbol_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def create(self, validated_data: dict[str, Any]) -> Bot:
        validated_data.setdefault("strategy_params", {})
        return services.bot_create(**validated_data)

    def update(self, instance: Bot, validated_data: dict[str, Any]) -> Bot:
        return services.bot_update(bot=instance, **validated_data)
