from django.urls import path
from rest_framework.routers import DefaultRouter

from trader.api import strategies, trading, views

router = DefaultRouter()
router.register("credentials", views.ApiCredentialViewSet, basename="credential")
router.register("bots", views.BotViewSet, basename="bot")
router.register("signals", trading.SignalViewSet, basename="signal")
router.register("deliveries", trading.DeliveryViewSet, basename="delivery")
router.register("orders", trading.OrderViewSet, basename="order")
router.register("alerts", trading.AlertViewSet, basename="alert")
router.register("positions", trading.PositionViewSet, basename="position")
router.register("fills", trading.FillViewSet, basename="fill")
router.register("strategies", strategies.StrategyViewSet, basename="strategy")
router.register("evaluations", strategies.EvaluationViewSet, basename="evaluation")

urlpatterns = [
    path("auth/token/", views.ThrottledTokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", views.ThrottledTokenRefreshView.as_view(), name="token-refresh"),
    path("bots/<int:pk>/pause/", views.BotPauseApi.as_view(), name="bot-pause"),
    path("bots/<int:pk>/resume/", views.BotResumeApi.as_view(), name="bot-resume"),
    path("bots/<int:pk>/stop/", views.BotStopApi.as_view(), name="bot-stop"),
    path("bots/<int:pk>/performance/", trading.BotPerformanceApi.as_view(), name="bot-performance"),
    path("kill-switch/", trading.KillSwitchApi.as_view(), name="kill-switch"),
    path("webhook-token/", trading.WebhookTokenApi.as_view(), name="webhook-token"),
    path(
        "webhooks/signals/<str:token>/", trading.WebhookSignalApi.as_view(), name="webhook-signal"
    ),
    *router.urls,
]
