from django.urls import path
from rest_framework.routers import DefaultRouter

from trader.api import views

router = DefaultRouter()
router.register("credentials", views.ApiCredentialViewSet, basename="credential")
router.register("bots", views.BotViewSet, basename="bot")

urlpatterns = [
    path("auth/token/", views.ThrottledTokenObtainPairView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", views.ThrottledTokenRefreshView.as_view(), name="token-refresh"),
    path("bots/<int:pk>/pause/", views.BotPauseApi.as_view(), name="bot-pause"),
    path("bots/<int:pk>/resume/", views.BotResumeApi.as_view(), name="bot-resume"),
    path("bots/<int:pk>/stop/", views.BotStopApi.as_view(), name="bot-stop"),
    *router.urls,
]
