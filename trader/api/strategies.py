"""API of strategies (what each one is, its params schema and defaults) and of evaluations
(what the strategies your bots run made of each closed candle). Both read-only."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from signals import selectors
from signals.models import Evaluation
from signals.strategies.registry import UnknownStrategyError
from trader.api.trading import _int_param

# --- serializers ------------------------------------------------------------------------------


class StrategySerializer(serializers.Serializer):
    key = serializers.CharField(read_only=True)
    description = serializers.CharField(
        read_only=True, help_text="First paragraph of the strategy's documentation."
    )
    enabled = serializers.BooleanField(
        read_only=True, help_text="False: not evaluated, and not selectable for a new bot."
    )
    evaluated = serializers.BooleanField(
        read_only=True, help_text="Whether candle closes drive it (manual: the API only)."
    )
    warmup = serializers.IntegerField(
        read_only=True, help_text="Closed candles needed before the first decision (defaults)."
    )
    params_schema = serializers.DictField(
        read_only=True, help_text="JSON Schema (draft 2020-12) of a bot's strategy_params."
    )
    defaults = serializers.DictField(
        read_only=True, help_text="The default of every param: {} as params means these."
    )


class EvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = [
            "id",
            "symbol",
            "interval",
            "candle_time",
            "strategy",
            "params",
            "status",
            "reason",
            "regime",
            "regime_detail",
            "decisions",
            "armed_side",
            "armed_until",
            "candles",
            "duration_ms",
            "created_at",
        ]
        read_only_fields = fields


# --- views ------------------------------------------------------------------------------------


class StrategyViewSet(viewsets.GenericViewSet):
    """The registered strategies, disabled ones included (``enabled`` false)."""

    serializer_class = StrategySerializer
    pagination_class = None  # a handful, always listed whole
    lookup_field = "key"
    lookup_value_regex = r"[A-Za-z0-9_.-]+"

    def list(self, request: Request) -> Response:
        return Response(StrategySerializer(selectors.strategies_info(), many=True).data)

    @extend_schema(parameters=[OpenApiParameter("key", str, OpenApiParameter.PATH)])
    def retrieve(self, request: Request, key: str) -> Response:
        try:
            info = selectors.strategy_info(key)
        except UnknownStrategyError:
            raise NotFound("No such strategy.") from None
        return Response(StrategySerializer(info).data)


class EvaluationViewSet(viewsets.ReadOnlyModelViewSet):
    """Evaluations of the strategies your bots run (same strategy, params, symbol and
    interval), newest candle first."""

    serializer_class = EvaluationSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("bot", int, description="One of your bots: its evaluations only."),
            OpenApiParameter("symbol", str),
            OpenApiParameter("interval", str),
            OpenApiParameter("strategy", str),
            OpenApiParameter("status", str, description="EVALUATED, WARMING_UP or REFUSED."),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Evaluation]:
        if getattr(self, "swagger_fake_view", False):
            return Evaluation.objects.none()
        params = self.request.query_params
        bot = _int_param(self.request, "bot") if self.action == "list" else None
        qs = selectors.evaluations_for_user(user=self.request.user, bot_id=bot)
        if self.action == "list":
            if params.get("symbol"):
                qs = qs.filter(symbol=params["symbol"].upper())
            if params.get("interval"):
                qs = qs.filter(interval=params["interval"])
            if params.get("strategy"):
                qs = qs.filter(strategy=params["strategy"])
            if params.get("status"):
                qs = qs.filter(status=params["status"].upper())
        return qs.order_by("-candle_time", "-id")
