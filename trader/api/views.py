"""API views: resource CRUD as ViewSets, one small APIView per command."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from trader import selectors, services
from trader.api.serializers import ApiCredentialSerializer, BotSerializer
from trader.models import ApiCredential, Bot, BotStatus


class ThrottledTokenObtainPairView(TokenObtainPairView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"


class ThrottledTokenRefreshView(TokenRefreshView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"


class ApiCredentialViewSet(viewsets.ModelViewSet):
    """Exchange API credentials. Key and secret are write-only; only the masked key is shown."""

    serializer_class = ApiCredentialSerializer

    def get_queryset(self) -> QuerySet[ApiCredential]:
        if getattr(self, "swagger_fake_view", False):
            return ApiCredential.objects.none()
        return selectors.credentials_for_user(user=self.request.user)

    def perform_create(self, serializer: Any) -> None:
        serializer.save(owner=self.request.user)


class BotViewSet(viewsets.ModelViewSet):
    """Trading bots of the requesting user."""

    serializer_class = BotSerializer

    def get_queryset(self) -> QuerySet[Bot]:
        if getattr(self, "swagger_fake_view", False):
            return Bot.objects.none()
        return selectors.bots_for_user(user=self.request.user)

    def perform_create(self, serializer: Any) -> None:
        serializer.save(owner=self.request.user)


class _BotStatusApi(APIView):
    target_status: BotStatus

    @extend_schema(request=None, responses=BotSerializer)
    def post(self, request: Request, pk: int) -> Response:
        bot = get_object_or_404(selectors.bots_for_user(user=request.user), pk=pk)
        bot = services.bot_set_status(bot=bot, status=self.target_status)
        return Response(BotSerializer(bot, context={"request": request}).data)


class BotPauseApi(_BotStatusApi):
    """Pause a bot: it receives no new signals until resumed."""

    target_status = BotStatus.PAUSED


class BotResumeApi(_BotStatusApi):
    """Resume a paused or stopped bot."""

    target_status = BotStatus.ACTIVE


class BotStopApi(_BotStatusApi):
    """Stop a bot (kept for its history; resume to trade again)."""

    target_status = BotStatus.STOPPED
