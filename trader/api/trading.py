"""API of trading: signals (API and webhook), deliveries, orders, alerts, the kill switch.

Everything is scoped to the requesting user first; lists are read-only and filterable by bot,
symbol, state/status and time (``since``/``until``, ISO 8601).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from execution import selectors as execution_selectors
from execution.models import (
    Fill,
    KillScope,
    KillSwitch,
    Order,
    OrderEvent,
    Position,
    SignalDelivery,
)
from execution.selectors import bot_performance
from execution.services import _jsonable, kill_switch_engage, kill_switch_release
from signals.models import EntryType, Signal, SignalKind, SignalSource
from signals.services import (
    signal_create,
    signal_fan_out,
    webhook_token_owner,
    webhook_token_rotate,
)
from trader import domain
from trader.api.serializers import StrictSerializer
from trader.models import Alert, Bot

# --- serializers ------------------------------------------------------------------------------


class SignalInSerializer(serializers.Serializer):
    """An ARM or DISARM signal from a person or a webhook."""

    symbol = serializers.CharField(max_length=32)
    interval = serializers.ChoiceField(choices=list(domain.INTERVALS))
    kind = serializers.ChoiceField(choices=SignalKind.values)
    side = serializers.ChoiceField(choices=["BUY", "SELL"], required=False)
    entry_type = serializers.ChoiceField(choices=EntryType.values, required=False)
    entry_price = serializers.DecimalField(max_digits=28, decimal_places=10, required=False)
    stop_price = serializers.DecimalField(max_digits=28, decimal_places=10, required=False)
    take_profit_price = serializers.DecimalField(max_digits=28, decimal_places=10, required=False)
    reference_price = serializers.DecimalField(
        max_digits=28,
        decimal_places=10,
        required=False,
        help_text="The current market price; sizes MARKET entries in dry-run.",
    )
    strategy = serializers.CharField(max_length=64, required=False, default="manual")
    candle_time = serializers.DateTimeField(
        required=False, help_text="Default: now, floored to the interval."
    )
    expires_in_s = serializers.IntegerField(required=False, min_value=1, max_value=86400)
    bot_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=1000,
        help_text="Target bots (yours). Default: all your active bots on the symbol.",
    )
    reason = serializers.CharField(max_length=200, required=False, default="")

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Signal
        fields = [
            "id",
            "source",
            "strategy",
            "symbol",
            "interval",
            "candle_time",
            "kind",
            "side",
            "entry_type",
            "entry_price",
            "stop_price",
            "take_profit_price",
            "reference_price",
            "target_bot_ids",
            "reason",
            "expires_at",
            "created_at",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = SignalDelivery
        fields = [
            "id",
            "signal",
            "bot",
            "status",
            "reason_code",
            "reason",
            "decision",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class OrderEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderEvent
        fields = ["from_state", "to_state", "cause", "detail", "created_at"]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "bot",
            "delivery",
            "leg",
            "client_order_id",
            "venue",
            "symbol",
            "side",
            "type",
            "is_algo",
            "reduce_only",
            "quantity",
            "price",
            "trigger_price",
            "state",
            "venue_order_id",
            "venue_status",
            "filled_qty",
            "avg_price",
            "last_error",
            "created_at",
            "updated_at",
            "events",
        ]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = [
            "id",
            "severity",
            "key",
            "message",
            "context",
            "count",
            "first_at",
            "last_at",
            "escalated",
        ]
        read_only_fields = fields


class KillSwitchInSerializer(StrictSerializer):
    scope = serializers.ChoiceField(choices=KillScope.values)
    engaged = serializers.BooleanField()
    bot_id = serializers.IntegerField(required=False, min_value=1)
    flatten = serializers.BooleanField(required=False, default=False)
    reason = serializers.CharField(max_length=200, required=False, default="")

    class Meta:
        model = KillSwitch
        fields = ["scope", "engaged", "bot_id", "flatten", "reason"]


class KillSwitchSerializer(serializers.ModelSerializer):
    class Meta:
        model = KillSwitch
        fields = [
            "id",
            "scope",
            "user",
            "bot",
            "reason",
            "flatten",
            "engaged_at",
            "released_at",
            "actions",
        ]
        read_only_fields = fields


# --- helpers ----------------------------------------------------------------------------------


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    parsed = parse_datetime(raw)
    if parsed is None:
        raise ValidationError({name: [f"{raw!r} is not an ISO 8601 date-time"]})
    return parsed


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ValidationError({name: [f"{raw!r} is not a positive whole number"]})
    return int(raw)


FILTER_PARAMS = [
    OpenApiParameter("bot", int),
    OpenApiParameter("symbol", str),
    OpenApiParameter("since", str, description="ISO 8601"),
    OpenApiParameter("until", str),
]


def _create_from(
    data: dict[str, Any], *, owner: Any, source: str
) -> tuple[Signal, bool, list[int]]:
    bot_ids = data.get("bot_ids") or []
    if bot_ids:
        own = set(Bot.objects.filter(owner=owner, pk__in=bot_ids).values_list("pk", flat=True))
        missing = sorted(set(bot_ids) - own)
        if missing:  # the same answer for another user's bot and a missing one
            raise ValidationError({"bot_ids": [f"no such bot(s): {missing}"]})
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    expires = now + timedelta(seconds=data["expires_in_s"]) if data.get("expires_in_s") else None
    try:
        signal, created = signal_create(
            source=source,
            source_key=f"{source.lower()}:{owner.pk}",
            owner=owner,
            strategy=data.get("strategy") or "manual",
            symbol=data["symbol"],
            interval=data["interval"],
            kind=data["kind"],
            candle_time=data.get("candle_time"),
            side=data.get("side", ""),
            entry_type=data.get("entry_type", ""),
            entry_price=data.get("entry_price"),
            stop_price=data.get("stop_price"),
            take_profit_price=data.get("take_profit_price"),
            reference_price=data.get("reference_price"),
            target_bot_ids=bot_ids,
            expires_at=expires,
            reason=data.get("reason", ""),
            now=now,
        )
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    deliveries = signal_fan_out(signal=signal)
    return signal, created, deliveries


# --- views ------------------------------------------------------------------------------------


class SignalViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Signals you sent, and strategy signals delivered to your bots. POST sends one."""

    serializer_class = SignalSerializer

    @extend_schema(parameters=FILTER_PARAMS)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Signal]:
        if getattr(self, "swagger_fake_view", False):
            return Signal.objects.none()
        user = self.request.user
        qs = Signal.objects.filter(Q(owner=user) | Q(deliveries__bot__owner=user)).distinct()
        bot = _int_param(self.request, "bot")
        if bot is not None:  # one join: delivered to this bot, and the bot is the user's
            qs = qs.filter(deliveries__bot_id=bot, deliveries__bot__owner_id=user.pk)
        symbol = self.request.query_params.get("symbol")
        if symbol:
            qs = qs.filter(symbol=symbol.upper())
        since, until = _time_param(self.request, "since"), _time_param(self.request, "until")
        if since:
            qs = qs.filter(created_at__gte=since)
        if until:
            qs = qs.filter(created_at__lte=until)
        return qs

    @extend_schema(
        request=SignalInSerializer, responses={201: SignalSerializer, 200: SignalSerializer}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = SignalInSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        signal, created, deliveries = _create_from(
            dict(incoming.validated_data), owner=request.user, source=SignalSource.MANUAL
        )
        body = {**SignalSerializer(signal).data, "deliveries": deliveries}
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class WebhookSignalApi(APIView):
    """TradingView-style alerts: POST the signal's JSON to ``/api/webhooks/signals/<token>/``.
    The token (``POST /api/webhook-token/``) authenticates; nothing else is needed."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "webhook"

    @extend_schema(
        request=SignalInSerializer, responses={201: SignalSerializer, 200: SignalSerializer}
    )
    def post(self, request: Request, token: str) -> Response:
        owner = webhook_token_owner(token=token)
        if owner is None:
            raise NotFound("No such webhook.")
        incoming = SignalInSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        signal, created, deliveries = _create_from(
            dict(incoming.validated_data), owner=owner, source=SignalSource.WEBHOOK
        )
        body = {**SignalSerializer(signal).data, "deliveries": deliveries}
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class WebhookTokenApi(APIView):
    """Create or replace your webhook token; the old one stops working. Shown only here."""

    @extend_schema(request=None, responses={201: dict})
    def post(self, request: Request) -> Response:
        token = webhook_token_rotate(owner=request.user)
        return Response(
            {"token": token, "url": f"/api/webhooks/signals/{token}/"},
            status=status.HTTP_201_CREATED,
        )


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every delivery of a signal to one of your bots, with its outcome and risk decision."""

    serializer_class = DeliverySerializer

    @extend_schema(parameters=[*FILTER_PARAMS, OpenApiParameter("status", str)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[SignalDelivery]:
        if getattr(self, "swagger_fake_view", False):
            return SignalDelivery.objects.none()
        qs = execution_selectors.deliveries_for_user(user=self.request.user)
        return _filtered(self.request, qs, state_field="status", symbol_field="signal__symbol")


class OrderViewSet(viewsets.ReadOnlyModelViewSet):
    """Your bots' orders with their full event history."""

    serializer_class = OrderSerializer

    @extend_schema(parameters=[*FILTER_PARAMS, OpenApiParameter("state", str)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Order]:
        if getattr(self, "swagger_fake_view", False):
            return Order.objects.none()
        qs = execution_selectors.orders_for_user(user=self.request.user).prefetch_related("events")
        return _filtered(self.request, qs, state_field="state", symbol_field="symbol")


class AlertViewSet(viewsets.ReadOnlyModelViewSet):
    """Your alerts (and, for staff, platform-wide ones)."""

    serializer_class = AlertSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("severity", str),
            OpenApiParameter("since", str, description="ISO 8601, on the last occurrence"),
            OpenApiParameter("until", str),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Alert]:
        if getattr(self, "swagger_fake_view", False):
            return Alert.objects.none()
        user = self.request.user
        scope = Q(owner=user) | Q(owner__isnull=True) if user.is_staff else Q(owner=user)
        qs = Alert.objects.filter(scope)
        severity = self.request.query_params.get("severity")
        if severity:
            qs = qs.filter(severity=severity.upper())
        since, until = _time_param(self.request, "since"), _time_param(self.request, "until")
        if since:
            qs = qs.filter(last_at__gte=since)
        if until:
            qs = qs.filter(last_at__lte=until)
        return qs


def _filtered(
    request: Request,
    qs: QuerySet[Any],
    *,
    state_field: str | None,
    symbol_field: str = "symbol",
    time_field: str = "created_at",
) -> QuerySet[Any]:
    """The list filters every trading list shares: bot, symbol, state/status, since/until."""
    bot = _int_param(request, "bot")
    if bot is not None:
        qs = qs.filter(bot_id=bot)
    symbol = request.query_params.get("symbol")
    if symbol:
        qs = qs.filter(**{symbol_field: symbol.upper()})
    state = request.query_params.get(state_field) if state_field else None
    if state_field and state:
        qs = qs.filter(**{state_field: state.upper()})
    since, until = _time_param(request, "since"), _time_param(request, "until")
    if since:
        qs = qs.filter(**{f"{time_field}__gte": since})
    if until:
        qs = qs.filter(**{f"{time_field}__lte": until})
    return qs


class KillSwitchApi(APIView):
    """Engage or release a kill switch: GLOBAL (staff only), USER (yourself), BOT (yours).
    Engaging stops new entries at once and cancels open entries; ``flatten`` also closes
    positions with reduce-only market orders."""

    @extend_schema(responses=KillSwitchSerializer(many=True))
    def get(self, request: Request) -> Response:
        qs = KillSwitch.objects.filter(released_at__isnull=True)
        if not request.user.is_staff:
            qs = qs.filter(
                Q(user=request.user) | Q(bot__owner=request.user) | Q(scope=KillScope.GLOBAL)
            )
        return Response(KillSwitchSerializer(qs, many=True).data)

    @extend_schema(request=KillSwitchInSerializer, responses={200: KillSwitchSerializer, 204: None})
    def post(self, request: Request) -> Response:
        incoming = KillSwitchInSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        scope = data["scope"]
        user, bot = None, None
        if scope == KillScope.GLOBAL and not request.user.is_staff:
            raise PermissionDenied("Only staff can use the global kill switch.")
        if scope == KillScope.USER:
            user = request.user
        if scope == KillScope.BOT:
            if not data.get("bot_id"):
                raise ValidationError({"bot_id": ["A BOT kill switch needs bot_id."]})
            bot = Bot.objects.filter(owner_id=request.user.pk, pk=data["bot_id"]).first()
            if bot is None:
                raise NotFound("No such bot.")
        if not data["engaged"]:
            kill_switch_release(scope=scope, user=user, bot=bot)
            return Response(status=status.HTTP_204_NO_CONTENT)
        switch = kill_switch_engage(
            scope=scope,
            user=user,
            bot=bot,
            reason=data["reason"],
            flatten=data["flatten"],
            by=request.user,
        )
        return Response(KillSwitchSerializer(switch).data)


# --- positions, fills, performance ------------------------------------------------------------


class PositionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Position
        fields = [
            "id",
            "bot",
            "delivery",
            "symbol",
            "side",
            "status",
            "quantity",
            "entry_qty",
            "entry_price",
            "exit_qty",
            "exit_price",
            "realized_pnl",
            "fees",
            "opened_at",
            "closed_at",
        ]
        read_only_fields = fields


class FillSerializer(serializers.ModelSerializer):
    class Meta:
        model = Fill
        fields = [
            "id",
            "bot",
            "order",
            "symbol",
            "venue_trade_id",
            "venue_order_id",
            "side",
            "price",
            "qty",
            "quote_qty",
            "commission",
            "commission_asset",
            "realized_pnl",
            "maker",
            "time",
        ]
        read_only_fields = fields


class PositionViewSet(viewsets.ReadOnlyModelViewSet):
    """Your bots' positions (one per trade), open and closed."""

    serializer_class = PositionSerializer

    @extend_schema(parameters=[*FILTER_PARAMS, OpenApiParameter("status", str)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Position]:
        if getattr(self, "swagger_fake_view", False):
            return Position.objects.none()
        qs = Position.objects.filter(bot__owner_id=self.request.user.pk)
        return _filtered(self.request, qs, state_field="status", time_field="opened_at")


class FillViewSet(viewsets.ReadOnlyModelViewSet):
    """Your bots' fills (the venue's user trades), unique per venue trade."""

    serializer_class = FillSerializer

    @extend_schema(parameters=FILTER_PARAMS)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Fill]:
        if getattr(self, "swagger_fake_view", False):
            return Fill.objects.none()
        qs = Fill.objects.filter(bot__owner_id=self.request.user.pk)
        return _filtered(self.request, qs, state_field=None, time_field="time")


class BotPerformanceApi(APIView):
    """A bot's results: realized PnL, fees, win rate, open exposure, and the same by day."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, pk: int) -> Response:
        bot = Bot.objects.filter(owner_id=request.user.pk, pk=pk).first()
        if bot is None:
            raise NotFound("No such bot.")
        return Response(_jsonable(bot_performance(bot_id=bot.pk)))
